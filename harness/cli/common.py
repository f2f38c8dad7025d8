"""Shared pieces of the CLI: the consoles."""

from __future__ import annotations

from rich.console import Console

console = Console()
err_console = Console(stderr=True)
