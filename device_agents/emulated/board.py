"""One qemu-user board: an overlay on the cached rootfs, run as a chroot with its own sshd and serial line.

What a board gets, in order: overlay root, /proc, a private /dev (tmpfs with a few nodes and a fresh
devpts instance), read-only /sys; fresh host keys and a throwaway client key; sshd on a loopback port;
a socat pty pair whose board end is bind-mounted at /dev/ttyHILT0 with the agent serving on it; the
board runtime in the agent's store when the compiler side provides one. Everything started or
mounted is recorded in the returned BoardState, which `stop_board` undoes.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from device_agents.transports.base import agent_pyz
from device_agents.transports.serial import SerialTransport
from harness.errors import FarmError, HiltError

from .mounts import mount, mounts_under, safe_rmtree, unmount
from .rootfs import RootfsImage
from .state import BoardState, ProcessRecord, process_start_ticks

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RuntimeFiles:
    """The board runtime to pre-install: its files (name -> sha256) in a directory, tree hash, versions."""

    directory: Path
    files: dict[str, str]
    sha256: str
    versions: dict[str, str]


BOARD_AGENT = "/opt/hilt/agent.pyz"  # the packed agent, the same file the transports ship
# the SSH transport runs the agent with `--cache ~/.cache/hilt-agent/store`; the serial agent shares it
AGENT_STORE = "/root/.cache/hilt-agent/store"
RUNNER_NAME = "hilt-runner"
BOARD_SERIAL = "/dev/ttyHILT0"
CHROOT_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root", "LANG": "C.UTF-8", "TERM": "dumb"}
# name, major, minor, mode of the device nodes a board's private /dev needs
DEV_NODES = (
    ("null", 1, 3, 0o666),
    ("zero", 1, 5, 0o666),
    ("full", 1, 7, 0o666),
    ("random", 1, 8, 0o666),
    ("urandom", 1, 9, 0o666),
    ("tty", 5, 0, 0o666),
)
SSHD_CONFIG = """\
# written by `hilt farm up`: loopback only, key login only, fresh host key per board
Port {port}
ListenAddress 127.0.0.1
HostKey /etc/ssh/ssh_host_ed25519_key
PermitRootLogin prohibit-password
PubkeyAuthentication yes
AuthorizedKeysFile .ssh/authorized_keys
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
UseDNS no
PidFile none
Subsystem sftp /usr/lib/openssh/sftp-server
"""


def free_port(start: int, taken: set[int]) -> int:
    """The first port from `start` that no board uses and nothing on the host listens on."""
    for port in range(start, start + 200):
        if port in taken:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise FarmError(f"no free loopback port in {start}..{start + 199} for a board's sshd")


def new_board(
    name: str, profile: str, image: RootfsImage, directory: Path, port: int, mode: Literal["user", "system"]
) -> BoardState:
    """A fresh board directory (any earlier one removed) and the state that describes it; both modes
    start here. A system-mode board's agent serves on its virtio console, a user-mode one on a pty."""
    if directory.exists():
        safe_rmtree(directory)
    for sub in ("upper", "work", "root", "ssh", "logs"):
        (directory / sub).mkdir(parents=True)
    return BoardState(
        name=name,
        arch=image.arch,
        mode=mode,
        profile=profile,
        image=image.path,
        directory=str(directory),
        root=str(directory / "root"),
        ssh_port=port,
        key_file=str(directory / "ssh" / "id_ed25519"),
        known_hosts=str(directory / "ssh" / "known_hosts"),
        serial_host=str(directory / "serial-host"),
        serial_board="/dev/hvc0" if mode == "system" else str(directory / "serial-board"),
        started_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    )


def start_user_board(
    name: str,
    profile: str,
    image: RootfsImage,
    directory: Path,
    port: int,
    runtime: RuntimeFiles | None = None,
    ready_timeout: float = 120.0,
) -> BoardState:
    """Start one board; on any failure everything already started or mounted is undone."""
    state = new_board(name, profile, image, directory, port, mode="user")
    root = Path(state.root)
    try:
        _mount_root(state, Path(image.path), directory)
        write_ssh_keys(state, root)
        install_payload(state, root, runtime)
        _start_sshd(state, root, directory / "logs")
        _start_serial(state, root, directory / "logs")
        wait_ssh(state, ready_timeout)
        wait_agent(state, ready_timeout)
    except BaseException:
        stop_board(state)
        raise
    return state


