"""`hilt prune` end to end on a tiny model: output written atomically, errors are one red line and exit 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from harness.cli.main import main
from harness.models import get_adapter, load_model
from harness.models.manifest import MANIFEST_FILE
from harness.prune.job import SCHEDULE_FILE, STAGE_LOG_FILE, prune_to_dir
from tests.cli_errors import one_error_line
from tests.unit.prune_tiny import tiny_model, tokens

SCHEDULE = {
    "version": 1,
    "name": "tiny-cascade",
    "stages": [
        {"granularity": "layer", "ratio": 0.5, "recovery": {"steps": 2, "batch_size": 8}},
        {
            "granularity": "channel",
            "ratio": 0.5,
            "criterion": "wanda",
            "recovery": {"steps": 2, "batch_size": 8},
        },
    ],
    "calibration": {"batches": 2, "batch_size": 8},
}


@pytest.fixture
def setup(tmp_path: Path) -> dict[str, Path]:
    tiny_model("llama", layers=4).save_pretrained(tmp_path / "model")
    ids = tokens(n=32, seed=2)
    save_file({"input_ids": ids, "labels": ids[:, 0] % 3}, str(tmp_path / "data.safetensors"))
    (tmp_path / "schedule.json").write_text(json.dumps(SCHEDULE))
    return {
        "model": tmp_path / "model",
        "data": tmp_path / "data.safetensors",
        "schedule": tmp_path / "schedule.json",
        "out": tmp_path / "out",
        "tmp": tmp_path,
    }


def _args(p: dict[str, Path], **over: Path) -> list[str]:
    q = {**p, **over}
    return [
        "prune", "--model", str(q["model"]), "--schedule", str(q["schedule"]), "--out", str(q["out"]),
        "--data", str(q["data"]), "--eval-data", str(q["data"]),
    ]  # fmt: skip


def test_prune_command_writes_model_and_log(setup: dict[str, Path], capsys: pytest.CaptureFixture) -> None:
    assert main(_args(setup)) == 0
    out = setup["out"]
    assert {p.name for p in out.iterdir()} == {
        "config.json", MANIFEST_FILE, "model.safetensors", SCHEDULE_FILE, STAGE_LOG_FILE
    }  # fmt: skip
    log = json.loads((out / STAGE_LOG_FILE).read_text())
    assert log["version"] == 1 and log["schedule"] == "tiny-cascade" and len(log["stages"]) == 2
    loaded = load_model(out)
    assert get_adapter(loaded.model).num_layers() == 2
    assert "tiny-cascade" in capsys.readouterr().out
    assert not [p for p in setup["tmp"].iterdir() if p.name.startswith(".out.partial")]


def test_existing_output_refused(setup: dict[str, Path], capsys: pytest.CaptureFixture) -> None:
    setup["out"].mkdir()
    assert main(_args(setup)) == 2
    assert "already exists" in one_error_line(capsys)


def test_interrupted_run_leaves_no_output(setup: dict[str, Path]) -> None:
    def interrupt(what: str, done: int, total: int) -> None:
        if done >= 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        prune_to_dir(
            setup["model"], setup["schedule"], setup["out"], data_path=setup["data"], progress=interrupt
        )
    assert not setup["out"].exists()
    assert [p.name for p in setup["tmp"].iterdir() if p.name.startswith(".")] == []


@pytest.mark.parametrize(
    ("tensors", "message"),
    [
        ({"input_ids": torch.zeros(4, 5, dtype=torch.long)}, "missing `labels`"),
        ({"input_ids": torch.zeros(4, dtype=torch.long), "labels": torch.zeros(4).long()}, "need input_ids"),
        ({"input_ids": torch.zeros(4, 5), "labels": torch.zeros(4).long()}, "must be integer"),
        (
            {"input_ids": torch.full((4, 5), 999).long(), "labels": torch.zeros(4).long()},
            "outside the model's vocab",
        ),
        (
            {"input_ids": torch.zeros(4, 5).long(), "labels": torch.full((4,), 7).long()},
            "labels >= the model's 3",
        ),
    ],
)
def test_bad_data_is_a_clear_error(
    setup: dict[str, Path], tensors: dict, message: str, capsys: pytest.CaptureFixture
) -> None:
    bad = setup["tmp"] / "bad.safetensors"
    save_file(tensors, str(bad))
    assert main(_args(setup, data=bad)) == 2
    assert message in one_error_line(capsys)
    assert not setup["out"].exists()


def test_bad_inputs_are_clear_errors(setup: dict[str, Path], capsys: pytest.CaptureFixture) -> None:
    (setup["tmp"] / "garbage.safetensors").write_bytes(b"nope")
    assert main(_args(setup, data=setup["tmp"] / "garbage.safetensors")) == 2
    assert "not a readable safetensors file" in one_error_line(capsys)
    assert main(_args(setup, model=setup["tmp"] / "nowhere")) == 2
    assert "does not exist" in one_error_line(capsys)
    bad = dict(SCHEDULE, stages=[{"granularity": "layer", "ratio": 0.1}])
    (setup["tmp"] / "empty.json").write_text(json.dumps(bad))
    assert main(_args(setup, schedule=setup["tmp"] / "empty.json")) == 2
    assert "would remove every one of 4 layers" in one_error_line(capsys)
    assert not setup["out"].exists()
