"""Low-rank recovery: LoRA (peft) on every remaining linear map, trained briefly, then merged.

Merging (`merge_and_unload`) before the next stage means the next stage scores the repaired
model with plain Linear/Conv1D weights, so removal and the manifest never see LoRA modules.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Callable

import torch
from torch import nn

from harness.errors import ScheduleError
from harness.models.adapters import get_adapter
from harness.prune.calib import Batch, batch_logits, cycle_batches, distill_loss, task_loss, task_of
from harness.prune.schedule import Recovery

log = logging.getLogger(__name__)


def _with_lora(model: nn.Module, recovery: Recovery, seed: int) -> nn.Module:
    """`model` wrapped (peft) with LoRA adapters on every remaining linear map (and a classifier's head)."""
    from peft import LoraConfig, get_peft_model

    adapter = get_adapter(model)
    targets = adapter.lora_targets() + (["score"] if task_of(model) == "sequence-classification" else [])
    config = LoraConfig(
        r=recovery.rank,
        lora_alpha=recovery.alpha,
        lora_dropout=recovery.dropout,
        target_modules=targets,
        fan_in_fan_out=adapter.lora_fan_in_fan_out,
        bias="none",
    )
    torch.manual_seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return get_peft_model(model, config)


def _warmup_cosine(opt: torch.optim.Optimizer, steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warmup over the first tenth of `steps`, then cosine decay to zero."""
    warmup = max(1, steps // 10)

    def lr_at(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))

    return torch.optim.lr_scheduler.LambdaLR(opt, lr_at)


def _merged(peft_model: nn.Module) -> nn.Module:
    """The LoRA adapters merged into plain weights, in eval mode, every parameter trainable again."""
    merged = peft_model.merge_and_unload()
    merged.eval()
    for p in merged.parameters():
        p.requires_grad_(True)
    return merged


def recover(
    model: nn.Module,
    recovery: Recovery,
    input_ids: torch.Tensor,
    labels: torch.Tensor,
    seed: int = 0,
    on_step: Callable[[int, float], None] | None = None,
    teacher: nn.Module | None = None,
) -> tuple[nn.Module, list[float]]:
    """Train LoRA adapters for `recovery.steps` steps and merge them; returns (merged model, losses).

    With `recovery.loss` `kd` or `mix`, `teacher` (the dense model, same task and vocabulary) supplies
    the soft targets; it is only run forward, never changed.
    """
    if recovery.steps == 0:
        return model, []
    if recovery.uses_teacher and teacher is None:
        raise ScheduleError(
            f"recovery loss {recovery.loss!r} distils from the dense model, but none was given"
        )
    peft_model = _with_lora(model, recovery, seed)
    params = [p for p in peft_model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=recovery.lr, weight_decay=0.0)
    sched = _warmup_cosine(opt, recovery.steps)
    batches = cycle_batches(input_ids, labels, recovery.batch_size, seed)
    losses: list[float] = []
    peft_model.train()
    base = peft_model.get_base_model()
    if teacher is not None:
        teacher.eval()

    def step_loss(batch: Batch) -> torch.Tensor:
        logits = batch_logits(base, batch)
        w = {"ce": 0.0, "kd": 1.0, "mix": recovery.kd_weight}[recovery.loss]
        loss = task_loss(base, batch, logits) * (1.0 - w) if w < 1 else logits.new_zeros(())
        if w > 0 and teacher is not None:
            with torch.no_grad():
                target = batch_logits(teacher, batch)
            loss = loss + w * distill_loss(logits, target, recovery.temperature)
        return loss

    for step in range(recovery.steps):
        loss = step_loss(next(batches))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
        if on_step:
            on_step(step, losses[-1])
    merged = _merged(peft_model)
    log.info(
        "recovery (%s): %d steps, loss %.4f -> %.4f", recovery.loss, recovery.steps, losses[0], losses[-1]
    )
    return merged, losses
