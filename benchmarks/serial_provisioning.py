"""Provisioning a board over a serial line: runtime + a first bundle, then a second candidate (issue 30).

Goals (issue 30): a fresh aarch64 board over 115200 baud ready to measure in <= 5 min, a further
candidate bundle in <= 2 min; over 921600 baud <= 45 s; at 1e-4 flips per byte >= 70 % of the clean
line's goodput.

Usage: .venv/bin/python benchmarks/serial_provisioning.py --runtime-dir DIR [--no-blas]
         --bundle DIR --bundle2 DIR [--rows 921600:0,921600:1e-4,115200:0] [--plain-rows 921600:0]
         [--out JSON] [--label TEXT]
       .venv/bin/python benchmarks/serial_provisioning.py --combine A.json B.json ... --out JSON
(prints a table, writes benchmarks/serial_provisioning.json or --out; without --runtime-dir the cached
aarch64 runtime of `harness.runtime.build_runtime` is used if it was built, else it says so. A 115200
baud row with demo-sized bundles takes tens of minutes of line time and little CPU: rows can run as
separate processes side by side, each with its own --out, and --combine merges them.)

Method
- One pty relay (`device_agents.linesim.PtyRelay`) throttled to the row's baud at 8N1 (ten bit times
  per byte) between the serial transport and the packed agent serving `--serial`, an empty agent
  store per row. The transport says hello on a clean line; then the relay flips one random bit per
  byte with the row's probability, both directions, from a fixed seed.
- "ready": `ship_tree` of the runtime (each file uploaded, then `install`), then of the first bundle,
  exactly as `hilt bench` ships them; "second": `ship_tree` of a second candidate of the same study
  (only the files the board lacks cross). Wall time of each; bytes the host put on the line
  (`LineStats.bytes_sent`: frames, resends included) vs bytes stored (uncompressed, acknowledged);
  goodput = bytes stored / seconds of upload.
- Plain rows (`--plain-rows`) send the same with compression off: what the line carried before.
- The agent itself (`agent-<sha16>.pyz`) is copied by a console login (`ConsoleLogin`), not through
  the agent: its line time is computed from the bytes that copy sends (base64 of the zlib-compressed
  file), not measured here.
"""

from __future__ import annotations

import argparse
import base64
import json
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from device_agents.agent import wire  # noqa: E402
from device_agents.bench import bundle_tree, ship_tree  # noqa: E402
from device_agents.linesim import LineNoise, PtyRelay  # noqa: E402
from device_agents.transports.base import agent_pyz  # noqa: E402
from device_agents.transports.serial import SerialTransport  # noqa: E402
from harness.runtime import BLAS_FILE  # noqa: E402
from harness.runtime.build import RECORD_NAME, RuntimePackage, runtime_dir  # noqa: E402
from hilt_base import hashing  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serial_noisy_line import machine_facts  # noqa: E402

OUT = Path(__file__).with_suffix(".json")
DEFAULT_ROWS = "921600:0,921600:1e-4,115200:0"


def _runtime(directory: Path | None, blas: bool) -> tuple[str, dict[str, Path], dict[str, Any], str]:
    """The runtime to ship: its tree hash, files, versions, and where it came from."""
    if directory is None:
        cached = runtime_dir("aarch64")
        if not (cached / RECORD_NAME).is_file():
            raise SystemExit(
                f"no cached aarch64 runtime at {cached}: build it (hilt runtime build --arch aarch64) "
                "or give --runtime-dir"
            )
        directory = cached
    pkg = RuntimePackage.load(directory)
    names = sorted(n for n in pkg.files if blas or n != BLAS_FILE)
    files = {n: Path(pkg.directory) / n for n in names}
    tree = hashing.tree_hash({n: pkg.files[n] for n in names})
    versions = {"arch": pkg.arch, **{str(k): str(v) for k, v in pkg.versions.items()}}
    return (
        tree,
        files,
        versions,
        f"{pkg.arch} runtime {directory}" + ("" if blas else f" without {BLAS_FILE}"),
    )


def _agent_copy_bytes() -> tuple[int, int]:
    """The agent file's size, and the bytes a console login sends to copy it (base64 lines)."""
    data = agent_pyz().read_bytes()
    return len(data), len(base64.encodebytes(zlib.compress(data, 9)))


