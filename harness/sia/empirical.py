"""The empirical SIA test on one granularity (DESIGN.md, "SIA, concretely").

For sampled units: criterion score vs measured loss increase of removing each alone (fidelity).
For random subsets at each ratio: sum of single-removal increases vs the measured increase of
removing the subset together (rank agreement: Spearman and Kendall; magnitude: super-additivity and
relative error). The criterion's choice at each ratio (its lowest-ranked units) is measured too and
compared with random subsets of the same size. After removing each ratio's lowest-ranked units:
Kendall tau of the criterion ranking of the survivors before vs after (rank stability), without
and with a short recovery. Cost is counted in batch forward passes and reported.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np

from harness.sia.probe import Probe
from harness.sia.stats import Estimate, bootstrap_ci, kendall_ci, median_ci, spearman_ci
from harness.sia.verdict import Thresholds, harmless_allowance, horizon, judge, judge_rank

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EmpiricalConfig:
    """Sample sizes and seeds of one check; the defaults keep a demo model under 2 minutes."""

    ratios: tuple[float, ...] = (0.25, 0.5, 0.75)  # fractions of units removed
    max_units: int = 48  # units measured alone (all of them when there are fewer)
    subsets_per_ratio: int = 10
    recovery_steps: int = 0  # > 0 also measures rank stability after a short LoRA recovery
    bootstrap: int = 1000
    seed: int = 0

    def to_dict(self) -> dict[str, object]:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(self).items()}


def _opt(e: Estimate | None) -> dict[str, float | None] | None:
    return None if e is None else e.to_dict()


@dataclass
class RatioResult:
    removed_fraction: float
    additivity_spearman: Estimate
    additivity_error: Estimate
    stability: Estimate
    stability_recovered: Estimate | None
    predicted: list[float] = field(default_factory=list)  # sum of singles, per subset
    measured: list[float] = field(default_factory=list)  # measured increase, per subset
    verdict: str = "violated"
    reasons: list[str] = field(default_factory=list)
    additivity_kendall: Estimate | None = None
    super_additivity: Estimate | None = None  # median measured / sum of singles (1 = additive)
    chosen_increase: float | None = None  # measured increase of the criterion's lowest-ranked units
    random_increase: list[float] = field(default_factory=list)  # random subsets of the chosen size
    beats_random: Estimate | None = None  # share of those random subsets the choice costs less than
    harmless: bool = False

    @property
    def keep_ratio(self) -> float:
        return round(1.0 - self.removed_fraction, 6)

    def to_dict(self) -> dict[str, object]:
        return {
            "removed_fraction": self.removed_fraction,
            "keep_ratio": self.keep_ratio,
            "additivity_spearman": self.additivity_spearman.to_dict(),
            "additivity_error": self.additivity_error.to_dict(),
            "stability": self.stability.to_dict(),
            "stability_recovered": None
            if self.stability_recovered is None
            else self.stability_recovered.to_dict(),
            "predicted": [round(v, 6) for v in self.predicted],
            "measured": [round(v, 6) for v in self.measured],
            "verdict": self.verdict,
            "reasons": list(self.reasons),
            "additivity_kendall": _opt(self.additivity_kendall),
            "super_additivity": _opt(self.super_additivity),
            "chosen_increase": None if self.chosen_increase is None else round(self.chosen_increase, 6),
            "random_increase": [round(v, 6) for v in self.random_increase],
            "beats_random": _opt(self.beats_random),
            "harmless": self.harmless,
        }


@dataclass
class GranularityResult:
    granularity: str
    criterion: str
    n_units: int
    n_sampled: int
    base_loss: float
    fidelity: Estimate
    ratios: list[RatioResult]
    horizon_removed: float
    forward_passes: int
    seconds: float
    single_increase: list[float] = field(default_factory=list)
    sampled_scores: list[float] = field(default_factory=list)
    chance_loss: float | None = None  # loss of a model that learned nothing (None: unknown)

    @property
    def min_keep_ratio(self) -> float:
        """The smallest schedule `ratio` (fraction kept) this granularity may be pruned to."""
        return round(1.0 - self.horizon_removed, 6)

    def to_dict(self) -> dict[str, object]:
        return {
            "granularity": self.granularity,
            "criterion": self.criterion,
            "n_units": self.n_units,
            "n_sampled": self.n_sampled,
            "base_loss": self.base_loss,
            "fidelity": self.fidelity.to_dict(),
            "ratios": [r.to_dict() for r in self.ratios],
            "horizon_removed": self.horizon_removed,
            "min_keep_ratio": self.min_keep_ratio,
            "forward_passes": self.forward_passes,
            "seconds": round(self.seconds, 2),
            "single_increase": [round(v, 6) for v in self.single_increase],
            "sampled_scores": [float(v) for v in self.sampled_scores],
            "chance_loss": self.chance_loss,
        }

    @classmethod
    def from_dict(cls, d: dict) -> GranularityResult:
        def est(x: dict | None) -> Estimate | None:
            if x is None:
                return None
            return Estimate(*(float("nan") if x[k] is None else x[k] for k in ("value", "low", "high")))

        ratios = [
            RatioResult(
                removed_fraction=r["removed_fraction"],
                additivity_spearman=est(r["additivity_spearman"]),
                additivity_error=est(r["additivity_error"]),
                stability=est(r["stability"]),
                stability_recovered=est(r["stability_recovered"]),
                predicted=r["predicted"],
                measured=r["measured"],
                verdict=r["verdict"],
                reasons=r["reasons"],
                additivity_kendall=est(r.get("additivity_kendall")),
                super_additivity=est(r.get("super_additivity")),
                chosen_increase=r.get("chosen_increase"),
                random_increase=r.get("random_increase", []),
                beats_random=est(r.get("beats_random")),
                harmless=r.get("harmless", False),
            )
            for r in d["ratios"]
        ]
        return cls(
            granularity=d["granularity"],
            criterion=d["criterion"],
            n_units=d["n_units"],
            n_sampled=d["n_sampled"],
            base_loss=d["base_loss"],
            fidelity=est(d["fidelity"]),
            ratios=ratios,
            horizon_removed=d["horizon_removed"],
            forward_passes=d["forward_passes"],
            seconds=d["seconds"],
            single_increase=d.get("single_increase", []),
            sampled_scores=d.get("sampled_scores", []),
            chance_loss=d.get("chance_loss"),
        )


def _lowest_removal(probe: Probe, scores: np.ndarray, fraction: float) -> list[int]:
    """The lowest-ranked `fraction` of units, never emptying a layer (or the whole model)."""
    units = probe.units()
    target = int(round(fraction * len(units)))
    left: dict[int, int] = {}
    for u in units:
        left[u.layer] = left.get(u.layer, 0) + 1
    whole_layers = all(u.index == u.layer and not u.channels for u in units)
    removed: list[int] = []
    for i in np.argsort(scores, kind="stable"):
        if len(removed) >= target:
            break
        if whole_layers:
            if len(units) - len(removed) <= 1:
                break
        elif left[units[i].layer] <= 1:
            continue
        left[units[i].layer] -= 1
        removed.append(int(i))
    return removed


def rejudge(result: GranularityResult, thresholds: Thresholds) -> GranularityResult:
    """The same measurements judged under other thresholds (or the other rule): verdicts and horizon
    recomputed, nothing re-measured, so rules and thresholds can be compared and calibrated offline."""
    harmless_at = harmless_allowance(result.base_loss, result.chance_loss, thresholds)
    nan = Estimate(float("nan"), float("nan"), float("nan"))
    ratios = []
    for r in result.ratios:
        judged = r.stability_recovered if r.stability_recovered is not None else r.stability
        harmless = r.chosen_increase is not None and r.chosen_increase <= harmless_at
        if thresholds.rule == "rank":
            verdict, reasons = judge_rank(
                r.additivity_spearman, r.beats_random or nan, judged, harmless, thresholds
            )
        else:
            verdict, reasons = judge(
                result.fidelity, r.additivity_spearman, r.additivity_error, judged, thresholds
            )
        ratios.append(replace(r, verdict=verdict, reasons=reasons, harmless=harmless))
    hz = horizon([r.removed_fraction for r in ratios], [r.verdict for r in ratios])
    return replace(result, ratios=ratios, horizon_removed=hz)


@dataclass
class _Additivity:
    """How the summed single-removal increases predict the measured increase of random subsets of one size."""

    predicted: list[float]
    measured: list[float]
    spearman: Estimate
    kendall: Estimate
    error: Estimate
    super_additivity: Estimate
    meas: np.ndarray


def _measure_additivity(
    probe: Probe,
    config: EmpiricalConfig,
    rng: np.random.Generator,
    pool: np.ndarray,
    single: np.ndarray,
    base: float,
    k: int,
    floor: float,
) -> _Additivity:
    predicted, measured, subsets = [], [], []
    for _ in range(config.subsets_per_ratio):
        chosen = rng.choice(len(pool), min(k, len(pool)), replace=False)
        subsets.append(sorted(int(pool[c]) for c in chosen))
        predicted.append(float(single[chosen].sum()))
        measured.append(probe.loss(subsets[-1]) - base)
    pred, meas = np.array(predicted), np.array(measured)
    add_rho = spearman_ci(pred, meas, config.bootstrap, config.seed)
    add_tau = kendall_ci(pred, meas, config.bootstrap, config.seed)
    # relative to the larger of the two, floored: see `floor`
    rel = np.abs(meas - pred) / np.maximum(np.maximum(np.abs(meas), np.abs(pred)), floor)
    add_err = median_ci(rel, config.bootstrap, config.seed)
    sup = median_ci(np.maximum(meas, 0) / np.maximum(pred, floor), config.bootstrap, config.seed)
    return _Additivity(predicted, measured, add_rho, add_tau, add_err, sup, meas)


def _criterion_vs_random(
    probe: Probe,
    config: EmpiricalConfig,
    rng: np.random.Generator,
    removed: list[int],
    additivity_meas: np.ndarray,
    n: int,
    n_pool: int,
    k: int,
    base: float,
) -> tuple[float, np.ndarray, Estimate]:
    """The criterion's choice's loss increase, random same-size choices', and how often it beats them."""
    chosen_inc = probe.loss(removed) - base
    if n_pool == n and len(removed) == k:
        random_inc = additivity_meas  # the additivity subsets are already random subsets of this size
    else:
        random_inc = np.array(
            [
                probe.loss(sorted(int(u) for u in rng.choice(n, len(removed), replace=False))) - base
                for _ in range(config.subsets_per_ratio)
            ]
        )
    # ties (within noise) count half: a choice no better than chance scores 0.5
    tol = 1e-6 + 1e-3 * abs(base)
    wins = np.where(random_inc > chosen_inc + tol, 1.0, np.where(random_inc < chosen_inc - tol, 0.0, 0.5))
    beats = bootstrap_ci(lambda w: float(np.mean(w)), (wins,), config.bootstrap, config.seed)
    return chosen_inc, random_inc, beats


