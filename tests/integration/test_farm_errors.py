"""The farm's clear one-line errors: not root, no binfmt_misc, unreachable mirror, bad state, bad input.

Real parts only: a real unprivileged process, a real failing mount, a real refused connection.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from device_agents import inventory
from device_agents.emulated import FarmPaths, down, parse_arches, status, up
from device_agents.emulated.farmfile import render_farm_file
from device_agents.emulated.host import apt_mirror, check_mirror, ensure_binfmt
from device_agents.emulated.mounts import mount, mounts_under, safe_rmtree, unmount_all_under
from device_agents.emulated.rootfs import ensure_image, file_lock
from device_agents.emulated.state import FarmState, load_state
from harness.cli.main import main
from harness.errors import FarmError

ROOT = Path(__file__).resolve().parents[2]
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (mount)")


def _paths(tmp_path: Path) -> FarmPaths:
    return FarmPaths(images=tmp_path / "images", state=tmp_path / "state")


def _cli_error(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err, err
    return err


NOT_ROOT = """
import os, sys
from harness.cli.main import _register, main
import device_agents.emulated  # everything imported while still root: the interpreter lives under /root
_register()
os.setgroups([])
os.setgid(65534)
os.setuid(65534)
sys.exit(main(["farm", "up", "--arch", "aarch64", "--state-dir", sys.argv[1]]))
"""


@needs_root
def test_not_root_is_refused_in_one_line(tmp_path: Path) -> None:
    """`hilt farm up` by an unprivileged user: the CLI's one line and exit 2, nothing created."""
    tmp_path.chmod(0o777)
    state = tmp_path / "state"
    proc = subprocess.run(
        [sys.executable, "-c", NOT_ROOT, str(state)],
        cwd=ROOT,
        env={**os.environ, "HOME": str(tmp_path), "PYTHONPATH": str(ROOT), "HILT_CACHE": str(tmp_path / "c")},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip() == (
        "error: the emulated farm needs root (mount, chroot, debootstrap): run `sudo hilt farm ...`"
    )
    assert not state.exists()


@needs_root
def test_binfmt_that_cannot_be_mounted(tmp_path: Path) -> None:
    with pytest.raises(FarmError, match=r"cannot mount binfmt_misc at .*missing"):
        ensure_binfmt("aarch64", binfmt_dir=tmp_path / "missing")


def test_unreachable_mirror() -> None:
    with pytest.raises(FarmError, match=r"Debian mirror http://127.0.0.1:9/debian is unreachable for trixie"):
        check_mirror("http://127.0.0.1:9/debian", "trixie", timeout=5)


@needs_root
def test_up_with_unreachable_mirror_builds_nothing(tmp_path: Path) -> None:
    paths = _paths(tmp_path)
    with pytest.raises(FarmError, match="unreachable"):
        up(["riscv64"], paths=paths, mirror="http://127.0.0.1:9/debian", with_runtime=False)
    assert not list(paths.images.glob("*.partial"))
    assert load_state(paths.state_file).boards == []


def test_mirror_is_read_from_apt_sources(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HILT_DEBIAN_MIRROR", raising=False)
    d = tmp_path / "sources.list.d"
    d.mkdir()
    (d / "a-security.sources").write_text(
        "Types: deb\nURIs: http://sec.example/debian-security\nSuites: bookworm-security\nComponents: main\n"
    )
    (d / "b.sources").write_text(
        "Types: deb-src\nURIs: http://src.example/debian\nSuites: bookworm\n\n"
        "Types: deb\n# comment\nURIs: http://mirror.example/debian/\nSuites: bookworm bookworm-updates\n"
    )
    (d / "c.list.disabled").write_text("deb http://never.example/debian bookworm main\n")
    assert apt_mirror((tmp_path / "none", d)) == "http://mirror.example/debian"
    one_line = tmp_path / "sources.list"
    one_line.write_text("# x\ndeb [arch=amd64 signed-by=/k.gpg] http://old.example/debian bookworm main\n")
    assert apt_mirror((one_line,)) == "http://old.example/debian"
    with pytest.raises(FarmError, match="no Debian mirror found"):
        apt_mirror((tmp_path / "none",))
    monkeypatch.setenv("HILT_DEBIAN_MIRROR", "http://env.example/debian/")
    assert apt_mirror((one_line,)) == "http://env.example/debian"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "is not valid JSON"),
        (json.dumps({"version": 7, "boards": []}), "has version 7, expected 1"),
        (
            json.dumps({"version": 1, "boards": [{"name": "x"}]}),
            "is malformed: boards.0.arch: Field required",
        ),
    ],
)
def test_malformed_state_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str, message: str
) -> None:
    paths = _paths(tmp_path)
    paths.state.mkdir(parents=True)
    paths.state_file.write_text(content)
    with pytest.raises(FarmError, match=message):
        status(paths)
    assert message in _cli_error(capsys, ["farm", "status", "--state-dir", str(paths.state)])


