"""Create or join a study and run trials: samplers, heartbeats, resume, the live view's callbacks.

A study lives in an Optuna RDB storage (SQLite by default, PostgreSQL for many hosts). Workers
that run `tune` with the same storage and study name join it; a worker killed mid-trial leaves a
RUNNING trial that the heartbeat marks FAILED (and re-queues once), so a resumed study continues
where it stopped and counts no trial twice.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import optuna
from optuna.exceptions import StorageInternalError
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState
from sqlalchemy.exc import IntegrityError, OperationalError, SQLAlchemyError

from device_agents.db import retrying
from harness.errors import ConfigError, HiltError, ScheduleError
from tuner.events import (
    OnEvent,
    Step,
    TrialCompleted,
    TrialFailed,
    TrialRejected,
    TrialStarted,
    ignore,
)
from tuner.objectives import ObjectiveSpec, record_constraints
from tuner.pipeline import Infeasible, TrialPipeline
from tuner.results import quality_score
from tuner.space import SpaceConfig, suggest_schedule
from tuner.stage_logs import stage_logs_attr
from tuner.store import resolve_url

log = logging.getLogger(__name__)
SAMPLERS = ("tpe", "nsga2", "gp", "random")


def make_sampler(name: str, seed: int | None, n_startup: int = 8) -> optuna.samplers.BaseSampler:
    if name == "tpe":
        return optuna.samplers.TPESampler(
            multivariate=True,
            group=True,
            seed=seed,
            n_startup_trials=n_startup,
        )
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(population_size=10, seed=seed)
    if name == "gp":
        return optuna.samplers.GPSampler(seed=seed, n_startup_trials=n_startup)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    raise ConfigError(f"unknown sampler {name!r}; use one of: {', '.join(SAMPLERS)}")


def make_storage(url: str | None, heartbeat_s: int | None = None, grace_s: int | None = None) -> RDBStorage:
    """RDB storage with heartbeats ($HILT_HEARTBEAT_S, default 10 s; stale after 3 beats)."""
    heartbeat_s = heartbeat_s or int(os.environ.get("HILT_HEARTBEAT_S", "10"))
    grace_s = grace_s or 3 * heartbeat_s
    for attempt in range(5):  # workers starting together on a fresh database race to create its schema
        try:
            return _rdb(url, heartbeat_s, grace_s)
        except (IntegrityError, OperationalError) as exc:
            if attempt == 4:
                raise ConfigError(f"cannot open the study storage {resolve_url(url)}: {exc}") from None
            time.sleep(0.5 + attempt)
    raise AssertionError("unreachable")


class StudyStorage(RDBStorage):
    """Optuna's RDB storage whose trial heartbeat survives a database restart.

    Optuna beats from a thread that dies on the first failed write; the trial then looks stale and
    another worker fails it while it still runs ("already finished" when it reports). A beat that
    cannot reach the database is logged and tried again at the next interval instead."""

    def record_heartbeat(self, trial_id: int) -> None:
        try:
            super().record_heartbeat(trial_id)
        except (SQLAlchemyError, StorageInternalError) as exc:
            log.warning("heartbeat of trial id %d not recorded: %s", trial_id, type(exc).__name__)


class StoreUnavailable(HiltError):
    """The study's database could not be reached during a trial step."""


DB_ERRORS = (SQLAlchemyError, StorageInternalError)


def db_outage(exc: BaseException) -> bool:
    """Whether an error comes from the database being unreachable, also when it surfaces as another
    error raised while handling one: Optuna's `_run_trial` raises UnboundLocalError when both its
    `tell` and the `get_trial` after it fail (seen during a PostgreSQL restart)."""
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        if isinstance(cur, DB_ERRORS):
            return True
        seen.add(id(cur))
        cur = cur.__cause__ or (None if cur.__suppress_context__ else cur.__context__)
    return False


def _rdb(url: str | None, heartbeat_s: int, grace_s: int) -> RDBStorage:
    sqlite = resolve_url(url).startswith("sqlite")
    return StudyStorage(
        resolve_url(url),
        engine_kwargs={"pool_pre_ping": True, **({"connect_args": {"timeout": 30}} if sqlite else {})},
        heartbeat_interval=heartbeat_s,
        grace_period=grace_s,
        heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=1),
    )


