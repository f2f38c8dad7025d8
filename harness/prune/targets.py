"""Compression targets: turn "13.8x fewer parameters" plus a schedule shape into per-stage ratios.

The shape is a template schedule (order, criteria, scopes, recovery) and a relative split between
granularities: kept fraction r_g = s ** w_g for one shared s in (0, 1]. The parameter count of a
candidate is measured exactly by pruning a copy with the template's own selection rules (unit
sizes do not depend on which units go), and s is found by bisection: the largest s whose model is
at least `target` times smaller than the dense one.

Two more options shape the budget and order (`CompressionPlan`): `cuts` cuts one granularity in
several stages (heads 4 -> 3 -> 2, importance re-estimated on the recovered model each time; the
granularity's kept fraction is split geometrically over its stages), and `recovery_steps` gives
each stage of the result its own recovery steps (or a total spread over the stages).
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from harness.errors import ScheduleError
from harness.models.adapters import get_adapter
from harness.models.manifest import build_from_manifest, build_manifest, count_parameters
from harness.prune.cascade import validate_for_model
from harness.prune.schedule import Schedule
from harness.prune.select import apply_attention, apply_channels, apply_layers

log = logging.getLogger(__name__)


def _with_ratios(template: Schedule, ratios: dict[str, float]) -> Schedule:
    """Give every target its granularity's ratio, split evenly (geometrically) over repeated stages."""
    counts: dict[str, int] = {}
    for stage in template.stages:
        for t in stage.targets:
            counts[t.granularity] = counts.get(t.granularity, 0) + 1
    data = template.model_dump()
    for stage in data["stages"]:
        for t in stage["targets"]:
            g = t["granularity"]
            t["ratio"] = min(1.0, max(1e-9, ratios.get(g, 1.0) ** (1.0 / counts[g])))
    return Schedule.model_validate(data)


GRANULARITIES = ("layer", "head", "channel")
MAX_CUTS = 8


@dataclass(frozen=True)
class CompressionPlan:
    """How a total compression is reached (every field optional; the defaults are the template as is).

    split: relative weight per granularity (larger = that granularity carries more of the compression).
    cuts: stages per granularity; a template stage pruning only that granularity becomes `cuts`
        consecutive stages sharing its recovery steps (so the total budget is unchanged).
    recovery_steps: per-stage steps of the resulting schedule (one per stage), or one total spread
        evenly over the stages (the remainder to the last ones).
    """

    split: dict[str, float] | None = None
    cuts: dict[str, int] = field(default_factory=dict)
    recovery_steps: int | Sequence[int] | None = None


def _spread(total: int, n: int) -> list[int]:
    base, extra = divmod(total, n)
    return [base + (1 if i >= n - extra else 0) for i in range(n)]


def expand_cuts(template: Schedule, cuts: dict[str, int]) -> Schedule:
    """Cut each granularity named in `cuts` in that many consecutive stages (steps shared between them)."""
    present = {t.granularity for s in template.stages for t in s.targets}
    for g, n in cuts.items():
        if g not in GRANULARITIES:
            raise ScheduleError(f"cuts name {g!r}; use layer, head or channel")
        if g not in present:
            raise ScheduleError(f"cuts name {g}, which no stage of schedule {template.name!r} prunes")
        if not isinstance(n, int) or not 1 <= n <= MAX_CUTS:
            raise ScheduleError(f"cuts for {g} must be an integer in 1..{MAX_CUTS}, got {n!r}")
        mixed = [
            i
            for i, s in enumerate(template.stages)
            if len(s.targets) > 1 and g in {t.granularity for t in s.targets}
        ]
        if mixed and n > 1:
            raise ScheduleError(
                f"cuts for {g}: stage {mixed[0]} prunes {g} together with other granularities; "
                "only a stage that prunes one granularity can be cut in steps"
            )
    data = template.model_dump()
    stages: list[dict] = []
    for stage in data["stages"]:
        g = stage["targets"][0]["granularity"]
        n = cuts.get(g, 1) if len(stage["targets"]) == 1 else 1
        for steps in _spread(stage["recovery"]["steps"], n):
            stages.append({**copy.deepcopy(stage), "recovery": {**stage["recovery"], "steps": steps}})
    data["stages"] = stages
    return Schedule.model_validate(data)


def with_recovery_steps(schedule: Schedule, steps: int | Sequence[int]) -> Schedule:
    """The schedule with per-stage recovery steps (a list, one per stage) or a total spread over stages."""
    n = len(schedule.stages)
    per = _spread(steps, n) if isinstance(steps, int) else list(steps)
    if len(per) != n:
        raise ScheduleError(f"recovery steps name {len(per)} stages, but the schedule has {n}")
    bad = [v for v in per if not isinstance(v, int) or v < 0]
    if bad:
        raise ScheduleError(f"recovery steps must be integers >= 0, got {bad[0]!r}")
    data = schedule.model_dump()
    for stage, v in zip(data["stages"], per, strict=True):
        stage["recovery"]["steps"] = v
    return Schedule.model_validate(data)


