"""Kernel tuning on a board: a `KernelTimer` that times MetaSchedule candidates through the agent.

Each batch of candidates (one MetaSchedule round) is uploaded (`put`, resumable, any transport) and
timed in one `time_kernels` request by the board runtime (`hilt-runner --time-kernel`). The caller
owns the board through the pool for the whole tuning run (`tuning_on`), like any measurement.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from device_agents.bench import default_holder, runtime_files, ship_tree
from device_agents.inventory import Board
from device_agents.pool import BoardPool
from device_agents.transports import Transport, open_transport
from harness.compile.kernel_timer import Evaluator, KernelJob, KernelTiming
from harness.errors import ConfigError

log = logging.getLogger(__name__)

PER_KERNEL_S = 60.0  # request deadline per candidate (qemu-user starts a runner in about a second)


class BoardKernelTimer:
    """Times candidates on one board over an open transport; the runtime is shipped once."""

    def __init__(self, transport: Transport, board: Board, threads: int = 1) -> None:
        arch = str(transport.hello.get("arch"))
        if arch != board.profile.arch:
            raise ConfigError(
                f"board {board.name} reports arch {arch} but its profile '{board.profile.name}' says "
                f"{board.profile.arch}; fix the farm file"
            )
        self.transport = transport
        self.board = board
        self.threads = threads
        tree, files, versions = runtime_files(arch)
        self.runtime = ship_tree(transport, "runtime", files, tree, versions=versions)
        self.timed = 0

    @property
    def where(self) -> str:
        label = " (emulated)" if self.emulated else ""
        return f"board {self.board.name}{label} over {self.transport.kind}"

    @property
    def emulated(self) -> bool:
        return bool(self.board.profile.emulated)

    def time(self, jobs: list[KernelJob], evaluator: Evaluator) -> list[KernelTiming]:
        built = [(i, job) for i, job in enumerate(jobs) if job.path.is_file()]
        out = [KernelTiming(error="not built") for _ in jobs]
        if not built:
            return out
        entries = [{"sha": self.transport.upload(job.path), "args": job.args} for _, job in built]
        args: dict[str, Any] = {
            "runtime": self.runtime,
            "kernels": entries,
            "threads": self.threads,
            "number": evaluator.number,
            "repeat": evaluator.repeat,
            "min_repeat_ms": evaluator.min_repeat_ms,
            "holder": default_holder(),
        }
        answer = self.transport.request("time_kernels", args, timeout=PER_KERNEL_S * len(entries))
        for (i, _), result in zip(built, answer["results"], strict=True):
            secs = result.get("run_secs")
            if result.get("error") or not secs:
                out[i] = KernelTiming(error=f"on {self.board.name}: {result.get('error') or 'no timings'}")
            else:
                out[i] = KernelTiming(run_secs=tuple(float(s) for s in secs))
        self.timed += len(entries)
        log.info("board %s: timed %d candidates (%d so far)", self.board.name, len(entries), self.timed)
        return out


@contextmanager
def tuning_on(board: Board, pool: BoardPool | None = None, wait_s: float = 0.0) -> Iterator[BoardKernelTimer]:
    """Own `board` through the pool, open its transport and yield a timer for its candidates."""
    pool = pool or BoardPool()
    with pool.hold([board], wait_s) as held, open_transport(held.board) as transport:
        yield BoardKernelTimer(transport, held.board)
