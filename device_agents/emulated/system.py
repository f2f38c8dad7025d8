"""System-mode boards: a real guest kernel under qemu-system (reboot and power-cycle tests).

The system image is the cached user rootfs plus a Debian kernel (initramfs with MODULES=list, or
each initramfs build takes minutes under emulation), systemd and networkd; each board boots its
own ext4 disk built from an overlay holding its keys. SSH reaches the guest through qemu's
user-mode network (hostfwd on 127.0.0.1); the agent serves on a virtio console (/dev/hvc0) that a
socat pty exposes on the host; the kernel console goes to a log file. A QMP socket lets
`reboot` power-cycle the machine.
"""

from __future__ import annotations

import json
import logging
import shutil
import socket
import subprocess
import time
from dataclasses import asdict
from pathlib import Path

from harness.errors import FarmError

from .board import (
    BOARD_AGENT,
    RuntimeFiles,
    install_payload,
    new_board,
    spawn,
    stop_board,
    wait_agent,
    wait_ssh,
    write_ssh_keys,
)
from .mounts import mount, safe_rmtree, unmount, unmount_all_under
from .rootfs import STAMP_VERSION, RootfsImage, file_lock, image_name, packages_for
from .state import BoardState

log = logging.getLogger(__name__)

SYSTEM_PACKAGES = {"aarch64": ("linux-image-arm64", "systemd-sysv")}
QEMU = {
    "aarch64": [
        "qemu-system-aarch64", "-M", "virt", "-cpu", "cortex-a72", "-smp", "2", "-m", "1024",
    ],
}  # fmt: skip
CONSOLE = {"aarch64": "ttyAMA0"}
INITRAMFS_MODULES = "virtio_pci\nvirtio_blk\nvirtio_net\nvirtio_console\nvirtio_mmio\next4\n"
NETWORK_UNIT = "[Match]\nName=en* eth*\n\n[Network]\nDHCP=yes\n"
AGENT_UNIT = f"""\
[Unit]
Description=hilt agent on the virtio console

[Service]
Environment=HOME=/root
ExecStart=/usr/bin/python3 {BOARD_AGENT} --cache /root/.cache/hilt-agent/store --serial /dev/hvc0
Restart=always
RestartSec=1

[Install]
WantedBy=multi-user.target
"""
SSHD_SYSTEM_CONFIG = """\
# written by `hilt farm up --mode system`: key login only, fresh host key per board
Port 22
HostKey /etc/ssh/ssh_host_ed25519_key
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
UseDNS no
Subsystem sftp /usr/lib/openssh/sftp-server
"""


def system_image_name(arch: str) -> str:
    return f"{image_name(arch)}-system"


def require_system(arch: str) -> None:
    if arch not in SYSTEM_PACKAGES:
        raise FarmError(f"system mode is built for {', '.join(SYSTEM_PACKAGES)} only, not {arch}")
    for tool in (QEMU[arch][0], "mkfs.ext4"):
        if shutil.which(tool) is None:
            raise FarmError(f"{tool} not found; install qemu-system-arm, ipxe-qemu and e2fsprogs")


def cached_system_image(images: Path, arch: str) -> RootfsImage | None:
    stamp = images / f"{system_image_name(arch)}.json"
    directory = images / system_image_name(arch)
    if not stamp.is_file() or not (directory / "vmlinuz").is_file():
        return None
    try:
        image = RootfsImage(**json.loads(stamp.read_text()))
    except (json.JSONDecodeError, TypeError):
        return None
    return image if image.version == STAMP_VERSION else None


def ensure_system_image(images: Path, base: RootfsImage) -> RootfsImage:
    """The user rootfs plus kernel and systemd, built once (minutes, mostly dpkg under emulation)."""
    arch = base.arch
    image = cached_system_image(images, arch)
    if image is not None:
        return image
    with file_lock(images / f"{system_image_name(arch)}.lock"):
        image = cached_system_image(images, arch)
        if image is not None:
            return image
        return _build_system(images, base)


