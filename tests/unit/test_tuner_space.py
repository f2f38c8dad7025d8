"""The tuner's search space, constraints, objectives and board leases."""

from __future__ import annotations

import optuna
import pytest

from harness.errors import ConfigError, ScheduleError
from harness.prune.schedule import Schedule, kept_count
from tests.unit.prune_tiny import tiny_model
from tuner.constraints import Limits, measured_violations, stage_sia_violation
from tuner.objectives import parse_objectives, record_constraints
from tuner.space import SpaceConfig, round_channel_widths, suggest_schedule
from tuner.store import resolve_url


def _schedules(cfg: SpaceConfig, n: int = 25) -> list[Schedule]:
    model = tiny_model("gpt2", layers=4)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    out = []
    for _ in range(n):
        trial = study.ask()
        try:
            out.append(suggest_schedule(trial, cfg, model))
        except ScheduleError:  # e.g. two head stages that together would empty a layer
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            continue
        study.tell(trial, 0.0)
    return out


def test_a_schedule_whose_later_stage_empties_a_layer_is_rejected_before_any_work() -> None:
    model = tiny_model("gpt2", layers=4)
    heads = model.config.n_head
    params = {"n_stages": 2}
    for i, ratio in enumerate((0.5, 0.2)):  # half the heads, then 20% of what is left: none
        params |= {f"s{i}_granularity": "head", f"s{i}_head_criterion": "taylor", f"s{i}_rank": 4,
                   f"s{i}_steps": 0, f"s{i}_ratio": ratio}  # fmt: skip
    assert round(round(heads * 0.5) * 0.2) == 0  # while either stage alone is realisable
    with pytest.raises(ScheduleError, match="stage 1: head ratio 0.2 .* would remove every head"):
        suggest_schedule(optuna.trial.FixedTrial(params), SpaceConfig(max_stages=2), model)


def test_sampled_schedules_are_valid_and_coarse_to_fine() -> None:
    order = {"layer": 0, "head": 1, "channel": 2}
    seen_counts = set()
    for s in _schedules(SpaceConfig(max_stages=4)):
        grans = [t.granularity for st in s.stages for t in st.targets]
        assert grans == sorted(grans, key=order.get)
        assert 1 <= len(s.stages) <= 4
        seen_counts.add(len(s.stages))
        for st in s.stages:
            assert 0.2 <= st.targets[0].ratio <= 1.0
            assert st.recovery.steps % 10 == 0 and st.recovery.rank in (4, 8, 16)
            assert st.targets[0].criterion != "random"
    assert len(seen_counts) >= 3


def test_fixed_compression_schedules_reach_the_target() -> None:
    from harness.models.manifest import count_parameters
    from harness.prune.targets import shape_twin, simulate_params

    model = tiny_model("gpt2", layers=4)
    dense = count_parameters(model)
    twin = shape_twin(model)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=2))
    reached = 0
    for _ in range(10):
        trial = study.ask()
        try:
            s = suggest_schedule(trial, SpaceConfig(max_stages=3, compression=2.0), model)
        except ScheduleError as exc:  # e.g. channels alone cannot reach 2x: the trial is rejected
            assert "out of reach" in str(exc)
            continue
        reached += 1
        assert dense / simulate_params(twin, s) >= 2.0
        assert trial.user_attrs["compression_planned"] >= 2.0
    assert reached >= 3


def test_round_channel_widths_gives_multiples() -> None:
    s = Schedule.model_validate(
        {
            "version": 1,
            "stages": [{"granularity": "channel", "ratio": 0.53}, {"granularity": "channel", "ratio": 0.7}],
        }
    )
    r = round_channel_widths(s, [768] * 4, 16)
    w1 = kept_count(r.stages[0].targets[0].ratio, 768)
    w2 = kept_count(r.stages[1].targets[0].ratio, w1)
    assert w1 % 16 == 0 and w2 % 16 == 0
    assert abs(w1 - 0.53 * 768) <= 8


def test_space_config_errors() -> None:
    with pytest.raises(ScheduleError, match="max_stages"):
        SpaceConfig(max_stages=5)
    with pytest.raises(ScheduleError, match="compression target"):
        SpaceConfig(compression=0.5)
    with pytest.raises(ScheduleError, match="unknown granularity"):
        SpaceConfig(granularities=("block",))


def test_sia_violation_and_measured_constraints() -> None:
    s = Schedule.model_validate({"version": 1, "stages": [{"granularity": "head", "ratio": 0.4}]})
    v, why = stage_sia_violation(s.stages[0], {"head": 0.5})
    assert v == pytest.approx(0.1) and "horizon is 50%" in why
    v, why = stage_sia_violation(s.stages[0], {"head": 0.75})
    assert v < 0 and why is None
    mem, lat = measured_violations(12.0, 600.0, Limits(memory_budget_mb=500, latency_slo_ms=10.0))
    assert mem == pytest.approx(0.2) and lat == pytest.approx(0.2)
    assert measured_violations(5.0, 100.0, Limits(500))[1] < 0