def measure(
    baud: int, flips: float, compress: bool, runtime: tuple[str, dict[str, Path], dict[str, Any]],
    bundles: list[Path], seed: int, work: Path,
) -> dict[str, Any]:  # fmt: skip
    cache = work / f"cache-{baud}-{flips:g}-{'z' if compress else 'plain'}"
    rt_tree, rt_files, versions = runtime
    out: dict[str, Any] = {"baud": baud, "flips_per_byte": flips, "compressed": compress}
    with PtyRelay(baud=baud, seed=seed) as relay:
        proc = subprocess.Popen(
            [sys.executable, str(agent_pyz()), "--serial", relay.board_path, "--cache", str(cache)]
        )
        try:
            with SerialTransport("provision", relay.host_path, baud) as t:
                t.compress = compress
                noise = LineNoise(flip=flips) if flips else None
                relay.set_noise(noise, noise)
                phases = []
                first = [("runtime", rt_files, rt_tree, versions), ("bundle", *_bundle(bundles[0]))]
                steps = [("ready", first), ("second", [("bundle", *_bundle(bundles[1]))])]
                for phase, trees in steps:
                    before = dict(t.line.as_dict())
                    wire0 = relay.forwarded["to_board"] + relay.forwarded["to_host"]
                    t0 = time.monotonic()
                    for kind, files, tree, extra in trees:
                        ship_tree(t, kind, files, tree, **({"versions": extra} if extra else {}))
                        assert (cache / kind / tree).is_dir()
                    seconds = time.monotonic() - t0
                    after = t.line.as_dict()
                    stored = after["upload_bytes"] - before["upload_bytes"]
                    upload_s = after["upload_s"] - before["upload_s"]
                    phases.append({
                        "phase": phase,
                        "seconds": round(seconds, 2),
                        "stored_bytes": stored,
                        "sent_bytes": after["bytes_sent"] - before["bytes_sent"],
                        "upload_wire_bytes": after["upload_wire_bytes"] - before["upload_wire_bytes"],
                        "line_bytes_both_ways": sum(relay.forwarded.values()) - wire0,
                        "goodput_bps": round(stored / upload_s, 1) if upload_s > 0 else None,
                        "frames_failed": after["frames_failed"] - before["frames_failed"],
                        "frames_sent": after["frames_sent"] - before["frames_sent"],
                        "bad_chunks": after["bad_chunks"] - before["bad_chunks"],
                    })  # fmt: skip
                relay.set_noise(None, None)
        finally:
            proc.kill()
            proc.wait()
        out["flipped"] = {d: v["flipped"] for d, v in relay.noise_damage.items()}
    out["phases"] = phases
    return out


def _bundle(directory: Path) -> tuple[dict[str, Path], str, None]:
    tree, files = bundle_tree(directory)
    return files, tree, None


def _parse_rows(text: str) -> list[tuple[int, float]]:
    rows = []
    for item in filter(None, text.split(",")):
        baud, flips = item.split(":")
        rows.append((int(baud), float(flips)))
    return rows


def _report(console: Console, rows: list[dict[str, Any]]) -> dict[str, bool | None]:
    """Print the table and the issue's goals for these rows; the goals, met (True), missed or not run."""
    table = Table(title="provisioning over a serial line (pty relay, 8N1)")
    for col in ("baud", "flips/byte", "chunks", "phase", "seconds", "+agent copy s", "stored kB", "sent kB",
                "sent/stored", "goodput kB/s", "% of line", "frames failed"):  # fmt: skip
        table.add_column(col, justify="right")
    for r in rows:
        for p in r["phases"]:
            g = p["goodput_bps"]
            with_agent = f"{p['seconds'] + r['agent_copy_s']:.1f}" if p["phase"] == "ready" else ""
            codec = "lzma/zdict" if r["compressed"] else "plain"
            table.add_row(
                str(r["baud"]), f"{r['flips_per_byte']:g}", codec, p["phase"], f"{p['seconds']:.1f}",
                with_agent,
                f"{p['stored_bytes'] / 1e3:,.0f}", f"{p['sent_bytes'] / 1e3:,.0f}",
                f"{p['sent_bytes'] / p['stored_bytes']:.2f}" if p["stored_bytes"] else "-",
                f"{g / 1e3:.1f}" if g else "-", f"{100 * g / (r['baud'] / 10):.0f} %" if g else "-",
                f"{p['frames_failed']}/{p['frames_sent']}",
            )  # fmt: skip
    console.print(table)
    by = {(r["baud"], r["flips_per_byte"], r["compressed"]): r for r in rows}
    goals: dict[str, bool | None] = {}

    def ready_s(key: tuple[int, float, bool]) -> float | None:
        r = by.get(key)
        return r["phases"][0]["seconds"] + r["agent_copy_s"] if r else None

    s115, s921 = ready_s((115200, 0.0, True)), ready_s((921600, 0.0, True))
    goals["115200: ready (agent + runtime + bundle) <= 5 min"] = None if s115 is None else s115 <= 300
    second = by.get((115200, 0.0, True))
    goals["115200: a further candidate <= 2 min"] = (
        None if second is None else second["phases"][1]["seconds"] <= 120
    )
    goals["921600: ready <= 45 s"] = None if s921 is None else s921 <= 45
    for baud in (921600, 115200):
        clean, noisy = by.get((baud, 0.0, True)), by.get((baud, 1e-4, True))
        if clean and noisy:
            goals[f"{baud} at 1e-4 flips: goodput >= 70 % of clean"] = (
                noisy["phases"][0]["goodput_bps"] or 0
            ) >= 0.7 * (clean["phases"][0]["goodput_bps"] or 1)
    for goal, ok in goals.items():
        mark = (
            "[yellow]not run[/yellow]" if ok is None else "[green]met[/green]" if ok else "[red]missed[/red]"
        )
        console.print(f"{mark}: {goal}")
    return goals


