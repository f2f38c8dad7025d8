"""`time_kernels`: time MetaSchedule tuning candidates on this board with the board runtime.

The host uploads each candidate's shared library (`put`, like any file) and names it by sha256 with
its argument shapes; each is timed by `hilt-runner --time-kernel` in its own process (a candidate
that crashes loses only its own result), inside the board's bench lock. Candidates are used once:
their uploaded objects are deleted when timed, so a tuning session does not fill the board.
"""

from __future__ import annotations

import json
import os
import shutil
from typing import Any, Dict, List

from .bench import int_arg, number_arg, run_process, runner_command
from .lock import bench_lock
from .store import Store
from .wire import AgentFailure, is_sha

MAX_KERNELS = 512  # candidates per request


def _arg_spec(info: Any) -> str:
    """MetaSchedule's ArgInfo JSON (["TENSOR", dtype, shape]) -> the runner's "dtype:d0xd1"."""
    if (
        not isinstance(info, list)
        or len(info) != 3
        or info[0] != "TENSOR"
        or not isinstance(info[1], str)
        or not isinstance(info[2], list)
        or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in info[2])
    ):
        raise AgentFailure(
            "bad_request", 'kernel args must be ["TENSOR", dtype, shape] entries, got %r' % (info,)
        )
    if not info[1].replace("_", "").isalnum():
        raise AgentFailure("bad_request", "bad dtype %r" % (info[1],))
    return "%s:%s" % (info[1], "x".join(str(d) for d in info[2]))


class KernelTiming:
    """One time_kernels request against a store: `run()` answers one result per kernel, in order."""

    def __init__(self, store: Store, args: Dict[str, Any], deadline: float) -> None:
        self.store = store
        self.args = args
        self.deadline = deadline
        self.threads = int_arg(args, "threads", 1, 1)
        self.number = int_arg(args, "number", 1, 1)
        self.repeat = int_arg(args, "repeat", 3, 1)
        self.min_repeat_ms = int_arg(args, "min_repeat_ms", 20, 0)
        self.wait_s = number_arg(args, "wait_s", 0.0)
        self.holder = str(args.get("holder") or "an unnamed host")[:200]
        kernels = args.get("kernels")
        if not isinstance(kernels, list) or not kernels or len(kernels) > MAX_KERNELS:
            raise AgentFailure(
                "bad_request", "time_kernels needs 'kernels', a list of 1..%d entries" % MAX_KERNELS
            )
        self.kernels = []
        for entry in kernels:
            if (
                not isinstance(entry, dict)
                or not is_sha(entry.get("sha"))
                or not isinstance(entry.get("args"), list)
            ):
                raise AgentFailure("bad_request", "each kernel needs 'sha' (an uploaded object) and 'args'")
            self.kernels.append((entry["sha"], [_arg_spec(a) for a in entry["args"]]))
        self.runner, self.env = runner_command(store.root, args.get("runtime"), self.threads)

    def run(self) -> Dict[str, Any]:
        missing = [sha for sha, _ in self.kernels if not os.path.exists(self.store.path("objects", sha))]
        if missing:
            raise AgentFailure("missing_file", "upload these kernels first: %s" % ", ".join(missing))
        try:
            with bench_lock(self.store.root, self.holder, self.wait_s, self.deadline):
                results = [self._one(sha, specs) for sha, specs in self.kernels]
        finally:
            for sha in {sha for sha, _ in self.kernels}:  # used once: the store does not grow
                _remove(self.store.path("objects", sha))
        return {"results": results}

    def _one(self, sha: str, specs: List[str]) -> Dict[str, Any]:
        """Time one candidate; its failure is its result (an error string), not the request's."""
        obj = self.store.path("objects", sha)
        lib = self.store.path("tmp", "kernel-%s.so" % sha)  # the runtime picks the loader by extension
        shutil.copyfile(obj, lib)
        cmd = [self.runner, "--time-kernel", lib, "--warmup", "1", "--threads", str(self.threads)]
        for spec in specs:
            cmd += ["--arg", spec]
        cmd += [
            "--number",
            str(self.number),
            "--repeat",
            str(self.repeat),
            "--min-repeat-ms",
            str(self.min_repeat_ms),
        ]
        try:
            code, out, err = run_process(cmd, self.env, [], self.deadline)
        except AgentFailure as exc:
            if exc.type == "timeout":
                raise
            return {"sha": sha, "error": "%s: %s" % (exc.type, exc.message)}
        finally:
            _remove(lib)
        return {"sha": sha, **_parse(code, out, err)}


def _remove(path: str) -> None:
    try:
        os.remove(path)
    except OSError:
        pass


def _parse(code: Any, out: bytes, err: bytes) -> Dict[str, Any]:
    lines = [ln for ln in out.decode("utf-8", "replace").splitlines() if ln.strip()]
    try:
        parsed = json.loads(lines[-1]) if lines else None
    except ValueError:
        parsed = None
    if isinstance(parsed, dict) and parsed.get("ok") and isinstance(parsed.get("run_secs"), list):
        return {"run_secs": parsed["run_secs"], "number": parsed.get("number")}
    if isinstance(parsed, dict) and parsed.get("ok") is False:
        e = parsed.get("error") or {}
        return {"error": "%s: %s" % (e.get("type", "error"), e.get("message", "runner failed"))}
    tail = err.decode("utf-8", "replace").strip()[-300:]
    how = "signal %d" % -code if isinstance(code, int) and code < 0 else "exit %s" % code
    return {"error": "runner_crashed: %s without a result%s" % (how, (": " + tail) if tail else "")}
