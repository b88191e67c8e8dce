"""The two ways RelayFanout's events leave a call: into the in-process hub, or over HTTP."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Final

import attrs
import httpx
import orjson

RELAY_HTTP_TIMEOUT_S: Final = 2.0


class RelayUnavailable(Exception):
    """The external relay refused or failed an event (status and reason in the message)."""


@attrs.define(eq=False)
class InProcessPublisher:
    """Publishes straight into the hub running in this process (``RelayHub.publish``)."""

    publish_now: Callable[[str, Mapping[str, Any]], object]

    async def publish(self, call_id: str, event: Mapping[str, Any]) -> None:
        self.publish_now(call_id, event)


@attrs.define(eq=False)
class HttpRelayPublisher:
    """Publishes to an external relay's ``POST /event`` over a pooled httpx client.

    The client is created (and closed) by the composition root, one per process, so every call
    shares its keep-alive connections.
    """

    client: httpx.AsyncClient
    relay_url: str
    token: str | None = None

    async def publish(self, call_id: str, event: Mapping[str, Any]) -> None:
        headers = {"content-type": "application/json"}
        if self.token:
            headers["authorization"] = f"Bearer {self.token}"
        try:
            response = await self.client.post(f"{self.relay_url.rstrip('/')}/event",
                                              content=orjson.dumps(event), headers=headers,
                                              timeout=RELAY_HTTP_TIMEOUT_S)
        except httpx.HTTPError as exc:
            raise RelayUnavailable(f"relay unreachable: {type(exc).__name__}") from exc
        if response.status_code >= 300:
            raise RelayUnavailable(f"relay answered {response.status_code}: {response.text[:200]}")
