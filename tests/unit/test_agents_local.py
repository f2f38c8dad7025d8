"""The local transport: a real agent subprocess over pipes; dead, silent and mismatched agents."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import pytest

from device_agents import agent
from device_agents.transports.base import AGENT_PATH
from device_agents.transports.local import LocalTransport
from harness.errors import AgentTimeoutError, ProtocolMismatchError, RemoteError, TransportError


@pytest.fixture()
def local(tmp_path: Path):
    t = LocalTransport("loc", cache=tmp_path / "cache")
    t.open()
    yield t
    t.close()


def test_hello_put_has(local: LocalTransport, tmp_path: Path) -> None:
    assert local.hello["protocol"] == agent.PROTOCOL_VERSION
    assert local.hello["cache"] == str(tmp_path / "cache")
    data = os.urandom(300_000)
    f = tmp_path / "blob"
    f.write_bytes(data)
    local.chunk_size = 64 << 10  # several chunks
    sha = local.upload(f)
    assert (tmp_path / "cache" / "objects" / sha).read_bytes() == data
    assert local.request("has", {"hashes": [sha]})["held"] == [sha]
    assert local.upload(f) == sha  # already there: nothing re-sent


def test_upload_resumes_a_partial_file(local: LocalTransport, tmp_path: Path) -> None:
    data = os.urandom(100_000)
    f = tmp_path / "blob"
    f.write_bytes(data)
    sha = agent.sha256_file(str(f))
    partial = tmp_path / "cache" / "partial" / sha
    partial.write_bytes(data[:40_000])  # left by an interrupted upload
    local.chunk_size = 30_000
    assert local.upload(f) == sha
    assert (tmp_path / "cache" / "objects" / sha).read_bytes() == data


def test_typed_agent_error_raises_remote_error(local: LocalTransport) -> None:
    with pytest.raises(RemoteError) as info:
        local.request("bench", {"runtime": "d" * 64})
    assert info.value.kind == "missing_file"
    assert local.request("has", {"hashes": []}) == {"held": []}  # still serving


def test_killed_agent_is_a_transport_error_not_a_hang(local: LocalTransport) -> None:
    assert local.pid is not None
    os.kill(local.pid, signal.SIGKILL)
    t0 = time.monotonic()
    with pytest.raises(TransportError, match="connection closed"):
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
    old = tmp_path / "agent_v0.py"
    text = AGENT_PATH.read_text().replace(
        f"PROTOCOL_VERSION = {agent.PROTOCOL_VERSION}\n",
        f"PROTOCOL_VERSION = {agent.PROTOCOL_VERSION + 1}\n",
        1,
    )
    old.write_text(text)
    t = LocalTransport("old", cache=tmp_path / "c", agent_path=old)
    with pytest.raises(ProtocolMismatchError, match="protocol"):
        t.open()


def test_host_of_another_protocol_is_refused_by_the_agent(tmp_path: Path) -> None:
    t = LocalTransport("new", cache=tmp_path / "c", protocol=agent.PROTOCOL_VERSION + 1)
    with pytest.raises(ProtocolMismatchError, match=f"agent speaks protocol {agent.PROTOCOL_VERSION}"):
        t.open()


def test_agent_version_flag() -> None:
    import json
    import subprocess

    out = subprocess.run(
        [sys.executable, str(AGENT_PATH), "--version"], capture_output=True, text=True, timeout=30
    )
    assert json.loads(out.stdout) == {
        "agent_version": agent.AGENT_VERSION,
        "protocol": agent.PROTOCOL_VERSION,
    }


def test_agent_runs_on_python_3_9_syntax() -> None:
    """The agent goes to boards with old Pythons: no match statements, no runtime `X | Y` unions."""
    import ast

    tree = ast.parse(AGENT_PATH.read_text(), feature_version=(3, 9))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [node.module or ""]
        else:
            continue
        for name in names:
            assert name.split(".")[0] in sys.stdlib_module_names, f"agent.py imports non-stdlib {name}"
