"""Host prerequisites for emulated boards: root, tools, binfmt_misc with qemu-user, a Debian mirror.

Each check fails with a FarmError that names the fix, so `hilt farm up` never half-starts a board.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

from harness.errors import FarmError

log = logging.getLogger(__name__)

BINFMT_DIR = Path("/proc/sys/fs/binfmt_misc")
APT_SOURCES = (Path("/etc/apt/sources.list"), Path("/etc/apt/sources.list.d"))
USER_TOOLS = ("debootstrap", "socat", "ssh-keygen", "chroot", "mount", "umount", "update-binfmts")


def require_root() -> None:
    """Mounting, chroot and debootstrap need root; say so before anything starts."""
    if os.geteuid() != 0:
        raise FarmError("the emulated farm needs root (mount, chroot, debootstrap): run `sudo hilt farm ...`")


def require_tools(tools: tuple[str, ...] = USER_TOOLS) -> None:
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        raise FarmError(
            f"missing host tools: {', '.join(missing)}; install them with `sudo bash scripts/system-deps.sh`"
        )


def ensure_binfmt(arch: str, binfmt_dir: Path = BINFMT_DIR) -> None:
    """Mount binfmt_misc if needed and enable qemu-<arch> so foreign binaries run in a chroot."""
    if not (binfmt_dir / "register").exists():
        proc = subprocess.run(
            ["mount", "-t", "binfmt_misc", "binfmt_misc", str(binfmt_dir)],
            capture_output=True,
            text=True,
        )
        if proc.returncode != 0 or not (binfmt_dir / "register").exists():
            detail = (proc.stderr or proc.stdout).strip() or "no register file after mounting"
            raise FarmError(
                f"cannot mount binfmt_misc at {binfmt_dir} ({detail}); the kernel needs binfmt_misc "
                "(in a container, mount binfmt_misc at /proc/sys/fs/binfmt_misc on the host first)"
            )
    entry = binfmt_dir / f"qemu-{arch}"
    if not _enabled(entry):
        proc = subprocess.run(["update-binfmts", "--enable", f"qemu-{arch}"], capture_output=True, text=True)
        if proc.returncode != 0 or not _enabled(entry):
            detail = (proc.stderr or proc.stdout).strip()
            raise FarmError(
                f"cannot register qemu-{arch} with binfmt_misc ({detail or 'entry missing'}); "
                "install qemu-user-static and binfmt-support (`sudo bash scripts/system-deps.sh`)"
            )
    flags = _flags(entry)
    if "F" not in flags:
        raise FarmError(
            f"binfmt entry {entry} lacks the F flag (has '{flags}'); reinstall qemu-user-static so the "
            "interpreter is preloaded and chroots need no copy of it"
        )


def _enabled(entry: Path) -> bool:
    try:
        return entry.read_text().splitlines()[0].strip() == "enabled"
    except (OSError, IndexError):
        return False


def _flags(entry: Path) -> str:
    for line in entry.read_text().splitlines():
        if line.startswith("flags:"):
            return line.split(":", 1)[1].strip()
    return ""


def apt_mirror(sources: tuple[Path, ...] = APT_SOURCES) -> str:
    """The Debian archive URI that apt on this machine uses (never a hard-coded host)."""
    env = os.environ.get("HILT_DEBIAN_MIRROR")
    if env:
        return env.rstrip("/")
    files: list[Path] = []
    for src in sources:
        if src.is_dir():
            files += sorted(p for p in src.iterdir() if p.suffix in (".list", ".sources"))
        elif src.is_file():
            files.append(src)
    for path in files:
        try:
            text = path.read_text()
        except OSError:
            continue
        entries = _deb822_entries(text) if path.suffix == ".sources" else _one_line_entries(text)
        for uri, suites in entries:
            if "security" in uri or not uri.startswith(("http://", "https://")):
                continue
            if any(s and "-" not in s for s in suites):
                return uri.rstrip("/")
    raise FarmError(
        "no Debian mirror found in /etc/apt/sources.list*; set HILT_DEBIAN_MIRROR or pass --mirror URL"
    )


def _one_line_entries(text: str) -> list[tuple[str, list[str]]]:
    out = []
    for line in text.splitlines():
        line = re.sub(r"\[[^\]]*\]", "", line.split("#", 1)[0]).split()
        if len(line) >= 3 and line[0] == "deb":
            out.append((line[1], [line[2]]))
    return out


def _deb822_entries(text: str) -> list[tuple[str, list[str]]]:
    out = []
    for stanza in re.split(r"\n\s*\n", text):
        fields: dict[str, str] = {}
        for line in stanza.splitlines():
            if line.startswith("#") or ":" not in line or line[:1].isspace():
                continue
            key, value = line.split(":", 1)
            fields[key.strip().lower()] = value.strip()
        if "deb" in fields.get("types", "").split() and fields.get("enabled", "yes").lower() != "no":
            for uri in fields.get("uris", "").split():
                out.append((uri, fields.get("suites", "").split()))
    return out


def check_mirror(mirror: str, suite: str, timeout: float = 20.0) -> None:
    """Fail early and clearly when the mirror cannot serve `suite` (debootstrap's own error is cryptic)."""
    url = f"{mirror}/dists/{suite}/Release"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            resp.read(64)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise FarmError(
            f"Debian mirror {mirror} is unreachable for {suite} ({reason}); "
            "check the network or pass --mirror URL"
        ) from None
