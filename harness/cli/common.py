"""Shared pieces of the CLI: the console and the not-built-yet guard."""

from __future__ import annotations

from rich.console import Console

from harness.errors import NotBuiltError

console = Console()
err_console = Console(stderr=True)


def not_built(command: str, issue: str) -> None:
    """Refuse a planned subcommand honestly instead of printing fake output."""
    raise NotBuiltError(f"`hilt {command}` is not built yet ({issue}); nothing was run")
