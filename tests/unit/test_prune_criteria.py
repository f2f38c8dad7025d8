"""Importance criteria score what they claim: zeroed components score zero, Taylor matches autograd."""

from __future__ import annotations

import pytest
import torch

from harness.models import get_adapter
from harness.prune import criteria
from harness.prune.calib import Batch, batch_loss
from harness.prune.select import apply_attention, keep_global, keep_per_layer, top_k
from tests.unit.prune_tiny import FAMILIES, tiny_model, tokens


def _batches() -> list[Batch]:
    ids = tokens(n=16, seed=5)
    return [Batch(ids[:8], ids[:8, 0] % 3), Batch(ids[8:], ids[8:, 0] % 3)]


@pytest.mark.parametrize("family", FAMILIES)
def test_zeroed_components_score_zero(family: str) -> None:
    model = tiny_model(family)
    ad = get_adapter(model)
    ad.mask_layer(0)
    ad.mask_heads(1, [0])
    ad.mask_channels(2, [3, 4])
    stats = criteria.collect_stats(ad, _batches(), gradients=True, head_contrib=True)
    assert stats.block_influence[0] == pytest.approx(0.0, abs=1e-6)
    assert min(stats.block_influence[1:]) > 1e-4
    skip = criteria.layer_scores(ad, stats, "skip_loss", _batches())
    assert float(skip[0]) == pytest.approx(0.0, abs=1e-6) and float(skip[1:].abs().max()) > 1e-5
    per = ad.attention_shape(1).heads_per_group
    for crit in ("taylor", "output_norm", "flap"):
        groups = criteria.group_scores(ad, criteria.head_scores(ad, stats, crit))[1].sum(-1)
        assert float(groups[0]) == pytest.approx(0.0, abs=1e-7), crit
        assert float(groups[1:].abs().min()) > 0, crit
        assert groups.shape[0] == ad.attention_shape(1).num_kv_groups and per >= 1
    for crit in ("wanda", "flap", "taylor"):
        ch = criteria.channel_scores(ad, stats, crit)[2]
        assert float(ch[3]) == 0 and float(ch[4]) == 0, crit
        assert int((ch > 0).sum()) >= ad.num_channels(2) - 2 - 1, crit  # GELU/SiLU may zero one by chance


def test_taylor_matches_autograd() -> None:
    model = tiny_model("llama")
    ad = get_adapter(model)
    batch = _batches()[0]
    captured = {}

    def hook(module, args):  # noqa: ANN001, ANN202
        args[0].retain_grad()
        captured["x"] = args[0]

    h = ad.ffn_down_proj(1).register_forward_pre_hook(hook)
    batch_loss(model, batch).backward()
    h.remove()
    x = captured["x"]
    expected = (x * x.grad).abs().reshape(-1, x.shape[-1]).sum(0)
    model.zero_grad()
    stats = criteria.collect_stats(ad, [batch], gradients=True, head_contrib=False)
    got = criteria.channel_scores(ad, stats, "taylor")[1]
    assert torch.allclose(got, expected, rtol=1e-4, atol=1e-7)


def test_taylor_pass_frees_its_activations() -> None:
    """The gradient hooks must not keep the calibration activations alive (a leak of ~260 MB a stage
    on the demo model, which let a long `hilt tune` grow until the OOM killer stopped it)."""
    import gc
    import weakref

    model = tiny_model("gpt2")
    ad = get_adapter(model)
    seen: list[weakref.ref] = []
    h = ad.ffn_down_proj(1).register_forward_pre_hook(lambda _m, args: seen.append(weakref.ref(args[0])))
    criteria.collect_stats(ad, _batches(), gradients=True, head_contrib=False)
    h.remove()
    gc.collect()
    assert len(seen) == 2 and all(ref() is None for ref in seen)


def test_wanda_and_flap_formulas() -> None:
    model = tiny_model("gpt2")
    ad = get_adapter(model)
    batch = _batches()[0]
    captured = {}
    h = ad.ffn_down_proj(0).register_forward_pre_hook(lambda m, a: captured.setdefault("x", a[0].detach()))
    with torch.no_grad():
        batch_loss(model, batch)
    h.remove()
    x = captured["x"].reshape(-1, captured["x"].shape[-1])
    w = ad.ffn_down_proj(0).weight.detach()  # Conv1D [in, out]
    stats = criteria.collect_stats(ad, [batch], gradients=False, head_contrib=False)
    wanda = criteria.channel_scores(ad, stats, "wanda")[0]
    flap = criteria.channel_scores(ad, stats, "flap")[0]
    assert torch.allclose(wanda, x.norm(dim=0) * w.abs().sum(1), rtol=1e-4)
    assert torch.allclose(flap, x.var(dim=0, unbiased=False) * (w * w).sum(1), rtol=1e-3, atol=1e-7)


def test_selection_rules() -> None:
    assert top_k(torch.tensor([0.1, 0.9, 0.5, 0.9]), 2) == [1, 3]
    scores = [torch.tensor([5.0, 4.0, 3.0]), torch.tensor([0.1, 0.2, 0.3])]
    assert keep_per_layer(scores, 1 / 3) == [[0], [2]]
    # global: layer 1 is weak everywhere but keeps its best unit
    assert keep_global(scores, 4 / 6) == [[0, 1, 2], [2]]
    assert sum(len(k) for k in keep_global(scores, 0.5)) == 3


def test_query_head_selection_is_per_group() -> None:
    model = tiny_model("llama")  # 2 KV groups x 4 query heads
    ad = get_adapter(model)
    grouped = [torch.tensor([[1.0, 4.0, 3.0, 2.0], [9.0, 0.0, 8.0, 7.0]]) for _ in range(3)]
    apply_attention(ad, grouped, 0.5, "per_layer", "query_head")
    assert ad.source(0).q_heads == [1, 2, 4, 6]
    assert ad.attention_shape(0).heads_per_group == 2
