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


def _unbuilt() -> list[str]:
    import importlib

    names = []
    for name in registry.SUBCOMMANDS:
        try:
            importlib.import_module(f"harness.cli.cmd_{name}")
        except ModuleNotFoundError:
            names.append(name)
    return names


@pytest.mark.parametrize("name", _unbuilt() or ["<none>"])
def test_unbuilt_subcommand_refuses_with_exit_2(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    if name == "<none>":
        pytest.skip("every subcommand is built")
    assert main([name, "--anything", "x"]) == 2
    err = capsys.readouterr().err
    assert "not built yet" in err and len(err.strip().splitlines()) == 1


def test_unknown_subcommand_is_usage_error() -> None:
    out = _run("no-such-command")
    assert out.returncode == 2
    assert "No such command" in out.stderr
