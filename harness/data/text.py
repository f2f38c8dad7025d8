"""Natural-language text for causal LMs: a corpus, split into disjoint documents, cut into token windows.

The built-in corpus is real human-written English that every Python install carries offline: the
topics of the Python Language Reference that CPython ships as `pydoc_data.topics` (what `help("if")`
prints; © Python Software Foundation, under the PSF License Version 2). Its text depends on the Python
version, so every result names the corpus's sha256. A user's own corpus is a UTF-8 text file (`--text`),
split into documents at blank lines (paragraphs grouped to about `DOC_CHARS` characters). A paragraph
that occurs more than once is kept only the first time.

Splits are disjoint by document: documents, in a fixed order, go to calibration / recovery / evaluation
in a fixed 10-slot pattern (1 : 6 : 3), so no window of one split shares text with another.
"""

from __future__ import annotations

import hashlib
import logging
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

import torch

from harness.errors import DataError

log = logging.getLogger(__name__)

TextSplit = Literal["calib", "recovery", "eval"]
TEXT_SPLITS: tuple[TextSplit, ...] = ("calib", "recovery", "eval")
# document i goes to PATTERN[i % 10]: 1 calibration, 6 recovery, 3 evaluation in every 10
PATTERN: tuple[TextSplit, ...] = (
    "eval", "recovery", "calib", "recovery", "eval", "recovery", "recovery", "eval", "recovery", "recovery",
)  # fmt: skip
DOC_CHARS = 2000
BUILTIN = "python-docs"


class Tokenizer(Protocol):
    def __call__(self, text: str, add_special_tokens: bool = ...) -> dict: ...


@dataclass(frozen=True)
class TextCorpus:
    """Documents of one corpus, in a fixed order, with what they are and where they come from."""

    name: str
    source: str
    licence: str
    documents: list[str]

    @property
    def sha256(self) -> str:
        h = hashlib.sha256()
        for d in self.documents:
            h.update(d.encode("utf-8") + b"\0")
        return h.hexdigest()

    def split(self, which: TextSplit) -> list[str]:
        if which not in TEXT_SPLITS:
            raise DataError(f"unknown text split {which!r}; use one of {', '.join(TEXT_SPLITS)}")
        return [d for i, d in enumerate(self.documents) if PATTERN[i % len(PATTERN)] == which]


def builtin_corpus() -> TextCorpus:
    """The Python Language Reference topics shipped with this Python (`pydoc_data.topics`)."""
    try:
        from pydoc_data.topics import topics
    except ImportError as exc:  # some distributions strip it
        raise DataError(
            "this Python has no pydoc_data.topics (the built-in text corpus); pass --text FILE"
        ) from exc
    docs = _dedupe([topics[k] for k in sorted(topics)])
    version = ".".join(str(v) for v in sys.version_info[:3])
    return TextCorpus(
        name=BUILTIN,
        source=f"Python {version} Language Reference topics (pydoc_data.topics), shipped with CPython",
        licence="PSF License Version 2 (Python documentation)",
        documents=docs,
    )


def _paragraphs(text: str) -> list[str]:
    return [p.strip() for p in re.split(r"\n\s*\n", text) if p.strip()]


def _dedupe(documents: list[str]) -> list[str]:
    """Drop every paragraph seen before (in order), and documents left empty.

    The reference topics repeat whole sections under several topics; without this, the same
    paragraph could land in the recovery and the evaluation split.
    """
    seen: set[str] = set()
    out = []
    for doc in documents:
        kept = []
        for p in _paragraphs(doc):
            if p not in seen:
                seen.add(p)
                kept.append(p)
        if kept:
            out.append("\n\n".join(kept))
    return out


def _paragraph_documents(text: str, target: int = DOC_CHARS) -> list[str]:
    paragraphs = _dedupe([text])[0].split("\n\n") if text.strip() else []
    docs: list[str] = []
    current: list[str] = []
    size = 0
    for p in paragraphs:
        current.append(p)
        size += len(p)
        if size >= target:
            docs.append("\n\n".join(current))
            current, size = [], 0
    if current:
        docs.append("\n\n".join(current))
    return docs


