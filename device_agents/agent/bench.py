"""One benchmark: idle power, the `hilt-runner` under a deadline with power sampled alongside, and
board facts before and after, all inside the board's bench lock (`lock.py`)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from typing import Any, Dict, List, Optional, Tuple

from .facts import Facts, throttle_check
from .lock import bench_lock
from .power import PowerReader, discover_power
from .power import meter as meter_power
from .power.base import PowerSampler, Sample, mean_power, measure_window
from .wire import RUNNER_NAME, AgentFailure, is_sha

RunResult = Tuple[Optional[int], bytes, bytes]


def int_arg(args: Dict[str, Any], name: str, default: int, low: int = 0) -> int:
    value = args.get(name, default)
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise AgentFailure("bad_request", "%s must be an integer >= %d" % (name, low))
    return value


def number_arg(args: Dict[str, Any], name: str, default: float) -> float:
    value = args.get(name, default)
    if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
        raise AgentFailure("bad_request", "%s must be a number >= 0" % name)
    return float(value)


class Bench:
    """One bench request against a store; `run()` answers the request's result."""

    def __init__(
        self, store_root: str, facts: Facts, sysfs: str, args: Dict[str, Any], deadline: float
    ) -> None:
        self.root = store_root
        self.facts = facts
        self.sysfs = sysfs
        self.args = args
        self.deadline = deadline
        self.warmup = int_arg(args, "warmup", 5)
        self.min_iters = int_arg(args, "min_iters", 20, 1)
        self.min_seconds = float(args.get("min_seconds", 1.0))
        self.threads = int_arg(args, "threads", 1, 1)
        self.cores = args.get("cores") or []
        self.idle_seconds = float(args.get("idle_seconds", 0.5))
        self.wait_s = number_arg(args, "wait_s", 0.0)
        self.holder = args.get("holder") or "an unnamed host"
        if not isinstance(self.cores, list) or not all(isinstance(c, int) and c >= 0 for c in self.cores):
            raise AgentFailure("bad_request", "cores must be a list of CPU indices")
        if not isinstance(self.holder, str):
            raise AgentFailure("bad_request", "holder must be a string")
        self.holder = self.holder[:200]

    def command(self) -> Tuple[List[str], Dict[str, str]]:
        runner, env = runner_command(self.root, self.args.get("runtime"), self.threads)
        cmd = [runner]
        if self.args.get("selftest"):
            cmd.append("--selftest")
        else:
            bundle = self.args.get("bundle")
            bdir = os.path.join(self.root, "bundle", str(bundle))
            if not is_sha(bundle) or not os.path.isdir(bdir):
                raise AgentFailure(
                    "missing_file", "bundle %s is not installed; upload and install it" % bundle
                )
            cmd += ["--bundle", bdir]
            generate = self.args.get("generate")
            if generate is not None:  # greedy generation of a causal LM: prefill + decode steps
                if not isinstance(generate, dict):
                    raise AgentFailure("bad_request", "bench 'generate' must be an object")
                cmd += ["--generate", "--new-tokens", str(int_arg(generate, "new_tokens", 16, low=1))]
                if generate.get("prompt_tokens") is not None:
                    cmd += ["--prompt-tokens", str(int_arg(generate, "prompt_tokens", 1, low=1))]
        cmd += [
            "--warmup", str(self.warmup),
            "--min-iters", str(self.min_iters),
            "--min-seconds", repr(self.min_seconds),
            "--threads", str(self.threads),
        ]  # fmt: skip
        return cmd, env

    def reader(self) -> Optional[PowerReader]:
        meter = self.args.get("meter")
        if meter:
            try:
                return meter_power.open_reader(meter)
            except (OSError, KeyError, TypeError, ValueError, AttributeError) as exc:
                raise AgentFailure("power", "cannot open meter %r: %s" % (meter, exc)) from None
        if self.args.get("power", True):
            found = discover_power(self.sysfs)
            if found:
                return found[0]
        return None

    def run(self) -> Dict[str, Any]:
        cmd, env = self.command()  # refuse a bad request before queueing for the board
        with bench_lock(self.root, self.holder, self.wait_s, self.deadline):
            return self._measure(cmd, env)

    def _measure(self, cmd: List[str], env: Dict[str, str]) -> Dict[str, Any]:
        before = self.facts.snapshot()
        reader = self.reader()
        try:
            idle = measure_window(reader, self.idle_seconds) if reader and self.idle_seconds > 0 else []
            sampler = PowerSampler(reader) if reader else None
            started_at = time.time()
            t0 = time.monotonic()
            if sampler:
                sampler.start()
            proc_result = self._run_runner(cmd, env)
            t1 = time.monotonic()
            busy = sampler.stop() if sampler else []
        finally:
            if reader:
                reader.close()
        finished_at = time.time()
        after = self.facts.snapshot()
        runner = self._parse(proc_result)
        energy = self._energy(reader, idle, busy, runner)
        throttled, reasons = throttle_check(before, after, float(self.args.get("throttle_temp_c", 80.0)))
        return {
            "runner": runner,
            "energy": energy,
            "facts_before": before,
            "facts_after": after,
            "throttled": throttled,
            "throttle_reasons": reasons,
            "started_at": started_at,
            "finished_at": finished_at,
            "wall_s": t1 - t0,
            "cores": self.cores,
            "command": cmd[1:],
        }

    def _run_runner(self, cmd: List[str], env: Dict[str, str]) -> RunResult:
        return run_process(cmd, env, self.cores, self.deadline)

    def _parse(self, result: RunResult) -> Dict[str, Any]:
        code, out, err = result
        lines = [ln for ln in out.decode("utf-8", "replace").splitlines() if ln.strip()]
        parsed = None
        if lines:
            try:
                parsed = json.loads(lines[-1])
            except ValueError:
                parsed = None
        tail = err.decode("utf-8", "replace").strip()[-400:]
        if code is not None and code < 0:
            raise AgentFailure(
                "runner_crashed", "runner died from signal %d%s" % (-code, (": " + tail) if tail else "")
            )
        if isinstance(parsed, dict) and parsed.get("ok") is False:
            e = parsed.get("error") or {}
            raise AgentFailure(
                "runner_" + str(e.get("type", "error")), str(e.get("message", "runner failed"))
            )
        if code != 0 or not isinstance(parsed, dict) or not parsed.get("ok"):
            raise AgentFailure(
                "runner_crashed",
                "runner exited %s without a result%s" % (code, (": " + tail) if tail else ""),
            )
        samples = parsed.get("samples_ns")
        if not isinstance(samples, list) or not samples:
            raise AgentFailure("runner_crashed", "runner result has no samples")
        return parsed

    def _energy(
        self, reader: Optional[PowerReader], idle: List[Sample], busy: List[Sample], runner: Dict[str, Any]
    ) -> Dict[str, Any]:
        samples = runner["samples_ns"]
        mean_s = sum(samples) / len(samples) / 1e9
        if reader is not None and busy:
            idle_w = mean_power(idle) if idle else None
            mean_w = mean_power(busy)
            source, sensor = reader.source, reader.sensor
            n = len(busy)
        else:
            model = self.args.get("power_model") or {}
            if "idle_w" not in model or "per_core_w" not in model:
                return {"source": "none", "sensor": "", "note": "no sensor and no power model given"}
            idle_w = float(model["idle_w"])
            mean_w = idle_w + float(model["per_core_w"]) * self.threads
            source, sensor, n = "model", "profile power model", 0
        assert mean_w is not None
        active_w = max(mean_w - idle_w, 0.0) if idle_w is not None else None
        return {
            "source": source,
            "sensor": sensor,
            "samples": n,
            "idle_w": idle_w,
            "mean_w": mean_w,
            "total_j_per_inference": mean_w * mean_s,
            "active_j_per_inference": active_w * mean_s if active_w is not None else None,
        }


