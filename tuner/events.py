"""What a running study tells its watchers: one typed event per kind, not a name and a dict.

`tune` and the study emit these; the CLI's progress view, the demo job and the Prometheus hook
dispatch on the type (`match`), so a renamed field is a type error, not a KeyError in a consumer.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

from pydantic import BaseModel, ConfigDict, Field

from tuner.results import TrialResult


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


@dataclass(frozen=True)
class TuneEvent:
    """Base of every event; `outcome` names it in metrics labels and logs."""

    outcome: ClassVar[str] = "event"


@dataclass(frozen=True)
class Step(TuneEvent):
    """A trial (or the dense baseline, `trial=None`) started a step: 'compiling for rpi4'."""

    trial: int | None
    step: str
    outcome: ClassVar[str] = "step"

    @property
    def label(self) -> str:
        return "dense" if self.trial is None else str(self.trial)


@dataclass(frozen=True)
class TrialStarted(TuneEvent):
    trial: int
    outcome: ClassVar[str] = "started"


@dataclass(frozen=True)
class TrialRejected(TuneEvent):
    """Refused before anything was built (bad schedule, SIA's horizon); counts as finished."""

    trial: int
    reason: str
    outcome: ClassVar[str] = "rejected"


@dataclass(frozen=True)
class TrialFailed(TuneEvent):
    """A step failed; the trial does not count and the study goes on."""

    trial: int
    reason: str
    outcome: ClassVar[str] = "failed"


@dataclass(frozen=True)
class TrialCompleted(TuneEvent):
    trial: int
    values: list[float]  # the objective values, in the study's objective order
    result: TrialResult
    outcome: ClassVar[str] = "completed"


@dataclass(frozen=True)
class SiaSpaceChosen(TuneEvent):
    """Once per run with `--sia`: the search space SIA left on the dense model."""

    space: SiaSpace
    outcome: ClassVar[str] = "sia_space"


AnyTuneEvent = Step | TrialStarted | TrialRejected | TrialFailed | TrialCompleted | SiaSpaceChosen
OnEvent = Callable[[TuneEvent], None]


def ignore(_event: TuneEvent) -> None:
    """The default watcher: nobody is listening."""
