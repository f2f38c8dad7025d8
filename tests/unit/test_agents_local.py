"""The local transport: a real agent subprocess over pipes; dead, silent and mismatched agents."""

from __future__ import annotations

import ast
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from device_agents.agent import pack, wire
from device_agents.agent import power as agent_power
from device_agents.transports.base import agent_pyz
from device_agents.transports.local import LocalTransport
from harness.errors import AgentTimeoutError, ProtocolMismatchError, RemoteError, TransportError
from hilt_base import hashing
from tests.unit.agent_variants import other_protocol


@pytest.fixture()
def local(tmp_path: Path):
    t = LocalTransport("loc", cache=tmp_path / "cache")
    t.open()
    yield t
    t.close()


def test_hello_put_has(local: LocalTransport, tmp_path: Path) -> None:
    assert local.hello["protocol"] == wire.PROTOCOL_VERSION
    assert local.hello["cache"] == str(tmp_path / "cache")
    data = os.urandom(300_000)
    f = tmp_path / "blob"
    f.write_bytes(data)
    local.chunk_size = 64 << 10  # several chunks
    sha = local.upload(f)
    assert (tmp_path / "cache" / "objects" / sha).read_bytes() == data
    assert local.request("has", {"hashes": [sha]})["held"] == [sha]
    assert local.upload(f) == sha  # already there: nothing re-sent


class RecordingTransport(LocalTransport):
    """The real local transport, noting the (offset, size) of every chunk it puts on the wire."""

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.chunks: list[tuple[int, int]] = []

    def request(self, type_: str, args: dict[str, Any] | None = None, body: bytes = b"", **kw: Any) -> dict:
        if type_ == "put" and (args or {}).get("op") == "chunk":
            self.chunks.append((int(args["offset"]), len(body)))  # type: ignore[index]
        return super().request(type_, args, body, **kw)


def test_upload_resumes_a_partial_file(tmp_path: Path) -> None:
    data = os.urandom(100_000)
    f = tmp_path / "blob"
    f.write_bytes(data)
    sha = hashing.sha256_file(str(f))
    with RecordingTransport("loc", cache=tmp_path / "cache") as t:
        partial = tmp_path / "cache" / "partial" / sha
        partial.write_bytes(data[:40_000])  # left by an interrupted upload
        t.chunk_size = 30_000
        assert t.upload(f) == sha
        # only what the board lacked went over the line, from the agent's resume offset on
        assert t.chunks == [(40_000, 30_000), (70_000, 30_000)]
        assert (tmp_path / "cache" / "objects" / sha).read_bytes() == data
        assert t.upload(f) == sha and len(t.chunks) == 2  # complete on the board: nothing re-sent


def test_typed_agent_error_raises_remote_error(local: LocalTransport) -> None:
    with pytest.raises(RemoteError) as info:
        local.request("bench", {"runtime": "d" * 64})
    assert info.value.kind == "missing_file"
    assert local.request("has", {"hashes": []}) == {"held": []}  # still serving


def test_killed_agent_is_a_transport_error_not_a_hang(local: LocalTransport) -> None:
    assert local.pid is not None
    os.kill(local.pid, signal.SIGKILL)
    t0 = time.monotonic()
    # EOF if the request went out before the process died, a broken pipe if after: both the same error
    with pytest.raises(TransportError, match="connection closed|cannot write to the agent"):
        local.request("hello", timeout=30)
    assert time.monotonic() - t0 < 5


def test_silent_agent_times_out(tmp_path: Path) -> None:
    mute = tmp_path / "mute.py"
    mute.write_text("import sys, time\nsys.stdin.read()\n")
    t = LocalTransport("mute", cache=tmp_path, agent_path=mute)
    t.hello_timeout_s = 0.5
    t.grace_s = 0.5
    t0 = time.monotonic()
    with pytest.raises(AgentTimeoutError, match="no answer to 'hello'"):
        t.open()
    assert time.monotonic() - t0 < 5


def test_agent_that_cannot_start(tmp_path: Path) -> None:
    t = LocalTransport("nope", cache=tmp_path, python=str(tmp_path / "no-python"))
    with pytest.raises(TransportError, match="cannot start the agent"):
        t.open()


