"""`hilt farm`: bring up, inspect and stop the emulated aarch64/riscv64 board farm."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from harness.cli.common import console
from harness.errors import FarmError

if TYPE_CHECKING:
    from device_agents.emulated import FarmPaths

farm_app = typer.Typer(help="Emulated aarch64/riscv64 boards (qemu-user chroots) over SSH and serial.")


def _paths(state_dir: Path | None) -> FarmPaths:
    from device_agents.emulated import FarmPaths  # lazy: keeps `hilt --help` fast

    default = FarmPaths.default()
    return default if state_dir is None else FarmPaths(images=default.images, state=state_dir)


STATE_OPT = typer.Option(None, "--state-dir", help="Where this farm keeps boards, keys and its farm file.")


@farm_app.command("up")
def up_cmd(
    arch: str = typer.Option("aarch64,riscv64", "--arch", help="Comma-separated: aarch64, riscv64."),
    mode: str = typer.Option("user", "--mode", help="user (qemu-user chroot) or system (qemu-system VM)."),
    count: int = typer.Option(1, "--count", help="Boards per arch."),
    mirror: str | None = typer.Option(None, "--mirror", help="Debian mirror (default: the one apt uses)."),
    no_runtime: bool = typer.Option(False, "--no-runtime", help="Do not install the TVM board runtime."),
    state_dir: Path | None = STATE_OPT,
) -> None:
    """Build the rootfs images once (cached) and start the boards; running boards are left alone."""
    from device_agents.emulated import parse_arches, up

    if mode not in ("user", "system"):
        raise FarmError(f"unknown --mode '{mode}'; choose user or system")
    paths = _paths(state_dir)
    with Progress(
        TextColumn("[bold]{task.fields[arch]} rootfs[/bold]"),
        BarColumn(),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as bar:
        tasks: dict[str, TaskID] = {}

        def progress(board_arch: str, fraction: float, text: str) -> None:
            if board_arch not in tasks:
                tasks[board_arch] = bar.add_task("", total=1.0, arch=board_arch)
            bar.update(tasks[board_arch], completed=fraction, description=text[:50])

        result = up(parse_arches(arch), mode, paths, count, mirror, not no_runtime, progress)
    for board in result.state.boards:
        how = "[green]started[/green]" if board.name in result.started else "already up"
        console.print(
            f"{how} {board.name} ({board.arch}) ssh 127.0.0.1:{board.ssh_port} "
            f"serial {board.serial_host} runtime {(board.runtime_sha256 or '-')[:12]}",
            soft_wrap=True,
        )
    console.print(f"farm file: {paths.farm_file}")


@farm_app.command("status")
def status_cmd(state_dir: Path | None = STATE_OPT) -> None:
    """List the farm's boards and whether each of their processes still runs."""
    from device_agents.emulated import status

    paths = _paths(state_dir)
    boards = status(paths)
    if not boards:
        console.print("no farm boards running")
        return
    for b in boards:
        dead = [role for role, ok in b.processes.items() if not ok]
        state = "[green]running[/green]" if b.running else f"[red]degraded[/red] (dead: {', '.join(dead)})"
        console.print(
            f"{b.name} {b.arch} {b.mode} {state} ssh 127.0.0.1:{b.ssh_port} serial {b.serial_host} "
            f"runtime {(b.runtime or '-')[:12]}",
            soft_wrap=True,
            highlight=False,
        )
    console.print(f"farm file: {paths.farm_file}")


@farm_app.command("down")
def down_cmd(
    board: list[str] = typer.Argument(None, help="Boards to stop (default: all)."),
    state_dir: Path | None = STATE_OPT,
) -> None:
    """Stop the farm's boards (only processes it started) and unmount everything it mounted."""
    from device_agents.emulated import down

    stopped = down(_paths(state_dir), board or None)
    console.print(f"stopped: {', '.join(stopped)}" if stopped else "no farm boards were running")


@farm_app.command("reboot")
def reboot_cmd(
    board: str = typer.Argument(..., help="Board name."), state_dir: Path | None = STATE_OPT
) -> None:
    """Power-cycle a system-mode board (hard reset) and wait until it answers SSH again."""
    from device_agents.emulated import reboot

    seconds = reboot(board, _paths(state_dir))
    console.print(f"{board} is back after {seconds:.1f} s")


def register(app: typer.Typer) -> None:
    app.add_typer(farm_app, name="farm")
