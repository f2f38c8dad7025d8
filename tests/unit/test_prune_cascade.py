"""Recovery, the cascade runner, baselines-as-schedules and compression targets on tiny models."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from harness.errors import ScheduleError
from harness.models import get_adapter, load_model
from harness.models.manifest import count_parameters, save_pruned
from harness.prune.baselines import METHODS, method_template
from harness.prune.calib import Batch, mean_batch_loss
from harness.prune.cascade import run_cascade
from harness.prune.job import TokenData
from harness.prune.recovery import recover
from harness.prune.schedule import Recovery, parse_schedule
from harness.prune.targets import schedule_for_compression
from tests.unit.prune_tiny import logits, tiny_model, tokens


def _data(n: int = 64) -> TokenData:
    ids = tokens(n=n, seed=11)
    return TokenData(ids, ids[:, 0] % 3)  # learnable: the class is the first token mod 3


@pytest.mark.parametrize("family", ["gpt2", "qwen2"])
def test_recovery_lowers_loss_and_merges(family: str) -> None:
    torch.manual_seed(0)
    model = tiny_model(family)
    ad = get_adapter(model)
    ad.remove_channels(0, [0, 1])
    source_before = [ad.source(i) for i in range(ad.num_layers())]
    params = count_parameters(model)
    data = _data()
    batches = [Batch(data.input_ids, data.labels)]
    before = mean_batch_loss(model, batches)
    merged, losses = recover(
        model, Recovery(rank=4, steps=30, lr=1e-2, batch_size=16), data.input_ids, data.labels
    )
    after = mean_batch_loss(merged, batches)
    assert len(losses) == 30 and after < before - 0.05
    assert count_parameters(merged) == params
    assert not [n for n, _ in merged.named_modules() if "lora" in n]
    ad2 = get_adapter(merged)
    assert [ad2.source(i) for i in range(ad2.num_layers())] == source_before


def test_zero_steps_skips_recovery() -> None:
    model = tiny_model("llama")
    same, losses = recover(
        model, Recovery(steps=0), torch.zeros(4, 3, dtype=torch.long), torch.zeros(4).long()
    )
    assert same is model and losses == []


@pytest.mark.parametrize("family", ["gpt2", "llama", "mistral"])
def test_cascade_log_and_saved_model(family: str, tmp_path: Path) -> None:
    model, data = tiny_model(family, layers=4), _data()
    schedule = parse_schedule(
        {
            "version": 1,
            "stages": [
                {"granularity": "layer", "ratio": 0.75, "recovery": {"steps": 3, "batch_size": 16}},
                {"granularity": "head", "ratio": 0.5, "scope": "global", "recovery": {"steps": 3}},
                {"granularity": "channel", "ratio": 0.5, "criterion": "flap", "recovery": {"steps": 0}},
            ],
            "calibration": {"batches": 2, "batch_size": 16},
        }
    )
    dense, width = count_parameters(model), get_adapter(model).num_channels(0)
    pruned, log = run_cascade(model, schedule, data, eval_data=data)
    assert [s.index for s in log.stages] == [0, 1, 2]
    assert log.dense_params == dense
    assert [s.params_before for s in log.stages[1:]] == [s.params_after for s in log.stages[:-1]]
    assert all(s.params_after < s.params_before and s.flops_after < s.flops_before for s in log.stages)
    assert log.final_params == count_parameters(pruned)
    assert log.compression == pytest.approx(dense / log.final_params)
    assert log.stages[2].calib_loss_after_recovery == log.stages[2].calib_loss_after_prune
    assert 0 <= log.final_accuracy <= 1
    ad = get_adapter(pruned)
    assert ad.num_layers() == 3
    assert all(ad.num_channels(i) == width // 2 for i in range(3))
    save_pruned(pruned, tmp_path / "p", "sequence-classification")
    ids = tokens()
    assert float((logits(pruned, ids) - logits(load_model(tmp_path / "p").model, ids)).abs().max()) <= 1e-6


def test_one_shot_scores_everything_on_the_start_model() -> None:
    model, data = tiny_model("gpt2", layers=4), _data()
    schedule = parse_schedule(
        {
            "version": 1,
            "stages": [
                {
                    "targets": [
                        {"granularity": "layer", "ratio": 0.5},
                        {"granularity": "head", "ratio": 0.5},
                        {"granularity": "channel", "ratio": 0.25},
                    ],
                    "recovery": {"steps": 2, "batch_size": 16},
                }
            ],
        }
    )
    pruned, log = run_cascade(model, schedule, data)
    ad = get_adapter(pruned)
    assert ad.num_layers() == 2 and len(log.stages) == 1
    assert all(ad.attention_shape(i).num_heads == 2 and ad.num_channels(i) == 12 for i in range(2))
    assert log.final_accuracy is None  # no eval data given


@pytest.mark.parametrize("method", METHODS)
def test_methods_share_the_recovery_budget(method: str) -> None:
    schedule, split = method_template(method, total_steps=10)
    assert schedule.total_recovery_steps() == 10
    assert set(split) == {t.granularity for s in schedule.stages for t in s.targets}


def test_unknown_method() -> None:
    with pytest.raises(ScheduleError, match="unknown method 'magic'"):
        method_template("magic", 10)


@pytest.mark.parametrize("target", [1.5, 2.0, 3.0])
def test_compression_target_reached(target: float) -> None:
    model = tiny_model("llama", layers=4)
    template, split = method_template("cascade", 0)
    schedule, achieved = schedule_for_compression(model, target, template, split)
    assert target <= achieved <= target * 1.15
    pruned, log = run_cascade(model, schedule, _data())
    assert log.compression == pytest.approx(achieved)


def test_compression_target_out_of_reach() -> None:
    template, split = method_template("layer-only", 0)
    with pytest.raises(ScheduleError, match=r"50.0x is out of reach for this schedule shape: at most \d"):
        schedule_for_compression(tiny_model("gpt2"), 50.0, template, split)
    with pytest.raises(ScheduleError, match="must be >= 1"):
        schedule_for_compression(tiny_model("gpt2"), 0.5, template, split)


def test_cascade_order_and_recovery_split() -> None:
    schedule, _ = method_template(
        "cascade", 10, cascade_weights=(1, 1, 2), cascade_order=("head", "layer", "channel")
    )
    assert [s.targets[0].granularity for s in schedule.stages] == ["head", "layer", "channel"]
    assert [s.recovery.steps for s in schedule.stages] == [2, 2, 6]
    with pytest.raises(ScheduleError, match="must name layer, head and channel once each"):
        method_template("cascade", 10, cascade_order=("head", "head", "channel"))
