"""hilt's default CPU lowering: fast without per-candidate tuning trials.

Stock `relax.get_default_pipeline` leaves every kernel unscheduled (matmuls run as naive loops,
~300 of 322 ms on the demo GPT-2). This lowering, measured in ../shared/notes/tvm-0.27.md:

0. on the blas route (the profile's `matmul`), the weight matmuls become calls to the runtime's
   OpenBLAS (harness.compile.blas_offload) and are no kernels at all;
1. graph rewrites before legalization: `pow(x, 2|3)` as products (HF `gelu_new` and RMSNorm lower
   through `pow`, which TVM emits as a scalar libm call), `FastMathTransform` (softmax, exp, tanh
   as their vectorisable `topi.fast_*` forms; max difference ~5e-7);
2. legalize + fuse (the "zero" pipeline) and mark the weights layout-free, so tuned records may
   prepack them;
3. kernels: records of the board's tuning database where they match, hilt's schedules for the
   quantized-weight kernels (harness.compile.quant_matmul_rule), hilt's tiled matmul
   schedule (harness.compile.matmul_rule) for matmuls without one, hilt's row-reduction rule
   (harness.compile.reduction_rule: layer/RMS norm, softmax), DLight's CPU GEMV/Reduction rules
   for the other reductions, hilt's vectorising elementwise rule (harness.compile.elementwise_rule)
   for the injective rest; sigmoid as 1 / (1 + fast_exp(-x));
4. weight prepacking: the layout rewrites the records ask for are split out and folded into the
   constant weights at build time.

Steps 0-2 are GRAPH_PASSES, the one ordered list of Relax passes every compile task runs (`prepare`);
a new weight transform (weight quantization next) is one entry there. Steps 3-4 are `schedule`, then
`build` lowers and links without fusing again. `prepare` is also what tuning extracts its tasks from,
so records are keyed by the same workloads the build looks up.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import Any

from harness.compile.options import CompileOptions
from harness.errors import CompileError

log = logging.getLogger(__name__)

# Bump when a change alters the kernels this lowering emits (part of the bundle cache key).
LOWERING_NAME = "hilt-cpu-v5"
BLAS_ATTR = "hilt.blas_matmuls"  # module attribute: how many matmuls `prepare` put on hilt.blas


@dataclass(frozen=True)
class LoweringInfo:
    """How the kernels of one build were scheduled (goes into the bundle metadata; counts an older
    lowering did not have read as 0)."""

    lowering: str
    kernels: int = 0  # PrimFuncs in the lowered module
    from_database: int = 0  # scheduled by a tuning record
    tiled_matmul: int = 0  # scheduled by hilt's matmul rule
    dlight: int = 0  # scheduled by a DLight CPU rule
    elementwise: int = 0  # vectorised by hilt's elementwise rule
    unscheduled: int = 0  # left as TVM's default loop nests (injective ops, mostly)
    blas_matmuls: int = 0  # weight matmuls on the runtime's OpenBLAS (the blas route): no kernels
    row_reduction: int = 0  # norms and softmaxes scheduled by hilt's row-reduction rule
    quant_matmul: int = 0  # weight-quant kernels (dequantize fused) scheduled by hilt's quant rule

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _power_as_products(bb: Any, call: Any) -> Any:
    """x ** 2 and x ** 3 as multiplications (vectorisable, exact); other exponents: TVM's own."""
    import tvm
    from tvm import topi
    from tvm.ir.expr import Constant

    base, exponent = call.args
    if isinstance(exponent, Constant) and exponent.value.numpy().size == 1:
        value = float(exponent.value.numpy().reshape(()))
        if value == 2.0:
            return bb.call_te(lambda x: topi.multiply(x, x), base, primfunc_name_hint="square")
        if value == 3.0:
            return bb.call_te(
                lambda x: topi.multiply(topi.multiply(x, x), x), base, primfunc_name_hint="cube"
            )
    default = tvm.ir.Op.get("relax.power").get_attr("FLegalize")
    return default(bb, call)


def _fast_sigmoid(bb: Any, call: Any) -> Any:
    """sigmoid(x) = 1 / (1 + fast_exp(-x)): topi.sigmoid calls the scalar libm exp (LLaMA's SiLU ran
    below 1 GFLOP/s); fast_exp is the same polynomial FastMathTransform uses for exp."""
    from tvm import topi

    def compute(x: Any) -> Any:
        one = topi.full_like(x, 1.0)
        return topi.divide(one, topi.add(one, topi.fast_exp(topi.negative(x))))

    return bb.call_te(compute, call.args[0], primfunc_name_hint="fast_sigmoid")


