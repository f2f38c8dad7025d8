"""Benchmarks through a real agent and the real hilt-runner: records, hung and crashed runners,
typed runner refusals, energy from fake sensors and a meter on a pty, and a real compiled bundle."""

from __future__ import annotations

import json
import os
import shutil
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from device_agents.agent import wire
from device_agents.bench import BenchOptions, run_bench, runtime_files, ship_tree
from device_agents.inventory import Board, default_farm
from device_agents.records import load_record
from device_agents.transports.local import LocalTransport
from harness.errors import RemoteError
from hilt_base import hashing

ARCH = os.uname().machine


@pytest.fixture(scope="module")
def runtime() -> tuple[str, dict[str, Path], dict[str, str]]:
    return runtime_files(ARCH)  # built once into the session cache; a build that fails fails the tests


@pytest.fixture()
def board() -> Board:
    return default_farm().board("local")


@pytest.fixture()
def local(tmp_path: Path, runtime: tuple) -> Iterator[LocalTransport]:
    t = LocalTransport("local", cache=tmp_path / "cache")
    t.open()
    tree, files, versions = runtime
    ship_tree(t, "runtime", files, tree, versions=versions)
    yield t
    t.close()


def _children(pid: int) -> list[tuple[int, str]]:
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        if ppid == pid:
            out.append((int(entry), name))
    return out


def _bench_args(runtime: tuple, **kw: object) -> dict:
    args: dict = {"runtime": runtime[0], "selftest": True, "warmup": 1, "min_iters": 5, "min_seconds": 0.05,
                  "idle_seconds": 0.0}  # fmt: skip
    args.update(kw)
    return args


def test_selftest_record(local: LocalTransport, board: Board, tmp_path: Path) -> None:
    opts = BenchOptions(warmup=3, min_iters=25, min_seconds=0.05, threads=1, cores=(0,), idle_seconds=0.1)
    rec = run_bench(local, board, None, opts)
    assert rec.artifact == "selftest" and rec.warmup == 3 and rec.cores == [0]
    assert len(rec.samples_ns) >= 25 and all(s > 0 for s in rec.samples_ns)
    assert rec.summary.p99_ns >= rec.summary.median_ns > 0
    assert rec.output_shape == [128, 128]  # the runner's fixed matmul, C = A @ B
    i = np.arange(128 * 128)
    a = (((i % 17) - 8) / 8.0).reshape(128, 128)
    b = (((i % 13) - 6) / 6.0).reshape(128, 128)
    assert rec.output_checksum == pytest.approx(float((a @ b).sum()), rel=1e-4, abs=1e-2)
    assert rec.energy.source == "model"  # no sensors in this container
    assert rec.energy.total_j_per_inference == pytest.approx(
        (board.profile.power.idle_w + board.profile.power.per_core_w) * rec.summary.mean_ns / 1e9
    )
    assert rec.peak_rss_kb > 0 and rec.board_facts["arch"] == ARCH
    back = load_record(rec.save(tmp_path / "rec.json"))
    assert back.samples_ns == rec.samples_ns
    runtimes = local.request("hello")["runtimes"]
    assert [r["hash"] for r in runtimes] == [rec.runtime] and runtimes[0]["arch"] == ARCH


def test_hung_runner_is_killed_at_the_deadline(local: LocalTransport, runtime: tuple) -> None:
    t0 = time.monotonic()
    with pytest.raises(RemoteError) as info:
        local.request("bench", _bench_args(runtime, min_seconds=120.0), timeout=2.0)
    assert info.value.kind == "runner_timeout"
    assert time.monotonic() - t0 < 2.0 + local.grace_s
    assert local.hello["pid"] and _children(local.hello["pid"]) == []  # nothing left running
    assert local.request("has", {"hashes": []}) == {"held": []}  # the agent keeps serving


