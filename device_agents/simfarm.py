"""Farms of simulated boards (for hardware this host does not have): a farm file of N boards, each the
real agent over the local transport with `--simulate`, its own store and bench lock, and its own
machine in the pool; plus the faults a real farm has (a board dies, reboots or hangs mid-bench).

The host code is the one real boards get: `BoardPool` leases, transports, uploads, `install`,
`bench`, records. Only the agent's runner is a latency model (`device_agents.agent.simulate`).
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path

from device_agents.agent.simulate import CONFIG_NAME, DOWN_NAME, FAULT_NAME, FAULTS
from device_agents.inventory import Farm, load_farm
from harness.errors import ConfigError
from profiles.schema import PROFILES_DIR

SIM_MACHINE_PREFIX = "sim:"


@dataclass(frozen=True)
class LatencyModel:
    """What a simulated board answers: base + ms_per_mb x (model.so + weights.bin MB), with noise;
    each bench holds the board for `bench_s`."""

    base_ms: float = 0.5
    ms_per_mb: float = 2.0
    noise: float = 0.03
    bench_s: float = 1.0
    reboot_s: float = 20.0


def board_name(i: int) -> str:
    return f"sim-{i:03d}"


SIM_PROFILE = "sim"


def write_sim_profile(root: Path) -> Path:
    """`root/sim.toml`: the host's `local` profile renamed `sim`, on the TensorIR route, so a simulated
    board's runtime carries no BLAS library (4 MB to upload to each board instead of 30)."""
    text = (PROFILES_DIR / "local.toml").read_text()
    text = text.replace('name = "local"', f'name = "{SIM_PROFILE}"', 1)
    text = re.sub(r'(?m)^matmul = "blas"$', 'matmul = "tir"', text)
    path = root / f"{SIM_PROFILE}.toml"
    path.write_text(text)
    return path


def write_sim_farm(root: Path, boards: int, model: LatencyModel | None = None) -> Path:
    """`root/farm.toml` naming `boards` simulated boards of profile `sim`, stores under `root/boards/`."""
    model = model or LatencyModel()
    root = Path(root).resolve()
    root.mkdir(parents=True, exist_ok=True)
    profile = write_sim_profile(root)
    lines = ["version = 1", ""]
    for i in range(boards):
        name = board_name(i)
        store = root / "boards" / name
        store.mkdir(parents=True, exist_ok=True)
        (store / CONFIG_NAME).write_text(json.dumps(asdict(model)))
        lines += [
            "[[board]]",
            f'name = "{name}"',
            f'profile = "{profile}"',
            f'machine = "{SIM_MACHINE_PREFIX}{name}"',
            f'transport = {{ kind = "local", agent_dir = "{store}", simulate = true }}',
            "",
        ]
    path = root / "farm.toml"
    path.write_text("\n".join(lines))
    return path


def stores(farm: Farm) -> dict[str, Path]:
    """Board name -> agent store of each simulated board of the farm."""
    out = {}
    for b in farm.boards:
        spec = b.transport
        if spec.kind == "local" and getattr(spec, "simulate", False):
            out[b.name] = Path(spec.agent_dir)
    return out


def inject(farm_file: Path, board: str, fault: str) -> None:
    """Make a simulated board die, reboot or hang in its next bench (a one-shot command)."""
    if fault not in FAULTS:
        raise ConfigError(f"unknown fault {fault!r}; use one of: {', '.join(FAULTS)}")
    found = stores(load_farm(farm_file))
    if board not in found:
        raise ConfigError(f"{farm_file}: no simulated board named {board!r}")
    (found[board] / FAULT_NAME).write_text(fault)


def down_boards(farm_file: Path) -> list[str]:
    """Simulated boards that died or are rebooting (their agent refuses to start)."""
    from device_agents.agent.simulate import down_reason

    return [name for name, store in stores(load_farm(farm_file)).items()
            if (store / DOWN_NAME).is_file() and down_reason(str(store))]  # fmt: skip
