"""MetaSchedule kernel tuning into a reusable JSON database: one per (board CPU, TVM version).

Records are keyed by workload (exact kernel shape, layout-free weights) and target, so the database
pays off across candidates whose pruned widths repeat (round widths to the SIMD width). Kernels are
extracted from `harness.compile.lowering.prepare`, the same module the build schedules, so a record
written here is found by every later build of the same kernel.

Budget: MetaSchedule's scheduler visits tasks in extraction order, 64 candidates per task and round,
and stops at the global budget, so a budget below tasks x 64 never reaches the later tasks. hilt
splits the work itself: the heavy tasks (by FLOP share) share the trials, each with its own budget
in whole rounds; light tasks are left to the default lowering's schedules (DLight, hilt's matmul
rule). Records are written when a round ends: an interrupted run keeps its finished rounds.

Candidates are timed on this host (MetaSchedule's local runner) for host-arch profiles, or on a
board through a `KernelTimer` (its agent, any transport): the builder then links each candidate
into a shared library for the board's arch. Which machines timed a database's records is kept in
its `sources.json`; emulated boards are named as such (their ranking is fit for tests, not claims).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from harness.cache import cache_root
from harness.compile.bundle import TuningInfo
from harness.compile.kernel_timer import Evaluator, KernelTimer, shared_library_builder, timer_runner
from harness.errors import CompileError, ConfigError
from harness.runtime.toolchains import host_arch
from harness.versions import package_version
from profiles.schema import BoardProfile

log = logging.getLogger(__name__)

DB_FILES = ("database_workload.json", "database_tuning_record.json")
SOURCES = "sources.json"  # which machines timed the records (not part of the digest: it decides no code)
EVALUATOR = Evaluator(number=3, repeat=1, min_repeat_ms=20)
ROUND = 64  # candidates per task and round (MetaSchedule's own per-iteration count)
MIN_ROUND = 8  # smallest round worth a cost-model update
HEAVY_SHARE = 0.97  # heavy tasks: the costliest ones that together hold this share of the FLOPs


def database_dir_for(profile: BoardProfile) -> Path:
    """cache_root()/tuning/<arch>-<cpu>/tvm-<version>: records only match the same target and TVM."""
    spec = profile.target.as_tvm()
    if isinstance(spec, str):
        cpu = spec
    else:
        cpu = "-".join([spec.get("mcpu") or "generic", *sorted(spec.get("mattr", []))])
    name = re.sub(r"[^A-Za-z0-9_.+-]", "_", f"{profile.arch}-{cpu}")
    return cache_root() / "tuning" / name / f"tvm-{package_version('apache-tvm')}"


@dataclass(frozen=True)
class KernelTuning:
    """How a build's kernels are tuned: `off` (default lowering only), `db` (plus the board's
    database records), `trials:N` (N new MetaSchedule trials into that database first)."""

    mode: str = "db"
    trials: int = 0

    @classmethod
    def parse(cls, text: str) -> KernelTuning:
        """`off` | `db` | `trials:N` (N >= 1); anything else is a ConfigError naming the value."""
        value = text.strip()
        if value in ("off", "db"):
            return cls(mode=value)
        head, sep, count = value.partition(":")
        if head == "trials" and sep:
            if not count.isdigit() or int(count) < 1:
                raise ConfigError(f"--kernel-tuning {text!r}: N in trials:N must be a whole number >= 1")
            return cls(mode="trials", trials=int(count))
        raise ConfigError(f"--kernel-tuning {text!r}: expected off, db or trials:N")

    def compile_fields(self) -> dict[str, Any]:
        """The CompileOptions fields this mode sets (`dataclasses.replace(opts, **fields)`)."""
        return {"use_database": self.mode != "off", "tune_trials": self.trials}

    def __str__(self) -> str:
        return f"trials:{self.trials}" if self.mode == "trials" else self.mode


def describe_tuning(info: TuningInfo) -> str:
    """One line for reports: how a bundle's kernels were made (from its metadata's `tuning`)."""
    kernels = info.kernels
    if kernels is None:
        return "untuned (stock TVM pipeline)" if info == TuningInfo() else f"tuned: {info.trials} trials"
    mode = f"trials:{info.trials}" if info.mode == "trials" else info.mode
    return (
        f"{mode}, {kernels.lowering}: {kernels.from_database} of {kernels.kernels} kernels from tuning "
        f"records, {kernels.tiled_matmul} by hilt's matmul schedule, {kernels.row_reduction} by hilt's "
        f"row-reduction schedule, {kernels.dlight} by DLight, {kernels.elementwise} vectorised elementwise"
    )


@dataclass(frozen=True)
class TaskBudget:
    """Trials planned for one extracted task."""

    name: str
    flop_share: float
    trials: int


@dataclass
class TuningPlan:
    """Which tasks get trials, how many, in rounds of `per_round`."""

    per_round: int
    tasks: list[TaskBudget] = field(default_factory=list)

    @property
    def trials(self) -> int:
        return sum(t.trials for t in self.tasks)

    def as_dict(self) -> dict[str, Any]:
        return {"per_round": self.per_round, "tasks": [asdict(t) for t in self.tasks]}


def plan_budget(costs: list[tuple[str, float]], trials: int) -> TuningPlan:
    """Split `trials` over the heavy tasks (by FLOP share), whole rounds each, heaviest first.

    A task gets its own budget, proportional to its share, rounded down to whole rounds of at
    least MIN_ROUND; tasks past the budget, and the light tail, get none (the default lowering
    schedules them). At least one task is tuned when trials > 0.
    """
    total = sum(c for _, c in costs) or 1.0
    ranked = sorted(costs, key=lambda nc: nc[1], reverse=True)
    heavy: list[tuple[str, float]] = []
    acc = 0.0
    for name, cost in ranked:
        if cost <= 0 or (heavy and acc >= HEAVY_SHARE):
            break
        heavy.append((name, cost / total))
        acc += cost / total
    if trials <= 0 or not heavy:
        return TuningPlan(per_round=ROUND)
    per_round = max(MIN_ROUND, min(ROUND, trials // len(heavy)))
    rounds_left = max(1, trials // per_round)
    weight = sum(s for _, s in heavy)
    tasks: list[TaskBudget] = []
    for name, share in heavy:
        if rounds_left <= 0:
            break
        rounds = max(1, min(rounds_left, int(round(trials * share / weight / per_round))))
        tasks.append(TaskBudget(name=name, flop_share=round(share, 4), trials=rounds * per_round))
        rounds_left -= rounds
    return TuningPlan(per_round=per_round, tasks=tasks)


class TuningDatabase:
    """A MetaSchedule JSONDatabase directory: tune into it, open it, and hash what it holds."""

    def __init__(self, work_dir: Path) -> None:
        self.work_dir = Path(work_dir)

    def digest(self) -> str:
        """sha256 over the database files ('empty' when there are none): part of a bundle's cache key."""
        h = hashlib.sha256()
        seen = False
        for name in DB_FILES:
            path = self.work_dir / name
            if path.is_file():
                seen = True
                h.update(name.encode())
                h.update(path.read_bytes())
        return h.hexdigest() if seen else "empty"

    def exists(self) -> bool:
        """Whether any database file is there (a corrupt one must fail loudly, not be skipped)."""
        return any((self.work_dir / name).is_file() for name in DB_FILES)

    def num_records(self) -> int:
        path = self.work_dir / DB_FILES[1]
        if not path.is_file():
            return 0
        with path.open() as fh:
            return sum(1 for line in fh if line.strip())

    def open(self) -> Any:
        """The ms.database.JSONDatabase (created empty if missing)."""
        from tvm.s_tir import meta_schedule as ms

        self.work_dir.mkdir(parents=True, exist_ok=True)
        try:
            return ms.database.JSONDatabase(work_dir=str(self.work_dir))
        except Exception as exc:  # a corrupt JSON line surfaces as a TVM error
            raise CompileError(
                f"tuning database {self.work_dir} is unreadable ({exc}); delete it or pass another --database"
            ) from exc

    def tune(
        self,
        mod: Any,
        target: Any,
        profile: BoardProfile,
        *,
        trials: int,
        say: Callable[[str], None],
        timer: KernelTimer | None = None,
    ) -> TuningPlan:
        """Tune the heavy kernels of a `prepare`d module with `trials` candidates, timed on this host
        (host-arch profiles) or by `timer` on a board."""
        from tvm.s_tir import meta_schedule as ms

        measure = Measure.on(profile, timer)
        with target:
            tasks = ms.relax_integration.extract_tasks(mod, target)
        plan = plan_budget([(t.task_name, task_cost(t)) for t in tasks], trials)
        by_name = {t.task_name: t for t in tasks}
        database = self.open()
        say(
            f"tuning {len(plan.tasks)} of {len(tasks)} kernels, {plan.trials} trials "
            f"(rounds of {plan.per_round}) into {self.work_dir}, timed on {measure.where}"
        )
        lanes = max(4, profile.cpu.simd_width_bytes // 4)
        for budget in plan.tasks:
            say(f"  {budget.name}: {budget.flop_share:.1%} of FLOPs, {budget.trials} trials")
            task = by_name[budget.name]
            seeded = self.seed_with_default(task, target, database, lanes, measure)
            if seeded is not None:
                log.info(
                    "%s: hilt's default schedule %.1f us, recorded as a candidate", task.task_name, seeded
                )
            self._tune_one(task, target, budget.trials, plan.per_round, database, measure)
            self._note_source(measure)
        return plan

    def sources(self) -> dict[str, Any]:
        """Which machines timed this database's records: {where: {emulated, trials, last}}."""
        path = self.work_dir / SOURCES
        try:
            return json.loads(path.read_text()) if path.is_file() else {}
        except ValueError:
            return {}

    def _note_source(self, measure: Measure) -> None:
        sources = self.sources()
        entry = sources.setdefault(measure.where, {"emulated": measure.emulated, "tasks": 0})
        entry["tasks"] = int(entry.get("tasks", 0)) + 1
        entry["last"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        (self.work_dir / SOURCES).write_text(json.dumps(sources, indent=1, sort_keys=True) + "\n")

    def seed_with_default(
        self, task: Any, target: Any, database: Any, lanes: int, measure: Measure | None = None
    ) -> float | None:
        """Measure hilt's own schedule of the kernel (the default lowering's first rule that applies:
        matmul, row reduction, elementwise) and commit it as a tuning record.

        The database's best record is then never slower than the default lowering in the tuner's own
        timing: a trial budget that finds nothing better (MetaSchedule's softmax and layer norms, in 12-24
        trials, were 2x slower than the row-reduction rule) leaves the kernel on the schedule it had
        without tuning. Returns the measured microseconds, or None when no rule applies or it failed.
        """
        from tvm.s_tir import meta_schedule as ms

        from harness.compile.elementwise_rule import elementwise_rule
        from harness.compile.matmul_rule import tiled_matmul_rule
        from harness.compile.reduction_rule import row_reduction_rule

        mod = task.dispatched[0]
        sch = None
        with target:
            for rule in (tiled_matmul_rule(lanes), row_reduction_rule(lanes), elementwise_rule(lanes)):
                sch = rule.apply(mod["main"], target, False)
                if sch is not None:
                    break
        if sch is None:
            return None
        measure = measure or Measure.on(None, None)
        built = measure.builder.build([ms.builder.BuilderInput(sch.mod, target)])[0]
        if built.error_msg:
            log.warning("%s: hilt's schedule did not build: %s", task.task_name, built.error_msg)
            return None
        args_info = ms.arg_info.ArgInfo.from_entry_func(sch.mod, remove_preproc=True)
        try:
            runs = measure.runner.run([ms.runner.RunnerInput(built.artifact_path, "cpu", args_info)])
            result = runs[0].result()
        finally:
            shutil.rmtree(Path(built.artifact_path).parent, ignore_errors=True)
        if result.error_msg or not result.run_secs:
            log.warning("%s: hilt's schedule did not run: %s", task.task_name, result.error_msg)
            return None
        workload = database.commit_workload(mod)
        database.commit_tuning_record(
            ms.database.TuningRecord(sch.trace, workload, list(result.run_secs), target, args_info)
        )
        return 1e6 * min(float(s) for s in result.run_secs)

    def _tune_one(
        self, task: Any, target: Any, trials: int, per_round: int, database: Any, measure: Measure
    ) -> None:
        """One task, its own budget: records are committed at the end of every round."""
        from tvm.s_tir import meta_schedule as ms

        _drop_unnamed_handlers()
        try:
            contexts, weights = ms.relax_integration.extracted_tasks_to_tune_contexts(
                extracted_tasks=[task], work_dir=str(self.work_dir), num_threads=1, seed=0
            )
            with target:  # RISC-V schedule rules read Target::Current()
                ms.tune.tune_tasks(
                    tasks=contexts,
                    task_weights=weights,
                    work_dir=str(self.work_dir),
                    max_trials_global=trials,
                    max_trials_per_task=trials,
                    num_trials_per_iter=per_round,
                    builder=measure.builder,
                    runner=measure.runner,
                    database=database,
                    cost_model="xgb",
                )
        except Exception as exc:  # MetaSchedule raises TVM errors of many kinds
            raise CompileError(f"MetaSchedule tuning failed: {type(exc).__name__}: {exc}") from exc


@dataclass
class Measure:
    """The builder and runner one tuning run uses, and where its timings come from."""

    builder: Any
    runner: Any
    where: str
    emulated: bool

    @classmethod
    def on(cls, profile: BoardProfile | None, timer: KernelTimer | None) -> Measure:
        """This host's local runner (host-arch profiles; `profile` None: no arch check), or `timer`."""
        if timer is not None:
            assert profile is not None
            return cls(
                shared_library_builder(profile), timer_runner(timer, EVALUATOR), timer.where, timer.emulated
            )
        if profile is not None and profile.arch != host_arch():
            raise CompileError(
                f"tuning for {profile.arch} times kernels on a board: name a farm board with that "
                f"profile (hilt compile --board NAME, or --tune-on NAME); this {host_arch()} host "
                "cannot run them. Without --tune-trials, records already in the database still apply"
            )
        return cls(_in_process_builder(), _runner(), f"this {host_arch()} host", False)


def _drop_unnamed_handlers() -> None:
    """MetaSchedule rebuilds its loggers with dictConfig on every tuning call, naming the handlers its
    logger already has; an unnamed one (left by an earlier call or a test harness) makes that fail
    with "'NoneType' object has no attribute 'format'"."""
    ms_logger = logging.getLogger("tvm.s_tir.meta_schedule")
    for handler in list(ms_logger.handlers):
        if handler.get_name() is None:
            ms_logger.removeHandler(handler)


def task_cost(task: Any) -> float:
    """Estimated FLOPs of one call of the task's kernel times how often the model calls it."""
    from tvm.s_tir.analysis import estimate_tir_flops

    try:
        flops = float(estimate_tir_flops(task.dispatched[0]))
    except Exception:  # kernels the estimator cannot analyse count as cheap
        flops = 0.0
    return flops * float(task.weight)


def _runner():  # noqa: ANN202 - a MetaSchedule Runner
    from tvm.s_tir import meta_schedule as ms

    return ms.runner.LocalRunner(
        timeout_sec=60.0,
        evaluator_config=ms.runner.EvaluatorConfig(
            number=EVALUATOR.number, repeat=EVALUATOR.repeat, min_repeat_ms=EVALUATOR.min_repeat_ms
        ),
    )


def _in_process_builder():  # noqa: ANN202 - a MetaSchedule Builder
    """Builds candidates in this process, one after another.

    MetaSchedule's LocalBuilder starts a fresh worker pool for every batch; on a loaded 2-core
    machine each worker spent over a minute starting, so every candidate hit the build timeout.
    Building here costs ~0.3 s per kernel.
    """
    from tvm.ir.utils import derived_object
    from tvm.s_tir.meta_schedule import builder as msb
    from tvm.s_tir.meta_schedule.builder import local_builder

    @derived_object
    class InProcessBuilder(msb.PyBuilder):
        def build(self, build_inputs: list[Any]) -> list[Any]:
            results = []
            for item in build_inputs:
                try:
                    lib = local_builder.default_build(item.mod, item.target, None)
                    results.append(msb.BuilderResult(local_builder.default_export(lib), None))
                except Exception as exc:  # a bad candidate is a result, not a failure of tuning
                    results.append(msb.BuilderResult(None, f"{type(exc).__name__}: {exc}"))
            return results

    return InProcessBuilder()
