"""What a running study tells its watchers: one typed event per kind, not a name and a dict.

`tune` and the study emit these; the CLI's progress view, the demo job and the Prometheus hook
dispatch on the type (`match`), so a renamed field is a type error, not a KeyError in a consumer.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

from tuner.results import TrialResult
from tuner.study_info import SiaSpace


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
