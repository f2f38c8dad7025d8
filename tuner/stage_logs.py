"""A trial's stage logs: the cascade's own `StageLog` plus the SIA slack the tuner checked it with.

Kept as models from the prune step to the report; JSON only in the prune cache (`stage_log.json`)
and the trial's `stage_logs` attribute, and read back through `read_stage_logs`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from harness.prune.cascade import StageLog


class TrialStageLog(StageLog):
    """One cascade stage as a trial ran it (or found it in the prune cache)."""

    sia_violation: float = -1.0  # worst SIA violation up to this stage (<= 0: within the horizon)

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(self.model_dump(mode="json"), indent=2))

    @classmethod
    def load(cls, path: Path) -> TrialStageLog:
        return cls.model_validate(json.loads(path.read_text()))


def read_stage_logs(raw: list[dict[str, Any]] | None) -> list[TrialStageLog]:
    """A trial's `stage_logs` attribute as models (a log written without `sia_violation` reads as -1)."""
    return [TrialStageLog.model_validate(x) for x in raw or []]


def stage_logs_attr(logs: list[TrialStageLog]) -> list[dict[str, Any]]:
    """The JSON form Optuna stores as the trial's `stage_logs` attribute."""
    return [log.model_dump(mode="json") for log in logs]