def test_older_agent_on_the_board_is_a_clear_mismatch(tmp_path: Path) -> None:
    old = other_protocol(tmp_path, wire.PROTOCOL_VERSION + 1)
    t = LocalTransport("old", cache=tmp_path / "c", agent_path=old)
    with pytest.raises(ProtocolMismatchError, match="protocol"):
        t.open()


def test_host_of_another_protocol_is_refused_by_the_agent(tmp_path: Path) -> None:
    t = LocalTransport("new", cache=tmp_path / "c", protocol=wire.PROTOCOL_VERSION + 1)
    with pytest.raises(ProtocolMismatchError, match=f"agent speaks protocol {wire.PROTOCOL_VERSION}"):
        t.open()


def test_agent_version_flag() -> None:
    import json
    import subprocess

    out = subprocess.run(
        [sys.executable, str(agent_pyz()), "--version"], capture_output=True, text=True, timeout=30
    )
    assert json.loads(out.stdout) == {
        "agent_version": wire.AGENT_VERSION,
        "protocol": wire.PROTOCOL_VERSION,
    }


AGENT_SOURCES = Path(__file__).resolve().parents[2] / "device_agents"


def _agent_files() -> list[Path]:
    """The agent's source: its package plus the leaf modules its zipapp packs (`pack.LEAF_MODULES`)."""
    files = [AGENT_SOURCES / "agent.py"] if (AGENT_SOURCES / "agent.py").is_file() else []
    files += sorted((AGENT_SOURCES / "agent").rglob("*.py"))
    files += [Path(p) for p in pack.LEAF_MODULES.values()]
    assert files, "no agent source found"
    return files


def _vermin(*paths: Path) -> subprocess.CompletedProcess[str]:
    """vermin (a real minimum-version checker; no 3.9 interpreter is installable here) at 3.9 or lower."""
    vermin = [sys.executable, "-c", "import sys, vermin; sys.exit(vermin.main())"]
    cmd = [*vermin, "--target=3.9-", "--eval-annotations", "--violations", "--no-tips", *map(str, paths)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def test_agent_needs_no_python_newer_than_3_9() -> None:
    """Boards run old Pythons: vermin finds nothing in the agent that needs more than 3.9."""
    out = _vermin(*_agent_files())
    assert out.returncode == 0, out.stdout + out.stderr


def test_vermin_catches_what_3_9_cannot_run(tmp_path: Path) -> None:
    """The check above can fail: a 3.10 construct (match, zip(strict=)) in a copy of the agent is found."""
    for i, snippet in enumerate(
        ["match sys.argv:\n    case _:\n        pass\n", "zip([], [], strict=True)\n"]
    ):
        bad = tmp_path / f"agent_{i}.py"
        bad.write_text(_agent_files()[0].read_text() + "\n" + snippet)
        out = _vermin(bad)
        assert out.returncode != 0 and "3.10" in out.stdout, out.stdout


def _runtime_unions(tree: ast.AST) -> list[int]:
    """Lines where `X | Y` is evaluated as a type at run time on 3.9 (annotations, isinstance)."""
    lines = []
    future = any(
        isinstance(n, ast.ImportFrom)
        and n.module == "__future__"
        and any(a.name == "annotations" for a in n.names)
        for n in ast.walk(tree)
    )
    for node in ast.walk(tree):
        exprs: list[ast.AST | None] = []
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in ("isinstance", "issubclass")
        ):
            exprs = node.args[1:2]
        elif not future and isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            a = node.args
            exprs = [node.returns, *(x.annotation for x in [*a.posonlyargs, *a.args, *a.kwonlyargs])]
        elif not future and isinstance(node, ast.AnnAssign):
            exprs = [node.annotation]
        for e in exprs:
            if e is not None and any(
                isinstance(b, ast.BinOp) and isinstance(b.op, ast.BitOr) for b in ast.walk(e)
            ):
                lines.append(e.lineno)
    return lines