@dataclass(frozen=True)
class PassContext:
    """What a graph pass may depend on besides the module: the target and the build's options, whole."""

    target: Any
    options: CompileOptions = CompileOptions()


@dataclass(frozen=True)
class GraphPass:
    """One step of the Relax pipeline every compile task runs between export and scheduling."""

    name: str
    run: Callable[[Any, PassContext], Any]  # (IRModule, context) -> IRModule


WEIGHTS_ATTR = "hilt.weights"  # module attribute: JSON of the weight-quant pass's WeightQuantInfo


def _weight_quant(mod: Any, ctx: PassContext) -> Any:
    """fp32 weight constants -> the options' weight format, dequantized inside the kernels that read
    them (harness.compile.weight_quant); the blas route then sees only what stayed fp32."""
    if ctx.options.weights == "fp32":
        return mod
    import json
    from dataclasses import asdict

    from harness.compile.weight_quant import quantize_weights
    from harness.quant import weight_format

    mod, info = quantize_weights(mod, weight_format(ctx.options.weights), ctx.options.group_size)
    return mod.with_attr(WEIGHTS_ATTR, json.dumps(asdict(info)))


def _kv_in_place(mod: Any, ctx: PassContext) -> Any:
    """A causal step's cache writes in place (harness.compile.kv_in_place); classifiers have none."""
    from harness.compile.kv_in_place import write_caches_in_place

    return write_caches_in_place(mod)[0]


def _blas_offload(mod: Any, ctx: PassContext) -> Any:
    """The blas route: weight matmuls become hilt.blas calls (no kernels, so fewer tuning tasks)."""
    from tvm import relax

    if ctx.options.matmul_route != "blas":
        return mod
    from harness.compile.blas_offload import offload_matmuls

    mod, count = offload_matmuls(relax.transform.CanonicalizeBindings()(mod))
    return mod.with_attr(BLAS_ATTR, count)


def _rewrites(mod: Any, ctx: PassContext) -> Any:
    """Graph rewrites before legalization: inference-only ops decomposed, softmax/exp/tanh as their
    vectorisable fast forms."""
    import tvm
    from tvm import relax

    with ctx.target:
        return tvm.transform.Sequential(
            [
                relax.transform.DecomposeOpsForInference(),
                relax.transform.CanonicalizeBindings(),
                relax.transform.FastMathTransform(),
            ]
        )(mod)


def _legalize_and_fuse(mod: Any, ctx: PassContext) -> Any:
    """Relax ops -> fused TIR kernels (pow 2|3 as products, sigmoid via fast_exp)."""
    import tvm
    from tvm import relax

    with ctx.target:
        return tvm.transform.Sequential(
            [
                relax.transform.LegalizeOps(
                    customize_legalize_map={"relax.power": _power_as_products, "relax.sigmoid": _fast_sigmoid}
                ),
                relax.get_pipeline("zero"),
            ]
        )(mod)


def _layout_free_weights(mod: Any, ctx: PassContext) -> Any:
    """Mark the constant weights layout-free, so tuning records may prepack them (`schedule` folds it)."""
    from tvm import relax

    with ctx.target:
        return relax.transform.AttachAttrLayoutFreeBuffers()(mod)


# The Relax pipeline of every task (classifier forward, causal prefill + decode), in order. A new weight
# transform is one entry here, on the imported graph where the weights are still constants of
# `matmul(x, W)`: weight quantization is the first (the blas route then sees what is left in fp32).
# An entry that changes the kernels of every build bumps LOWERING_NAME.
GRAPH_PASSES: tuple[GraphPass, ...] = (
    GraphPass("weight-quant", _weight_quant),
    GraphPass("kv-in-place", _kv_in_place),
    GraphPass("blas-offload", _blas_offload),
    GraphPass("rewrites", _rewrites),
    GraphPass("legalize-fuse", _legalize_and_fuse),
    GraphPass("layout-free-weights", _layout_free_weights),
)


