"""Where tuning candidates are timed: the seam between MetaSchedule and a board.

MetaSchedule's `Builder -> Runner -> RunnerFuture` pipeline is kept; hilt swaps the runner for one
that hands each built candidate to a `KernelTimer` (the board's agent, over any transport: see
`device_agents.kernel_timing`), and the builder for one that links every candidate into a shared
library for the profile's arch (a board has no compiler to link MetaSchedule's default `.tar`).
Defined here, below the device layer, so the compiler depends on the protocol, never on transports.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from profiles.schema import BoardProfile

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class KernelJob:
    """One candidate to time: its shared library and its arguments as MetaSchedule's ArgInfo JSON."""

    path: Path
    args: list[Any]


@dataclass(frozen=True)
class KernelTiming:
    """Seconds per call of each timed repeat, or why there are none."""

    run_secs: tuple[float, ...] = ()
    error: str | None = None


@dataclass(frozen=True)
class Evaluator:
    """How each candidate is timed (MetaSchedule's EvaluatorConfig, on the board)."""

    number: int = 3
    repeat: int = 1
    min_repeat_ms: int = 20


class KernelTimer(Protocol):
    """Times built candidates where the kernels will run."""

    @property
    def where(self) -> str:
        """Names the machine, e.g. 'board qemu-a64-0 (emulated) over ssh'."""
        ...

    @property
    def emulated(self) -> bool: ...

    def time(self, jobs: list[KernelJob], evaluator: Evaluator) -> list[KernelTiming]:
        """One timing per job, in order; a candidate that fails gets an error, not an exception."""
        ...


def timer_runner(timer: KernelTimer, evaluator: Evaluator) -> Any:
    """A MetaSchedule Runner that times each batch of candidates with `timer`."""
    from tvm.ir.utils import derived_object
    from tvm.s_tir.meta_schedule.runner import PyRunner, RunnerFuture, RunnerResult

    @derived_object
    class TimerRunner(PyRunner):
        def run(self, runner_inputs: list[Any]) -> list[Any]:
            jobs = [
                KernelJob(Path(i.artifact_path), [a.as_json() for a in i.args_info]) for i in runner_inputs
            ]
            timings = timer.time(jobs, evaluator)  # MetaSchedule's RemoveBuildArtifact deletes the files
            futures = []
            for timing in timings:
                result = RunnerResult(list(timing.run_secs) or None, timing.error)
                futures.append(RunnerFuture(lambda: True, lambda r=result: r))
            return futures

    return TimerRunner()


def shared_library_builder(profile: BoardProfile) -> Any:
    """A MetaSchedule Builder that builds each candidate in this process and links a `.so` for the
    profile's arch (cross-linked with its toolchain), one temporary directory per candidate."""
    from tvm.ir.utils import derived_object
    from tvm.s_tir.meta_schedule import builder as msb
    from tvm.s_tir.meta_schedule.builder import local_builder

    from harness.compile.target import export_kwargs

    link = export_kwargs(profile)

    @derived_object
    class SharedLibraryBuilder(msb.PyBuilder):
        def build(self, build_inputs: list[Any]) -> list[Any]:
            results = []
            for item in build_inputs:
                work = Path(tempfile.mkdtemp(prefix="hilt-kernel-"))
                try:
                    lib = local_builder.default_build(item.mod, item.target, None)
                    path = work / "kernel.so"
                    lib.export_library(str(path), **link)
                    results.append(msb.BuilderResult(str(path), None))
                except Exception as exc:  # a bad candidate is a result, not a failure of tuning
                    shutil.rmtree(work, ignore_errors=True)
                    results.append(msb.BuilderResult(None, f"{type(exc).__name__}: {exc}"))
            return results

    return SharedLibraryBuilder()
