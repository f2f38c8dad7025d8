"""Physical removal: exact parameters removed, removal == masking, GQA rules, torch.export still works."""

from __future__ import annotations

import copy

import pytest
import torch

from harness.models import PruneError, get_adapter
from harness.models.manifest import count_parameters
from tests.unit.prune_tiny import FAMILIES, logits, tiny_model, tokens

E = 32  # hidden size of every tiny model


def _bias(family: str) -> int:
    return 1 if family == "qwen2" else 0


def _agree(a, b, ids) -> float:
    return float((logits(a, ids) - logits(b, ids)).abs().max())


@pytest.mark.parametrize("family", FAMILIES)
def test_remove_heads_matches_masking_and_counts(family: str) -> None:
    model, ids = tiny_model(family), tokens()
    ref = copy.deepcopy(model)
    ad, rad = get_adapter(model), get_adapter(ref)
    shape = ad.attention_shape(1)
    before = count_parameters(model)
    ad.remove_heads(1, [1])  # keep one head (MHA) or one KV group (GQA)
    rad.mask_heads(1, [g for g in range(shape.num_kv_groups) if g != 1])
    k, hd, per = shape.num_kv_groups - 1, shape.head_dim, shape.heads_per_group
    if family == "gpt2":
        expected = k * hd * (3 * E + 3 + E)
    else:
        expected = k * per * hd * (2 * E + _bias(family)) + 2 * k * hd * (E + _bias(family))
    assert before - count_parameters(model) == expected
    assert _agree(model, ref, ids) < 1e-5
    assert ad.attention_shape(1).num_kv_groups == 1
    assert ad.source(1).kv_heads == [1]
    assert ad.source(1).q_heads == [per + p for p in range(per)]


@pytest.mark.parametrize("family", ["llama", "qwen2", "mistral"])
def test_query_heads_inside_groups(family: str) -> None:
    model, ids = tiny_model(family), tokens()
    ref = copy.deepcopy(model)
    ad, rad = get_adapter(model), get_adapter(ref)
    shape = ad.attention_shape(0)
    per, groups, hd = shape.heads_per_group, shape.num_kv_groups, shape.head_dim
    keep = [[per - 1] for _ in range(groups)]  # a different position than 0 in each group
    before = count_parameters(model)
    ad.remove_query_heads(0, keep)
    rad.mask_query_heads(0, [g * per + p for g in range(groups) for p in range(per - 1)])
    assert before - count_parameters(model) == groups * (per - 1) * hd * (2 * E + _bias(family))
    assert _agree(model, ref, ids) < 1e-5
    assert ad.attention_shape(0) == type(shape)(groups, 1, hd)
    assert ad.layers()[0].self_attn.num_key_value_groups == 1


def test_gqa_groups_must_keep_equal_query_heads() -> None:
    ad = get_adapter(tiny_model("llama"))
    with pytest.raises(PruneError, match="same number of query heads"):
        ad.remove_query_heads(0, [[0, 1], [2]])
    with pytest.raises(PruneError, match="one list of query heads per KV group"):
        ad.remove_query_heads(0, [[0]])


@pytest.mark.parametrize("family", FAMILIES)
def test_remove_channels_matches_masking_and_counts(family: str) -> None:
    model, ids = tiny_model(family), tokens()
    ref = copy.deepcopy(model)
    ad, rad = get_adapter(model), get_adapter(ref)
    n = ad.num_channels(2)
    keep = [0, 5, 7, n - 1]
    before = count_parameters(model)
    ad.remove_channels(2, keep)
    rad.mask_channels(2, [c for c in range(n) if c not in keep])
    removed = n - len(keep)
    expected = removed * (2 * E + 1) if family == "gpt2" else removed * 3 * E
    assert before - count_parameters(model) == expected
    assert _agree(model, ref, ids) < 1e-5
    assert ad.num_channels(2) == 4 and ad.source(2).channels == keep


@pytest.mark.parametrize("family", FAMILIES)
def test_remove_layers_matches_masking_and_counts(family: str) -> None:
    model, ids = tiny_model(family, layers=4), tokens()
    ref = copy.deepcopy(model)
    ad, rad = get_adapter(model), get_adapter(ref)
    block = sum(p.numel() for p in ad.layers()[1].parameters()) + sum(
        p.numel() for p in ad.layers()[2].parameters()
    )
    before = count_parameters(model)
    ad.remove_layers([0, 3])
    rad.mask_layer(1)
    rad.mask_layer(2)
    assert before - count_parameters(model) == block
    assert _agree(model, ref, ids) < 1e-5
    assert [ad.source(i).index for i in range(2)] == [0, 3]
    assert model.config.num_hidden_layers == 2
    attn = [m for m in ad.layers()[1].modules() if hasattr(m, "layer_idx")]
    assert attn and all(m.layer_idx == 1 for m in attn)


def test_cannot_remove_everything() -> None:
    ad = get_adapter(tiny_model("gpt2"))
    with pytest.raises(PruneError, match="every layer"):
        ad.remove_layers([])
    with pytest.raises(PruneError, match="every head"):
        ad.remove_heads(0, [])
    with pytest.raises(PruneError, match="every KV group"):
        get_adapter(tiny_model("llama")).remove_heads(0, [])
    with pytest.raises(PruneError, match="every FFN channel"):
        ad.remove_channels(0, [])
    with pytest.raises(PruneError, match="not distinct indices"):
        ad.remove_channels(0, [0, 0, 999])


def test_causal_lm_heads_prune_too() -> None:
    for family in ("gpt2", "qwen2"):
        model, ids = tiny_model(family, task="causal-lm"), tokens()
        ref = copy.deepcopy(model)
        ad, rad = get_adapter(model), get_adapter(ref)
        n = ad.num_channels(0)
        ad.remove_channels(0, [1, 2])
        rad.mask_channels(0, [c for c in range(n) if c not in (1, 2)])
        assert _agree(model, ref, ids) < 1e-5


@pytest.mark.parametrize("family", FAMILIES)
def test_pruned_model_runs_under_torch_export(family: str) -> None:
    model, ids = tiny_model(family), tokens(n=1)
    ad = get_adapter(model)
    ad.remove_heads(0, [0])
    ad.remove_channels(1, [0, 1, 2])
    ad.remove_layers([0, 1])

    class Wrap(torch.nn.Module):
        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
            mask = torch.ones_like(input_ids)
            return self.inner(input_ids=input_ids, attention_mask=mask, use_cache=False, return_dict=False)[0]

    wrapped = Wrap(model).eval()
    exported = torch.export.export(wrapped, (ids,))
    assert torch.allclose(exported.module()(ids), wrapped(ids), atol=1e-5)
