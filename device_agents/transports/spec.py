"""What every transport spec shares. Each transport module defines its own spec (a pydantic model
whose `kind` is a literal) beside the transport and names it `SPEC`; the package unions them into
the discriminated `TransportSpec` that farm files and profiles are validated against."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict


class TransportSpecBase(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: str

    def address(self) -> str:
        """Where the board is, for listings."""
        return "this machine"

    def open(self, name: str, **options: Any) -> Any:
        """A (not yet opened) transport to board `name`; `options` go to its constructor."""
        raise NotImplementedError