def load_text_file(path: str | Path) -> TextCorpus:
    """A user's UTF-8 text file as a corpus (documents at blank lines, about DOC_CHARS characters each)."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"text file {path} does not exist")
    if not path.is_file():
        raise DataError(f"{path} is not a file; --text takes a UTF-8 text file")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text (byte {exc.start}); --text takes a UTF-8 text file") from exc
    if "\0" in text:
        raise DataError(f"{path}: contains NUL bytes; --text takes a UTF-8 text file, not binary data")
    docs = _paragraph_documents(text)
    if not docs:
        raise DataError(f"{path}: no text in the file")
    return TextCorpus(name=path.name, source=str(path), licence="user-supplied", documents=docs)


def load_corpus(text_path: str | Path | None = None) -> TextCorpus:
    """`--text FILE` if given, else the built-in corpus."""
    return load_text_file(text_path) if text_path is not None else builtin_corpus()


def token_windows(
    documents: list[str],
    tokenizer: Tokenizer,
    seq_len: int,
    max_windows: int | None = None,
    eos_id: int | None = None,
    bos_id: int | None = None,
) -> torch.Tensor:
    """Non-overlapping windows [N, seq_len] of the documents' tokens, joined by `eos_id` (if any).

    With `bos_id` every window starts with it and holds seq_len - 1 text tokens: a model whose
    tokenizer puts BOS before every text (Gemma) is scored as it is used, not without its anchor
    token (Gemma 3 270M: perplexity 197 without, 24 with, on the same predicted tokens)."""
    if seq_len < 2 + (bos_id is not None):
        raise DataError(f"sequence length must be >= 2 to predict a next token, got {seq_len}")
    body = seq_len - (bos_id is not None)
    stream: list[int] = []
    need = None if max_windows is None else max_windows * body
    for doc in documents:
        stream += list(tokenizer(doc, add_special_tokens=False)["input_ids"])
        if eos_id is not None:
            stream.append(int(eos_id))
        if need is not None and len(stream) >= need:
            break
    n = len(stream) // body
    if max_windows is not None:
        n = min(n, max_windows)
    if n == 0:
        raise DataError(
            f"the text has {len(stream)} tokens, fewer than one window of {seq_len}; "
            "use more text or a shorter --seq-len"
        )
    windows = torch.tensor(stream[: n * body], dtype=torch.long).view(n, body)
    if bos_id is not None:
        windows = torch.cat([torch.full((n, 1), int(bos_id), dtype=torch.long), windows], dim=1)
    return windows


def leading_bos(tokenizer: Tokenizer) -> int | None:
    """The BOS id where the tokenizer puts one before every text by default, else None."""
    bos = getattr(tokenizer, "bos_token_id", None)
    if bos is None:
        return None
    ids = list(tokenizer("a")["input_ids"])
    return int(bos) if ids and ids[0] == bos else None


@dataclass(frozen=True)
class TextWindows:
    """Token windows of one split (labels are zeros: a causal LM predicts its own next tokens)."""

    input_ids: torch.Tensor
    labels: torch.Tensor
    corpus: str
    corpus_sha256: str
    split: TextSplit

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])


def split_windows(
    corpus: TextCorpus, which: TextSplit, tokenizer: Tokenizer, seq_len: int, max_windows: int | None = None
) -> TextWindows:
    """Windows of one split, documents joined by the tokenizer's EOS, each opening with its BOS where
    the tokenizer puts one before every text (`leading_bos`)."""
    eos_id, bos_id = tokenizer.eos_token_id, leading_bos(tokenizer)
    docs = corpus.split(which)
    if not docs:
        raise DataError(
            f"{corpus.name}: too little text for the {which} split ({len(corpus.documents)} documents; "
            f"each split needs at least one of every {len(PATTERN)})"
        )
    ids = token_windows(docs, tokenizer, seq_len, max_windows, eos_id, bos_id)
    log.info("%s %s: %d windows of %d tokens", corpus.name, which, len(ids), seq_len)
    return TextWindows(ids, torch.zeros(len(ids), dtype=torch.long), corpus.name, corpus.sha256, which)


def load_tokenizer(model_dir: str | Path):  # noqa: ANN201 - a transformers tokenizer
    """The tokenizer saved beside a model (an imported or pruned LLM directory)."""
    from transformers import AutoTokenizer

    directory = Path(model_dir)
    if not any((directory / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json", "vocab.json")):
        raise DataError(
            f"{directory} has no tokenizer files; text needs the model's tokenizer "
            "(import it with `hilt models import-gguf`, or pass token files with --data)"
        )
    try:
        return AutoTokenizer.from_pretrained(str(directory))
    except (OSError, ValueError) as exc:
        raise DataError(f"{directory}: cannot load its tokenizer ({exc})") from exc


TOKENIZER_FILES = (
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.json", "merges.txt",
    "tokenizer.model", "added_tokens.json", "chat_template.jinja",
)  # fmt: skip


def copy_tokenizer(src: str | Path, dst: str | Path) -> list[str]:
    """Copy a model directory's tokenizer files (those present) to another directory; returns their names."""
    import shutil

    copied = []
    for name in TOKENIZER_FILES:
        f = Path(src) / name
        if f.is_file():
            shutil.copy2(f, Path(dst) / name)
            copied.append(name)
    return copied


def model_text_split(
    model_dir: str | Path,
    which: TextSplit,
    text_path: str | Path | None = None,
    seq_len: int = 128,
    max_windows: int | None = None,
) -> TextWindows:
    """Windows of one split of `--text FILE` (or the built-in corpus), in the model's own tokens."""
    tok = load_tokenizer(model_dir)
    return split_windows(load_corpus(text_path), which, tok, seq_len, max_windows)
