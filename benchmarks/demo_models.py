"""Demo models: parameters, dense test accuracy (re-measured from the saved weights), per-class accuracy,
confusion matrix and training time. Trains a model first if it is missing.

Usage: .venv/bin/python benchmarks/demo_models.py   (writes benchmarks/demo_models.json)
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table
from transformers import AutoModelForSequenceClassification

from harness.data import load_demo_split
from harness.demo.models import DEMO_MODELS, ensure_demo_model, read_record
from harness.evaluate import evaluate_classifier

OUT = Path(__file__).with_suffix(".json")


def main() -> None:
    torch.set_num_threads(1)
    console = Console()
    test = load_demo_split("test")
    rows = []
    for name in DEMO_MODELS:
        path = ensure_demo_model(name)
        record = read_record(path)
        model = AutoModelForSequenceClassification.from_pretrained(path).eval()
        start = time.perf_counter()
        ev = evaluate_classifier(model, test)
        rows.append(
            {
                "model": name,
                "architecture": type(model).__name__,
                "params": sum(p.numel() for p in model.parameters()),
                "layers": record.layers,
                "test_windows": ev.n,
                "test_accuracy": ev.accuracy,
                "test_mean_loss": ev.mean_loss,
                "per_class_accuracy": dict(zip(test.class_names, ev.per_class_accuracy, strict=True)),
                "confusion": ev.confusion,
                "recorded_test_accuracy": record.test_accuracy,
                "train_seconds": record.train_seconds,
                "train_cpu_seconds": record.train_cpu_seconds,
                "train_steps": record.steps,
                "train_threads": record.torch_threads,
                "eval_seconds": round(time.perf_counter() - start, 2),
            }
        )
    table = Table(title="demo models (held-out test split: unseen seeds and speed bands)")
    for col in ("model", "params", "layers", "test acc", "train s (wall)", "train s (CPU)", "steps"):
        table.add_column(col)
    for r in rows:
        cpu = r["train_cpu_seconds"]
        table.add_row(
            r["model"],
            f"{r['params'] / 1e6:.2f} M",
            str(r["layers"]),
            f"{100 * r['test_accuracy']:.2f}%",
            f"{r['train_seconds']:.0f}",
            "-" if cpu is None else f"{cpu:.0f}",
            str(r["train_steps"]),
        )
    console.print(table)
    per_class = Table(title="per-class test accuracy")
    per_class.add_column("class")
    for r in rows:
        per_class.add_column(r["model"], justify="right")
    for c in test.class_names:
        per_class.add_row(c, *[f"{100 * r['per_class_accuracy'][c]:.1f}%" for r in rows])
    console.print(per_class)
    for r in rows:
        console.print(f"confusion matrix of {r['model']} (rows: true, columns: predicted):")
        for name, line in zip(test.class_names, r["confusion"], strict=True):
            console.print(f"  {name:>10} " + " ".join(f"{v:4d}" for v in line))
    OUT.write_text(json.dumps({"version": 1, "class_names": test.class_names, "models": rows}, indent=2))
    console.print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
