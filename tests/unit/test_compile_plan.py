"""Tuning budgets, register tiles and database placement: the decisions made before TVM runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.compile.bundle import TuningInfo
from harness.compile.matmul_rule import choose_tiles
from harness.compile.tune import (
    MIN_ROUND,
    ROUND,
    KernelTuning,
    database_dir_for,
    describe_tuning,
    plan_budget,
)
from profiles.schema import load_profile

# the demo GPT-2's shape of costs: six heavy matmul tasks, a long tail of cheap kernels
COSTS = [("fc1", 40.0), ("fc2", 40.0), ("qkv", 30.0), ("proj", 10.0), ("qk", 3.0), ("pv", 3.0)] + [
    (f"light{i}", 0.05) for i in range(24)
]


def test_heavy_tasks_get_their_own_rounds_and_the_tail_none() -> None:
    plan = plan_budget(COSTS, 6 * 64)
    names = [t.name for t in plan.tasks]
    assert names[:3] == ["fc1", "fc2", "qkv"] and not any(n.startswith("light") for n in names)
    assert plan.per_round == ROUND
    assert all(t.trials % plan.per_round == 0 and t.trials > 0 for t in plan.tasks)  # whole rounds
    assert plan.trials <= 6 * 64
    by = {t.name: t.trials for t in plan.tasks}
    assert by["fc1"] >= by["proj"]  # budget follows the FLOP share


def test_small_budget_still_tunes_the_heaviest_task() -> None:
    plan = plan_budget(COSTS, 8)
    assert [t.name for t in plan.tasks] == ["fc1"] and plan.tasks[0].trials == MIN_ROUND


def test_no_trials_no_plan() -> None:
    assert plan_budget(COSTS, 0).tasks == []
    assert plan_budget([("x", 0.0)], 64).tasks == []


def test_budget_is_never_exceeded() -> None:
    for trials in (8, 17, 64, 100, 500, 2000):
        plan = plan_budget(COSTS, trials)
        assert plan.trials <= max(trials, MIN_ROUND)


@pytest.mark.parametrize(
    ("m", "n", "lanes", "tile_i", "tile_j"),
    [(66, 192, 8, 6, 16), (128, 768, 8, 4, 16), (66, 200, 8, 6, 8), (7, 10, 8, 1, 2), (64, 64, 4, 4, 8)],
)
def test_register_tiles_divide_the_shape(m: int, n: int, lanes: int, tile_i: int, tile_j: int) -> None:
    tiles = choose_tiles(m, n, lanes)
    assert (tiles.tile_i, tiles.tile_j) == (tile_i, tile_j)
    assert m % tiles.tile_i == 0 and n % tiles.tile_j == 0


def test_database_is_per_board_cpu_and_tvm_version(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HILT_CACHE", str(tmp_path))
    local, a64, rpi5 = (load_profile(n) for n in ("local", "qemu-aarch64", "rpi5"))
    d = database_dir_for(local)
    assert d.parent.name == "x86_64-x86-64-v3" and d.name.startswith("tvm-0.27")
    assert str(d).startswith(str(tmp_path))
    assert database_dir_for(a64) != d and database_dir_for(a64) != database_dir_for(rpi5)


@pytest.mark.parametrize(
    ("text", "mode", "trials", "fields"),
    [
        ("off", "off", 0, {"use_database": False, "tune_trials": 0}),
        ("db", "db", 0, {"use_database": True, "tune_trials": 0}),
        ("trials:64", "trials", 64, {"use_database": True, "tune_trials": 64}),
    ],
)
def test_kernel_tuning_modes(text: str, mode: str, trials: int, fields: dict) -> None:
    kt = KernelTuning.parse(text)
    assert (kt.mode, kt.trials, kt.compile_fields(), str(kt)) == (mode, trials, fields, text)


def test_describe_tuning_names_the_lowering_and_the_records() -> None:
    kernels = {"lowering": "hilt-cpu-v1", "kernels": 31, "from_database": 12, "tiled_matmul": 3, "dlight": 4}
    info = TuningInfo.model_validate({"mode": "db", "trials": 0, "kernels": kernels})  # an old bundle's dict
    line = describe_tuning(info)
    assert line.startswith("db, hilt-cpu-v1: 12 of 31 kernels from tuning records, 3 by hilt's matmul")
    assert describe_tuning(TuningInfo()) == "untuned (stock TVM pipeline)"
    assert describe_tuning(TuningInfo.model_validate({"trials": 8})) == "tuned: 8 trials"


def test_tuning_info_reads_old_bundle_dicts() -> None:
    old_causal = {"mode": "off", "database": None, "trials": 0, "lowering": "stock", "kernels": {}}
    info = TuningInfo.model_validate(old_causal)
    assert info.kernels is None and info.matmul == "tir" and info.records == 0 and info.plan is None
    plan = {"per_round": 64, "tasks": [{"name": "matmul", "flop_share": 0.9, "trials": 64}]}
    old = {"mode": "trials", "matmul": "blas", "trials": 64, "retired_key": 1, "plan": plan}
    info = TuningInfo.model_validate(old)
    assert info.matmul == "blas" and info.plan is not None and info.plan.tasks[0].trials == 64
    assert TuningInfo.model_validate(info.model_dump(mode="json")) == info
