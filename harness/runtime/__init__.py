"""The board runtime: libtvm_ffi, libtvm_runtime and hilt-runner built for one arch, cached."""

from harness.runtime.build import (
    ARCHES,
    RuntimePackage,
    build_runtime,
    runner_command,
)

__all__ = ["ARCHES", "RuntimePackage", "build_runtime", "runner_command"]