def test_runner_killed_mid_bench_is_a_typed_error(local: LocalTransport, runtime: tuple) -> None:
    outcome: dict[str, BaseException] = {}

    def run() -> None:
        try:
            local.request("bench", _bench_args(runtime, min_seconds=60.0), timeout=90.0)
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            outcome["exc"] = exc

    th = threading.Thread(target=run)
    th.start()
    deadline = time.monotonic() + 20
    runners: list[tuple[int, str]] = []
    while time.monotonic() < deadline and not runners:
        runners = [c for c in _children(local.hello["pid"]) if c[1].startswith("hilt-runner")]
        time.sleep(0.05)
    assert runners, "the runner never started"
    os.kill(runners[0][0], signal.SIGKILL)
    th.join(timeout=20)
    exc = outcome.get("exc")
    assert isinstance(exc, RemoteError) and exc.kind == "runner_crashed"
    assert "signal 9" in str(exc)
    assert local.request("hello")["protocol"] == wire.PROTOCOL_VERSION


def test_runner_refusing_a_bundle_is_typed(local: LocalTransport, runtime: tuple, tmp_path: Path) -> None:
    """A bundle whose hashes agree but whose library is junk: the runner refuses, the agent says why."""
    files = {
        "model.so": b"not an ELF file",
        "input.json": json.dumps({"name": "input_ids", "shape": [1, 4], "dtype": "int64"}).encode(),
        "input.bin": bytes(32),
        "expected.bin": bytes(12),
        "manifest.json": b"{}",
    }
    hashes = {}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
        hashes[name] = local.upload(tmp_path / name)
    meta = {"version": 1, "arch": ARCH, "target": "llvm", "files": hashes}
    (tmp_path / "metadata.json").write_text(json.dumps(meta))
    all_files = {**hashes, "metadata.json": local.upload(tmp_path / "metadata.json")}
    tree = hashing.tree_hash(hashes)
    local.request("install", {"kind": "bundle", "hash": tree, "files": all_files})
    with pytest.raises(RemoteError) as info:
        local.request("bench", _bench_args(runtime, selftest=False, bundle=tree), timeout=60)
    assert info.value.kind.startswith("runner_") and info.value.kind != "runner_timeout"
    assert local.request("has", {"hashes": [tree]})["held"] == [tree]


def _fake_sysfs(root: Path) -> None:
    for rel, value in {
        "class/hwmon/hwmon0/name": "ina226",
        "class/hwmon/hwmon0/power1_input": "3250000",
        "class/hwmon/hwmon0/update_interval": "5",
        "devices/system/cpu/cpu0/cpufreq/scaling_governor": "performance",
        "devices/system/cpu/cpu0/cpufreq/scaling_cur_freq": "1800000",
        "devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq": "1800000",
        "class/thermal/thermal_zone0/type": "cpu-thermal",
        "class/thermal/thermal_zone0/temp": "45000",
    }.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(value + "\n")


def test_energy_from_an_ina226_in_a_fake_sysfs(tmp_path: Path, runtime: tuple, board: Board) -> None:
    _fake_sysfs(tmp_path / "sys")
    with LocalTransport("sensed", cache=tmp_path / "cache", sysfs_root=str(tmp_path / "sys")) as t:
        assert [p["source"] for p in t.hello["power_sources"]] == ["hwmon"]
        rec = run_bench(
            t, board, None, BenchOptions(warmup=1, min_iters=5, min_seconds=0.2, idle_seconds=0.1)
        )
    e = rec.energy
    assert e.source == "hwmon" and e.sensor.startswith("ina226") and e.samples >= 5
    assert e.mean_w == pytest.approx(3.25) and e.idle_w == pytest.approx(3.25)
    assert e.active_j_per_inference == pytest.approx(0.0)
    assert e.total_j_per_inference == pytest.approx(3.25 * rec.summary.mean_ns / 1e9)
    assert rec.facts_before.governors == {"0": "performance"} and rec.facts_after.temps_c == {
        "cpu-thermal": 45.0
    }
    assert rec.throttled is False


def test_energy_from_an_external_meter_on_a_pty(local: LocalTransport, runtime: tuple) -> None:
    master, slave = os.openpty()
    stop = threading.Event()

    def meter() -> None:
        while not stop.is_set():
            os.write(master, b"V=5.00 A=0.80\n")
            time.sleep(0.01)

    th = threading.Thread(target=meter, daemon=True)
    th.start()
    try:
        args = _bench_args(runtime, min_seconds=0.3, idle_seconds=0.1, meter={"device": os.ttyname(slave)})
        result = local.request("bench", args, timeout=60)
    finally:
        stop.set()
        th.join()
        os.close(master)
        os.close(slave)
    e = result["energy"]
    assert e["source"] == "meter" and e["mean_w"] == pytest.approx(4.0) and e["idle_w"] == pytest.approx(4.0)


