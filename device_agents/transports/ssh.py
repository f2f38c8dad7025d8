"""SSH transport (fabric): copy the agent `.pyz` to the board if absent or changed, run it over a channel.

Host keys are checked strictly against known_hosts (the user's, or a file the farm names); a new
key is accepted only when the board's config opts in, and a changed key is always refused.
"""

from __future__ import annotations

import hashlib
import logging
import posixpath
import shlex
from pathlib import Path
from typing import Any, Literal

import paramiko
from fabric import Config, Connection
from pydantic import Field

from device_agents.transports.base import Stream, Transport, agent_pyz
from device_agents.transports.spec import TransportSpecBase
from harness.errors import HostKeyError, TransportError

log = logging.getLogger(__name__)

DEFAULT_AGENT_DIR = ".cache/hilt-agent"


class _SaveNewKeyPolicy(paramiko.MissingHostKeyPolicy):
    """Accept an unknown (never a changed) host key and record it in the known_hosts file."""

    def __init__(self, known_hosts: Path) -> None:
        self.known_hosts = known_hosts

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        client.get_host_keys().add(hostname, key.get_name(), key)
        self.known_hosts.parent.mkdir(parents=True, exist_ok=True)
        client.get_host_keys().save(str(self.known_hosts))
        log.warning("accepted new host key %s for %s into %s", key.get_name(), hostname, self.known_hosts)


