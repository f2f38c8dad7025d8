"""Schedules: parsing, every invalid case rejected with its message, and checks against a model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.errors import ScheduleError
from harness.prune.cascade import validate_for_model
from harness.prune.schedule import load_schedule, parse_schedule
from tests.unit.prune_tiny import tiny_model


def _sched(*stages: dict, **extra) -> dict:
    return {"version": 1, "stages": list(stages), **extra}


def test_flat_and_multi_target_stages() -> None:
    s = parse_schedule(
        _sched(
            {"granularity": "layer", "ratio": 0.5, "recovery": {"steps": 3, "rank": 4}},
            {"targets": [{"granularity": "head", "ratio": 0.5}, {"granularity": "channel", "ratio": 0.25}]},
        )
    )
    assert s.stages[0].targets[0].criterion == "block_influence"
    assert s.stages[1].targets[0].criterion == "taylor" and s.stages[1].targets[1].criterion == "wanda"
    assert s.stages[1].recovery.steps == 0
    assert s.total_recovery_steps() == 3
    again = parse_schedule(json.loads(s.model_dump_json()))
    assert again == s


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"stages": []}, "has no `version` field"),
        (_sched({"granularity": "layer", "ratio": 0.5}, version=2), "version 2 is not supported"),
        (_sched(), "needs at least one stage"),
        (
            _sched({"granularity": "block", "ratio": 0.5}),
            "stages.0.targets.0.granularity: unknown granularity 'block'",
        ),
        (_sched({"granularity": "head", "ratio": 0.0}), "ratio 0.0 is outside \\(0, 1\\]"),
        (_sched({"granularity": "head", "ratio": 1.5}), "ratio 1.5 is outside \\(0, 1\\]"),
        (
            _sched({"granularity": "layer", "ratio": 0.5, "criterion": "wanda"}),
            "'wanda' does not apply to layer",
        ),
        (_sched({"granularity": "head", "ratio": 0.5, "recovery": {"rank": 0}}), "LoRA rank must be >= 1"),
        (_sched({"granularity": "head", "ratio": 0.5, "recovery": {"steps": -1}}), "steps must be >= 0"),
        (_sched({"granularity": "head", "ratio": 0.5, "recovery": {"lr": 2.0}}), "learning rate must be in"),
        (_sched({"granularity": "head", "ratio": 0.5, "recovery": {"alpha": 0}}), "alpha must be > 0"),
        (
            _sched({"granularity": "head", "ratio": 0.5, "recovery": {"batch_size": 0}}),
            "batch_size must be >= 1",
        ),
        (_sched({"granularity": "head", "ratio": 0.5, "extra": 1}), "extra: Extra inputs are not permitted"),
        (
            _sched(
                {"targets": [{"granularity": "head", "ratio": 0.5}, {"granularity": "head", "ratio": 0.5}]}
            ),
            "each granularity at most once",
        ),
        (_sched({"granularity": "head", "ratio": 0.5, "scope": "everywhere"}), "scope"),
    ],
)
def test_invalid_schedules_rejected(data: dict, message: str) -> None:
    with pytest.raises(ScheduleError, match=message):
        parse_schedule(data, "s.json")


def test_load_schedule_file_errors(tmp_path: Path) -> None:
    with pytest.raises(ScheduleError, match="cannot read schedule"):
        load_schedule(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(ScheduleError, match="not valid JSON"):
        load_schedule(tmp_path / "bad.json")
    (tmp_path / "ok.json").write_text(json.dumps(_sched({"granularity": "channel", "ratio": 0.5})))
    assert load_schedule(tmp_path / "ok.json").stages[0].targets[0].granularity == "channel"


@pytest.mark.parametrize(
    ("family", "stage", "message"),
    [
        ("gpt2", {"granularity": "layer", "ratio": 0.1}, "would remove every one of 3 layers"),
        ("gpt2", {"granularity": "head", "ratio": 0.1}, "would remove every head of a layer"),
        ("llama", {"granularity": "head", "ratio": 0.2}, "would remove every KV group"),
        ("llama", {"granularity": "head", "ratio": 0.1, "attention_unit": "query_head"}, "every query head"),
        ("gpt2", {"granularity": "channel", "ratio": 0.001}, "would remove every FFN channel"),
        ("gpt2", {"granularity": "channel", "ratio": 0.01, "scope": "global"}, "every FFN channel"),
    ],
)
def test_schedule_that_empties_the_model_rejected(family: str, stage: dict, message: str) -> None:
    with pytest.raises(ScheduleError, match=message):
        validate_for_model(tiny_model(family), parse_schedule(_sched(stage)))


def test_later_stage_checked_against_earlier_ones() -> None:
    ok = parse_schedule(_sched({"granularity": "head", "ratio": 0.5}))
    validate_for_model(tiny_model("gpt2"), ok)
    two = parse_schedule(_sched({"granularity": "head", "ratio": 0.5}, {"granularity": "head", "ratio": 0.2}))
    with pytest.raises(ScheduleError, match="stage 1: head ratio 0.2"):
        validate_for_model(tiny_model("gpt2"), two)
