#!/usr/bin/env python3
"""hilt on-board agent: one self-contained file (standard library only, Python >= 3.9).

It is copied to a board as is and serves requests from the host: board facts (`hello`),
content-addressed storage (`put`, `has`, `install`), benchmarks through the native
`hilt-runner` with power sampled in parallel (`bench`), and `shutdown`.

Wire formats (both carry a JSON header and an optional binary body):
- lines (local pipes, SSH): one JSON object per line; if it has `body_len`, exactly that many raw
  bytes follow the newline.
- frames (serial): MAGIC | u32 length | payload | u32 CRC32(length + payload), payload =
  JSON header, NUL, body. Frames over MAX_FRAME, with a bad CRC, or left incomplete for too long
  are dropped and the reader resynchronises on the next MAGIC.

Every request carries `v` (protocol version), `id`, `type` and `timeout` (seconds); every answer
carries the same `id` and either `ok: true, result` or `ok: false, error: {type, message}`.

The host imports this module for the codecs, so there is one definition of the wire format.
"""

import binascii
import hashlib
import json
import os
import platform
import select
import shutil
import signal
import struct
import subprocess
import sys
import threading
import time

PROTOCOL_VERSION = 1
AGENT_VERSION = "0.1.0"
MAGIC = b"HLT\x01"
MAX_FRAME = 1 << 20  # payload cap for serial frames (bytes)
MAX_LINE = 1 << 20  # cap on one JSON header line
MAX_BODY = 64 << 20  # cap on one binary body in lines mode
FRAME_STALE_S = 1.0  # an incomplete frame with no progress for this long is dropped
RUNNER_NAME = "hilt-runner"
READY_MARKER = ("\r\nHILT_AGENT_READY protocol=%d\r\n" % PROTOCOL_VERSION).encode("ascii")
KINDS = ("bundle", "runtime")
SHA_HEX = set("0123456789abcdef")


class AgentFailure(Exception):
    """A typed error answered to the host; the agent keeps serving."""

    def __init__(self, type_, message):
        Exception.__init__(self, message)
        self.type = type_
        self.message = message


# --------------------------------------------------------------------------- codecs


def encode_line(header, body=b""):
    """One lines-mode message: JSON line, then `body_len` raw bytes if there is a body."""
    header = dict(header)
    if body:
        header["body_len"] = len(body)
    else:
        header.pop("body_len", None)
    return json.dumps(header, separators=(",", ":")).encode("utf-8") + b"\n" + bytes(body)


def decode_header(raw: bytes) -> dict:
    """A message's JSON header; ValueError (bad UTF-8 included) unless it is one JSON object."""
    header = json.loads(raw.decode("utf-8"))
    if not isinstance(header, dict):
        raise ValueError("not a JSON object")
    return header


class LineDecoder:
    """Incremental lines-mode parser: feed bytes, get (header, body) pairs or (None, error)."""

    def __init__(self):
        self.buf = bytearray()
        self.pending = None  # header waiting for its body

    def feed(self, data, now=None):
        self.buf += data
        out = []
        while True:
            if self.pending is not None:
                need = self.pending.pop("body_len")
                if len(self.buf) < need:
                    self.pending["body_len"] = need
                    break
                body = bytes(self.buf[:need])
                del self.buf[:need]
                out.append((self.pending, body))
                self.pending = None
                continue
            idx = self.buf.find(b"\n")
            if idx < 0:
                if len(self.buf) > MAX_LINE:
                    self.buf.clear()
                    out.append((None, "line longer than %d bytes dropped" % MAX_LINE))
                break
            line = bytes(self.buf[:idx])
            del self.buf[: idx + 1]
            if not line.strip():
                continue
            try:
                header = decode_header(line)
            except ValueError as exc:
                out.append((None, "malformed JSON line: %s" % exc))
                continue
            blen = header.get("body_len", 0)
            if not isinstance(blen, int) or blen < 0 or blen > MAX_BODY:
                out.append((None, "bad body_len %r" % (blen,)))
                continue
            if blen:
                self.pending = header
            else:
                header.pop("body_len", None)
                out.append((header, b""))
        return out


def encode_frame(header, body=b""):
    """One serial frame: MAGIC, length, JSON header + NUL + body, CRC32 over length and payload."""
    payload = json.dumps(header, separators=(",", ":")).encode("utf-8") + b"\0" + bytes(body)
    if len(payload) > MAX_FRAME:
        raise ValueError("frame payload %d bytes exceeds cap %d" % (len(payload), MAX_FRAME))
    length = struct.pack(">I", len(payload))
    crc = struct.pack(">I", binascii.crc32(length + payload) & 0xFFFFFFFF)
    return MAGIC + length + payload + crc


