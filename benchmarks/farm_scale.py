"""A lab-sized farm (issue 31): `hilt tune` workers on one PostgreSQL study over simulated boards, with
`hilt nightly` on the same farm at the same time; then the same with faults injected; then throughput
against the worker count.

Goals (issue 31): 0 double leases; 0 trials lost or measured twice; lease wait p99 < 100 ms while a
free board exists; no "already finished" errors; the study continues within 60 s of PostgreSQL's
restart; throughput at 20 workers >= 0.8x linear when simulated bench time dominates.

Usage: .venv/bin/python benchmarks/farm_scale.py [--boards 100] [--workers 20] [--trials 400]
         [--bench-s 2] [--scaling 1,5,10,20] [--scaling-trials 3] [--scaling-bench-s 20]
         [--phases clean,faults,scaling] [--out JSON]
(needs root and Debian's postgresql package; prints a table per phase and writes
benchmarks/farm_scale.json or --out.)

Method
- Boards: `device_agents.simfarm.write_sim_farm`: the real agent over the local transport with
  `--simulate`, one store, bench lock and pool machine per board; a bench holds the board `--bench-s`
  seconds and answers a latency model's samples (SIMULATED, not measured). Everything on the host is
  what real boards get: pool leases on PostgreSQL, uploads, install, bench, records.
- Trials: a tiny random GPT-2 classifier (3 blocks), one layer-pruning stage, no recovery steps (so
  pruned models repeat and their bundles come from the compile cache): seconds of
  host CPU, so the workers spend their time in the coordination code.
- Workers: `python -m harness.cli.main tune ... --storage postgresql://...` processes, the first one
  creating the study and measuring the dense model, the rest started once it exists.
- Double leases: from the boards' own lock logs (`bench.lock.log`): overlapping holds, and benches
  that found the board's lock already taken. Lease wait: `pool_wait_s` of every trial's record.
- Faults (phase "faults"): after 20 % of the trials, kill -9 of 3 workers; after 35 %, 10 boards die
  mid-bench (for good) and 5 hang (never answer; the bench timeout, `--bench-timeout`, catches them);
  after 50 %, `pg_ctl restart -m fast`. Recovery = first trial completed after the server is back.
- Throughput: completed trials per minute between the first trial's start and the last completion;
  scaling runs use a longer simulated bench so bench time dominates the host's CPU per trial.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict
from pathlib import Path

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from device_agents.simfarm import LatencyModel, board_name  # noqa: E402
from harness.cache import cache_root  # noqa: E402
from tests import farm_run  # noqa: E402
from tests.pg_server import PostgresServer, available  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serial_noisy_line import machine_facts  # noqa: E402

OUT = Path(__file__).with_suffix(".json")
console = Console()


def set_bench_s(farm_root: Path, boards: int, bench_s: float) -> None:
    model = LatencyModel(bench_s=bench_s)
    for i in range(boards):
        (farm_root / "boards" / board_name(i) / "sim.json").write_text(json.dumps(asdict(model)))


def nightly(task: farm_run.FarmTask, suite: Path, run: str) -> subprocess.Popen:
    cmd = [
        sys.executable, "-m", "harness.cli.main", "nightly", "--farm", str(task.farm), "--suite", str(suite),
        "--run", run, "--storage", task.storage, "--out", str(task.logs / run), "--min-iters", "5",
        "--min-seconds", "0", "--wait", "600", "--update-baseline",
    ]  # fmt: skip
    log = (task.logs / f"{run}.log").open("w")
    return subprocess.Popen(
        cmd, stdout=log, stderr=subprocess.STDOUT, env=farm_run.worker_env(task), cwd=ROOT
    )


def write_suite(root: Path, model: Path) -> Path:
    suite = root / "suite.toml"
    suite.write_text(
        'version = 1\nname = "farm"\n[thresholds]\nlatency_pct = 1000.0\nmemory_pct = 1000.0\n'
        f'[[case]]\nname = "tiny"\nmodel = "{model}"\nprofiles = ["sim"]\nseq_len = 12\n'
    )
    return suite


def run_phase(
    task: farm_run.FarmTask,
    study: str,
    workers: int,
    trials: int,
    *,
    faults: dict | None = None,
    pg: PostgresServer | None = None,
    nightly_suite: Path | None = None,
    boards: int = 0,
    seed: int = 0,
) -> dict:
    """One study to its trial count; faults at fractions of it; the report as a dict."""
    since = time.time()
    console.print(f"[bold]{study}[/bold]: {workers} workers, {trials} trials")
    ws = farm_run.start_workers(task, study, trials, workers)
    night = nightly(task, nightly_suite, f"{study}-night") if nightly_suite else None
    events: list[str] = []
    restart: dict = {}
    stop = threading.Event()

    def progress() -> int:
        return len(farm_run.completed(task.storage, study))

    def injector() -> None:
        rng = random.Random(seed)
        steps = sorted((faults or {}).items())
        for frac, what in steps:
            while not stop.is_set() and progress() < frac * trials:
                time.sleep(1.0)
            if stop.is_set():
                return
            at = time.time() - since
            if what == "kill":
                victims = rng.sample([w for w in ws if w.index != 0], 3)
                for w in victims:
                    farm_run.kill(w)
                events.append(f"{at:.1f}s: kill -9 workers {[w.index for w in victims]}")
            elif what == "boards":
                chosen = rng.sample([board_name(i) for i in range(boards)], 15)
                farm_run.inject_faults(task, chosen[:10], "die")
                farm_run.inject_faults(task, chosen[10:], "hang")
                events.append(f"{at:.1f}s: boards die {chosen[:10]}, hang {chosen[10:]}")
            elif what == "pg" and pg is not None:
                t0 = time.time()
                pg.restart()
                restart.update(begin=t0, end=time.time())
                events.append(f"{at:.1f}s: PostgreSQL restarted ({restart['end'] - t0:.1f} s)")
            console.print(events[-1])

    thread = threading.Thread(target=injector, daemon=True)
    thread.start()
    last = -1
    while any(w.proc.poll() is None for w in ws):
        n = progress()
        if n != last:
            console.print(f"  {time.time() - since:6.1f} s: {n}/{trials} complete")
            last = n
        time.sleep(5.0)
    stop.set()
    farm_run.wait_workers(ws, 60)
    rep = farm_run.report(task, study, ws, trials, since)
    rep.events = events
    out = asdict(rep)
    out["measured_per_trial"] = {"1": sum(1 for c in rep.measured_per_trial.values() if c == 1),
                                 ">1": len(rep.measured_twice)}  # fmt: skip
    if restart:
        after = [t.datetime_complete.timestamp() for t in farm_run.completed(task.storage, study)
                 if t.datetime_complete and t.datetime_complete.timestamp() > restart["end"]]  # fmt: skip
        out["pg_restart"] = {
            "down_s": round(restart["end"] - restart["begin"], 2),
            "first_complete_after_s": round(min(after) - restart["end"], 2) if after else None,
        }
    if night is not None:
        try:
            night.wait(timeout=900)
        except subprocess.TimeoutExpired:
            night.kill()
        out["nightly_exit"] = night.returncode
    return out


def print_phase(name: str, r: dict) -> None:
    t = Table(title=name)
    t.add_column("what")
    t.add_column("value")
    rows = [
        ("workers / trials wanted", f"{r['workers']} / {r['trials_wanted']}"),
        ("states", json.dumps(r["states"])),
        ("retried (heartbeat)", str(r["retried"])),
        ("measured once / twice", f"{r['measured_per_trial']['1']} / {r['measured_per_trial']['>1']}"),
        ("COMPLETE without a measurement", str(r["complete_unmeasured"])),
        ("double holds (boards' lock logs)", f"{r['double_holds']} of {r['holds']} holds"),
        (
            "lease wait p50 / p99 / max ms",
            f"{r['lease_wait_p50_ms']} / {r['lease_wait_p99_ms']} / {r['lease_wait_max_ms']}",
        ),  # fmt: skip
        ("errors by kind (worker logs)", json.dumps(r["errors_by_kind"])),
        ("failures", json.dumps(r["failures"])[:300]),
        ("unattributed failures", str(r["unattributed_failures"])),
        ("worker exits", json.dumps(r["worker_exits"])),
        (
            "wall s / completed per min (all / steady)",
            f"{r['wall_s']:.1f} / {r['completed_per_min']:.2f} / {r['steady_per_min']:.2f}",
        ),
    ]
    if "pg_restart" in r:
        rows.append(("PostgreSQL restart", json.dumps(r["pg_restart"])))
    if "nightly_exit" in r:
        rows.append(("nightly exit", str(r["nightly_exit"])))
    for k, v in rows:
        t.add_row(k, v)
    console.print(t)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--boards", type=int, default=100)
    ap.add_argument("--workers", type=int, default=20)
    ap.add_argument("--trials", type=int, default=400)
    ap.add_argument("--bench-s", type=float, default=2.0)
    ap.add_argument("--phases", default="clean,faults,scaling")
    ap.add_argument("--scaling", default="1,5,10,20")
    ap.add_argument("--scaling-trials", type=int, default=3, help="trials per worker in a scaling run")
    ap.add_argument("--scaling-bench-s", type=float, default=20.0)
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    if not available():
        raise SystemExit("needs root and Debian's postgresql package (apt-get install postgresql)")
    phases = [p for p in args.phases.split(",") if p]
    root = Path(tempfile.mkdtemp(prefix="hilt-farm-"))
    result: dict = {
        "machine": machine_facts(),
        "boards": args.boards,
        "simulated": "boards are SIMULATED (agent --simulate): latency model, no runner",
        "phases": {},
    }
    with PostgresServer(max_connections=400) as pg:
        # the hilt cache: the board runtime is built once, not in the first trial of every run
        task = farm_run.lay_out(root, args.boards, pg.url, cache_root(), LatencyModel(bench_s=args.bench_s))
        suite = write_suite(root, task.model)
        if "clean" in phases:
            r = run_phase(task, "clean", args.workers, args.trials, nightly_suite=suite, boards=args.boards)
            print_phase("clean", r)
            result["phases"]["clean"] = r
            args.out.write_text(json.dumps(result, indent=1, default=str))
        if "faults" in phases:
            faults = {0.2: "kill", 0.35: "boards", 0.5: "pg"}
            r = run_phase(task, "faults", args.workers, args.trials, faults=faults, pg=pg, boards=args.boards)
            print_phase("faults", r)
            result["phases"]["faults"] = r
            args.out.write_text(json.dumps(result, indent=1, default=str))
        if "scaling" in phases:
            set_bench_s(root / "sim", args.boards, args.scaling_bench_s)
            scale = {}
            for w in (int(x) for x in args.scaling.split(",")):
                r = run_phase(task, f"scale-{w}", w, w * args.scaling_trials, boards=args.boards)
                scale[w] = {k: r[k] for k in ("completed_per_min", "steady_per_min", "states", "wall_s")}
                console.print(f"{w} workers: {r['steady_per_min']:.2f} trials/min (steady)")
                result["phases"]["scaling"] = scale
                args.out.write_text(json.dumps(result, indent=1, default=str))
            base = scale[min(scale)]["steady_per_min"] / min(scale)
            for w, s in scale.items():
                s["vs_linear"] = round(s["steady_per_min"] / (base * w), 3) if base else None
            result["phases"]["scaling"] = scale
    result["root"] = str(root)
    args.out.write_text(json.dumps(result, indent=1, default=str))
    console.print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
