"""Relay routes: ``GET /health``, ``POST /event``, ``WS /ws?callId=…[&since=N]``, ``GET /metrics``.

Seed-compatible (``../shared/seeds/003_…``): same paths, bodies, 1 MB limit and last-50 backlog.
Added: ``seq``/``ts`` on every delivered event, resume with ``since``, the ``*`` firehose, bounded
subscriber queues (slow subscriber → 1013), optional bearer-token auth, clear 4xx refusals.
"""

from __future__ import annotations

import hmac
import logging

import attrs
import trio

from centralita.asgi import (BodyTooLarge, ClientGone, Receive, Scope, Send, bearer_token,
                             query_params, read_body, refuse_websocket, respond_json,
                             respond_text)
from centralita.relay_hub import RelayHub, Subscription
from protocols.errors import RemoteProtocolError
from protocols.relay import parse_event_body

log = logging.getLogger(__name__)


@attrs.define(eq=False)
class RelayRoutes:
    """The relay's ASGI handlers around one :class:`RelayHub`.

    Args:
        hub: where events go and subscribers come from.
        token: when set, publishers need ``Authorization: Bearer <token>`` and subscribers
            ``?token=<token>`` (or the same header).
    """

    hub: RelayHub
    token: str | None = None
    garbage_frames_total: int = 0

    def _authorised(self, scope: Scope) -> bool:
        if self.token is None:
            return True
        offered = bearer_token(scope)
        if offered is None and scope["type"] == "websocket":
            offered = query_params(scope).get("token")
        return offered is not None and hmac.compare_digest(offered.encode(), self.token.encode())

    async def health(self, scope: Scope, receive: Receive, send: Send) -> None:
        await respond_text(send, 200, "ok")

    async def event(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] != "POST":
            await respond_json(send, 405, {"error": "use POST"}, [(b"allow", b"POST")])
            return
        if not self._authorised(scope):
            await respond_json(send, 401, {"error": "missing or wrong bearer token"},
                               [(b"www-authenticate", b"Bearer")])
            return
        try:
            body = await read_body(scope, receive)
        except BodyTooLarge:
            await respond_json(send, 413, {"error": "body over 1 MB (1048576 bytes)"})
            return
        except ClientGone:
            return
        try:
            call_id, event = parse_event_body(body)
        except RemoteProtocolError as exc:
            await respond_json(send, 400, {"error": exc.reason})
            return
        seq = self.hub.publish(call_id, event)
        await respond_json(send, 200, {"ok": True, "callId": call_id, "seq": seq})

    async def subscribe(self, scope: Scope, receive: Receive, send: Send) -> None:
        first = await receive()
        if first["type"] != "websocket.connect":
            return
        params = query_params(scope)
        call_id = params.get("callId", "")
        if not call_id:
            await refuse_websocket(send, 400, "callId query parameter is required and non-empty")
            return
        since: int | None = None
        if "since" in params:
            raw = params["since"]
            if not raw.isdigit():
                await refuse_websocket(send, 400, "since must be a non-negative integer")
                return
            since = int(raw)
        if not self._authorised(scope):
            await refuse_websocket(send, 401, "missing or wrong token")
            return
        await send({"type": "websocket.accept"})
        sub = self.hub.subscribe(call_id, since)
        try:
            await self._pump(sub, receive, send)
        finally:
            self.hub.unsubscribe(sub)

    async def _pump(self, sub: Subscription, receive: Receive, send: Send) -> None:
        """Send queued frames until the hub kicks us or the client leaves."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._drain_client, receive, nursery.cancel_scope)
            while True:
                frames = await sub.next_frames()
                if frames is None:
                    await send({"type": "websocket.close", "code": sub.close_code,
                                "reason": sub.close_reason})
                    break
                for frame in frames:
                    await send({"type": "websocket.send", "text": frame})
            nursery.cancel_scope.cancel()

    async def _drain_client(self, receive: Receive, scope: trio.CancelScope) -> None:
        """Subscribers have nothing to say: count and ignore frames, stop on disconnect."""
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                scope.cancel()
                return
            self.garbage_frames_total += 1
