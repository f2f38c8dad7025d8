"""A simulated board (`--simulate`): the real agent, store, lock and wire, with the runner replaced by
a latency model, so a farm of 100 boards fits on one host and the host code runs unchanged.

Everything but the runner is the board's own: uploads land in the store, `install` checks hashes,
`bench` refuses an uninstalled bundle and takes the board's bench lock. Inside the lock, instead of
executing `hilt-runner`, the agent sleeps for the simulated measurement (`bench_s`) and answers a
runner-shaped result whose latency grows with the bundle's code and weight bytes (a stand-in for its
FLOPs), with seeded multiplicative noise.

Control files in the agent's store (written by the host side, `device_agents.simfarm`):
- `sim.json`: the latency model `{"base_ms", "ms_per_mb", "noise", "bench_s", "reboot_s"}`;
- `sim.fault`: one word, consumed by the next bench once it holds the lock: `die` (the board is gone
  for good, the agent killed mid-bench), `reboot` (killed mid-bench, back after `reboot_s`), `hang`
  (never answers: the host's deadline must catch it);
- `sim.down`: written by a death or reboot; an agent started while it holds is refused at once.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sys
import time
from typing import Any, Dict

from .bench import Bench, RunResult
from .wire import AgentFailure

CONFIG_NAME = "sim.json"
FAULT_NAME = "sim.fault"
DOWN_NAME = "sim.down"
FAULTS = ("die", "reboot", "hang")
DEFAULTS = {"base_ms": 0.5, "ms_per_mb": 2.0, "noise": 0.03, "bench_s": 1.0, "reboot_s": 20.0}
SAMPLES = 20


def config(root: str) -> Dict[str, float]:
    try:
        with open(os.path.join(root, CONFIG_NAME)) as f:
            given = json.load(f)
    except (OSError, ValueError):
        given = {}
    return {k: float(given.get(k, v)) for k, v in DEFAULTS.items()}


def down_reason(root: str) -> str:
    """Why the board cannot start an agent now ("" when it is up)."""
    try:
        with open(os.path.join(root, DOWN_NAME)) as f:
            state = json.load(f)
    except (OSError, ValueError):
        return ""
    until = state.get("until")
    if until is None:
        return "simulated board is dead since %s" % state.get("since")
    if time.time() < float(until):
        return "simulated board is rebooting (back in %.1f s)" % (float(until) - time.time())
    return ""


def _take_fault(root: str) -> str:
    path = os.path.join(root, FAULT_NAME)
    try:
        with open(path) as f:
            fault = f.read().strip()
        os.unlink(path)
    except OSError:
        return ""
    return fault if fault in FAULTS else ""


def _go_down(root: str, for_s: "float | None") -> None:
    now = time.time()
    state = {"since": now, "until": None if for_s is None else now + for_s}
    tmp = os.path.join(root, DOWN_NAME + ".%d" % os.getpid())
    with open(tmp, "w") as f:
        json.dump(state, f)
    os.replace(tmp, os.path.join(root, DOWN_NAME))
    os.kill(os.getpid(), signal.SIGKILL)


def bundle_megabytes(bundle_dir: str) -> float:
    """Code and weight bytes of an installed bundle: what the latency model scales with."""
    total = 0
    for name in ("model.so", "weights.bin"):
        try:
            total += os.path.getsize(os.path.join(bundle_dir, name))
        except OSError:
            pass
    return total / 1e6


class SimulatedBench(Bench):
    """A bench whose runner is the latency model; lock, store checks and the answer are the real ones."""

    def reader(self) -> None:
        return None

    def _run_runner(self, cmd: Any, env: Any) -> RunResult:
        cfg = config(self.root)
        fault = _take_fault(self.root)
        half = cfg["bench_s"] / 2
        if fault in ("die", "reboot"):
            time.sleep(half)  # mid-bench, holding the lock: the kernel frees it when we die
            _go_down(self.root, None if fault == "die" else cfg["reboot_s"])
        if fault == "hang":
            while True:
                time.sleep(3600)
        if self.args.get("generate") is not None:
            raise AgentFailure("bad_request", "a simulated board times classifier bundles only")
        bundle = str(self.args.get("bundle") or "")
        mb = 0.0 if self.args.get("selftest") else bundle_megabytes(os.path.join(self.root, "bundle", bundle))
        mean_ms = cfg["base_ms"] + cfg["ms_per_mb"] * mb
        rng = random.Random("%s:%d" % (bundle, os.getpid()))
        noise = cfg["noise"]
        samples = [int(mean_ms * 1e6 * max(0.1, rng.gauss(1.0, noise))) for _ in range(SAMPLES)]
        wait = min(cfg["bench_s"], max(self.deadline - time.monotonic() - 0.5, 0.0))
        time.sleep(wait)
        out = {
            "ok": True,
            "mode": "infer",
            "samples_ns": samples,
            "warmup": self.warmup,
            "threads": self.threads,
            "peak_rss_kb": int(8192 + mb * 1024),
            "output_checksum": 0.0,
            "output_shape": [],
            "runner_version": "simulated",
            "tvm_version": "simulated",
        }
        return 0, (json.dumps(out) + "\n").encode(), b""


def refuse_if_down(root: str) -> None:
    """At agent start: a dead or rebooting simulated board never answers hello."""
    reason = down_reason(root)
    if reason:
        sys.stderr.write(reason + "\n")
        sys.exit(75)
