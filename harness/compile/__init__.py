"""Compile a (pruned) model for a board profile with TVM into a content-addressed artifact bundle."""

from harness.compile.bundle import Bundle, BundleMetadata, InputSpec, bundle_hash, load_bundle
from harness.compile.compiler import CompileOptions, CompileResult, bundles_root, compile_model

__all__ = [
    "Bundle",
    "BundleMetadata",
    "CompileOptions",
    "CompileResult",
    "InputSpec",
    "bundle_hash",
    "bundles_root",
    "compile_model",
    "load_bundle",
]
