"""Artifact bundle: a directory named by its sha256 holding a compiled model and what checks it.

Files: model.so (Relax VM executable; `main`, or for a causal LM `prefill` and `decode`, see
CausalSpec), weights.bin + weights.json (the weights every function takes after its own inputs,
harness.compile.external_weights; bundles before compile version 5 baked them into model.so),
input.json ({"name","shape","dtype"}), input.bin (one fixed example input, raw little-endian),
expected.bin (PyTorch's float32 logits for it), manifest.json (pruning manifest, {} for dense),
metadata.json (versions, target, build time, and `files`: name -> sha256 of every other file). The
bundle hash is sha256 over the sorted 'name:sha256\\n' lines of `files`; the runner and the agent
refuse a bundle whose hash is off.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from harness.cache import sha256_file
from harness.compile.lowering import LoweringInfo
from harness.errors import ArtifactError
from hilt_base.hashing import tree_hash

log = logging.getLogger(__name__)

BUNDLE_VERSION = 1
REQUIRED_FILES = ("model.so", "input.json", "input.bin", "expected.bin", "manifest.json")
OPTIONAL_FILES = ("weights.bin", "weights.json")  # harness.compile.external_weights; older bundles lack them
DTYPES = {"int64": np.int64, "int32": np.int32, "float32": np.float32}
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


class InputSpec(BaseModel):
    """input.json: the name, shape and dtype of the model's one input."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    shape: list[int] = Field(min_length=1)
    dtype: str

    def nbytes(self) -> int:
        return int(np.prod(self.shape)) * np.dtype(DTYPES[self.dtype]).itemsize


class CausalSpec(BaseModel):
    """What a causal-LM bundle's `prefill` and `decode` functions take: a prompt padded to `bucket`
    tokens, then one token at a time, against per-layer K/V caches of `max_len` positions (one
    (kv_heads, head_dim) pair per layer, in call order K0, V0, K1, V1, ...). `expected_ids` are
    PyTorch's greedy continuation of the example prompt; expected.bin holds the logits each came from."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    bucket: int = Field(ge=1)
    max_len: int = Field(ge=2)
    cache: list[tuple[int, int]] = Field(min_length=1)
    vocab: int = Field(ge=1)
    expected_ids: list[int] = Field(min_length=1)


class PlannedTask(BaseModel):
    """One tuned task of a trial run: its share of the model's FLOPs and its trial budget."""

    model_config = ConfigDict(frozen=True)
    name: str
    flop_share: float
    trials: int


class TuningPlan(BaseModel):
    """How a trial run split its budget (harness.compile.tune.plan_budget)."""

    model_config = ConfigDict(frozen=True)
    per_round: int
    tasks: list[PlannedTask] = Field(default_factory=list)


class TuningInfo(BaseModel):
    """How a bundle's kernels were made, the same fields for every task: what `hilt report`, the
    tuner and the bench read. Old bundles' dicts (fewer keys; a causal one had no `matmul`, always
    the tir route then) load with the defaults; keys no longer written are ignored."""

    model_config = ConfigDict(frozen=True)

    mode: str = "off"  # off | db | trials
    lowering: str = "stock"  # harness.compile.lowering.LOWERING_NAME; "stock": TVM's own pipeline
    matmul: str = "tir"  # weight-matmul route: tir | blas
    database: str | None = None  # the tuning database directory the build read
    records: int = 0  # tuning records the database held
    timed_on: list[str] = Field(default_factory=list)  # machines that timed them
    trials: int = 0  # new MetaSchedule trials this build ran
    tasks: int = 0  # kernels of the lowered module
    scheduled_kernels: int = 0  # kernels scheduled by a tuning record
    kernels: LoweringInfo | None = None  # per-rule kernel counts; None: TVM's stock pipeline
    plan: TuningPlan | None = None  # set when this build ran trials

    @field_validator("kernels", mode="before")
    @classmethod
    def _empty_is_none(cls, value: Any) -> Any:
        return None if value == {} else value  # old causal bundles wrote {} for the stock pipeline


class WeightsInfo(BaseModel):
    """How the bundle stores its weights (harness.quant): the format, what the weight-quant pass
    quantized and what stayed fp32 (norms and biases always; a matrix a group does not divide)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    format: str = "fp32"
    group_size: int = 0
    table_format: str = ""  # lookup tables (and a tied output projection), where it differs
    weights: int = 0  # weight tensors quantized
    fp32_mb: float = 0.0  # those weights in fp32
    stored_mb: float = 0.0  # their codes and scales in the bundle
    kept_fp32: list[str] = Field(default_factory=list)


class BundleMetadata(BaseModel):
    """metadata.json."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: int = BUNDLE_VERSION
    hilt_version: str
    tvm_version: str
    tvm_ffi_version: str
    profile: str
    target: str | dict[str, Any]
    arch: str
    build_time: str  # ISO 8601, UTC
    build_seconds: float
    cache_key: str
    model_family: str = ""
    tuning: TuningInfo = Field(default_factory=TuningInfo)
    weights: WeightsInfo = Field(default_factory=WeightsInfo)
    task: str = "sequence-classification"
    causal: CausalSpec | None = None  # set for task causal-lm
    files: dict[str, str]


# sha256 over the sorted 'name:sha256\n' lines; defined once, in the agent's wire module (a leaf
# package every layer may import), so the host, the agent and hilt-runner agree on it.
bundle_hash = tree_hash


