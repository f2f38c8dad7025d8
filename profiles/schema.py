"""Board profiles: one TOML file per board kind in `profiles/`, validated with pydantic.

A profile is data, not code: what the board is (arch, CPU, memory), how TVM targets it,
which cross toolchain builds for it, how its energy is estimated when it has no sensor,
and how to reach it by default. Every bad field is reported with file and field name.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from hilt_base.errors import ConfigError

PROFILES_DIR = Path(__file__).resolve().parent
PROFILE_VERSION = 1

Arch = Literal["x86_64", "aarch64", "riscv64"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class TargetSpec(_Strict):
    """TVM target: either a tag TVM ships, or the fields of a dict target (0.27 rejects CLI strings)."""

    tag: str | None = None
    kind: str = "llvm"
    mtriple: str | None = None
    mcpu: str | None = None
    mattr: list[str] = Field(default_factory=list)
    num_cores: int | None = Field(default=None, alias="num-cores", ge=1)

    def as_tvm(self) -> str | dict[str, Any]:
        """What `tvm.target.Target(...)` accepts: the tag string, or the dict form."""
        if self.tag:
            return self.tag
        out: dict[str, Any] = {"kind": self.kind}
        if self.mtriple:
            out["mtriple"] = self.mtriple
        if self.mcpu:
            out["mcpu"] = self.mcpu
        if self.mattr:
            out["mattr"] = list(self.mattr)
        if self.num_cores:
            out["num-cores"] = self.num_cores
        return out


class ToolchainSpec(_Strict):
    """Cross toolchain prefix ('' builds natively), e.g. 'aarch64-linux-gnu-'."""

    prefix: str = ""
    extra_ldflags: list[str] = Field(default_factory=list)


class CpuSpec(_Strict):
    model: str
    cores: int = Field(ge=1)
    max_mhz: int | None = Field(default=None, ge=1)
    simd_width_bytes: int = Field(default=16, ge=1)


class MemorySpec(_Strict):
    total_mb: int = Field(ge=1)
    budget_mb: int = Field(ge=1)

    @model_validator(mode="after")
    def _budget_fits(self) -> MemorySpec:
        if self.budget_mb > self.total_mb:
            raise ValueError(f"budget_mb ({self.budget_mb}) exceeds total_mb ({self.total_mb})")
        return self


class PowerModel(_Strict):
    """Fallback energy estimate (labelled energy_source='model'): P = idle_w + per_core_w * busy cores."""

    idle_w: float = Field(ge=0)
    per_core_w: float = Field(ge=0)


class SerialLogin(_Strict):
    """A serial console to log in on before starting the agent (copied over the line if absent)."""

    user: str = Field(min_length=1)
    password_env: str | None = None  # name of the environment variable that holds the password
    shell_prompts: list[str] = Field(default_factory=lambda: ["$ ", "# "], min_length=1)
    python: str = "python3"
    agent_dir: str = ".cache/hilt-agent"
    timeout_s: float = Field(default=30.0, gt=0)


class TransportDefaults(BaseModel):
    """How to reach a board of this kind by default: `kind` plus that transport's own fields. The
    fields are checked against the transport's spec (beside the transport, in `device_agents`) when
    a board is resolved, so a new transport needs no change here."""

    model_config = ConfigDict(extra="allow", frozen=True)

    kind: str = Field(min_length=1)


class BoardProfile(_Strict):
    version: int = PROFILE_VERSION
    name: str
    description: str = ""
    arch: Arch
    emulated: bool = False
    target: TargetSpec
    toolchain: ToolchainSpec = ToolchainSpec()
    # the default lowering's weight matmuls: "tir" (hilt's TensorIR schedule) or "blas" (OpenBLAS in
    # the board runtime, libhilt_blas); the measured faster one per arch (README, compile_vs_peers)
    matmul: Literal["tir", "blas"] = "tir"
    cpu: CpuSpec
    memory: MemorySpec
    power: PowerModel
    transport: TransportDefaults

    @model_validator(mode="after")
    def _check_version(self) -> BoardProfile:
        if self.version != PROFILE_VERSION:
            raise ValueError(f"unsupported profile version {self.version} (expected {PROFILE_VERSION})")
        return self


def format_validation_error(source: str, exc: ValidationError) -> str:
    """One line naming the file and each bad field."""
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "<root>"
        parts.append(f"{loc}: {err['msg']}")
    return f"{source}: " + "; ".join(parts)


def parse_profile(data: dict[str, Any], source: str) -> BoardProfile:
    try:
        return BoardProfile.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(source, exc)) from None


def read_toml(path: Path, what: str) -> dict[str, Any]:
    """Parse a TOML file hilt reads (profile, farm, suite); a missing or malformed one is one line."""
    if path.is_dir():
        raise ConfigError(f"{what} file {path} is a directory, not a TOML file")
    if not path.is_file():
        raise ConfigError(f"{what} file {path} does not exist")
    try:
        return tomllib.loads(path.read_bytes().decode())
    except OSError as exc:
        raise ConfigError(f"cannot read {what} file {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not valid TOML (not UTF-8 text)") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None


def load_profile_file(path: Path) -> BoardProfile:
    """Load and validate one profile TOML file."""
    return parse_profile(read_toml(path, "profile"), str(path))


def available_profiles(directory: Path = PROFILES_DIR) -> list[str]:
    return sorted(p.stem for p in directory.glob("*.toml"))


def load_profile(name_or_path: str, directory: Path = PROFILES_DIR) -> BoardProfile:
    """A profile by board-kind name (from `profiles/`) or by path to a TOML file."""
    candidate = Path(name_or_path)
    if candidate.suffix == ".toml" or candidate.is_file():
        return load_profile_file(candidate)
    path = directory / f"{name_or_path}.toml"
    if not path.is_file():
        known = ", ".join(available_profiles(directory)) or "none"
        raise ConfigError(f"unknown board profile '{name_or_path}' (known: {known})")
    return load_profile_file(path)