def _chroot(root: Path, script: str, timeout: float = 1800) -> None:
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root", "LANG": "C.UTF-8"}
    env["DEBIAN_FRONTEND"] = "noninteractive"
    proc = subprocess.run(
        ["chroot", str(root), "/bin/sh", "-ec", script],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if proc.returncode != 0:
        tail = " | ".join((proc.stderr or proc.stdout).strip().splitlines()[-3:])
        raise FarmError(f"building the system image failed in the chroot: {tail}")


def _build_system(images: Path, base: RootfsImage) -> RootfsImage:
    arch = base.arch
    start = time.monotonic()
    final = images / system_image_name(arch)
    partial = images / f"{system_image_name(arch)}.partial"
    unmount_all_under(partial)
    safe_rmtree(partial)
    root = partial / "root"
    partial.mkdir(parents=True)
    subprocess.run(["cp", "-a", base.path, str(root)], check=True)
    conf = root / "etc" / "initramfs-tools"
    (conf / "conf.d").mkdir(parents=True, exist_ok=True)
    (conf / "conf.d" / "hilt").write_text("MODULES=list\n")
    (conf / "modules").write_text(INITRAMFS_MODULES)
    mounted = []
    try:
        for fs, target, opts in (
            ("proc", "proc", []),
            ("sysfs", "sys", ["-o", "ro"]),
            ("devtmpfs", "dev", []),
        ):
            mount(["-t", fs, *opts, fs], root / target)
            mounted.append(root / target)
        packages = " ".join(SYSTEM_PACKAGES[arch])
        _chroot(root, f"apt-get update -q && apt-get install -y -q --no-install-recommends {packages}")
        _chroot(root, "apt-get clean")
    finally:
        for point in reversed(mounted):
            unmount(point)
    kernels = sorted((root / "boot").glob("vmlinuz-*"))
    initrds = sorted((root / "boot").glob("initrd.img-*"))
    if not kernels or not initrds:
        raise FarmError(f"no kernel or initrd in {root / 'boot'} after installing {packages}")
    shutil.copy2(kernels[-1], partial / "vmlinuz")
    shutil.copy2(initrds[-1], partial / "initrd.img")
    for key in (root / "etc" / "ssh").glob("ssh_host_*"):
        key.unlink()
    if final.exists():
        safe_rmtree(final)
    partial.rename(final)
    image = RootfsImage(
        version=STAMP_VERSION,
        arch=arch,
        debian_arch=base.debian_arch,
        suite=base.suite,
        mirror=base.mirror,
        packages=[*packages_for(arch), *SYSTEM_PACKAGES[arch]],
        path=str(final / "root"),
        build_seconds=round(time.monotonic() - start, 1),
        built_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    )
    (images / f"{system_image_name(arch)}.json").write_text(json.dumps(asdict(image), indent=2) + "\n")
    return image


def configure_guest(root: Path) -> None:
    """Boot-time set-up of a board's disk: networkd DHCP, sshd, the agent on hvc0 and no getty there.

    Done per board (cheap) rather than in the cached image, so changing it needs no image rebuild.
    """
    etc = root / "etc"
    (etc / "systemd" / "network" / "20-wired.network").write_text(NETWORK_UNIT)
    (etc / "systemd" / "system" / "hilt-agent.service").write_text(AGENT_UNIT)
    wants = etc / "systemd" / "system" / "multi-user.target.wants"
    wants.mkdir(parents=True, exist_ok=True)
    for unit, target in (
        ("systemd-networkd.service", "/lib/systemd/system/systemd-networkd.service"),
        ("hilt-agent.service", "/etc/systemd/system/hilt-agent.service"),
        ("ssh.service", "/lib/systemd/system/ssh.service"),
    ):
        (wants / unit).unlink(missing_ok=True)
        (wants / unit).symlink_to(target)
    # systemd's getty generator would start a login prompt on hvc0 and fight the agent for it
    getty = etc / "systemd" / "system" / "serial-getty@hvc0.service"
    getty.unlink(missing_ok=True)
    getty.symlink_to("/dev/null")
    (etc / "fstab").write_text("/dev/vda / ext4 defaults 0 1\n")
    (etc / "ssh" / "sshd_config").write_text(SSHD_SYSTEM_CONFIG)
    (etc / "ssh" / "sshd_hilt_config").unlink(missing_ok=True)


def start_system_board(
    name: str,
    profile: str,
    image: RootfsImage,
    directory: Path,
    port: int,
    runtime: RuntimeFiles | None = None,
    ready_timeout: float = 600.0,
) -> BoardState:
    """Boot one VM: per-board disk (keys, agent, runtime baked in), sshd via hostfwd, agent on hvc0."""
    state = new_board(name, profile, image, directory, port, mode="system")
    root = Path(state.root)
    try:
        opts = f"lowerdir={image.path},upperdir={directory / 'upper'},workdir={directory / 'work'}"
        mount(["-t", "overlay", "overlay", "-o", opts], root)
        try:
            write_ssh_keys(state, root)
            configure_guest(root)
            install_payload(state, root, runtime)
            disk = directory / "disk.img"
            proc = subprocess.run(
                ["mkfs.ext4", "-q", "-F", "-L", "hilt", "-d", str(root), str(disk), "2G"],
                capture_output=True,
                text=True,
            )
            if proc.returncode != 0:
                raise FarmError(f"mkfs.ext4 for board {name} failed: {proc.stderr.strip()}")
        finally:
            unmount(root)
        safe_rmtree(directory / "upper")
        safe_rmtree(directory / "work")
        _boot(state, Path(image.path).parent, disk)
        wait_ssh(state, ready_timeout)
        wait_agent(state, ready_timeout)
    except BaseException:
        stop_board(state)
        raise
    return state


def _boot(state: BoardState, image_dir: Path, disk: Path) -> None:
    directory = Path(state.directory)
    qmp, agent_sock = directory / "qmp.sock", directory / "agent.sock"
    cmd = [
        *QEMU[state.arch],
        "-display", "none", "-nodefaults", "-no-user-config",
        "-kernel", str(image_dir / "vmlinuz"), "-initrd", str(image_dir / "initrd.img"),
        "-append", f"root=/dev/vda rw console={CONSOLE[state.arch]} net.ifnames=0",
        "-drive", f"file={disk},format=raw,if=virtio",
        "-netdev", f"user,id=n0,hostfwd=tcp:127.0.0.1:{state.ssh_port}-:22",
        "-device", "virtio-net-pci,netdev=n0",
        "-serial", f"file:{directory / 'logs' / 'console.log'}",
        "-chardev", f"socket,id=agent,path={agent_sock},server=on,wait=off",
        "-device", "virtio-serial-pci", "-device", "virtconsole,chardev=agent",
        "-qmp", f"unix:{qmp},server=on,wait=off",
    ]  # fmt: skip
    proc = spawn(state, "qemu", cmd, directory / "logs" / "qemu.log")
    deadline = time.monotonic() + 30
    while not agent_sock.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise FarmError(
                f"qemu for board {state.name} did not start; see {directory / 'logs' / 'qemu.log'}"
            )
        time.sleep(0.1)
    host = Path(state.serial_host)
    spawn(
        state,
        "socat",
        ["socat", "-d", "-d", f"pty,raw,echo=0,link={host}", f"UNIX-CONNECT:{agent_sock}"],
        directory / "logs" / "socat.log",
    )
    deadline = time.monotonic() + 10
    while not host.exists():
        if time.monotonic() > deadline:
            raise FarmError(f"socat made no serial pty for board {state.name}")
        time.sleep(0.05)


def power_cycle(state: BoardState, ready_timeout: float = 600.0) -> float:
    """Hard reset through QMP (like pulling the plug), then wait for sshd again; returns seconds."""
    if state.mode != "system":
        raise FarmError(f"cannot reboot {state.name}: a qemu-user board has no kernel (use --mode system)")
    start = time.monotonic()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(10)
        sock.connect(str(Path(state.directory) / "qmp.sock"))
        reader = sock.makefile("rb")
        reader.readline()  # greeting
        for command in ("qmp_capabilities", "system_reset"):
            sock.sendall(json.dumps({"execute": command}).encode() + b"\n")
            while True:
                reply = json.loads(reader.readline())
                if "return" in reply or "error" in reply:
                    break
            if "error" in reply:
                raise FarmError(f"QMP {command} on {state.name} failed: {reply['error']}")
    time.sleep(2)  # let the old sshd go before polling for the new one
    wait_ssh(state, ready_timeout)
    wait_agent(state, ready_timeout)
    return time.monotonic() - start
