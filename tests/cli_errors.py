"""What every CLI failure must look like: exactly one line on stderr, starting `error: `."""

from __future__ import annotations

import pytest


def assert_bad_weights_refused(main: object, args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    """`--weights int3`, `--group-size 0` and a group that does not divide 32 (the tiny models' width):
    one line each, exit 2."""
    for extra, message in (
        (["--weights", "int3"], "unknown weight format 'int3'; choose one of fp32, int8, int4"),
        (["--weights", "int4", "--group-size", "0"], "--group-size must be a positive integer, not 0"),
        (["--weights", "int4", "--group-size", "24"], "--group-size 24 does not divide a reduction width"),
    ):
        assert main([*args, *extra]) == 2  # type: ignore[operator]
        assert message in one_error_line(capsys)


def one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    """The single error line the last `main()` call printed (asserting there is exactly one)."""
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]