@dataclass(frozen=True)
class Bundle:
    """A verified bundle on disk."""

    directory: Path
    sha256: str
    metadata: BundleMetadata
    input_spec: InputSpec

    @property
    def model_path(self) -> Path:
        return self.directory / "model.so"

    def input_array(self) -> np.ndarray:
        raw = (self.directory / "input.bin").read_bytes()
        return np.frombuffer(raw, dtype=DTYPES[self.input_spec.dtype]).reshape(self.input_spec.shape)

    def expected(self) -> np.ndarray:
        return np.frombuffer((self.directory / "expected.bin").read_bytes(), dtype="<f4")

    def manifest(self) -> dict[str, Any]:
        return json.loads((self.directory / "manifest.json").read_text())


def write_bundle(
    staging: Path,
    dest_root: Path,
    *,
    input_name: str,
    input_array: np.ndarray,
    expected: np.ndarray,
    manifest: dict[str, Any],
    metadata: dict[str, Any],
) -> Bundle:
    """Finish a staging dir that already holds model.so, then move it to dest_root/<hash>."""
    if not (staging / "model.so").is_file():
        raise ArtifactError(f"{staging} has no model.so; the build did not produce a library")
    dtype = str(input_array.dtype)
    if dtype not in DTYPES:
        raise ArtifactError(f"input dtype {dtype} is not one of {', '.join(DTYPES)}")
    spec = InputSpec(name=input_name, shape=[int(d) for d in input_array.shape], dtype=dtype)
    (staging / "input.json").write_text(spec.model_dump_json() + "\n")
    little = np.ascontiguousarray(input_array).astype(input_array.dtype.newbyteorder("<"))
    (staging / "input.bin").write_bytes(little.tobytes())
    (staging / "expected.bin").write_bytes(np.ascontiguousarray(expected, dtype="<f4").tobytes())
    (staging / "manifest.json").write_text(json.dumps(manifest, sort_keys=True, indent=2) + "\n")
    present = [n for n in OPTIONAL_FILES if (staging / n).is_file()]
    files = {name: sha256_file(staging / name) for name in (*REQUIRED_FILES, *present)}
    meta = BundleMetadata(**metadata, files=files)
    (staging / "metadata.json").write_text(meta.model_dump_json(indent=2) + "\n")
    digest = bundle_hash(files)
    final = dest_root / digest
    if final.exists():
        try:
            intact = load_bundle(final)
        except ArtifactError as exc:  # a damaged copy of this very bundle: the fresh build replaces it
            log.warning("bundle %s in the cache is damaged (%s); replacing it with the rebuild", digest, exc)
            damaged = final.with_name(f".damaged-{digest}-{os.getpid()}")
            final.rename(damaged)
            shutil.rmtree(damaged, ignore_errors=True)
        else:
            shutil.rmtree(staging)  # same content already there (content addressing)
            return intact
    dest_root.mkdir(parents=True, exist_ok=True)
    staging.chmod(0o755)  # mkdtemp makes it private; agents and other users read bundles
    try:
        staging.rename(final)
    except OSError:
        if not final.is_dir():
            raise
        shutil.rmtree(staging, ignore_errors=True)  # another process wrote the same bundle first
    return load_bundle(final)


def load_bundle(directory: str | Path) -> Bundle:
    """Read and verify a bundle: every file present with its recorded sha256, hash matching the name."""
    d = Path(directory)
    if not d.is_dir():
        raise ArtifactError(f"bundle {d} is not a directory")
    meta_path = d / "metadata.json"
    if not meta_path.is_file():
        raise ArtifactError(f"bundle {d} has no metadata.json; rebuild it with `hilt compile`")
    try:
        meta = BundleMetadata.model_validate_json(meta_path.read_text())
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first["loc"]) or "<root>"
        raise ArtifactError(f"{meta_path}: {loc}: {first['msg']}") from exc
    if meta.version != BUNDLE_VERSION:
        raise ArtifactError(f"{meta_path}: bundle version {meta.version}, this hilt reads {BUNDLE_VERSION}")
    for name in REQUIRED_FILES:
        if name not in meta.files:
            raise ArtifactError(f"{meta_path}: `files` does not list {name}")
    for name, digest in sorted(meta.files.items()):
        path = d / name
        if "/" in name or name == "metadata.json":
            raise ArtifactError(f"{meta_path}: invalid file name {name!r} in `files`")
        if not path.is_file():
            raise ArtifactError(f"bundle {d} is missing {name}")
        actual = sha256_file(path)
        if actual != digest:
            raise ArtifactError(f"bundle file {path} has sha256 {actual[:12]}…, metadata says {digest[:12]}…")
    digest = bundle_hash(meta.files)
    if _HEX64.match(d.name) and d.name != digest:
        raise ArtifactError(f"bundle {d} is named {d.name[:12]}… but its files hash to {digest[:12]}…")
    try:
        spec = InputSpec.model_validate_json((d / "input.json").read_text())
    except ValidationError as exc:
        raise ArtifactError(f"{d / 'input.json'}: {exc.errors()[0]['msg']}") from exc
    if spec.dtype not in DTYPES:
        raise ArtifactError(f"{d / 'input.json'}: dtype {spec.dtype!r} is not one of {', '.join(DTYPES)}")
    size = (d / "input.bin").stat().st_size
    if size != spec.nbytes():
        raise ArtifactError(f"{d / 'input.bin'} has {size} bytes; input.json implies {spec.nbytes()}")
    return Bundle(directory=d, sha256=digest, metadata=meta, input_spec=spec)
