"""One exception hierarchy for hilt; the CLI turns any of these into one red line and exit 2.

Messages say what is wrong and what to do about it.
"""

from __future__ import annotations


class HiltError(Exception):
    """Base of every error hilt raises on purpose."""


class ConfigError(HiltError):
    """A profile, farm file, schedule or other user-supplied file is malformed."""


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


class NotBuiltError(HiltError):
    """A subcommand exists in the plan but is not built yet."""
