"""Write the farm's boards into a farm file (the inventory format), so boards/bench/tune use them as is.

Each emulated board appears twice: `<name>` over SSH (strict host key checking against the
generated known_hosts) and `<name>-serial` over its pty. Both reach the same emulated board.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from .state import BoardState

FARM_FILE_VERSION = 1


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    return json.dumps(str(value))  # a JSON string is a valid TOML basic string


def _table(name: str, fields: dict[str, object]) -> list[str]:
    return [f"[{name}]"] + [f"{k} = {_toml_value(v)}" for k, v in fields.items() if v is not None]


def render_farm_file(boards: list[BoardState]) -> str:
    lines = [
        "# written by `hilt farm up`; rewritten on every up/down, so edit a copy instead",
        f"version = {FARM_FILE_VERSION}",
    ]
    for board in boards:
        lines += [""] + _table("[board]", {"name": board.name, "profile": board.profile})
        lines.append('tags = ["emulated", "qemu-user"]')
        lines += _table(
            "board.transport",
            {
                "kind": "ssh",
                "host": "127.0.0.1",
                "port": board.ssh_port,
                "user": "root",
                "key_file": board.key_file,
                "known_hosts": board.known_hosts,
            },
        )
        lines += [""] + _table("[board]", {"name": f"{board.name}-serial", "profile": board.profile})
        lines.append(f'tags = ["emulated", "qemu-user", "serial", "same-board:{board.name}"]')
        lines += _table("board.transport", {"kind": "serial", "device": board.serial_host, "baud": 115200})
    return "\n".join(lines) + "\n"


def write_farm_file(path: Path, boards: list[BoardState]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".toml.tmp")
    tmp.write_text(render_farm_file(boards))
    os.replace(tmp, path)
