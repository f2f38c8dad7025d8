"""The root of hilt's exception hierarchy (the rest is in `harness.errors`, which re-exports these).

It lives below every package so `profiles` raises the `ConfigError` that the CLI and every
`except HiltError` catch, without importing `harness`.
"""

from __future__ import annotations


class HiltError(Exception):
    """Base of every error hilt raises on purpose."""


class ConfigError(HiltError):
    """A profile, farm file, schedule or other user-supplied file is malformed."""
