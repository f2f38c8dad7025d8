"""Agents that differ from the shipped one (another protocol, an edited file), packed like the real
one, so the transports are tested against exactly the kind of file they copy to a board."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

from device_agents.agent import pack


def packed_variant(tmp_path: Path, edit: Callable[[str], str], module: str = "wire.py") -> Path:
    """Copy the agent package, apply `edit` to one of its files, pack it; the .pyz path."""
    src = tmp_path / "agent-src"
    shutil.rmtree(src, ignore_errors=True)
    shutil.copytree(pack.PACKAGE_DIR, src, ignore=shutil.ignore_patterns("__pycache__"))
    target = src / module
    text = target.read_text()
    edited = edit(text)
    assert edited != text, f"the edit changed nothing in {module}"
    target.write_text(edited)
    return Path(pack.build_pyz(str(tmp_path / "variant"), str(src)))


def other_protocol(tmp_path: Path, version: int) -> Path:
    from device_agents.agent import wire

    old = f"PROTOCOL_VERSION = {wire.PROTOCOL_VERSION}\n"
    return packed_variant(tmp_path, lambda t: t.replace(old, f"PROTOCOL_VERSION = {version}\n", 1))
