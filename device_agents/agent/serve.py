"""Request dispatch and the serving loops: JSON lines on stdin/stdout, or frames on a tty."""

from __future__ import annotations

import json
import os
import platform
import select
import sys
import time
from collections import OrderedDict
from typing import Any, Dict, List, Optional, Tuple

from .bench import Bench
from .facts import Facts
from .kernels import KernelTiming
from .lock import current_holder
from .power import discover_power
from .rawtty import set_raw
from .simulate import SimulatedBench, refuse_if_down
from .store import Store
from .wire import (
    AGENT_VERSION,
    CODECS,
    FRAME_KINDS,
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

# Requests that must not run twice: a retry with the same id is answered from a small cache of recent
# replies (the result re-sent if the reply was lost), never run again.
NOT_IDEMPOTENT = frozenset({"bench", "time_kernels", "shutdown"})
REPLY_CACHE = 16  # recent replies kept by id
REPLAY_GAP_S = 1.0  # retries queued behind a long run: re-send the cached reply once, then at most this often
REQUEST_FRAME_MAX = (256 + 16) << 10
NAK_GAP_S = 0.2  # at most this often, a frame that failed CRC is reported to the host


class Agent:
    """Serves requests one at a time; errors become typed answers, never a dead agent."""

    def __init__(
        self, cache: str, sysfs: str = "/sys", procfs: str = "/proc", simulate: bool = False
    ) -> None:
        self.cache = os.path.abspath(os.path.expanduser(cache))
        self.simulate = simulate  # the runner replaced by a latency model (simulate.py)
        self.store = Store(self.cache)
        self.facts = Facts(sysfs, procfs)
        self.sysfs = sysfs
        self.running = True
        self.line: Optional[FrameDecoder] = None  # the framed reader, whose counters hello reports
        # (type, id) -> [answer, when last re-sent or None]
        self.replies: OrderedDict[Tuple[Any, str], List[Any]] = OrderedDict()
        self.replays = 0

    def respond(self, header: Header, body: bytes) -> Optional[Header]:
        """The answer to send, or None when a retried request's cached answer went out just now."""
        kind = header.get("type")
        req_id = header.get("id")
        if kind not in NOT_IDEMPOTENT or req_id is None:
            return self.handle(header, body)
        key = (kind, json.dumps(req_id, sort_keys=True))
        cached = self.replies.get(key)
        if cached is not None:
            now = time.monotonic()
            if cached[1] is not None and now - cached[1] < REPLAY_GAP_S:
                return None
            cached[1] = now
            self.replays += 1
            answer = dict(cached[0])
            answer["replayed"] = True
            return answer
        answer = self.handle(header, body)
        self.replies[key] = [answer, None]
        while len(self.replies) > REPLY_CACHE:
            self.replies.popitem(last=False)
        return answer

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
            # what the agent's frame reader saw since it started (None over pipes): line quality
            "line": dict(self.line.stats(), replays=self.replays) if self.line is not None else None,
            "dedup": sorted(NOT_IDEMPOTENT),  # these are answered from a cache when retried with one id
            "frames": list(FRAME_KINDS),  # frame kinds this agent reads (2: checked, see wire)
            "codecs": list(CODECS),  # put chunks may come compressed with these (see wire)
            "simulated": self.simulate,
        }

    def do_has(self, args: Dict[str, Any], body: bytes, deadline: float) -> Dict[str, Any]:
        return self.store.has(args)

    def do_put(self, args: Dict[str, Any], body: bytes, deadline: float) -> Dict[str, Any]:
        return self.store.put(args, body)

    def do_install(self, args: Dict[str, Any], body: bytes, deadline: float) -> Dict[str, Any]:
        return self.store.install(args)

    def do_bench(self, args: Dict[str, Any], body: bytes, deadline: float) -> Dict[str, Any]:
        bench = SimulatedBench if self.simulate else Bench
        return bench(self.cache, self.facts, self.sysfs, args, deadline).run()

    def do_time_kernels(self, args: Dict[str, Any], body: bytes, deadline: float) -> Dict[str, Any]:
        return KernelTiming(self.store, args, deadline).run()

    def do_shutdown(self, args: Dict[str, Any], body: bytes, deadline: float) -> Dict[str, Any]:
        self.running = False
        return {"bye": True}


def serve(agent: Agent, in_fd: int, out_fd: int, framed: bool) -> None:
    """Read requests from `in_fd`, answer on `out_fd`, until shutdown or end of input."""
    # a host sends no frame over 256 KiB of body: a length damaged on the line to more than that is
    # refused at once, instead of swallowing the frames behind it until that many bytes arrived
    decoder = FrameDecoder(max_frame=REQUEST_FRAME_MAX) if framed else LineDecoder()
    if isinstance(decoder, FrameDecoder):
        agent.line = decoder
    naked = 0  # CRC failures and stale drops already told to the host
    nak_at = 0.0
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
        messages = decoder.feed(data)
        if isinstance(decoder, FrameDecoder):
            bad = decoder.crc_errors + decoder.stale_drops
            if bad > naked and time.monotonic() - nak_at >= NAK_GAP_S:
                # a damaged frame: say so (id null), so the host can tell a noisy line from a dead agent
                naked, nak_at = bad, time.monotonic()
                nak = {"v": PROTOCOL_VERSION, "id": None, "nak": True, "line": decoder.stats()}
                write_all(out_fd, encode_frame(nak, checked=decoder.checked_seen))
        for header, body in messages:
            if header is None:
                answer: Optional[Header] = error_answer(None, "bad_request", body)
            else:
                answer = agent.respond(header, body)
            if answer is None:
                continue
            if isinstance(decoder, FrameDecoder):
                write_all(out_fd, encode_frame(answer, checked=decoder.checked_seen))
            else:
                write_all(out_fd, encode_line(answer))
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
    parser.add_argument("--simulate", action="store_true", help="a simulated board: no runner (simulate.py)")
    opts = parser.parse_args(argv)
    if opts.version:
        sys.stdout.write(json.dumps({"agent_version": AGENT_VERSION, "protocol": PROTOCOL_VERSION}) + "\n")
        return 0
    agent = Agent(opts.cache, opts.sysfs_root, opts.procfs_root, simulate=opts.simulate)
    if opts.simulate:
        refuse_if_down(agent.cache)
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
