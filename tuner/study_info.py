"""What a study records about itself (Optuna study user attributes), typed, read and written here only.

`tune` writes these when it opens a study; the report, the demo job and the search space read them
back through `StudyInfo.of`. Studies written before a field existed still load: every field has a
default (`?` for the model and profile, as the report showed them before).
"""

from __future__ import annotations

from typing import Any

import optuna
from pydantic import BaseModel, ConfigDict, Field

from tuner.results import DenseResult


class SiaSpace(BaseModel):
    """Which granularities SIA let the search prune (and how far), from the dense model's horizons.

    Kept as the study attribute `sia_space`; the report says why a granularity was not searched."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    searched: list[str] = Field(default_factory=list)  # what the search was asked to prune
    granularities: list[str] = Field(default_factory=list)  # what SIA allowed
    horizons: dict[str, float] = Field(default_factory=dict)  # granularity -> fraction removable

    def describe(self) -> str:
        """'layer up to 40% removed, head up to 25% removed'."""
        return ", ".join(f"{g} up to {100 * h:.0f}% removed" for g, h in self.horizons.items())

    @property
    def dropped(self) -> list[str]:
        return [g for g in self.searched if g not in self.granularities]


class StudyInfo(BaseModel):
    """The study's own attributes: what was tuned, for which board, how, and its dense baseline."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    model: str = "?"  # the model directory
    profile: str = "?"  # the board profile every trial measured on
    boards: list[str] = Field(default_factory=list)
    objectives: list[str] = Field(default_factory=list)
    task: str | None = None
    space: dict[str, Any] = Field(default_factory=dict)  # tuner.space.SpaceConfig.to_dict()
    criteria: dict[str, list[str]] | None = None  # granularity -> criteria the search chooses from
    command: str = ""  # the `hilt tune` command line that created it
    work_dir: str = ""
    sia_space: SiaSpace | None = None  # with --sia: what SIA left to search
    dense: DenseResult | None = None  # the unpruned model's measurement, once per study

    @classmethod
    def of(cls, study: optuna.Study) -> StudyInfo:
        return cls.model_validate(study.user_attrs)

    @classmethod
    def put(cls, study: optuna.Study, **values: Any) -> None:
        """Validate these fields and write them as the study's attributes (the others are kept)."""
        unknown = set(values) - set(cls.model_fields)
        if unknown:
            raise TypeError(f"not a study attribute: {', '.join(sorted(unknown))}")
        typed = cls.model_validate(values)
        for name, value in typed.model_dump(mode="json", include=set(values)).items():
            study.set_user_attr(name, value)
