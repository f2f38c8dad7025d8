"""Emulated qemu-user boards end to end: one aarch64 and one riscv64 board over SSH and serial.

The rootfs images come from the shared cache (built on first use, minutes; reused afterwards);
each test run gets its own farm state dir and tears everything down, checking that no process
or mount is left behind.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import paramiko
import pytest
import torch
from fabric import Connection

from device_agents import bench, inventory
from device_agents.emulated import FarmPaths, down, reboot, status, up
from device_agents.emulated.board import processes_in_root
from device_agents.emulated.mounts import holders, mounts_under
from device_agents.emulated.state import BoardState, load_state
from device_agents.transports.serial import SerialTransport
from device_agents.transports.ssh import SshTransport
from harness import compile as compile_mod
from harness.cli.main import main
from harness.errors import FarmError

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="the emulated farm needs root"),
    pytest.mark.skipif(
        any(shutil.which(t) is None for t in ("debootstrap", "socat", "update-binfmts")),
        reason="needs debootstrap, socat, qemu-user-static/binfmt-support (scripts/system-deps.sh)",
    ),
]
ARCH_OF = {"qemu-a64-0": "aarch64", "qemu-rv64-0": "riscv64"}


def _gone(state_dir: Path, boards: list[BoardState]) -> None:
    """Nothing the farm started or mounted survives `down`."""
    assert mounts_under(state_dir) == []
    assert holders(state_dir) == []  # nothing keeps a lazily detached mount alive either
    for board in boards:
        assert processes_in_root(Path(board.root)) == []
        assert not any(p.alive() for p in board.processes)
        assert not Path(board.directory).exists()


@pytest.fixture(scope="module")
def farm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FarmPaths]:
    paths = FarmPaths(images=FarmPaths.default().images, state=tmp_path_factory.mktemp("farm"))
    result = up(["aarch64", "riscv64"], paths=paths)
    boards = list(result.state.boards)
    try:
        yield paths
    finally:
        down(paths)
        _gone(paths.state, boards)


def _board(paths: FarmPaths, name: str) -> BoardState:
    board = load_state(paths.state_file).board(name)
    assert board is not None
    return board


def _connection(board: BoardState, known_hosts: str | None = None) -> Connection:
    client_policy = paramiko.RejectPolicy()
    conn = Connection(
        "127.0.0.1",
        port=board.ssh_port,
        user="root",
        connect_kwargs={"key_filename": board.key_file, "look_for_keys": False, "allow_agent": False},
    )
    conn.client.set_missing_host_key_policy(client_policy)
    conn.client.load_host_keys(known_hosts or board.known_hosts)
    return conn


@pytest.mark.parametrize("name", sorted(ARCH_OF))
def test_ssh_reaches_the_emulated_arch(farm: FarmPaths, name: str, tmp_path: Path) -> None:
    board = _board(farm, name)
    with _connection(board) as conn:
        assert conn.run("uname -m", hide=True, in_stream=False).stdout.strip() == ARCH_OF[name]
        local = tmp_path / "payload.txt"
        local.write_text("hello board\n")
        conn.put(str(local), "/tmp/payload.txt")
        assert conn.run("cat /tmp/payload.txt", hide=True, in_stream=False).stdout == "hello board\n"
    # strict host key checking: another board's key must be refused
    other = _board(farm, next(n for n in ARCH_OF if n != name))
    wrong = tmp_path / "known_hosts"
    key_line = Path(other.known_hosts).read_text().split(None, 1)[1]
    wrong.write_text(f"[127.0.0.1]:{board.ssh_port} {key_line}")
    with pytest.raises(paramiko.BadHostKeyException), _connection(board, str(wrong)) as conn:
        conn.run("true", hide=True, in_stream=False)


@pytest.mark.parametrize("name", sorted(ARCH_OF))
def test_agent_over_ssh_and_serial(farm: FarmPaths, name: str) -> None:
    board = _board(farm, name)
    with SerialTransport(f"{name}-serial", board.serial_host) as serial_line:
        assert serial_line.hello["arch"] == ARCH_OF[name]
        # a round trip, with no wall-clock bound: qemu's speed is not the agent's
        assert serial_line.request("has", {"hashes": []}, timeout=30.0) == {"held": []}
    with SshTransport(name, "127.0.0.1", board.ssh_port, "root", board.key_file, board.known_hosts) as ssh:
        assert ssh.hello["arch"] == ARCH_OF[name]
        assert ssh.hello["cache"] == "/root/.cache/hilt-agent/store"  # shared with the serial agent
    # the serial agent keeps serving after a client goes away
    with SerialTransport(f"{name}-serial", board.serial_host) as again:
        assert again.hello["arch"] == ARCH_OF[name]


def test_ssh_and_serial_agents_of_one_board_never_bench_at_once(farm: FarmPaths, tmp_path: Path) -> None:
    """The board's SSH agent and its serial agent share one store, hence one bench lock: a serial
    bench that will not wait is refused naming the SSH bench, one that waits runs after it. The serial
    benches use a board pool of their own (as another host would), so only the agent's lock is tested."""
    import threading

    from device_agents.bench import BenchOptions, bench_board
    from device_agents.inventory import load_farm
    from device_agents.pool import BoardPool
    from device_agents.transports.serial import SerialTransport
    from harness.errors import BoardBusyError

    loaded = load_farm(farm.farm_file)
    ssh_board, serial_board = loaded.board("qemu-a64-0"), loaded.board("qemu-a64-0-serial")
    opts = BenchOptions(warmup=0, min_iters=3, min_seconds=3.0, idle_seconds=0.0, power=False)
    out: dict[str, object] = {}

    def long_ssh_bench() -> None:
        try:
            out["ssh"] = bench_board(ssh_board, None, dataclasses.replace(opts, holder="ssh-bench"))
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            out["ssh"] = exc

    th = threading.Thread(target=long_ssh_bench)
    th.start()
    try:
        with SerialTransport("watch", _board(farm, "qemu-a64-0").serial_host) as watch:
            deadline = time.monotonic() + 120
            while (watch.request("hello").get("bench_lock") or {}).get("holder") != "ssh-bench":
                assert th.is_alive() and time.monotonic() < deadline, f"the SSH bench never held it: {out}"
                time.sleep(0.1)
        quick = dataclasses.replace(opts, min_seconds=0.0, holder="serial-bench")
        other_host = BoardPool(str(tmp_path / "other-host-pool.db"))
        with pytest.raises(BoardBusyError, match="held by ssh-bench .* since 20"):
            bench_board(serial_board, None, quick, pool=other_host)
        waited = bench_board(serial_board, None, dataclasses.replace(quick, wait_s=180.0), pool=other_host)
    finally:
        th.join(timeout=300)
    first = out["ssh"]
    assert not isinstance(first, BaseException), first
    assert first.finished_at <= waited.started_at  # type: ignore[attr-defined]


