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
import tempfile
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from torch import nn

from device_agents.bench import BenchOptions, GenerateOptions, measure_held
from device_agents.kernel_timing import tuning_on
from device_agents.pool import BoardPool, pool_url
from device_agents.records import MeasurementRecord
from harness.cache import sha256_file
from harness.compile.bundle import Bundle
from harness.compile.compiler import CompileOptions, compile_model
from harness.compile.tune import KernelTuning, describe_tuning
from harness.errors import AgentError, BoardBusyError, HiltError, TransportError
from harness.evaluate import evaluate_classifier, evaluate_perplexity
from harness.models import load_model
from harness.models.manifest import count_parameters, save_pruned
from harness.prune.cascade import run_cascade
from harness.prune.schedule import Schedule
from harness.runtime.toolchains import host_arch
from harness.sia import check_sia
from harness.sia.empirical import EmpiricalConfig
from tuner.constraints import Limits, measured_violations, stage_sia_violation
from tuner.results import DenseResult, TrialResult
from tuner.stage_logs import TrialStageLog
from tuner.store import ResultsStore

log = logging.getLogger(__name__)
Say = Callable[[str], None]


AGENT_LOCK_WAIT_S = 60.0  # how long a trial's bench queues for the agent's own lock on the board


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
    bench_options: BenchOptions | None = None  # None: the defaults (plus generation for causal LMs)
    compile_options: CompileOptions | None = None  # None: sized from the task data
    kernel_tuning: KernelTuning = field(default_factory=KernelTuning)  # applied to every compile
    holder: str = "worker"
    pool: str | None = None  # board pool URL; None: $HILT_POOL, the study's server DB, or the cache's
    task: str = "sequence-classification"  # causal-lm: perplexity, and bundles benched with --generate
    new_tokens: int = 32  # causal LMs: greedy tokens each bench generates


@dataclass
class TrialOutcome:
    result: TrialResult
    stage_logs: list[TrialStageLog]


class _Data:
    """Tensors in the shape `run_cascade` and `evaluate_classifier` read."""

    def __init__(self, ids: torch.Tensor, labels: torch.Tensor, num_classes: int = 0) -> None:
        self.input_ids, self.labels, self.num_classes = ids, labels, num_classes


def _digest(obj: object) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def model_dir_digest(directory: Path) -> str:
    """Hash of a model directory's files (config, manifest, weights)."""
    files = sorted(p for p in directory.iterdir() if p.is_file() and p.suffix in (".json", ".safetensors"))
    return _digest({p.name: sha256_file(p) for p in files})


def kernels_of(bundle: Bundle) -> str:
    """How a bundle's kernels were made, from its metadata (one line for the report)."""
    return describe_tuning(bundle.metadata.tuning)