class FrameDecoder:
    """Incremental frame parser with resynchronisation; counts what it had to throw away."""

    def __init__(self, max_frame=MAX_FRAME, stale_s=FRAME_STALE_S):
        self.buf = bytearray()
        self.max_frame = max_frame
        self.stale_s = stale_s
        self.dropped_bytes = 0
        self.crc_errors = 0
        self.stale_drops = 0
        self._progress_at = time.monotonic()

    def _skip(self, n):
        del self.buf[:n]
        self.dropped_bytes += n

    def feed(self, data, now=None):
        now = time.monotonic() if now is None else now
        if data:
            self.buf += data
            self._progress_at = now
        out = []
        while True:
            idx = self.buf.find(MAGIC)
            if idx < 0:
                keep = len(MAGIC) - 1
                if len(self.buf) > keep:
                    self._skip(len(self.buf) - keep)
                break
            if idx:
                self._skip(idx)
            if len(self.buf) < 8:
                break
            (length,) = struct.unpack(">I", bytes(self.buf[4:8]))
            if length > self.max_frame or length == 0:
                self._skip(1)
                continue
            total = 8 + length + 4
            if len(self.buf) < total:
                if now - self._progress_at > self.stale_s:
                    self.stale_drops += 1
                    self._skip(1)
                    continue
                break
            (crc,) = struct.unpack(">I", bytes(self.buf[8 + length : total]))
            if binascii.crc32(bytes(self.buf[4 : 8 + length])) & 0xFFFFFFFF != crc:
                self.crc_errors += 1
                self._skip(1)
                continue
            payload = bytes(self.buf[8 : 8 + length])
            del self.buf[:total]
            sep = payload.find(b"\0")
            head, body = (payload, b"") if sep < 0 else (payload[:sep], payload[sep + 1 :])
            try:
                header = decode_header(head)
            except ValueError as exc:
                out.append((None, "malformed frame header: %s" % exc))
                continue
            out.append((header, body))
        return out


# --------------------------------------------------------------------------- small helpers


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            block = f.read(1 << 20)
            if not block:
                break
            h.update(block)
    return h.hexdigest()


def tree_hash(files):
    """Hash of a set of files: sha256 over the sorted `name:sha256` lines (newline-terminated)."""
    text = "".join("%s:%s\n" % (name, files[name]) for name in sorted(files))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _is_sha(value):
    return isinstance(value, str) and len(value) == 64 and set(value) <= SHA_HEX


def _safe_name(name):
    return (
        isinstance(name, str)
        and name not in ("", ".", "..")
        and "/" not in name
        and "\\" not in name
        and "\0" not in name
    )


def _read(path, default=None):
    try:
        with open(path) as f:
            return f.read().strip()
    except (OSError, UnicodeDecodeError):
        return default


def _read_int(path, default=None):
    text = _read(path)
    try:
        return int(text) if text is not None else default
    except ValueError:
        return default


def _listdir(path):
    try:
        return sorted(os.listdir(path))
    except OSError:
        return []


def _natural_key(name):
    digits = "".join(c for c in name if c.isdigit())
    return (name.rstrip("0123456789"), int(digits) if digits else -1)


# --------------------------------------------------------------------------- board facts


class Facts:
    """Board facts read from procfs/sysfs; the sysfs root is a parameter so tests can fake it."""

    def __init__(self, sysfs="/sys", procfs="/proc"):
        self.sysfs = sysfs
        self.procfs = procfs

    def cpu_dirs(self):
        base = os.path.join(self.sysfs, "devices/system/cpu")
        names = [n for n in _listdir(base) if n.startswith("cpu") and n[3:].isdigit()]
        return [(int(n[3:]), os.path.join(base, n)) for n in sorted(names, key=_natural_key)]

    def governors(self):
        return {
            str(i): _read(os.path.join(d, "cpufreq/scaling_governor"))
            for i, d in self.cpu_dirs()
            if _read(os.path.join(d, "cpufreq/scaling_governor")) is not None
        }

    def freqs_khz(self):
        out = {}
        for i, d in self.cpu_dirs():
            cur = _read_int(os.path.join(d, "cpufreq/scaling_cur_freq"))
            mx = _read_int(os.path.join(d, "cpufreq/cpuinfo_max_freq"))
            if cur is not None:
                out[str(i)] = {"cur": cur, "max": mx}
        return out

    def temps_c(self):
        base = os.path.join(self.sysfs, "class/thermal")
        out = {}
        for name in sorted(_listdir(base), key=_natural_key):
            if not name.startswith("thermal_zone"):
                continue
            milli = _read_int(os.path.join(base, name, "temp"))
            if milli is None:
                continue
            label = _read(os.path.join(base, name, "type")) or name
            key = label if label not in out else "%s.%s" % (label, name)
            out[key] = milli / 1000.0
        return out

    def cpu_model(self):
        text = _read(os.path.join(self.procfs, "cpuinfo"), "") or ""
        fields = {}
        for line in text.splitlines():
            if ":" in line:
                k, v = line.split(":", 1)
                fields.setdefault(k.strip().lower(), v.strip())
        for key in ("model name", "model", "uarch", "hardware", "cpu model", "isa"):
            if fields.get(key):
                return fields[key]
        return platform.processor() or platform.machine()

    def memory_mb(self):
        text = _read(os.path.join(self.procfs, "meminfo"), "") or ""
        out = {}
        for line in text.splitlines():
            parts = line.split()
            if len(parts) >= 2 and parts[0] in ("MemTotal:", "MemAvailable:"):
                out[parts[0][:-1]] = int(parts[1]) // 1024
        return {"total": out.get("MemTotal"), "available": out.get("MemAvailable")}

    def os_name(self):
        text = _read("/etc/os-release", "") or ""
        for line in text.splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip().strip('"')
        return platform.system()

    def snapshot(self):
        return {"governors": self.governors(), "freqs_khz": self.freqs_khz(), "temps_c": self.temps_c()}


