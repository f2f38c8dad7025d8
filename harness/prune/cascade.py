"""The cascade runner: score -> remove -> recover, stage by stage, with a stage-by-stage log.

Every method (cascade, one-shot, layer-only, width-only) is a schedule for this one runner.
Within a stage all targets are scored on the model as it is at the start of the stage, width
removals are applied first and layer removal last (indices stay valid), then LoRA recovery runs.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Protocol

import torch
from pydantic import BaseModel
from torch import nn

from harness.evaluate import evaluate_perplexity
from harness.models.adapters import get_adapter
from harness.prune import criteria
from harness.prune.calib import calibration_batches, mean_batch_loss, task_of
from harness.prune.recovery import recover
from harness.prune.schedule import PruneTarget, Schedule, Stage, check_against_model, noop_targets
from harness.prune.select import apply_attention, apply_channels, apply_layers
from harness.prune.stats import count_parameters, forward_flops

log = logging.getLogger(__name__)
STAGE_LOG_VERSION = 1


class _Data(Protocol):
    input_ids: torch.Tensor
    labels: torch.Tensor


class StageRecord(BaseModel):
    index: int
    targets: list[str]
    params_before: int
    params_after: int
    flops_before: int
    flops_after: int
    calib_loss_before: float
    calib_loss_after_prune: float
    calib_loss_after_recovery: float
    accuracy_after_prune: float | None
    accuracy_after_recovery: float | None
    recovery_steps: int
    recovery_loss: str = "ce"  # ce | kd | mix (harness.prune.schedule.Recovery)
    perplexity_after_prune: float | None = None  # causal LMs, on the evaluation data
    perplexity_after_recovery: float | None = None
    recovery_loss_first: float | None
    recovery_loss_last: float | None
    seconds_scoring: float
    seconds_recovery: float
    seconds_total: float


class StageLog(BaseModel):
    version: Literal[1] = STAGE_LOG_VERSION
    schedule: str
    task: str
    family: str
    seq_len: int
    dense_params: int
    dense_flops: int
    dense_calib_loss: float
    dense_accuracy: float | None
    stages: list[StageRecord]
    final_params: int
    final_flops: int
    final_accuracy: float | None
    compression: float
    seconds_total: float
    dense_perplexity: float | None = None  # causal LMs, on the evaluation data
    final_perplexity: float | None = None
    warnings: list[str] = []


Progress = Callable[[str, int, int], None]  # (what, done, total)


def _accuracy(model: nn.Module, data: _Data | None, batch_size: int = 128) -> float | None:
    if data is None or task_of(model) != "sequence-classification":
        return None
    was = model.training
    model.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, len(data.labels), batch_size):
            ids = data.input_ids[i : i + batch_size]
            out = model(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=False)
            correct += int((out.logits.argmax(-1) == data.labels[i : i + batch_size]).sum())
    model.train(was)
    return correct / max(1, len(data.labels))


def _label(t: PruneTarget) -> str:
    """`granularity:ratio:criterion:scope`, plus `:query_head` when GQA heads are pruned inside groups."""
    unit = ":query_head" if t.granularity == "head" and t.attention_unit == "query_head" else ""
    return f"{t.granularity}:{t.ratio:g}:{t.criterion}:{t.scope}{unit}"


def _perplexity(model: nn.Module, data: _Data | None) -> float | None:
    if data is None or task_of(model) != "causal-lm":
        return None
    return evaluate_perplexity(model, data.input_ids, batch_size=4).perplexity


def validate_for_model(model: nn.Module, schedule: Schedule, warn: bool = True) -> list[str]:
    """Refuse, before any work, a schedule that would empty a layer or the model; returns (and logs as
    warnings) the targets that would remove nothing from this model, each naming why."""
    ad = get_adapter(model)
    n = ad.num_layers()
    heads = [ad.attention_shape(i).num_kv_groups for i in range(n)]
    channels = [ad.num_channels(i) for i in range(n)]
    per_group = min(ad.attention_shape(i).heads_per_group for i in range(n))
    check_against_model(
        schedule, layers=n, heads=heads, channels=channels, gqa=ad.gqa, heads_per_group=per_group
    )
    warnings = noop_targets(schedule, heads, channels, ad.gqa, per_group)
    for w in warnings if warn else []:
        log.warning("%s", w)
    return warnings


def prune_stage(model: nn.Module, stage_targets: list, batches: list, seed: int) -> None:
    """Score every target on the current model, then remove (widths first, layers last)."""
    ad = get_adapter(model)
    crits = {t.granularity: t.criterion for t in stage_targets}
    gradients, head_contrib = criteria.needs(list(crits.values()))
    stats = criteria.collect_stats(ad, batches, gradients=gradients, head_contrib=head_contrib)
    layer_scores = None
    for t in stage_targets:
        if t.granularity == "layer":
            layer_scores = criteria.layer_scores(ad, stats, t.criterion, batches, seed)
    head_scores = chan_scores = None
    for t in stage_targets:
        if t.granularity == "head":
            head_scores = criteria.group_scores(ad, criteria.head_scores(ad, stats, t.criterion, seed))
        elif t.granularity == "channel":
            chan_scores = criteria.channel_scores(ad, stats, t.criterion, seed)
    for t in stage_targets:
        if t.granularity == "head":
            apply_attention(ad, head_scores, t.ratio, t.scope, t.attention_unit)
        elif t.granularity == "channel":
            apply_channels(ad, chan_scores, t.ratio, t.scope)
    for t in stage_targets:
        if t.granularity == "layer":
            apply_layers(ad, layer_scores, t.ratio)


@dataclass
class _CascadeRun:
    """What every stage of one `run_cascade` shares: the data it measures on and the progress so far."""

    schedule: Schedule
    batches: list
    seq_len: int
    eval_data: _Data | None
    rec_data: _Data
    teacher: nn.Module | None
    progress: Progress | None
    total_steps: int
    steps_done: int = 0


def _run_stage(run: _CascadeRun, model: nn.Module, si: int, stage: Stage) -> tuple[nn.Module, StageRecord]:
    """Prune and recover one stage of the schedule, measuring before, after pruning and after recovery."""
    schedule, batches, seq_len, eval_data = run.schedule, run.batches, run.seq_len, run.eval_data
    progress, total_steps, cal = run.progress, run.total_steps, schedule.calibration
    ts = time.perf_counter()
    if progress:
        progress(f"stage {si + 1}/{len(schedule.stages)}: scoring", run.steps_done, total_steps)
    p0, f0 = count_parameters(model), forward_flops(model, seq_len)
    loss0 = mean_batch_loss(model, batches)
    prune_stage(model, stage.targets, batches, cal.seed + si)
    t_score = time.perf_counter() - ts
    loss1 = mean_batch_loss(model, batches)
    acc1 = _accuracy(model, eval_data)
    ppl1 = _perplexity(model, eval_data)

    def on_step(step: int, loss: float, si: int = si, base: int = run.steps_done) -> None:
        if progress:
            progress(
                f"stage {si + 1}/{len(schedule.stages)}: recovery loss {loss:.3f}",
                base + step + 1,
                total_steps,
            )

    tr = time.perf_counter()
    model, losses = recover(
        model,
        stage.recovery,
        run.rec_data.input_ids,
        run.rec_data.labels,
        cal.seed + si,
        on_step,
        run.teacher,
    )
    run.steps_done += stage.recovery.steps
    t_rec = time.perf_counter() - tr
    loss2 = mean_batch_loss(model, batches) if losses else loss1
    acc2 = _accuracy(model, eval_data) if losses else acc1
    ppl2 = _perplexity(model, eval_data) if losses else ppl1
    record = StageRecord(
        index=si,
        targets=[_label(t) for t in stage.targets],
        params_before=p0,
        params_after=count_parameters(model),
        flops_before=f0,
        flops_after=forward_flops(model, seq_len),
        calib_loss_before=loss0,
        calib_loss_after_prune=loss1,
        calib_loss_after_recovery=loss2,
        accuracy_after_prune=acc1,
        accuracy_after_recovery=acc2,
        recovery_steps=stage.recovery.steps,
        recovery_loss=stage.recovery.loss,
        perplexity_after_prune=ppl1,
        perplexity_after_recovery=ppl2,
        recovery_loss_first=losses[0] if losses else None,
        recovery_loss_last=losses[-1] if losses else None,
        seconds_scoring=t_score,
        seconds_recovery=t_rec,
        seconds_total=time.perf_counter() - ts,
    )
    log.info(
        "stage %d: params %d -> %d, loss %.4f -> %.4f -> %.4f",
        si,
        p0,
        record.params_after,
        loss0,
        loss1,
        loss2,
    )
    return model, record


def run_cascade(
    model: nn.Module,
    schedule: Schedule,
    data: _Data,
    *,
    eval_data: _Data | None = None,
    recovery_data: _Data | None = None,
    progress: Progress | None = None,
) -> tuple[nn.Module, StageLog]:
    """Run `schedule` on `model` (modified in place and returned), scoring and recovering on `data`.

    `recovery_data` (default: `data`) is what LoRA trains on. Accuracy (classifiers) or perplexity
    (causal LMs) in the log is measured on `eval_data` (None without it).
    """
    rec_data = recovery_data if recovery_data is not None else data
    warnings = validate_for_model(model, schedule)
    # distillation needs the dense model as it is now: the runner prunes `model` in place
    teacher = copy.deepcopy(model).eval() if schedule.uses_teacher() else None
    t0 = time.perf_counter()
    cal = schedule.calibration
    batches = calibration_batches(data.input_ids, data.labels, cal.batches, cal.batch_size, cal.seed)
    seq_len = int(data.input_ids.shape[1])
    ad = get_adapter(model)
    dense_params, dense_flops = count_parameters(model), forward_flops(model, seq_len)
    dense_loss = mean_batch_loss(model, batches)
    dense_acc = _accuracy(model, eval_data)
    dense_ppl = _perplexity(model, eval_data)
    records: list[StageRecord] = []
    total_steps = max(1, schedule.total_recovery_steps())
    run = _CascadeRun(schedule, batches, seq_len, eval_data, rec_data, teacher, progress, total_steps)
    for si, stage in enumerate(schedule.stages):
        model, record = _run_stage(run, model, si, stage)
        records.append(record)
    final_params = count_parameters(model)
    stage_log = StageLog(
        schedule=schedule.name,
        task=task_of(model),
        family=ad.family,
        seq_len=seq_len,
        dense_params=dense_params,
        dense_flops=dense_flops,
        dense_calib_loss=dense_loss,
        dense_accuracy=dense_acc,
        stages=records,
        final_params=final_params,
        final_flops=forward_flops(model, seq_len),
        final_accuracy=records[-1].accuracy_after_recovery,
        compression=dense_params / final_params,
        seconds_total=time.perf_counter() - t0,
        dense_perplexity=dense_ppl,
        final_perplexity=records[-1].perplexity_after_recovery,
        warnings=warnings,
    )
    return model, stage_log
