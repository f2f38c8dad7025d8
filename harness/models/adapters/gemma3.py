"""Gemma 3 family (text): multi-query attention (1 KV head in the 270M model), GeGLU, RMSNorm on q and k,
norms before and after attention and MLP, embeddings scaled by sqrt(hidden), and sliding-window layers
(their own rotary base) interleaved with global ones.

Its modules are named as LLaMA's (`model.layers[i].self_attn.{q,k,v,o}_proj`, `mlp.{gate,up,down}_proj`),
so removal is LLaMA's; what differs is the forward pass the cached decode step is built from.
"""

from __future__ import annotations

import torch

from harness.errors import ModelLoadError
from harness.models.adapters.base import FamilySpec, StepContext, rotate_half
from harness.models.adapters.llama import LlamaAdapter


class Gemma3Adapter(LlamaAdapter):
    family = "gemma3_text"
    gqa = True  # multi-query: every query head reads the one K/V head (coupled, as GQA)
    gated_ffn = True  # GeGLU: gelu(gate) * up

    def __init__(self, model: torch.nn.Module, family: str = "gemma3_text") -> None:
        super().__init__(model, family=family)

    def layer_window(self, layer: int) -> int | None:
        return self.layers()[layer].self_attn.sliding_window

    def check_step(self, max_len: int) -> None:
        cfg = self.model.config
        if getattr(cfg, "attn_logit_softcapping", None) is not None:
            raise ModelLoadError(
                "Gemma 3 with attn_logit_softcapping is not compiled (the step has no softcap)"
            )
        if getattr(cfg, "use_bidirectional_attention", False):
            raise ModelLoadError("a bidirectional Gemma 3 (use_bidirectional_attention) is no causal LM")

    def _rotary_of(self, h: torch.Tensor, ctx: StepContext, kind: str) -> tuple[torch.Tensor, torch.Tensor]:
        """cos/sin for one layer type (sliding layers use their own rotary base)."""
        cos, sin = self._body().rotary_emb(h, ctx.positions.unsqueeze(0), kind)
        return cos.unsqueeze(1), sin.unsqueeze(1)

    def step_layer(self, layer: int, h: torch.Tensor, ctx: StepContext) -> torch.Tensor:
        block = self.layers()[layer]
        attn = block.self_attn
        cos, sin = ctx.once(f"rope:{attn.layer_type}", lambda: self._rotary_of(h, ctx, attn.layer_type))
        q, k, v = self.project_qkv(layer, block.input_layernorm(h))
        q, k = attn.q_norm(q), attn.k_norm(k)  # RMSNorm per head, before the rotation
        q, k = (x * cos + rotate_half(x) * sin for x in (q, k))
        a = attn.o_proj(ctx.attend(q, k, v, attn.scaling, self.layer_window(layer)))
        h = h + block.post_attention_layernorm(a)
        return h + block.post_feedforward_layernorm(block.mlp(block.pre_feedforward_layernorm(h)))

    def step_logits(self, h: torch.Tensor) -> torch.Tensor:
        logits = self.model.lm_head(self._body().norm(h))
        cap = getattr(self.model.config, "final_logit_softcapping", None)
        return logits if cap is None else torch.tanh(logits / cap) * cap


FAMILY = FamilySpec(
    "gemma3",
    {"gemma3_text": ("Gemma3TextForSequenceClassification", "Gemma3ForCausalLM")},
    Gemma3Adapter,
    gguf_architectures=("gemma3",),
)
