"""The tuner end to end on the local board with tiny models: real prune, TVM build, agent bench, SQLite.

Covers: a short study completes and persists; SIA rejects a beyond-horizon schedule without building
it; kill -9 mid-trial then resume loses and duplicates nothing; two workers on one SQLite study
finish exactly N trials with no board leased twice at once; the study opens in optuna-dashboard.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from tests.unit.prune_tiny import write_tiny_task
from tuner.store import ResultsStore

pytestmark = pytest.mark.timeout(1200)


@pytest.fixture(scope="module")
def task(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tune")
    return write_tiny_task(root)


def _args(task: dict[str, Path], db: Path, study: str, trials: int, *extra: str) -> list[str]:
    return [
        "tune", "--model", str(task["model"]), "--calib", str(task["calib"]), "--val", str(task["val"]),
        "--trials", str(trials), "--storage", f"sqlite:///{db}", "--study", study, "--max-steps", "10",
        "--max-stages", "2", "--out", str(db.parent / "runs"), *extra,
    ]  # fmt: skip


def _cli(args: list[str], **kw) -> subprocess.Popen:
    env = {**os.environ, "HILT_HEARTBEAT_S": "2"}
    return subprocess.Popen(
        [sys.executable, "-m", "harness.cli.main", *args],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, **kw,
    )  # fmt: skip


def _study(db: Path, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{db}")


def test_short_study_completes_persists_and_opens_in_dashboard(task, tmp_path) -> None:
    from harness.cli.main import main

    db = tmp_path / "hilt.db"
    assert main(_args(task, db, "short", 2, "--no-sia")) == 0
    study = _study(db, "short")
    done = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(done) == 2
    store = ResultsStore(f"sqlite:///{db}")
    rows = store.measurements(study="short")
    assert sorted(r["trial_number"] for r in rows if r["trial_number"] is not None) == sorted(
        t.number for t in done
    )
    for t in done:
        a = t.user_attrs
        assert 0.0 <= a["accuracy"] <= 1.0 and a["latency_ms"] > 0 and a["peak_rss_mb"] > 0
        assert t.values[0] == a["accuracy"] and t.values[1] == pytest.approx(a["latency_ms"])
        assert store.artifact(a["bundle"]) is not None
        assert Path(a["pruned_dir"], "stage_log.json").is_file()
        (row,) = [r for r in rows if r["trial_number"] == t.number]  # this trial's own measurement
        assert len(row["record"]["samples_ns"]) >= 20 and row["record"]["artifact"] == a["bundle"]
        cache = a["cache"]  # every stage is a prune hit or miss, and the one build a compile hit or miss
        assert cache["prune_hits"] + cache["prune_misses"] == len(a["schedule"]["stages"])
        assert cache["compile_hits"] + cache["compile_misses"] == 1
    assert (tmp_path / "runs" / "short" / "best_schedule.json").is_file()

    from optuna_dashboard import wsgi  # optuna-dashboard's own app over the same storage

    app = wsgi(f"sqlite:///{db}")
    status: list[str] = []

    def call(path: str) -> bytes:
        from wsgiref.util import setup_testing_defaults

        environ: dict = {"PATH_INFO": path, "REQUEST_METHOD": "GET"}
        setup_testing_defaults(environ)
        return b"".join(app(environ, lambda s, h, *exc: status.append(s)))

    import json

    studies = json.loads(call("/api/studies"))["study_summaries"]
    sid = next(s["study_id"] for s in studies if s["study_name"] == "short")
    detail = json.loads(call(f"/api/studies/{sid}"))
    assert status[-1].startswith("200")
    assert len(detail["trials"]) == len(study.trials)


def test_sia_rejects_beyond_horizon_without_building(task, tmp_path, capsys) -> None:
    from harness.cli.main import main
    from tuner.space import SpaceConfig
    from tuner.tune import TuneRequest, tune

    db = tmp_path / "hilt.db"
    # the random tiny model: for layers and FFN channels the criterion's choice is no better than random
    # subsets (SIA's rank rule: violated at every ratio), so a search of those refuses to start ...
    assert main(_args(task, db, "sia-cli", 2, "--sia", "--granularities", "layer,channel")) == 2
    assert "SIA allows no pruning" in capsys.readouterr().err
    # ... and without that up-front restriction every sampled schedule is rejected before building
    req = TuneRequest(
        model=str(task["model"]), study="sia", storage=f"sqlite:///{db}", trials=2, calib=task["calib"],
        val=task["val"], space=SpaceConfig(max_stages=2, max_steps=10, granularities=("layer", "channel")),
        use_sia=True, sia_restrict_space=False, work_dir=tmp_path / "runs",
    )  # fmt: skip
    tune(req)
    trials = _study(db, "sia").trials
    assert [t.state for t in trials] == [TrialState.PRUNED] * 2
    assert all("SIA's predictable horizon" in t.user_attrs["rejected"] for t in trials)
    assert all(t.user_attrs["constraints"][0] > 0 and t.constraints["sia"] > 0 for t in trials)
    store = ResultsStore(f"sqlite:///{db}")
    assert [r["trial_number"] for r in store.measurements(study="sia")] == [None]  # the dense baseline only
    with store.engine.connect() as conn:
        from sqlalchemy import text

        bundles = [r[0] for r in conn.execute(text("select bundle from hilt_artifacts"))]
    assert bundles == [_study(db, "sia").user_attrs["dense"]["bundle"]]  # nothing pruned was built


def test_sampler_searches_only_the_space_sia_left(tmp_path) -> None:
    """The real horizon → space restriction: on a model where SIA holds for heads but not for layers or
    channels, the study searches heads only, no deeper than the head horizon, and no trial proposes
    anything else."""
    from tuner.space import SpaceConfig
    from tuner.study_info import StudyInfo
    from tuner.tune import TuneRequest, tune

    # the random tiny model: the criterion's lowest-ranked heads cost less than random ones (removing
    # them even lowers its loss), its layer and channel choices are no better than random subsets
    task = write_tiny_task(tmp_path / "task")
    db = tmp_path / "hilt.db"
    req = TuneRequest(
        model=str(task["model"]), study="restricted", storage=f"sqlite:///{db}", trials=3,
        calib=task["calib"], val=task["val"], space=SpaceConfig(max_stages=2, max_steps=0),
        sia_settings={"ratios": (0.25, 0.5), "subsets_per_ratio": 6, "bootstrap": 100},
        work_dir=tmp_path / "runs", seed=3, use_sia=True,
    )  # fmt: skip
    tune(req)
    dense = {r.granularity: r for r in ResultsStore(f"sqlite:///{db}").sia_results("restricted")[:3]}
    assert sorted(dense) == ["channel", "head", "layer"]  # the check on the dense model, all granularities
    held = {g for g, r in dense.items() if r.horizon_removed > 0}
    assert held == {"head"}, {g: (r.horizon_removed, r.ratios) for g, r in dense.items()}
    study = _study(db, "restricted")
    floor = 1.0 - dense["head"].horizon_removed
    space = StudyInfo.of(study).sia_space
    assert (
        space is not None
        and space.granularities == ["head"]
        and space.horizons["head"] == pytest.approx(dense["head"].horizon_removed)
    )
    assert study.user_attrs["space"]["granularities"] == ["head"]
    assert study.user_attrs["space"]["ratio_low"] == pytest.approx(floor)
    assert study.user_attrs["space"]["round_to"] == 8  # no --round-to: the local profile's fp32 lanes (AVX2)
    assert len(study.trials) >= 3
    for t in study.trials:
        assert all(not k.endswith("_granularity") or v == "head" for k, v in t.params.items()), t.params
        assert all(v >= floor - 1e-9 for k, v in t.params.items() if k.endswith("_ratio")), t.params


def _wait_for(pred, timeout: float) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return
        time.sleep(0.5)
    raise AssertionError("condition not reached in time")


def test_kill_9_then_resume_loses_and_duplicates_nothing(task, tmp_path) -> None:
    db = tmp_path / "hilt.db"
    args = _args(task, db, "resume", 3, "--no-sia")
    proc = _cli(args, start_new_session=True)

    def one_done_and_one_running() -> bool:
        if not db.exists():
            return False
        try:
            ts = _study(db, "resume").trials
        except Exception:  # noqa: BLE001 - the worker may still be creating the schema or the study
            return False
        states = [t.state for t in ts]
        return TrialState.COMPLETE in states and TrialState.RUNNING in states

    _wait_for(one_done_and_one_running, 600)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    # wait until the storage itself calls the dead worker's trial stale (HILT_HEARTBEAT_S=2, grace 6 s):
    # the resumed worker reaps exactly the trials this query returns
    from tuner.study import make_storage

    storage = make_storage(f"sqlite:///{db}", heartbeat_s=2)
    study_id = storage.get_study_id_from_name("resume")
    _wait_for(lambda: len(storage._get_stale_trial_ids(study_id)) == 1, 60)
    again = _cli(args)
    out, _ = again.communicate(timeout=900)
    assert again.returncode == 0, out
    study = _study(db, "resume")
    finished = study.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED))
    assert len(finished) == 3
    assert any(t.state == TrialState.FAIL for t in study.trials)  # the killed one, failed by heartbeat
    rows = ResultsStore(f"sqlite:///{db}").measurements(study="resume")
    completed = [t.number for t in study.get_trials(states=(TrialState.COMPLETE,))]
    measured = [r["trial_number"] for r in rows if r["trial_number"] in completed]
    assert sorted(measured) == sorted(completed)  # each completed trial measured exactly once


def test_two_workers_share_a_study_and_never_share_a_board(task, tmp_path) -> None:
    db = tmp_path / "hilt.db"
    # 6 trials: the second worker starts only once the study exists, and on a loaded CI machine its start
    # (imports) took as long as the first worker's 4 trials, which then ran them all
    args = _args(task, db, "pair", 6, "--no-sia")
    first = _cli(args)

    def study_created() -> bool:  # the second worker joins a study, not a race to create one
        try:
            return bool(db.exists() and _study(db, "pair"))
        except Exception:  # noqa: BLE001 - schema or study not there yet
            return False

    _wait_for(study_created, 300)
    second = _cli(args)
    for p in (first, second):
        out, _ = p.communicate(timeout=900)
        assert p.returncode == 0, out
    study = _study(db, "pair")
    finished = study.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED))
    assert len(finished) == 6
    ran = [int(t.user_attrs["worker"].split(":")[1]) for t in finished]
    assert first.pid in ran and second.pid in ran, ran  # both workers ran trials to the end (or a prune)
    rows = ResultsStore(f"sqlite:///{db}").measurements(study="pair")
    spans = sorted((r["record"]["started_at"], r["record"]["finished_at"]) for r in rows)
    for (_, end), (start, _) in zip(spans, spans[1:], strict=False):
        assert start >= end, "the local board ran two benches at once"
