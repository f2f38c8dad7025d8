"""Local transport: the packed agent (`agent-<hash>.pyz`) as a subprocess, JSON lines over its pipes."""

from __future__ import annotations

import os
import select
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Literal

from device_agents.transports.base import Stream, Transport, agent_pyz
from device_agents.transports.spec import TransportSpecBase
from harness.cache import cache_root
from harness.errors import TransportError


def default_cache() -> Path:
    """Where a local agent keeps its store: under $HILT_CACHE (or ~/.cache/hilt)."""
    return cache_root() / "agent"


class LocalTransport(Transport):
    kind = "local"

    def __init__(
        self,
        name: str = "local",
        cache: Path | str | None = None,
        python: str = sys.executable,
        agent_path: Path | str | None = None,
        sysfs_root: str | None = None,
        extra_args: list[str] | None = None,
        **kwargs: int,
    ) -> None:
        super().__init__(name, **kwargs)
        self.cache = str(cache) if cache else str(default_cache())
        self.python = python
        self.agent_path = str(agent_path or agent_pyz())
        self.sysfs_root = sysfs_root
        self.extra_args = extra_args or []
        self.proc: subprocess.Popen[bytes] | None = None
        self._stderr: tempfile._TemporaryFileWrapper[bytes] | None = None

    def _connect(self) -> Stream:
        argv = [self.python, self.agent_path, "--cache", self.cache, *self.extra_args]
        if self.sysfs_root:
            argv += ["--sysfs-root", self.sysfs_root]
        self._stderr = tempfile.NamedTemporaryFile(prefix="hilt-agent-", suffix=".err")
        try:
            self.proc = subprocess.Popen(
                argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr, bufsize=0
            )
        except OSError as exc:
            raise TransportError(f"board {self.name}: cannot start the agent ({exc})") from None
        assert self.proc.stdin is not None and self.proc.stdout is not None
        out_fd = self.proc.stdout.fileno()
        stdin = self.proc.stdin

        def read() -> bytes | None:
            ready, _, _ = select.select([out_fd], [], [], 0.2)
            if not ready:
                return None
            return os.read(out_fd, 1 << 16)

        def write(data: bytes) -> None:
            stdin.write(data)
            stdin.flush()

        return Stream(read=read, write=write)

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def _describe_death(self) -> str:
        if self.proc is None:
            return ""
        code = self.proc.poll()
        tail = ""
        if self._stderr is not None:
            try:
                tail = Path(self._stderr.name).read_text(errors="replace").strip()[-300:]
            except OSError:
                pass
        return f"agent exited with {code}" + (f": {tail}" if tail else "")

    def _disconnect(self) -> None:
        if self.proc is not None:
            for pipe in (self.proc.stdin, self.proc.stdout):
                if pipe is not None:
                    try:
                        pipe.close()
                    except OSError:
                        pass
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None


class LocalSpec(TransportSpecBase):
    """This machine: the agent as a subprocess of this Python; an absolute `agent_dir` places its store
    (the default lives under $HILT_CACHE). `simulate`: a simulated board (the agent's latency model in
    place of the runner; `device_agents.simfarm` writes farms of them)."""

    kind: Literal["local"] = "local"
    agent_dir: str = ".cache/hilt-agent"
    simulate: bool = False

    def open(self, name: str, **options: Any) -> LocalTransport:
        cache = self.agent_dir if self.agent_dir.startswith("/") else None
        extra = ["--simulate"] if self.simulate else None
        return LocalTransport(name, cache=cache, extra_args=extra, **options)


SPEC = LocalSpec
