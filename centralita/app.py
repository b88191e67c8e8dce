"""The ASGI application: a route table, background services tied to the ASGI lifespan, and drain.

The runtime, not hypercorn, owns shutdown: hypercorn's trio worker cancels WebSocket handlers at
its graceful timeout without a close frame (clients see 1006). :meth:`App.drain` runs first: new
WebSockets are refused with 503, every drain hook closes what it owns with a proper code (the relay
kicks subscribers with 1001, the call registry stops calls), and it waits, bounded, for open
WebSocket handlers to finish. Only then does the server let hypercorn exit.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Final

import attrs
import trio

from centralita.asgi import Handler, Receive, Scope, Send, refuse_websocket, respond_json

log = logging.getLogger(__name__)

DRAIN_TIMEOUT_S: Final = 10.0

Service = Callable[..., Awaitable[object]]  # started as nursery.start(service): task_status
DrainHook = Callable[[], object]


@attrs.define(eq=False)
class App:
    """ASGI 3 app. Build with routes, services and drain hooks from the composition root."""

    http_routes: dict[str, Handler] = attrs.field(factory=dict)
    # (prefix, handler), tried in order when no exact route matches: for paths with parameters
    # (``/api/call/{id}/hangup``); the handler parses the rest of the path itself.
    http_prefix_routes: list[tuple[str, Handler]] = attrs.field(factory=list)
    websocket_routes: dict[str, Handler] = attrs.field(factory=dict)
    services: list[Service] = attrs.field(factory=list)
    drain_hooks: list[DrainHook] = attrs.field(factory=list)
    drain_timeout_s: float = DRAIN_TIMEOUT_S
    draining: bool = attrs.field(default=False, init=False)
    _open_websockets: int = attrs.field(default=0, init=False)
    _websockets_idle: trio.Event = attrs.field(factory=trio.Event, init=False)
    _drained: trio.Event = attrs.field(factory=trio.Event, init=False)

    def __attrs_post_init__(self) -> None:
        self._websockets_idle.set()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            handler = self.http_routes.get(scope["path"]) or self._by_prefix(scope["path"])
            if handler is None:
                await respond_json(send, 404, {"error": f"no route {scope['path']}"})
                return
            await handler(scope, receive, send)
        elif kind == "websocket":
            await self._websocket(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    def _by_prefix(self, path: str) -> Handler | None:
        for prefix, handler in self.http_prefix_routes:
            if path.startswith(prefix):
                return handler
        return None

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        handler = self.websocket_routes.get(scope["path"])
        if handler is None:
            await receive()
            await refuse_websocket(send, 404, f"no WebSocket route {scope['path']}")
            return
        if self.draining:
            await receive()
            await refuse_websocket(send, 503, "server is shutting down")
            return
        self._open_websockets += 1
        if self._websockets_idle.is_set():
            self._websockets_idle = trio.Event()
        try:
            await handler(scope, receive, send)
        finally:
            self._open_websockets -= 1
            if self._open_websockets == 0:
                self._websockets_idle.set()

    async def drain(self) -> None:
        """Stop taking work, close what we own with proper codes, wait (bounded) for handlers."""
        if self.draining:
            await self._drained.wait()
            return
        self.draining = True
        log.info("draining", extra={"open_websockets": self._open_websockets})
        for hook in self.drain_hooks:
            result = hook()
            if isinstance(result, Awaitable):
                await result
        with trio.move_on_after(self.drain_timeout_s) as scope:
            await self._websockets_idle.wait()
        if scope.cancelled_caught:
            log.warning("drain timed out", extra={"open_websockets": self._open_websockets})
        self._drained.set()

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        message = await receive()
        if message["type"] != "lifespan.startup":
            return
        try:
            async with trio.open_nursery() as nursery:
                for service in self.services:
                    await nursery.start(service)
                await send({"type": "lifespan.startup.complete"})
                message = await receive()  # lifespan.shutdown
                await self.drain()
                nursery.cancel_scope.cancel()
        except Exception as exc:  # a service failed to start or crashed
            log.exception("lifespan failed")
            kind = "lifespan.shutdown.failed" if message["type"] == "lifespan.shutdown" \
                else "lifespan.startup.failed"
            await send({"type": kind, "message": repr(exc)})
            return
        await send({"type": "lifespan.shutdown.complete"})