def shape_twin(model: nn.Module) -> nn.Module:
    """A weightless (meta-device) model of the same structure: cheap to copy and prune."""
    task = (
        "sequence-classification"
        if type(model).__name__.endswith("ForSequenceClassification")
        else "causal-lm"
    )
    with torch.device("meta"):
        return build_from_manifest(build_manifest(model, task))


def _floors(model: nn.Module) -> dict[str, float]:
    """Smallest kept fraction per granularity that still leaves one unit (of the dense counts)."""
    ad = get_adapter(model)
    n = ad.num_layers()
    return {
        "layer": 1.0 / n,
        "head": 1.0 / min(ad.attention_shape(i).num_kv_groups for i in range(n)),
        "channel": 1.0 / min(ad.num_channels(i) for i in range(n)),
    }


def simulate_params(model: nn.Module, schedule: Schedule) -> int:
    """Parameters after running the schedule's removals (no scoring, no recovery) on a copy."""
    sim = copy.deepcopy(model)
    ad = get_adapter(sim)
    for stage in schedule.stages:
        n = ad.num_layers()
        for t in stage.targets:
            if t.granularity == "head":
                zeros = [
                    torch.zeros(ad.attention_shape(i).num_kv_groups, ad.attention_shape(i).heads_per_group)
                    for i in range(n)
                ]
                apply_attention(ad, zeros, t.ratio, t.scope, t.attention_unit)
            elif t.granularity == "channel":
                apply_channels(ad, [torch.zeros(ad.num_channels(i)) for i in range(n)], t.ratio, t.scope)
        for t in stage.targets:
            if t.granularity == "layer":
                apply_layers(ad, torch.zeros(n), t.ratio)
    return count_parameters(sim)


def _largest(fits, lo: float, hi: float, iters: int = 20) -> float:
    """Largest x in [lo, hi] with fits(x), assuming fits(lo) and monotonicity."""
    if fits(hi):
        return hi
    for _ in range(iters):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid)
    return lo


def schedule_for_compression(
    model: nn.Module,
    target: float,
    template: Schedule,
    split: dict[str, float] | None = None,
    *,
    plan: CompressionPlan | None = None,
) -> tuple[Schedule, float]:
    """The template with ratios reaching `target`x fewer parameters; returns (schedule, achieved x).

    The result is at least `target`x smaller. Integer unit counts make the shared-s solution
    overshoot (a layer is a big step), so the finest granularity is then re-solved alone to land
    as close to the target as its unit size allows. `plan` (cuts, per-stage recovery steps, and a
    split that overrides `split`) reshapes the template first.
    """
    if target < 1:
        raise ScheduleError(f"compression target must be >= 1, got {target}")
    if plan is not None:
        template = expand_cuts(template, plan.cuts) if plan.cuts else template
        if plan.recovery_steps is not None:
            template = with_recovery_steps(template, plan.recovery_steps)
        split = plan.split if plan.split is not None else split
    grans = [
        g
        for g in ("layer", "head", "channel")
        if any(t.granularity == g for s in template.stages for t in s.targets)
    ]
    split = split or dict.fromkeys(grans, 1.0)
    unknown = [g for g in split if g not in grans]
    if unknown:
        raise ScheduleError(
            f"split names {unknown[0]!r}, which the schedule does not prune (it prunes {grans})"
        )
    if any(split.get(g, 0) <= 0 for g in grans):
        raise ScheduleError(
            f"split {split} needs a positive weight for every granularity in the schedule {grans}"
        )
    dense = count_parameters(model)
    budget = dense / target
    floors = _floors(model)
    twin = shape_twin(model)

    def ratios(s: float) -> dict[str, float]:
        # a granularity at its floor stops shrinking; the others carry the rest of the compression
        return {g: max(s ** split[g], floors[g]) for g in grans}

    def fits(r: dict[str, float]) -> bool:
        return simulate_params(twin, _with_ratios(template, r)) <= budget

    lowest = simulate_params(twin, _with_ratios(template, ratios(0.0)))
    if lowest > budget:
        raise ScheduleError(
            f"{target}x is out of reach for this schedule shape: at most {dense / lowest:.2f}x "
            f"(one unit of each granularity left)"
        )
    chosen = ratios(_largest(lambda s: fits(ratios(s)), 0.0, 1.0))
    fine = grans[-1]
    if len(grans) > 1:
        chosen[fine] = _largest(lambda r: fits({**chosen, fine: r}), floors[fine], 1.0)
    best = _with_ratios(template, chosen)
    try:
        validate_for_model(model, best)
    except ScheduleError as exc:
        raise ScheduleError(f"{target}x is out of reach for this schedule shape: {exc}") from exc
    achieved = dense / simulate_params(twin, best)
    log.info("compression %.2fx: ratios %s achieved %.2fx", target, chosen, achieved)
    return best, achieved
