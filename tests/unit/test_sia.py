"""SIA: structural verdicts per family, and the empirical test on models whose independence is known."""

from __future__ import annotations

import itertools
import json
from collections.abc import Sequence

import numpy as np
import pytest
import torch

from harness.sia import Thresholds, check_sia, structural_verdict
from harness.sia.empirical import EmpiricalConfig, run_empirical
from harness.sia.probe import Probe, Unit
from harness.sia.run import CalibrationSpec
from harness.sia.stats import Estimate
from harness.sia.verdict import horizon, judge, judge_rank
from tests.unit.prune_tiny import PAD, tiny_model, tokens

torch.set_num_threads(1)


# ---- structural verdicts ---------------------------------------------------------------
@pytest.mark.parametrize(
    ("family", "attention", "ffn"),
    [
        ("gpt2", "independent", "single-path"),
        ("llama", "coupled", "gated"),
        ("qwen2", "coupled", "gated"),
        ("mistral", "coupled", "gated"),
    ],
)
def test_structural_verdict(family: str, attention: str, ffn: str) -> None:
    v = structural_verdict(tiny_model(family))
    assert v.family == family
    assert v.attention == attention
    assert v.ffn == ffn
    assert ("head" in v.coupled) == (attention == "coupled")
    assert ("channel" in v.coupled) == (ffn == "gated")
    assert len(v.reasons) == 2 and all(r.split(":")[0] in ("head", "channel") for r in v.reasons)


# ---- constructed models ----------------------------------------------------------------
class HeadsModel(torch.nn.Module):
    """n heads read the input; each writes `width` output dims, combined additively or multiplicatively."""

    def __init__(self, n: int, width: int, coupled: bool, seed: int) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.n, self.width, self.coupled = n, width, coupled
        # head i gets a distinct strength so importance differs between heads
        strength = torch.linspace(0.2, 1.5, n)[torch.randperm(n, generator=g)]
        self.heads = torch.nn.Parameter(torch.randn(n, 8, width, generator=g) * strength[:, None, None] / 3)
        self.readout = torch.nn.Parameter(torch.randn(n, width, width, generator=g))  # block-diagonal
        self.mask = torch.ones(n)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.einsum("bi,niw->bnw", x, self.heads)  # per head outputs
        h = h * self.mask[None, :, None]
        if self.coupled:  # every output is a product over heads: units interact multiplicatively
            return torch.prod(1.0 + h, dim=1)  # [b, width]
        return torch.einsum("bnw,nwv->bnv", h, self.readout).reshape(x.shape[0], -1)


class ToyProbe(Probe):
    """Probe over a HeadsModel: removal zeroes a head; score is the head's output norm."""

    def __init__(
        self, model: HeadsModel, x: torch.Tensor, y: torch.Tensor, alive: list[int] | None = None
    ) -> None:
        self.model, self.x, self.y = model, x, y
        self.alive = alive if alive is not None else list(range(model.n))
        self.forward_passes = 0

    def units(self) -> list[Unit]:
        return [Unit(layer=0, index=i) for i in self.alive]

    def _loss(self, removed_heads: Sequence[int]) -> float:
        self.forward_passes += 1
        mask = torch.zeros(self.model.n)
        mask[self.alive] = 1.0
        mask[list(removed_heads)] = 0.0
        self.model.mask = mask
        with torch.no_grad():
            return float(((self.model(self.x) - self.y) ** 2).mean())

    def loss(self, removed: Sequence[int] = ()) -> float:
        return self._loss([self.alive[i] for i in removed])

    def scores(self) -> np.ndarray:
        base = self._loss([])
        return np.array([self._loss([h]) - base for h in self.alive]) + 1e-3 * np.arange(len(self.alive))

    def surviving(self, removed: Sequence[int]) -> list[int]:
        return [i for i in range(len(self.alive)) if i not in set(removed)]

    def pruned(self, removed: Sequence[int], recovery_steps: int) -> ToyProbe:
        return ToyProbe(self.model, self.x, self.y, [self.alive[i] for i in self.surviving(removed)])