def test_agent_has_no_runtime_union_types_and_only_stdlib_imports() -> None:
    for path in _agent_files():
        tree = ast.parse(path.read_text(), feature_version=(3, 9))
        assert _runtime_unions(tree) == [], f"{path}: `X | Y` types need Python 3.10"
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:  # relative: inside the agent package
                    continue
                names = [node.module or ""]
            else:
                continue
            for name in names:
                leaf = f"{name.replace('.', '/')}.py" in pack.LEAF_MODULES
                packed = name.startswith("device_agents.agent") or leaf
                ok = name.split(".")[0] in sys.stdlib_module_names or packed
                assert ok, f"{path} imports non-stdlib {name}"
    bad = ast.parse("def f(x: int | None) -> None:\n    isinstance(x, int | str)\n")
    assert _runtime_unions(bad) == [1, 2]  # the check itself can fail
    lazy = ast.parse("from __future__ import annotations\ndef f(x: int | None) -> None: ...\n")
    assert _runtime_unions(lazy) == []  # postponed annotations are never evaluated


def test_pyz_is_deterministic_and_named_by_its_hash(tmp_path: Path) -> None:
    """Same sources, same bytes: a board that has this agent is not sent it again."""
    import hashlib

    first = Path(pack.build_pyz(str(tmp_path / "a")))
    second = Path(pack.build_pyz(str(tmp_path / "b")))
    data = first.read_bytes()
    assert data == second.read_bytes() and data.startswith(b"#!/usr/bin/env python3\n")
    assert first.name == f"agent-{hashlib.sha256(data).hexdigest()[:16]}.pyz"
    assert agent_pyz().read_bytes() == data  # what the transports ship


def test_packed_agent_carries_the_hash_leaf_and_nothing_else_of_hilt(tmp_path: Path) -> None:
    """The board has only the .pyz: the hash the agent checks installs with is packed, and is the host's."""
    import zipfile

    pyz = Path(pack.build_pyz(str(tmp_path)))
    names = zipfile.ZipFile(pyz).namelist()
    assert {"hilt_base/__init__.py", "hilt_base/hashing.py"} <= set(names)
    assert {n.split("/")[0] for n in names} == {"__main__.py", "device_agents", "hilt_base"}
    assert "hilt_base/errors.py" not in names  # only what the agent imports
    files = {"b.bin": "2" * 64, "a.json": "1" * 64}
    probe = (
        "import sys; sys.path.insert(0, sys.argv[1]);"
        "import hilt_base.hashing as h, device_agents.agent.store as s;"
        "print(h.__file__); print(h.tree_hash({'b.bin': '2' * 64, 'a.json': '1' * 64}));"
        "print(s.tree_hash is h.tree_hash)"
    )
    # -I -S: no PYTHONPATH, no cwd, no site-packages or .pth files: only the archive and the stdlib
    out = subprocess.run(
        [sys.executable, "-I", "-S", "-c", probe, str(pyz)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 0, out.stderr
    where, digest, same = out.stdout.split()
    assert where.startswith(str(pyz) + "/") and digest == hashing.tree_hash(files) and same == "True"


def test_packed_agent_finds_every_power_reader_module(tmp_path: Path) -> None:
    """The reader registry is built by listing the power package, which must work inside the zip."""
    sysfs = tmp_path / "sys"
    for rel, value in {
        "class/hwmon/hwmon0/name": "ina226",
        "class/hwmon/hwmon0/power1_input": 2_000_000,
        "class/powercap/intel-rapl:0/energy_uj": 5,
        "class/powercap/intel-rapl:0/max_energy_range_uj": 1000,
    }.items():
        (sysfs / rel).parent.mkdir(parents=True, exist_ok=True)
        (sysfs / rel).write_text(f"{value}\n")
    with LocalTransport("pyz", cache=tmp_path / "c", sysfs_root=str(sysfs)) as t:
        sources = [p["source"] for p in t.hello["power_sources"]]
    assert sources == ["hwmon", "rapl"]
    assert set(agent_power.SOURCES) == {"jetson", "hwmon", "rapl", "meter", "model", "none"}


def test_many_threads_packing_at_once_get_one_good_file(tmp_path: Path) -> None:
    """Boards are opened in parallel (`hilt boards check`): each transport packs the agent."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(8) as pool:
        paths = set(pool.map(lambda _: pack.build_pyz(str(tmp_path)), range(32)))
    assert len(paths) == 1 and [p.name for p in tmp_path.iterdir()] == [Path(paths.pop()).name]
