"""Where the farm keeps its files: rootfs images in the shared cache, live boards in a state dir.

Rootfs images are expensive (minutes each) and shared by every farm on the machine; live board
state (overlay upper dirs, keys, logs, the state file, the farm file) belongs to one farm, so tests
can run an isolated farm on top of the cached images.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from harness.cache import cache_root


@dataclass(frozen=True)
class FarmPaths:
    """The two roots of a farm: `images` (cached rootfs builds) and `state` (this farm's boards)."""

    images: Path
    state: Path

    @classmethod
    def default(cls) -> FarmPaths:
        root = cache_root() / "farm"
        return cls(images=root / "rootfs", state=root / "run")

    @property
    def state_file(self) -> Path:
        return self.state / "state.json"

    @property
    def farm_file(self) -> Path:
        return self.state / "farm.toml"

    @property
    def lock_file(self) -> Path:
        return self.state / "farm.lock"

    def board_dir(self, name: str) -> Path:
        return self.state / "boards" / name