def open_study(
    name: str, storage: RDBStorage, objectives: ObjectiveSpec, sampler: optuna.samplers.BaseSampler
) -> optuna.Study:
    study = optuna.create_study(
        study_name=name,
        storage=storage,
        sampler=sampler,
        directions=objectives.directions,
        load_if_exists=True,
    )
    existing = [d.name.lower() for d in study.directions]
    if existing != objectives.directions:
        raise ConfigError(
            f"study '{name}' exists with objectives {existing}; this run asks for {objectives.directions} — "
            "use another --study name"
        )
    return study


def open_run_study(
    name: str, storage: RDBStorage, objectives: ObjectiveSpec, sampler: str, seed: int | None
) -> optuna.Study:
    """Open (or resume, or join) a study with a sampler seeded for this run.

    A seeded sampler replays the same random draws every time it is built, so a resumed study would
    repeat its first trials (prune and compile caches make them cheap, but they add nothing). A study
    that already holds trials gets `seed + len(trials)`: still reproducible, never a replay. Workers
    that start together on an empty study still need different seeds."""
    study = open_study(name, storage, objectives, make_sampler(sampler, seed))
    if seed is not None and (n := len(study.trials)):
        log.info("study %s holds %d trials; sampler seed %d", name, n, seed + n)
        study.sampler = make_sampler(sampler, seed + n)
    return study


@dataclass
class RunSettings:
    trials: int
    timeout_s: float | None = None
    space: SpaceConfig = field(default_factory=SpaceConfig)
    objectives: ObjectiveSpec = field(default_factory=ObjectiveSpec)


def finished(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))


DB_WAIT_S = 300.0  # how long a worker waits for its study's database to come back
DB_OUTAGES_PER_RUN = 20


class Surplus(HiltError):
    """The study already has its trials (finished or claimed by running workers): nothing to do."""


def claim_slot(trial: optuna.Trial, pipeline: TrialPipeline, wanted: int) -> None:
    """Under a database lock, count finished + claimed running trials; claim one slot or raise Surplus.

    This is what makes N trials across many workers exactly N: a trial counts once it has claimed.
    """
    lock = f"claim:{trial.study.study_name}"
    with pipeline.store.lock(lock, pipeline.cfg.holder, wait_s=120) as taken_lock:
        if not taken_lock:
            raise Surplus("could not take the study's claim lock within 120 s")
        taken = 0
        for t in trial.study.get_trials(deepcopy=False):
            if t.number == trial.number:
                continue
            if t.state in (TrialState.COMPLETE, TrialState.PRUNED):
                taken += 1
            elif t.state == TrialState.RUNNING and t.user_attrs.get("claimed"):
                taken += 1
        if taken >= wanted:
            trial.study.stop()
            trial.set_user_attr("surplus", f"study already has {taken} of {wanted} trials; not run")
            raise Surplus(f"study already has {taken} of {wanted} trials")
        trial.set_user_attr("claimed", True)
        trial.set_user_attr("worker", pipeline.cfg.holder)  # which `hilt tune` process ran it