def _toy(coupled: bool) -> ToyProbe:
    model = HeadsModel(n=16, width=4, coupled=coupled, seed=0)
    x = torch.randn(256, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        y = model(x)  # the full model is the target: removal increases the loss
    return ToyProbe(model, x, y)


CFG = EmpiricalConfig(ratios=(0.25, 0.5, 0.75), subsets_per_ratio=12, bootstrap=200, seed=3)


@pytest.mark.parametrize("rule", ["rank", "magnitude"])
def test_independent_heads_hold_at_every_ratio(rule: str) -> None:
    result = run_empirical(_toy(coupled=False), CFG, Thresholds(rule=rule), "head", "output_norm")
    for r in result.ratios:
        assert r.verdict == "holds", (r.removed_fraction, r.reasons)
        assert r.additivity_error.value < 1e-4  # disjoint dims: removals add up exactly
        assert r.super_additivity.value == pytest.approx(1.0, abs=1e-3)
        assert r.additivity_spearman.value > 0.95
        assert r.beats_random.value > 0.95  # the lowest-scored heads cost least of all subsets
        assert r.chosen_increase <= min(r.random_increase)
    assert result.fidelity.value > 0.95
    assert result.horizon_removed == 0.75


@pytest.mark.parametrize("rule", ["rank", "magnitude"])
def test_multiplicatively_coupled_heads_are_violated(rule: str) -> None:
    result = run_empirical(_toy(coupled=True), CFG, Thresholds(rule=rule), "head", "output_norm")
    assert any(r.verdict == "violated" for r in result.ratios)
    assert result.horizon_removed < 0.75
    worst = max(r.additivity_error.value for r in result.ratios)
    assert worst > Thresholds().additivity_error_max  # reported under either rule
    if rule == "rank":  # the sum of singles no longer orders subsets by what they cost together
        assert result.horizon_removed == 0.0
        assert all(r.additivity_spearman.value < 0.5 for r in result.ratios)
        assert "rank agreement" in result.ratios[0].reasons[0]


class SumProbe(Probe):
    """Units with fixed costs v; removing a set S costs f(v[S]); the criterion scores unit i as `score[i]`."""

    def __init__(self, v: np.ndarray, score: np.ndarray, cost, alive: list[int] | None = None) -> None:  # noqa: ANN001
        self.v, self.score, self.cost = v, score, cost
        self.alive = alive if alive is not None else list(range(len(v)))
        self.forward_passes = 0

    def units(self) -> list[Unit]:
        return [Unit(layer=0, index=i) for i in self.alive]

    def scores(self) -> np.ndarray:
        return self.score[self.alive]

    def loss(self, removed: Sequence[int] = ()) -> float:
        self.forward_passes += 1
        return 0.1 + float(self.cost(self.v[[self.alive[i] for i in removed]])) if removed else 0.1

    def surviving(self, removed: Sequence[int]) -> list[int]:
        return [i for i in range(len(self.alive)) if i not in set(removed)]

    def pruned(self, removed: Sequence[int], recovery_steps: int) -> SumProbe:
        return SumProbe(self.v, self.score, self.cost, [self.alive[i] for i in self.surviving(removed)])


V = np.linspace(0.05, 1.0, 20)[np.random.default_rng(0).permutation(20)]


def test_super_additive_but_order_preserving_holds_by_rank_and_fails_by_magnitude() -> None:
    """Joint cost (sum v)^2 is far above the sum of singles (sum v^2), yet keeps the singles' order:
    scores still choose well. The rank rule says holds; the old magnitude rule said violated."""

    def probe() -> SumProbe:
        return SumProbe(V, V.copy(), lambda x: 3.0 * x.sum() ** 2)

    rank = run_empirical(probe(), CFG, Thresholds(), "head", "toy")
    magnitude = run_empirical(probe(), CFG, Thresholds(rule="magnitude"), "head", "toy")
    for r in rank.ratios:
        assert r.verdict == "holds", (r.removed_fraction, r.reasons)
        assert r.super_additivity.value > 2.0  # reported: strongly super-additive
    assert rank.horizon_removed == 0.75
    assert magnitude.horizon_removed < 0.75


def test_a_criterion_that_picks_the_costly_units_is_violated_even_when_removals_add_up() -> None:
    result = run_empirical(SumProbe(V, -V, lambda x: x.sum()), CFG, Thresholds(), "head", "toy")
    for r in result.ratios:
        assert r.additivity_spearman.value > 0.95  # additive
        assert r.beats_random.value < 0.1  # but the choice is worse than chance
        assert r.verdict == "violated" and any("choice vs random" in x for x in r.reasons)
    assert result.fidelity.value < 0


def test_harmless_removals_hold_whatever_the_ranks() -> None:
    noise = np.random.default_rng(1).normal(0, 1e-4, 20)
    result = run_empirical(SumProbe(noise, -noise, lambda x: x.sum()), CFG, Thresholds(), "head", "toy")
    assert all(r.harmless and r.verdict == "holds" for r in result.ratios)
    costly = np.abs(noise) * 1e3  # the same wrong ranking, now of removals that cost up to ~1 nat
    result = run_empirical(SumProbe(costly, -costly, lambda x: x.sum()), CFG, Thresholds(), "head", "toy")
    assert not any(r.harmless for r in result.ratios) and result.horizon_removed == 0.0


def test_cost_is_counted() -> None:
    probe = _toy(coupled=False)
    result = run_empirical(probe, CFG, Thresholds(), "head", "output_norm")
    # base + scores(17) + 16 singles + 3 ratios x 12 subsets + 3 re-scorings (13 .. 5 alive each)
    assert result.forward_passes >= 1 + 16 + 36
    assert result.forward_passes == probe.forward_passes


# ---- verdict logic ---------------------------------------------------------------------
def test_horizon_stops_at_first_violation() -> None:
    assert horizon([0.25, 0.5, 0.75], ["holds", "uncertain", "violated"]) == 0.5
    assert horizon([0.25, 0.5, 0.75], ["violated", "holds", "holds"]) == 0.0
    assert horizon([0.5, 0.25], ["holds", "holds"]) == 0.5


def test_judge_rank_gates_on_rank_and_choice_only() -> None:
    good, bad, nan = (
        Estimate(0.9, 0.8, 0.95),
        Estimate(0.2, 0.0, 0.4),
        Estimate(float("nan"), float("nan"), float("nan")),
    )
    assert judge_rank(good, good, good, False, Thresholds()) == ("holds", [])
    assert judge_rank(good, good, nan, False, Thresholds()) == ("holds", [])  # too few survivors to rank
    verdict, reasons = judge_rank(bad, good, good, False, Thresholds())
    assert verdict == "violated" and reasons == [
        "rank agreement (sum of singles vs joint, Spearman) fails its threshold"
    ]
    verdict, reasons = judge_rank(good, bad, good, False, Thresholds())
    assert verdict == "violated" and "choice vs random" in reasons[0]
    assert judge_rank(bad, bad, bad, True, Thresholds()) == ("holds", [])  # harmless
    shaky = Estimate(0.6, 0.3, 0.8)
    assert judge_rank(shaky, good, good, False, Thresholds())[0] == "uncertain"
    assert judge_rank(shaky, good, good, False, Thresholds(conservative=True))[0] == "violated"


def test_unknown_rule_is_one_clear_error() -> None:
    from harness.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown SIA rule 'vibes'; use one of: rank, magnitude"):
        Thresholds(rule="vibes")


def test_judge_names_failing_metric_and_respects_conservative() -> None:
    good = Estimate(0.9, 0.8, 0.95)
    err_ok = Estimate(0.1, 0.05, 0.2)
    verdict, reasons = judge(good, good, Estimate(0.9, 0.8, 1.0), good, Thresholds())
    assert verdict == "violated" and "relative error" in reasons[0]
    shaky = Estimate(0.6, 0.3, 0.8)  # passes 0.5 but its interval crosses it
    assert judge(good, shaky, err_ok, good, Thresholds())[0] == "uncertain"
    assert judge(good, shaky, err_ok, good, Thresholds(conservative=True))[0] == "violated"


# ---- real adapters ---------------------------------------------------------------------
@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_check_sia_on_tiny_models_runs_and_caches(family: str, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("HILT_CACHE", str(tmp_path))
    model = tiny_model(family, layers=3)
    forwards = [0]
    model.register_forward_pre_hook(lambda *_: forwards.__setitem__(0, forwards[0] + 1))
    ids = tokens(n=32, seed=2)
    labels = torch.arange(32) % 3
    cfg = EmpiricalConfig(ratios=(0.25, 0.5), subsets_per_ratio=4, bootstrap=50, recovery_steps=2)
    calib = CalibrationSpec(batches=2, batch_size=16, channel_groups=4)
    report = check_sia(model, ids, labels, config=cfg, calibration=calib)
    assert [r.granularity for r in report.results] == ["layer", "head", "channel"]
    heads = report.results[1]
    expected_units = 3 * (4 if family == "gpt2" else 2)  # MHA heads vs KV groups
    assert heads.n_units == expected_units
    assert report.results[2].n_units == 3 * 4
    for r in report.results:
        # the horizon is the largest tested fraction up to which no ratio is violated
        tested = sorted((x.removed_fraction, x.verdict) for x in r.ratios)
        ok = [f for f, _ in itertools.takewhile(lambda fv: fv[1] != "violated", tested)]
        assert r.horizon_removed == (ok[-1] if ok else 0.0), (r.granularity, tested)
        assert r.min_keep_ratio == pytest.approx(1.0 - r.horizon_removed)
        assert r.forward_passes > 0
        assert all(x.stability_recovered is not None for x in r.ratios)
    assert forwards[0] > 0  # the first check ran the model
    forwards[0] = 0
    again = check_sia(model, ids, labels, config=cfg, calibration=calib)  # served from the cache
    assert forwards[0] == 0  # a hit runs no forward pass at all
    assert json.dumps(again.to_dict(), sort_keys=True) == json.dumps(report.to_dict(), sort_keys=True)
    assert len(list((tmp_path / "sia").glob("*.json"))) == 3
    check_sia(model, ids, labels, config=cfg, calibration=calib, cache=False)
    assert forwards[0] > 0  # and without the cache it recomputes
    assert PAD not in ids


def test_masked_loss_restores_weights() -> None:
    from harness.prune.calib import calibration_batches
    from harness.sia.probe import ModelProbe

    model = tiny_model("llama", layers=2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    ids = tokens(n=16, seed=4)
    probe = ModelProbe(model, "channel", "wanda", calibration_batches(ids, torch.arange(16) % 3, 1, 16))
    base = probe.loss()
    assert probe.loss([0, 1, 2]) != base
    assert probe.loss() == base
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_rejudge_reproduces_the_verdicts_and_switches_rules_without_measuring() -> None:
    from harness.sia.empirical import rejudge

    probe = SumProbe(V, V.copy(), lambda x: 3.0 * x.sum() ** 2)
    rank = run_empirical(probe, CFG, Thresholds(), "head", "toy")
    again = rejudge(rank, Thresholds())
    assert [r.verdict for r in again.ratios] == [r.verdict for r in rank.ratios]
    assert again.horizon_removed == rank.horizon_removed
    before = probe.forward_passes
    magnitude = rejudge(rank, Thresholds(rule="magnitude"))
    assert probe.forward_passes == before
    direct = run_empirical(
        SumProbe(V, V.copy(), lambda x: 3.0 * x.sum() ** 2), CFG, Thresholds(rule="magnitude"), "head", "toy"
    )
    assert [r.verdict for r in magnitude.ratios] == [r.verdict for r in direct.ratios]
    assert magnitude.horizon_removed == direct.horizon_removed < rank.horizon_removed


def test_harmless_is_a_share_of_what_the_model_learned_over_chance() -> None:
    from harness.sia.probe import chance_loss_of
    from harness.sia.verdict import harmless_allowance

    th = Thresholds()
    assert harmless_allowance(0.02, np.log(10), th) == pytest.approx(0.05 * (np.log(10) - 0.02))
    assert harmless_allowance(1.2, np.log(3), th) == 1e-3  # at chance: it learned nothing to lose
    assert harmless_allowance(0.5, None, th) == pytest.approx(0.025)  # unknown chance: the noise floor
    assert chance_loss_of(tiny_model("gpt2")) == pytest.approx(np.log(3))
    from tests.unit.prune_tiny import VOCAB

    assert chance_loss_of(tiny_model("llama", task="causal-lm")) == pytest.approx(np.log(VOCAB))
    with pytest.raises(Exception, match=r"harmless_fraction must be in \[0, 1\)"):
        Thresholds(harmless_fraction=1.5)
