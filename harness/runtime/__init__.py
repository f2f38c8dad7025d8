"""The board runtime: libtvm_ffi, libtvm_runtime, hilt-runner, libhilt_blas; built per arch, cached."""

from harness.runtime.build import (
    ARCHES,
    BLAS_FILE,
    RuntimePackage,
    build_runtime,
    runner_command,
)

__all__ = ["ARCHES", "BLAS_FILE", "RuntimePackage", "build_runtime", "runner_command"]