def _combine(console: Console, paths: list[Path], label: str | None, out: Path) -> int:
    """One result from several runs of this script (rows measured by separate processes, side by side)."""
    parts = [json.loads(p.read_text()) for p in paths]
    first = parts[0]
    for path, part in zip(paths[1:], parts[1:], strict=True):
        for key in ("runtime", "bundles", "sizes", "agent_protocol", "codecs", "seed"):
            if part[key] != first[key]:
                raise SystemExit(f"{path}: its {key} differs from {paths[0]}'s; these runs do not combine")
    rows = [row for part in parts for row in part["rows"]]
    result = {k: v for k, v in first.items() if k not in ("rows", "goals", "command")}
    result["label"] = label or first.get("label")
    result["rows"] = rows
    result["goals"] = _report(console, rows)
    result["command"] = [part["command"] for part in parts]
    result["combined_from"] = [str(p) for p in paths]
    out.write_text(json.dumps(result, indent=2) + "\n")
    console.print(f"written to {out}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runtime-dir", type=Path, help="a built runtime (default: the cached aarch64 one)")
    parser.add_argument("--no-blas", action="store_true", help=f"leave {BLAS_FILE} out (tir-route boards)")
    parser.add_argument("--bundle", type=Path, help="the first candidate's bundle directory")
    parser.add_argument("--bundle2", type=Path, help="a second candidate of the same study")
    parser.add_argument("--rows", default=DEFAULT_ROWS, help="baud:flips_per_byte,... (compressed)")
    parser.add_argument("--plain-rows", default="", help="baud:flips,... sent without compression")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, default=OUT, help=f"JSON to write (default {OUT.name})")
    parser.add_argument("--label", help="what this run measured (machine, inputs), kept in the JSON")
    parser.add_argument("--combine", type=Path, nargs="+", metavar="JSON",
                        help="measure nothing: merge the rows of earlier runs' JSON into --out")  # fmt: skip
    opts = parser.parse_args()
    console = Console(width=170)
    if opts.combine:
        return _combine(console, opts.combine, opts.label, opts.out)
    if opts.bundle is None or opts.bundle2 is None:
        parser.error("--bundle and --bundle2 are required (unless --combine)")
    rt_tree, rt_files, versions, rt_source = _runtime(opts.runtime_dir, not opts.no_blas)
    agent_size, agent_line = _agent_copy_bytes()
    sizes = {
        "runtime": {n: p.stat().st_size for n, p in rt_files.items()},
        "bundle": sum(p.stat().st_size for p in bundle_tree(opts.bundle)[1].values()),
        "bundle2": sum(p.stat().st_size for p in bundle_tree(opts.bundle2)[1].values()),
        "agent_pyz": agent_size,
        "agent_console_copy": agent_line,
    }
    console.print(f"runtime: {rt_source}: {sizes['runtime']}", highlight=False)
    plan = [(b, f, True) for b, f in _parse_rows(opts.rows)] + [
        (b, f, False) for b, f in _parse_rows(opts.plain_rows)
    ]
    rows = []
    with tempfile.TemporaryDirectory(prefix="hilt-provision-") as tmp:
        for baud, flips, compress in plan:
            row = measure(baud, flips, compress, (rt_tree, rt_files, versions), [opts.bundle, opts.bundle2],
                          opts.seed, Path(tmp))  # fmt: skip
            row["agent_copy_s"] = round(agent_line * 10 / baud, 1)  # computed: 8N1, 10 bit times per byte
            rows.append(row)
            ready, second = row["phases"]
            console.print(
                f"{baud} baud, flips {flips:g}, {'compressed' if compress else 'plain'}: ready in "
                f"{ready['seconds']} s, second bundle in {second['seconds']} s",
                highlight=False,
            )
    goals = _report(console, rows)
    result = {
        "machine": machine_facts(),
        "label": opts.label,
        "line": "pty relay throttled to the row's baud at 8N1 (10 bit times per byte) each way; noise: one "
        "random bit flipped per byte with the row's probability, both directions, seeded, on after hello",
        "runtime": rt_source,
        "bundles": [str(opts.bundle), str(opts.bundle2)],
        "sizes": sizes,
        "agent_protocol": wire.PROTOCOL_VERSION,
        "codecs": list(wire.CODECS),
        "seed": opts.seed,
        "rows": rows,
        "goals": goals,
        "command": " ".join(["python", "benchmarks/serial_provisioning.py", *sys.argv[1:]]),
    }
    opts.out.write_text(json.dumps(result, indent=2) + "\n")
    console.print(f"written to {opts.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
