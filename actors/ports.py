"""The small interfaces actors are written against, so the composition root can plug in sockets.

A port is a ``typing.Protocol``: the ASGI route adapts hypercorn's WebSocket to
:class:`MediaSocket`, the relay hub (or an HTTP client to an external relay) becomes an
:class:`EventPublisher`; tests plug in fakes only at these seams, never inside an actor.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol


class MediaSocket(Protocol):
    """The call's Telnyx media WebSocket, as the actors see it."""

    async def receive(self) -> str | bytes | None:
        """The next frame, or None once the peer has closed or the socket is gone."""

    async def send(self, text: str) -> None:
        """Send one text frame; raises ``trio.BrokenResourceError`` if the socket is gone."""

    async def close(self, code: int, reason: str = "") -> None:
        """Close with a proper code (idempotent; never raises for an already-closed socket)."""


class EventPublisher(Protocol):
    """Where relay events go: the in-process hub, or an external relay's ``POST /event``."""

    async def publish(self, call_id: str, event: Mapping[str, Any]) -> None:
        """Publish one relay event (already in wire shape, ``callId`` included)."""
