"""`hilt tune` and `hilt report` on a tiny causal LM, end to end on the local board: perplexity on
the evaluation text, each bundle benched with greedy generation (time to first token, decode
tokens/s), and a report that puts the dense model's generated text next to the chosen one's."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from harness.cli.main import main
from tests.cli_errors import one_error_line
from tests.unit.llm_tiny import save_tiny_lm

pytestmark = pytest.mark.timeout(1200)


def _tune(model: Path, db: Path, *extra: str) -> list[str]:
    return [
        "tune", "--model", str(model), "--trials", "2", "--storage", f"sqlite:///{db}", "--study", "lm",
        "--max-steps", "4", "--max-stages", "2", "--seq-len", "16", "--new-tokens", "4", "--val-n", "4",
        "--out", str(db.parent / "runs"), *extra,
    ]  # fmt: skip


def test_tune_and_report_a_causal_lm(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = save_tiny_lm(tmp_path / "lm", "llama")
    db = tmp_path / "hilt.db"
    assert main(_tune(model, db, "--sia")) == 0  # SIA on: it restricts the space on the dense LM
    study = optuna.load_study(study_name="lm", storage=f"sqlite:///{db}")
    assert study.user_attrs["objectives"] == ["perplexity", "decode", "ttft", "memory"]
    assert [d.name for d in study.directions] == ["MINIMIZE", "MAXIMIZE", "MINIMIZE", "MINIMIZE"]
    dense = study.user_attrs["dense"]
    assert dense["perplexity"] > 1 and dense["accuracy"] is None and len(dense["generated_ids"]) == 4
    done = study.get_trials(states=(TrialState.COMPLETE,))
    rejected = study.get_trials(states=(TrialState.PRUNED,))
    assert len(done) + len(rejected) == 2 and done  # SIA may reject a schedule before it is built
    assert all(t.user_attrs["rejected"].startswith(("sia: ", "schedule: ")) for t in rejected)
    for t in done:
        a = t.user_attrs
        assert a["perplexity"] > 1 and a["decode_tokens_per_s"] > 0 and a["ttft_ms"] > 0
        assert t.values == [a["perplexity"], a["decode_tokens_per_s"], a["ttft_ms"], a["peak_rss_mb"]]
    assert "perplexity" in capsys.readouterr().out

    out = tmp_path / "report"
    assert main(["report", "--study", "lm", "--storage", f"sqlite:///{db}", "--out", str(out)]) == 0
    html = (out / "report.html").read_text()
    md = (out / "report.md").read_text()
    for text in ("perplexity", "time to first token (ms)", "decode tokens/s", "Greedy text generated"):
        assert text in html and text in md
    assert "% decode tokens/s" in md and "% perplexity vs dense" in md
    allowed = ", ".join(study.user_attrs["sia_space"]["granularities"])
    assert f"The search pruned {allowed} (SIA on the dense model: " in md and 'id="sia-space"' in html


def test_objectives_of_the_other_task_are_one_line_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = save_tiny_lm(tmp_path / "lm", "llama")
    capsys.readouterr()
    assert main(_tune(model, tmp_path / "hilt.db", "--no-sia", "--objective", "accuracy")) == 2
    assert "objective accuracy does not fit this causal-lm model" in one_error_line(capsys)