def test_boards_through_the_farm_file(farm: FarmPaths) -> None:
    loaded = inventory.load_farm(farm.farm_file)
    assert sorted(loaded.names()) == sorted([*ARCH_OF, *(f"{n}-serial" for n in ARCH_OF)])
    for name, arch in ARCH_OF.items():
        board = loaded.board(name)
        assert board.profile.emulated and board.profile.arch == arch
        assert board.transport.port == _board(farm, name).ssh_port


def test_up_again_is_a_noop_and_status_reports(farm: FarmPaths, capsys: pytest.CaptureFixture[str]) -> None:
    before = {b.name: [p.pid for p in b.processes] for b in load_state(farm.state_file).boards}
    result = up(["aarch64", "riscv64"], paths=farm)
    assert result.started == []
    assert {b.name: [p.pid for p in b.processes] for b in result.state.boards} == before
    assert all(s.running for s in status(farm))
    assert main(["farm", "status", "--state-dir", str(farm.state)]) == 0
    out = capsys.readouterr().out
    assert "qemu-a64-0" in out and "qemu-rv64-0" in out and "running" in out
    with pytest.raises(FarmError, match="cannot reboot qemu-a64-0: a qemu-user board has no kernel"):
        reboot("qemu-a64-0", farm)


def test_a_board_that_lost_a_process_is_restarted(tmp_path: Path) -> None:
    paths = FarmPaths(images=FarmPaths.default().images, state=tmp_path / "farm")
    first = up(["aarch64"], paths=paths, with_runtime=False).state.boards[0]
    try:
        sshd = next(p for p in first.processes if p.role == "sshd")
        os.kill(sshd.pid, signal.SIGKILL)
        os.waitpid(sshd.pid, 0)
        assert not next(s for s in status(paths)).running
        result = up(["aarch64"], paths=paths, with_runtime=False)
        assert result.started == ["qemu-a64-0"]
        assert all(p.alive() for p in result.state.boards[0].processes)
        assert not any(p.alive() for p in first.processes)
    finally:
        boards = load_state(paths.state_file).boards
        assert down(paths) == ["qemu-a64-0"]
    _gone(paths.state, [first, *boards])
    assert not paths.state_file.exists() and not paths.farm_file.exists()