class SshTransport(Transport):
    kind = "ssh"

    def __init__(
        self,
        name: str,
        host: str,
        port: int = 22,
        user: str | None = None,
        key_file: str | None = None,
        known_hosts: str | None = None,
        accept_new_host_key: bool = False,
        python: str = "python3",
        agent_dir: str = DEFAULT_AGENT_DIR,
        connect_timeout: float = 10.0,
        agent_path: Path | str | None = None,
        **kwargs: int,
    ) -> None:
        super().__init__(name, **kwargs)
        self.host = host
        self.port = port
        self.user = user
        self.key_file = key_file
        self.known_hosts = (
            Path(known_hosts).expanduser() if known_hosts else Path("~/.ssh/known_hosts").expanduser()
        )
        self.accept_new_host_key = accept_new_host_key
        self.python = python
        self.agent_dir = agent_dir
        self.connect_timeout = connect_timeout
        self.agent_path = Path(agent_path) if agent_path else agent_pyz()
        self.conn: Connection | None = None
        self.channel: paramiko.Channel | None = None

    def _connection(self) -> Connection:
        connect_kwargs: dict[str, Any] = {
            "look_for_keys": self.key_file is None,
            "allow_agent": self.key_file is None,
            "banner_timeout": self.connect_timeout,
            "auth_timeout": self.connect_timeout,
        }
        if self.key_file:
            connect_kwargs["key_filename"] = [str(Path(self.key_file).expanduser())]
        config = Config(overrides={"load_ssh_configs": False})
        conn = Connection(
            self.host,
            user=self.user,
            port=self.port,
            connect_kwargs=connect_kwargs,
            connect_timeout=int(max(1, self.connect_timeout)),
            config=config,
        )
        # fabric defaults to AutoAddPolicy; hilt checks strictly unless the board opts in.
        conn.client.set_missing_host_key_policy(
            _SaveNewKeyPolicy(self.known_hosts) if self.accept_new_host_key else paramiko.RejectPolicy()
        )
        if self.known_hosts.is_file():
            conn.client.load_host_keys(str(self.known_hosts))
        return conn

    def _open_connection(self) -> Connection:
        conn = self._connection()
        where = f"{self.user + '@' if self.user else ''}{self.host}:{self.port}"
        try:
            conn.open()
        except paramiko.BadHostKeyException as exc:
            raise HostKeyError(
                f"board {self.name}: host key of {where} does not match {self.known_hosts} "
                f"(got {exc.key.get_name()}); refused — if the board was reinstalled, remove its old key"
            ) from None
        except paramiko.SSHException as exc:
            if "not found in known_hosts" in str(exc):
                raise HostKeyError(
                    f"board {self.name}: {where} is not in {self.known_hosts}; refused — add its key "
                    "or set accept_new_host_key = true for this board in the farm file"
                ) from None
            raise TransportError(f"board {self.name}: SSH to {where} failed: {exc}") from None
        except TimeoutError as exc:
            raise TransportError(f"board {self.name}: SSH to {where} timed out ({exc})") from None
        except OSError as exc:
            raise TransportError(f"board {self.name}: cannot reach {where}: {exc}") from None
        return conn

    def remote_agent_path(self) -> str:
        digest = hashlib.sha256(self.agent_path.read_bytes()).hexdigest()[:16]
        return posixpath.join(self.agent_dir, f"agent-{digest}.pyz")

    def _install_agent(self, conn: Connection) -> str:
        """Copy the agent unless this exact version is already there (its hash is in the name)."""
        remote = self.remote_agent_path()
        sftp = conn.sftp()
        try:
            sftp.stat(remote)
            return remote
        except FileNotFoundError:
            pass
        path = ""
        for part in posixpath.dirname(remote).split("/"):
            path = posixpath.join(path, part) if path else (part or "/")
            try:
                sftp.stat(path)
            except FileNotFoundError:
                sftp.mkdir(path)
        sftp.put(str(self.agent_path), remote + ".tmp")
        sftp.posix_rename(remote + ".tmp", remote)
        log.info("board %s: installed agent at %s", self.name, remote)
        return remote

    def _connect(self) -> Stream:
        conn = self._open_connection()
        self.conn = conn
        try:
            remote = self._install_agent(conn)
            cmd = " ".join(
                shlex.quote(p)
                for p in (self.python, remote, "--cache", posixpath.join(self.agent_dir, "store"))
            )
            transport = conn.client.get_transport()
            assert transport is not None
            channel = transport.open_session(timeout=self.connect_timeout)
            channel.exec_command(cmd)
        except (paramiko.SSHException, OSError) as exc:
            conn.close()
            raise TransportError(f"board {self.name}: cannot start the agent over SSH: {exc}") from None
        channel.settimeout(0.2)
        self.channel = channel

        def read() -> bytes | None:
            try:
                return channel.recv(1 << 16)
            except TimeoutError:
                return None

        return Stream(read=read, write=channel.sendall)

    def _describe_death(self) -> str:
        if self.channel is None:
            return ""
        parts = []
        if self.channel.exit_status_ready():
            parts.append(f"remote agent exited with {self.channel.recv_exit_status()}")
        try:
            if self.channel.recv_stderr_ready():
                parts.append(self.channel.recv_stderr(4096).decode(errors="replace").strip()[-300:])
        except OSError:
            pass
        return "; ".join(p for p in parts if p)

    def _disconnect(self) -> None:
        if self.channel is not None:
            self.channel.close()
            self.channel = None
        if self.conn is not None:
            self.conn.close()
            self.conn = None


class SshSpec(TransportSpecBase):
    """A board over SSH (fabric), with strict host-key checking unless told otherwise."""

    kind: Literal["ssh"] = "ssh"
    host: str = Field(min_length=1)
    port: int = Field(default=22, ge=1, le=65535)
    user: str | None = None
    key_file: str | None = None
    known_hosts: str | None = None
    accept_new_host_key: bool = False
    python: str = "python3"
    agent_dir: str = DEFAULT_AGENT_DIR
    connect_timeout: float = Field(default=10.0, gt=0)

    def address(self) -> str:
        return f"{self.user + '@' if self.user else ''}{self.host}:{self.port}"

    def open(self, name: str, **options: Any) -> SshTransport:
        fields = self.model_dump(exclude={"kind"})
        return SshTransport(name, **fields, **options)


SPEC = SshSpec
