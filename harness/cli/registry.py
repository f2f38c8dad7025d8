"""The subcommands: each lives in its own `harness/cli/cmd_<name>.py` exposing `register(app)`.

Adding a subcommand is adding its module and its name here.
"""

from __future__ import annotations

import importlib

import typer

SUBCOMMANDS = (
    "demo", "models", "prune", "sia", "compile", "runtime", "boards", "bench", "tune", "nightly", "report",
    "farm",
)  # fmt: skip


def register(app: typer.Typer) -> None:
    """Add every subcommand to the app."""
    for name in SUBCOMMANDS:
        importlib.import_module(f"harness.cli.cmd_{name}").register(app)