def test_missing_meter_is_a_typed_error(local: LocalTransport, runtime: tuple, tmp_path: Path) -> None:
    with pytest.raises(RemoteError) as info:
        local.request("bench", _bench_args(runtime, meter={"device": str(tmp_path / "no-meter")}), timeout=30)
    assert info.value.kind == "power"


@pytest.fixture(scope="module")
def tiny_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch
    from transformers import GPT2Config, GPT2ForSequenceClassification

    from harness.compile import CompileOptions, compile_model

    torch.manual_seed(1)
    torch.set_num_threads(1)
    cfg = GPT2Config(
        vocab_size=64, n_positions=32, n_embd=32, n_layer=2, n_head=4, n_inner=64, num_labels=3,
        pad_token_id=63, bos_token_id=0, eos_token_id=0,
    )  # fmt: skip
    path = tmp_path_factory.mktemp("tiny") / "gpt2"
    GPT2ForSequenceClassification(cfg).save_pretrained(path)
    return compile_model(path, "local", CompileOptions(seq_len=16)).bundle.directory


def test_bench_a_real_bundle_from_the_cli(
    tiny_bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from harness.cli.main import main

    farm = tmp_path / "farm.toml"
    farm.write_text(
        f'version = 1\n[[board]]\nname = "here"\nprofile = "local"\n'
        f'[board.transport]\nkind = "local"\nagent_dir = "{tmp_path / "store"}"\n'
    )
    out = tmp_path / "record.json"
    args = [
        "bench",
        "--board",
        "here",
        "--bundle",
        str(tiny_bundle),
        "--min-iters",
        "10",
        "--min-seconds",
        "0.1",
    ]
    assert main([*args, "--farm", str(farm), "--out", str(out)]) == 0
    assert "median" in capsys.readouterr().out
    rec = load_record(out)
    assert rec.artifact == tiny_bundle.name and rec.output_shape[-1] == 3 and rec.summary.n >= 10
    stored = tmp_path / "store" / "bundle" / tiny_bundle.name
    shipped = sorted(p.name for p in tiny_bundle.iterdir() if p.is_file())
    assert "model.so" in shipped
    for name in shipped:  # the board holds the bundle byte for byte
        assert (stored / name).read_bytes() == (tiny_bundle / name).read_bytes(), name


def test_tampered_bundle_is_refused_on_the_host(tiny_bundle: Path, tmp_path: Path, board: Board) -> None:
    from harness.errors import ArtifactError

    copy = tmp_path / tiny_bundle.name
    shutil.copytree(tiny_bundle, copy)
    data = bytearray((copy / "input.bin").read_bytes())
    data[0] ^= 0xFF  # always a different byte
    (copy / "input.bin").write_bytes(bytes(data))
    with LocalTransport("local", cache=tmp_path / "cache") as t, pytest.raises(ArtifactError):
        run_bench(t, board, copy, BenchOptions())


def _old_python() -> str | None:
    """A working Python 3.9 (pyenv's shims may name one that is not usable here)."""
    import glob
    import subprocess

    candidates = sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.9*/bin/python")))
    candidates += [p for p in (shutil.which("python3.9"),) if p]
    for python in candidates:
        ok = subprocess.run(
            [python, "-c", "import sys; assert sys.version_info[:2] == (3, 9)"], capture_output=True
        )
        if ok.returncode == 0:
            return python
    return None


def test_agent_serves_under_python_3_9(tmp_path: Path, runtime: tuple, board: Board) -> None:
    """Boards run older Pythons: the same file must hello, store and bench under 3.9."""
    python = _old_python()
    if python is None:
        pytest.skip("no Python 3.9 on this machine")
    blob = tmp_path / "blob"
    blob.write_bytes(os.urandom(10_000))
    with LocalTransport("py39", cache=tmp_path / "cache", python=python) as t:
        assert t.hello["python"].startswith("3.9")
        sha = t.upload(blob)
        assert t.request("has", {"hashes": [sha]})["held"] == [sha]
        rec = run_bench(
            t, board, None, BenchOptions(warmup=1, min_iters=5, min_seconds=0.05, idle_seconds=0.0)
        )
    assert rec.summary.n >= 5 and rec.board_facts["python"].startswith("3.9")