class TrialPipeline:
    """Runs the steps of one trial; owns the caches and the results store."""

    def __init__(self, cfg: PipelineConfig, data: TaskData, store: ResultsStore) -> None:
        self.cfg = cfg
        self.data = data
        self.store = store
        url = pool_url(cfg.pool, storage=store.url)
        self.pool = BoardPool(url, holder=cfg.holder, ttl_s=cfg.lease_ttl_s)
        self.base_digest = model_dir_digest(cfg.model_dir)
        self.prune_root = cfg.work_dir / "prune-cache"
        self.prune_root.mkdir(parents=True, exist_ok=True)
        self.stats = {"prune_hits": 0, "prune_misses": 0, "compile_hits": 0, "compile_misses": 0}

    # ---- models ------------------------------------------------------------------------
    def _load(self, directory: Path) -> nn.Module:
        return load_model(directory).model

    def horizons(
        self, model: nn.Module, granularities: list[str], criteria: dict[str, str]
    ) -> dict[str, float]:
        """SIA predictable horizon per granularity on this model (cached by model and data hash)."""
        cfg = EmpiricalConfig(**self.cfg.sia_settings) if self.cfg.sia_settings else EmpiricalConfig()
        report = check_sia(
            model,
            self.data.calib_ids,
            self.data.calib_labels,
            granularities=tuple(granularities),
            criteria=criteria,
            config=cfg,
        )
        for r in report.results:  # kept in the study's database for the deployment report
            self.store.add_sia_result(self.cfg.study, report.model_hash, r)
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

    def prune(self, schedule: Schedule, say: Say) -> tuple[Path, list[TrialStageLog], float]:
        """Run the schedule stage by stage, reusing any cached prefix; returns (dir, logs, SIA slack)."""
        current: Path = self.cfg.model_dir
        logs: list[TrialStageLog] = []
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
                logs.append(TrialStageLog.load(out / "stage_log.json"))
                current, model = out, None
                worst = max(worst, logs[-1].sia_violation)
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
            entry = TrialStageLog(**dict(stage_log), sia_violation=worst)
            # a staging dir of this process's own, published with one rename: workers sharing the
            # cache that prune the same stage at once never write into (or delete) each other's
            tmp = Path(tempfile.mkdtemp(prefix=f".{key}.", dir=self.prune_root))
            save_pruned(model, tmp, stage_log.task)
            entry.save(tmp / "stage_log.json")
            if (out / "stage_log.json").is_file():
                shutil.rmtree(tmp, ignore_errors=True)  # another worker published it first: keep theirs
            else:
                shutil.rmtree(out, ignore_errors=True)  # a crash's half-written leftover, never published
                try:
                    tmp.rename(out)
                except OSError:  # published by another worker between the check and the rename
                    shutil.rmtree(tmp, ignore_errors=True)
            logs.append(entry)
            current = out
        return current, logs, worst

    @property
    def causal(self) -> bool:
        return self.cfg.task == "causal-lm"

    def evaluate(self, model_dir: Path) -> dict[str, float]:
        """{"accuracy": a} for a classifier, {"perplexity": p} for a causal LM (validation data)."""
        model = self._load(model_dir)
        if self.causal:
            ppl = evaluate_perplexity(model, self.data.val_ids, batch_size=4).perplexity
            return {"perplexity": float(ppl)}
        data = _Data(self.data.val_ids, self.data.val_labels, int(model.config.num_labels))
        result = evaluate_classifier(model, data)  # type: ignore[arg-type]
        return {"accuracy": float(result.accuracy)}

    # ---- build and measure ---------------------------------------------------------------
    def compile(self, model_dir: Path, say: Say) -> Bundle:
        """The trial's bundle, verified once by the compile: bench and report use it as it is."""
        board = self.cfg.boards[0]
        opts = self.cfg.compile_options or CompileOptions(
            seq_len=self.data.seq_len,
            cache_len=self.data.seq_len + self.cfg.new_tokens if self.causal else None,
        )
        opts = replace(opts, **self.cfg.kernel_tuning.compile_fields())  # type: ignore[type-var]
        say(f"compiling for {board.profile.name} (kernel tuning {self.cfg.kernel_tuning})")
        # trials for a foreign arch are timed on the board itself, owned through the pool meanwhile
        on_board = opts.tune_trials > 0 and board.profile.arch != host_arch()
        timing = tuning_on(board, self.pool, self.cfg.lease_wait_s) if on_board else nullcontext(None)
        with timing as timer:
            result = compile_model(model_dir, board.profile, opts, timer=timer)
        self.stats["compile_hits" if result.cached else "compile_misses"] += 1
        bundle = result.bundle
        self.store.add_artifact(bundle.sha256, board.profile.name, {"directory": str(bundle.directory)})
        return bundle

    def bench(
        self, bundle: Bundle, say: Say, trial_number: int | None
    ) -> tuple[MeasurementRecord, str, float]:
        """Own a board through the pool, bench, record; retry on another board if one is lost.

        Returns (record, board name, seconds waited for the board)."""
        options = self.cfg.bench_options or BenchOptions()
        if not options.wait_s:  # a host outside this pool measuring on the board: queue for its lock a
            # while (the bench answer's deadline grows by this much, so it stays short)
            options = replace(options, wait_s=AGENT_LOCK_WAIT_S)
        if self.causal and options.generate is None:  # what an LLM user asks: first token, tokens/s
            options = replace(options, generate=GenerateOptions(new_tokens=self.cfg.new_tokens))
        candidates = list(self.cfg.boards)
        attempts = 0
        lost: list[str] = []
        while candidates and attempts <= self.cfg.max_board_retries:
            failed: str | None = None
            gone = False  # the board stopped answering (vs. an error of this bundle on it)
            try:
                with self.pool.hold(candidates, self.cfg.lease_wait_s) as held:
                    say(f"benchmarking on {held.board.name}")
                    try:
                        record = measure_held(held, bundle, options)
                    except (TransportError, AgentError) as exc:
                        log.warning("board %s lost during bench: %s", held.board.name, exc)
                        failed, gone = str(exc), isinstance(exc, TransportError)
                if failed is not None:
                    if gone:  # after our lease ended: a board that stopped answering sits out for all
                        self.pool.set_aside(held.board, failed[:200])
                    lost.append(f"{held.board.name}: {failed}")
                    candidates = [b for b in candidates if b.name != held.board.name]
                    attempts += 1
                    continue
            except BoardBusyError as exc:
                raise NoBoardError(
                    f"no board of profile {candidates[0].profile.name} came free: {exc}"
                ) from None
            self.store.add_measurement(record, study=self.cfg.study, trial_number=trial_number)
            return record, held.board.name, held.waited_s
        raise NoBoardError("bench failed on every board tried: " + "; ".join(lost))

    def measure_dense(self, say: Say) -> DenseResult:
        """Accuracy and a board measurement of the unpruned model: the report's "dense" column."""
        quality = self.evaluate(self.cfg.model_dir)
        bundle = self.compile(self.cfg.model_dir, say)
        record, _, _ = self.bench(bundle, say, None)
        return DenseResult(
            **quality,
            kernels=kernels_of(bundle),
            params=count_parameters(self._load(self.cfg.model_dir)),
            **DenseResult.fields_from(record),
        )

    def run(self, schedule: Schedule, trial_number: int | None, say: Say) -> TrialOutcome:
        t = [time.perf_counter()]
        before = dict(self.stats)
        model_dir, logs, sia_slack = self.prune(schedule, say)
        t.append(time.perf_counter())
        say("evaluating")
        quality = self.evaluate(model_dir)
        t.append(time.perf_counter())
        bundle = self.compile(model_dir, say)
        t.append(time.perf_counter())
        record, _, wait = self.bench(bundle, say, trial_number)
        t.append(time.perf_counter())
        step_seconds = {
            k: round(b - a, 4)
            for k, a, b in zip(("prune", "evaluate", "compile", "bench"), t[:-1], t[1:], strict=True)
        }
        measured = TrialResult.fields_from(record)
        mem_v, lat_v = measured_violations(measured["latency_ms"], measured["peak_rss_mb"], self.cfg.limits)
        result = TrialResult(
            **quality,
            kernels=kernels_of(bundle),
            lease_wait_s=wait,
            pruned_dir=str(model_dir),
            params=logs[-1].final_params if logs else None,
            compression=logs[0].dense_params / logs[-1].final_params if logs else 1.0,
            constraints=[sia_slack, mem_v, lat_v],
            step_seconds=step_seconds,
            cache={k: v - before[k] for k, v in self.stats.items()},  # this trial's hits and misses
            **measured,
        )
        return TrialOutcome(result=result, stage_logs=logs)
