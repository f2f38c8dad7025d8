"""Read boards' own lock logs (`bench.lock.log`, written by the agent's bench lock) and find every
time two measurements held one board at once, or one found the board taken: the board's account,
independent of what the host's pool believed."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from device_agents.agent.lock import LOG_NAME


@dataclass(frozen=True)
class Hold:
    board: str
    pid: int
    holder: str
    start: float
    end: float | None  # None: the agent died holding it (the kernel released the lock)


@dataclass
class LockAudit:
    """What the boards' logs say: holds, overlapping holds, and benches that found the board taken."""

    holds: list[Hold] = field(default_factory=list)
    overlaps: list[tuple[Hold, Hold]] = field(default_factory=list)
    contended: list[dict] = field(default_factory=list)  # "busy" events: asked while another held it

    @property
    def double_holds(self) -> int:
        return len(self.overlaps) + len(self.contended)


def read_log(path: Path) -> list[dict]:
    events = []
    for name in (path.name + ".1", path.name):
        p = path.with_name(name)
        if p.is_file():
            for line in p.read_text().splitlines():
                try:
                    events.append(json.loads(line))
                except ValueError:
                    continue  # a line cut by a crash mid-write
    return sorted(events, key=lambda e: e.get("t", 0.0))


def board_holds(board: str, events: list[dict]) -> list[Hold]:
    """Pair each take with its drop (same pid); a take with no drop ends when the next one starts."""
    holds: list[Hold] = []
    open_by_pid: dict[int, dict] = {}
    for ev in events:
        if ev.get("ev") == "take":
            open_by_pid[ev["pid"]] = ev
        elif ev.get("ev") == "drop" and ev.get("pid") in open_by_pid:
            take = open_by_pid.pop(ev["pid"])
            holds.append(Hold(board, take["pid"], take.get("holder", ""), take["t"], ev["t"]))
    holds += [Hold(board, t["pid"], t.get("holder", ""), t["t"], None) for t in open_by_pid.values()]
    return sorted(holds, key=lambda h: h.start)


def audit(stores: dict[str, Path]) -> LockAudit:
    """Audit the lock logs of boards whose agent stores are readable here (board name -> store)."""
    result = LockAudit()
    for board, store in sorted(stores.items()):
        events = read_log(Path(store) / LOG_NAME)
        holds = board_holds(board, events)
        result.holds += holds
        result.contended += [dict(e, board=board) for e in events if e.get("ev") == "busy"]
        for a, b in zip(holds, holds[1:], strict=False):
            if a.end is not None and b.start < a.end:
                result.overlaps.append((a, b))
    return result