# --------------------------------------------------------------------------- power


INA2XX_POWER = ("ina209", "ina219", "ina220", "ina226", "ina230", "ina231", "ina233", "ina238", "ina260")
JETSON_TOTAL_RAILS = ("VDD_IN", "POM_5V_IN", "VIN_SYS_5V0")


class PowerReader:
    """One power source; `read()` gives watts now (or None), `interval_s` is the sensor's rate."""

    source = "model"
    interval_s = 0.01
    sensor = ""

    def read(self):
        raise NotImplementedError

    def describe(self):
        return {"source": self.source, "sensor": self.sensor, "interval_s": self.interval_s}

    def close(self):
        pass


def _hwmon_interval(path, default_ms=10):
    ms = _read_int(os.path.join(path, "update_interval"), default_ms)
    return min(max(ms, 2), 100) / 1000.0


class Ina2xxReader(PowerReader):
    """hwmon INA219/INA226 family: `power1_input` in microwatts."""

    source = "hwmon"

    def __init__(self, path, chip):
        self.path = os.path.join(path, "power1_input")
        self.sensor = "%s:%s" % (chip, os.path.basename(path))
        self.interval_s = _hwmon_interval(path)

    def read(self):
        uw = _read_int(self.path)
        return None if uw is None else uw / 1e6


class Ina3221Reader(PowerReader):
    """hwmon INA3221: no power file; P = bus mV (`inN_input`) x mA (`currN_input`) per labelled channel."""

    source = "hwmon"

    def __init__(self, path, channels, source="hwmon"):
        self.base = path
        self.channels = channels  # list of (index, label)
        self.source = source
        self.sensor = "ina3221:%s[%s]" % (os.path.basename(path), ",".join(lbl for _, lbl in channels))
        self.interval_s = _hwmon_interval(path)

    def read(self):
        total = 0.0
        for idx, _ in self.channels:
            mv = _read_int(os.path.join(self.base, "in%d_input" % idx))
            ma = _read_int(os.path.join(self.base, "curr%d_input" % idx))
            if mv is None or ma is None:
                return None
            total += mv * ma / 1e6
        return total


class RaplReader(PowerReader):
    """RAPL package counters (`energy_uj`), summed over packages, unwrapped at `max_energy_range_uj`."""

    source = "rapl"

    def __init__(self, zones):
        self.zones = zones  # list of (energy path, max range uj)
        self.sensor = "rapl:%d package(s)" % len(zones)
        self.interval_s = 0.01
        self._last = None

    def energy_uj(self):
        vals = []
        for path, _ in self.zones:
            v = _read_int(path)
            if v is None:
                return None
            vals.append(v)
        return vals

    @staticmethod
    def delta(prev, cur, max_range):
        """Energy between two counter readings, across at most one wrap."""
        return cur - prev if cur >= prev else cur + max_range - prev

    def read(self):
        now = time.monotonic()
        vals = self.energy_uj()
        if vals is None:
            return None
        last, self._last = self._last, (now, vals)
        if last is None or now <= last[0]:
            return None
        prev = last[1]
        joules = sum(self.delta(prev[i], vals[i], self.zones[i][1]) for i in range(len(vals))) / 1e6
        return joules / (now - last[0])


