"""One trial, step by step, each step persisted before the next starts.

prune (cached per stage prefix, so trials sharing a prefix share the work) → evaluate →
compile (cached by bundle hash) → lease a board of the profile → bench (upload only what the
board lacks) → record. A stage beyond SIA's predictable horizon on the model *at that stage*
stops the trial before anything is built. A board lost mid-bench releases its lease and the
trial retries on another board of the same profile, a bounded number of times; the measurement
is recorded once, after it succeeded.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from harness.cache import sha256_file
from harness.errors import AgentError, HiltError, TransportError
from harness.prune.manifest import count_parameters
from harness.prune.schedule import Schedule
from tuner.constraints import Limits, measured_violations, stage_sia_violation
from tuner.store import ResultsStore

log = logging.getLogger(__name__)
Say = Callable[[str], None]


class Infeasible(HiltError):
    """The schedule breaks a constraint that is known before building (e.g. SIA's horizon)."""

    def __init__(self, message: str, violation: float) -> None:
        super().__init__(message)
        self.violation = violation


class NoBoardError(HiltError):
    """Every board of the profile was busy or lost."""


@dataclass
class TaskData:
    """Calibration (scoring + recovery) and validation (accuracy) data of the task."""

    calib_ids: torch.Tensor
    calib_labels: torch.Tensor
    val_ids: torch.Tensor
    val_labels: torch.Tensor

    @property
    def seq_len(self) -> int:
        return int(self.calib_ids.shape[1])


@dataclass
class PipelineConfig:
    model_dir: Path
    work_dir: Path
    study: str
    boards: list  # device_agents.inventory.Board, all of one profile
    limits: Limits
    use_sia: bool = True
    sia_settings: dict = field(default_factory=dict)
    max_board_retries: int = 2
    lease_ttl_s: float = 60.0  # renewed while held, so a killed worker frees its board within a minute
    lease_wait_s: float = 600.0
    bench_options: object | None = None  # device_agents.bench.BenchOptions
    compile_options: object | None = None  # harness.compile.compiler.CompileOptions
    holder: str = "worker"


@dataclass
class TrialOutcome:
    attrs: dict
    stage_logs: list[dict]


class _Data:
    """Tensors in the shape `run_cascade` and `evaluate_classifier` read."""

    def __init__(self, ids: torch.Tensor, labels: torch.Tensor, num_classes: int = 0) -> None:
        self.input_ids, self.labels, self.num_classes = ids, labels, num_classes


def _energy_mj(record: dict) -> float:
    """Energy per inference in mJ: the active figure when the agent has one, else the total."""
    energy = record.get("energy") or {}
    return 1000.0 * float(energy.get("active_j_per_inference") or energy.get("total_j_per_inference") or 0.0)


def _digest(obj: object) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def model_dir_digest(directory: Path) -> str:
    """Hash of a model directory's files (config, manifest, weights)."""
    files = sorted(p for p in directory.iterdir() if p.is_file() and p.suffix in (".json", ".safetensors"))
    return _digest({p.name: sha256_file(p) for p in files})


class TrialPipeline:
    """Runs the steps of one trial; owns the caches and the results store."""

    def __init__(self, cfg: PipelineConfig, data: TaskData, store: ResultsStore) -> None:
        self.cfg = cfg
        self.data = data
        self.store = store
        self.base_digest = model_dir_digest(cfg.model_dir)
        self.prune_root = cfg.work_dir / "prune-cache"
        self.prune_root.mkdir(parents=True, exist_ok=True)
        self.stats = {"prune_hits": 0, "prune_misses": 0, "compile_hits": 0, "compile_misses": 0}

    # ---- models ------------------------------------------------------------------------
    def _load(self, directory: Path) -> nn.Module:
        from harness.models import load_model

        return load_model(directory).model

    def horizons(
        self, model: nn.Module, granularities: list[str], criteria: dict[str, str]
    ) -> dict[str, float]:
        """SIA predictable horizon per granularity on this model (cached by model and data hash)."""
        from harness.sia import check_sia
        from harness.sia.empirical import EmpiricalConfig

        cfg = EmpiricalConfig(**self.cfg.sia_settings) if self.cfg.sia_settings else EmpiricalConfig()
        report = check_sia(
            model,
            self.data.calib_ids,
            self.data.calib_labels,
            granularities=tuple(granularities),
            criteria=criteria,
            config=cfg,
        )
        sia_dir = self.cfg.work_dir / self.cfg.study / "sia"  # kept for the deployment report
        sia_dir.mkdir(parents=True, exist_ok=True)
        for r in report.results:
            path = sia_dir / f"{report.model_hash[:16]}-{r.granularity}.json"
            if not path.exists():
                data = {**report.to_dict(), "results": [r.to_dict()], "model_dir_digest": None}
                path.write_text(json.dumps(data, indent=2))
        return {r.granularity: r.horizon_removed for r in report.results}

    def check_stage(self, model: nn.Module, schedule: Schedule, index: int) -> float:
        """SIA violation of stage `index` on `model` (raises Infeasible when it is > 0)."""
        stage = schedule.stages[index]
        grans = [t.granularity for t in stage.targets]
        crits = {t.granularity: t.criterion for t in stage.targets}
        violation, why = stage_sia_violation(stage, self.horizons(model, grans, crits))
        if violation > 1e-9:
            raise Infeasible(f"stage {index + 1}: {why}", violation)
        return violation

    def prune(self, schedule: Schedule, say: Say) -> tuple[Path, list[dict], float]:
        """Run the schedule stage by stage, reusing any cached prefix; returns (dir, logs, SIA slack)."""
        from harness.prune.cascade import run_cascade
        from harness.prune.manifest import save_pruned

        current: Path = self.cfg.model_dir
        logs: list[dict] = []
        worst = -1.0
        model: nn.Module | None = None
        cal = schedule.calibration.model_dump()
        for i, stage in enumerate(schedule.stages):
            key = _digest(
                {
                    "base": self.base_digest,
                    "stages": [s.model_dump() for s in schedule.stages[: i + 1]],
                    "cal": cal,
                }
            )[:24]
            out = self.prune_root / key
            if (out / "stage_log.json").is_file():
                self.stats["prune_hits"] += 1
                logs.append(json.loads((out / "stage_log.json").read_text()))
                current, model = out, None
                worst = max(worst, logs[-1].get("sia_violation", -1.0))
                continue
            self.stats["prune_misses"] += 1
            model = model or self._load(current)
            if self.cfg.use_sia:
                say(f"SIA check before stage {i + 1}")
                worst = max(worst, self.check_stage(model, schedule, i))
            say(f"pruning stage {i + 1}/{len(schedule.stages)}")
            one = Schedule.model_validate(
                {"version": 1, "name": schedule.name, "stages": [stage.model_dump()], "calibration": cal}
            )
            model, stage_log = run_cascade(
                model,
                one,
                _Data(self.data.calib_ids, self.data.calib_labels),
                eval_data=_Data(self.data.val_ids, self.data.val_labels),
            )
            entry = stage_log.model_dump(mode="json")
            entry["sia_violation"] = worst
            tmp = out.with_name(out.name + ".tmp")
            shutil.rmtree(tmp, ignore_errors=True)
            save_pruned(model, tmp, stage_log.task)
            (tmp / "stage_log.json").write_text(json.dumps(entry, indent=2))
            shutil.rmtree(out, ignore_errors=True)
            tmp.rename(out)  # atomic: a crash leaves no half-written stage
            logs.append(entry)
            current = out
        return current, logs, worst

    def evaluate(self, model_dir: Path) -> float:
        from harness.evaluate import evaluate_classifier

        model = self._load(model_dir)
        data = _Data(self.data.val_ids, self.data.val_labels, int(model.config.num_labels))
        result = evaluate_classifier(model, data)  # type: ignore[arg-type]
        return float(result.accuracy)

    # ---- build and measure ---------------------------------------------------------------
    def compile(self, model_dir: Path, say: Say) -> Path:
        from harness.compile.compiler import CompileOptions, compile_model

        board = self.cfg.boards[0]
        opts = self.cfg.compile_options or CompileOptions(seq_len=self.data.seq_len)
        say(f"compiling for {board.profile.name}")
        result = compile_model(model_dir, board.profile, opts)
        self.stats["compile_hits" if result.cached else "compile_misses"] += 1
        bundle = result.bundle
        self.store.add_artifact(bundle.sha256, board.profile.name, {"directory": str(bundle.directory)})
        return Path(bundle.directory)

    def _keep_alive(self, lease) -> Callable[[], None]:  # noqa: ANN001
        """Renew a lease every third of its TTL while the bench runs; returns the stop function."""
        import threading

        stop = threading.Event()

        def beat() -> None:
            while not stop.wait(self.cfg.lease_ttl_s / 3):
                self.store.renew(lease, self.cfg.lease_ttl_s)

        threading.Thread(target=beat, daemon=True, name=f"lease-{lease.board}").start()
        return stop.set

    def bench(self, bundle_dir: Path, say: Say, trial_number: int | None) -> tuple[dict, str, float]:
        """Lease a board, bench, record; retry on another board if one is lost.

        Returns (record, board name, seconds waited for the lease)."""
        from device_agents.bench import BenchOptions, bench_board

        options = self.cfg.bench_options or BenchOptions()
        candidates = list(self.cfg.boards)
        attempts = 0
        lost: list[str] = []
        while candidates and attempts <= self.cfg.max_board_retries:
            t0 = time.monotonic()
            lease = self.store.lease_any(
                [b.name for b in candidates], self.cfg.holder, self.cfg.lease_ttl_s, self.cfg.lease_wait_s
            )
            wait = time.monotonic() - t0
            if lease is None:
                raise NoBoardError(f"no board of profile {candidates[0].profile.name} came free in time")
            board = next(b for b in candidates if b.name == lease.board)
            stop_renewal = self._keep_alive(lease)
            try:
                say(f"benchmarking on {board.name}")
                record = bench_board(board, bundle_dir, options)
            except (TransportError, AgentError) as exc:
                log.warning("board %s lost during bench: %s", board.name, exc)
                lost.append(f"{board.name}: {exc}")
                candidates = [b for b in candidates if b.name != board.name]
                attempts += 1
                continue
            finally:
                stop_renewal()
                self.store.release(lease)
            data = record.model_dump(mode="json")
            self.store.add_measurement(
                data,
                study=self.cfg.study,
                board=board.name,
                bundle=record.artifact,
                trial_number=trial_number,
            )
            return data, board.name, wait
        raise NoBoardError("bench failed on every board tried: " + "; ".join(lost))

    def measure_dense(self, say: Say) -> dict:
        """Accuracy and a board measurement of the unpruned model: the report's "dense" column."""
        accuracy = self.evaluate(self.cfg.model_dir)
        bundle_dir = self.compile(self.cfg.model_dir, say)
        record, board, _ = self.bench(bundle_dir, say, None)
        return {
            "accuracy": accuracy,
            "latency_ms": record["summary"]["median_ns"] / 1e6,
            "latency_p90_ms": record["summary"]["p90_ns"] / 1e6,
            "peak_rss_mb": record["peak_rss_kb"] / 1024.0,
            "energy_mj": _energy_mj(record),
            "board": board,
            "bundle": record["artifact"],
            "params": count_parameters(self._load(self.cfg.model_dir)),
        }

    def run(self, schedule: Schedule, trial_number: int | None, say: Say) -> TrialOutcome:
        t = [time.perf_counter()]
        before = dict(self.stats)
        model_dir, logs, sia_slack = self.prune(schedule, say)
        t.append(time.perf_counter())
        say("evaluating")
        accuracy = self.evaluate(model_dir)
        t.append(time.perf_counter())
        bundle_dir = self.compile(model_dir, say)
        t.append(time.perf_counter())
        record, board, wait = self.bench(bundle_dir, say, trial_number)
        t.append(time.perf_counter())
        step_seconds = {
            k: round(b - a, 4)
            for k, a, b in zip(("prune", "evaluate", "compile", "bench"), t[:-1], t[1:], strict=True)
        }
        summary = record["summary"]
        latency_ms = summary["median_ns"] / 1e6
        p90_ms = summary["p90_ns"] / 1e6
        peak_mb = record["peak_rss_kb"] / 1024.0
        mem_v, lat_v = measured_violations(latency_ms, peak_mb, self.cfg.limits)
        attrs = {
            "accuracy": accuracy,
            "latency_ms": latency_ms,
            "latency_p90_ms": p90_ms,
            "peak_rss_mb": peak_mb,
            "energy_mj": _energy_mj(record),
            "energy_source": (record.get("energy") or {}).get("source", "unknown"),
            "board": board,
            "lease_wait_s": wait,
            "bundle": record["artifact"],
            "pruned_dir": str(model_dir),
            "params": logs[-1]["final_params"] if logs else None,
            "compression": 1.0,
            "constraints": [sia_slack, mem_v, lat_v],
            "step_seconds": step_seconds,
            "cache": {k: v - before[k] for k, v in self.stats.items()},  # this trial's hits and misses
        }
        if logs:
            attrs["compression"] = logs[0]["dense_params"] / logs[-1]["final_params"]
        return TrialOutcome(attrs=attrs, stage_logs=logs)