def _mount_root(state: BoardState, image: Path, directory: Path) -> None:
    root = Path(state.root)
    opts = f"lowerdir={image},upperdir={directory / 'upper'},workdir={directory / 'work'}"
    mount(["-t", "overlay", "overlay", "-o", opts], root)
    state.mounts.append(str(root))
    mount(["-t", "proc", "proc"], root / "proc")
    state.mounts.append(str(root / "proc"))
    mount(["-t", "sysfs", "-o", "ro,nosuid,nodev,noexec", "sysfs"], root / "sys")
    state.mounts.append(str(root / "sys"))
    dev = root / "dev"
    mount(["-t", "tmpfs", "-o", "mode=0755,size=1m,nosuid", "tmpfs"], dev)
    state.mounts.append(str(dev))
    for node, major, minor, mode in DEV_NODES:
        os.mknod(dev / node, mode | 0o020000, os.makedev(major, minor))
        os.chmod(dev / node, mode)
    for sub in ("pts", "shm"):
        (dev / sub).mkdir()
    os.chmod(dev / "shm", 0o1777)
    for link, target in (
        ("ptmx", "pts/ptmx"),
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ):
        os.symlink(target, dev / link)
    mount(["-t", "devpts", "-o", "newinstance,ptmxmode=0666,mode=0620,gid=5", "devpts"], dev / "pts")
    state.mounts.append(str(dev / "pts"))


def write_ssh_keys(state: BoardState, root: Path) -> None:
    """Fresh host key per board (generated natively: 9 s under emulation) and a throwaway client key."""
    host_key = root / "etc" / "ssh" / "ssh_host_ed25519_key"
    for old in host_key.parent.glob("ssh_host_*"):
        old.unlink()
    _run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"hilt-farm-{state.name}", "-f", str(host_key)]
    )
    _run(
        [
            "ssh-keygen",
            "-q",
            "-t",
            "ed25519",
            "-N",
            "",
            "-C",
            f"hilt-farm-client-{state.name}",
            "-f",
            state.key_file,
        ]
    )
    ssh_dir = root / "root" / ".ssh"
    ssh_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(ssh_dir, 0o700)
    auth = ssh_dir / "authorized_keys"
    auth.write_text(Path(state.key_file + ".pub").read_text())
    os.chmod(auth, 0o600)
    key_type, key_data = Path(str(host_key) + ".pub").read_text().split()[:2]
    Path(state.known_hosts).write_text(f"[127.0.0.1]:{state.ssh_port} {key_type} {key_data}\n")
    (root / "etc" / "ssh" / "sshd_hilt_config").write_text(SSHD_CONFIG.format(port=state.ssh_port))
    (root / "run" / "sshd").mkdir(parents=True, exist_ok=True)
    (root / "etc" / "hostname").write_text(state.name + "\n")


def install_payload(state: BoardState, root: Path, runtime: RuntimeFiles | None) -> None:
    """Copy the agent into the board and pre-install the board runtime in the agent's store.

    The runtime lands where the agent's `install` request would put it (`<store>/runtime/<sha>/`),
    so hosts find it already installed over SSH and serial alike.
    """
    opt = root / "opt" / "hilt"
    opt.mkdir(parents=True, exist_ok=True)
    shutil.copy2(agent_pyz(), root / BOARD_AGENT.lstrip("/"))
    state.agent_path = BOARD_AGENT
    if runtime is None:
        return
    target = root / AGENT_STORE.lstrip("/") / "runtime" / runtime.sha256
    target.mkdir(parents=True, exist_ok=True)
    for name in sorted(runtime.files):
        shutil.copy2(runtime.directory / name, target / name)
    runner = target / RUNNER_NAME
    if runner.exists():
        os.chmod(runner, 0o755)
    (target / "versions.json").write_text(json.dumps(runtime.versions))
    state.runtime_dir = str(Path("/") / target.relative_to(root))
    state.runtime_sha256 = runtime.sha256


def spawn(state: BoardState, role: str, cmd: list[str], log_path: Path) -> subprocess.Popen[bytes]:
    with log_path.open("ab") as out:
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=CHROOT_ENV,
            start_new_session=True,  # outlives `hilt farm up`; `down` stops it by pid
            close_fds=True,
        )
    ticks = None
    for _ in range(50):
        ticks = process_start_ticks(proc.pid)
        if ticks is not None:
            break
        time.sleep(0.01)
    state.processes.append(ProcessRecord(role=role, pid=proc.pid, start_ticks=ticks or 0))
    return proc


def _start_sshd(state: BoardState, root: Path, logs: Path) -> None:
    cmd = ["chroot", str(root), "/usr/sbin/sshd", "-D", "-e", "-f", "/etc/ssh/sshd_hilt_config"]
    spawn(state, "sshd", cmd, logs / "sshd.log")


