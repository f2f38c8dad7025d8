"""The farm's state file: which boards it started, their processes and mounts, so `down` undoes exactly that.

Processes are recorded with their start time (from /proc) so a recycled pid is never killed.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from harness.errors import FarmError

STATE_VERSION = 1


class ProcessRecord(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: str
    pid: int
    start_ticks: int

    def alive(self) -> bool:
        """True when this exact process (pid and start time) still runs."""
        return process_start_ticks(self.pid) == self.start_ticks


class BoardState(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    arch: str
    mode: Literal["user", "system"] = "user"
    profile: str
    image: str
    directory: str
    root: str
    ssh_port: int
    key_file: str
    known_hosts: str
    serial_host: str
    serial_board: str
    runtime_dir: str | None = None
    runtime_sha256: str | None = None
    agent_path: str | None = None
    processes: list[ProcessRecord] = Field(default_factory=list)
    mounts: list[str] = Field(default_factory=list)
    started_at: str


class FarmState(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: int = STATE_VERSION
    boards: list[BoardState] = Field(default_factory=list)

    def board(self, name: str) -> BoardState | None:
        return next((b for b in self.boards if b.name == name), None)


def process_start_ticks(pid: int) -> int | None:
    """Field 22 of /proc/PID/stat (start time in clock ticks), or None if the pid is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] in ("Z", "X"):  # exited, waiting to be reaped: no longer running
        return None
    return int(fields[19])


def load_state(path: Path) -> FarmState:
    if not path.exists():
        return FarmState()
    try:
        data = json.loads(path.read_bytes())
    except OSError as exc:
        raise FarmError(f"cannot read farm state file {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise FarmError(
            f"farm state file {path} is not valid JSON (not UTF-8 text); "
            "stop leftover boards by hand and delete it"
        ) from None
    except json.JSONDecodeError as exc:
        raise FarmError(
            f"farm state file {path} is not valid JSON ({exc.msg} at line {exc.lineno}); "
            "stop leftover boards by hand and delete it"
        ) from None
    if isinstance(data, dict) and data.get("version") != STATE_VERSION:
        raise FarmError(
            f"farm state file {path} has version {data.get('version')!r}, expected {STATE_VERSION}"
        )
    try:
        return FarmState.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first["loc"]) or "<root>"
        raise FarmError(f"farm state file {path} is malformed: {loc}: {first['msg']}") from None


def save_state(path: Path, state: FarmState) -> None:
    """Write atomically: a crash mid-write must not lose the record of what is running."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(state.model_dump_json(indent=2) + "\n")
    os.replace(tmp, path)
