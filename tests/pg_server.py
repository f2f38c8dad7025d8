"""A throwaway PostgreSQL server (Debian's postgresql package, run as user postgres): what the
distributed tests and the farm benchmark put their studies, results and board pool on."""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

PG_BIN = sorted(glob.glob("/usr/lib/postgresql/*/bin"))


def available() -> bool:
    return bool(PG_BIN) and os.geteuid() == 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PostgresServer:
    """initdb + pg_ctl start on a free port, a `hilt` database; `restart()` as an operator would."""

    def __init__(self, max_connections: int = 100) -> None:
        # pytest's tmp root is 0700: user postgres could not enter it
        self.base = Path(tempfile.mkdtemp(prefix="hilt-pg-"))
        self.data, self.sock = self.base / "data", self.base / "sock"
        self.port = _free_port()
        self.max_connections = max_connections
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/hilt"

    def _pg(self, *cmd: str, timeout: float = 120) -> None:
        tool = f"{PG_BIN[-1]}/{cmd[0]}"
        subprocess.run(
            ["runuser", "-u", "postgres", "--", tool, *cmd[1:]],
            check=True,
            capture_output=True,
            timeout=timeout,
        )

    def _ctl(self, action: str, *extra: str) -> None:
        opts = (
            f"-p {self.port} -k {self.sock} -c listen_addresses=127.0.0.1 "
            f"-c max_connections={self.max_connections}"
        )
        self._pg(
            "pg_ctl", "-D", str(self.data), "-w", "-l", str(self.base / "log"), "-o", opts, action, *extra
        )

    def start(self) -> PostgresServer:
        self.sock.mkdir()
        shutil.chown(self.base, "postgres")
        shutil.chown(self.sock, "postgres")
        self._pg("initdb", "-D", str(self.data), "--auth=trust", "-U", "postgres")
        self._ctl("start")
        self._pg("createdb", "-h", "127.0.0.1", "-p", str(self.port), "hilt")
        return self

    def stop(self) -> None:
        self._pg("pg_ctl", "-D", str(self.data), "-m", "fast", "stop")

    def restart(self) -> None:
        """A fast restart: every open connection is cut, the server is back when this returns."""
        self._ctl("restart", "-m", "fast")

    def close(self) -> None:
        try:
            self.stop()
        finally:
            shutil.rmtree(self.base, ignore_errors=True)

    def __enter__(self) -> PostgresServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
