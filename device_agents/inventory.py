"""Board inventory: the farm file (`farm.toml`) naming each board, its profile and how to reach it.

Stable API (other helpers write farm files and call these):
- `load_farm(path) -> Farm`; `parse_farm(data, source) -> Farm`; `default_farm() -> Farm` (one board
  "local" from the `local` profile); `find_farm(path_or_None) -> Farm` (explicit path, else
  `$HILT_FARM`, else `./farm.toml`, else the default farm).
- `Farm.board(name) -> Board`; `Board.name`, `Board.profile` (a `BoardProfile`),
  `Board.transport` (a `TransportSpec`: the profile's default transport merged with the farm's override),
  `Board.machine` (the physical machine whose cores its measurements run on; the board pool leases it).
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from device_agents.transports import TransportSpec, parse_transport
from harness.errors import ConfigError
from profiles.schema import BoardProfile, format_validation_error, load_profile, read_toml

FARM_VERSION = 1


class FarmBoardEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    profile: str = Field(min_length=1)
    transport: dict[str, Any] | None = None
    tags: list[str] = Field(default_factory=list)
    machine: str | None = Field(default=None, min_length=1)  # which physical machine it measures on


class FarmFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    version: int
    board: list[FarmBoardEntry] = Field(default_factory=list)

    @field_validator("version")
    @classmethod
    def _known_version(cls, v: int) -> int:
        if v != FARM_VERSION:
            raise ValueError(f"unsupported farm file version {v} (expected {FARM_VERSION})")
        return v


class Board(BaseModel):
    """A board resolved against its profile: everything needed to reach and describe it."""

    model_config = ConfigDict(frozen=True)

    name: str
    profile: BoardProfile
    transport: TransportSpec
    tags: list[str] = Field(default_factory=list)
    machine: str = ""


class Farm(BaseModel):
    model_config = ConfigDict(frozen=True)

    source: str
    boards: list[Board]

    def board(self, name: str) -> Board:
        for b in self.boards:
            if b.name == name:
                return b
        known = ", ".join(b.name for b in self.boards) or "none"
        raise ConfigError(f"{self.source}: no board named '{name}' (known: {known})")

    def names(self) -> list[str]:
        return [b.name for b in self.boards]


def _resolve(entry: FarmBoardEntry, index: int, source: str, base_dir: Path | None) -> Board:
    where = f"{source}: board[{index}] '{entry.name}'"
    profile_ref = entry.profile
    if base_dir is not None and profile_ref.endswith(".toml") and not Path(profile_ref).is_absolute():
        profile_ref = str(base_dir / profile_ref)
    try:
        profile = load_profile(profile_ref)
    except ConfigError as exc:
        raise ConfigError(f"{where}: profile: {exc}") from None
    merged = profile.transport.model_dump(exclude_none=True)
    if entry.transport:
        if "kind" in entry.transport and entry.transport["kind"] != merged.get("kind"):
            merged = {}  # another kind of transport: the profile's fields do not apply
        merged.update(entry.transport)
    try:
        transport = parse_transport(merged)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(f"{where}: transport", exc)) from None
    except ConfigError as exc:
        raise ConfigError(f"{where}: transport: {exc}") from None
    return Board(
        name=entry.name, profile=profile, transport=transport, tags=entry.tags, machine=entry.machine or ""
    )


LOOPBACK = ("localhost", "127.0.0.1", "::1")
SAME_BOARD_TAG = "same-board:"


def this_host() -> str:
    """The pool's name for the machine this process runs on."""
    return f"host:{socket.gethostname()}"


def _machine(board: Board, by_name: dict[str, Board], source: str) -> str:
    """Where a board's measurements run: two boards with one machine must never measure at once.

    An explicit `machine` wins; a `same-board:X` tag means X's machine; a `local` board runs on this
    host; an emulated board runs on the host that emulates it (this one, when reached over loopback or
    a local pty); a real board is its own machine.
    """
    if board.machine:
        return board.machine
    for tag in board.tags:
        if tag.startswith(SAME_BOARD_TAG):
            other = tag.removeprefix(SAME_BOARD_TAG)
            if other not in by_name or other == board.name:
                raise ConfigError(f"{source}: board '{board.name}': tag {tag!r} names no other board")
            return _machine(by_name[other], {k: v for k, v in by_name.items() if k != board.name}, source)
    spec = board.transport
    if spec.kind == "local":
        return this_host()
    if board.profile.emulated:
        if spec.kind == "ssh" and spec.host and spec.host not in LOOPBACK:
            return f"host:{spec.host}"
        return this_host()
    return f"board:{board.name}"


def parse_farm(data: dict[str, Any], source: str, base_dir: Path | None = None) -> Farm:
    """Validate a farm file's data; every bad field is one error naming file, board and field."""
    try:
        farm = FarmFile.model_validate(data)
    except ValidationError as exc:
        parts = []
        for err in exc.errors():
            loc = list(err["loc"])
            if len(loc) >= 2 and loc[0] == "board" and isinstance(loc[1], int):
                boards = data.get("board") or []
                name = (
                    boards[loc[1]].get("name", "?")
                    if loc[1] < len(boards) and isinstance(boards[loc[1]], dict)
                    else "?"
                )
                label = f"board[{loc[1]}] '{name}'." + ".".join(str(p) for p in loc[2:])
            else:
                label = ".".join(str(p) for p in loc) or "<root>"
            parts.append(f"{label}: {err['msg']}")
        raise ConfigError(f"{source}: " + "; ".join(parts)) from None
    seen: set[str] = set()
    for b in farm.board:
        if b.name in seen:
            raise ConfigError(f"{source}: board name '{b.name}' appears twice")
        seen.add(b.name)
    boards = [_resolve(b, i, source, base_dir) for i, b in enumerate(farm.board)]
    by_name = {b.name: b for b in boards}
    boards = [b.model_copy(update={"machine": _machine(b, by_name, source)}) for b in boards]
    return Farm(source=source, boards=boards)


def load_farm(path: Path | str) -> Farm:
    path = Path(path)
    return parse_farm(read_toml(path, "farm"), str(path), base_dir=path.parent)


def default_farm() -> Farm:
    """Without a farm file: this machine, as board 'local'."""
    return parse_farm(
        {"version": FARM_VERSION, "board": [{"name": "local", "profile": "local"}]}, "<default farm>"
    )


def find_farm(path: Path | str | None = None) -> Farm:
    """The farm to use: an explicit path, else $HILT_FARM, else ./farm.toml, else the default farm."""
    if path:
        return load_farm(path)
    env = os.environ.get("HILT_FARM")
    if env:
        return load_farm(env)
    if Path("farm.toml").is_file():
        return load_farm("farm.toml")
    return default_farm()