def _rank_stability(
    probe: Probe, config: EmpiricalConfig, scores: np.ndarray, removed: list[int]
) -> tuple[Estimate, Estimate | None]:
    """Kendall tau of the survivors' scores before and after removal (and after recovery, if configured)."""
    survivors = probe.surviving(removed)
    after = probe.pruned(removed, recovery_steps=0)
    stability = kendall_ci(scores[survivors], after.scores(), config.bootstrap, config.seed)
    probe.forward_passes += after.forward_passes
    stability_rec = None
    if config.recovery_steps > 0:
        rec = probe.pruned(removed, recovery_steps=config.recovery_steps)
        stability_rec = kendall_ci(scores[survivors], rec.scores(), config.bootstrap, config.seed)
        probe.forward_passes += rec.forward_passes
    return stability, stability_rec


def _single_removals(
    probe: Probe,
    config: EmpiricalConfig,
    rng: np.random.Generator,
    say: Callable[[str], None],
    granularity: str,
) -> tuple[int, np.ndarray, float, np.ndarray, np.ndarray]:
    """(units, sampled pool, base loss, scores, loss increase of removing each pooled unit alone)."""
    units = probe.units()
    n = len(units)
    pool = np.arange(n) if n <= config.max_units else np.sort(rng.choice(n, config.max_units, replace=False))
    base = probe.loss()
    scores = probe.scores()
    say(f"{granularity}: {len(pool)} single removals")
    single = np.array([probe.loss([int(i)]) - base for i in pool])
    return n, pool, base, scores, single


