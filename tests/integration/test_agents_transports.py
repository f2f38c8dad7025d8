"""The three transports against real parts: an OpenSSH server on loopback, socat pty pairs, and a
pty relay that damages the line. hello / put / has / bench give the same answers everywhere."""

from __future__ import annotations

import getpass
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from device_agents.agent import wire
from device_agents.linesim import LineFaults, PtyRelay
from device_agents.transports.base import Transport, agent_pyz
from device_agents.transports.local import LocalTransport
from device_agents.transports.serial import SerialTransport
from device_agents.transports.ssh import SshTransport
from harness.errors import AgentTimeoutError, HostKeyError, ProtocolMismatchError, TransportError
from hilt_base import hashing
from tests.unit.agent_variants import other_protocol, packed_variant

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"
SOCAT = shutil.which("socat")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _keygen(path: Path) -> str:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True, timeout=30)
    return path.with_suffix(".pub").read_text().split()[:2]  # type: ignore[return-value]


@dataclass
class Sshd:
    port: int
    user: str
    key: Path
    known_hosts: Path
    root: Path

    def transport(self, name: str = "ssh", **kw: object) -> SshTransport:
        opts: dict[str, object] = {
            "host": "127.0.0.1", "port": self.port, "user": self.user, "key_file": str(self.key),
            "known_hosts": str(self.known_hosts), "python": sys.executable,
            "agent_dir": str(self.root / "agent"), "connect_timeout": 5.0,
        }  # fmt: skip
        opts.update(kw)
        return SshTransport(name, **opts)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sshd]:
    if not Path(SSHD).exists():
        pytest.skip("openssh-server is not installed (scripts/system-deps.sh installs it)")
    d = tmp_path_factory.mktemp("sshd")
    host_type, host_key = _keygen(d / "host_key")
    _keygen(d / "user_key")
    (d / "authorized_keys").write_text((d / "user_key.pub").read_text())
    port = _free_port()
    config = d / "sshd_config"
    config.write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {d / 'host_key'}\n"
        f"AuthorizedKeysFile {d / 'authorized_keys'}\n"
        f"PidFile {d / 'sshd.pid'}\nStrictModes no\nUsePAM no\nPasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\nPubkeyAuthentication yes\nPermitRootLogin prohibit-password\n"
        "Subsystem sftp internal-sftp\nLogLevel ERROR\n"
    )
    if os.geteuid() == 0:
        Path("/run/sshd").mkdir(exist_ok=True)  # privilege-separation directory
    proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)], stderr=open(d / "sshd.log", "wb"))  # noqa: SIM115
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"sshd exited: {(d / 'sshd.log').read_text()}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            time.sleep(0.1)
    else:
        proc.kill()
        pytest.fail(f"sshd did not listen on port {port} within 15 s: {(d / 'sshd.log').read_text()}")
    known = d / "known_hosts"
    known.write_text(f"[127.0.0.1]:{port} {host_type} {host_key}\n")
    try:
        yield Sshd(port=port, user=getpass.getuser(), key=d / "user_key", known_hosts=known, root=d)
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@dataclass
class SerialLine:
    host: str
    board: str


def _start_serial_agent(board_path: str, cache: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, str(agent_pyz()), "--serial", board_path, "--cache", str(cache)])


