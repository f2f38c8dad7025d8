"""`hilt prune` on causal LMs: LM loss, text splits, perplexity in the stage log, GQA, tied embeddings,
and stages that would remove nothing named before any work."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from harness.cli.main import main
from harness.data.text import model_text_split
from harness.errors import ScheduleError
from harness.evaluate import evaluate_perplexity
from harness.models import get_adapter, load_model
from harness.prune.cascade import StageLog, run_cascade, validate_for_model
from harness.prune.job import STAGE_LOG_FILE, TokenData, prune_to_dir
from harness.prune.schedule import parse_schedule
from tests.unit.llm_tiny import save_tiny_lm, tiny_causal

REC = {"steps": 2, "batch_size": 4, "lr": 0.01}
CASCADE = {
    "version": 1,
    "name": "tiny-lm-cascade",
    "stages": [
        {"granularity": "layer", "ratio": 0.67, "recovery": REC},
        {"granularity": "head", "ratio": 0.5, "recovery": REC},
        {"granularity": "channel", "ratio": 0.5, "criterion": "wanda", "recovery": REC},
    ],
    "calibration": {"batches": 2, "batch_size": 4},
}
ARGS = ["--seq-len", "32", "--calib-n", "8", "--eval-n", "6", "--recovery-n", "16", "--threads", "1"]


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "220")
    torch.set_num_threads(1)


def _tied(model: torch.nn.Module) -> bool:
    return model.get_output_embeddings().weight.data_ptr() == model.get_input_embeddings().weight.data_ptr()


@pytest.mark.parametrize("family", ["llama", "qwen2", "gpt2"])
def test_cascade_on_a_causal_lm_reports_perplexity_and_keeps_embeddings_tied(
    family: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = save_tiny_lm(tmp_path / "lm", family)
    (tmp_path / "s.json").write_text(json.dumps(CASCADE))
    out = tmp_path / "pruned"
    capsys.readouterr()
    assert (
        main(["prune", "--model", str(src), "--schedule", str(tmp_path / "s.json"), "--out", str(out), *ARGS])
        == 0
    )
    table = capsys.readouterr().out
    assert "ppl pruned" in table and "ppl recovered" in table and "acc pruned" not in table
    log = json.loads((out / STAGE_LOG_FILE).read_text())
    assert log["task"] == "causal-lm" and log["dense_accuracy"] is None
    assert log["dense_perplexity"] > 1 and len(log["stages"]) == 3
    for s in log["stages"]:
        assert s["perplexity_after_prune"] > 1 and s["perplexity_after_recovery"] > 1
        assert s["recovery_loss_first"] is not None  # LM-loss LoRA recovery ran
    assert (out / "tokenizer.json").is_file() or (out / "vocab.json").is_file()
    pruned = load_model(out)
    ad = get_adapter(pruned.model)
    assert ad.num_layers() == 2 and pruned.task == "causal-lm"
    assert all(ad.num_channels(i) == 24 for i in range(2))
    if family != "gpt2":  # GQA 2:1: whole KV groups go, each keeping its query heads
        assert [ad.attention_shape(i).num_kv_groups for i in range(2)] == [1, 1]
        assert [ad.attention_shape(i).heads_per_group for i in range(2)] == [2, 2]
    assert _tied(pruned.model), "lm_head must stay tied to the input embeddings"
    evald = model_text_split(out, "eval", None, 32, 6)  # the pruned dir tokenises the same text
    again = evaluate_perplexity(pruned.model, evald.input_ids).perplexity
    assert math.isclose(again, log["final_perplexity"], rel_tol=1e-4)


def prune_on_a_log_text(src: Path, tmp_path: Path, *stages: dict) -> StageLog:
    """`prune_to_dir` of a tiny LM with `stages` on a maintenance-log text file (tiny windows)."""
    text = tmp_path / "log.txt"
    text.write_text(
        "\n\n".join(
            f"Pump {i} was inspected; the seal leaked and the bearing ran hot. " * 6 for i in range(60)
        )
    )
    sched = {"version": 1, "stages": list(stages), "calibration": {"batches": 2, "batch_size": 4}}
    (tmp_path / "s.json").write_text(json.dumps(sched))
    sizes = {"seq_len": 32, "calib_n": 8, "eval_n": 4, "recovery_n": 8}
    return prune_to_dir(src, tmp_path / "s.json", tmp_path / "out", text_path=text, **sizes)


def test_query_heads_inside_kv_groups_and_text_file(tmp_path: Path) -> None:
    src = save_tiny_lm(tmp_path / "lm", "llama")
    log = prune_on_a_log_text(
        src, tmp_path, {"granularity": "head", "ratio": 0.5, "attention_unit": "query_head", "recovery": REC}
    )
    ad = get_adapter(load_model(tmp_path / "out").model)
    assert [ad.attention_shape(i).num_kv_groups for i in range(3)] == [2, 2, 2]
    assert [ad.attention_shape(i).heads_per_group for i in range(3)] == [1, 1, 1]
    assert log.final_perplexity is not None and log.warnings == []
    assert log.stages[0].targets == ["head:0.5:taylor:per_layer:query_head"]


def test_recovery_lowers_lm_loss_on_what_it_trains() -> None:
    torch.manual_seed(0)
    model = tiny_causal("llama", 64)
    ids = torch.randint(0, 64, (16, 24), generator=torch.Generator().manual_seed(2))
    data = TokenData(ids, torch.zeros(16, dtype=torch.long))
    sched = parse_schedule(
        {
            "version": 1,
            "stages": [
                {
                    "granularity": "channel",
                    "ratio": 0.5,
                    "recovery": {"steps": 30, "batch_size": 8, "lr": 0.01},
                }
            ],
            "calibration": {"batches": 2, "batch_size": 8},
        }
    )
    model, log = run_cascade(model, sched, data, eval_data=data)
    s = log.stages[0]
    assert s.recovery_loss_last < s.recovery_loss_first
    assert s.perplexity_after_recovery < s.perplexity_after_prune
    assert _tied(model)


def _sched(*stages: dict) -> object:
    return parse_schedule({"version": 1, "stages": list(stages)})


def test_stage_that_removes_nothing_is_named_with_why(caplog: pytest.LogCaptureFixture) -> None:
    one_kv = tiny_causal("llama", 64, kv_heads=1)  # 4 query heads sharing one KV head
    warnings = validate_for_model(one_kv, _sched({"granularity": "head", "ratio": 0.5}))
    assert warnings == [
        "stage 0: head ratio 0.5 (kv_group) removes nothing: every layer has 1 KV groups and "
        "round(0.5 x that) keeps them all (one KV head per layer: prune query heads inside it with "
        '"attention_unit": "query_head", 4 per group now)'
    ]
    assert "removes nothing" in caplog.text
    with pytest.raises(ScheduleError, match="would remove every KV group"):
        validate_for_model(one_kv, _sched({"granularity": "head", "ratio": 0.4}))
    assert (
        validate_for_model(
            one_kv, _sched({"granularity": "head", "ratio": 0.5, "attention_unit": "query_head"})
        )
        == []
    )
    gqa = tiny_causal("llama", 64)  # 2 KV groups x 2 query heads, 3 layers, FFN 48
    msgs = validate_for_model(
        gqa,
        _sched(
            {"granularity": "layer", "ratio": 0.9},
            {"granularity": "channel", "ratio": 0.99},
            {"granularity": "head", "ratio": 0.5},
            {"granularity": "head", "ratio": 0.5},
        ),
    )
    assert len(msgs) == 3, msgs
    assert msgs[0].startswith(
        "stage 0: layer ratio 0.9 removes nothing: round(0.9 x 3 layers) = 3 keeps every layer"
    )
    assert msgs[1].startswith("stage 1: channel ratio 0.99 removes nothing: every layer has 48 FFN channels")
    assert msgs[2].startswith(
        "stage 3: head ratio 0.5 (kv_group) removes nothing: every layer has 1 KV groups"
    )


def test_cli_prints_the_warning_and_text_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = save_tiny_lm(tmp_path / "lm", "llama", kv_heads=1)
    (tmp_path / "s.json").write_text(
        json.dumps({"version": 1, "stages": [{"granularity": "head", "ratio": 0.5}]})
    )
    base = ["prune", "--model", str(src), "--schedule", str(tmp_path / "s.json")]
    capsys.readouterr()
    assert main([*base, "--out", str(tmp_path / "o1"), *ARGS]) == 0
    assert "warning: stage 0: head ratio 0.5 (kv_group) removes nothing" in capsys.readouterr().out
    assert main([*base, "--out", str(tmp_path / "o4"), "--seq-len", "65"]) == 2
    assert "windows of 65 tokens exceed the model's 64 positions" in capsys.readouterr().err
    assert main([*base, "--out", str(tmp_path / "o2"), "--text", str(tmp_path / "missing.txt"), *ARGS]) == 2
    assert "text file" in capsys.readouterr().err
    from tests.unit.prune_tiny import tiny_model

    tiny_model("gpt2").save_pretrained(tmp_path / "cls")
    capsys.readouterr()
    cls = ["prune", "--model", str(tmp_path / "cls"), "--schedule", str(tmp_path / "s.json")]
    assert main([*cls, "--out", str(tmp_path / "o3"), "--text", str(tmp_path / "s.json")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--text is for causal LMs" in err