def _judge_ratio(
    thresholds: Thresholds,
    fidelity: Estimate,
    add: _Additivity,
    beats: Estimate,
    judged: Estimate,
    harmless: bool,
) -> tuple[str, list[str]]:
    if thresholds.rule == "rank":
        return judge_rank(add.spearman, beats, judged, harmless, thresholds)
    return judge(fidelity, add.spearman, add.error, judged, thresholds)


def run_empirical(
    probe: Probe,
    config: EmpiricalConfig,
    thresholds: Thresholds,
    granularity: str,
    criterion: str,
    progress: Callable[[str], None] | None = None,
) -> GranularityResult:
    """Measure fidelity, additivity and rank stability on one probe and judge every ratio."""
    start = time.perf_counter()
    say = progress or (lambda _msg: None)
    rng = np.random.default_rng(config.seed)
    n, pool, base, scores, single = _single_removals(probe, config, rng, say, granularity)
    fidelity = spearman_ci(scores[pool], single, config.bootstrap, config.seed)

    results: list[RatioResult] = []
    # removals whose effect is below this floor are harmless whether or not they add up
    floor = max(1e-3, 0.05 * abs(base))
    chance = probe.chance_loss()
    harmless_at = harmless_allowance(base, chance, thresholds)
    for ratio in config.ratios:
        k = max(1, int(round(ratio * len(pool))))
        say(f"{granularity}: additivity at {ratio:.0%} removed")
        add = _measure_additivity(probe, config, rng, pool, single, base, k, floor)

        removed = _lowest_removal(probe, scores, ratio)
        say(f"{granularity}: criterion's choice vs random at {ratio:.0%} removed")
        chosen_inc, random_inc, beats = _criterion_vs_random(
            probe, config, rng, removed, add.meas, n, len(pool), k, base
        )
        # the criterion's own choice costs (next to) nothing: a schedule at this ratio is safe whatever the
        # ranks of single removals say (they are often pure noise then, e.g. FFN channel groups)
        harmless = bool(chosen_inc <= harmless_at)

        say(f"{granularity}: rank stability at {ratio:.0%} removed")
        stability, stability_rec = _rank_stability(probe, config, scores, removed)
        judged = stability_rec if stability_rec is not None else stability
        verdict, reasons = _judge_ratio(thresholds, fidelity, add, beats, judged, harmless)
        results.append(
            RatioResult(
                removed_fraction=float(ratio),
                additivity_spearman=add.spearman,
                additivity_error=add.error,
                stability=stability,
                stability_recovered=stability_rec,
                predicted=add.predicted,
                measured=add.measured,
                verdict=verdict,
                reasons=reasons,
                additivity_kendall=add.kendall,
                super_additivity=add.super_additivity,
                chosen_increase=float(chosen_inc),
                random_increase=[float(v) for v in random_inc],
                beats_random=beats,
                harmless=harmless,
            )
        )
    hz = horizon([r.removed_fraction for r in results], [r.verdict for r in results])
    return GranularityResult(
        granularity=granularity,
        criterion=criterion,
        n_units=n,
        n_sampled=len(pool),
        base_loss=float(base),
        fidelity=fidelity,
        ratios=results,
        horizon_removed=hz,
        forward_passes=probe.forward_passes,
        seconds=time.perf_counter() - start,
        single_increase=[float(v) for v in single],
        sampled_scores=[float(v) for v in scores[pool]],
        chance_loss=chance,
    )