@pytest.fixture()
def socat_line(tmp_path: Path) -> Iterator[SerialLine]:
    if SOCAT is None:
        pytest.skip("socat is not installed (scripts/system-deps.sh installs it)")
    host, board = tmp_path / "tty-host", tmp_path / "tty-board"
    proc = subprocess.Popen(
        [SOCAT, f"pty,raw,echo=0,link={host}", f"pty,raw,echo=0,link={board}"], stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 10
    while not (host.exists() and board.exists()):
        if time.monotonic() > deadline:
            pytest.fail("socat did not create its pty pair")
        time.sleep(0.05)
    try:
        yield SerialLine(str(host), str(board))
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture()
def serial_agent(socat_line: SerialLine, tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    proc = _start_serial_agent(socat_line.board, tmp_path / "serial-cache")
    yield proc
    if proc.poll() is None:
        proc.kill()
        proc.wait()


# ----------------------------------------------------------------------------------------- SSH


def test_ssh_hello_put_has_and_agent_copied_once(sshd: Sshd, tmp_path: Path) -> None:
    blob = tmp_path / "blob"
    blob.write_bytes(os.urandom(200_000))
    with sshd.transport() as t:
        assert t.hello["protocol"] == wire.PROTOCOL_VERSION
        sha = t.upload(blob)
        assert t.request("has", {"hashes": [sha]})["held"] == [sha]
        remote = Path(t.remote_agent_path())
    assert remote.is_file() and remote.read_bytes() == agent_pyz().read_bytes()
    mtime = remote.stat().st_mtime_ns
    with sshd.transport() as t:  # same agent version: not copied again
        assert t.request("has", {"hashes": [sha]})["held"] == [sha]
    assert remote.stat().st_mtime_ns == mtime


def test_ssh_changed_agent_is_copied_again(sshd: Sshd, tmp_path: Path) -> None:
    changed = packed_variant(tmp_path, lambda text: text + "\n# changed\n")
    with sshd.transport(agent_path=changed) as t:
        remote = Path(t.remote_agent_path())
        assert remote.read_bytes() == changed.read_bytes() != agent_pyz().read_bytes()


def test_ssh_wrong_host_key_is_refused(sshd: Sshd, tmp_path: Path) -> None:
    key_type, other = _keygen(tmp_path / "impostor")
    known = tmp_path / "known_hosts"
    known.write_text(f"[127.0.0.1]:{sshd.port} {key_type} {other}\n")
    with pytest.raises(HostKeyError, match="does not match"):
        sshd.transport(known_hosts=str(known)).open()
    # opting in to new keys never accepts a changed one
    with pytest.raises(HostKeyError, match="does not match"):
        sshd.transport(known_hosts=str(known), accept_new_host_key=True).open()


def test_ssh_unknown_host_refused_unless_opted_in(sshd: Sshd, tmp_path: Path) -> None:
    known = tmp_path / "empty_known_hosts"
    with pytest.raises(HostKeyError, match="accept_new_host_key"):
        sshd.transport(known_hosts=str(known)).open()
    with sshd.transport(known_hosts=str(known), accept_new_host_key=True) as t:
        assert t.hello["protocol"] == wire.PROTOCOL_VERSION
    assert f"[127.0.0.1]:{sshd.port}" in known.read_text()
    with sshd.transport(known_hosts=str(known)) as t:  # now known: strict checking passes
        assert t.hello["arch"]


def test_ssh_unreachable_port_is_a_transport_error(sshd: Sshd) -> None:
    t0 = time.monotonic()
    with pytest.raises(TransportError, match="cannot reach"):
        sshd.transport(port=_free_port()).open()
    assert time.monotonic() - t0 < 10


def test_ssh_killed_agent_is_an_error_within_the_timeout(sshd: Sshd) -> None:
    t = sshd.transport()
    t.open()
    try:
        os.kill(t.hello["pid"], signal.SIGKILL)  # the board is this machine
        t0 = time.monotonic()
        with pytest.raises(TransportError):
            t.request("hello", timeout=5)
        assert time.monotonic() - t0 < 5 + t.grace_s
    finally:
        t.close()


def test_ssh_protocol_mismatch_is_clear(sshd: Sshd, tmp_path: Path) -> None:
    other = other_protocol(tmp_path, 99)
    with pytest.raises(ProtocolMismatchError, match="protocol"):
        sshd.transport(agent_path=other).open()


# -------------------------------------------------------------------------------------- serial


def test_serial_hello_put_has(
    socat_line: SerialLine, serial_agent: subprocess.Popen[bytes], tmp_path: Path
) -> None:
    blob = tmp_path / "blob"
    blob.write_bytes(os.urandom(100_000))
    with SerialTransport("tty", socat_line.host, 115200) as t:
        sha = t.upload(blob)
        assert t.request("has", {"hashes": [sha]})["held"] == [sha]
    assert serial_agent.poll() is None  # closing the host side leaves the board's agent serving
    with SerialTransport("tty", socat_line.host, 115200) as t:
        assert t.request("has", {"hashes": [sha]})["held"] == [sha]


def test_serial_flipped_byte_and_dropped_chunk_still_upload_right(tmp_path: Path) -> None:
    data = os.urandom(120_000)
    blob = tmp_path / "blob"
    blob.write_bytes(data)
    faults = LineFaults(flip={30_000}, drop=[(70_000, 4096)])
    with PtyRelay(faults=faults) as relay:
        proc = _start_serial_agent(relay.board_path, tmp_path / "cache")
        try:
            with SerialTransport("faulty", relay.host_path, 921600) as t:
                sha = t.upload(blob)
                assert t.request("has", {"hashes": [sha]})["held"] == [sha]
        finally:
            proc.kill()
            proc.wait()
    assert relay.damaged == {"flipped": 1, "dropped": 4096}
    assert sha == hashing.sha256_file(str(blob))
    assert (tmp_path / "cache" / "objects" / sha).read_bytes() == data


def test_serial_killed_agent_is_a_timeout_not_a_hang(
    socat_line: SerialLine, serial_agent: subprocess.Popen[bytes]
) -> None:
    t = SerialTransport("tty", socat_line.host, 115200)
    t.open()
    try:
        serial_agent.kill()
        serial_agent.wait()
        t0 = time.monotonic()
        with pytest.raises(AgentTimeoutError, match="no answer"):
            t.request("hello", timeout=1.0, retries=0)
        assert time.monotonic() - t0 < 1.0 + t.grace_s + 1.0
    finally:
        t.close()


def test_serial_port_that_does_not_exist(tmp_path: Path) -> None:
    with pytest.raises(TransportError, match="cannot open serial port"):
        SerialTransport("none", str(tmp_path / "no-tty")).open()


# ------------------------------------------------------------------------------- all transports


@pytest.fixture()
def all_transports(
    sshd: Sshd, socat_line: SerialLine, serial_agent: subprocess.Popen[bytes], tmp_path: Path
) -> Iterator[dict[str, Transport]]:
    ts: dict[str, Transport] = {
        "local": LocalTransport("local", cache=tmp_path / "local-cache"),
        "ssh": sshd.transport(agent_dir=str(tmp_path / "ssh-agent")),
        "serial": SerialTransport("serial", socat_line.host, 921600),
    }
    for t in ts.values():
        t.open()
    yield ts
    for t in ts.values():
        t.close()


FACT_KEYS = (
    "protocol",
    "agent_version",
    "arch",
    "cpu_model",
    "cpu_count",
    "os",
    "kernel",
    "python",
    "governors",
)


def test_hello_put_has_identical_everywhere(all_transports: dict[str, Transport], tmp_path: Path) -> None:
    blob = tmp_path / "same"
    blob.write_bytes(os.urandom(50_000))
    answers = {}
    for name, t in all_transports.items():
        facts = {k: t.hello[k] for k in FACT_KEYS}
        facts["memory_total"] = t.hello["memory_mb"]["total"]
        sha = t.upload(blob)
        answers[name] = (facts, sha, t.request("has", {"hashes": [sha, "e" * 64]})["held"])
    assert answers["local"] == answers["ssh"] == answers["serial"]


def test_bench_selftest_identical_everywhere(all_transports: dict[str, Transport]) -> None:
    from device_agents.bench import BenchOptions, run_bench
    from device_agents.inventory import default_farm

    board = default_farm().board("local")
    opts = BenchOptions(warmup=2, min_iters=10, min_seconds=0.05, idle_seconds=0.0)
    records = {name: run_bench(t, board, None, opts) for name, t in all_transports.items()}
    keys = {name: (r.output_checksum, r.output_shape, r.runner_version, r.tvm_version, r.runtime, r.warmup)
            for name, r in records.items()}  # fmt: skip
    assert keys["local"] == keys["ssh"] == keys["serial"]
    for name, r in records.items():
        assert r.transport == name and r.summary.n >= 10 and r.energy.source == "model"


def test_bench_generate_identical_everywhere(all_transports: dict[str, Transport], tmp_path: Path) -> None:
    """A causal-LM bundle's greedy generation, passed through the agent's bench on every transport."""
    from device_agents.bench import BenchOptions, GenerateOptions, run_bench
    from device_agents.inventory import default_farm
    from harness.compile import CompileOptions, compile_model
    from tests.unit.llm_tiny import save_tiny_lm

    lm = save_tiny_lm(tmp_path / "lm")
    bundle = compile_model(lm, "local", CompileOptions(seq_len=8, cache_len=32)).bundle
    assert bundle.metadata.causal is not None
    board = default_farm().board("local")
    gen = GenerateOptions(new_tokens=6, prompt_tokens=8)
    opts = BenchOptions(warmup=1, min_iters=2, min_seconds=0.0, idle_seconds=0.0, generate=gen)
    records = {name: run_bench(t, board, bundle.directory, opts) for name, t in all_transports.items()}
    for name, r in records.items():
        g = r.generation
        assert r.transport == name and g is not None and r.summary.n == 2
        assert g.generated_ids == bundle.metadata.causal.expected_ids[:6]
        assert (g.prompt_tokens, g.new_tokens, len(g.ttft_ns), len(g.decode_ns)) == (8, 6, 2, 10)
        assert g.decode_tokens_per_s is not None and g.decode_tokens_per_s > 0


# ------------------------------------------------------------------------- serial console login

CONSOLE = """#!/bin/bash
# A console like getty + login on a real pty (socat gives it one): prompts, checks, then a shell.
while true; do
  printf 'board login: '
  read -r user
  printf 'Password: '
  read -rs pass
  echo
  if [ "$user" = "hilt" ] && [ "$pass" = "s3cret" ]; then break; fi
  echo "Login incorrect"
done
export PS1='$ '
exec bash --norc --noprofile -i
"""


def _reading_tty(script: str) -> bool:
    """Whether a process running `script` is blocked reading its terminal."""
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if script.encode() in cmdline.read_bytes():
                if (
                    "tty" in (cmdline.parent / "wchan").read_text()
                    or "wait_woken" in (cmdline.parent / "wchan").read_text()
                ):
                    return True
        except OSError:
            continue
    return False


@pytest.fixture()
def console(tmp_path: Path) -> Iterator[str]:
    if SOCAT is None:
        pytest.skip("socat is not installed (scripts/system-deps.sh installs it)")
    script = tmp_path / "console.sh"
    script.write_text(CONSOLE)
    link = tmp_path / "console"
    proc = subprocess.Popen(
        [SOCAT, f"pty,raw,echo=0,link={link}", f"EXEC:bash {script},pty,setsid,ctty,stderr"],
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while not link.exists():
        if time.monotonic() > deadline:
            pytest.fail("socat did not create the console pty")
        time.sleep(0.05)
    # the pty exists before the script runs: wait until it sits in its first `read` (a nudge sent
    # earlier would be read as an empty user name, which is not the race under test)
    while not _reading_tty(str(script)):
        if time.monotonic() > deadline:
            pytest.fail("the console script never waited for a login")
        time.sleep(0.02)
    try:
        yield str(link)
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _login(tmp_path: Path, **kw: object) -> object:
    from profiles.schema import SerialLogin

    opts: dict[str, object] = {
        "user": "hilt", "password_env": "HILT_TEST_PW", "agent_dir": str(tmp_path / "ag"),
        "python": sys.executable, "timeout_s": 15.0,
    }  # fmt: skip
    opts.update(kw)
    return SerialLogin(**opts)  # type: ignore[arg-type]


def test_serial_login_copies_and_starts_the_agent(
    console: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HILT_TEST_PW", "s3cret")
    blob = tmp_path / "blob"
    blob.write_bytes(os.urandom(30_000))
    with SerialTransport("console", console, 115200, login=_login(tmp_path)) as t:  # type: ignore[arg-type]
        assert t.hello["protocol"] == wire.PROTOCOL_VERSION
        sha = t.upload(blob)
    copied = list((tmp_path / "ag").glob("agent-*.pyz"))
    assert len(copied) == 1 and copied[0].read_bytes() == agent_pyz().read_bytes()
    assert (tmp_path / "ag" / "store" / "objects" / sha).read_bytes() == blob.read_bytes()


def test_serial_login_refused_with_the_wrong_password(
    console: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HILT_TEST_PW", "wrong")
    with pytest.raises(TransportError, match="console login as hilt refused"):
        SerialTransport("console", console, 115200, login=_login(tmp_path)).open()  # type: ignore[arg-type]


def test_serial_login_without_the_password_variable(
    console: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("HILT_TEST_PW", raising=False)
    with pytest.raises(TransportError, match=r"set \$HILT_TEST_PW"):
        SerialTransport("console", console, 115200, login=_login(tmp_path)).open()  # type: ignore[arg-type]
