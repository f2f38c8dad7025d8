"""The compression-target helper's budget and order options: split, cuts per granularity, per-stage steps."""

from __future__ import annotations

import pytest
import torch

from harness.errors import ScheduleError
from harness.models import get_adapter
from harness.models.manifest import count_parameters
from harness.prune.baselines import method_template
from harness.prune.cascade import run_cascade
from harness.prune.job import TokenData
from harness.prune.schedule import parse_schedule
from harness.prune.targets import CompressionPlan, expand_cuts, schedule_for_compression, with_recovery_steps
from tests.unit.prune_tiny import tiny_model, tokens

torch.set_num_threads(1)


def _data(n: int = 64) -> TokenData:
    ids = tokens(n=n, seed=11)
    return TokenData(ids, ids[:, 0] % 3)


def _heads_template(steps: int = 6) -> object:
    rec = {"steps": steps, "batch_size": 16, "rank": 4, "lr": 5e-3}
    return parse_schedule(
        {
            "version": 1,
            "name": "heads-then-channels",
            "stages": [
                {"granularity": "head", "ratio": 1.0, "criterion": "taylor", "recovery": rec},
                {"granularity": "channel", "ratio": 1.0, "criterion": "taylor", "recovery": rec},
            ],
        }
    )


def test_a_granularity_cut_in_steps_prunes_in_steps_with_importance_rescored() -> None:
    model = tiny_model("gpt2", layers=4)  # 4 heads per layer
    plan = CompressionPlan(split={"head": 3.0, "channel": 1.0}, cuts={"head": 2})
    schedule, achieved = schedule_for_compression(model, 1.5, _heads_template(), plan=plan)
    grans = [s.targets[0].granularity for s in schedule.stages]
    assert grans == ["head", "head", "channel"]
    assert [s.recovery.steps for s in schedule.stages] == [3, 3, 6]  # the head stage's budget is shared
    assert schedule.total_recovery_steps() == 12
    pruned, log = run_cascade(model, schedule, _data())
    ad = get_adapter(pruned)
    heads = [ad.attention_shape(i).num_heads for i in range(ad.num_layers())]
    assert heads == [2] * 4  # 4 -> 3 -> 2: each cut keeps sqrt(0.5) of the heads there
    params = [s.params_after for s in log.stages]
    assert params[0] < log.dense_params and params[1] < params[0]  # the second cut removed more
    assert all(s.recovery_steps == 3 for s in log.stages[:2])
    assert log.compression == pytest.approx(achieved) and achieved >= 1.5


def test_split_moves_the_compression_between_granularities() -> None:
    model = tiny_model("gpt2", layers=4)
    template = _heads_template(0)
    kept = {}
    for name, split in {
        "heads": {"head": 4.0, "channel": 0.25},
        "channels": {"head": 0.25, "channel": 4.0},
    }.items():
        s, achieved = schedule_for_compression(model, 1.4, template, plan=CompressionPlan(split=split))
        assert achieved >= 1.4
        kept[name] = {st.targets[0].granularity: st.targets[0].ratio for st in s.stages}
    assert kept["heads"]["head"] < kept["channels"]["head"]
    assert kept["heads"]["channel"] > kept["channels"]["channel"]


def test_per_stage_recovery_steps() -> None:
    template = _heads_template(0)
    model = tiny_model("gpt2", layers=4)
    s, _ = schedule_for_compression(model, 1.3, template, plan=CompressionPlan(recovery_steps=[5, 20]))
    assert [st.recovery.steps for st in s.stages] == [5, 20]
    assert [st.recovery.steps for st in with_recovery_steps(template, 10).stages] == [5, 5]
    assert [st.recovery.steps for st in with_recovery_steps(template, 11).stages] == [5, 6]


@pytest.mark.parametrize(
    ("plan", "message"),
    [
        (
            CompressionPlan(cuts={"layer": 2}),
            "cuts name layer, which no stage of schedule 'heads-then-channels' prunes",
        ),
        (CompressionPlan(cuts={"head": 0}), "cuts for head must be an integer in 1..8, got 0"),
        (CompressionPlan(cuts={"heads": 2}), "cuts name 'heads'; use layer, head or channel"),
        (CompressionPlan(recovery_steps=[1, 2, 3]), "recovery steps name 3 stages, but the schedule has 2"),
        (CompressionPlan(recovery_steps=[1, -2]), "recovery steps must be integers >= 0, got -2"),
        (CompressionPlan(split={"layer": 1.0}), "split names 'layer', which the schedule does not prune"),
        (
            CompressionPlan(split={"head": 0.0, "channel": 1.0}),
            "needs a positive weight for every granularity",
        ),
    ],
)
def test_bad_plans_are_one_clear_error(plan: CompressionPlan, message: str) -> None:
    with pytest.raises(ScheduleError) as exc:
        schedule_for_compression(tiny_model("gpt2", layers=4), 1.3, _heads_template(), plan=plan)
    assert message in str(exc.value) and "\n" not in str(exc.value)


def test_a_stage_pruning_several_granularities_cannot_be_cut() -> None:
    template, _ = method_template("one-shot", 10)
    with pytest.raises(ScheduleError, match="stage 0 prunes head together with other granularities"):
        expand_cuts(template, {"head": 2})
    assert expand_cuts(template, {"head": 1}).stages == template.stages


def test_cascade_template_takes_a_split_and_cuts() -> None:
    model = tiny_model("llama", layers=4)
    template, split = method_template(
        "cascade", 12, cascade_split={"layer": 0.5, "head": 1.0, "channel": 2.0}
    )
    assert split == {"layer": 0.5, "head": 1.0, "channel": 2.0}
    plan = CompressionPlan(split=split, cuts={"channel": 3})
    s, achieved = schedule_for_compression(model, 2.0, template, plan=plan)
    assert [st.targets[0].granularity for st in s.stages] == [
        "layer",
        "head",
        "channel",
        "channel",
        "channel",
    ]
    assert s.total_recovery_steps() == 12
    assert count_parameters(model) / achieved > 0
