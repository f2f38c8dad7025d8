"""One owner per board: `hilt nightly` started while a `hilt tune` measures on the same machine never
benches at the same time as it (real processes, real agents, real TVM bundles, real SQLite pool), and
nightly boards on separate machines still measure in parallel while boards on one machine take turns."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import create_engine

from device_agents.inventory import this_host
from device_agents.leases import LeaseTable
from tests.unit.prune_tiny import tiny_model, write_tiny_task
from tuner.store import ResultsStore, stored_record

pytestmark = [pytest.mark.integration, pytest.mark.timeout(1200)]

Window = tuple[datetime, datetime]


def _windows(db: Path, study: str | None = None) -> list[Window]:
    rows = ResultsStore(f"sqlite:///{db}").measurements(study=study)
    return [(r.started_at, r.finished_at) for r in map(stored_record, rows)]


def _overlap(x: list[Window], y: list[Window]) -> list[tuple[Window, Window]]:
    return [(a, b) for a in x for b in y if a[0] < b[1] and b[0] < a[1]]


def _suite(root: Path, model: Path) -> Path:
    p = root / "suite.toml"
    p.write_text(
        f'version = 1\nname = "own"\n[[case]]\nname = "m"\nmodel = "{model}"\nprofiles = ["local"]\n'
        "seq_len = 12\n"
    )
    return p


def _cli(*args: str, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "harness.cli.main", *args],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
    )  # fmt: skip


@pytest.mark.parametrize("guard", ["pool", "agent-lock"])
def test_nightly_never_benches_while_tune_holds_the_machine(tmp_path: Path, guard: str) -> None:
    """`pool`: both share one board pool. `agent-lock`: each has its own pool (as two hosts would), so
    only the agent's lock on the board keeps them apart."""
    task = write_tiny_task(tmp_path / "task")
    model = tmp_path / "small"
    tiny_model("gpt2", layers=2).save_pretrained(model)
    pool_db = tmp_path / "pool.db"
    env = {**os.environ, "HILT_POOL": str(pool_db)}
    nightly_env = {**env, "HILT_POOL": str(tmp_path / "other-pool.db")} if guard == "agent-lock" else env
    tune_db, nightly_db = tmp_path / "tune.db", tmp_path / "nightly.db"
    tune = _cli(
        "tune", "--model", str(task["model"]), "--calib", str(task["calib"]), "--val", str(task["val"]),
        "--trials", "3", "--storage", f"sqlite:///{tune_db}", "--study", "own", "--max-steps", "0",
        "--max-stages", "1", "--no-sia", "--out", str(tmp_path / "runs"), env=env,
    )  # fmt: skip
    leases = None
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and tune.poll() is None:  # start nightly once tune holds the host
        if pool_db.exists():
            leases = leases or LeaseTable(create_engine(f"sqlite:///{pool_db}"))
            if leases.holder_of(this_host()) is not None:
                break
        time.sleep(0.05)
    assert tune.poll() is None, "hilt tune ended before it was seen holding the machine"
    farm = tmp_path / "farm.toml"
    farm.write_text('version = 1\n[[board]]\nname = "local"\nprofile = "local"\n')
    nightly_launched = datetime.now(UTC)
    nightly = _cli(
        "nightly", "--farm", str(farm), "--suite", str(_suite(tmp_path, model)), "--run", "n1",
        "--storage", f"sqlite:///{nightly_db}", "--out", str(tmp_path / "n1"), "--min-iters", "50",
        env=nightly_env,
    )  # fmt: skip
    n_out, _ = nightly.communicate(timeout=900)
    t_out, _ = tune.communicate(timeout=900)
    assert nightly.returncode == 0, n_out
    assert tune.returncode == 0, t_out
    tune_windows, nightly_windows = _windows(tune_db, "own"), _windows(nightly_db)
    assert len(tune_windows) == 4 and len(nightly_windows) == 1  # dense + 3 trials; one case
    assert not _overlap(tune_windows, nightly_windows), "nightly benched while tune held the board"
    # not vacuous: nightly was launched while tune held the machine with benches still ahead of it (tune
    # holds it from before its first bench, so nightly may well bench only after tune's last)
    assert nightly_launched < max(w[1] for w in tune_windows), "the two never competed"
    assert "waited for a free machine: local" in n_out


def _nightly_farm(root: Path, machines: tuple[str, str] | None) -> Path:
    """Two local boards; on "separate machines" each also has its own agent store (its own board)."""
    extra = ["", ""]
    if machines:
        extra = [
            f'machine = "{m}"\n[board.transport]\nkind = "local"\nagent_dir = "{root / m}"\n'
            for m in machines
        ]
    farm = root / f"farm-{'split' if machines else 'shared'}.toml"
    farm.write_text(
        "version = 1\n"
        f'[[board]]\nname = "a"\nprofile = "local"\n{extra[0]}'
        f'[[board]]\nname = "b"\nprofile = "local"\n{extra[1]}'
    )
    return farm


@pytest.mark.parametrize("split", [False, True], ids=["one-machine", "two-machines"])
def test_nightly_boards_take_turns_on_one_machine_and_overlap_on_two(tmp_path: Path, split: bool) -> None:
    model = tmp_path / "small"
    tiny_model("gpt2", layers=2).save_pretrained(model)
    suite = tmp_path / "suite.toml"
    suite.write_text(
        f'version = 1\nname = "pair"\n[[case]]\nname = "m"\nmodel = "{model}"\nprofiles = ["local"]\n'
        "seq_len = 12\n"
    )
    farm = _nightly_farm(tmp_path, ("rack-1", "rack-2") if split else None)
    db = tmp_path / "n.db"
    env = {**os.environ, "HILT_POOL": str(tmp_path / "pool.db")}
    out = subprocess.run(
        [sys.executable, "-m", "harness.cli.main", "nightly", "--farm", str(farm), "--suite", str(suite),
         "--run", "r", "--storage", f"sqlite:///{db}", "--out", str(tmp_path / "r"), "--min-iters", "400",
         "--min-seconds", "2.0"],
        capture_output=True, text=True, timeout=900, env=env,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    rows = ResultsStore(f"sqlite:///{db}").measurements(study="nightly:pair")
    by_board = {r["board"]: stored_record(r) for r in rows}
    a, b = by_board["a"], by_board["b"]
    overlap = _overlap([(a.started_at, a.finished_at)], [(b.started_at, b.finished_at)])
    if split:
        assert overlap, "boards declared on separate machines were serialised"
        assert a.machine == "rack-1" and b.machine == "rack-2"
    else:
        assert not overlap, "two boards on one machine benched at once"
        assert a.machine == b.machine == this_host()
        assert max(a.pool_wait_s, b.pool_wait_s) > 1.0  # one waited for the other's whole bench
    summary = (tmp_path / "r" / "nightly.md").read_text()
    assert "| a |" in summary and "| b |" in summary and "waited for its machine" in summary
