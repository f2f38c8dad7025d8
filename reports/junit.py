"""JUnit XML for nightly runs: one testcase per (case, board); regressions fail, unreachable boards error."""

from __future__ import annotations

import socket
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

SCHEMA = Path(__file__).resolve().parent / "schemas" / "junit.xsd"


@dataclass
class CaseResult:
    case: str
    board: str
    seconds: float
    status: str  # "pass" | "regression" | "error" | "new"
    message: str
    details: str


def write_junit(suite: str, run: str, results: list[CaseResult], path: Path) -> Path:
    failures = sum(r.status == "regression" for r in results)
    errors = sum(r.status == "error" for r in results)
    total_time = sum(r.seconds for r in results)
    root = ET.Element("testsuites", name=f"hilt nightly {suite}", tests=str(len(results)),
                      failures=str(failures), errors=str(errors), time=f"{total_time:.3f}")  # fmt: skip
    ts = ET.SubElement(
        root, "testsuite", name=f"{suite}/{run}", tests=str(len(results)), failures=str(failures),
        errors=str(errors), skipped="0", time=f"{total_time:.3f}",
        timestamp=datetime.now(UTC).replace(tzinfo=None).isoformat(timespec="seconds"),
        hostname=socket.gethostname(),
    )  # fmt: skip
    for r in results:
        tc = ET.SubElement(ts, "testcase", name=f"{r.case}@{r.board}", classname=f"hilt.nightly.{r.board}",
                           time=f"{r.seconds:.3f}")  # fmt: skip
        if r.status == "regression":
            ET.SubElement(tc, "failure", message=r.message, type="regression").text = r.details
        elif r.status == "error":
            ET.SubElement(tc, "error", message=r.message, type="board-error").text = r.details
        ET.SubElement(tc, "system-out").text = r.details
    path.parent.mkdir(parents=True, exist_ok=True)
    ET.ElementTree(root).write(path, encoding="utf-8", xml_declaration=True)
    return path


def validate_junit(path: Path) -> None:
    """Raise if the file does not follow the common JUnit schema."""
    import xmlschema

    xmlschema.XMLSchema(str(SCHEMA)).validate(str(path))