def test_bad_arguments(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(FarmError, match="unknown arch sparc"):
        parse_arches("aarch64,sparc")
    with pytest.raises(FarmError, match="unknown arch"):
        parse_arches(" , ")
    assert parse_arches("riscv64, aarch64,riscv64") == ["riscv64", "aarch64"]
    state = str(tmp_path / "state")
    assert "unknown arch mips" in _cli_error(capsys, ["farm", "up", "--arch", "mips", "--state-dir", state])
    assert "unknown --mode 'vm'" in _cli_error(capsys, ["farm", "up", "--mode", "vm", "--state-dir", state])
    argv = ["farm", "up", "--mode", "system", "--arch", "riscv64", "--state-dir", state]
    assert "system mode is built for aarch64 only, not riscv64" in _cli_error(capsys, argv)
    argv = ["farm", "reboot", "qemu-a64-0", "--state-dir", state]
    assert "no farm board named qemu-a64-0 (running: none)" in _cli_error(capsys, argv)
    with pytest.raises(FarmError, match="--count must be at least 1"):
        up(["aarch64"], paths=_paths(tmp_path), count=0)


@needs_root
def test_down_of_an_unknown_board(tmp_path: Path) -> None:
    paths = _paths(tmp_path)
    assert down(paths) == []  # no farm: nothing to do, no error
    paths.state.mkdir(parents=True)
    paths.state_file.write_text(FarmState().model_dump_json())
    with pytest.raises(FarmError, match=r"no farm board named qemu-x \(running: none\)"):
        down(paths, ["qemu-x"])


@needs_root
def test_removal_refuses_while_something_is_mounted(tmp_path: Path) -> None:
    tree = tmp_path / "board"
    inner = tree / "root" / "dev"
    inner.mkdir(parents=True)
    mount(["-t", "tmpfs", "tmpfs"], inner)
    try:
        assert mounts_under(tree) == [inner]
        with pytest.raises(FarmError, match="refusing to delete .* still mounted"):
            safe_rmtree(tree)
        assert inner.exists()
    finally:
        assert unmount_all_under(tree) == [inner]
    safe_rmtree(tree)
    assert not tree.exists()


def test_second_builder_waits_for_the_lock(tmp_path: Path) -> None:
    lock = tmp_path / "img.lock"
    code = (
        "import sys, time\nfrom pathlib import Path\nfrom device_agents.emulated.rootfs import file_lock\n"
        "with file_lock(Path(sys.argv[1])):\n    print('got', flush=True)\n"
    )
    with file_lock(lock):
        proc = subprocess.Popen(
            [sys.executable, "-c", code, str(lock)], cwd=ROOT, stdout=subprocess.PIPE, text=True
        )
        time.sleep(1.5)
        assert proc.poll() is None  # still waiting while we hold the lock
    out, _ = proc.communicate(timeout=30)
    assert out.strip() == "got"


def test_unknown_arch_image(tmp_path: Path) -> None:
    with pytest.raises(FarmError, match="no emulated board for arch 'mips'"):
        ensure_image(tmp_path, "mips", "http://127.0.0.1:9/debian")


def test_farm_file_matches_the_inventory_contract(tmp_path: Path) -> None:
    from device_agents.emulated.state import BoardState

    board = BoardState(
        name="qemu-a64-0",
        arch="aarch64",
        profile="qemu-aarch64",
        image="/img",
        directory="/b",
        root="/b/root",
        ssh_port=2299,
        key_file='/b/ssh/id "x"',
        known_hosts="/b/ssh/known_hosts",
        serial_host="/b/serial-host",
        serial_board="/b/serial-board",
        started_at="now",
    )
    path = tmp_path / "farm.toml"
    path.write_text(render_farm_file([board]))
    farm = inventory.load_farm(path)
    ssh, serial = farm.board("qemu-a64-0"), farm.board("qemu-a64-0-serial")
    assert (ssh.transport.kind, ssh.transport.port, ssh.transport.key_file) == ("ssh", 2299, '/b/ssh/id "x"')
    assert ssh.transport.known_hosts == "/b/ssh/known_hosts" and not ssh.transport.accept_new_host_key
    assert (serial.transport.kind, serial.transport.device) == ("serial", "/b/serial-host")
    assert ssh.profile.emulated and serial.profile.arch == "aarch64"
    assert "same-board:qemu-a64-0" in serial.tags
