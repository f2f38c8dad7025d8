"""System mode: an aarch64 VM with a real guest kernel under qemu-system, over SSH and its virtio
console, power-cycled with `reboot`. Slow (image build once, ~1 min per boot), so it runs when
HILT_FARM_SYSTEM=1 is set; see the README section on the emulated farm."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import paramiko
import pytest
from fabric import Connection

from device_agents.emulated import FarmPaths, down, reboot, status, up
from device_agents.emulated.mounts import holders, mounts_under
from device_agents.emulated.state import BoardState
from harness.cli.main import main
from harness.errors import FarmError

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.environ.get("HILT_FARM_SYSTEM") != "1", reason="set HILT_FARM_SYSTEM=1 (slow)"),
    pytest.mark.skipif(os.geteuid() != 0, reason="the emulated farm needs root"),
    pytest.mark.skipif(shutil.which("qemu-system-aarch64") is None, reason="needs qemu-system-arm"),
]


def _run(board: BoardState, command: str) -> str:
    conn = Connection(
        "127.0.0.1",
        port=board.ssh_port,
        user="root",
        connect_kwargs={"key_filename": board.key_file, "look_for_keys": False, "allow_agent": False},
    )
    conn.client.set_missing_host_key_policy(paramiko.RejectPolicy())
    conn.client.load_host_keys(board.known_hosts)
    with conn:
        return conn.run(command, hide=True, in_stream=False).stdout.strip()


def test_system_board_boots_reboots_and_goes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from device_agents.transports.serial import SerialTransport

    paths = FarmPaths(images=FarmPaths.default().images, state=tmp_path / "farm")
    result = up(["aarch64"], mode="system", paths=paths, with_runtime=False)
    board = result.state.boards[0]
    try:
        assert result.started == ["qemu-a64-vm-0"] and board.mode == "system"
        assert _run(board, "uname -m") == "aarch64"
        assert _run(board, "uname -r") != os.uname().release  # the guest's own kernel
        boot_id = _run(board, "cat /proc/sys/kernel/random/boot_id")
        with SerialTransport("vm-serial", board.serial_host) as line:
            assert line.hello["arch"] == "aarch64"
        assert all(s.running for s in status(paths))
        start = time.monotonic()
        assert main(["farm", "reboot", "qemu-a64-vm-0", "--state-dir", str(paths.state)]) == 0
        assert "is back after" in capsys.readouterr().out
        assert _run(board, "cat /proc/sys/kernel/random/boot_id") != boot_id
        assert float(_run(board, "cut -d' ' -f1 /proc/uptime")) < time.monotonic() - start + 5
        with SerialTransport("vm-serial", board.serial_host) as line:
            assert line.hello["arch"] == "aarch64"
        with pytest.raises(FarmError, match="no farm board named nope"):
            reboot("nope", paths)
    finally:
        assert down(paths) == ["qemu-a64-vm-0"]
    assert mounts_under(paths.state) == [] and holders(paths.state) == []
    assert not any(p.alive() for p in board.processes)