@pytest.mark.parametrize("sampler", ["tpe", "nsga2", "gp", "random"])
def test_constraints_reach_every_sampler_without_deprecated_api(sampler) -> None:
    """Constraints go through Trial.set_constraint: an infeasible trial never makes the Pareto front,
    and no sampler is built with Optuna 5's deprecated constraints_func."""
    import warnings

    from tuner.study import make_sampler

    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        study = optuna.create_study(directions=["maximize", "minimize"], sampler=make_sampler(sampler, 0))
    for violations, values in (([0.3, 0.0, 0.0], (0.99, 1.0)), ([-0.1, -0.5, -1.0], (0.90, 2.0))):
        trial = study.ask()
        trial.suggest_float("x", 0, 1)
        record_constraints(trial, violations)
        study.tell(trial, values)
    infeasible, feasible = study.trials
    assert infeasible.constraints == {"sia": 0.3, "memory": 0.0, "latency": 0.0}
    assert infeasible.user_attrs["constraints"] == [0.3, 0.0, 0.0]
    assert [t.number for t in study.best_trials] == [feasible.number]


def test_objective_parsing() -> None:
    assert parse_objectives("pareto", False, "p50").directions == ["maximize", "minimize", "minimize"]
    assert parse_objectives("pareto", True, "p90").names[-1] == "energy"
    with pytest.raises(ConfigError, match="unknown objective"):
        parse_objectives("speed", False, "p50")
    with pytest.raises(ConfigError, match="p50 or p90"):
        parse_objectives("latency", False, "p75")


def test_storage_url_errors(tmp_path) -> None:
    assert resolve_url(str(tmp_path / "x.db")).startswith("sqlite:///")
    with pytest.raises(ConfigError, match="neither sqlite"):
        resolve_url("redis://localhost")


@pytest.mark.parametrize("sampler", ["random", "tpe"])
def test_resumed_study_does_not_replay_the_first_runs_draws(sampler, tmp_path) -> None:
    from tuner.objectives import ObjectiveSpec
    from tuner.study import make_storage, open_run_study

    storage = make_storage(f"sqlite:///{tmp_path / 's.db'}")

    def run(n: int) -> None:  # one process's share of the study, as a fresh `hilt tune` would open it
        study = open_run_study("resume", storage, ObjectiveSpec(names=("accuracy",)), sampler, seed=0)
        for _ in range(n):
            trial = study.ask()
            study.tell(trial, trial.suggest_float("x", 0, 1) + trial.suggest_int("k", 0, 10**6))

    run(3)
    first = [t.params for t in optuna.load_study(study_name="resume", storage=storage).trials]
    run(3)
    study = optuna.load_study(study_name="resume", storage=storage)
    assert [t.params for t in study.trials[:3]] == first
    assert not any(t.params in first for t in study.trials[3:])
    # and a fresh study with the same seed is reproducible
    run_again = open_run_study("other", storage, ObjectiveSpec(names=("accuracy",)), sampler, seed=0)
    t = run_again.ask()
    assert {"x": t.suggest_float("x", 0, 1), "k": t.suggest_int("k", 0, 10**6)} == first[0]


def test_cuts_and_recovery_loss_are_searched_as_new_parameters_only_when_asked() -> None:
    from harness.models.manifest import count_parameters
    from harness.prune.targets import shape_twin, simulate_params

    model = tiny_model("gpt2", layers=4)
    dense, twin = count_parameters(model), shape_twin(model)
    plain = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=4))
    for _ in range(5):
        trial = plain.ask()
        try:
            suggest_schedule(trial, SpaceConfig(compression=2.0), model)
        except ScheduleError:
            pass
        # the default space keeps its old parameter names: a study made before resumes unchanged
        assert not [p for p in trial.params if p.startswith("cuts_") or p == "recovery_loss"]
    cfg = SpaceConfig(max_stages=2, compression=2.0, max_cuts=3, recovery_losses=("ce", "kd", "mix"))
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=5))
    multi = 0
    for _ in range(15):
        trial = study.ask()
        try:
            s = suggest_schedule(trial, cfg, model)
        except ScheduleError as exc:
            assert "out of reach" in str(exc) or "would remove every" in str(exc), exc
            continue
        assert trial.params["recovery_loss"] in ("ce", "kd", "mix")
        assert {st.recovery.loss for st in s.stages} == {trial.params["recovery_loss"]}
        grans = [st.targets[0].granularity for st in s.stages]
        slots = trial.params["n_stages"]
        expected = sum(trial.params[f"cuts_{trial.params[f's{i}_granularity']}"] for i in range(slots))
        assert len(grans) == expected
        multi += len(grans) > slots
        assert dense / simulate_params(twin, s) >= 2.0
    assert multi >= 2


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_cuts": 0, "compression": 2.0}, "max_cuts must be 1..8, got 0"),
        ({"max_cuts": 2}, "max_cuts > 1 needs a fixed compression target"),
        ({"recovery_losses": ("ce", "l2")}, "unknown recovery loss 'l2'; use ce, kd or mix"),
    ],
)
def test_bad_space_options_are_one_clear_error(kwargs: dict, message: str) -> None:
    with pytest.raises(ScheduleError, match=message):
        SpaceConfig(**kwargs)
