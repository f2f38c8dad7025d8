"""Host-side ways of reaching a board's agent, all behind the `Transport` interface."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from device_agents.transports.base import Transport
from device_agents.transports.local import LocalTransport

if TYPE_CHECKING:
    from device_agents.inventory import Board

__all__ = ["LocalTransport", "Transport", "open_transport"]


def open_transport(board: Board, **options: Any) -> Transport:
    """A (not yet opened) transport for a farm board; `options` go to the transport's constructor."""
    spec = board.transport
    if spec.kind == "local":
        # an absolute agent_dir places the local agent's store; the default lives under $HILT_CACHE
        cache = spec.agent_dir if spec.agent_dir.startswith("/") else None
        return LocalTransport(board.name, cache=cache, **options)
    if spec.kind == "ssh":
        from device_agents.transports.ssh import SshTransport

        assert spec.host is not None
        return SshTransport(
            board.name,
            host=spec.host,
            port=spec.port or 22,
            user=spec.user,
            key_file=spec.key_file,
            known_hosts=spec.known_hosts,
            accept_new_host_key=spec.accept_new_host_key,
            python=spec.python,
            agent_dir=spec.agent_dir,
            connect_timeout=spec.connect_timeout,
            **options,
        )
    from device_agents.transports.serial import SerialTransport

    assert spec.device is not None
    return SerialTransport(
        board.name, device=spec.device, baud=spec.baud or 115200, login=spec.login, **options
    )
