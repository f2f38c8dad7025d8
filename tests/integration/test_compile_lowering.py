"""hilt's default lowering, built for real: logits match PyTorch, the rewrites are applied, every
matmul gets hilt's schedule without a tuning record, and that schedule is exact on awkward shapes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import (
    GPT2Config,
    GPT2ForSequenceClassification,
    LlamaConfig,
    LlamaForSequenceClassification,
)

from harness.compile import CompileOptions, compile_model
from harness.compile.export import example_input, to_relax
from harness.compile.lowering import LOWERING_NAME, prepare, schedule
from harness.compile.target import tvm_target
from harness.runtime.in_process import load_host_blas
from profiles.schema import load_profile

SEQ = 12
TOL = 1e-4


def _gpt2() -> GPT2ForSequenceClassification:
    torch.manual_seed(3)
    cfg = GPT2Config(
        vocab_size=64, n_positions=32, n_embd=48, n_layer=2, n_head=4, n_inner=96, num_labels=3,
        activation_function="gelu_new", pad_token_id=63, bos_token_id=0, eos_token_id=0,
    )  # fmt: skip
    return GPT2ForSequenceClassification(cfg).eval()


def _llama() -> LlamaForSequenceClassification:
    torch.manual_seed(4)
    cfg = LlamaConfig(
        vocab_size=64, hidden_size=48, intermediate_size=80, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=32, num_labels=3, pad_token_id=63,
    )  # fmt: skip
    return LlamaForSequenceClassification(cfg).eval()


MODELS = {"gpt2": _gpt2, "llama": _llama}


def _vm_logits(bundle_dir: Path, ids: np.ndarray) -> np.ndarray:
    import tvm

    from harness.compile.external_weights import BundleVM

    return BundleVM(bundle_dir)["main"](tvm.runtime.tensor(ids)).numpy()


# weight matmuls of the tiny models: GPT-2 c_attn, c_proj, c_fc, mlp c_proj per layer + the head;
# LLaMA q, k, v, o, gate, up, down per layer + the head
WEIGHT_MATMULS = {"gpt2": 2 * 4 + 1, "llama": 2 * 7 + 1}


@pytest.mark.parametrize("route", ["tir", "blas"])
@pytest.mark.parametrize("name", sorted(MODELS))
def test_default_lowering_matches_pytorch(name: str, route: str, tmp_path: Path) -> None:
    model = MODELS[name]()
    model.save_pretrained(tmp_path / name)
    opts = CompileOptions(seq_len=SEQ, use_cache=False, matmul=route)
    result = compile_model(tmp_path / name, "local", opts)
    info = result.tuning  # how this build was made (a byte-identical bundle keeps its first metadata)
    assert info.mode == "db" and info.lowering == LOWERING_NAME and info.trials == 0
    assert info.matmul == route
    assert info.kernels is not None
    kernels = info.kernels.as_dict()
    if route == "tir":  # q/k/v (or c_attn), QK^T, PV, out-proj, two or three FFN matmuls, the head
        assert kernels["tiled_matmul"] >= 5 and kernels["from_database"] == 0
        assert kernels["blas_matmuls"] == 0
    else:  # every weight matmul on OpenBLAS; QK^T and PV (activations only) stay tiled kernels
        assert kernels["blas_matmuls"] == WEIGHT_MATMULS[name]
        assert kernels["tiled_matmul"] >= 1  # one kernel per distinct attention shape
        load_host_blas()
    ids = result.bundle.input_array()
    got = _vm_logits(result.bundle.directory, ids)
    with torch.no_grad():
        want = model(
            torch.from_numpy(ids.copy()), attention_mask=torch.ones_like(torch.from_numpy(ids))
        ).logits
    np.testing.assert_allclose(got.reshape(-1), want.numpy().reshape(-1), atol=TOL, rtol=0)


def test_gelu_and_norm_powers_are_rewritten() -> None:
    """No scalar libm pow/tanh is left in the kernels: gelu_new's pow(x, 3) and tanh, RMSNorm's x**2."""
    import tvm

    target = tvm_target(load_profile("local"))
    for build in MODELS.values():
        model = build()
        ex = example_input(model, SEQ)
        mod = prepare(to_relax(model, ex), target)
        text = "\n".join(f.script() for _, f in mod.functions_items() if isinstance(f, tvm.tirx.PrimFunc))
        assert "T.pow(" not in text and "T.tanh(" not in text and "T.sigmoid(" not in text


@pytest.mark.parametrize(
    ("m", "n", "k", "transposed"), [(7, 10, 5, False), (12, 48, 32, True), (6, 3, 9, False)]
)
def test_tiled_matmul_is_exact_on_awkward_shapes(m: int, n: int, k: int, transposed: bool) -> None:
    """The schedule must be correct for widths the tiles do not divide and for a [N, K] weight."""
    import tvm
    from tvm import te
    from tvm.s_tir import dlight as dl

    from harness.compile.matmul_rule import tiled_matmul_rule

    a = te.placeholder((1, m, k), name="A")
    b = te.placeholder((n, k) if transposed else (k, n), name="B")
    bias = te.placeholder((n,), name="bias")
    r = te.reduce_axis((0, k), name="r")

    def weight(j: object, kk: object) -> object:
        return b[j, kk] if transposed else b[kk, j]

    c = te.compute((1, m, n), lambda x, i, j: te.sum(a[x, i, r] * weight(j, r), axis=r), name="matmul")
    out = te.compute((1, m, n), lambda x, i, j: te.tanh(c[x, i, j] + bias[j]) * 2.0, name="epilogue")
    func = te.create_prim_func([a, b, bias, out])
    target = tvm.target.Target({"kind": "llvm", "mcpu": "x86-64-v3", "num-cores": 2})
    mod = tvm.IRModule({"main": func})
    with target:
        mod = dl.ApplyDefaultSchedule(tiled_matmul_rule(lanes=8))(mod)
    assert mod["main"].attrs["tirx.is_scheduled"]
    lib = tvm.compile(mod, target=target)
    rng = np.random.default_rng(0)
    arrays = [rng.standard_normal([int(d) for d in t.shape]).astype("float32") for t in (a, b, bias)]
    res = tvm.runtime.tensor(np.zeros((1, m, n), dtype="float32"))
    lib["main"](*[tvm.runtime.tensor(x) for x in arrays], res)
    weight_kn = arrays[1].T if transposed else arrays[1]
    want = np.tanh(arrays[0] @ weight_kn + arrays[2]) * 2.0
    np.testing.assert_allclose(res.numpy(), want, atol=1e-5, rtol=1e-5)


def test_schedule_counts_every_kernel() -> None:
    target = tvm_target(load_profile("local"))
    model = _gpt2()
    mod = prepare(to_relax(model, example_input(model, SEQ)), target)
    _, info = schedule(mod, target, database=None, lanes=8, threads=1)
    parts = info.from_database + info.tiled_matmul + info.row_reduction + info.dlight + info.elementwise
    assert info.kernels == parts + info.unscheduled
    assert info.row_reduction >= 2  # the layer norms and the masked softmax
    assert info.elementwise >= 1  # GELU, bias, residual adds


def _row_kernel(kind: str, rows: int, width: int):  # noqa: ANN202 - (te tensors, numpy reference)
    from tvm import te, topi

    x = te.placeholder((1, rows, width), name="x")
    w = te.placeholder((width,), name="w")
    b = te.placeholder((width,), name="b")
    mask = te.placeholder((1, rows, 1), dtype="int8", name="mask")
    if kind == "layer_norm":
        args = [x, w, b, topi.nn.layer_norm(x, w, b, axis=[-1])]
    elif kind == "rms_norm":
        args = [x, w, topi.nn.rms_norm(x, w, axis=[-1])]
    else:  # the masked softmax of the GPT-2/LLaMA exports: rows the mask drops become 0
        sm = topi.nn.fast_softmax(x, axis=-1)
        keep = topi.cast(mask, "bool")
        args = [x, mask, topi.where(topi.logical_not(keep), topi.full_like(sm, 0.0), sm)]

    def reference(xv: np.ndarray, wv: np.ndarray, bv: np.ndarray, mv: np.ndarray) -> np.ndarray:
        if kind == "layer_norm":
            mu = xv.mean(-1, keepdims=True)
            return (xv - mu) / np.sqrt(xv.var(-1, keepdims=True) + 1e-5) * wv + bv
        if kind == "rms_norm":
            return xv / np.sqrt((xv * xv).mean(-1, keepdims=True) + 1e-5) * wv
        e = np.exp(xv - xv.max(-1, keepdims=True))
        return np.where(mv.astype(bool), e / e.sum(-1, keepdims=True), 0.0)

    return args, reference


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("width", [7, 12, 48, 100, 256])
@pytest.mark.parametrize("kind", ["layer_norm", "rms_norm", "masked_softmax"])
def test_row_reduction_rule_is_exact_on_awkward_shapes(kind: str, width: int, threads: int) -> None:
    """Widths the vector width divides get lane-wise partial sums (an rfactor); the others keep
    scalar chains; both must match numpy, serial or parallel over rows."""
    import tvm
    from tvm import te
    from tvm.s_tir import dlight as dl

    from harness.compile.reduction_rule import row_reduction_rule

    rows = 5
    args, reference = _row_kernel(kind, rows, width)
    target = tvm.target.Target({"kind": "llvm", "mcpu": "x86-64-v3", "num-cores": 2})
    with target:
        mod = dl.ApplyDefaultSchedule(row_reduction_rule(lanes=8, threads=threads))(
            tvm.IRModule({"main": te.create_prim_func(args)})
        )
    assert mod["main"].attrs["tirx.is_scheduled"], "the rule declined a row reduction"
    assert ("_rf" in mod.script()) == (width % 8 == 0 and width >= 16)
    lib = tvm.compile(mod, target=target)
    rng = np.random.default_rng(width)
    xv = rng.standard_normal((1, rows, width)).astype("float32") * 3.0
    wv, bv = rng.standard_normal(width).astype("float32"), rng.standard_normal(width).astype("float32")
    mv = (np.arange(rows) % 2).astype("int8").reshape(1, rows, 1)
    inputs = {"layer_norm": [xv, wv, bv], "rms_norm": [xv, wv], "masked_softmax": [xv, mv]}[kind]
    out = tvm.runtime.tensor(np.zeros((1, rows, width), dtype="float32"))
    lib["main"](*[tvm.runtime.tensor(a) for a in inputs], out)
    np.testing.assert_allclose(out.numpy(), reference(xv, wv, bv, mv), atol=2e-5, rtol=1e-4)


def test_row_reduction_rule_leaves_other_reductions_to_dlight() -> None:
    """A reduction over an outer axis (column sums) is not a row reduction: None, for DLight."""
    import tvm
    from tvm import te, topi

    from harness.compile.reduction_rule import row_reduction_rule

    x = te.placeholder((1, 16, 32), name="x")
    func = te.create_prim_func([x, topi.add(topi.sum(x, axis=1, keepdims=True), x)])
    target = tvm.target.Target({"kind": "llvm", "mcpu": "x86-64-v3", "num-cores": 1})
    with target:
        assert row_reduction_rule(lanes=8).apply(func, target, False) is None
