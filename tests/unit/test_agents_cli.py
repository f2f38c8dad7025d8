"""`hilt boards list|check` and `hilt bench` argument handling (real local agent, no runner needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.cli.main import main
from tests.cli_errors import one_error_line


def _farm(tmp_path: Path) -> Path:
    path = tmp_path / "farm.toml"
    path.write_text(
        'version = 1\n[[board]]\nname = "here"\nprofile = "local"\n'
        '[[board]]\nname = "gone"\nprofile = "rpi5"\n[board.transport]\nhost = "127.0.0.1"\nport = 1\n'
        "connect_timeout = 2\n"
    )
    return path


def test_boards_list_shows_profiles_and_farm(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["boards", "list", "--farm", str(_farm(tmp_path))]) == 0
    out = capsys.readouterr().out
    for name in ("rpi5", "rk3588", "visionfive2", "bpi-f3", "here", "gone"):
        assert name in out


def test_boards_check_exits_1_when_a_board_is_unreachable(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HILT_CACHE", str(tmp_path / "cache"))
    with pytest.raises(SystemExit) as info:
        main(["boards", "check", "--farm", str(_farm(tmp_path))])
    assert info.value.code == 1
    out = capsys.readouterr().out
    assert "here" in out and "ok" in out
    assert "down" in out and "gone unreachable: board gone: cannot reach" in out


def test_boards_check_local_only_succeeds(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HILT_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("HILT_FARM", raising=False)
    assert main(["boards", "check"]) == 0


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["bench", "--board", "local"], "exactly one of --bundle DIR or --selftest"),
        (["bench", "--board", "nope", "--selftest"], "no board named 'nope'"),
        (["bench", "--board", "local", "--selftest", "--cores", "a,b"], "--cores must be"),
        (["boards", "list", "--farm", "/nonexistent/farm.toml"], "does not exist"),
    ],
)
def test_user_errors_are_one_line_exit_2(
    args: list[str],
    needle: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("HILT_FARM", raising=False)
    assert main(args) == 2
    assert needle in one_error_line(capsys)
