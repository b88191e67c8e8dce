"""Relay routes: ``GET /health``, ``POST /event``, ``WS /ws?callId=…[&since=N]``, ``GET /metrics``.

Seed-compatible (``../shared/seeds/003_…``): same paths, bodies, 1 MB limit and last-50 backlog.
Added: ``seq``/``ts`` on every delivered event, resume with ``since``, the ``*`` firehose, bounded
subscriber queues (slow subscriber → 1013), optional bearer-token auth, clear 4xx refusals.

Subscribers (``/ws``) normally never reach ASGI: :class:`RelaySubscribers` is a
:class:`~centralita.front_door.SocketRoute`, so the front door hands it the upgraded socket and
:class:`~centralita.fanout_socket.FanoutWriter` serves it. The ASGI handler remains for upgrades
that reach hypercorn anyway (one on a reused keep-alive connection, or the app served without the
front door); both paths share the checks and refusals.
"""

from __future__ import annotations

import hmac
import logging

import attrs
import trio

from centralita.asgi import (BodyTooLarge, ClientGone, Receive, Scope, Send, bearer_token,
                             query_params, read_body, refuse_websocket, respond_json,
                             respond_text)
from centralita.fanout_socket import FanoutWriter
from centralita.front_door import WebSocketUpgrade
from centralita.relay_hub import RelayHub, Subscription
from protocols.errors import RemoteProtocolError
from protocols.relay import parse_event_body

log = logging.getLogger(__name__)


@attrs.frozen
class Refusal:
    """Why a subscription is refused at the handshake: an HTTP status and a reason."""

    status: int
    reason: str


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
    #: ``WS /ws?callId=…[&since=N]``: mount this as the WebSocket route.
    subscribe: RelaySubscribers = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self.subscribe = RelaySubscribers(self)

    def _authorised(self, scope: Scope) -> bool:
        if self.token is None:
            return True
        offered = bearer_token(scope)
        if offered is None and scope["type"] == "websocket":
            offered = query_params(scope).get("token")
        return offered is not None and hmac.compare_digest(offered.encode(), self.token.encode())

    def check_subscription(self, scope: Scope) -> tuple[str, int | None] | Refusal:
        """``(call_id, since)`` for an acceptable subscription, else why not."""
        params = query_params(scope)
        call_id = params.get("callId", "")
        if not call_id:
            return Refusal(400, "callId query parameter is required and non-empty")
        since: int | None = None
        if "since" in params:
            raw = params["since"]
            if not raw.isdigit():
                return Refusal(400, "since must be a non-negative integer")
            since = int(raw)
        if not self._authorised(scope):
            return Refusal(401, "missing or wrong token")
        return call_id, since

    def count_garbage(self) -> None:
        self.garbage_frames_total += 1

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


@attrs.define(eq=False)
class RelaySubscribers:
    """``WS /ws?callId=…[&since=N]``: a socket route (fast path) with an ASGI fallback.

    Refusals, before the handshake completes: 400 for a missing/empty ``callId`` or a bad
    ``since``, 401 for a wrong token, 503 while draining (the front door, or ``App``).
    """

    routes: RelayRoutes
    fanout: FanoutWriter = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self.fanout = FanoutWriter(self.routes.hub, on_garbage=self.routes.count_garbage)

    # -- the fast path: the front door hands us the socket ------------------------------------
    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        await self.fanout.run(task_status=task_status)

    async def serve_upgrade(self, upgrade: WebSocketUpgrade) -> None:
        checked = self.routes.check_subscription(upgrade.scope)
        if isinstance(checked, Refusal):
            await upgrade.refuse(checked.status, checked.reason)
            return
        call_id, since = checked
        await upgrade.accept()
        await self.fanout.serve(upgrade.sock, call_id, since, upgrade.received)

    # -- the ASGI fallback --------------------------------------------------------------------
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        first = await receive()
        if first["type"] != "websocket.connect":
            return
        checked = self.routes.check_subscription(scope)
        if isinstance(checked, Refusal):
            await refuse_websocket(send, checked.status, checked.reason)
            return
        call_id, since = checked
        await send({"type": "websocket.accept"})
        sub = self.routes.hub.subscribe(call_id, since)
        try:
            await self._pump(sub, receive, send)
        finally:
            self.routes.hub.unsubscribe(sub)

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
                    await send({"type": "websocket.send", "text": frame.text})
            nursery.cancel_scope.cancel()

    async def _drain_client(self, receive: Receive, scope: trio.CancelScope) -> None:
        """Subscribers have nothing to say: count and ignore frames, stop on disconnect."""
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                scope.cancel()
                return
            self.routes.count_garbage()
