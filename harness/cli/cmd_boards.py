"""`hilt boards list` / `hilt boards check`: what boards exist, and whether each answers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from harness.cli.common import console


def _list(
    farm: Path | None = typer.Option(None, "--farm", help="Farm file (default: $HILT_FARM, ./farm.toml)."),
) -> None:
    """Board profiles, and the boards of the farm."""
    from device_agents.inventory import find_farm
    from profiles.schema import available_profiles, load_profile

    table = Table(title="board profiles")
    table.add_column("profile", no_wrap=True)
    for col in ("arch", "cpu", "cores", "budget MB", "TVM target", "transport"):
        table.add_column(col, overflow="fold")
    for name in available_profiles():
        p = load_profile(name)
        target = p.target.as_tvm()
        target_text = (
            target if isinstance(target, str) else f"{target.get('mtriple', '')} {target.get('mcpu', '')}"
        )
        emu = " (emulated)" if p.emulated else ""
        table.add_row(
            name,
            p.arch + emu,
            p.cpu.model,
            str(p.cpu.cores),
            str(p.memory.budget_mb),
            target_text,
            p.transport.kind,
        )
    console.print(table)
    f = find_farm(farm)
    boards = Table(title=f"farm: {f.source}")
    for col in ("board", "profile", "transport", "address"):
        boards.add_column(col, no_wrap=col != "address", overflow="fold")
    for b in f.boards:
        boards.add_row(b.name, b.profile.name, b.transport.kind, b.transport.address())
    console.print(boards)


def _check(
    farm: Path | None = typer.Option(None, "--farm", help="Farm file (default: $HILT_FARM, ./farm.toml)."),
    pool: str | None = typer.Option(None, "--pool", help="Board pool database URL (default: $HILT_POOL)."),
) -> None:
    """Say hello to every farm board in parallel and say which are busy; exit 1 if any is unreachable."""
    from device_agents.bench import check_boards
    from device_agents.inventory import find_farm
    from device_agents.pool import BoardPool

    statuses = check_boards(find_farm(farm), pool=BoardPool(pool))
    table = Table(title="boards")
    for col in (
        "board",
        "profile",
        "transport",
        "state",
        "arch",
        "cpu",
        "mem MB",
        "python",
        "power",
        "runtimes",
    ):
        table.add_column(col)
    for s in statuses:
        h = s.hello
        power = ", ".join(p["source"] for p in h.get("power_sources", [])) or "model"
        runtimes = ", ".join(r.get("arch", r["hash"][:8]) for r in h.get("runtimes", [])) or "-"
        state = "[green]ok[/green]" if s.reachable else "[red]down[/red]"
        table.add_row(
            s.board, s.profile, s.transport, state, str(h.get("arch", "")), str(h.get("cpu_model", "")),
            str((h.get("memory_mb") or {}).get("total", "")), str(h.get("python", "")),
            power if s.reachable else "", runtimes if s.reachable else "",
        )  # fmt: skip
    console.print(table)
    for s in statuses:
        if s.busy:
            console.print(f"[yellow]{s.busy}[/yellow]", highlight=False, soft_wrap=True)
        if s.line:
            console.print(f"{s.board} line: {line_summary(s.line)}", highlight=False, soft_wrap=True)
    for s in statuses:
        if not s.reachable:
            console.print(f"[red]{s.board} unreachable:[/red] {s.error}", highlight=False, soft_wrap=True)
    if not all(s.reachable for s in statuses):
        # SystemExit, not typer.Exit: main() runs typer with standalone_mode=False and drops its return code.
        raise SystemExit(1)


def line_summary(line: dict[str, Any]) -> str:
    """One line about a serial line's quality: the host's counts, then what the agent saw."""
    sent, failed = int(line.get("frames_sent", 0)), int(line.get("frames_failed", 0))
    text = (
        f"{sent} frames sent, {failed} failed ({100.0 * failed / sent if sent else 0.0:.0f} %), "
        f"{line.get('retries', 0)} retries, {line.get('crc_errors', 0)} CRC failures and "
        f"{line.get('resyncs', 0)} resyncs here"
    )
    agent = line.get("agent") or {}
    if agent:
        bad = int(agent.get("crc_errors", 0)) + int(agent.get("stale_drops", 0))
        text += (
            f"; the agent saw {bad} damaged of {bad + int(agent.get('frames', 0))} frames "
            f"({agent.get('resyncs', 0)} resyncs) since it started"
        )
    if line.get("goodput_bps"):
        text += f"; upload goodput {float(line['goodput_bps']) / 1e3:.1f} kB/s"
    return text


def register(app: typer.Typer) -> None:
    boards = typer.Typer(help="List board profiles and farm boards; check they answer.", no_args_is_help=True)
    boards.command("list")(_list)
    boards.command("check")(_check)
    app.add_typer(boards, name="boards")
