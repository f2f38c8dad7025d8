"""`hilt models import-gguf`: a GGUF written by the test with the `gguf` package, imported and loaded."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from harness.cache import sha256_file
from harness.cli.main import main
from harness.errors import ModelLoadError
from harness.models import load_model
from harness.models.gguf import SOURCE_FILE, GGUFError, import_gguf, imported_model_dir
from harness.models.loading import resolve_model_dir
from tests.unit.llm_tiny import (
    byte_vocab,
    tiny_causal,
    tiny_gpt2_for_gguf,
    tiny_llama_lm,
    write_gpt2_gguf,
    write_llama_gguf,
)


@pytest.fixture(autouse=True)
def _cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HILT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("COLUMNS", "200")
    torch.set_num_threads(1)


def _ids(vocab: int) -> torch.Tensor:
    return torch.randint(0, vocab, (2, 10), generator=torch.Generator().manual_seed(3))


@pytest.mark.parametrize("tied", [True, False])
def test_import_round_trips_weights_and_tokenizer(tmp_path: Path, tied: bool) -> None:
    dense = tiny_llama_lm(len(byte_vocab()), tied=tied)
    src = write_llama_gguf(tmp_path / "tiny.gguf", dense)
    directory, record, reused = import_gguf(src, name="tiny-llama")
    assert not reused
    assert directory == imported_model_dir("tiny-llama") and directory.is_dir()
    assert record.sha256 == sha256_file(src) and record.architecture == "llama"
    assert record.tied_embeddings is tied and record.tensor_types == ["F32"]
    saved = json.loads((directory / SOURCE_FILE).read_text())
    assert saved["sha256"] == record.sha256 and saved["params"] == record.params
    assert not list(directory.parent.glob(".tiny-llama.partial-*"))  # atomic: no work dir left
    loaded = load_model("tiny-llama")  # the name now works as --model
    assert loaded.task == "causal-lm" and loaded.family == "llama"
    m = loaded.model
    assert (m.lm_head.weight.data_ptr() == m.model.embed_tokens.weight.data_ptr()) is tied
    ids = _ids(len(byte_vocab()))
    with torch.no_grad():
        want, got = dense(input_ids=ids).logits, m(input_ids=ids).logits
    assert torch.allclose(want, got, atol=1e-5)  # q/k permutation undone, F32 exact
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(directory)
    ids = tok("the cat in the hat")["input_ids"]
    assert tok.decode(ids) == "the cat in the hat"
    assert tok.convert_tokens_to_ids("Ġthe") in ids  # the file's merges are used


@pytest.mark.parametrize("family", ["qwen2", "gpt2"])
def test_import_qwen2_and_gpt2(tmp_path: Path, family: str) -> None:
    name = f"tiny-{family}"
    if family == "gpt2":
        dense = tiny_gpt2_for_gguf(len(byte_vocab()))
        src = write_gpt2_gguf(tmp_path / f"{name}.gguf", dense)
    else:
        dense = tiny_causal(family, len(byte_vocab()))  # q/k/v biases
        src = write_llama_gguf(tmp_path / f"{name}.gguf", dense, architecture=family, name=name)
    record = import_gguf(src, name=name).record
    assert record.family == family and record.architecture == family and record.tied_embeddings
    loaded = load_model(name)
    assert type(loaded.model).__name__ == type(dense).__name__
    ids = _ids(len(byte_vocab()))
    with torch.no_grad():
        assert torch.allclose(dense(input_ids=ids).logits, loaded.model(input_ids=ids).logits, atol=1e-5)


def test_reimport_of_same_file_is_reused_and_other_file_refused(tmp_path: Path) -> None:
    src = write_llama_gguf(tmp_path / "a.gguf", tiny_llama_lm(len(byte_vocab())))
    d = import_gguf(src, name="m").directory
    stamp = (d / "model.safetensors").stat().st_mtime_ns
    again = import_gguf(src, name="m")
    assert again.reused and again.directory == d and (d / "model.safetensors").stat().st_mtime_ns == stamp
    other = write_llama_gguf(tmp_path / "b.gguf", tiny_llama_lm(len(byte_vocab()), seed=5))
    with pytest.raises(GGUFError, match="already holds a different model; pass --force"):
        import_gguf(other, name="m")
    _, rec, reused = import_gguf(other, name="m", force=True)
    assert not reused
    assert rec.sha256 == sha256_file(other)


def test_cli_import_then_name_is_a_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = write_llama_gguf(tmp_path / "My-Tiny.F32.gguf", tiny_llama_lm(len(byte_vocab())))
    assert main(["models", "import-gguf", "--gguf", str(src)]) == 0
    out = capsys.readouterr().out
    assert "my-tiny: llama" in out and "use it as --model my-tiny" in out and "wrote" in out
    assert main(["models", "import-gguf", "--gguf", str(src)]) == 0
    assert "already holds this file" in capsys.readouterr().out
    assert resolve_model_dir("my-tiny") == imported_model_dir("my-tiny")
    assert main(["models", "list"]) == 0
    assert "my-tiny" in capsys.readouterr().out


def _error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def test_not_a_gguf_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "model.gguf"
    bad.write_bytes(b"PK\x03\x04 not a gguf at all")
    assert main(["models", "import-gguf", "--gguf", str(bad)]) == 2
    assert "is not a GGUF file (starts with b'PK\\x03\\x04'" in _error_line(capsys)
    assert main(["models", "import-gguf", "--gguf", str(tmp_path / "missing.gguf")]) == 2
    assert "does not exist" in _error_line(capsys)
    truncated = tmp_path / "cut.gguf"
    truncated.write_bytes(
        write_llama_gguf(tmp_path / "full.gguf", tiny_llama_lm(len(byte_vocab()))).read_bytes()[:40]
    )
    assert main(["models", "import-gguf", "--gguf", str(truncated)]) == 2
    assert "malformed GGUF file" in _error_line(capsys)


def test_unsupported_architecture(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = write_llama_gguf(tmp_path / "x.gguf", tiny_llama_lm(len(byte_vocab())), architecture="falcon")
    assert main(["models", "import-gguf", "--gguf", str(src)]) == 2
    line = _error_line(capsys)
    assert "GGUF architecture 'falcon' is not supported; supported: gemma3, gpt2, llama, qwen2" in line
    assert not imported_model_dir("x").exists()


def test_not_yet_imported_name(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ModelLoadError, match=r"model smollm2-135m is not imported yet; run `hilt models"):
        load_model("smollm2-135m")
    schedule = tmp_path / "s.json"
    schedule.write_text(json.dumps({"version": 1, "stages": [{"granularity": "layer", "ratio": 0.5}]}))
    assert main(["prune", "--model", "smollm2-135m", "--schedule", str(schedule), "--out", "o"]) == 2
    assert "not imported yet" in _error_line(capsys)


def test_bad_name(tmp_path: Path) -> None:
    src = write_llama_gguf(tmp_path / "x.gguf", tiny_llama_lm(len(byte_vocab())))
    with pytest.raises(GGUFError, match="must be lower-case"):
        import_gguf(src, name="../evil")


def test_named_sources_are_one_line_each_way(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from harness.models.sources import SOURCES, GGUFSource, SourceError

    assert SOURCES["gemma3-270m"].opt_in and not SOURCES["smollm2-135m"].opt_in
    assert main(["models", "import-gguf", "--source", "llama-70b"]) == 2
    assert "unknown model source 'llama-70b'; known: smollm2-135m, gemma3-270m" in _error_line(capsys)
    src = write_llama_gguf(tmp_path / "x.gguf", tiny_llama_lm(len(byte_vocab())))
    assert main(["models", "import-gguf", "--gguf", str(src), "--source", "gemma3-270m"]) == 2
    assert "pass either a GGUF file or a --source, not both" in _error_line(capsys)
    missing = GGUFSource("x", "hilt_no_such_package", "pip install x==1", "Some Terms", True, lambda d: d)
    with pytest.raises(
        SourceError,
        match=r"needs the hilt_no_such_package package.*`pip install x==1` \(licence: Some Terms\)",
    ):
        missing.path()
