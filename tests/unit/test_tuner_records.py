"""Records the tuner writes (study attributes, stage logs, SIA results) are models in memory, plain
JSON in storage, and what older studies wrote still reads back into the same models."""

from __future__ import annotations

import optuna
import pytest

from tuner.results import DenseResult
from tuner.study_info import SiaSpace, StudyInfo

DENSE = {"accuracy": 0.93, "latency_ms": 4.0, "latency_p90_ms": 5.0, "peak_rss_mb": 60.0,
         "board": "pi", "bundle": "a" * 64}  # fmt: skip


def _study() -> optuna.Study:
    return optuna.create_study(storage=optuna.storages.InMemoryStorage(), directions=["maximize"])


def test_study_info_round_trips_through_plain_attributes() -> None:
    study = _study()
    space = SiaSpace(
        searched=["layer", "head"], granularities=["layer"], horizons={"layer": 0.5, "head": 0.0}
    )
    StudyInfo.put(
        study, model="/m", profile="rpi4", boards=["pi-0"], objectives=["accuracy"], sia_space=space
    )
    StudyInfo.put(study, dense=DenseResult.model_validate(DENSE))
    attrs = study.user_attrs
    assert attrs["sia_space"] == {"searched": ["layer", "head"], "granularities": ["layer"],
                                  "horizons": {"layer": 0.5, "head": 0.0}}  # fmt: skip
    assert attrs["dense"]["latency_ms"] == 4.0 and "criteria" not in attrs  # only what was put
    info = StudyInfo.of(study)
    assert info.sia_space == space and info.dense is not None and info.dense.board == "pi"
    assert (info.model, info.profile, info.boards, info.objectives) == ("/m", "rpi4", ["pi-0"], ["accuracy"])
    with pytest.raises(TypeError, match="not a study attribute: colour"):
        StudyInfo.put(study, colour="red")


def test_a_study_written_before_the_model_still_reads() -> None:
    study = _study()
    for k, v in {"model": "/old", "dense": DENSE, "space": {"max_stages": 2}, "surplus_note": 1}.items():
        study.set_user_attr(k, v)  # what `tune` wrote as loose attributes, plus one nobody reads
    info = StudyInfo.of(study)
    assert info.model == "/old" and info.profile == "?" and info.sia_space is None and info.criteria is None
    assert info.dense == DenseResult.model_validate(DENSE) and info.space == {"max_stages": 2}


STAGE = {"index": 0, "targets": ["head 0.5 (magnitude)"], "params_before": 100, "params_after": 60,
         "flops_before": 1000, "flops_after": 600, "calib_loss_before": 1.0, "calib_loss_after_prune": 1.4,
         "calib_loss_after_recovery": 1.1, "accuracy_after_prune": 0.7, "accuracy_after_recovery": 0.85,
         "recovery_steps": 10, "recovery_loss_first": 1.4, "recovery_loss_last": 1.1, "seconds_scoring": 0.1,
         "seconds_recovery": 1.0, "seconds_total": 1.2}  # fmt: skip
LOG = {"version": 1, "schedule": "s", "task": "sequence-classification", "family": "gpt2", "seq_len": 16,
       "dense_params": 100, "dense_flops": 1000, "dense_calib_loss": 1.0, "dense_accuracy": 0.9,
       "stages": [STAGE], "final_params": 60, "final_flops": 600, "final_accuracy": 0.85,
       "compression": 1.67, "seconds_total": 1.3}  # fmt: skip


def test_stage_logs_stay_models_and_read_what_older_trials_wrote(tmp_path) -> None:
    from tuner.stage_logs import TrialStageLog, read_stage_logs, stage_logs_attr

    old = read_stage_logs([LOG])  # a log from before the tuner noted its SIA slack
    assert old[0].sia_violation == -1.0 and old[0].stages[0].params_after == 60
    assert read_stage_logs(None) == []
    log = TrialStageLog.model_validate({**LOG, "sia_violation": -0.2})
    log.save(tmp_path / "stage_log.json")
    assert TrialStageLog.load(tmp_path / "stage_log.json") == log
    (attr,) = stage_logs_attr([log])
    assert attr["sia_violation"] == -0.2 and attr["stages"][0]["targets"] == ["head 0.5 (magnitude)"]
    assert read_stage_logs([attr]) == [log]


def _sia_result(granularity: str):  # noqa: ANN202
    from harness.sia.empirical import GranularityResult, RatioResult
    from harness.sia.stats import Estimate

    nan = float("nan")
    ratio = RatioResult(removed_fraction=0.25, additivity_spearman=Estimate(0.81234567, 0.5, 0.9),
                        additivity_error=Estimate(0.1, 0.05, 0.2), stability=Estimate(nan, nan, nan),
                        stability_recovered=None, predicted=[0.1, 0.2], measured=[0.12, 0.19],
                        verdict="holds")  # fmt: skip
    return GranularityResult(granularity=granularity, criterion="magnitude", n_units=8, n_sampled=8,
                             base_loss=1.0, fidelity=Estimate(0.9, 0.8, 1.0), ratios=[ratio],
                             horizon_removed=0.25, forward_passes=40, seconds=1.5)  # fmt: skip


def test_sia_results_are_stored_as_json_and_read_back_as_results(tmp_path) -> None:
    from sqlalchemy import insert

    from reports.deploy import _estimate
    from tuner.store import ResultsStore, sia_results

    store = ResultsStore(f"sqlite:///{tmp_path / 'h.db'}")
    store.add_sia_result("s", "m" * 64, _sia_result("head"))
    store.add_sia_result("s", "m" * 64, _sia_result("head"))  # the same model state again: kept once
    old = _sia_result("layer").to_dict()
    for newer in ("single_increase", "sampled_scores", "chance_loss"):
        old.pop(newer)  # a row written before these fields existed
    with store.engine.begin() as conn:
        conn.execute(insert(sia_results).values(study="s", model_hash="o" * 64, granularity="layer",
                                                created=0.0, result=old))  # fmt: skip
    layer, head = store.sia_results("s")  # oldest first
    assert (layer.granularity, head.granularity) == ("layer", "head") and layer.single_increase == []
    assert head.horizon_removed == 0.25 and head.ratios[0].predicted == [0.1, 0.2]
    r = head.ratios[0]
    # the report prints statistics as before: 4 decimals, None where undefined
    assert (_estimate(r.additivity_spearman), _estimate(r.stability), _estimate(None)) == (0.8123, None, None)
