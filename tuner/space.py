"""The search space: an Optuna trial in, a validated cascade schedule out.

Define-by-run: the number of stages (1..max), each stage's granularity, criterion, LoRA rank and
steps; ratios either searched directly or, for a fixed total compression (e.g. 13.8x), solved from
a searched split between granularities. Stages run coarse to fine unless the order is searched.
Channel widths can be rounded to a hardware multiple so compiled shapes repeat across candidates.

With a fixed compression, `max_cuts > 1` also searches how many stages each granularity is cut in
(`cuts_<g>`, e.g. heads 4 -> 3 -> 2 with recovery between, sharing that slot's steps), and more than
one `recovery_losses` choice searches the recovery loss (`recovery_loss`: ce, kd, mix). Both are
parameters of their own, absent at the defaults, so existing studies resume unchanged (Optuna's
storage refuses a changed choice set for an existing name).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import optuna
from torch import nn

from harness.errors import ScheduleError
from harness.models.adapters import get_adapter
from harness.prune.cascade import validate_for_model
from harness.prune.criteria import SEARCHABLE
from harness.prune.schedule import Schedule, kept_count
from harness.prune.targets import MAX_CUTS, CompressionPlan, schedule_for_compression
from tuner.study_info import StudyInfo

FINENESS = {"layer": 0, "head": 1, "channel": 2}


@dataclass(frozen=True)
class SpaceConfig:
    max_stages: int = 3
    granularities: tuple[str, ...] = ("layer", "head", "channel")
    compression: float | None = None  # fixed total-parameter compression; None searches ratios
    search_order: bool = False
    ratio_low: float = 0.2
    ratio_step: float | None = None  # e.g. 0.05: a grid, so repeated schedules hit the prune cache
    ranks: tuple[int, ...] = (4, 8, 16)
    max_steps: int = 60
    step_size: int = 10
    lr: float = 2e-3
    round_to: int | None = (
        None  # kept FFN widths rounded to this multiple (None: `tune` uses the board's lanes)
    )
    calib_batches: int = 4
    max_cuts: int = 1  # > 1 (with `compression`): search cuts per granularity, 1..max_cuts
    recovery_losses: tuple[str, ...] = ("ce",)  # more than one: search the recovery loss
    # the criterion choices per granularity; fixed when a study is created (`study_criteria`), so a
    # criterion added later never changes a running study's categorical choices
    criteria: dict[str, tuple[str, ...]] = field(default_factory=lambda: dict(SEARCHABLE))

    def __post_init__(self) -> None:
        if not 1 <= self.max_stages <= 4:
            raise ScheduleError(f"max_stages must be 1..4, got {self.max_stages}")
        if self.compression is not None and self.compression < 1:
            raise ScheduleError(f"compression target must be >= 1, got {self.compression}")
        bad = [g for g in self.granularities if g not in FINENESS]
        if bad or not self.granularities:
            raise ScheduleError(
                f"unknown granularity {bad[0] if bad else '(none)'}; use layer, head, channel"
            )
        if not 1 <= self.max_cuts <= MAX_CUTS:
            raise ScheduleError(f"max_cuts must be 1..{MAX_CUTS}, got {self.max_cuts}")
        if self.max_cuts > 1 and self.compression is None:
            raise ScheduleError("max_cuts > 1 needs a fixed compression target (cuts share a solved ratio)")
        unknown = [x for x in self.recovery_losses if x not in ("ce", "kd", "mix")]
        if unknown or not self.recovery_losses:
            raise ScheduleError(
                f"unknown recovery loss {unknown[0] if unknown else '(none)'!r}; use ce, kd or mix"
            )

    def to_dict(self) -> dict:
        return asdict(self)


def _stage_slots(trial: optuna.Trial, cfg: SpaceConfig) -> list[dict]:
    n = trial.suggest_int("n_stages", 1, cfg.max_stages)
    slots = []
    for i in range(n):
        g = trial.suggest_categorical(f"s{i}_granularity", list(cfg.granularities))
        crits = list(cfg.criteria[g])
        slots.append(
            {
                "slot": i,
                "granularity": g,
                "criterion": trial.suggest_categorical(f"s{i}_{g}_criterion", crits),
                "rank": trial.suggest_categorical(f"s{i}_rank", list(cfg.ranks)),
                "steps": trial.suggest_int(f"s{i}_steps", 0, cfg.max_steps, step=cfg.step_size),
                "ratio": None if cfg.compression else trial.suggest_float(f"s{i}_ratio", cfg.ratio_low, 1.0),
            }
        )
    order = "coarse_to_fine"
    if cfg.search_order:
        order = trial.suggest_categorical("order", ["coarse_to_fine", "as_sampled"])
    if order == "coarse_to_fine":
        slots.sort(key=lambda s: (FINENESS[s["granularity"]], s["slot"]))
    return slots


def _schedule(slots: list[dict], cfg: SpaceConfig, name: str, loss: str = "ce") -> Schedule:
    stages = [
        {
            "granularity": s["granularity"],
            "ratio": s["ratio"] if s["ratio"] is not None else 1.0,
            "criterion": s["criterion"],
            "recovery": {
                "rank": s["rank"],
                "alpha": 2.0 * s["rank"],
                "steps": s["steps"],
                "lr": cfg.lr,
                "loss": loss,
            },
        }
        for s in slots
    ]
    return Schedule.model_validate(
        {"version": 1, "name": name, "stages": stages, "calibration": {"batches": cfg.calib_batches}}
    )


def round_channel_widths(schedule: Schedule, dense_widths: list[int], multiple: int) -> Schedule:
    """Adjust per-layer channel ratios so every kept FFN width is a multiple of `multiple`."""
    data = schedule.model_dump()
    width = min(dense_widths)
    for stage in data["stages"]:
        for t in stage["targets"]:
            if t["granularity"] != "channel" or t["scope"] != "per_layer":
                continue
            k = kept_count(t["ratio"], width)
            k = max(multiple, int(round(k / multiple)) * multiple)
            k = min(k, width)
            t["ratio"] = k / width
            width = k
    return Schedule.model_validate(data)


def suggest_schedule(trial: optuna.Trial, cfg: SpaceConfig, model: nn.Module) -> Schedule:
    """A schedule for this trial (raises ScheduleError when the sampled shape cannot be realised)."""
    slots = _stage_slots(trial, cfg)
    name = f"trial-{trial.number}"
    loss = "ce"
    if len(cfg.recovery_losses) > 1:
        loss = trial.suggest_categorical("recovery_loss", list(cfg.recovery_losses))
    elif cfg.recovery_losses:
        loss = cfg.recovery_losses[0]
    schedule = _schedule(slots, cfg, name, loss)
    if cfg.compression:
        present = sorted({s["granularity"] for s in slots}, key=FINENESS.get)
        split = {g: trial.suggest_float(f"split_{g}", 0.25, 4.0, log=True) for g in present}
        cuts = {}
        if cfg.max_cuts > 1:
            cuts = {g: trial.suggest_int(f"cuts_{g}", 1, cfg.max_cuts) for g in present}
        plan = CompressionPlan(split=split, cuts=cuts)
        schedule, achieved = schedule_for_compression(model, cfg.compression, schedule, plan=plan)
        trial.set_user_attr("compression_planned", achieved)
    if cfg.round_to:
        ad = get_adapter(model)
        schedule = round_channel_widths(
            schedule, [ad.num_channels(i) for i in range(ad.num_layers())], cfg.round_to
        )
    validate_for_model(model, schedule)  # a later stage that would empty a layer: rejected before any work
    return schedule


def study_criteria(study: optuna.Study) -> dict[str, tuple[str, ...]]:
    """The criterion choices this study searches: recorded at creation, read back from an older
    study's trials, or (a new study) the criteria installed now."""
    recorded = StudyInfo.of(study).criteria
    if recorded is not None:
        return {g: tuple(v) for g, v in recorded.items()}
    found: dict[str, tuple[str, ...]] = {}
    for t in study.get_trials(deepcopy=False):
        for name, dist in t.distributions.items():
            parts = name.split("_")
            if (
                len(parts) == 3
                and parts[2] == "criterion"
                and isinstance(dist, optuna.distributions.CategoricalDistribution)
            ):
                found[parts[1]] = tuple(str(c) for c in dist.choices)
    criteria = {**dict(SEARCHABLE), **found}
    StudyInfo.put(study, criteria={g: list(v) for g, v in criteria.items()})
    return criteria