def _start_serial(state: BoardState, root: Path, logs: Path) -> None:
    host, board = Path(state.serial_host), Path(state.serial_board)
    cmd = ["socat", "-d", "-d", f"pty,raw,echo=0,link={host}", f"pty,raw,echo=0,link={board}"]
    proc = spawn(state, "socat", cmd, logs / "socat.log")
    deadline = time.monotonic() + 10
    while not (host.exists() and board.exists()):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise FarmError(
                f"socat did not create the serial pty pair for {state.name}; see {logs / 'socat.log'}"
            )
        time.sleep(0.05)
    inside = root / BOARD_SERIAL.lstrip("/")
    inside.touch()
    mount(["--bind", str(board.resolve())], inside)
    state.mounts.append(str(inside))
    if state.agent_path:
        cmd = ["chroot", str(root), "/usr/bin/python3", state.agent_path, "--cache", AGENT_STORE]
        cmd += ["--serial", BOARD_SERIAL]
        spawn(state, "agent-serial", cmd, logs / "agent-serial.log")


def wait_ssh(state: BoardState, timeout: float) -> None:
    """sshd under emulation takes a few seconds; wait for its banner, not just an open port."""
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        # the process that serves SSH: sshd in a chroot, or the whole VM in system mode
        sshd = next(p for p in state.processes if p.role in ("sshd", "qemu"))
        if not sshd.alive():
            log_file = Path(state.directory) / "logs" / f"{sshd.role}.log"
            tail = log_file.read_text().strip().splitlines()[-1:] if log_file.exists() else []
            raise FarmError(f"{sshd.role} of board {state.name} exited: {' '.join(tail) or 'no log'}")
        try:
            with socket.create_connection(("127.0.0.1", state.ssh_port), timeout=2) as sock:
                if sock.recv(64).startswith(b"SSH-2.0"):
                    return
        except OSError as exc:
            last = str(exc)
        time.sleep(0.3)
    raise FarmError(
        f"sshd of board {state.name} did not answer on port {state.ssh_port} in {timeout:.0f} s ({last})"
    )


def wait_agent(state: BoardState, timeout: float) -> None:
    """The board is up only when its serial agent answers too (it starts after sshd in a VM)."""
    if not state.agent_path:
        return
    deadline = time.monotonic() + timeout
    while True:
        try:
            with SerialTransport(f"{state.name}-serial", state.serial_host):
                return
        except HiltError as exc:
            if time.monotonic() > deadline:
                raise FarmError(
                    f"the agent of board {state.name} does not answer on its serial line: {exc}"
                ) from None
        time.sleep(1.0)


def processes_in_root(root: Path) -> list[int]:
    """Pids whose filesystem root is this board's root or below: everything running inside its chroot.

    Threads are checked too: a multi-threaded process whose main thread has exited no longer shows
    its root on /proc/PID, yet its other threads still pin the board's mounts.
    """
    target = str(root)
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            tasks = [entry / "root"] + [t / "root" for t in (entry / "task").iterdir()]
        except OSError:
            continue
        for link in tasks:
            try:
                found = os.readlink(link)
                # sshd's pre-auth children chroot further, into /run/sshd inside the board
                if found == target or found.startswith(target + "/"):
                    pids.append(int(entry.name))
                    break
            except OSError:
                continue
    return pids


def _signal_all(pids: list[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def stop_board(state: BoardState, grace: float = 5.0) -> None:
    """Stop the recorded processes (by pid and start time) and whatever runs in the chroot, then unmount."""
    root = Path(state.root)
    ours = [p.pid for p in state.processes if p.alive()]
    _signal_all(ours + processes_in_root(root), signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        left = [p.pid for p in state.processes if p.alive()] + processes_in_root(root)
        if not left:
            break
        time.sleep(0.1)
    else:
        _signal_all([p.pid for p in state.processes if p.alive()] + processes_in_root(root), signal.SIGKILL)
        time.sleep(0.2)
    _reap([p.pid for p in state.processes])
    for point in reversed(state.mounts):
        unmount(Path(point))
    # anything mounted inside the board by its own processes (rare) goes too
    for point in mounts_under(root):
        unmount(point)
    safe_rmtree(Path(state.directory))


def _reap(pids: list[int]) -> None:
    """Collect our own exited children (when the caller started them) so none lingers as a zombie."""
    for pid in pids:
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass


def _run(cmd: list[str]) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise FarmError(f"{cmd[0]} failed: {(proc.stderr or proc.stdout).strip()}")
