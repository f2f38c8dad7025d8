"""The agent's request handling, in process: storage, hash checks, protocol and request errors."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from device_agents.agent import serve, wire
from hilt_base import hashing


def _call(
    a: serve.Agent, type_: str, args: dict[str, Any] | None = None, body: bytes = b"", **hdr: Any
) -> dict:
    header = {"v": wire.PROTOCOL_VERSION, "id": 7, "type": type_, "timeout": 5, "args": args or {}}
    header.update(hdr)
    return a.handle(header, body)


@pytest.fixture()
def ag(tmp_path: Path) -> serve.Agent:
    return serve.Agent(str(tmp_path / "cache"), sysfs=str(tmp_path / "sys"))


def _put(a: serve.Agent, data: bytes, chunk: int = 4) -> str:
    sha = hashlib.sha256(data).hexdigest()
    state = _call(a, "put", {"sha256": sha, "op": "begin"})["result"]
    off = state["offset"]
    while off < len(data):
        off = _call(a, "put", {"sha256": sha, "op": "chunk", "offset": off}, data[off : off + chunk])[
            "result"
        ]["offset"]
    assert _call(a, "put", {"sha256": sha, "op": "commit"})["ok"]
    return sha


def test_hello_reports_protocol_and_board_facts(ag: serve.Agent) -> None:
    res = _call(ag, "hello")
    assert res["ok"] and res["id"] == 7
    r = res["result"]
    assert r["protocol"] == wire.PROTOCOL_VERSION and r["agent_version"] == wire.AGENT_VERSION
    assert r["cpu_count"] >= 1 and r["memory_mb"]["total"] > 0 and r["arch"]
    assert r["power_sources"] == [] and r["runtimes"] == []


def test_put_is_content_addressed_and_resumable(ag: serve.Agent) -> None:
    data = b"hello board, here are some bytes"
    sha = hashlib.sha256(data).hexdigest()
    _call(ag, "put", {"sha256": sha, "op": "chunk", "offset": 0}, data[:10])
    # a duplicate is not written, a chunk past a gap is held (not written); the answer says where to resume
    assert _call(ag, "put", {"sha256": sha, "op": "chunk", "offset": 0}, data[:10])["result"]["offset"] == 10
    ahead = _call(ag, "put", {"sha256": sha, "op": "chunk", "offset": 20}, data[20:])["result"]
    assert ahead == {"offset": 10, "complete": False, "ahead": True}
    begin = _call(ag, "put", {"sha256": sha, "op": "begin"})["result"]
    assert begin["offset"] == 10 and begin["complete"] is False and isinstance(begin["handle"], int)
    assert _put(ag, data) == sha
    assert _call(ag, "has", {"hashes": [sha, "f" * 64, "junk"]})["result"]["held"] == [sha]
    assert _call(ag, "put", {"sha256": sha, "op": "begin"})["result"]["complete"] is True


def test_put_refuses_data_whose_hash_differs(ag: serve.Agent) -> None:
    claimed = hashlib.sha256(b"what I promised").hexdigest()
    _call(ag, "put", {"sha256": claimed, "op": "chunk", "offset": 0}, b"what I sent")
    res = _call(ag, "put", {"sha256": claimed, "op": "commit"})
    assert not res["ok"] and res["error"]["type"] == "hash_mismatch"
    assert _call(ag, "has", {"hashes": [claimed]})["result"]["held"] == []
    assert _call(ag, "put", {"sha256": claimed, "op": "begin"})["result"]["offset"] == 0  # partial discarded


@pytest.mark.parametrize(
    ("args", "kind"),
    [
        ({"sha256": "ABC"}, "bad_request"),
        ({"sha256": "a" * 64, "op": "explode"}, "bad_request"),
        ({"sha256": "a" * 64, "op": "commit"}, "missing_file"),
    ],
)
def test_put_bad_requests(ag: serve.Agent, args: dict, kind: str) -> None:
    res = _call(ag, "put", args)
    assert not res["ok"] and res["error"]["type"] == kind


def test_install_bundle_checks_hash_and_metadata(ag: serve.Agent) -> None:
    model, inp = _put(ag, b"model bytes"), _put(ag, b"input bytes")
    files = {"model.so": model, "input.bin": inp}
    meta = json.dumps({"version": 1, "files": files}).encode()
    files_all = {**files, "metadata.json": _put(ag, meta)}
    tree = hashing.tree_hash(files)
    res = _call(ag, "install", {"kind": "bundle", "hash": tree, "files": files_all})
    assert res["ok"], res
    path = Path(res["result"]["path"])
    assert (path / "model.so").read_bytes() == b"model bytes"
    assert _call(ag, "has", {"hashes": [tree]})["result"]["held"] == [tree]
    wrong = _call(ag, "install", {"kind": "bundle", "hash": "0" * 64, "files": files_all})
    assert wrong["error"]["type"] == "hash_mismatch"


def test_install_refuses_metadata_that_disagrees(ag: serve.Agent) -> None:
    model = _put(ag, b"model bytes 2")
    meta = _put(ag, json.dumps({"files": {"model.so": "1" * 64}}).encode())
    files = {"model.so": model, "metadata.json": meta}
    res = _call(
        ag, "install", {"kind": "bundle", "hash": hashing.tree_hash({"model.so": model}), "files": files}
    )
    assert res["error"]["type"] == "hash_mismatch" and "metadata.json" in res["error"]["message"]


@pytest.mark.parametrize(
    ("args", "kind"),
    [
        ({"kind": "rootfs", "hash": "a" * 64, "files": {"x": "a" * 64}}, "bad_request"),
        ({"kind": "runtime", "hash": "a" * 64, "files": {"../evil": "a" * 64}}, "bad_request"),
        ({"kind": "runtime", "hash": "a" * 64, "files": {}}, "bad_request"),
    ],
)
def test_install_bad_requests(ag: serve.Agent, args: dict, kind: str) -> None:
    assert _call(ag, "install", args)["error"]["type"] == kind


def test_install_names_files_that_were_never_uploaded(ag: serve.Agent) -> None:
    files = {"hilt-runner": "b" * 64}
    res = _call(ag, "install", {"kind": "runtime", "hash": hashing.tree_hash(files), "files": files})
    assert res["error"]["type"] == "missing_file" and "hilt-runner" in res["error"]["message"]


def test_runtime_install_makes_runner_executable_and_is_listed_in_hello(ag: serve.Agent) -> None:
    files = {"hilt-runner": _put(ag, b"#!/bin/sh\n"), "libtvm_runtime.so": _put(ag, b"lib")}
    tree = hashing.tree_hash(files)
    res = _call(
        ag, "install", {"kind": "runtime", "hash": tree, "files": files, "versions": {"arch": "x86_64"}}
    )
    assert res["ok"]
    assert Path(res["result"]["path"], "hilt-runner").stat().st_mode & 0o111
    assert _call(ag, "hello")["result"]["runtimes"] == [{"hash": tree, "arch": "x86_64"}]


def test_protocol_mismatch_is_a_typed_error(ag: serve.Agent) -> None:
    res = _call(ag, "hello", v=wire.PROTOCOL_VERSION + 1)
    assert res["error"]["type"] == "protocol_mismatch"
    assert f"agent speaks protocol {wire.PROTOCOL_VERSION}" in res["error"]["message"]


@pytest.mark.parametrize(
    ("type_", "extra", "kind"),
    [
        ("fly", {}, "unknown_request"),
        ("hello", {"timeout": -1}, "bad_request"),
        ("has", {"args": {"hashes": "x"}}, "bad_request"),
        ("bench", {"args": {"runtime": "c" * 64}}, "missing_file"),
        ("bench", {"args": {"runtime": "nope"}}, "bad_request"),
        ("bench", {"args": {"runtime": "c" * 64, "min_iters": 0}}, "bad_request"),
        ("bench", {"args": {"runtime": "c" * 64, "cores": ["a"]}}, "bad_request"),
    ],
)
def test_bad_requests_get_typed_errors(ag: serve.Agent, type_: str, extra: dict, kind: str) -> None:
    header = {"v": wire.PROTOCOL_VERSION, "id": 1, "type": type_, "timeout": 5}
    header.update(extra)
    res = ag.handle(header, b"")
    assert res["ok"] is False and res["error"]["type"] == kind, res


def test_shutdown_stops_serving(ag: serve.Agent) -> None:
    assert _call(ag, "shutdown")["ok"]
    assert ag.running is False
