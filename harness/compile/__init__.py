"""Compile a (pruned) model for a board profile with TVM into a content-addressed artifact bundle."""

from harness.compile.bundle import Bundle, BundleMetadata, InputSpec, TuningInfo, bundle_hash, load_bundle
from harness.compile.compiler import CompileResult, bundles_root, compile_model
from harness.compile.options import CompileOptions

__all__ = [
    "Bundle",
    "BundleMetadata",
    "CompileOptions",
    "CompileResult",
    "InputSpec",
    "TuningInfo",
    "bundle_hash",
    "bundles_root",
    "compile_model",
    "load_bundle",
]
