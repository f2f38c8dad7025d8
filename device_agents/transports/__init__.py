"""Host-side ways of reaching a board's agent, all behind the `Transport` interface.

Each transport module of this package defines its spec beside its class and names it `SPEC`; this
package finds them and unions the specs into `TransportSpec` (discriminated by `kind`), so adding a
transport is adding one file, and an unknown kind is an error naming the known ones.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import TYPE_CHECKING, Annotated, Any, Union

from pydantic import Field, TypeAdapter

from device_agents.transports.base import Transport
from device_agents.transports.local import LocalTransport
from device_agents.transports.spec import TransportSpecBase
from harness.errors import ConfigError

if TYPE_CHECKING:
    from device_agents.inventory import Board

__all__ = ["SPECS", "LocalTransport", "Transport", "TransportSpec", "open_transport", "parse_transport"]


def _discover() -> dict[str, type[TransportSpecBase]]:
    found: dict[str, type[TransportSpecBase]] = {}
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name in ("base", "spec") or info.name.startswith("_"):
            continue
        spec = getattr(importlib.import_module(f"{__name__}.{info.name}"), "SPEC", None)
        if isinstance(spec, type) and issubclass(spec, TransportSpecBase):
            found[spec.model_fields["kind"].default] = spec
    return found


SPECS: dict[str, type[TransportSpecBase]] = _discover()
TransportSpec = Annotated[Union[tuple(SPECS.values())], Field(discriminator="kind")]  # noqa: UP007
_ADAPTER: TypeAdapter[Any] = TypeAdapter(TransportSpec)


def parse_transport(data: dict[str, Any]) -> TransportSpecBase:
    """Validate a transport table against the spec its `kind` names; ValidationError if malformed,
    ConfigError for a kind no transport module defines."""
    kind = data.get("kind")
    if kind not in SPECS:
        raise ConfigError(f"unknown transport kind {kind!r} (known: {', '.join(SPECS)})")
    return _ADAPTER.validate_python(data)


def open_transport(board: Board, **options: Any) -> Transport:
    """A (not yet opened) transport for a farm board; `options` go to the transport's constructor."""
    return board.transport.open(board.name, **options)
