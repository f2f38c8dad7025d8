"""Recovery by distillation from the dense model: KL to the teacher falls; bad options are one error."""

from __future__ import annotations

import copy

import pytest
import torch

from harness.errors import ScheduleError
from harness.models import get_adapter
from harness.prune.calib import Batch, batch_logits, distill_loss
from harness.prune.cascade import run_cascade
from harness.prune.job import TokenData
from harness.prune.recovery import recover
from harness.prune.schedule import Recovery, parse_schedule
from tests.unit.prune_tiny import tiny_model, tokens

torch.set_num_threads(1)


def _kl(student: torch.nn.Module, teacher: torch.nn.Module, batch: Batch) -> float:
    with torch.no_grad():
        return float(distill_loss(batch_logits(student, batch), batch_logits(teacher, batch), 1.0))


def _pruned(family: str, task: str) -> tuple[torch.nn.Module, torch.nn.Module]:
    teacher = tiny_model(family, task=task)
    student = copy.deepcopy(teacher)
    ad = get_adapter(student)
    for i in range(ad.num_layers()):
        ad.remove_channels(i, list(range(ad.num_channels(i) // 3)))  # keep a third of every FFN
    return teacher, student


@pytest.mark.parametrize(("family", "task"), [("gpt2", "sequence-classification"), ("llama", "causal-lm")])
@pytest.mark.parametrize("loss", ["kd", "mix"])
def test_distillation_lowers_kl_to_the_teacher(family: str, task: str, loss: str) -> None:
    torch.manual_seed(0)
    teacher, student = _pruned(family, task)
    ids = tokens(n=64, seed=5)
    labels = torch.randint(0, 3, (64,), generator=torch.Generator().manual_seed(6))  # labels are noise
    batch = Batch(ids, labels)
    before = _kl(student, teacher, batch)
    assert before > 1e-3  # pruning moved the student away from the teacher
    rec = Recovery(rank=4, steps=40, lr=1e-2, batch_size=16, loss=loss, temperature=2.0, kd_weight=0.8)
    merged, losses = recover(student, rec, ids, labels, teacher=teacher)
    after = _kl(merged, teacher, batch)
    assert len(losses) == 40
    # mix also fits the (noise) labels, which pulls it away from the teacher: a weaker bound
    assert after < (0.6 if loss == "kd" else 0.9) * before, (before, after)


def test_distillation_beats_label_only_recovery_at_matching_the_teacher() -> None:
    """At equal steps, KD gets closer to the teacher than training on (noisy) labels alone."""
    ids = tokens(n=64, seed=5)
    labels = torch.randint(0, 3, (64,), generator=torch.Generator().manual_seed(6))
    kl = {}
    for loss in ("ce", "kd"):
        torch.manual_seed(0)
        teacher, student = _pruned("gpt2", "sequence-classification")
        rec = Recovery(rank=4, steps=40, lr=1e-2, batch_size=16, loss=loss)
        merged, _ = recover(student, rec, ids, labels, teacher=teacher)
        kl[loss] = _kl(merged, teacher, Batch(ids, labels))
    assert kl["kd"] < kl["ce"], kl


def test_cascade_distils_from_the_dense_model_it_started_with() -> None:
    ids = tokens(n=64, seed=11)
    data = TokenData(ids, ids[:, 0] % 3)
    batch = Batch(ids, data.labels)
    dense = tiny_model("gpt2", layers=4)
    kl = {}
    for steps in (0, 30):
        rec = {"rank": 4, "steps": steps, "lr": 3e-3, "batch_size": 16, "loss": "kd", "temperature": 1.0}
        schedule = parse_schedule(
            {"version": 1, "stages": [{"granularity": "channel", "ratio": 0.2, "recovery": rec}]}
        )
        assert schedule.uses_teacher() == (steps > 0)
        pruned, log = run_cascade(copy.deepcopy(dense), schedule, data)
        assert log.stages[0].recovery_loss == "kd"
        kl[steps] = _kl(pruned, dense, batch)
    assert log.stages[0].recovery_loss_last < log.stages[0].recovery_loss_first
    assert kl[30] < 0.7 * kl[0], kl  # the runner's teacher is the model before pruning


@pytest.mark.parametrize(
    ("recovery", "message"),
    [
        ({"loss": "distill"}, "recovery loss 'distill' is unknown; use ce, kd or mix"),
        ({"loss": "kd", "temperature": 0}, "distillation temperature must be in (0, 100], got 0"),
        ({"loss": "mix", "kd_weight": 1.5}, "kd_weight (share of the distillation loss) must be in [0, 1]"),
    ],
)
def test_bad_distillation_options_are_one_clear_error(recovery: dict, message: str) -> None:
    stage = {"granularity": "channel", "ratio": 0.5, "recovery": {"steps": 5, **recovery}}
    with pytest.raises(ScheduleError) as exc:
        parse_schedule({"version": 1, "stages": [stage]}, "s.json")
    text = str(exc.value)
    assert "\n" not in text and text.startswith("s.json: invalid schedule at stages.0.recovery")
    assert message in text


def test_kd_without_a_teacher_is_refused() -> None:
    model = tiny_model("gpt2")
    with pytest.raises(ScheduleError, match="distils from the dense model"):
        recover(model, Recovery(steps=2, loss="kd"), tokens(n=4), torch.zeros(4).long())
