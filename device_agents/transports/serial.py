"""Serial transport (pyserial): binary frames with CRC to the board's agent.

The agent is either started on the board beforehand (`python3 agent-<hash>.pyz --serial /dev/ttyS0
--baud B`) or, when the board's transport has a `login`, through the console: hilt logs in, copies the
agent `.pyz` over the line if this version is absent (base64 through the shell), and starts it on the
console's tty.
Lost or corrupted frames are resent: requests are retried with their id (the agent answers a
repeated non-idempotent one from its reply cache), upload chunks are sized to the line's measured
error rate and only lost ones are resent, and a line that lets nothing through ends in one clear
LineTooNoisyError (see `base.Transport._upload_frames`).
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import posixpath
import shlex
import time
import zlib
from pathlib import Path
from typing import Any, Literal

import serial
from pydantic import Field

from device_agents.transports.base import ChunkSizer, Stream, Transport, agent_pyz
from device_agents.transports.spec import TransportSpecBase
from harness.errors import TransportError
from profiles.schema import SerialLogin

log = logging.getLogger(__name__)

# run by the board's python on the console: base64 lines of the zlib-compressed agent in, the file out
UNPACK = "import base64,sys,zlib;sys.stdout.buffer.write(zlib.decompress(base64.b64decode(sys.stdin.read())))"


class SerialTransport(Transport):
    kind = "serial"
    framed = True
    grace_s = 1.5
    retries = 100  # resends of an unanswered request, backing off; its deadline bounds them
    hello_timeout_s = 5.0
    shutdown_on_close = False  # the agent was started on the board beforehand and keeps serving
    # a console line (11.5 kB/s at 115200 baud) is far slower than compressing: chunks go compressed
    # when the agent offers a codec. Pipes and SSH do not (`Transport.compress`): a local agent shares
    # this machine's memory bandwidth, and an SSH link outruns lzma (about 2 MB/s here)
    compress = True

    def __init__(
        self,
        name: str,
        device: str,
        baud: int = 115200,
        login: SerialLogin | None = None,
        agent_path: Path | str | None = None,
        **kwargs: int,
    ) -> None:
        super().__init__(name, **kwargs)
        self.device = device
        self.baud = baud
        self.login = login
        self.agent_path = Path(agent_path) if agent_path else agent_pyz()
        # upload chunks start at 4 KiB and follow the line's error rate, from 256 B up to about one
        # second of line time (16 KiB .. 256 KiB): a blocking write of two stays inside write_timeout
        self.sizer = ChunkSizer(4 << 10, max_size=max(16 << 10, min(256 << 10, baud // 10)))
        self.port: serial.Serial | None = None
        if login is not None:
            self.shutdown_on_close = True  # we started it: end it, which returns the console to the shell

    def _byte_time(self) -> float:
        return 10.0 / self.baud  # 8N1: ten bit times per byte

    def _line_name(self) -> str:
        return f"{self.baud} baud"

    def _connect(self) -> Stream:
        try:
            port = serial.Serial(self.device, self.baud, timeout=0.1, write_timeout=30)
        except (serial.SerialException, OSError) as exc:
            raise TransportError(f"board {self.name}: cannot open serial port {self.device}: {exc}") from None
        port.reset_input_buffer()
        self.port = port
        if self.login is not None:
            try:
                ConsoleLogin(self, port, self.login).start_agent()
            except BaseException:
                port.close()
                raise

        def read() -> bytes | None:
            try:
                data = port.read(max(1, port.in_waiting))
            except serial.SerialException as exc:
                if "returned no data" in str(exc):  # pty whose other end is momentarily gone
                    return None
                raise OSError(str(exc)) from None
            return data or None

        def write(data: bytes) -> None:
            try:
                port.write(data)
                port.flush()
            except serial.SerialException as exc:
                raise OSError(str(exc)) from None

        return Stream(read=read, write=write)

    def _disconnect(self) -> None:
        if self.port is not None:
            self.port.close()
            self.port = None


class ConsoleLogin:
    """Drive a login prompt and a shell on a serial console just far enough to start the agent."""

    def __init__(self, transport: SerialTransport, port: serial.Serial, login: SerialLogin) -> None:
        self.t = transport
        self.port = port
        self.login = login
        self.seen = b""
        self.deadline = time.monotonic() + login.timeout_s

    def _expect(self, patterns: list[str], what: str) -> int:
        """Read until one of the patterns shows up; index of the one that did."""
        wanted = [p.encode().lower() for p in patterns]
        while time.monotonic() < self.deadline:
            self.seen = (self.seen + self.port.read(max(1, self.port.in_waiting)))[-4096:]
            low = self.seen.lower()
            hits = [(low.rfind(p), i) for i, p in enumerate(wanted) if p in low]
            if hits:
                pos, index = max(hits)  # the latest prompt is the current one
                self.seen = self.seen[pos + len(wanted[index]) :]  # what follows belongs to the next step
                return index
        tail = self.seen[-120:].decode("utf-8", "replace").replace("\r", "").replace("\n", "\\n")
        raise TransportError(
            f"board {self.t.name}: no {what} on {self.t.device} within {self.login.timeout_s:.0f} s "
            f"(last output: {tail!r})"
        )

    def _send(self, line: str) -> None:
        self.port.write(line.encode() + b"\r")
        self.port.flush()

    def _shell(self, command: str) -> None:
        self._send(command)
        self._expect(self.login.shell_prompts, "shell prompt")

    def start_agent(self) -> None:
        prompts = self.login.shell_prompts
        self._send("")
        seen = self._expect(["login:", "password:", *prompts], "login prompt or shell")
        for _ in range(3):  # a half-finished login from before: answer it empty to get a fresh prompt
            if seen != 1:
                break
            self._send("")
            seen = self._expect(["login:", "password:", *prompts], "login prompt or shell")
        if seen == 0:
            self._send(self.login.user)
            if self._expect(["password:", *prompts], "password prompt or shell") == 0:
                password = os.environ.get(self.login.password_env or "", "")
                if self.login.password_env and not password:
                    raise TransportError(
                        f"board {self.t.name}: the console asks for a password; "
                        f"set ${self.login.password_env}"
                    )
                self._send(password)
                if self._expect(["incorrect", *prompts], "shell after login") == 0:
                    raise TransportError(f"board {self.t.name}: console login as {self.login.user} refused")
        self._shell("stty -echo")
        remote = self._ensure_agent()
        store = posixpath.join(self.login.agent_dir, "store")
        # the agent switches the console tty to raw frames; the shell's echo before that is just noise
        self._send(
            "exec "
            + " ".join(
                shlex.quote(p) for p in (self.login.python, remote, "--serial", "/dev/tty", "--cache", store)
            )
        )
        self._expect(["HILT_AGENT_READY"], "agent start (is python3 on the board?)")
        self.port.reset_input_buffer()

    def _ensure_agent(self) -> str:
        data = self.t.agent_path.read_bytes()
        remote = posixpath.join(self.login.agent_dir, f"agent-{hashlib.sha256(data).hexdigest()[:16]}.pyz")
        q = shlex.quote(remote)
        self._send(f"test -f {q} && echo HILT_''HAVE || echo HILT_''NEED")
        if self._expect(["HILT_HAVE", "HILT_NEED"], "answer about the agent file") == 0:
            self._expect(self.login.shell_prompts, "shell prompt")
            return remote
        self._expect(self.login.shell_prompts, "shell prompt")
        packed = zlib.compress(data, 9)  # about 3.5x smaller: 83 kB is 7 s at 115200 baud as base64
        log.info(
            "board %s: copying the agent over the console (%d bytes, %d compressed)",
            self.t.name, len(data), len(packed),
        )  # fmt: skip
        self._shell(f"mkdir -p {shlex.quote(self.login.agent_dir)}")
        # the board's own python unpacks it (the agent needs it anyway; base64 and gzip may be absent)
        self._send(f"{shlex.quote(self.login.python)} -c {shlex.quote(UNPACK)} > {q}.tmp <<'HILT_EOF'")
        encoded = base64.encodebytes(packed).decode()
        for i, line in enumerate(encoded.splitlines()):
            self._send(line)
            if i % 32 == 31:  # stay well inside a tty's 4 KiB canonical input buffer
                time.sleep(0.05 + 32 * 78 * self.t._byte_time())
        self._send("HILT_EOF")
        self._expect(self.login.shell_prompts, "shell prompt after the copy")
        self._shell(f"test -s {q}.tmp && mv {q}.tmp {q}")  # an empty file (no python) is no agent
        return remote


class SerialSpec(TransportSpecBase):
    """A board on a serial line (pyserial): the agent started beforehand, or through the console
    when `login` is given."""

    kind: Literal["serial"] = "serial"
    device: str = Field(min_length=1)
    baud: int = Field(default=115200, ge=50)
    login: SerialLogin | None = None

    def address(self) -> str:
        return f"{self.device} @ {self.baud}"

    def open(self, name: str, **options: Any) -> SerialTransport:
        return SerialTransport(name, device=self.device, baud=self.baud, login=self.login, **options)


SPEC = SerialSpec
