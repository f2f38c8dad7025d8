"""pytest plugin: fail the run when a test is skipped outside a written allow-list.

A skipped test is a feature CI did not check, so `scripts/run-tests.sh` runs the suite with
`--skip-allowlist tests/skip_allowlist.txt`. Each line of that file is

    <node id glob> | <why it cannot run here>

(`#` starts a comment). A skip whose node id matches no entry turns a passing run into exit 1; every
skip is listed in a "skip summary" at the end with the entry that allowed it, or UNEXPECTED.
Without the option the plugin only prints the summary.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from pathlib import Path

import pytest

OPTION = "--skip-allowlist"


@dataclass(frozen=True)
class AllowEntry:
    pattern: str
    reason: str


@dataclass(frozen=True)
class Skip:
    nodeid: str
    reason: str
    allowed_by: AllowEntry | None


def parse_allowlist(path: Path) -> list[AllowEntry]:
    """Entries of an allow-list file; a line without a pattern and a reason is an error."""
    entries = []
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        pattern, sep, reason = (part.strip() for part in line.partition("|"))
        if not sep or not pattern or not reason:
            raise pytest.UsageError(f"{path}:{number}: expected '<node id glob> | <reason>', got {raw!r}")
        entries.append(AllowEntry(pattern, reason))
    return entries


def _reason(report: pytest.TestReport | pytest.CollectReport) -> str:
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2]).removeprefix("Skipped: ")
    return str(longrepr)


class SkipGuard:
    def __init__(self, allowlist: list[AllowEntry] | None) -> None:
        self.allowlist = allowlist
        self.skips: list[Skip] = []

    def _record(self, report: pytest.TestReport | pytest.CollectReport) -> None:
        if not report.skipped or hasattr(report, "wasxfail"):  # an xfail is not a skip
            return
        allowed = next(
            (e for e in self.allowlist or () if fnmatch.fnmatchcase(report.nodeid, e.pattern)), None
        )
        self.skips.append(Skip(report.nodeid, _reason(report), allowed))

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        self._record(report)

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        self._record(report)  # a whole module skipped at import time

    @property
    def unexpected(self) -> list[Skip]:
        return [s for s in self.skips if s.allowed_by is None] if self.allowlist is not None else []

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        if self.unexpected and exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        if not self.skips and self.allowlist is None:
            return
        tr = terminalreporter
        tr.section("skip summary")
        for s in self.skips:
            if s.allowed_by is not None:
                tr.line(f"allowed     {s.nodeid}: {s.reason} (allow-list: {s.allowed_by.reason})")
            elif self.allowlist is not None:
                tr.line(f"UNEXPECTED  {s.nodeid}: {s.reason}", red=True)
            else:
                tr.line(f"skipped     {s.nodeid}: {s.reason}")
        n_bad = len(self.unexpected)
        tr.line(f"{len(self.skips)} skipped, {n_bad} not in the allow-list", red=n_bad > 0)
        if n_bad:
            tr.line(
                "skip guard: failing the run; make these tests run here, or add them to the allow-list "
                "with the reason they cannot",
                red=True,
            )


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        OPTION,
        default=None,
        metavar="FILE",
        help="Fail the run if a test is skipped whose node id matches no '<glob> | <reason>' line of FILE.",
    )


def pytest_configure(config: pytest.Config) -> None:
    path = config.getoption(OPTION)
    allowlist = None
    if path is not None:
        file = Path(path)
        if not file.is_file():
            raise pytest.UsageError(f"{OPTION} {path}: no such file")
        allowlist = parse_allowlist(file)
    config.pluginmanager.register(SkipGuard(allowlist), "hilt-skip-guard")
