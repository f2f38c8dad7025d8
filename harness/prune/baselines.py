"""Methods as schedules: cascade and the baselines differ only in the schedule the runner gets.

All methods get the same total recovery budget (steps), so accuracy differences come from what
was removed and when importance was estimated, not from more training.
"""

from __future__ import annotations

from harness.errors import ScheduleError
from harness.prune.schedule import Schedule, parse_schedule

METHODS = ("cascade", "one-shot", "layer-only", "width-flap", "width-taylor")


def _recovery(steps: int, rank: int, lr: float, batch_size: int) -> dict:
    return {"rank": rank, "alpha": 2.0 * rank, "steps": steps, "lr": lr, "batch_size": batch_size}


def method_template(
    method: str,
    total_steps: int,
    *,
    rank: int = 8,
    lr: float = 2e-3,
    batch_size: int = 32,
    calib_batches: int = 4,
    layer_criterion: str = "block_influence",
    head_criterion: str = "taylor",
    channel_criterion: str = "taylor",
    head_scope: str = "per_layer",
    cascade_weights: tuple[float, float, float] = (1.0, 1.0, 1.0),
    cascade_order: tuple[str, str, str] = ("layer", "head", "channel"),
    cascade_split: dict[str, float] | None = None,
    recovery_loss: str = "ce",
    temperature: float = 2.0,
    kd_weight: float = 0.5,
) -> tuple[Schedule, dict[str, float]]:
    """A schedule template (ratios are placeholders) and its split between granularities.

    `cascade_weights` divides the cascade's recovery budget between its three stages, which run in
    `cascade_order` (coarse to fine by default, as in the paper); `cascade_split` is how the total
    compression is shared between layer, head and channel (equal by default). `recovery_loss`
    (`ce` | `kd` | `mix`) applies to every method's recovery.
    """

    def rec(steps: int) -> dict:
        out = _recovery(steps, rank, lr, batch_size)
        return {**out, "loss": recovery_loss, "temperature": temperature, "kd_weight": kd_weight}

    layer = {"granularity": "layer", "ratio": 1.0, "criterion": layer_criterion}
    head = {"granularity": "head", "ratio": 1.0, "criterion": head_criterion, "scope": head_scope}
    channel = {"granularity": "channel", "ratio": 1.0, "criterion": channel_criterion}
    if method == "cascade":
        total_w = sum(cascade_weights)
        steps = [int(total_steps * w / total_w) for w in cascade_weights]
        steps[-1] += total_steps - sum(steps)
        by_name = {"layer": layer, "head": head, "channel": channel}
        if sorted(cascade_order) != sorted(by_name):
            raise ScheduleError(f"cascade order {cascade_order} must name layer, head and channel once each")
        stages = [dict(by_name[g], recovery=rec(s)) for g, s in zip(cascade_order, steps, strict=True)]
        split = {"layer": 1.0, "head": 1.0, "channel": 1.0, **(cascade_split or {})}
    elif method == "one-shot":
        stages = [{"targets": [layer, head, channel], "recovery": rec(total_steps)}]
        split = {"layer": 1.0, "head": 1.0, "channel": 1.0}
    elif method == "layer-only":
        stages = [dict(layer, criterion="block_influence", recovery=rec(total_steps))]
        split = {"layer": 1.0}
    elif method == "width-flap":
        targets = [
            dict(head, criterion="flap", scope="global"),
            dict(channel, criterion="flap", scope="global"),
        ]
        stages = [{"targets": targets, "recovery": rec(total_steps)}]
        split = {"head": 1.0, "channel": 1.0}
    elif method == "width-taylor":
        targets = [dict(head, criterion="taylor"), dict(channel, criterion="taylor")]
        stages = [{"targets": targets, "recovery": rec(total_steps)}]
        split = {"head": 1.0, "channel": 1.0}
    else:
        raise ScheduleError(f"unknown method {method!r}; use one of: {', '.join(METHODS)}")
    schedule = parse_schedule(
        {"version": 1, "name": method, "stages": stages, "calibration": {"batches": calib_batches}},
        f"{method} template",
    )
    return schedule, split
