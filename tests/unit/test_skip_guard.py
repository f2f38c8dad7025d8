"""The CI skip guard: scripts/run-tests.sh fails on a skip outside tests/skip_allowlist.txt.

Runs the real script (as `make test` and .ci/run do) on tiny test files in a temporary directory.
"""

from __future__ import annotations

import fnmatch
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

TESTS = """
import pytest

def test_passes():
    assert True

def test_allowed():
    pytest.skip("needs a widget")

def test_unexpected():
    pytest.skip("no gadget here")
"""


def _run_tests(tmp_path: Path, source: str, allowlist: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "test_sample.py").write_text(source)
    (tmp_path / "allow.txt").write_text(allowlist)
    env = {
        **os.environ,
        "PYTHON": sys.executable,
        "HILT_TEST_PATHS": str(tmp_path / "test_sample.py"),
        "HILT_SKIP_ALLOWLIST": str(tmp_path / "allow.txt"),
    }
    script = str(ROOT / "scripts" / "run-tests.sh")
    cmd = ["bash", script, "-p", "no:cacheprovider", "--rootdir", str(tmp_path)]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)


def test_an_unexpected_skip_fails_the_run(tmp_path: Path) -> None:
    out = _run_tests(tmp_path, TESTS, "test_sample.py::test_allowed | the widget is not in CI\n")
    assert out.returncode == 1, out.stdout + out.stderr
    assert "1 passed, 2 skipped" in out.stdout  # pytest itself was green
    assert "UNEXPECTED  test_sample.py::test_unexpected: no gadget here" in out.stdout
    assert (
        "allowed     test_sample.py::test_allowed: needs a widget (allow-list: the widget is not in CI)"
        in out.stdout
    )
    assert "2 skipped, 1 not in the allow-list" in out.stdout


def test_allow_listed_skips_pass(tmp_path: Path) -> None:
    allow = "# comment\n\ntest_sample.py::test_allowed | widget missing\n"
    allow += "test_sample.py::test_unex*   |   no gadget  # a pattern, and a comment\n"
    out = _run_tests(tmp_path, TESTS, allow)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "2 skipped, 0 not in the allow-list" in out.stdout


def test_a_module_skipped_at_import_fails_the_run(tmp_path: Path) -> None:
    source = 'import pytest\npytest.skip("no backend", allow_module_level=True)\n\ndef test_x():\n    pass\n'
    out = _run_tests(tmp_path, source, "other.py::* | unrelated\n")
    assert out.returncode == 1, out.stdout + out.stderr
    assert "UNEXPECTED  test_sample.py: no backend" in out.stdout


def test_a_failure_stays_a_failure_and_no_tests_is_a_failure(tmp_path: Path) -> None:
    out = _run_tests(tmp_path, "def test_bad():\n    assert False\n", "")
    assert out.returncode == 1
    out = _run_tests(tmp_path, "X = 1\n", "")
    assert out.returncode == 1 and "collected no tests" in out.stderr


def test_an_entry_without_a_reason_is_refused(tmp_path: Path) -> None:
    out = _run_tests(tmp_path, TESTS, "test_sample.py::test_allowed\n")
    assert out.returncode == 4  # pytest's usage error
    assert "expected '<node id glob> | <reason>'" in out.stderr


def test_the_suite_allow_list_is_short_and_every_entry_has_a_reason() -> None:
    from tests.skip_guard import parse_allowlist

    entries = parse_allowlist(ROOT / "tests" / "skip_allowlist.txt")
    assert 0 < len(entries) <= 10
    for e in entries:
        assert len(e.reason) > 20, e
        path = e.pattern.split("::", 1)[0]
        assert any(fnmatch.fnmatchcase(str(p.relative_to(ROOT)), path) for p in ROOT.glob("tests/**/*.py")), e


def test_ci_and_make_test_run_the_guarded_script() -> None:
    assert "bash scripts/run-tests.sh" in (ROOT / "Makefile").read_text()
    assert "make test" in (ROOT / ".ci" / "run").read_text()


@pytest.mark.parametrize("name", ["test_sample.py::test_allowed"])
def test_parse_allowlist_names_the_bad_line(tmp_path: Path, name: str) -> None:
    from tests.skip_guard import parse_allowlist

    f = tmp_path / "allow.txt"
    f.write_text(f"{name} | ok reason\n{name} |\n")
    with pytest.raises(pytest.UsageError, match=r"allow.txt:2:"):
        parse_allowlist(f)
