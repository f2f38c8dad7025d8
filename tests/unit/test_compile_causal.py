"""The causal-LM step function (prefill + decode with explicit KV caches) against HF's own decode."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from harness.compile.causal import CachedStep, check_prompt, greedy_reference
from harness.errors import CompileError
from harness.models import get_adapter
from tests.unit.llm_tiny import pruned_uneven, tiny_causal


@pytest.fixture(autouse=True)
def _threads() -> None:
    torch.set_num_threads(1)


def torch_greedy(step: CachedStep, prompt: np.ndarray, bucket: int, new: int) -> tuple[list[int], list]:
    ids = torch.zeros(1, bucket, dtype=torch.long)
    ids[0, : prompt.shape[1]] = torch.from_numpy(prompt[0])
    with torch.no_grad():
        out = step(ids, torch.tensor([0]), *step.layout.empty())
        logits, caches = [out[0][0, prompt.shape[1] - 1].numpy()], list(out[1:])
        gen, pos = [], prompt.shape[1]
        for i in range(new):
            gen.append(int(np.argmax(logits[-1])))
            if i == new - 1:
                break
            out = step(torch.tensor([[gen[-1]]]), torch.tensor([pos]), *caches)
            caches, pos = list(out[1:]), pos + 1
            logits.append(out[0][0, -1].numpy())
    return gen, logits


@pytest.mark.parametrize("family", ["gpt2", "llama", "qwen2", "mistral", "pruned-llama", "pruned-gpt2"])
def test_prefill_and_16_decode_steps_match_hf(family: str) -> None:
    if family.startswith("pruned-"):
        model = pruned_uneven(family.removeprefix("pruned-"))
    else:
        model = tiny_causal(family, 64)
    prompt = np.random.default_rng(0).integers(0, 64, (1, 5))
    ref_ids, ref_logits = greedy_reference(model, prompt, 16)
    step = CachedStep(model, max_len=32)
    ids, logits = torch_greedy(step, prompt, bucket=8, new=16)  # prompt right-padded to its bucket
    assert ids == ref_ids and len(logits) == 16
    assert max(float(np.abs(a - b).max()) for a, b in zip(logits, ref_logits, strict=True)) <= 1e-4


def test_a_sliding_window_shorter_than_the_cache_masks_what_hf_masks() -> None:
    """Mistral with a 6-token window over a 32-slot cache: 5 + 16 tokens run past the window, and the
    step's logits must stay HF's (the window is the family's, applied by the step's mask)."""
    from transformers import MistralConfig, MistralForCausalLM

    torch.manual_seed(0)
    cfg = MistralConfig(
        vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, head_dim=8, max_position_embeddings=64, sliding_window=6,
        initializer_range=0.2, tie_word_embeddings=True,
    )  # fmt: skip
    model = MistralForCausalLM(cfg).eval()
    prompt = np.random.default_rng(1).integers(0, 64, (1, 5))
    ref_ids, ref_logits = greedy_reference(model, prompt, 16)
    ids, logits = torch_greedy(CachedStep(model, max_len=32), prompt, bucket=8, new=16)
    assert ids == ref_ids
    assert max(float(np.abs(a - b).max()) for a, b in zip(logits, ref_logits, strict=True)) <= 1e-4


def test_cache_layout_follows_each_layers_own_heads() -> None:
    model = pruned_uneven()
    assert [get_adapter(model).attention_shape(i).num_kv_groups for i in range(2)] == [1, 2]
    layout = CachedStep(model, 16).layout
    assert layout.layers == ((1, 8), (2, 8)) and layout.max_len == 16
    assert [tuple(c.shape) for c in layout.empty()] == [(1, 1, 16, 8)] * 2 + [(1, 2, 16, 8)] * 2
    assert CachedStep(pruned_uneven("gpt2"), 16).layout.layers == ((1, 8), (4, 8))  # MHA: heads = KV heads


def test_bad_requests_are_one_clear_error() -> None:
    with pytest.raises(CompileError, match="prompt of 9 tokens is longer than the bundle allows \\(8\\)"):
        check_prompt(9, 8, 32)
    with pytest.raises(CompileError, match="prompt 8 \\+ 30 new tokens exceeds the KV cache of 32"):
        check_prompt(8, 8, 32, 30)
    with pytest.raises(CompileError, match="prompt is empty"):
        check_prompt(0, 8, 32)
    other = SimpleNamespace(config=SimpleNamespace(model_type="phi3"))
    with pytest.raises(CompileError, match="model family 'phi3' is not supported; supported families: "):
        CachedStep(other, 16)  # type: ignore[arg-type]
    with pytest.raises(CompileError, match="cache length 100 must be in 2..64"):
        CachedStep(tiny_causal("llama", 64), 100)
