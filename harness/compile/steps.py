"""A causal LM's `CachedStep` as Relax: prefill (a bucket of tokens) and decode (1 token) in one
module bound to one set of weights, and a host-side build and greedy decode of it for tests and
benchmarks. `hilt compile` exports through `step_module` and runs the same graph passes, scheduler
and build as every other task (harness.compile.compiler)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from harness.compile.causal import CachedStep, CacheLayout, check_prompt
from harness.errors import CompileError

log = logging.getLogger(__name__)

STEP_FUNCTIONS = ("prefill", "decode")


def export_step(step: CachedStep, tokens: int):  # noqa: ANN201 - tvm.IRModule
    """torch.export the step for `tokens` new tokens (prefill bucket, or 1 for decode) and import it,
    weights kept as trailing parameters so prefill and decode can bind the very same tensors."""
    from tvm.relax.frontend.torch import from_exported_program

    args = (torch.zeros(1, tokens, dtype=torch.long), torch.zeros(1, dtype=torch.long), *step.layout.empty())
    try:
        with torch.no_grad():
            exported = torch.export.export(step, args)
        return from_exported_program(exported, keep_params_as_input=True, unwrap_unit_return_tuple=True)
    except Exception as exc:  # torch.export and the importer raise many unrelated types
        raise CompileError(
            f"could not import the {tokens}-token step into TVM: {type(exc).__name__}: {exc}"
        ) from exc


def step_module(step: CachedStep, bucket: int):  # noqa: ANN201 - tvm.IRModule
    """One Relax module with `prefill` (bucket tokens) and `decode` (1 token), both bound to one set
    of weight tensors: the VM's constant pool holds each weight once, so the bundle and the board's
    memory carry the model once, not twice."""
    import tvm
    from tvm import relax

    functions, weights = {}, None
    for name, tokens in zip(STEP_FUNCTIONS, (bucket, 1), strict=True):
        mod, params = relax.frontend.detach_params(export_step(step, tokens))
        if weights is None:  # the same module exported twice: same parameters, same order
            weights = [tvm.runtime.tensor(p.numpy()) for p in params["main"]]
        functions[name] = mod["main"].with_attr("global_symbol", name)
    assert weights is not None
    mod = tvm.IRModule(functions)
    for name in STEP_FUNCTIONS:
        inputs = len(mod[name].params) - len(weights)
        bound = dict(zip(mod[name].params[inputs:], weights, strict=True))
        mod = relax.transform.BindParams(name, bound)(mod)
    return mod


@dataclass
class CausalBuild:
    """One executable with `prefill` (a bucket of `bucket` tokens) and `decode` (1 token)."""

    executable: object  # tvm.relax.VMExecutable
    layout: CacheLayout
    bucket: int
    lowering: object | None = None  # harness.compile.lowering.LoweringInfo; None: TVM's stock pipeline


def build_causal(model: nn.Module, target: Any, bucket: int, max_len: int) -> CausalBuild:
    """Export and build the prefill and decode steps of a causal LM for a TVM target with TVM's stock
    pipeline, on this host: the step function alone, for tests and step benchmarks (bundles go through
    the one pipeline of harness.compile.compiler)."""
    import tvm
    from tvm import relax

    if not 1 <= bucket <= max_len:
        raise CompileError(f"prefill bucket {bucket} must be in 1..{max_len} (the cache length)")
    step = CachedStep(model, max_len)
    mod = step_module(step, bucket)
    try:
        executable = tvm.compile(mod, target=target, relax_pipeline=relax.get_default_pipeline(target))
    except Exception as exc:  # TVM raises its own error types
        raise CompileError(f"TVM build of the prefill/decode steps failed for {target}: {exc}") from exc
    log.info("built prefill (%d tokens) and decode steps for %s (stock pipeline)", bucket, target)
    return CausalBuild(executable, step.layout, bucket, None)


def tvm_greedy(build: CausalBuild, prompt: np.ndarray, new_tokens: int) -> tuple[list[int], list[np.ndarray]]:
    """Greedy decode on the host's CPU with the built steps: ids, and the logits before each new id."""
    import tvm
    from tvm import relax

    ids = np.asarray(prompt, dtype=np.int64).reshape(-1)
    check_prompt(len(ids), build.bucket, build.layout.max_len, new_tokens)
    dev = tvm.cpu()
    vm = relax.VirtualMachine(build.executable, dev)
    prefill, decode = vm["prefill"], vm["decode"]

    def arr(x: np.ndarray) -> object:
        return tvm.runtime.tensor(x, dev)

    padded = np.zeros((1, build.bucket), dtype=np.int64)
    padded[0, : len(ids)] = ids
    caches = [arr(c.numpy()) for c in build.layout.empty()]
    out = prefill(arr(padded), arr(np.array([0], dtype=np.int64)), *caches)
    logits = [out[0].numpy()[0, len(ids) - 1]]
    caches, generated, pos = list(out[1:]), [], len(ids)
    for i in range(new_tokens):
        generated.append(int(np.argmax(logits[-1])))
        if i == new_tokens - 1:
            break
        out = decode(
            arr(np.array([[generated[-1]]], dtype=np.int64)), arr(np.array([pos], dtype=np.int64)), *caches
        )
        caches, pos = list(out[1:]), pos + 1
        logits.append(out[0].numpy()[0, -1])
    return generated, logits