def _pruned_llama(path: Path) -> Path:
    """A micro LLaMA (GQA + SwiGLU), pruned unevenly per layer and saved with its pruning manifest."""
    from transformers import LlamaConfig, LlamaForSequenceClassification

    from harness.models import get_adapter
    from harness.models.manifest import save_pruned

    torch.manual_seed(7)
    cfg = LlamaConfig(
        vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=3, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=32, num_labels=4, pad_token_id=63,
    )  # fmt: skip
    model = LlamaForSequenceClassification(cfg).eval()
    adapter = get_adapter(model)
    adapter.remove_layers([0, 2])  # the adapter's calls name what to keep
    adapter.remove_heads(0, [1])  # layer 0 keeps one KV group of two
    adapter.remove_channels(1, [i for i in range(48) if i % 3])  # layer 1 keeps 32 of 48 FFN channels
    save_pruned(model, path, "sequence-classification")
    return path


@pytest.mark.parametrize(
    ("name", "profile"), [("qemu-a64-0", "qemu-aarch64"), ("qemu-rv64-0", "qemu-riscv64")]
)
def test_pruned_model_benches_on_the_board_and_matches_pytorch(
    farm: FarmPaths, name: str, profile: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Compile for the board's profile, bench through the agent over SSH, and compare the board's
    logits (the runner's dump, fetched over SSH) and the agent's checksum with PyTorch."""
    from harness.models import load_model

    board_state = _board(farm, name)
    assert board_state.runtime_sha256, "farm up installed no board runtime"
    model_dir = tmp_path_factory.getbasetemp() / "pruned-llama"
    if not model_dir.exists():
        _pruned_llama(model_dir)
    torch.set_num_threads(1)
    bundle = compile_mod.compile_model(model_dir, profile, compile_mod.CompileOptions(seq_len=16)).bundle
    assert bundle.metadata.arch == ARCH_OF[name] and bundle.manifest()

    board = inventory.load_farm(farm.farm_file).board(name)
    options = bench.BenchOptions(warmup=1, min_iters=3, min_seconds=0.0, idle_seconds=0.0, power=False)
    record = bench.bench_board(board, bundle.directory, options)
    assert record.artifact == bundle.sha256 and record.runtime == board_state.runtime_sha256
    assert len(record.samples_ns) >= 3 and all(s > 0 for s in record.samples_ns)
    assert record.emulated  # qemu time is labelled, never mistaken for board time

    model = load_model(model_dir).model.eval()
    ids = torch.from_numpy(bundle.input_array().copy())
    with torch.no_grad():
        expected = model(ids, attention_mask=torch.ones_like(ids)).logits.numpy().reshape(-1)
    assert record.output_shape == [1, 4]
    assert record.output_checksum == pytest.approx(float(expected.astype(np.float64).sum()), abs=1e-3)

    store = "/root/.cache/hilt-agent/store"
    runner = f"{store}/runtime/{board_state.runtime_sha256}"
    cmd = (
        f"LD_LIBRARY_PATH={runner} {runner}/hilt-runner --bundle {store}/bundle/{bundle.sha256} "
        "--warmup 0 --min-iters 1 --min-seconds 0 --dump-output /tmp/logits.bin"
    )
    local = tmp_path_factory.mktemp("logits") / "logits.bin"
    with _connection(board_state) as conn:
        conn.run(cmd, hide=True, in_stream=False)
        conn.get("/tmp/logits.bin", str(local))
    np.testing.assert_allclose(np.fromfile(local, dtype="<f4"), expected, atol=1e-4, rtol=0)


def test_cli_up_status_down(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    state = tmp_path / "cli-farm"
    assert main(["farm", "up", "--arch", "riscv64", "--no-runtime", "--state-dir", str(state)]) == 0
    out = capsys.readouterr().out
    assert "started qemu-rv64-0 (riscv64)" in out and str(state / "farm.toml") in out
    assert main(["farm", "up", "--arch", "riscv64", "--no-runtime", "--state-dir", str(state)]) == 0
    assert "already up qemu-rv64-0" in capsys.readouterr().out
    boards = load_state(state / "state.json").boards
    assert main(["farm", "down", "--state-dir", str(state)]) == 0
    assert "stopped: qemu-rv64-0" in capsys.readouterr().out
    _gone(state, boards)
    assert main(["farm", "status", "--state-dir", str(state)]) == 0
    assert "no farm boards running" in capsys.readouterr().out