def make_objective(
    pipeline: TrialPipeline,
    settings: RunSettings,
    dense_model,  # noqa: ANN001
    event: OnEvent,
) -> Callable[[optuna.Trial], list[float] | float]:
    """The Optuna objective: schedule → pipeline → objective values; failures keep their reason."""

    def objective(trial: optuna.Trial) -> list[float] | float:
        t0 = time.perf_counter()
        claim_slot(trial, pipeline, settings.trials)
        event(TrialStarted(trial.number))

        def say(msg: str) -> None:
            event(Step(trial.number, msg))

        try:
            schedule = suggest_schedule(trial, settings.space, dense_model)
        except ScheduleError as exc:
            trial.set_user_attr("rejected", f"schedule: {exc}")
            event(TrialRejected(trial.number, str(exc)))
            raise optuna.TrialPruned(str(exc)) from None
        trial.set_user_attr("schedule", json.loads(schedule.model_dump_json()))
        try:
            if pipeline.cfg.use_sia:  # reject before building anything when stage 1 is beyond its horizon
                model0 = pipeline._load(pipeline.cfg.model_dir) if dense_model is None else dense_model
                pipeline.check_stage(model0, schedule, 0)
            outcome = pipeline.run(schedule, trial.number, say)
        except Infeasible as exc:
            trial.set_user_attr("rejected", f"sia: {exc}")
            record_constraints(trial, [exc.violation, 0.0, 0.0])
            event(TrialRejected(trial.number, str(exc)))
            raise optuna.TrialPruned(str(exc)) from None
        except Surplus:
            raise
        except DB_ERRORS as exc:  # the database restarting: this trial fails with its reason, not the worker
            reason = f"the study database was unreachable: {type(exc).__name__}"
            retrying("recording a trial's failure", lambda: trial.set_user_attr("failed_step", reason), 60)
            event(TrialFailed(trial.number, reason))
            raise StoreUnavailable(reason) from None
        except HiltError as exc:
            trial.set_user_attr("failed_step", str(exc))
            event(TrialFailed(trial.number, str(exc)))
            raise
        attrs = outcome.result.to_user_attrs()
        for k, v in attrs.items():
            if k != "constraints":
                trial.set_user_attr(k, v)
        record_constraints(trial, outcome.result.constraints)
        trial.set_user_attr("stage_logs", stage_logs_attr(outcome.stage_logs))
        total = time.perf_counter() - t0
        trial.set_user_attr("trial_seconds", total)
        trial.set_user_attr("overhead_s", total - sum(outcome.result.step_seconds.values()))
        values = settings.objectives.values(
            {**attrs, "latency_ms": outcome.result.latency_p90_ms}
            if settings.objectives.latency_stat == "p90"
            else attrs
        )
        event(TrialCompleted(trial.number, values, outcome.result))
        return values if len(values) > 1 else values[0]

    return objective


def run_study(
    study: optuna.Study,
    pipeline: TrialPipeline,
    settings: RunSettings,
    dense_model,  # noqa: ANN001
    event: OnEvent = ignore,
) -> optuna.Study:
    """Run trials until the study holds `settings.trials` finished ones (all workers together)."""
    objective = make_objective(pipeline, settings, dense_model, event)
    stop = optuna.study.MaxTrialsCallback(settings.trials, states=(TrialState.COMPLETE, TrialState.PRUNED))
    t0 = time.monotonic()
    for _ in range(DB_OUTAGES_PER_RUN):
        remaining = settings.trials - retrying("counting finished trials", lambda: finished(study), DB_WAIT_S)
        if remaining <= 0:
            return study
        left = None if settings.timeout_s is None else settings.timeout_s - (time.monotonic() - t0)
        if left is not None and left <= 0:
            return study
        try:
            study.optimize(
                objective,
                n_trials=3 * remaining + 2,  # failed trials do not count; this bounds a run of failures
                timeout=left,
                callbacks=[stop],
                catch=(HiltError,),  # a failed step fails its trial (reason in user attrs), not the worker
                gc_after_trial=True,
            )
            return study
        except Exception as exc:  # the database went away between trials: wait for it, then go on
            if not db_outage(exc):
                raise
            log.warning("study database unreachable (%s): waiting for it", type(exc).__name__)
    raise StoreUnavailable(f"the study database went away {DB_OUTAGES_PER_RUN} times; stopping this worker")


def best_schedules(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """Feasible Pareto-optimal trials (Optuna already drops constraint-violating ones)."""
    try:
        return list(study.best_trials)
    except ValueError:
        return []


def write_best(study: optuna.Study, out_dir: Path) -> Path | None:
    """Write the chosen trial's schedule, pruned model path and bundle hash; returns the JSON path."""
    best = best_schedules(study)
    if not best:
        return None
    first = max(best, key=lambda t: quality_score(t.user_attrs))
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "best_schedule.json").write_text(json.dumps(first.user_attrs["schedule"], indent=2))
    summary = {
        "trial": first.number,
        "values": first.values,
        **{
            k: first.user_attrs.get(k)
            for k in (
                "accuracy",
                "perplexity",
                "decode_tokens_per_s",
                "ttft_ms",
                "latency_ms",
                "peak_rss_mb",
                "bundle",
                "pruned_dir",
                "board",
            )  # fmt: skip
        },
    }
    path = out_dir / "best.json"
    path.write_text(json.dumps(summary, indent=2))
    return path
