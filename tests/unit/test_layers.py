"""The import contract in pyproject.toml is live: the tree keeps it, and one upward import breaks it."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("harness", "tuner", "device_agents", "reports", "profiles", "hilt_base")
LINT = Path(sys.executable).with_name("lint-imports")


def _lint(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(LINT), "--no-cache", "--config", str(root / "pyproject.toml")],
        cwd=root,
        env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
    )


def _copy_tree(dest: Path) -> Path:
    for name in PACKAGES:
        shutil.copytree(
            ROOT / name, dest / name, ignore=shutil.ignore_patterns("__pycache__", "*.so", "*.pyz")
        )
    shutil.copy(ROOT / "pyproject.toml", dest / "pyproject.toml")
    return dest


def test_tree_keeps_the_layer_contract() -> None:
    out = _lint(ROOT)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "3 kept, 0 broken" in out.stdout


def _append_import(path: Path, module: str) -> None:
    path.write_text(path.read_text() + f"\n\ndef _up() -> None:\n    import {module}  # noqa: F401\n")


def test_an_upward_import_breaks_the_contract(tmp_path: Path) -> None:
    """With no `ignore_imports`, every arrow up is reported, including the two the contract once excused
    (host code hashing through the agent's wire module, profiles raising harness's errors)."""
    root = _copy_tree(tmp_path)
    clean = _lint(root)
    assert clean.returncode == 0, clean.stdout + clean.stderr  # the copy alone is fine
    assert "ignore_imports" not in (root / "pyproject.toml").read_text()
    _append_import(root / "harness" / "models" / "families.py", "tuner.store")
    _append_import(root / "harness" / "cache.py", "device_agents.agent.wire")
    _append_import(root / "profiles" / "schema.py", "harness.errors")
    _append_import(root / "hilt_base" / "hashing.py", "profiles.schema")
    broken = _lint(root)
    assert broken.returncode != 0
    for arrow in (
        "harness.models.families -> tuner.store",
        "harness.cache -> device_agents.agent.wire",
        "profiles.schema -> harness.errors",
        "hilt_base.hashing -> profiles.schema",
    ):
        assert arrow in broken.stdout, arrow + "\n" + broken.stdout
