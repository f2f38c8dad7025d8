"""Which subcommands exist: built ones are imported from their modules, planned ones refuse.

Each built subcommand lives in its own `harness/cli/cmd_<name>.py` exposing `register(app)`.
"""

from __future__ import annotations

import importlib

import typer

from harness.cli.common import not_built

# name -> (issue that builds it, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("issue 2", "Train the bearing-fault demo models and run the main job on them."),
    "prune": ("issue 3", "Run a cascade pruning schedule on a model."),
    "sia": ("issue 4", "Check the Structural Independence Assumption per granularity."),
    "compile": ("issue 5", "Build a pruned model with TVM for a board profile."),
    "runtime": ("issue 5", "Build the TVM board runtime and native runner for an arch."),
    "boards": ("issue 6", "List board profiles and farm boards; check they answer."),
    "bench": ("issue 6", "Measure one artifact bundle on one board."),
    "tune": ("issue 8", "Auto-tune a cascade schedule for a board with Optuna."),
    "nightly": ("issue 9", "Nightly regression of bundles across a device farm."),
    "report": ("issue 9", "Write a deployment report for a tuning study."),
    "farm": ("issue 7", "Bring up emulated aarch64/riscv64 boards."),
}


def _refuse(app: typer.Typer, name: str, issue: str, help_text: str) -> None:
    def _cmd(ctx: typer.Context) -> None:
        not_built(name, issue)

    _cmd.__doc__ = f"{help_text} [not built yet]"
    app.command(
        name=name,
        context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    )(_cmd)


def register(app: typer.Typer) -> None:
    """Add every subcommand to the app, built or planned."""
    for name, (issue, help_text) in SUBCOMMANDS.items():
        try:
            module = importlib.import_module(f"harness.cli.cmd_{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"harness.cli.cmd_{name}":
                raise
            _refuse(app, name, issue, help_text)
            continue
        module.register(app)
