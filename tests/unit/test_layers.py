"""The import contract in pyproject.toml is live: the tree keeps it, and one upward import breaks it."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("harness", "tuner", "device_agents", "reports", "profiles")
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
    assert "2 kept, 0 broken" in out.stdout


def test_an_upward_import_breaks_the_contract(tmp_path: Path) -> None:
    root = _copy_tree(tmp_path)
    clean = _lint(root)
    assert clean.returncode == 0, clean.stdout + clean.stderr  # the copy alone is fine
    victim = root / "harness" / "models" / "families.py"
    victim.write_text(victim.read_text() + "\n\ndef _up() -> None:\n    import tuner.store  # noqa: F401\n")
    broken = _lint(root)
    assert broken.returncode != 0
    assert "BROKEN" in broken.stdout and "harness.models.families -> tuner.store" in broken.stdout
