"""Seeded training of a sequence classifier on the demo task, with a rich progress bar."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from transformers import AutoModelForSequenceClassification, PretrainedConfig, PreTrainedModel

from harness.data import ClassificationData
from harness.demo.configs import TrainConfig

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    """What a training run did: the model plus how long and how far it went."""

    model: PreTrainedModel
    steps: int
    train_seconds: float
    final_loss: float  # mean training loss over the last 50 steps
    train_cpu_seconds: float = 0.0  # process CPU time: comparable across machines under contention


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up, then cosine decay to zero."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return cfg.lr * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def train_classifier(
    config: PretrainedConfig,
    data: ClassificationData,
    cfg: TrainConfig,
    *,
    progress: bool = True,
    description: str = "training",
    on_step: Callable[[int, float], None] | None = None,
) -> TrainResult:
    """Build a model from `config` with a fixed seed and train it on `data`; deterministic per seed."""
    torch.manual_seed(cfg.seed)
    model = AutoModelForSequenceClassification.from_config(config)
    model.train()
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.lr,
        betas=(0.9, 0.98),
    )
    gen = torch.Generator().manual_seed(cfg.seed)
    n = len(data.labels)
    order = torch.randperm(n, generator=gen)
    cursor = 0
    recent: list[float] = []
    start, cpu_start = time.perf_counter(), time.process_time()
    bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} loss {task.fields[loss]:.3f}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        disable=not progress,
    )
    with bar:
        task = bar.add_task(description, total=cfg.steps, loss=float("nan"))
        for step in range(cfg.steps):
            if cursor + cfg.batch_size > n:
                order, cursor = torch.randperm(n, generator=gen), 0
            idx = order[cursor : cursor + cfg.batch_size]
            cursor += cfg.batch_size
            for group in opt.param_groups:
                group["lr"] = lr_at(step, cfg)
            logits = model(input_ids=data.input_ids[idx]).logits
            loss = F.cross_entropy(logits, data.labels[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
            recent = (recent + [float(loss.detach())])[-50:]
            bar.update(task, advance=1, loss=sum(recent) / len(recent))
            if (step + 1) % 100 == 0:
                log.info(
                    "%s step %d/%d loss %.4f", description, step + 1, cfg.steps, sum(recent) / len(recent)
                )
            if on_step is not None:
                on_step(step, float(loss.detach()))
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    model.eval()
    final = sum(recent) / len(recent)
    log.info(
        "%s: %d steps in %.1f s (%.1f s CPU), final loss %.4f",
        description,
        cfg.steps,
        seconds,
        cpu_seconds,
        final,
    )
    return TrainResult(
        model=model, steps=cfg.steps, train_seconds=seconds, final_loss=final, train_cpu_seconds=cpu_seconds
    )
