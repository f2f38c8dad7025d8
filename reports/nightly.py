"""Nightly regression on a device farm: bench every (case, board), compare with the baseline run, report.

Every board runs its cases in its own thread, and every bench owns its board's machine through the
board pool: boards on separate machines measure in parallel, boards that share cores (two `local`
boards, the qemu boards of one farm) one after another, and none overlaps a `hilt tune` trial or a
`hilt bench` on the same machine. How long each board waited is in the summary.
Each measurement goes to the results database under this run's name; each (case, board) is compared
with the baseline run's record for the same case and board. A board that is down is an *error* for
its cases, never a regression, and the other boards go on. Exit code: 0 all good, 1 any regression,
2 errors only.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from device_agents.bench import BenchOptions, bench_board
from device_agents.inventory import Board, Farm
from device_agents.pool import BoardPool
from device_agents.records import MeasurementRecord
from harness.compile.bundle import load_bundle
from harness.compile.compiler import CompileOptions, compile_model
from harness.errors import HiltError
from reports.compare import compare
from reports.junit import CaseResult, validate_junit, write_junit
from reports.nightly_summary import write_summary
from reports.suite import Case, Suite
from tuner.store import ResultsStore, stored_record

log = logging.getLogger(__name__)


@dataclass
class NightlyResult:
    run: str
    baseline: str | None
    results: list[CaseResult]
    records: dict[tuple[str, str], MeasurementRecord] = field(default_factory=dict)
    waited_s: dict[str, float] = field(default_factory=dict)  # per board: time spent waiting for its machine
    junit: Path | None = None
    summary_md: Path | None = None
    summary_html: Path | None = None

    @property
    def exit_code(self) -> int:
        if any(r.status == "regression" for r in self.results):
            return 1
        if any(r.status == "error" for r in self.results):
            return 2
        return 0


def _bundle_for(case: Case, board: Board, seq_len_default: int = 66) -> Path:
    """The case's bundle for this board: prebuilt (arch checked) or compiled now (cached)."""
    if case.bundle:
        bundle = load_bundle(case.bundle)
        arch = bundle.metadata.arch
        if arch != board.profile.arch:
            raise HiltError(
                f"bundle {case.bundle} is built for {arch}, board {board.name} is {board.profile.arch}"
            )
        return Path(bundle.directory)
    opts = CompileOptions(seq_len=case.seq_len or seq_len_default)
    return Path(compile_model(case.model, board.profile, opts).bundle.directory)


Outcome = tuple[Case, MeasurementRecord | None, str | None, float]


OnBench = Callable[[str, str, MeasurementRecord | None], None]  # (case, board, record or None if it failed)


def _run_board(
    board: Board,
    cases: list[Case],
    options: BenchOptions | None,
    pool: BoardPool,
    wait_s: float,
    on_bench: OnBench | None = None,
) -> list[Outcome]:
    out: list[Outcome] = []
    for case in cases:
        t0 = time.monotonic()
        try:
            bundle = _bundle_for(case, board)
            record = bench_board(board, bundle, options, pool=pool, wait_s=wait_s)
            out.append((case, record, None, time.monotonic() - t0))
        except HiltError as exc:
            log.warning("nightly %s on %s: %s", case.name, board.name, exc)
            out.append((case, None, str(exc), time.monotonic() - t0))
        if on_bench is not None:  # as each bench ends (live metrics), not once the whole run is over
            on_bench(case.name, board.name, out[-1][1])
    return out


def _energy(record: MeasurementRecord) -> float | None:
    """Measured energy per inference; a modelled figure is not a measurement: never a regression."""
    return record.energy.per_inference_j if record.energy.measured else None


def _cases_per_board(suite: Suite, farm: Farm) -> dict[str, list[Case]]:
    """Board name -> the suite's cases for that board's profile, in suite order."""
    per_board: dict[str, list[Case]] = {}
    for case in suite.case:
        for b in farm.boards:
            if b.profile.name in case.profiles:
                per_board.setdefault(b.name, []).append(case)
    return per_board


