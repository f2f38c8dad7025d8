"""`hilt tune` as a library call: resolve model, data, boards and storage, then run the study."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from pathlib import Path

import optuna

from device_agents.bench import BenchOptions
from device_agents.inventory import find_farm
from device_agents.leases import worker_id
from harness.compile.compiler import CompileOptions
from harness.compile.tune import KernelTuning
from harness.errors import ConfigError
from harness.models import load_model
from harness.models.loading import resolve_model_dir
from harness.prune.criteria import DEFAULT_CRITERION
from profiles.schema import BoardProfile
from tuner.constraints import Limits
from tuner.data import task_data
from tuner.events import OnEvent, SiaSpaceChosen, Step, ignore
from tuner.objectives import ObjectiveSpec
from tuner.pipeline import PipelineConfig, TrialPipeline
from tuner.space import SpaceConfig, study_criteria
from tuner.store import ResultsStore
from tuner.study import RunSettings, make_storage, open_run_study, run_study, write_best
from tuner.study_info import SiaSpace, StudyInfo

log = logging.getLogger(__name__)


@dataclass
class TuneRequest:
    model: str
    study: str = "hilt"
    storage: str | None = None
    pool: str | None = None  # board pool database (default: see device_agents.pool)
    farm: str | None = None
    board: str | None = None
    profile: str | None = None
    trials: int = 10
    timeout_s: float | None = None
    sampler: str = "tpe"
    seed: int | None = 0
    objectives: ObjectiveSpec = field(default_factory=ObjectiveSpec)
    space: SpaceConfig = field(default_factory=SpaceConfig)
    latency_slo_ms: float | None = None
    # SIA's horizons constrain the search only when asked (`hilt tune --sia`): at equal trial counts the
    # unconstrained search found the larger hypervolume (benchmarks/sia_in_search.json)
    use_sia: bool = False
    sia_restrict_space: bool = True  # also drop what SIA forbids on the dense model from the space
    sia_settings: dict = field(default_factory=dict)
    calib: Path | None = None
    val: Path | None = None
    val_n: int | None = 500
    text: Path | None = None  # causal LMs: the corpus (default: the built-in one)
    seq_len: int = 64  # causal LMs: text window = prefill bucket
    new_tokens: int = 32  # causal LMs: greedy tokens per bench
    work_dir: Path = Path("hilt-runs")
    bench_options: BenchOptions | None = None
    compile_options: CompileOptions | None = None
    kernel_tuning: KernelTuning = field(default_factory=KernelTuning)
    command: str = ""


@dataclass
class TuneResult:
    study: optuna.Study
    best_json: Path | None
    pipeline: TrialPipeline


def fp32_lanes(profile: BoardProfile) -> int:
    """float32 values in one vector register of the board's CPU (8 for AVX2, 4 for NEON)."""
    return max(1, profile.cpu.simd_width_bytes // 4)


def select_boards(farm_path: str | None, board: str | None, profile: str | None) -> list:
    """The boards a study measures on: one profile only (a study tunes for one board kind)."""
    farm = find_farm(farm_path)
    if board:
        chosen = farm.board(board)
        same = [b for b in farm.boards if b.profile.name == chosen.profile.name]
        return [chosen] + [b for b in same if b.name != chosen.name]
    boards = [b for b in farm.boards if profile is None or b.profile.name == profile]
    if not boards:
        raise ConfigError(f"{farm.source}: no board with profile '{profile}'")
    kinds = sorted({b.profile.name for b in boards})
    if len(kinds) > 1:
        raise ConfigError(f"{farm.source} mixes profiles {kinds}: pick one with --board or --profile")
    return boards


def sia_restricted_space(
    pipeline: TrialPipeline,
    dense,  # noqa: ANN001 - a torch model
    space: SpaceConfig,
) -> tuple[SpaceConfig, dict[str, float]]:
    """Drop granularities SIA forbids on the dense model (horizon 0 under the default criterion) and
    raise the ratio floor to the widest horizon left: schedules that stage 1 would reject are never
    proposed. Later stages are still checked on the model as pruned so far. Returns the space and
    the horizons it was cut by (the report says why)."""
    grans = list(space.granularities)
    horizons = pipeline.horizons(dense, grans, {g: DEFAULT_CRITERION[g] for g in grans})
    allowed = tuple(g for g in grans if horizons.get(g, 0.0) > 0.0)
    log.info("SIA horizons on the dense model: %s; searching %s", horizons, allowed)
    if not allowed:
        raise ConfigError(
            f"SIA allows no pruning of this model at the tested ratios (horizons {horizons}); "
            "drop --sia to search anyway"
        )
    floor = max(space.ratio_low, 1.0 - max(horizons[g] for g in allowed))
    return replace(space, granularities=allowed, ratio_low=round(floor, 6)), horizons


def measure_dense_once(
    study: optuna.Study, pipeline: TrialPipeline, store: ResultsStore, event: OnEvent
) -> None:
    """The baseline every trial is compared with, measured once per study: workers that join while
    another measures it go straight to trials instead of each taking a board for the same bundle."""
    if StudyInfo.of(study).dense is not None:
        return

    def say(msg: str) -> None:
        event(Step(None, msg))

    with store.lock(f"dense:{study.study_name}", pipeline.cfg.holder, wait_s=0) as taken:
        if taken and StudyInfo.of(study).dense is None:
            StudyInfo.put(study, dense=pipeline.measure_dense(say))
        elif not taken:
            log.info("another worker is measuring the dense model of study %s", study.study_name)


def tune(req: TuneRequest, event: OnEvent = ignore) -> TuneResult:
    model_dir = resolve_model_dir(req.model)
    boards = select_boards(req.farm, req.board, req.profile)
    loaded = load_model(model_dir)
    causal = loaded.task == "causal-lm"
    objectives = req.objectives.for_task(loaded.task)
    data = task_data(
        req.model,
        req.calib,
        req.val,
        req.val_n,
        causal_dir=model_dir if causal else None,
        text=req.text,
        seq_len=req.seq_len,
    )
    storage = make_storage(req.storage)
    store = ResultsStore(req.storage)
    study = open_run_study(req.study, storage, objectives, req.sampler, req.seed)
    space = replace(req.space, criteria=study_criteria(study))
    if space.round_to is None:  # kept FFN widths a multiple of the board's fp32 vector lanes: the
        # kernels vectorise without a tail, and pruned shapes repeat, so tuning records are reused
        space = replace(space, round_to=fp32_lanes(boards[0].profile))
    StudyInfo.put(
        study, model=str(model_dir), profile=boards[0].profile.name, boards=[b.name for b in boards],
        objectives=list(objectives.names), task=loaded.task, space=space.to_dict(), command=req.command,
        work_dir=str(req.work_dir),
    )  # fmt: skip
    study_dir = req.work_dir / req.study
    cfg = PipelineConfig(
        model_dir=model_dir,
        work_dir=req.work_dir,
        study=req.study,
        boards=boards,
        limits=Limits(boards[0].profile.memory.budget_mb, req.latency_slo_ms),
        use_sia=req.use_sia,
        sia_settings=req.sia_settings,
        bench_options=req.bench_options,
        compile_options=req.compile_options,
        kernel_tuning=req.kernel_tuning,
        holder=worker_id(),
        pool=req.pool,
        task=loaded.task,
        new_tokens=req.new_tokens,
    )
    pipeline = TrialPipeline(cfg, data, store)
    dense = loaded.model
    if req.use_sia and req.sia_restrict_space:
        searched = space.granularities
        space, horizons = sia_restricted_space(pipeline, dense, space)
        # which granularities SIA lets the search prune, and how far (the report says why)
        allowed = list(space.granularities)
        sia_space = SiaSpace(searched=list(searched), granularities=allowed, horizons=horizons)
        StudyInfo.put(study, space=space.to_dict(), sia_space=sia_space)
        event(SiaSpaceChosen(sia_space))
    measure_dense_once(study, pipeline, store, event)
    settings = RunSettings(trials=req.trials, timeout_s=req.timeout_s, space=space, objectives=objectives)
    run_study(study, pipeline, settings, dense, event)
    best = write_best(study, study_dir)
    return TuneResult(study=study, best_json=best, pipeline=pipeline)
