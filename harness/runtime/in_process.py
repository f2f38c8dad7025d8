"""hilt.blas.* inside this Python process, for running blas-route bundles with the wheel's TVM runtime
(per-kernel profiling, in-process checks): the host runtime's libhilt_blas binds to the tvm-ffi the
process has already loaded (same soname), so its functions land in the same registry."""

from __future__ import annotations

import ctypes

from harness.errors import CompileError
from harness.runtime.build import BLAS_FILE, build_runtime
from harness.runtime.toolchains import host_arch


def load_host_blas(threads: int = 1) -> None:
    """Register hilt.blas.* here (once) and size OpenBLAS's pool to `threads`."""
    import tvm

    if tvm.get_global_func("hilt.blas.matmul", allow_missing=True) is None:
        pkg = build_runtime(host_arch())
        if not pkg.has_blas:
            raise CompileError(
                f"the {host_arch()} runtime has no {BLAS_FILE} (no static OpenBLAS at build time); "
                "install libopenblas-pthread-dev and rebuild it"
            )
        ctypes.CDLL(str(pkg.directory / BLAS_FILE), mode=ctypes.RTLD_GLOBAL)
    tvm.get_global_func("hilt.blas.set_num_threads")(threads)
