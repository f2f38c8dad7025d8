"""Nightly suite files: which bundles (or model + schedule) run on which board profiles, and thresholds.

```toml
version = 1
name = "edge-nightly"
[thresholds]          # optional; these are the defaults
alpha = 0.01          # Mann-Whitney U significance (current slower than baseline)
latency_pct = 5.0     # AND the median must be this much slower to count as a regression
memory_pct = 5.0
energy_pct = 5.0
[[case]]
name = "gpt2-4x"
model = "path/to/pruned-model"   # compiled on the fly for each profile (cached), or:
# bundle = "path/to/bundle-dir"  # a prebuilt bundle (its arch must match the board)
profiles = ["local", "qemu-aarch64"]
```
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from harness.errors import ConfigError
from profiles.schema import format_validation_error, read_toml

SUITE_VERSION = 1


class Thresholds(BaseModel):
    model_config = ConfigDict(extra="forbid")

    alpha: float = Field(default=0.01, gt=0, lt=1)
    latency_pct: float = Field(default=5.0, ge=0)
    memory_pct: float = Field(default=5.0, ge=0)
    energy_pct: float = Field(default=5.0, ge=0)


class Case(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    bundle: str | None = None
    model: str | None = None
    profiles: list[str] = Field(min_length=1)
    seq_len: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _one_source(self) -> Case:
        if (self.bundle is None) == (self.model is None):
            raise ValueError("give exactly one of 'bundle' or 'model'")
        return self


class Suite(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: int = SUITE_VERSION
    name: str = Field(min_length=1)
    thresholds: Thresholds = Field(default_factory=Thresholds)
    case: list[Case] = Field(min_length=1)

    @model_validator(mode="after")
    def _checks(self) -> Suite:
        if self.version != SUITE_VERSION:
            raise ValueError(f"unsupported suite version {self.version} (expected {SUITE_VERSION})")
        pairs = [(c.name, p) for c in self.case for p in c.profiles]
        dup = sorted({f"{n}@{p}" for n, p in pairs if pairs.count((n, p)) > 1})
        if dup:
            raise ValueError(f"a case name may appear once per profile, repeated: {dup}")
        return self


def load_suite(path: str | Path) -> Suite:
    path = Path(path)
    data = read_toml(path, "suite")
    try:
        suite = Suite.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(str(path), exc)) from None
    base = path.parent
    resolved = []
    for c in suite.case:
        upd = {}
        for key in ("bundle", "model"):
            v = getattr(c, key)
            if v and not Path(v).is_absolute() and (base / v).exists():
                upd[key] = str(base / v)
        resolved.append(c.model_copy(update=upd))
    return suite.model_copy(update={"case": resolved})