def prepare(
    mod: Any, target: Any, options: CompileOptions | None = None, *, matmul: str | None = None
) -> Any:
    """Relax import -> fused TIR kernels with layout-free weights (what tuning and the build see):
    GRAPH_PASSES in order. `matmul` overrides the options' route (tests, tuning experiments)."""
    opts = options or CompileOptions()
    ctx = PassContext(target=target, options=opts if matmul is None else replace(opts, matmul=matmul))
    for graph_pass in GRAPH_PASSES:
        mod = graph_pass.run(mod, ctx)
        log.debug("graph pass %s done", graph_pass.name)
    return mod


def _scheduled(mod: Any) -> set[str]:
    import tvm

    return {
        gv.name_hint
        for gv, func in mod.functions_items()
        if isinstance(func, tvm.tirx.PrimFunc) and func.attrs and func.attrs.get("tirx.is_scheduled", False)
    }


def _kernels(mod: Any) -> set[str]:
    import tvm

    return {gv.name_hint for gv, func in mod.functions_items() if isinstance(func, tvm.tirx.PrimFunc)}


def schedule(
    mod: Any, target: Any, *, database: Any | None, lanes: int, threads: int
) -> tuple[Any, LoweringInfo]:
    """Give every kernel of a `prepare`d module a schedule, then fold the weight prepacking."""
    import tvm
    from tvm import relax
    from tvm.s_tir import dlight as dl

    from harness.compile.elementwise_rule import elementwise_rule
    from harness.compile.matmul_rule import tiled_matmul_rule
    from harness.compile.quant_matmul_rule import quant_matmul_rule
    from harness.compile.reduction_rule import row_reduction_rule

    kernels = _kernels(mod)
    blas = int(mod.attrs[BLAS_ATTR]) if mod.attrs is not None and BLAS_ATTR in mod.attrs else 0
    if database is not None:
        with target, database, tvm.transform.PassContext(opt_level=3):
            mod = relax.transform.MetaScheduleApplyDatabase(enable_warning=False)(mod)
    from_db = _scheduled(mod)
    done = set(from_db)

    def apply(*rules: Any) -> set[str]:  # one pass; the kernels it newly scheduled
        nonlocal mod
        with target:
            mod = dl.ApplyDefaultSchedule(*rules)(mod)
        new = _scheduled(mod) - done
        done.update(new)
        return new

    quant = apply(quant_matmul_rule(lanes, threads))
    tiled = apply(tiled_matmul_rule(lanes, threads))
    rows = apply(row_reduction_rule(lanes, threads))
    by_dlight = apply(dl.cpu.GEMV(), dl.cpu.Reduction())
    vectorised = apply(elementwise_rule(lanes, threads))
    if from_db:  # only tuning records ask for weight layout rewrites; hilt's rules pack in-kernel
        try:
            with target:
                mod = relax.transform.SplitLayoutRewritePreproc()(mod)
        except RuntimeError as exc:  # a kernel TVM's block analysis rejects (e.g. a KV-cache scatter)
            log.warning("weights not prepacked (the records' layouts are applied in-kernel): %s",
                        str(exc).splitlines()[0])  # fmt: skip
    with target:
        mod = relax.transform.FoldConstant()(mod)
    info = LoweringInfo(
        lowering=LOWERING_NAME,
        kernels=len(kernels),
        from_database=len(from_db),
        tiled_matmul=len(tiled),
        dlight=len(by_dlight),
        elementwise=len(vectorised),
        unscheduled=len(kernels) - len(done),
        blas_matmuls=blas,
        row_reduction=len(rows),
        quant_matmul=len(quant),
    )
    log.info("lowering %s", info)
    return mod, info


def lanes_of(simd_width_bytes: int) -> int:
    """fp32 elements per vector register (at least 4: the narrowest SIMD hilt targets is 128-bit)."""
    return max(4, int(simd_width_bytes) // 4)


def build(mod: Any, target: Any) -> Any:
    """tvm.compile of a module already legalized, fused and scheduled: only the lowering passes run,
    so fusion cannot merge scheduled kernels into new, unscheduled ones."""
    import tvm
    from tvm.relax.backend.cpu_generic import pipeline as cpu_generic

    @tvm.transform.module_pass(opt_level=0)
    def lower_only(m: Any, _ctx: Any) -> Any:
        with target:
            passes = cpu_generic.dataflow_lower_passes(target) + cpu_generic.finalize_passes(target)
            return tvm.transform.Sequential(passes)(m)

    try:
        return tvm.compile(mod, target=target, relax_pipeline=lower_only)
    except Exception as exc:  # TVM raises its own error types
        raise CompileError(f"TVM build failed for {target}: {type(exc).__name__}: {exc}") from exc
