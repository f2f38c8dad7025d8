"""The CLI skeleton: versions, planned subcommands refuse honestly, errors become exit 2."""

from __future__ import annotations

import subprocess
import sys

import pytest

from harness.cli import registry
from harness.cli.main import main


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "harness.cli.main", *args], capture_output=True, text=True, timeout=120
    )


def test_version_lists_stack() -> None:
    out = _run("--version")
    assert out.returncode == 0
    for name in ("hilt", "torch", "transformers", "tvm"):
        assert any(line.startswith(f"{name} ") for line in out.stdout.splitlines()), out.stdout


def test_help_lists_every_planned_subcommand() -> None:
    out = _run("--help")
    assert out.returncode == 0
    for name in ("demo", "prune", "sia", "compile", "boards", "bench", "tune", "nightly", "report", "farm"):
        assert name in out.stdout


def test_planned_subcommand_refuses_with_exit_2(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A subcommand in the plan without its cmd_<name> module refuses in one line, exit 2."""
    from harness.cli import main as main_mod

    monkeypatch.setattr(main_mod.app, "registered_commands", list(main_mod.app.registered_commands))
    monkeypatch.setitem(registry.SUBCOMMANDS, "planned", ("issue 99", "Something for later."))
    assert main(["planned", "--anything", "x"]) == 2
    err = capsys.readouterr().err
    assert err.strip() == "error: `hilt planned` is not built yet (issue 99); nothing was run"


def test_every_subcommand_in_the_plan_is_built() -> None:
    import importlib

    for name in registry.SUBCOMMANDS:
        assert hasattr(importlib.import_module(f"harness.cli.cmd_{name}"), "register"), name


def test_unknown_subcommand_is_usage_error() -> None:
    out = _run("no-such-command")
    assert out.returncode == 2
    assert out.stderr.strip() == "error: hilt: No such command 'no-such-command'. (see hilt --help)"
