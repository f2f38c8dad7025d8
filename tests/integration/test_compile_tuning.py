"""MetaSchedule tuning with a JSON database: a few real trials, reuse by another candidate with the
same kernel shapes, correctness of tuned bundles, and clear errors for what tuning cannot do."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import GPT2Config, GPT2ForSequenceClassification

from harness.compile import CompileOptions, compile_model
from harness.compile.bundle import Bundle
from harness.compile.tune import TuningDatabase
from harness.errors import CompileError
from harness.runtime import build_runtime, runner_command
from harness.runtime.toolchains import host_arch

SEQ = 8
TRIALS = 8


def _tiny(path: Path, seed: int) -> Path:
    torch.manual_seed(seed)
    cfg = GPT2Config(
        vocab_size=32, n_positions=16, n_embd=16, n_layer=1, n_head=2, n_inner=32, num_labels=2,
        pad_token_id=31, bos_token_id=0, eos_token_id=0,
    )  # fmt: skip
    GPT2ForSequenceClassification(cfg).save_pretrained(path)
    return path


def _run_matches(bundle: Bundle, tmp_path: Path) -> None:
    pkg = build_runtime(host_arch())
    dump = tmp_path / "out.bin"
    args = ["--bundle", str(bundle.directory), "--warmup", "1", "--min-iters", "3", "--min-seconds", "0"]
    argv, env = runner_command(pkg, [*args, "--dump-output", str(dump)])
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300, check=False)
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert proc.returncode == 0 and out["ok"], out
    np.testing.assert_allclose(np.fromfile(dump, dtype="<f4"), bundle.expected(), atol=1e-4, rtol=0)


@pytest.fixture(scope="module")
def tuned(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Bundle]:
    root = tmp_path_factory.mktemp("tune")
    db = root / "db"
    model = _tiny(root / "a", seed=0)
    result = compile_model(model, "local", CompileOptions(seq_len=SEQ, tune_trials=TRIALS, database_dir=db))
    return db, result.bundle


def test_tuning_writes_records_and_applies_them(tuned: tuple[Path, Bundle], tmp_path: Path) -> None:
    db, bundle = tuned
    assert (db / "database_tuning_record.json").is_file() and (db / "database_workload.json").is_file()
    info = bundle.metadata.tuning
    assert info.trials == TRIALS and info.tasks > 0
    assert info.records > 0 and info.scheduled_kernels > 0
    assert info.records == TuningDatabase(db).num_records()
    _run_matches(bundle, tmp_path)


def test_database_is_reused_by_another_candidate(tuned: tuple[Path, Bundle], tmp_path: Path) -> None:
    """Same shapes, other weights (a different candidate): records apply with zero new trials."""
    db, first = tuned
    before = TuningDatabase(db).digest()
    other = _tiny(tmp_path / "b", seed=7)
    result = compile_model(other, "local", CompileOptions(seq_len=SEQ, tune_trials=0, database_dir=db))
    assert TuningDatabase(db).digest() == before  # nothing was tuned
    assert result.bundle.sha256 != first.sha256
    assert result.bundle.metadata.tuning.scheduled_kernels == first.metadata.tuning.scheduled_kernels
    info = result.bundle.metadata.tuning
    assert info.mode == "db" and info.trials == 0 and info.kernels.from_database > 0
    assert info.kernels.lowering == first.metadata.tuning.kernels.lowering
    _run_matches(result.bundle, tmp_path)
    again = compile_model(other, "local", CompileOptions(seq_len=SEQ, tune_trials=0, database_dir=db))
    assert again.cached and again.bundle.sha256 == result.bundle.sha256


def test_default_database_is_the_boards_and_off_ignores_it(tmp_path: Path) -> None:
    """Without --database the board's own database (per CPU and TVM version) is tuned and applied;
    kernel tuning `off` builds the default lowering alone."""
    from harness.compile.tune import KernelTuning, database_dir_for
    from profiles.schema import load_profile

    model = _tiny(tmp_path / "m", seed=3)
    tuned = compile_model(model, "local", CompileOptions(seq_len=SEQ, tune_trials=TRIALS)).bundle
    assert tuned.metadata.tuning.database == str(database_dir_for(load_profile("local")))
    assert tuned.metadata.tuning.kernels.from_database > 0
    off = CompileOptions(seq_len=SEQ, **KernelTuning.parse("off").compile_fields())
    plain = compile_model(model, "local", off)
    # how this build was made; the bundle itself may be the tuned one when no trial beat hilt's own
    # schedule (the same code, content-addressed to the same bundle)
    assert plain.tuning.mode == "off" and plain.tuning.kernels.from_database == 0
    assert plain.tuning.database is None
    _run_matches(plain.bundle, tmp_path)


def test_interrupted_tuning_keeps_finished_tasks(tmp_path: Path) -> None:
    """Ctrl-C while the second kernel is tuned: the first kernel's records are in the database and
    the next build applies them."""
    from harness.compile.export import example_input, to_relax
    from harness.compile.lowering import prepare
    from harness.compile.target import tvm_target
    from harness.models import load_model
    from profiles.schema import load_profile

    db = TuningDatabase(tmp_path / "db")
    prof = load_profile("local")
    target = tvm_target(prof)
    loaded = load_model(_tiny(tmp_path / "m", seed=4))
    mod = prepare(to_relax(loaded.model, example_input(loaded.model, SEQ)), target, matmul="tir")
    started: list[str] = []

    def say(msg: str) -> None:
        if msg.startswith("  "):  # one line per task, just before it is tuned
            started.append(msg)
            if len(started) == 2:
                raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        db.tune(mod, target, prof, trials=2 * TRIALS, say=say)
    assert len(started) == 2 and db.num_records() > 0
    # the tasks came from the tir route's graph (weight matmuls are kernels there): build that route
    opts = CompileOptions(seq_len=SEQ, database_dir=db.work_dir, matmul="tir")
    result = compile_model(loaded.source, "local", opts)
    assert result.bundle.metadata.tuning.kernels.from_database >= 1


@pytest.mark.parametrize("kernel", ["matmul", "layer_norm"])
def test_hilts_schedule_is_recorded_and_replayed(tmp_path: Path, kernel: str) -> None:
    """Before trials, tuning records hilt's own schedule of each heavy kernel (the matmul rule's, the
    row-reduction rule's) as a measured candidate, so the database's best is never slower than the
    default; the record replays into a correct build."""
    from tvm.s_tir import meta_schedule as ms

    from harness.compile.export import example_input, to_relax
    from harness.compile.lowering import prepare
    from harness.compile.target import tvm_target
    from harness.compile.tune import task_cost
    from harness.models import load_model
    from profiles.schema import load_profile

    prof = load_profile("local")
    target = tvm_target(prof)
    loaded = load_model(_tiny(tmp_path / "m", seed=5))
    mod = prepare(to_relax(loaded.model, example_input(loaded.model, SEQ)), target, matmul="tir")
    with target:
        tasks = ms.relax_integration.extract_tasks(mod, target)
    if kernel == "matmul":
        chosen = max(tasks, key=task_cost)
    else:
        chosen = next(t for t in tasks if "layer_norm" in t.task_name)
    db = TuningDatabase(tmp_path / "db")
    micros = db.seed_with_default(chosen, target, db.open(), lanes=8)
    assert micros is not None and micros > 0 and db.num_records() == 1
    opts = CompileOptions(seq_len=SEQ, database_dir=db.work_dir, matmul="tir")  # the route tasks came from
    result = compile_model(loaded.source, "local", opts)
    assert result.bundle.metadata.tuning.kernels.from_database == 1
    _run_matches(result.bundle, tmp_path)


def test_tuning_for_a_foreign_arch_is_refused(tmp_path: Path) -> None:
    profile = "qemu-riscv64" if host_arch() != "riscv64" else "local"
    with pytest.raises(CompileError, match="times kernels on a board: name a farm board"):
        opts = CompileOptions(tune_trials=4, database_dir=tmp_path / "db")
        compile_model(tmp_path / "unused", profile, opts)


def test_corrupt_database_is_a_clear_error(tmp_path: Path) -> None:
    db = tmp_path / "db"
    db.mkdir()
    (db / "database_workload.json").write_text("this is not json\n")
    (db / "database_tuning_record.json").write_text("")
    model = _tiny(tmp_path / "m", seed=1)
    with pytest.raises(CompileError, match="tuning database .* is unreadable"):
        compile_model(model, "local", CompileOptions(seq_len=SEQ, database_dir=db))


def test_empty_database_digest(tmp_path: Path) -> None:
    assert TuningDatabase(tmp_path / "none").digest() == "empty"
    assert TuningDatabase(tmp_path / "none").num_records() == 0