class MeterReader(PowerReader):
    """External meter on a serial port, hilt meter line protocol v1 (see `parse_meter_line`)."""

    source = "meter"

    def __init__(self, device, baud=115200):
        self.device = device
        self.sensor = "meter:%s" % device
        self.interval_s = 0.005
        self.fd = os.open(device, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        set_raw(self.fd, baud)
        self.buf = b""
        self.latest = None

    def read(self):
        while True:
            try:
                data = os.read(self.fd, 4096)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                break
            if not data:
                break
            self.buf += data
        *lines, self.buf = self.buf.split(b"\n")
        for line in lines:
            watts = parse_meter_line(line.decode("ascii", "replace"))
            if watts is not None:
                self.latest = watts
        return self.latest

    def close(self):
        try:
            os.close(self.fd)
        except OSError:
            pass


def parse_meter_line(line):
    """hilt meter line protocol v1: one reading per ASCII line, at the meter's own rate.

    A line is either a bare number (watts) or space-separated `key=value` pairs with keys
    W, mW (power) or V, mV and A, mA (power = V x A). Blank lines and lines starting with
    '#' are ignored; anything unparsable is skipped. Returns watts or None.
    """
    line = line.strip()
    if not line or line.startswith("#"):
        return None
    try:
        return float(line)
    except ValueError:
        pass
    vals = {}
    for part in line.replace(",", " ").split():
        if "=" not in part:
            continue
        k, v = part.split("=", 1)
        try:
            vals[k.strip()] = float(v)
        except ValueError:
            return None
    if "W" in vals:
        return vals["W"]
    if "mW" in vals:
        return vals["mW"] / 1000.0
    volts = vals.get("V", vals["mV"] / 1000.0 if "mV" in vals else None)
    amps = vals.get("A", vals["mA"] / 1000.0 if "mA" in vals else None)
    if volts is None or amps is None:
        return None
    return volts * amps


def discover_power(sysfs="/sys"):
    """Every power source the board offers, best first: Jetson rails, INA2xx, INA3221, RAPL."""
    jetson, ina2xx, ina3221 = [], [], []
    base = os.path.join(sysfs, "class/hwmon")
    for name in sorted(_listdir(base), key=_natural_key):
        path = os.path.join(base, name)
        chip = _read(os.path.join(path, "name"), "")
        if chip in INA2XX_POWER and os.path.exists(os.path.join(path, "power1_input")):
            ina2xx.append(Ina2xxReader(path, chip))
        elif chip == "ina3221":
            channels = []
            for idx in (1, 2, 3):
                if not os.path.exists(os.path.join(path, "curr%d_input" % idx)):
                    continue
                if _read(os.path.join(path, "in%d_enable" % idx), "1") == "0":
                    continue
                label = _read(os.path.join(path, "in%d_label" % idx), "ch%d" % idx)
                channels.append((idx, label))
            rails = [c for c in channels if c[1] in JETSON_TOTAL_RAILS]
            if rails:
                jetson.append(Ina3221Reader(path, rails[:1], source="jetson"))
            elif channels:
                ina3221.append(Ina3221Reader(path, channels))
    zones = []
    pbase = os.path.join(sysfs, "class/powercap")
    for name in sorted(_listdir(pbase), key=_natural_key):
        if not name.startswith("intel-rapl:") or name.count(":") != 1:
            continue  # top-level packages only; subzones are parts of them
        energy = os.path.join(pbase, name, "energy_uj")
        max_range = _read_int(os.path.join(pbase, name, "max_energy_range_uj"))
        if _read_int(energy) is not None and max_range:
            zones.append((energy, max_range))
    rapl = [RaplReader(zones)] if zones else []
    return jetson + ina2xx + ina3221 + rapl


def integrate(samples):
    """Trapezoid integral of (t, watts) samples: joules."""
    total = 0.0
    for i in range(1, len(samples)):
        (t0, p0), (t1, p1) = samples[i - 1], samples[i]
        total += (t1 - t0) * (p0 + p1) / 2.0
    return total


class PowerSampler(threading.Thread):
    """Samples a reader at its own rate until stopped; keeps (t, watts) pairs."""

    def __init__(self, reader):
        threading.Thread.__init__(self, daemon=True)
        self.reader = reader
        self.samples = []
        self._stop_event = threading.Event()

    def run(self):
        while not self._stop_event.is_set():
            watts = self.reader.read()
            if watts is not None:
                self.samples.append((time.monotonic(), watts))
            self._stop_event.wait(self.reader.interval_s)

    def stop(self):
        self._stop_event.set()
        self.join()
        watts = self.reader.read()
        if watts is not None:
            self.samples.append((time.monotonic(), watts))
        return self.samples


def mean_power(samples):
    """Time-weighted mean power of a sample run (falls back to the plain mean)."""
    if len(samples) >= 2 and samples[-1][0] > samples[0][0]:
        return integrate(samples) / (samples[-1][0] - samples[0][0])
    return sum(w for _, w in samples) / len(samples) if samples else None


def measure_window(reader, seconds):
    sampler = PowerSampler(reader)
    reader.read()  # prime counters (RAPL needs two readings)
    sampler.start()
    time.sleep(seconds)
    return sampler.stop()


# --------------------------------------------------------------------------- serial lines


def set_raw(fd, baud):
    """Put a tty into raw 8N1 at `baud` (termios; a pty accepts and ignores the speed)."""
    import termios
    import tty

    try:
        tty.setraw(fd, termios.TCSANOW)  # no flush: keep what the host already sent
        attrs = termios.tcgetattr(fd)
        speed = getattr(termios, "B%d" % baud, None)
        if speed is not None:
            attrs[4] = attrs[5] = speed
        attrs[2] |= termios.CLOCAL | termios.CREAD
        termios.tcsetattr(fd, termios.TCSANOW, attrs)
    except termios.error:
        pass


# --------------------------------------------------------------------------- the agent


class Agent:
    """Serves requests one at a time; errors become typed answers, never a dead agent."""

    def __init__(self, cache, sysfs="/sys", procfs="/proc"):
        self.cache = os.path.abspath(os.path.expanduser(cache))
        self.facts = Facts(sysfs, procfs)
        self.sysfs = sysfs
        for sub in ("objects", "partial", "bundle", "runtime", "tmp"):
            os.makedirs(os.path.join(self.cache, sub), exist_ok=True)
        self.running = True

    # -- dispatch
    def handle(self, header, body):
        req_id = header.get("id")
        try:
            version = header.get("v")
            if version != PROTOCOL_VERSION:
                raise AgentFailure(
                    "protocol_mismatch",
                    "agent speaks protocol %d, request uses %r; update the agent or the host"
                    % (PROTOCOL_VERSION, version),
                )
            kind = header.get("type")
            method = getattr(self, "do_" + str(kind), None) if isinstance(kind, str) else None
            if method is None:
                raise AgentFailure("unknown_request", "unknown request type %r" % (kind,))
            timeout = header.get("timeout", 60)
            if not isinstance(timeout, (int, float)) or timeout <= 0:
                raise AgentFailure("bad_request", "timeout must be a positive number")
            deadline = time.monotonic() + float(timeout)
            result = method(header.get("args") or {}, body, deadline)
            return {"v": PROTOCOL_VERSION, "id": req_id, "ok": True, "result": result}
        except AgentFailure as exc:
            return _error(req_id, exc.type, exc.message)
        except Exception as exc:  # noqa: BLE001 - the agent must answer, whatever broke
            return _error(req_id, "internal", "%s: %s" % (type(exc).__name__, exc))

    # -- requests
    def do_hello(self, args, body, deadline):
        mem = self.facts.memory_mb()
        return {
            "protocol": PROTOCOL_VERSION,
            "agent_version": AGENT_VERSION,
            "arch": platform.machine(),
            "cpu_model": self.facts.cpu_model(),
            "cpu_count": os.cpu_count(),
            "memory_mb": mem,
            "os": self.facts.os_name(),
            "kernel": platform.release(),
            "python": platform.python_version(),
            "governors": self.facts.governors(),
            "temps_c": self.facts.temps_c(),
            "power_sources": [r.describe() for r in discover_power(self.sysfs)],
            "runtimes": self._runtimes(),
            "cache": self.cache,
            "pid": os.getpid(),
        }

    def do_has(self, args, body, deadline):
        hashes = args.get("hashes")
        if not isinstance(hashes, list):
            raise AgentFailure("bad_request", "has needs a list 'hashes'")
        held = [h for h in hashes if _is_sha(h) and self._held(h)]
        return {"held": held}

    def do_put(self, args, body, deadline):
        """Chunked, resumable, content-addressed upload: op begin / chunk / commit."""
        sha = args.get("sha256")
        if not _is_sha(sha):
            raise AgentFailure("bad_request", "put needs a lowercase hex 'sha256'")
        final = os.path.join(self.cache, "objects", sha)
        partial = os.path.join(self.cache, "partial", sha)
        op = args.get("op", "begin")
        if os.path.exists(final):
            return {"offset": os.path.getsize(final), "complete": True}
        if op == "begin":
            size = os.path.getsize(partial) if os.path.exists(partial) else 0
            return {"offset": size, "complete": False}
        if op == "chunk":
            offset = args.get("offset")
            size = os.path.getsize(partial) if os.path.exists(partial) else 0
            if offset != size:  # duplicate or out of order: tell the host where to resume
                return {"offset": size, "complete": False}
            with open(partial, "ab") as f:
                f.write(body)
            return {"offset": size + len(body), "complete": False}
        if op == "commit":
            if not os.path.exists(partial):
                raise AgentFailure("missing_file", "nothing uploaded for %s" % sha)
            actual = sha256_file(partial)
            if actual != sha:
                os.unlink(partial)
                raise AgentFailure(
                    "hash_mismatch", "uploaded data hashes to %s, not %s; refused" % (actual, sha)
                )
            os.replace(partial, final)
            return {"offset": os.path.getsize(final), "complete": True}
        raise AgentFailure("bad_request", "unknown put op %r" % (op,))

    def do_install(self, args, body, deadline):
        """Assemble a bundle or runtime directory from stored objects; refuse a hash mismatch."""
        kind = args.get("kind")
        if kind not in KINDS:
            raise AgentFailure("bad_request", "install kind must be one of %s" % (KINDS,))
        tree = args.get("hash")
        files = args.get("files")
        if not _is_sha(tree) or not isinstance(files, dict) or not files:
            raise AgentFailure("bad_request", "install needs 'hash' and a non-empty 'files' map")
        for name, sha in files.items():
            if not _safe_name(name) or not _is_sha(sha):
                raise AgentFailure("bad_request", "bad file entry %r: %r" % (name, sha))
        hashed = dict(files)
        if kind == "bundle":
            hashed.pop("metadata.json", None)
        if tree_hash(hashed) != tree:
            raise AgentFailure(
                "hash_mismatch", "%s files hash to %s, not %s" % (kind, tree_hash(hashed), tree)
            )
        target = os.path.join(self.cache, kind, tree)
        if os.path.isdir(target):
            return {"path": target, "installed": False}
        missing = [n for n, s in files.items() if not os.path.exists(os.path.join(self.cache, "objects", s))]
        if missing:
            raise AgentFailure("missing_file", "upload these first: %s" % ", ".join(sorted(missing)))
        staging = os.path.join(self.cache, "tmp", "%s-%d" % (tree, os.getpid()))
        shutil.rmtree(staging, ignore_errors=True)
        os.makedirs(staging)
        for name, sha in files.items():
            dst = os.path.join(staging, name)
            shutil.copyfile(os.path.join(self.cache, "objects", sha), dst)
            if kind == "runtime" and name == RUNNER_NAME:
                os.chmod(dst, 0o755)
        if kind == "bundle" and "metadata.json" in files:
            self._check_bundle_metadata(staging, hashed)
        if kind == "runtime" and args.get("versions"):
            with open(os.path.join(staging, "versions.json"), "w") as f:
                json.dump(args["versions"], f)
        os.replace(staging, target)
        return {"path": target, "installed": True}

    def _check_bundle_metadata(self, staging, hashed):
        try:
            with open(os.path.join(staging, "metadata.json")) as f:
                meta = json.load(f)
        except ValueError as exc:
            shutil.rmtree(staging, ignore_errors=True)
            raise AgentFailure("bad_bundle", "metadata.json is not JSON: %s" % exc) from None
        listed = meta.get("files") if isinstance(meta, dict) else None
        if listed != hashed:
            shutil.rmtree(staging, ignore_errors=True)
            raise AgentFailure("hash_mismatch", "metadata.json 'files' does not match the uploaded files")

    def do_bench(self, args, body, deadline):
        return Bench(self, args, deadline).run()

    def do_shutdown(self, args, body, deadline):
        self.running = False
        return {"bye": True}

    # -- store
    def _held(self, sha):
        return any(
            os.path.exists(os.path.join(self.cache, sub, sha)) for sub in ("objects", "bundle", "runtime")
        )

    def _runtimes(self):
        out = []
        base = os.path.join(self.cache, "runtime")
        for name in _listdir(base):
            info = {"hash": name}
            path = os.path.join(base, name, "versions.json")
            if os.path.exists(path):
                try:
                    with open(path) as f:
                        info.update(json.load(f))
                except ValueError:
                    pass
            out.append(info)
        return out


def _error(req_id, type_, message):
    return {"v": PROTOCOL_VERSION, "id": req_id, "ok": False, "error": {"type": type_, "message": message}}


def _int_arg(args, name, default, low=0):
    value = args.get(name, default)
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise AgentFailure("bad_request", "%s must be an integer >= %d" % (name, low))
    return value


class Bench:
    """One benchmark: idle power, the runner under a deadline with power sampled alongside, facts."""

    def __init__(self, agent, args, deadline):
        self.agent = agent
        self.args = args
        self.deadline = deadline
        self.warmup = _int_arg(args, "warmup", 5)
        self.min_iters = _int_arg(args, "min_iters", 20, 1)
        self.min_seconds = float(args.get("min_seconds", 1.0))
        self.threads = _int_arg(args, "threads", 1, 1)
        self.cores = args.get("cores") or []
        self.idle_seconds = float(args.get("idle_seconds", 0.5))
        if not isinstance(self.cores, list) or not all(isinstance(c, int) and c >= 0 for c in self.cores):
            raise AgentFailure("bad_request", "cores must be a list of CPU indices")

    def command(self):
        runtime = self.args.get("runtime")
        if not _is_sha(runtime):
            raise AgentFailure("bad_request", "bench needs 'runtime' (the hash of an installed runtime)")
        rdir = os.path.join(self.agent.cache, "runtime", runtime)
        runner = os.path.join(rdir, RUNNER_NAME)
        if not os.path.exists(runner):
            raise AgentFailure("missing_file", "runtime %s is not installed; upload and install it" % runtime)
        cmd = [runner]
        if self.args.get("selftest"):
            cmd.append("--selftest")
        else:
            bundle = self.args.get("bundle")
            bdir = os.path.join(self.agent.cache, "bundle", str(bundle))
            if not _is_sha(bundle) or not os.path.isdir(bdir):
                raise AgentFailure(
                    "missing_file", "bundle %s is not installed; upload and install it" % bundle
                )
            cmd += ["--bundle", bdir]
        cmd += [
            "--warmup", str(self.warmup),
            "--min-iters", str(self.min_iters),
            "--min-seconds", repr(self.min_seconds),
            "--threads", str(self.threads),
        ]  # fmt: skip
        env = dict(os.environ)
        env["LD_LIBRARY_PATH"] = rdir + (":" + env["LD_LIBRARY_PATH"] if env.get("LD_LIBRARY_PATH") else "")
        env["OMP_NUM_THREADS"] = env["TVM_NUM_THREADS"] = str(self.threads)
        return cmd, env

    def reader(self):
        meter = self.args.get("meter")
        if meter:
            try:
                return MeterReader(meter["device"], int(meter.get("baud", 115200)))
            except (OSError, KeyError, TypeError) as exc:
                raise AgentFailure("power", "cannot open meter %r: %s" % (meter, exc)) from None
        if self.args.get("power", True):
            found = discover_power(self.agent.sysfs)
            if found:
                return found[0]
        return None

    def run(self):
        cmd, env = self.command()
        before = self.agent.facts.snapshot()
        reader = self.reader()
        try:
            idle = measure_window(reader, self.idle_seconds) if reader and self.idle_seconds > 0 else []
            sampler = PowerSampler(reader) if reader else None
            started_at = time.time()
            t0 = time.monotonic()
            if sampler:
                sampler.start()
            proc_result = self._run_runner(cmd, env)
            t1 = time.monotonic()
            busy = sampler.stop() if sampler else []
        finally:
            if reader:
                reader.close()
        finished_at = time.time()
        after = self.agent.facts.snapshot()
        runner = self._parse(proc_result)
        energy = self._energy(reader, idle, busy, runner)
        throttled, reasons = _throttle_check(before, after, float(self.args.get("throttle_temp_c", 80.0)))
        return {
            "runner": runner,
            "energy": energy,
            "facts_before": before,
            "facts_after": after,
            "throttled": throttled,
            "throttle_reasons": reasons,
            "started_at": started_at,
            "finished_at": finished_at,
            "wall_s": t1 - t0,
            "cores": self.cores,
            "command": cmd[1:],
        }

    def _run_runner(self, cmd, env):
        remaining = self.deadline - time.monotonic() - 0.2
        if remaining <= 0:
            raise AgentFailure("timeout", "no time left for the runner before the request deadline")
        cores = self.cores

        def pin():
            if cores and hasattr(os, "sched_setaffinity"):
                os.sched_setaffinity(0, cores)

        try:
            proc = subprocess.Popen(
                cmd,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                stdin=subprocess.DEVNULL,
                env=env,
                start_new_session=True,
                preexec_fn=pin if cores else None,
            )
        except OSError as exc:
            raise AgentFailure("runner_crashed", "cannot start %s: %s" % (cmd[0], exc)) from None
        try:
            out, err = proc.communicate(timeout=remaining)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            proc.communicate()
            raise AgentFailure(
                "runner_timeout",
                "runner still running at the request deadline; killed after %.1f s" % remaining,
            ) from None
        return proc.returncode, out, err

    def _parse(self, result):
        code, out, err = result
        lines = [ln for ln in out.decode("utf-8", "replace").splitlines() if ln.strip()]
        parsed = None
        if lines:
            try:
                parsed = json.loads(lines[-1])
            except ValueError:
                parsed = None
        tail = err.decode("utf-8", "replace").strip()[-400:]
        if code is not None and code < 0:
            raise AgentFailure(
                "runner_crashed", "runner died from signal %d%s" % (-code, (": " + tail) if tail else "")
            )
        if isinstance(parsed, dict) and parsed.get("ok") is False:
            e = parsed.get("error") or {}
            raise AgentFailure(
                "runner_" + str(e.get("type", "error")), str(e.get("message", "runner failed"))
            )
        if code != 0 or not isinstance(parsed, dict) or not parsed.get("ok"):
            raise AgentFailure(
                "runner_crashed",
                "runner exited %s without a result%s" % (code, (": " + tail) if tail else ""),
            )
        samples = parsed.get("samples_ns")
        if not isinstance(samples, list) or not samples:
            raise AgentFailure("runner_crashed", "runner result has no samples")
        return parsed

    def _energy(self, reader, idle, busy, runner):
        samples = runner["samples_ns"]
        mean_s = sum(samples) / len(samples) / 1e9
        if reader is not None and busy:
            idle_w = mean_power(idle) if idle else None
            mean_w = mean_power(busy)
            source, sensor = reader.source, reader.sensor
            n = len(busy)
        else:
            model = self.args.get("power_model") or {}
            if "idle_w" not in model or "per_core_w" not in model:
                return {"source": "none", "sensor": "", "note": "no sensor and no power model given"}
            idle_w = float(model["idle_w"])
            mean_w = idle_w + float(model["per_core_w"]) * self.threads
            source, sensor, n = "model", "profile power model", 0
        active_w = max(mean_w - idle_w, 0.0) if idle_w is not None else None
        return {
            "source": source,
            "sensor": sensor,
            "samples": n,
            "idle_w": idle_w,
            "mean_w": mean_w,
            "total_j_per_inference": mean_w * mean_s,
            "active_j_per_inference": active_w * mean_s if active_w is not None else None,
        }


def _kill_group(proc):
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except OSError:
        try:
            proc.kill()
        except OSError:
            pass


def _throttle_check(before, after, temp_limit):
    """A run is suspect if it got hot, or a core ran well below its own frequency before the run."""
    reasons = []
    hot = [k for k, t in after.get("temps_c", {}).items() if t >= temp_limit]
    if hot:
        reasons.append("temperature >= %.0f C on %s" % (temp_limit, ", ".join(hot)))
    for cpu, fa in after.get("freqs_khz", {}).items():
        fb = before.get("freqs_khz", {}).get(cpu)
        if fb and fa.get("cur") and fb.get("cur") and fa["cur"] < 0.85 * fb["cur"]:
            reasons.append("cpu%s frequency fell %d -> %d kHz" % (cpu, fb["cur"], fa["cur"]))
        elif fa.get("max") and fa.get("cur") and fa["cur"] < 0.5 * fa["max"]:
            gov = after.get("governors", {}).get(cpu)
            if gov == "performance":
                reasons.append("cpu%s at %d of %d kHz under 'performance'" % (cpu, fa["cur"], fa["max"]))
    return bool(reasons), reasons


# --------------------------------------------------------------------------- serving loops


def serve(agent, in_fd, out_fd, framed):
    """Read requests from `in_fd`, answer on `out_fd`, until shutdown or end of input."""
    decoder = FrameDecoder() if framed else LineDecoder()
    encode = encode_frame if framed else encode_line
    while agent.running:
        try:
            ready, _, _ = select.select([in_fd], [], [], 0.2)
        except InterruptedError:
            continue
        data = b""
        if ready:
            try:
                data = os.read(in_fd, 1 << 16)
            except (BlockingIOError, InterruptedError):
                continue
            if not data:
                return
        for header, body in decoder.feed(data):
            if header is None:
                answer = _error(None, "bad_request", body)
            else:
                answer = agent.handle(header, body)
            out = encode(answer)
            _write_all(out_fd, out)
            if not agent.running:
                return


def _write_all(fd, data):
    view = memoryview(data)
    while view:
        try:
            n = os.write(fd, view)
        except BlockingIOError:
            select.select([], [fd], [], 1.0)
            continue
        view = view[n:]


def main(argv=None):
    import argparse

    parser = argparse.ArgumentParser(description="hilt board agent (protocol %d)" % PROTOCOL_VERSION)
    parser.add_argument("--cache", default=os.path.join("~", ".cache", "hilt-agent"))
    parser.add_argument("--sysfs-root", default="/sys")
    parser.add_argument("--procfs-root", default="/proc")
    parser.add_argument("--serial", metavar="DEVICE", help="serve binary frames on this tty")
    parser.add_argument("--baud", type=int, default=115200)
    parser.add_argument("--framed", action="store_true", help="binary frames on stdin/stdout")
    parser.add_argument("--version", action="store_true")
    opts = parser.parse_args(argv)
    if opts.version:
        print(json.dumps({"agent_version": AGENT_VERSION, "protocol": PROTOCOL_VERSION}))
        return 0
    agent = Agent(opts.cache, opts.sysfs_root, opts.procfs_root)
    if opts.serial:
        fd = os.open(opts.serial, os.O_RDWR | os.O_NOCTTY)
        set_raw(fd, opts.baud)
        # a host that started us from a console login waits for this before sending frames
        # (framed readers skip it as noise)
        _write_all(fd, READY_MARKER)
        serve(agent, fd, fd, framed=True)
        return 0
    out_fd = sys.stdout.fileno()
    serve(agent, sys.stdin.fileno(), out_fd, framed=opts.framed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
