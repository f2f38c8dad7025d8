"""Thresholds that turn SIA metrics into holds / violated per ratio, and the predictable horizon.

Two rules (`Thresholds.rule`). `rank` (the default) asks what SIA is for, whether per-unit scores
can be trusted to *choose* what to remove:
- rank agreement: Spearman, over random subsets, between the sum of single-removal losses and the
  measured loss of removing the subset together, at least `additivity_spearman_min` (0.5);
- choice: the criterion's chosen subset (its lowest-ranked units) costs no more than random subsets of
  the same size: the share of random subsets it beats is at least `beats_random_min` (0.5);
- rank stability (Kendall, below) at least `stability_min` where there are enough survivors to rank.
A ratio where the criterion's own choice costs at most `harmless_fraction` (5%) of what the model
gained over chance (chance loss - base loss; ln(classes) for a classifier, ln(vocabulary) for a
causal LM) holds whatever the ranks say: that schedule breaks little of what was learned, and single
removals far below the noise (FFN channel groups of the demo models) make rank agreement
meaningless there. An untrained model has gained nothing, so nothing is harmless on it. On
demo-gpt2's grid 1-2% flagged FFN cuts that cost < 0.5 pp, 5% and 10% gave the same verdicts.
Magnitude
(super-additivity: measured / sum of singles, and the relative error) and criterion fidelity are
reported, not gated: removals that interact strongly but keep their order still choose well.

`magnitude` is the earlier rule, kept for comparison. Its defaults:
- `fidelity_min` 0.2: Spearman between the criterion and single-removal loss. Low fidelity means the
  criterion does not rank what removal costs; it is reported, and fails a ratio only below this floor.
- `additivity_spearman_min` 0.5: Spearman, over random subsets, between the sum of single-removal
  losses and the measured loss of removing the subset together.
- `additivity_error_max` 0.6: median relative error |measured - sum of singles| divided by the
  larger of the two (floored at 5% of the base loss, so harmless removals are not judged on noise).
  Independent units give ~0; units whose removals interact (super-additive collapse) push it to 1:
  0.6 means the measured loss is 2.5x what the singles predict.
- `stability_min` 0.5: Kendall tau of the criterion ranking of surviving units before vs after
  removing that ratio's lowest-ranked units (with the short recovery when one is configured).
A ratio *holds* when every point estimate clears its threshold; it is *uncertain* when it holds but
a 95% interval crosses a threshold (with `conservative=True` that counts as violated).
The predictable horizon is the largest removed fraction r such that every tested ratio ≤ r holds:
a schedule stage may keep no less than `1 - horizon` of that granularity's units.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from harness.errors import ConfigError
from harness.sia.stats import Estimate

RULES = ("rank", "magnitude")


@dataclass(frozen=True)
class Thresholds:
    fidelity_min: float = 0.2
    additivity_spearman_min: float = 0.5
    additivity_error_max: float = 0.6
    stability_min: float = 0.5
    conservative: bool = False
    rule: str = "rank"
    beats_random_min: float = 0.5
    harmless_fraction: float = 0.05  # of chance loss - base loss; see benchmarks/sia_predicts_collapse.py

    def __post_init__(self) -> None:
        if not 0 <= self.harmless_fraction < 1:
            raise ConfigError(f"harmless_fraction must be in [0, 1), got {self.harmless_fraction}")
        if self.rule not in RULES:
            raise ConfigError(f"unknown SIA rule {self.rule!r}; use one of: {', '.join(RULES)}")

    def to_dict(self) -> dict[str, float | bool]:
        return asdict(self)


def _ge(est: Estimate, floor: float) -> tuple[bool, bool]:
    """(passes, certain) for a metric that must be at least `floor`; nan fails."""
    if math.isnan(est.value):
        return False, True
    ok = est.value >= floor
    certain = math.isnan(est.low) or (est.low >= floor if ok else est.high < floor)
    return ok, certain


def _le(est: Estimate, ceiling: float) -> tuple[bool, bool]:
    if math.isnan(est.value):
        return False, True
    ok = est.value <= ceiling
    certain = math.isnan(est.high) or (est.high <= ceiling if ok else est.low > ceiling)
    return ok, certain


def judge(
    fidelity: Estimate,
    additivity_spearman: Estimate,
    additivity_error: Estimate,
    stability: Estimate,
    th: Thresholds,
) -> tuple[str, list[str]]:
    """'holds' | 'uncertain' | 'violated', with the reasons for anything short of 'holds'."""
    checks = {
        "criterion fidelity": _ge(fidelity, th.fidelity_min),
        "additivity (Spearman)": _ge(additivity_spearman, th.additivity_spearman_min),
        "additivity (median relative error)": _le(additivity_error, th.additivity_error_max),
        "rank stability": _ge(stability, th.stability_min),
    }
    return _verdict(checks, th)


def _verdict(checks: dict[str, tuple[bool, bool]], th: Thresholds) -> tuple[str, list[str]]:
    """checks: name -> (passes, certain). Any failure is 'violated'; an interval crossing a threshold
    is 'uncertain' ('violated' when conservative); else 'holds'. The reasons name each check."""
    failed = [name for name, (ok, _) in checks.items() if not ok]
    if failed:
        return "violated", [f"{name} fails its threshold" for name in failed]
    unsure = [name for name, (_, certain) in checks.items() if not certain]
    if unsure:
        reasons = [f"{name}: 95% interval crosses its threshold" for name in unsure]
        return ("violated" if th.conservative else "uncertain"), reasons
    return "holds", []


def harmless_allowance(base_loss: float, chance_loss: float | None, th: Thresholds) -> float:
    """The loss increase a criterion's choice may cost and still count as harmless (at least 1e-3;
    without a chance loss, the 5%-of-base noise floor)."""
    if chance_loss is None or math.isnan(chance_loss):
        return max(1e-3, 0.05 * abs(base_loss))
    return max(1e-3, th.harmless_fraction * max(0.0, chance_loss - base_loss))


def judge_rank(
    additivity_spearman: Estimate,
    beats_random: Estimate,
    stability: Estimate,
    harmless: bool,
    th: Thresholds,
) -> tuple[str, list[str]]:
    """The rank rule: 'holds' | 'uncertain' | 'violated', with the reasons for anything short of 'holds'.

    A stability of nan (too few survivors to rank) is not judged.
    """
    if harmless:
        return "holds", []
    checks = {
        "rank agreement (sum of singles vs joint, Spearman)": _ge(
            additivity_spearman, th.additivity_spearman_min
        ),
        "criterion's choice vs random subsets": _ge(beats_random, th.beats_random_min),
    }
    if not math.isnan(stability.value):
        checks["rank stability"] = _ge(stability, th.stability_min)
    return _verdict(checks, th)


def horizon(ratios_removed: list[float], verdicts: list[str]) -> float:
    """Largest removed fraction up to which every tested ratio holds (0.0 if the first fails)."""
    best = 0.0
    for r, v in sorted(zip(ratios_removed, verdicts, strict=True)):
        if v == "violated":
            break
        best = r
    return best
