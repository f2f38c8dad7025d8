"""Cascade schedules: versioned JSON, validated (statically and against a model) before any work.

A stage prunes one or more granularities (scored together on the model as it is at the start of the
stage, removed together), then recovers with LoRA. `ratio` is the fraction of the stage's units that
remain, relative to the count at the start of that stage. A flat stage
`{"granularity": ..., "ratio": ..., "criterion": ...}` is shorthand for one target.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from harness.errors import ScheduleError
from harness.prune.criteria import CRITERIA, DEFAULT_CRITERION

SCHEDULE_VERSION = 1
Granularity = Literal["layer", "head", "channel"]


class PruneTarget(BaseModel):
    """What one stage removes at one granularity."""

    model_config = ConfigDict(extra="forbid")

    granularity: str
    ratio: float = Field(description="fraction of units that remain, in (0, 1]")
    criterion: str | None = None
    scope: Literal["global", "per_layer"] = "per_layer"
    attention_unit: Literal["kv_group", "query_head"] = "kv_group"

    @field_validator("granularity")
    @classmethod
    def _gran(cls, v: str) -> str:
        if v not in CRITERIA:
            raise ValueError(f"unknown granularity {v!r}; use one of: {', '.join(CRITERIA)}")
        return v

    @field_validator("ratio")
    @classmethod
    def _ratio(cls, v: float) -> float:
        if not 0.0 < v <= 1.0:
            raise ValueError(f"ratio {v} is outside (0, 1]: it is the fraction of units that remain")
        return v

    @model_validator(mode="after")
    def _criterion(self) -> PruneTarget:
        if self.criterion is None:
            self.criterion = DEFAULT_CRITERION[self.granularity]
        if self.criterion not in CRITERIA[self.granularity]:
            raise ValueError(
                f"criterion {self.criterion!r} does not apply to {self.granularity}; "
                f"use one of: {', '.join(CRITERIA[self.granularity])}"
            )
        return self


RecoveryLoss = Literal["ce", "kd", "mix"]


class Recovery(BaseModel):
    """LoRA recovery after a stage; `steps == 0` skips it.

    `loss` picks what LoRA trains on: `ce` the task labels (class or next token), `kd` the dense
    teacher's logits only (KL at `temperature`, per token for causal LMs), `mix` both:
    `(1 - kd_weight) * ce + kd_weight * kd`. The teacher knows what the removed units did, which
    the labels alone do not say.
    """

    model_config = ConfigDict(extra="forbid")

    rank: int = 8
    alpha: float = 16.0
    steps: int = 0
    lr: float = 1e-3
    batch_size: int = 32
    dropout: float = 0.0
    loss: RecoveryLoss = "ce"
    temperature: float = 2.0
    kd_weight: float = 0.5

    @field_validator("loss", mode="before")
    @classmethod
    def _loss(cls, v: Any) -> Any:
        if v not in ("ce", "kd", "mix"):
            raise ValueError(f"recovery loss {v!r} is unknown; use ce, kd or mix")
        return v

    @model_validator(mode="after")
    def _check(self) -> Recovery:
        if self.rank < 1:
            raise ValueError(f"LoRA rank must be >= 1, got {self.rank}")
        if self.alpha <= 0:
            raise ValueError(f"LoRA alpha must be > 0, got {self.alpha}")
        if self.steps < 0:
            raise ValueError(f"recovery steps must be >= 0, got {self.steps}")
        if not 0 < self.lr < 1:
            raise ValueError(f"LoRA learning rate must be in (0, 1), got {self.lr}")
        if self.batch_size < 1:
            raise ValueError(f"recovery batch_size must be >= 1, got {self.batch_size}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"LoRA dropout must be in [0, 1), got {self.dropout}")
        if not 0 < self.temperature <= 100:
            raise ValueError(f"distillation temperature must be in (0, 100], got {self.temperature}")
        if not 0 <= self.kd_weight <= 1:
            raise ValueError(
                f"kd_weight (share of the distillation loss) must be in [0, 1], got {self.kd_weight}"
            )
        return self

    @property
    def uses_teacher(self) -> bool:
        return self.steps > 0 and (self.loss == "kd" or (self.loss == "mix" and self.kd_weight > 0))


class Stage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    targets: list[PruneTarget]
    recovery: Recovery = Field(default_factory=Recovery)

    @model_validator(mode="before")
    @classmethod
    def _flat(cls, data: Any) -> Any:
        if isinstance(data, dict) and "granularity" in data:
            data = dict(data)
            target = {k: data.pop(k) for k in list(data) if k in PruneTarget.model_fields}
            data["targets"] = [target]
        return data

    @model_validator(mode="after")
    def _distinct(self) -> Stage:
        if not self.targets:
            raise ValueError("a stage needs at least one target")
        grans = [t.granularity for t in self.targets]
        if len(set(grans)) != len(grans):
            raise ValueError(f"a stage prunes each granularity at most once, got {grans}")
        return self


class Calibration(BaseModel):
    """How much calibration data scoring uses."""

    model_config = ConfigDict(extra="forbid")

    batches: int = Field(default=4, ge=1)
    batch_size: int = Field(default=32, ge=1)
    seed: int = 0


class Schedule(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: Literal[1] = SCHEDULE_VERSION
    name: str = "schedule"
    stages: list[Stage]
    calibration: Calibration = Field(default_factory=Calibration)

    @field_validator("stages")
    @classmethod
    def _nonempty(cls, v: list[Stage]) -> list[Stage]:
        if not v:
            raise ValueError("a schedule needs at least one stage")
        return v

    def total_recovery_steps(self) -> int:
        return sum(s.recovery.steps for s in self.stages)

    def uses_teacher(self) -> bool:
        """Whether any stage distils from the dense model (the runner then keeps a copy of it)."""
        return any(s.recovery.uses_teacher for s in self.stages)


def _first_error(exc: ValidationError, source: str) -> ScheduleError:
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err["loc"]) or "top level"
    msg = err["msg"].removeprefix("Value error, ")
    return ScheduleError(f"{source}: invalid schedule at {where}: {msg}")


def parse_schedule(data: Any, source: str = "schedule") -> Schedule:
    """Validate a schedule from parsed JSON; the error names the first bad field."""
    if isinstance(data, dict) and "version" not in data:
        raise ScheduleError(
            f"{source}: schedule has no `version` field (current version is {SCHEDULE_VERSION})"
        )
    if isinstance(data, dict) and data.get("version") != SCHEDULE_VERSION:
        raise ScheduleError(
            f"{source}: schedule version {data.get('version')!r} is not supported "
            f"(expected {SCHEDULE_VERSION})"
        )
    try:
        return Schedule.model_validate(data)
    except ValidationError as exc:
        raise _first_error(exc, source) from exc


def load_schedule(path: str | Path) -> Schedule:
    path = Path(path)
    try:
        text = path.read_bytes()
    except OSError as exc:
        raise ScheduleError(f"cannot read schedule {path}: {exc.strerror or exc}") from exc
    try:
        data = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ScheduleError(f"{path}: schedule is not valid JSON ({exc})") from exc
    return parse_schedule(data, str(path))


def save_schedule(schedule: Schedule, path: str | Path) -> None:
    Path(path).write_text(schedule.model_dump_json(indent=2) + "\n")


def kept_count(ratio: float, n: int) -> int:
    """Units kept out of n at a ratio (rounded; 0 means the stage would remove everything)."""
    return int(round(ratio * n + 1e-9))


def check_against_model(
    schedule: Schedule,
    layers: int,
    heads: list[int],
    channels: list[int],
    gqa: bool,
    heads_per_group: int = 1,
) -> None:
    """Simulate unit counts stage by stage; refuse a stage that would remove every unit of a kind.

    `heads` are per-layer attention units (KV groups for GQA), `channels` per-layer FFN widths,
    `heads_per_group` the query heads per KV group (GQA).
    """
    n_layers, min_heads, min_ch = layers, min(heads), min(channels)
    total_heads, total_ch = sum(heads), sum(channels)
    for i, stage in enumerate(schedule.stages):
        for t in stage.targets:
            if t.granularity == "layer":
                k = kept_count(t.ratio, n_layers)
                if k == 0:
                    raise ScheduleError(
                        f"stage {i}: layer ratio {t.ratio} would remove every one of {n_layers} layers"
                    )
                total_heads = round(total_heads * k / n_layers)
                total_ch = round(total_ch * k / n_layers)
                n_layers = k
                continue
            if t.granularity == "head" and gqa and t.attention_unit == "query_head":
                k = kept_count(t.ratio, heads_per_group)
                if k == 0:
                    raise ScheduleError(
                        f"stage {i}: head ratio {t.ratio} (query_head) would remove every query head "
                        f"of a KV group ({heads_per_group} per group now)"
                    )
                heads_per_group = k
                continue
            per, total = (min_heads, total_heads) if t.granularity == "head" else (min_ch, total_ch)
            what = ("KV group" if gqa else "head") if t.granularity == "head" else "FFN channel"
            k = kept_count(t.ratio, per if t.scope == "per_layer" else total)
            if k == 0 or (t.scope == "global" and k < n_layers):
                raise ScheduleError(
                    f"stage {i}: {t.granularity} ratio {t.ratio} ({t.scope}) would remove every {what} "
                    f"of a layer ({per} per layer now)"
                )
            new_per, new_total = (k, k * n_layers) if t.scope == "per_layer" else (max(1, k // n_layers), k)
            if t.granularity == "head":
                min_heads, total_heads = min(per, new_per), new_total
            else:
                min_ch, total_ch = min(per, new_per), new_total


def noop_targets(
    schedule: Schedule,
    heads: list[int],
    channels: list[int],
    gqa: bool,
    heads_per_group: int = 1,
) -> list[str]:
    """One message per target that would remove nothing from the model, naming why.

    `heads` are per-layer attention units (KV groups for GQA), `channels` per-layer FFN widths. Counts
    are simulated stage by stage (layer removal keeps the first layers' counts: they are uniform in the
    models hilt prunes, and exact ones are unknown before scoring).
    """
    heads, channels = list(heads), list(channels)
    messages: list[str] = []

    def note(i: int, t: PruneTarget, why: str) -> None:
        unit = f" ({t.attention_unit})" if t.granularity == "head" and gqa else ""
        messages.append(f"stage {i}: {t.granularity} ratio {t.ratio:g}{unit} removes nothing: {why}")

    for i, stage in enumerate(schedule.stages):
        for t in stage.targets:
            if t.granularity == "layer":
                n = len(heads)
                k = kept_count(t.ratio, n)
                if k == n:
                    note(i, t, f"round({t.ratio:g} x {n} layers) = {k} keeps every layer")
                heads, channels = heads[:k], channels[:k]
                continue
            if t.granularity == "head" and gqa and t.attention_unit == "query_head":
                k = kept_count(t.ratio, heads_per_group)
                if k == heads_per_group:
                    note(
                        i,
                        t,
                        f"round({t.ratio:g} x {heads_per_group} query heads per group) = {k} keeps them all",
                    )
                heads_per_group = max(1, k)
                continue
            counts = heads if t.granularity == "head" else channels
            what = ("KV groups" if gqa else "heads") if t.granularity == "head" else "FFN channels"
            if t.scope == "global":
                total = sum(counts)
                k = max(len(counts), kept_count(t.ratio, total))
                new = [max(1, round(c * k / total)) for c in counts]
                if k >= total:
                    note(i, t, f"round({t.ratio:g} x {total} {what} in all) = {k} keeps them all")
            else:
                new = [max(1, kept_count(t.ratio, c)) for c in counts]
                if new == counts:
                    sizes = sorted(set(counts))
                    per = f"{sizes[0]}" if len(sizes) == 1 else f"{sizes[0]}..{sizes[-1]}"
                    why = f"every layer has {per} {what} and round({t.ratio:g} x that) keeps them all"
                    if t.granularity == "head" and gqa and sizes == [1]:
                        why += (
                            f" (one KV head per layer: prune query heads inside it with "
                            f'"attention_unit": "query_head", {heads_per_group} per group now)'
                        )
                    note(i, t, why)
            if t.granularity == "head":
                heads = new
            else:
                channels = new
    return messages
