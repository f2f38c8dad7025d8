"""Mount bookkeeping: mount, find what is mounted under a path, unmount, and remove trees safely.

A board's root has /proc, /dev and a bind-mounted pty under it; deleting such a tree while
anything is still mounted would delete into the host, so removal refuses while mounts remain.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import time
from pathlib import Path

from harness.errors import FarmError

log = logging.getLogger(__name__)
MOUNTINFO = Path("/proc/self/mountinfo")


def _unescape(field: str) -> str:
    return field.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n").replace("\\134", "\\")


def mount_points() -> list[Path]:
    """Every mount point on the host, in mount order."""
    points = []
    for line in MOUNTINFO.read_text().splitlines():
        parts = line.split()
        if len(parts) > 4:
            points.append(Path(_unescape(parts[4])))
    return points


def mounts_under(path: Path) -> list[Path]:
    """Mount points at or below `path`, deepest (last mounted) first, so they can be unmounted in order."""
    root = path.resolve() if path.exists() else path
    found = [p for p in mount_points() if p == root or root in p.parents]
    return list(reversed(found))


def mount(args: list[str], target: Path) -> None:
    proc = subprocess.run(["mount", *args, str(target)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise FarmError(f"mount {' '.join(args)} {target} failed: {(proc.stderr or proc.stdout).strip()}")


def unmount(target: Path, attempts: int = 20) -> None:
    """Unmount one point; retry briefly (a dying process may still hold it), then detach lazily."""
    for _ in range(attempts):
        if target not in mount_points():
            return
        proc = subprocess.run(["umount", str(target)], capture_output=True, text=True)
        if proc.returncode == 0:
            return
        time.sleep(0.3)
    if target in mount_points():
        log.warning(
            "lazy unmount of busy %s (held by %s)", target, ", ".join(holders(target)) or "no process"
        )
        subprocess.run(["umount", "-l", str(target)], capture_output=True, text=True)
    if target in mount_points():
        raise FarmError(f"cannot unmount {target}; see `fuser -vm {target}`")


def holders(path: Path) -> list[str]:
    """'pid:command' of processes with a file, cwd, root or mapping under `path` (why it is busy)."""
    prefix = str(path)
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            links = [os.readlink(proc / "cwd"), os.readlink(proc / "root")]
            links += [os.readlink(fd) for fd in (proc / "fd").iterdir()]
            links += [ln.split()[-1] for ln in (proc / "maps").read_text().splitlines() if "/" in ln]
            name = (proc / "comm").read_text().strip()
        except OSError:
            continue
        if any(link == prefix or link.startswith(prefix + "/") for link in links):
            found.append(f"{proc.name}:{name}")
    return found


def unmount_all_under(path: Path) -> list[Path]:
    """Unmount everything at or below `path`; returns what was unmounted."""
    done = []
    for point in mounts_under(path):
        unmount(point)
        done.append(point)
    return done


def safe_rmtree(path: Path) -> None:
    """Remove a tree only when nothing is mounted inside it (never delete through a bind mount)."""
    if not path.exists() and not path.is_symlink():
        return
    left = mounts_under(path)
    if left:
        raise FarmError(f"refusing to delete {path}: still mounted: {', '.join(map(str, left))}")
    shutil.rmtree(path)
