"""Cached Debian root filesystems for emulated boards, built once with debootstrap.

Builds run under a file lock (two `hilt farm up` runs never build the same image), into a
`.partial` directory that is renamed only when complete, and are described by a JSON stamp
beside the image. Boards never write to an image: each board mounts an overlay on top of it.
"""

from __future__ import annotations

import fcntl
import json
import logging
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from harness.errors import FarmError

from .host import check_mirror, ensure_binfmt
from .mounts import MOUNTINFO, safe_rmtree, unmount_all_under

log = logging.getLogger(__name__)

STAMP_VERSION = 1
PACKAGES = ("python3", "openssh-server")
# what the board runtime needs beyond that: the riscv64 build links libatomic
EXTRA_PACKAGES = {"riscv64": ("libatomic1",)}
# Which Debian release carries each arch well: riscv64 is official only from trixie on.
SUITES = {"aarch64": ("arm64", "bookworm"), "riscv64": ("riscv64", "trixie")}
# Rough package count of a minbase + python3 + openssh-server install, to scale the progress bar.
EXPECTED_PACKAGES = 130

# progress(arch, fraction done 0..1, what debootstrap is doing)
ProgressFn = Callable[[str, float, str], None]


@dataclass(frozen=True)
class RootfsImage:
    """A built image: where it is and what it holds (the JSON stamp beside it)."""

    version: int
    arch: str
    debian_arch: str
    suite: str
    mirror: str
    packages: list[str]
    path: str
    build_seconds: float
    built_at: str


def packages_for(arch: str) -> list[str]:
    return [*PACKAGES, *EXTRA_PACKAGES.get(arch, ())]


def image_name(arch: str) -> str:
    return f"{arch}-{suite_for(arch)[1]}"


def suite_for(arch: str) -> tuple[str, str]:
    try:
        return SUITES[arch]
    except KeyError:
        raise FarmError(f"no emulated board for arch '{arch}' (known: {', '.join(SUITES)})") from None


def _stamp(images: Path, arch: str) -> Path:
    return images / f"{image_name(arch)}.json"


def cached_image(images: Path, arch: str) -> RootfsImage | None:
    """The ready image for `arch`, or None if it was never built (or its stamp is unreadable)."""
    stamp = _stamp(images, arch)
    if not stamp.is_file() or not (images / image_name(arch)).is_dir():
        return None
    try:
        data = json.loads(stamp.read_text())
        image = RootfsImage(**data)
    except (json.JSONDecodeError, TypeError) as exc:
        log.warning("ignoring unreadable rootfs stamp %s (%s)", stamp, exc)
        return None
    if image.version != STAMP_VERSION or not set(packages_for(arch)) <= set(image.packages):
        log.info("rootfs %s is stale (version or packages changed): rebuilding", image.path)
        return None
    return image


@contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Exclusive advisory lock held for the block; a second builder waits instead of building too."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("waiting for lock %s", path)
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure_image(images: Path, arch: str, mirror: str, progress: ProgressFn | None = None) -> RootfsImage:
    """Return the cached image for `arch`, building it first if needed (minutes, once per machine)."""
    image = cached_image(images, arch)
    if image is not None:
        return image
    with file_lock(images / f"{image_name(arch)}.lock"):
        image = cached_image(images, arch)  # built by someone else while we waited
        if image is not None:
            return image
        return _build(images, arch, mirror, progress)


def _build(images: Path, arch: str, mirror: str, progress: ProgressFn | None) -> RootfsImage:
    debian_arch, suite = suite_for(arch)
    check_mirror(mirror, suite)
    ensure_binfmt(arch)
    final = images / image_name(arch)
    partial = images / f"{image_name(arch)}.partial"
    unmount_all_under(partial)  # a killed debootstrap leaves /proc and /sys mounted inside
    safe_rmtree(partial)
    cmd = [
        "debootstrap",
        f"--arch={debian_arch}",
        "--variant=minbase",
        f"--include={','.join(packages_for(arch))}",
        suite,
        str(partial),
        mirror,
    ]
    log.info("building %s rootfs: %s", arch, " ".join(cmd))
    start = time.monotonic()
    tail = _run_debootstrap(arch, cmd, progress)
    if tail is not None:
        unmount_all_under(partial)
        raise FarmError(f"debootstrap for {arch} ({suite}) failed: {tail}")
    finish_image(partial)
    if final.exists():
        if f"lowerdir={final}" in MOUNTINFO.read_text():
            raise FarmError(f"rootfs {final} is outdated but running boards use it; `hilt farm down` first")
        safe_rmtree(final)
    partial.rename(final)
    image = RootfsImage(
        version=STAMP_VERSION,
        arch=arch,
        debian_arch=debian_arch,
        suite=suite,
        mirror=mirror,
        packages=packages_for(arch),
        path=str(final),
        build_seconds=round(time.monotonic() - start, 1),
        built_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    )
    _stamp(images, arch).write_text(json.dumps(asdict(image), indent=2) + "\n")
    if progress:
        progress(arch, 1.0, "done")
    return image


# debootstrap's phases and the share of the bar each one fills
_PHASES = {
    "Retrieving": (0.0, 0.35),
    "Extracting": (0.35, 0.45),
    "Unpacking": (0.45, 0.7),
    "Configuring": (0.7, 1.0),
}


def _run_debootstrap(arch: str, cmd: list[str], progress: ProgressFn | None) -> str | None:
    """Run debootstrap, turning its 'I: <Phase> pkg' lines into progress; None on success, else its tail."""
    lines: list[str] = []
    counts = dict.fromkeys(_PHASES, 0)
    done = 0.0
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
    assert proc.stdout is not None
    for raw in proc.stdout:
        line = raw.rstrip()
        lines = (lines + [line])[-20:]
        parts = line.split()
        if progress and len(parts) >= 2 and parts[0] == "I:" and parts[1] in _PHASES:
            phase = parts[1]
            counts[phase] += 1
            total = (
                max(counts["Retrieving"], EXPECTED_PACKAGES) if phase != "Retrieving" else EXPECTED_PACKAGES
            )
            lo, hi = _PHASES[phase]
            # debootstrap unpacks and configures twice (required, then base): never move backwards
            done = max(done, lo + (hi - lo) * min(1.0, counts[phase] / total))
            progress(arch, done, line[3:])
    if proc.wait() != 0:
        errors = [ln for ln in lines if ln.startswith(("E:", "W:"))] or lines[-3:]
        return " | ".join(errors)
    return None


def finish_image(root: Path) -> None:
    """Make a fresh debootstrap a shareable base: no host keys (each board gets its own), no .deb cache."""
    for key in (root / "etc" / "ssh").glob("ssh_host_*"):
        key.unlink()
    for deb in (root / "var" / "cache" / "apt" / "archives").glob("*.deb"):
        deb.unlink()
    (root / "opt" / "hilt").mkdir(parents=True, exist_ok=True)
