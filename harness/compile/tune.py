"""MetaSchedule kernel tuning with a reusable JSON tuning database (one per arch by default).

Records are keyed by exact kernel shape and target, so the database pays off across candidates
whose pruned widths repeat (round widths to the SIMD width to make them repeat). Tuning measures
candidates on this host (MetaSchedule's local runner), so it is offered for host-arch profiles only;
a foreign-arch profile can still apply records already in its database.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from harness.errors import CompileError
from harness.runtime.toolchains import host_arch
from profiles.schema import BoardProfile

log = logging.getLogger(__name__)

DB_FILES = ("database_workload.json", "database_tuning_record.json")


class TuningDatabase:
    """A MetaSchedule JSONDatabase directory: tune into it, apply it, and hash what it holds."""

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

    def num_records(self) -> int:
        path = self.work_dir / DB_FILES[1]
        if not path.is_file():
            return 0
        with path.open() as fh:
            return sum(1 for line in fh if line.strip())

    def _open(self):  # noqa: ANN202 - ms.database.JSONDatabase
        from tvm.s_tir import meta_schedule as ms

        self.work_dir.mkdir(parents=True, exist_ok=True)
        try:
            return ms.database.JSONDatabase(work_dir=str(self.work_dir))
        except Exception as exc:  # a corrupt JSON line surfaces as a TVM error
            raise CompileError(
                f"tuning database {self.work_dir} is unreadable ({exc}); delete it or pass another --database"
            ) from exc

    def apply(
        self,
        mod: Any,
        target: Any,
        profile: BoardProfile,
        *,
        trials: int,
        say: Callable[[str], None],
    ) -> tuple[Any, dict[str, Any]]:
        """Lower to fused TIR, tune `trials` candidates (host arch only), apply the best records."""
        import tvm
        from tvm import relax
        from tvm.s_tir import meta_schedule as ms

        with target:
            mod = tvm.transform.Sequential(
                [
                    relax.transform.DecomposeOpsForInference(),
                    relax.transform.CanonicalizeBindings(),
                    relax.get_pipeline("zero"),
                ]
            )(mod)
        tasks = ms.relax_integration.extract_tasks(mod, target)
        info: dict[str, Any] = {"database": str(self.work_dir), "tasks": len(tasks), "trials": trials}
        if trials > 0:
            if profile.arch != host_arch():
                raise CompileError(
                    f"tuning measures kernels on this {host_arch()} host, so it cannot tune for "
                    f"{profile.arch}; tune with the local profile or drop --tune-trials"
                )
            self._tune(mod, target, tasks, trials, say)
        database = self._open()
        with target, database, tvm.transform.PassContext(opt_level=3):
            mod = relax.transform.MetaScheduleApplyDatabase(enable_warning=False)(mod)
        scheduled = sum(
            1
            for _, func in mod.functions.items()
            if isinstance(func, tvm.tirx.PrimFunc)
            and func.attrs
            and func.attrs.get("tirx.is_scheduled", False)
        )
        info.update(records=self.num_records(), scheduled_kernels=scheduled)
        say(f"{scheduled} of {len(tasks)} kernels have tuned schedules ({info['records']} records)")
        return mod, info

    def _tune(self, mod: Any, target: Any, tasks: list[Any], trials: int, say: Callable[[str], None]) -> None:
        """Spend the trials on the costliest kernels (FLOPs x occurrences), about 32 trials each.

        Tuning every extracted task spreads a small budget over reshapes and index ops; the
        matmuls, where the time goes, would get one round of random candidates at most.
        """
        from tvm.s_tir import meta_schedule as ms

        chosen = select_tasks(tasks, trials)
        per_iter = max(4, min(64, trials // (2 * len(chosen))))
        names = ", ".join(t.task_name for t in chosen)
        say(f"tuning {len(chosen)} of {len(tasks)} kernels ({names}), {trials} trials into {self.work_dir}")
        database = self._open()
        try:
            contexts, weights = ms.relax_integration.extracted_tasks_to_tune_contexts(
                extracted_tasks=chosen, work_dir=str(self.work_dir), num_threads=1, seed=0
            )
            ms.tune.tune_tasks(
                tasks=contexts,
                task_weights=weights,
                work_dir=str(self.work_dir),
                max_trials_global=trials,
                num_trials_per_iter=per_iter,
                builder=_in_process_builder(),
                runner=ms.runner.LocalRunner(
                    timeout_sec=60.0,
                    evaluator_config=ms.runner.EvaluatorConfig(number=3, repeat=1, min_repeat_ms=20),
                ),
                database=database,
                cost_model="xgb",
            )
        except Exception as exc:  # MetaSchedule raises TVM errors of many kinds
            raise CompileError(f"MetaSchedule tuning failed: {type(exc).__name__}: {exc}") from exc


def task_cost(task: Any) -> float:
    """Estimated FLOPs of one call of the task's kernel times how often the model calls it."""
    from tvm.s_tir.analysis import estimate_tir_flops

    try:
        flops = float(estimate_tir_flops(task.dispatched[0]))
    except Exception:  # kernels the estimator cannot analyse count as cheap
        flops = 0.0
    return flops * float(task.weight)


def select_tasks(tasks: list[Any], trials: int) -> list[Any]:
    """The costliest tasks, as many as `trials` can give about 32 trials each (at least one)."""
    ranked = sorted(tasks, key=task_cost, reverse=True)
    count = max(1, min(len(ranked), trials // 32))
    return ranked[:count]


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
