"""The on-board bench lock: one measurement at a time per board, whoever asks.

Every agent serving a store (several SSH sessions, a serial agent, hosts without a shared board
pool) takes an exclusive `flock` on `<store>/bench.lock` for the length of a bench, so two
runners never share the cores. The kernel drops the lock when its holder dies, so a crashed
agent never leaves the board locked. Who holds it is written beside it (`bench.holder`) so a
refused request can say who to wait for.

Each take and drop is appended to `bench.lock.log` (one JSON line: event, time, pid, holder, and on a
take whether the lock was already held when asked): the board's own account of who measured when,
which a farm audit reads to find two holders of one board at once (`device_agents.lock_audit`).
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import time
from contextlib import contextmanager
from typing import Any, Dict, Iterator, Optional

from .wire import AgentFailure

LOCK_NAME = "bench.lock"
HOLDER_NAME = "bench.holder"
LOG_NAME = "bench.lock.log"
LOG_MAX_BYTES = 1 << 20  # then it starts again, the previous one kept as .1
POLL_S = 0.05


def iso_utc(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def read_holder(root: str) -> Optional[Dict[str, Any]]:
    try:
        with open(os.path.join(root, HOLDER_NAME)) as f:
            info = json.load(f)
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) else None


def busy_message(root: str, waited: float) -> str:
    info = read_holder(root)
    if info is None:
        who = "board busy: held by another agent (it has not said who yet)"
    else:
        who = "board busy: held by %s (agent pid %s) since %s" % (
            info.get("holder") or "an unnamed host",
            info.get("pid"),
            info.get("since"),
        )
    return who + ("; gave up after waiting %.1f s" % waited if waited > 0 else "")


def log_event(root: str, event: Dict[str, Any]) -> None:
    """Append one line to the board's lock log (one write: lines from several agents never mix)."""
    path = os.path.join(root, LOG_NAME)
    try:
        if os.path.getsize(path) > LOG_MAX_BYTES:
            os.replace(path, path + ".1")
    except OSError:
        pass
    line = (json.dumps(event, sort_keys=True) + "\n").encode()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    except OSError:
        return
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


def _try_lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return False
        raise
    return True


def current_holder(root: str) -> Optional[Dict[str, Any]]:
    """Who holds the board's bench lock now (None when free), without waiting or keeping it."""
    try:
        fd = os.open(os.path.join(root, LOCK_NAME), os.O_RDWR | os.O_CREAT, 0o644)
    except OSError:
        return None
    try:
        if _try_lock(fd):
            return None
        return read_holder(root) or {"holder": None, "pid": None, "since": None}
    finally:
        os.close(fd)


@contextmanager
def bench_lock(root: str, holder: str, wait_s: float, deadline: float) -> Iterator[Dict[str, Any]]:
    """Hold the board's bench lock; wait up to `wait_s` (and the request deadline), else `busy`."""
    fd = os.open(os.path.join(root, LOCK_NAME), os.O_RDWR | os.O_CREAT, 0o644)
    holder_path = os.path.join(root, HOLDER_NAME)
    try:
        start = time.monotonic()
        give_up = min(start + max(wait_s, 0.0), deadline - 1.0)
        contended = not _try_lock(fd)
        if contended:
            held_by = (read_holder(root) or {}).get("holder")
            log_event(
                root,
                {"ev": "busy", "t": time.time(), "pid": os.getpid(), "holder": holder, "held_by": held_by},
            )
        while contended and not _try_lock(fd):
            now = time.monotonic()
            if now >= give_up:
                raise AgentFailure("busy", busy_message(root, now - start if wait_s > 0 else 0.0))
            time.sleep(min(POLL_S, max(give_up - now, 0.001)))
        info = {"holder": holder, "pid": os.getpid(), "since": iso_utc(time.time())}
        tmp = "%s.%d" % (holder_path, os.getpid())
        with open(tmp, "w") as f:
            json.dump(info, f)
        os.replace(tmp, holder_path)
        base = {"pid": os.getpid(), "holder": holder}
        log_event(root, dict(base, ev="take", t=time.time(), contended=contended))
        try:
            yield info
        finally:
            log_event(root, dict(base, ev="drop", t=time.time()))
            try:
                os.unlink(holder_path)
            except OSError:
                pass
    finally:
        os.close(fd)  # releases the flock
