"""Request dispatch and the serving loops: JSON lines on stdin/stdout, or frames on a tty."""

from __future__ import annotations

import json
import os
import platform
import select
import sys
import time
from typing import Any, Dict, List, Optional

from .bench import Bench
from .facts import Facts
from .lock import current_holder
from .power import discover_power
from .rawtty import set_raw
from .store import Store
from .wire import (
    AGENT_VERSION,
    PROTOCOL_VERSION,
    READY_MARKER,
    AgentFailure,
    FrameDecoder,
    Header,
    LineDecoder,
    encode_frame,
    encode_line,
    error_answer,
)


class Agent:
    """Serves requests one at a time; errors become typed answers, never a dead agent."""

    def __init__(self, cache: str, sysfs: str = "/sys", procfs: str = "/proc") -> None:
        self.cache = os.path.abspath(os.path.expanduser(cache))
        self.store = Store(self.cache)
        self.facts = Facts(sysfs, procfs)
        self.sysfs = sysfs
        self.running = True

    def handle(self, header: Header, body: bytes) -> Header:
        req_id = header.get("id")
        try:
            version = header.get("v")
            if version != PROTOCOL_VERSION:
                raise AgentFailure(
                    "protocol_mismatch",
                    "agent speaks protocol %d, request uses %r; update the agent or the host"
                    % (PROTOCOL_VERSION, version),
                )
            kind = header.get("type")
            method = getattr(self, "do_" + str(kind), None) if isinstance(kind, str) else None
            if method is None:
                raise AgentFailure("unknown_request", "unknown request type %r" % (kind,))
            timeout = header.get("timeout", 60)
            if not isinstance(timeout, (int, float)) or timeout <= 0:
                raise AgentFailure("bad_request", "timeout must be a positive number")
            deadline = time.monotonic() + float(timeout)
            args = header.get("args") or {}
            if not isinstance(args, dict):
                raise AgentFailure("bad_request", "args must be a JSON object")
            result = method(args, body, deadline)
            return {"v": PROTOCOL_VERSION, "id": req_id, "ok": True, "result": result}
        except AgentFailure as exc:
            return error_answer(req_id, exc.type, exc.message)
        except Exception as exc:  # noqa: BLE001 - the agent must answer, whatever broke
            return error_answer(req_id, "internal", "%s: %s" % (type(exc).__name__, exc))

    # -- requests
    def do_hello(self, args: Dict[str, Any], body: bytes, deadline: float) -> Dict[str, Any]:
        return {
            "protocol": PROTOCOL_VERSION,
            "agent_version": AGENT_VERSION,
            "arch": platform.machine(),
            "cpu_model": self.facts.cpu_model(),
            "cpu_count": os.cpu_count(),
            "memory_mb": self.facts.memory_mb(),
            "os": self.facts.os_name(),
            "kernel": platform.release(),
            "python": platform.python_version(),
            "governors": self.facts.governors(),
            "temps_c": self.facts.temps_c(),
            "power_sources": [r.describe() for r in discover_power(self.sysfs)],
            "runtimes": self.store.runtimes(),
            "cache": self.cache,
            "pid": os.getpid(),
            "bench_lock": current_holder(self.cache),  # None, or who is measuring on this board now
        }

    def do_has(self, args: Dict[str, Any], body: bytes, deadline: float) -> Dict[str, Any]:
        return self.store.has(args)

    def do_put(self, args: Dict[str, Any], body: bytes, deadline: float) -> Dict[str, Any]:
        return self.store.put(args, body)

    def do_install(self, args: Dict[str, Any], body: bytes, deadline: float) -> Dict[str, Any]:
        return self.store.install(args)

    def do_bench(self, args: Dict[str, Any], body: bytes, deadline: float) -> Dict[str, Any]:
        return Bench(self.cache, self.facts, self.sysfs, args, deadline).run()

    def do_shutdown(self, args: Dict[str, Any], body: bytes, deadline: float) -> Dict[str, Any]:
        self.running = False
        return {"bye": True}


def serve(agent: Agent, in_fd: int, out_fd: int, framed: bool) -> None:
    """Read requests from `in_fd`, answer on `out_fd`, until shutdown or end of input."""
    decoder = FrameDecoder() if framed else LineDecoder()
    encode = encode_frame if framed else encode_line
    while agent.running:
        try:
            ready, _, _ = select.select([in_fd], [], [], 0.2)
        except InterruptedError:
            continue
        data = b""
        if ready:
            try:
                data = os.read(in_fd, 1 << 16)
            except (BlockingIOError, InterruptedError):
                continue
            if not data:
                return
        for header, body in decoder.feed(data):
            if header is None:
                answer = error_answer(None, "bad_request", body)
            else:
                answer = agent.handle(header, body)
            write_all(out_fd, encode(answer))
            if not agent.running:
                return


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            n = os.write(fd, view)
        except BlockingIOError:
            select.select([], [fd], [], 1.0)
            continue
        view = view[n:]


def main(argv: Optional[List[str]] = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description="hilt board agent (protocol %d)" % PROTOCOL_VERSION)
    parser.add_argument("--cache", default=os.path.join("~", ".cache", "hilt-agent"))
    parser.add_argument("--sysfs-root", default="/sys")
    parser.add_argument("--procfs-root", default="/proc")
    parser.add_argument("--serial", metavar="DEVICE", help="serve binary frames on this tty")
    parser.add_argument("--baud", type=int, default=115200)
    parser.add_argument("--framed", action="store_true", help="binary frames on stdin/stdout")
    parser.add_argument("--version", action="store_true")
    opts = parser.parse_args(argv)
    if opts.version:
        sys.stdout.write(json.dumps({"agent_version": AGENT_VERSION, "protocol": PROTOCOL_VERSION}) + "\n")
        return 0
    agent = Agent(opts.cache, opts.sysfs_root, opts.procfs_root)
    if opts.serial:
        fd = os.open(opts.serial, os.O_RDWR | os.O_NOCTTY)
        set_raw(fd, opts.baud)
        # a host that started us from a console login waits for this before sending frames
        # (framed readers skip it as noise)
        write_all(fd, READY_MARKER)
        serve(agent, fd, fd, framed=True)
        return 0
    serve(agent, sys.stdin.fileno(), sys.stdout.fileno(), framed=opts.framed)
    return 0
