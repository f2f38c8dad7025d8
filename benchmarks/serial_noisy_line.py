"""Upload goodput over a noisy serial line vs its error rate (issue 19).

Goals: at 1e-4 flips per byte, goodput >= 70 % of the clean line's; at 1e-3 the upload completes;
above the rate where no frame can pass, the clear error (LineTooNoisyError) within 60 s.

Usage: .venv/bin/python benchmarks/serial_noisy_line.py [--size-mb 4] [--baud 921600] [--seed 1]
(prints a table, writes benchmarks/serial_noisy_line.json)

Method
- One pty relay (`device_agents.linesim.PtyRelay`) between the serial transport and the packed agent
  serving `--serial`, a fresh agent cache per rate. A pty ignores the baud rate, so the relay
  throttles each direction to `--baud` at 8N1 (ten bit times per byte: 92,160 bytes/s at 921600).
- The transport is opened on a clean line (hello), then the relay damages both directions at random
  from a fixed seed: each byte has its bit flipped with the given probability (one random bit).
- A file of random bytes (`--size-mb` MiB) is uploaded; goodput = file size / wall time of
  `upload()` (begin, all chunks, commit). The no-frame rate (3e-2 flips per byte: a frame of the
  minimum 256-byte chunk plus its header survives with p ~ 1e-5) measures the time to the error.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from device_agents.agent import wire  # noqa: E402
from device_agents.linesim import LineNoise, PtyRelay  # noqa: E402
from device_agents.transports.base import LineTooNoisyError, agent_pyz  # noqa: E402
from device_agents.transports.serial import SerialTransport  # noqa: E402

OUT = Path(__file__).with_suffix(".json")
RATES = (0.0, 1e-5, 1e-4, 1e-3, 3e-2)
NO_FRAME_RATE = 3e-2


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_facts() -> dict[str, Any]:
    """Host, CPU model, CPU count and Python: what a serial benchmark's JSON says it ran on."""
    return {
        "host": platform.node(),
        "cpu": _cpu_model(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
    }


def measure(rate: float, blob: Path, baud: int, seed: int, work: Path) -> dict[str, Any]:
    cache = work / f"cache-{rate:g}"
    size = blob.stat().st_size
    out: dict[str, Any] = {"flips_per_byte": rate, "size_bytes": size}
    with PtyRelay(baud=baud, seed=seed) as relay:
        proc = subprocess.Popen(
            [sys.executable, str(agent_pyz()), "--serial", relay.board_path, "--cache", str(cache)]
        )
        try:
            with SerialTransport("bench", relay.host_path, baud) as t:
                noise = LineNoise(flip=rate) if rate else None
                relay.set_noise(noise, noise)
                t0 = time.monotonic()
                try:
                    sha = t.upload(blob)
                    out["completed"] = (cache / "objects" / sha).read_bytes() == blob.read_bytes()
                except LineTooNoisyError as exc:
                    out["completed"] = False
                    out["error"] = str(exc)
                elapsed = time.monotonic() - t0
                relay.set_noise(None, None)
                line = t.line.as_dict()
        finally:
            proc.kill()
            proc.wait()
        damage = relay.noise_damage
    out["seconds"] = round(elapsed, 2)
    out["goodput_bps"] = round(size / elapsed, 1) if out["completed"] else None
    out["final_chunk"] = t.sizer.size
    out["line"] = {k: line[k] for k in ("frames_sent", "frames_failed", "retries", "crc_errors", "resyncs",
                                        "bytes_sent", "frame_error_rate")}  # fmt: skip
    out["line"]["agent"] = line["agent"]
    out["flipped"] = {d: damage[d]["flipped"] for d in damage}
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=float, default=4.0)
    parser.add_argument("--baud", type=int, default=921600)
    parser.add_argument("--seed", type=int, default=1)
    opts = parser.parse_args()
    console = Console()
    rows = []
    with tempfile.TemporaryDirectory(prefix="hilt-noisy-") as tmp:
        work = Path(tmp)
        blob = work / "blob"
        blob.write_bytes(os.urandom(int(opts.size_mb * (1 << 20))))
        for rate in RATES:
            row = measure(rate, blob, opts.baud, opts.seed, work)
            rows.append(row)
            console.print(
                f"flips/byte {rate:g}: {'done' if row['completed'] else 'error'} in {row['seconds']} s, "
                f"goodput {row['goodput_bps']} B/s, frames failed {row['line']['frame_error_rate']:.1%}",
                highlight=False,
            )
    line_rate = opts.baud / 10
    clean = rows[0]["goodput_bps"] or 0.0
    table = Table(title=f"upload over a noisy line ({opts.size_mb:g} MiB, relay at {opts.baud} baud 8N1)")
    for col in ("flips/byte", "result", "seconds", "goodput kB/s", "% of clean", "% of line", "frames failed",
                "final chunk B"):  # fmt: skip
        table.add_column(col, justify="right")
    for r in rows:
        g = r["goodput_bps"]
        table.add_row(
            f"{r['flips_per_byte']:g}", "done" if r["completed"] else "LineTooNoisyError",
            f"{r['seconds']:.1f}",
            f"{g / 1e3:.1f}" if g else "-", f"{100 * g / clean:.0f} %" if g and clean else "-",
            f"{100 * g / line_rate:.0f} %" if g else "-", f"{r['line']['frame_error_rate']:.1%}",
            str(r["final_chunk"]),
        )  # fmt: skip
    console.print(table)
    by_rate = {r["flips_per_byte"]: r for r in rows}
    goals = {
        "1e-4 goodput >= 70 % of clean": bool(
            by_rate[1e-4]["goodput_bps"] and by_rate[1e-4]["goodput_bps"] >= 0.7 * clean
        ),
        "1e-3 upload completes": bool(by_rate[1e-3]["completed"]),
        "no-frame rate: clear error within 60 s": (
            not by_rate[NO_FRAME_RATE]["completed"]
            and "line too noisy" in by_rate[NO_FRAME_RATE].get("error", "")
            and by_rate[NO_FRAME_RATE]["seconds"] <= 60
        ),
    }
    for goal, ok in goals.items():
        console.print(f"{'[green]met[/green]' if ok else '[red]missed[/red]'}: {goal}")
    if by_rate[NO_FRAME_RATE].get("error"):
        console.print(f"error at {NO_FRAME_RATE:g}: {by_rate[NO_FRAME_RATE]['error']}", highlight=False)
    result = {
        "machine": machine_facts(),
        "line": (
            f"pty relay throttled to {opts.baud} baud 8N1 (10 bit times per byte, {line_rate:,.0f} bytes/s) "
            "in each direction; a pty itself ignores the baud rate. Noise: one random bit flipped per byte "
            "with the given probability, both directions, seeded; switched on after hello."
        ),
        "agent_protocol": wire.PROTOCOL_VERSION,
        "seed": opts.seed,
        "clean_goodput_bps": clean,
        "rows": rows,
        "goals": goals,
        "command": f"python benchmarks/serial_noisy_line.py --size-mb {opts.size_mb:g} --baud {opts.baud} "
        f"--seed {opts.seed}",
    }
    OUT.write_text(json.dumps(result, indent=2) + "\n")
    console.print(f"written to {OUT}")
    return 0 if all(goals.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
