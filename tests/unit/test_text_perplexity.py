"""Text corpora for causal LMs (built-in and --text), disjoint splits, and perplexity on tiny models."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from harness.cli.main import main
from harness.data.text import (
    PATTERN,
    TEXT_SPLITS,
    builtin_corpus,
    load_text_file,
    model_text_split,
    token_windows,
)
from harness.errors import DataError
from harness.evaluate import evaluate_perplexity
from tests.unit.llm_tiny import byte_tokenizer, save_tiny_lm, tiny_causal
from tests.unit.prune_tiny import tiny_model


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    torch.set_num_threads(1)


def test_builtin_corpus_is_real_text_split_disjoint_by_document() -> None:
    corpus = builtin_corpus()
    assert len(corpus.documents) > 50 and sum(map(len, corpus.documents)) > 200_000
    assert "Python" in corpus.source and "PSF" in corpus.licence
    assert any('The "if" statement' in d for d in corpus.documents)
    splits = {s: corpus.split(s) for s in TEXT_SPLITS}
    assert sum(len(v) for v in splits.values()) == len(corpus.documents)
    paragraphs = {s: {p for d in docs for p in d.split("\n\n")} for s, docs in splits.items()}
    for a in TEXT_SPLITS:
        for b in TEXT_SPLITS:
            if a < b:
                assert not paragraphs[a] & paragraphs[b]  # no paragraph in two splits
    assert [len(splits[s]) > 0 for s in TEXT_SPLITS] == [True] * 3
    assert builtin_corpus().sha256 == corpus.sha256  # deterministic
    assert PATTERN.count("calib") == 1 and PATTERN.count("eval") == 3


def test_text_file_documents_and_bad_files(tmp_path: Path) -> None:
    paragraphs = [f"Paragraph {i}." + " word" * 100 for i in range(40)]
    f = tmp_path / "corpus.txt"
    f.write_text("\n\n".join(paragraphs + paragraphs[:5]))  # repeated paragraphs are kept once
    corpus = load_text_file(f)
    assert 1 < len(corpus.documents) < 40 and corpus.licence == "user-supplied"
    assert "\n\n".join(corpus.documents) == "\n\n".join(paragraphs)
    with pytest.raises(DataError, match="does not exist"):
        load_text_file(tmp_path / "nope.txt")
    (tmp_path / "bin.txt").write_bytes(b"\xff\xfe\x00binary")
    with pytest.raises(DataError, match="not UTF-8 text"):
        load_text_file(tmp_path / "bin.txt")
    (tmp_path / "nul.txt").write_text("a\0b")
    with pytest.raises(DataError, match="NUL bytes"):
        load_text_file(tmp_path / "nul.txt")
    (tmp_path / "empty.txt").write_text(" \n\n ")
    with pytest.raises(DataError, match="no text"):
        load_text_file(tmp_path / "empty.txt")


def test_token_windows_join_documents_with_eos() -> None:
    tok = byte_tokenizer()
    eos = tok.eos_token_id
    ids = token_windows(["ab", "cd", "e"], tok, seq_len=3, eos_id=eos)  # 3 + 3 + 2 tokens
    assert ids.tolist() == [[*tok("ab")["input_ids"], eos], [*tok("cd")["input_ids"], eos]]
    with pytest.raises(DataError, match="fewer than one window of 50"):
        token_windows(["short"], tok, seq_len=50)
    assert token_windows(["x" * 100], tok, seq_len=10, max_windows=3).shape == (3, 10)


def test_a_tokenizer_that_starts_texts_with_bos_gets_windows_that_do() -> None:
    """Gemma's tokenizer puts <bos> before every text, and the model is lost without it: its windows
    start with BOS and hold one text token fewer; a tokenizer that adds none (GPT-2's) gets none."""
    from harness.data.text import leading_bos

    tok = byte_tokenizer()
    assert leading_bos(tok) is None
    tok.add_bos_token = True
    bos = leading_bos(tok)
    assert bos == tok.bos_token_id
    ids = token_windows(["abcdef"], tok, seq_len=4, bos_id=bos)  # 6 text tokens: 2 windows of 1 + 3
    text = tok("abcdef", add_special_tokens=False)["input_ids"]
    assert ids.tolist() == [[bos, *text[:3]], [bos, *text[3:6]]]


@pytest.mark.parametrize("family", ["llama", "qwen2", "gpt2"])
def test_perplexity_is_exp_of_the_models_own_lm_loss(family: str) -> None:
    model = tiny_causal(family, 300)
    ids = torch.randint(0, 300, (5, 16), generator=torch.Generator().manual_seed(0))
    result = evaluate_perplexity(model, ids, batch_size=2)
    with torch.no_grad():
        hf_loss = float(model(input_ids=ids, labels=ids).loss)  # HF's mean shifted cross-entropy
    assert result.tokens == 5 * 15 and result.windows == 5
    assert math.isclose(result.mean_loss, hf_loss, rel_tol=1e-5)
    assert math.isclose(result.perplexity, math.exp(hf_loss), rel_tol=1e-5)


def test_uniform_model_has_perplexity_equal_to_vocab() -> None:
    model = tiny_causal("gpt2", 300)
    with torch.no_grad():
        model.lm_head.weight.zero_()  # tied: also zeroes the input embeddings; logits are all 0
    ids = torch.randint(0, 300, (3, 8), generator=torch.Generator().manual_seed(1))
    assert math.isclose(evaluate_perplexity(model, ids).perplexity, 300.0, rel_tol=1e-5)


def test_model_text_split_uses_the_models_tokenizer(tmp_path: Path) -> None:
    d = save_tiny_lm(tmp_path / "lm")
    w = model_text_split(d, "eval", None, seq_len=32, max_windows=5)
    assert w.input_ids.shape == (5, 32) and w.split == "eval" and w.corpus == "python-docs"
    cal = model_text_split(d, "calib", None, seq_len=32, max_windows=5)
    assert not torch.equal(w.input_ids, cal.input_ids)


def test_cli_perplexity(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = save_tiny_lm(tmp_path / "lm")
    out = tmp_path / "ppl.json"
    args = ["models", "perplexity", "--model", str(d), "--seq-len", "32", "--windows", "4"]
    assert main([*args, "--json", str(out)]) == 0
    assert "perplexity" in capsys.readouterr().out
    rec = json.loads(out.read_text())
    assert rec["windows"] == 4 and rec["tokens"] == 4 * 31 and rec["corpus"] == "python-docs"
    assert rec["perplexity"] == pytest.approx(math.exp(rec["mean_loss"]))
    text = tmp_path / "mine.txt"
    text.write_text(
        "\n\n".join(f"The pump {i} was serviced and the bearing replaced." * 8 for i in range(30))
    )
    assert main([*args, "--text", str(text), "--split", "recovery"]) == 0
    assert "mine.txt recovery" in capsys.readouterr().out


def _one_error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def test_cli_perplexity_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = save_tiny_lm(tmp_path / "lm")
    base = ["models", "perplexity", "--model", str(d)]
    capsys.readouterr()
    assert main([*base, "--seq-len", "100"]) == 2
    assert "windows of 100 tokens exceed the model's 64 positions; use a smaller --seq-len" in _one_error(
        capsys
    )
    assert main([*base, "--split", "train"]) == 2
    assert "--split 'train' is not one of calib, recovery, eval" in _one_error(capsys)
    (tmp_path / "tiny.txt").write_text("Too short.")
    assert main([*base, "--text", str(tmp_path / "tiny.txt"), "--seq-len", "32"]) == 2
    assert "the text has 11 tokens, fewer than one window of 32" in _one_error(capsys)
    assert main([*base, "--text", str(tmp_path / "tiny.txt"), "--split", "calib", "--seq-len", "32"]) == 2
    assert "tiny.txt: too little text for the calib split (1 documents" in _one_error(capsys)
    tiny_model("gpt2").save_pretrained(tmp_path / "cls")
    capsys.readouterr()
    assert main(["models", "perplexity", "--model", str(tmp_path / "cls")]) == 2
    assert "perplexity needs a causal LM" in _one_error(capsys)
    lm = tmp_path / "notok"
    tiny_causal("llama", 300).save_pretrained(lm)
    capsys.readouterr()
    assert main(["models", "perplexity", "--model", str(lm), "--seq-len", "32"]) == 2
    assert "has no tokenizer files" in _one_error(capsys)
