"""TVM target and cross-compiler for a board profile."""

from __future__ import annotations

import shutil
from typing import Any

from harness.errors import CompileError
from profiles.schema import BoardProfile


def tvm_target(profile: BoardProfile):  # noqa: ANN201 - tvm.target.Target
    """The profile's target (tag or dict form; TVM 0.27 rejects CLI strings).

    A dict target gets `num-cores` from the profile's CPU when it has none: MetaSchedule needs it,
    and tuning records only match a target equal to the one they were tuned for.
    """
    from tvm.target import Target

    spec: Any = profile.target.as_tvm()
    if isinstance(spec, dict) and "num-cores" not in spec:
        spec = {**spec, "num-cores": profile.cpu.cores}
    try:
        return Target(spec)
    except Exception as exc:  # TVM raises its own error types for bad targets
        raise CompileError(f"profile {profile.name}: TVM rejects target {spec!r}: {exc}") from exc


def export_kwargs(profile: BoardProfile) -> dict[str, Any]:
    """`export_library` keyword arguments: the cross compiler for foreign arches, none for the host."""
    from tvm.support import cc

    prefix = profile.toolchain.prefix
    if not prefix:
        return {}
    compiler = f"{prefix}g++"
    if shutil.which(compiler) is None:
        raise CompileError(
            f"profile {profile.name} needs {compiler}; install g++-{prefix.rstrip('-')} "
            "(scripts/system-deps.sh does it)"
        )
    options = list(profile.toolchain.extra_ldflags) or None
    return {"fcompile": cc.cross_compiler(compiler, options=options)}