def runner_command(root: str, runtime: Any, threads: int) -> Tuple[str, Dict[str, str]]:
    """The installed runtime's hilt-runner and the environment it runs in (its libraries, threads)."""
    if not is_sha(runtime):
        raise AgentFailure("bad_request", "needs 'runtime' (the hash of an installed runtime)")
    rdir = os.path.join(root, "runtime", runtime)
    runner = os.path.join(rdir, RUNNER_NAME)
    if not os.path.exists(runner):
        raise AgentFailure("missing_file", "runtime %s is not installed; upload and install it" % runtime)
    env = dict(os.environ)
    env["LD_LIBRARY_PATH"] = rdir + (":" + env["LD_LIBRARY_PATH"] if env.get("LD_LIBRARY_PATH") else "")
    env["OMP_NUM_THREADS"] = env["TVM_NUM_THREADS"] = str(threads)
    return runner, env


def run_process(cmd: List[str], env: Dict[str, str], cores: List[int], deadline: float) -> RunResult:
    """Run the runner (pinned to `cores` if any) and collect its output; killed at the deadline."""
    remaining = deadline - time.monotonic() - 0.2
    if remaining <= 0:
        raise AgentFailure("timeout", "no time left for the runner before the request deadline")

    def pin() -> None:
        if cores and hasattr(os, "sched_setaffinity"):
            os.sched_setaffinity(0, cores)

    try:
        proc = subprocess.Popen(
            cmd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
            preexec_fn=pin if cores else None,
        )
    except OSError as exc:
        raise AgentFailure("runner_crashed", "cannot start %s: %s" % (cmd[0], exc)) from None
    try:
        out, err = proc.communicate(timeout=remaining)
    except subprocess.TimeoutExpired:
        kill_group(proc)
        proc.communicate()
        raise AgentFailure(
            "runner_timeout",
            "runner still running at the request deadline; killed after %.1f s" % remaining,
        ) from None
    return proc.returncode, out, err


def kill_group(proc: "subprocess.Popen[bytes]") -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except OSError:
        try:
            proc.kill()
        except OSError:
            pass
