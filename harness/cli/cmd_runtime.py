"""`hilt runtime build --arch ARCH`: build the board runtime (libtvm_ffi, libtvm_runtime, hilt-runner)."""

from __future__ import annotations

import typer

from harness.cli.common import console

runtime_app = typer.Typer(
    help="Build the TVM board runtime and native runner for an arch.", no_args_is_help=True
)


@runtime_app.command("build")
def _build(
    arch: list[str] = typer.Option(..., "--arch", help="x86_64, aarch64 or riscv64 (repeatable)."),
    force: bool = typer.Option(False, "--force", help="Rebuild even if the cache has it."),
    jobs: int = typer.Option(0, "--jobs", min=0, help="Parallel compile jobs (0: all cores)."),
) -> None:
    """Build (or fetch from the cache) the runtime for each arch and print where it is."""
    from harness.runtime import build_runtime

    for one in arch:
        with console.status(f"building the {one} runtime (minutes on 2 cores)…"):
            pkg = build_runtime(one, force=force, jobs=jobs or None)
        how = f"built in {pkg.build_seconds:.1f} s" if pkg.build_seconds is not None else "from cache"
        console.print(f"[bold]{pkg.arch}[/bold] runtime {pkg.sha256[:12]} ({how}): {pkg.directory}")


def register(app: typer.Typer) -> None:
    app.add_typer(runtime_app, name="runtime")
