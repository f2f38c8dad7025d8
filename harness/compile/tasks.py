"""What differs between compile tasks, and nothing else: how the model is exported to Relax, which
example input and expected output the bundle carries, and the task's own metadata.

The rest of the pipeline (graph passes, scheduler, build, bundle and cache-index writers) is one
path in harness.compile.compiler that every task runs."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch

from harness.compile.export import example_input, to_relax
from harness.compile.options import CompileOptions
from harness.errors import CompileError
from harness.models import LoadedModel

log = logging.getLogger(__name__)

Say = Callable[[str], None]


@dataclass(frozen=True)
class Exported:
    """A task's export: the Relax module (weights bound as constants), the bundle's example input
    and PyTorch's output for it, and the task's own BundleMetadata fields."""

    mod: Any  # tvm.IRModule
    input_name: str
    input_array: np.ndarray
    expected: np.ndarray
    metadata: dict[str, Any] = field(default_factory=dict)


class CompileTask:
    """One compile task: constructed once the model is loaded, before the cache lookup."""

    name: ClassVar[str]
    not_tunable: ClassVar[str | None] = None  # why kernel tuning trials are refused for this task

    def __init__(self, loaded: LoadedModel, opts: CompileOptions) -> None:
        self.loaded = loaded
        self.opts = opts

    def tuning_key(self, database_digest: str) -> str:
        """The cache key's `tuning` entry: the database digest plus whatever shapes the task adds."""
        return database_digest

    def export(self, say: Say, stages: dict[str, float]) -> Exported:
        raise NotImplementedError


class ClassifierTask(CompileTask):
    """A sequence classifier: one `main` over a fixed-length input, PyTorch's logits for a seeded one."""

    name = "sequence-classification"

    def export(self, say: Say, stages: dict[str, float]) -> Exported:
        # the expected logits are the quantized model's own where the build quantizes its weights
        example = example_input(self.opts.reference_model(self.loaded.model), self.opts.seq_len)
        say(f"exporting {self.loaded.family} model (seq_len {self.opts.seq_len}) with torch.export")
        mod = to_relax(self.loaded.model, example)
        return Exported(mod, example.name, example.input_ids, example.expected)


class CausalTask(CompileTask):
    """A causal LM: `prefill` and `decode` (KV caches in and out) over one set of weights, an example
    prompt, and PyTorch's greedy continuation of it with the logits each token came from."""

    name = "causal-lm"
    not_tunable = "kernel tuning trials are not wired for causal LMs yet; drop --tune-trials"

    def __init__(self, loaded: LoadedModel, opts: CompileOptions) -> None:
        super().__init__(loaded, opts)
        self.bucket, self.max_len = causal_lengths(loaded.model, opts)

    def tuning_key(self, database_digest: str) -> str:
        return f"causal:{self.bucket}:{self.max_len}:{database_digest}"

    def export(self, say: Say, stages: dict[str, float]) -> Exported:
        from harness.compile.bundle import CausalSpec
        from harness.compile.causal import CachedStep, greedy_reference
        from harness.compile.steps import step_module

        model = self.loaded.model
        t0 = time.monotonic()
        prompt_len = min(self.bucket, 16)
        prompt = example_input(model, prompt_len).input_ids
        reference = self.opts.reference_model(model)  # the weights as the bundle stores them
        ids, logits = greedy_reference(reference, prompt, min(16, self.max_len - prompt_len))
        stages["reference"] = round(time.monotonic() - t0, 3)
        say(f"exporting {self.loaded.family} prefill ({self.bucket} tokens) + decode with torch.export")
        step = CachedStep(model, self.max_len)
        causal = CausalSpec(
            bucket=self.bucket,
            max_len=self.max_len,
            cache=[(kv, hd) for kv, hd in step.layout.layers],
            vocab=int(model.config.vocab_size),
            expected_ids=ids,
        )
        return Exported(
            step_module(step, self.bucket),
            "input_ids",
            prompt,
            np.stack(logits),
            metadata={"task": self.name, "causal": causal.model_dump()},
        )


TASKS: dict[str, type[CompileTask]] = {t.name: t for t in (ClassifierTask, CausalTask)}


def task_class(loaded: LoadedModel, source: object) -> type[CompileTask]:
    """The task class for a loaded model; a CompileError naming the tasks that compile."""
    try:
        return TASKS[loaded.task]
    except KeyError:
        raise CompileError(
            f"{source}: task {loaded.task} is not compiled yet; only {' and '.join(TASKS)}"
        ) from None


def causal_lengths(model: torch.nn.Module, opts: CompileOptions) -> tuple[int, int]:
    """(prefill bucket, cache length): the bucket is --seq-len; the cache defaults to 128 more
    positions, within what the model was trained for."""
    cfg = model.config
    max_pos = getattr(cfg, "max_position_embeddings", None) or getattr(cfg, "n_positions", None)
    bucket = opts.seq_len
    max_len = opts.cache_len if opts.cache_len is not None else bucket + 128
    if opts.cache_len is None and max_pos is not None:
        max_len = min(max_len, int(max_pos))
    if bucket >= max_len:
        raise CompileError(
            f"--seq-len {bucket} leaves no room to decode in a KV cache of {max_len} positions; "
            "pass a smaller --seq-len or a larger --cache-len"
        )
    return bucket, max_len
