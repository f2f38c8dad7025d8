"""The CLI skeleton: versions, planned subcommands refuse honestly, errors become exit 2."""

from __future__ import annotations

import subprocess
import sys

from harness.cli import registry


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


def test_every_subcommand_is_built() -> None:
    import importlib

    for name in registry.SUBCOMMANDS:
        assert hasattr(importlib.import_module(f"harness.cli.cmd_{name}"), "register"), name


def test_unknown_subcommand_is_usage_error() -> None:
    out = _run("no-such-command")
    assert out.returncode == 2
    assert out.stderr.strip() == "error: hilt: No such command 'no-such-command'. (see hilt --help)"
