"""One exception hierarchy for hilt; the CLI turns any of these into one red line and exit 2.

Messages say what is wrong and what to do about it. The root (`HiltError`, `ConfigError`) is defined
in `hilt_base.errors`, below `profiles`, so a bad profile raises the same class without `profiles`
importing `harness`; import both from here.
"""

from __future__ import annotations

from hilt_base.errors import ConfigError, HiltError

__all__ = [
    "AgentError",
    "AgentTimeoutError",
    "ArtifactError",
    "BoardBusyError",
    "CompileError",
    "ConfigError",
    "DataError",
    "FarmError",
    "HiltError",
    "HostKeyError",
    "ModelLoadError",
    "ProtocolMismatchError",
    "RemoteError",
    "ScheduleError",
    "TransportError",
    "UnsupportedFamilyError",
]


class ModelLoadError(HiltError):
    """A model directory is missing, incomplete, or of an unsupported family."""


class UnsupportedFamilyError(ModelLoadError):
    """The model's architecture family has no adapter."""


class ScheduleError(ConfigError):
    """A cascade schedule is invalid."""


class DataError(HiltError):
    """Input data (recordings, datasets, tokenised windows) is malformed."""


class CompileError(HiltError):
    """Building a model for a target failed."""


class ArtifactError(HiltError):
    """An artifact bundle is malformed, or its hash does not match."""


class TransportError(HiltError):
    """A board could not be reached, or the line to it failed."""


class AgentError(HiltError):
    """The on-board agent answered with an error."""


class ProtocolMismatchError(AgentError):
    """Host and agent speak different protocol versions."""


class FarmError(HiltError):
    """The emulated board farm cannot be built, started or stopped (host set-up, mirror, state)."""


class HostKeyError(TransportError):
    """An SSH host key is unknown or does not match known_hosts (strict checking refused it)."""


class AgentTimeoutError(TransportError):
    """The agent did not answer a request within its timeout (the line or the agent is dead)."""


class RemoteError(AgentError):
    """The agent answered a typed error; `kind` is its type (e.g. runner_timeout, hash_mismatch)."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(f"agent error {kind}: {message}")
        self.kind = kind


class BoardBusyError(HiltError):
    """The board (or the machine its measurements run on) is held by another measurement: the board
    pool's lease on its machine, or the agent's own bench lock on the board (kind "busy")."""

    kind = "busy"
