"""Farm files: boards resolved against profiles; every bad field is one error naming file, board, field."""

from __future__ import annotations

from pathlib import Path

import pytest

from device_agents.inventory import default_farm, find_farm, load_farm
from harness.errors import ConfigError

GOOD = """
version = 1
[[board]]
name = "qemu-a64-0"
profile = "qemu-aarch64"
[board.transport]
kind = "ssh"
host = "127.0.0.1"
port = 2222
user = "root"
key_file = "/keys/id_ed25519"
known_hosts = "/keys/known_hosts"

[[board]]
name = "pi-serial"
profile = "rpi4"
[board.transport]
kind = "serial"
device = "/dev/ttyUSB0"
baud = 921600

[[board]]
name = "pi"
profile = "rpi4"
"""


def _farm(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "farm.toml"
    path.write_text(text)
    return path


def test_good_farm_resolves_profiles_and_merges_transports(tmp_path: Path) -> None:
    farm = load_farm(_farm(tmp_path, GOOD))
    assert farm.names() == ["qemu-a64-0", "pi-serial", "pi"]
    q = farm.board("qemu-a64-0")
    assert q.profile.arch == "aarch64" and q.profile.emulated
    assert (q.transport.kind, q.transport.port, q.transport.known_hosts) == ("ssh", 2222, "/keys/known_hosts")
    assert q.transport.accept_new_host_key is False  # strict by default
    s = farm.board("pi-serial").transport
    assert (s.kind, s.device, s.baud) == ("serial", "/dev/ttyUSB0", 921600)
    assert not hasattr(s, "host")  # profile's ssh fields dropped
    p = farm.board("pi").transport
    assert (p.kind, p.host, p.user) == ("ssh", "raspberrypi.local", "pi")  # the profile's default


def test_serial_console_login_in_the_farm_file(tmp_path: Path) -> None:
    text = (
        'version = 1\n[[board]]\nname = "vf2"\nprofile = "visionfive2"\n[board.transport]\nkind = "serial"\n'
        'device = "/dev/ttyUSB1"\nbaud = 115200\n[board.transport.login]\nuser = "user"\n'
        'password_env = "VF2_PW"\n'
    )
    t = load_farm(_farm(tmp_path, text)).board("vf2").transport
    assert t.login is not None and (t.login.user, t.login.password_env, t.login.python) == (
        "user",
        "VF2_PW",
        "python3",
    )


def test_profile_path_relative_to_the_farm_file(tmp_path: Path) -> None:
    src = Path(__file__).resolve().parents[2] / "profiles" / "local.toml"
    (tmp_path / "mine.toml").write_text(src.read_text().replace('name = "local"', 'name = "mine"'))
    farm = load_farm(_farm(tmp_path, 'version = 1\n[[board]]\nname = "m"\nprofile = "mine.toml"\n'))
    assert farm.board("m").profile.name == "mine"


@pytest.mark.parametrize(
    ("text", "needles"),
    [
        ("version = 2\n", ["farm.toml", "version", "unsupported farm file version 2"]),
        ('version = 1\n[[board]]\nname = "x"\n', ["board[0] 'x'.profile", "Field required"]),
        ('version = 1\n[[board]]\nname = "x y"\nprofile = "rpi4"\n', ["board[0] 'x y'.name"]),
        ('version = 1\n[[board]]\nname = "x"\nprofile = "rpi4"\ncolour = "red"\n', ["board[0] 'x'.colour"]),
        (
            'version = 1\n[[board]]\nname = "x"\nprofile = "nonesuch"\n',
            ["board[0] 'x'", "unknown board profile"],
        ),
        (
            'version = 1\n[[board]]\nname = "x"\nprofile = "rpi4"\n[board.transport]\nport = 70000\n',
            ["board[0] 'x'", "transport", "port"],
        ),
        (
            'version = 1\n[[board]]\nname = "x"\nprofile = "rpi4"\n[board.transport]\nkind = "serial"\n',
            ["board[0] 'x'", "transport: serial.device: Field required"],
        ),
        (
            'version = 1\n[[board]]\nname = "x"\nprofile = "local"\n'
            '[[board]]\nname = "x"\nprofile = "local"\n',
            ["board name 'x' appears twice"],
        ),
        ("version = 1\n[[board]\n", ["not valid TOML"]),
        (
            'version = 1\n[[board]]\nname = "x"\nprofile = "rpi4"\n[board.transport.login]\nuser = "pi"\n',
            ["board[0] 'x'", "transport: ssh.login: Extra inputs are not permitted"],
        ),
        (
            'version = 1\n[[board]]\nname = "x"\nprofile = "rpi4"\n[board.transport]\nkind = "serial"\n'
            'device = "/dev/ttyUSB0"\n[board.transport.login]\nuser = ""\n',
            ["board[0] 'x'", "login.user"],
        ),
    ],
)
def test_bad_farm_files_name_file_board_and_field(tmp_path: Path, text: str, needles: list[str]) -> None:
    path = _farm(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_farm(path)
    msg = str(info.value)
    assert "\n" not in msg
    assert str(path) in msg or "farm.toml" in msg
    for needle in needles:
        assert needle in msg, msg


def test_missing_farm_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_farm(tmp_path / "nope.toml")


def test_unknown_board_lists_known_ones(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no board named 'zz' .known: qemu-a64-0, pi-serial, pi"):
        load_farm(_farm(tmp_path, GOOD)).board("zz")


def test_default_and_env_farm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert default_farm().names() == ["local"]
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("HILT_FARM", raising=False)
    assert find_farm().names() == ["local"]
    monkeypatch.setenv("HILT_FARM", str(_farm(tmp_path, GOOD)))
    assert find_farm().names()[0] == "qemu-a64-0"