def _against_baseline(
    suite: Suite,
    case: Case,
    name: str,
    seconds: float,
    record: MeasurementRecord,
    base: MeasurementRecord | None,
    base_run: str | None,
) -> CaseResult:
    """One case's result on one board: new (no baseline record), or pass/regression against the baseline."""
    med = record.summary.median_ns / 1e6
    if base is None:
        note = f"median {med:.3f} ms; no baseline record for this case and board"
        return CaseResult(case.name, name, seconds, "new", "no baseline", note)
    cmp = compare(
        record.samples_ns, base.samples_ns, suite.thresholds,
        memory=(record.peak_rss_kb, base.peak_rss_kb),
        energy=(_energy(record), _energy(base)) if _energy(record) and _energy(base) else None,
    )  # fmt: skip
    details = (
        f"median {med:.3f} ms vs {base.summary.median_ns / 1e6:.3f} ms "
        f"({cmp.latency_change_pct:+.1f}%, Mann-Whitney p={cmp.latency_p:.2g}); peak memory "
        f"{cmp.memory_change_pct:+.1f}%; baseline run {base_run}"
    )
    status = "regression" if cmp.regressed else "pass"
    return CaseResult(case.name, name, seconds, status, "; ".join(cmp.regressions) or "ok", details)


def run_nightly(
    suite: Suite,
    farm: Farm,
    store: ResultsStore,
    out_dir: Path,
    *,
    run: str | None = None,
    baseline: str = "latest",
    update_baseline: bool = False,
    bench_options: BenchOptions | None = None,
    history: int = 14,
    pool: BoardPool | None = None,
    wait_s: float = 3600.0,
    on_bench: OnBench | None = None,
) -> NightlyResult:
    """`wait_s`: how long one bench may wait for its board's machine (another board of this run on
    the same machine, or a tuner trial) before that case is an error."""
    pool = pool or BoardPool()
    run = run or datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    study = f"nightly:{suite.name}"
    base_run = store.baseline_run(study, baseline, exclude=run)
    per_board = _cases_per_board(suite, farm)
    boards = {b.name: b for b in farm.boards}
    results: list[CaseResult] = []
    records: dict[tuple[str, str], MeasurementRecord] = {}
    waited: dict[str, float] = {}
    base_records: dict[tuple[str, str], MeasurementRecord] = {}
    if base_run:
        for row in store.measurements(study=study, run=base_run):
            base_records[(row["case_name"], row["board"])] = stored_record(row)
    with ThreadPoolExecutor(max_workers=max(1, len(per_board))) as threads:
        futures = {
            name: threads.submit(_run_board, boards[name], cases, bench_options, pool, wait_s, on_bench)
            for name, cases in per_board.items()
        }
        for name, fut in futures.items():
            for case, record, error, seconds in fut.result():
                if record is None:
                    results.append(
                        CaseResult(case.name, name, seconds, "error", error or "failed", error or "")
                    )
                    continue
                records[(case.name, name)] = record
                waited[name] = waited.get(name, 0.0) + record.pool_wait_s
                store.add_measurement(record, study=study, run=run, case=case.name)
                base = base_records.get((case.name, name))
                results.append(_against_baseline(suite, case, name, seconds, record, base, base_run))
    results.sort(key=lambda r: (r.case, r.board))
    summary = {"baseline": base_run, "exit": None, "results": [vars(r) for r in results], "waited_s": waited}
    res = NightlyResult(run=run, baseline=base_run, results=results, records=records, waited_s=waited)
    summary["exit"] = res.exit_code
    store.add_run(run, study, summary)
    if update_baseline:
        store.promote(run)
    out_dir.mkdir(parents=True, exist_ok=True)
    res.junit = write_junit(suite.name, run, results, out_dir / "junit.xml")
    validate_junit(res.junit)
    res.summary_md, res.summary_html = write_summary(suite, store, study, res, out_dir, history)
    return res
