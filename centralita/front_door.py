"""The front door: one listening port, hypercorn for HTTP, and WebSocket routes that take the socket.

Every connection starts here. The front door reads just enough of the first request to decide:

- a WebSocket upgrade (``GET`` with ``Upgrade: websocket``) to a path whose route implements
  :class:`SocketRoute` is handshaken here and the raw socket goes to the route (the relay's
  subscribers: ``centralita.fanout_socket``);
- anything else goes, with the bytes already read, to hypercorn's own trio connection handler
  (:class:`hypercorn.trio.tcp_server.TCPServer`): every HTTP route, keep-alive, and every other
  WebSocket (e.g. ``/stream/media``) behave exactly as under plain hypercorn. The bytes are
  replayed by :class:`ReplayStream`. Deciding needs the first four bytes for most requests
  (anything that is not ``GET``), the request line for other ``GET`` s, and the whole head only
  for a route that takes sockets.

:meth:`FrontDoor.serve` is hypercorn's ``hypercorn.trio.run.worker_serve`` (0.18) with only the
per-connection handler replaced: same lifespan, ``WorkerContext``, shutdown trigger and
``graceful_timeout``; socket routes' :meth:`SocketRoute.run` tasks live around the connection
handlers. It reaches into hypercorn's trio modules, hence the ``<0.19`` pin. No TLS: it
terminates at the proxy in front of us (configured certificates are refused at start-up).

Handshakes follow RFC 6455 §4.2 and refuse like the ASGI route did: a JSON ``{"error": ...}`` body
with the status. No extension is ever negotiated (no permessage-deflate): frames stay byte-identical
for every subscriber. While the app drains, upgrades are refused with 503 (like ``App``).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import socket
import sys
from collections.abc import Awaitable, Callable
from functools import partial
from http import HTTPStatus
from random import randint
from typing import Any, Final, Protocol, runtime_checkable
from urllib.parse import unquote

import attrs
import h11
import orjson
import trio
from hypercorn.config import Config, Sockets
from hypercorn.trio.lifespan import Lifespan
from hypercorn.trio.statsd import StatsdLogger
from hypercorn.trio.tcp_server import TCPServer
from hypercorn.trio.worker_context import WorkerContext
from hypercorn.typing import AppWrapper, ConnectionState, LifespanState
from hypercorn.utils import ShutdownError, raise_shutdown, repr_socket_addr

from centralita.app import App

if sys.version_info < (3, 11):  # pragma: no cover
    from exceptiongroup import BaseExceptionGroup

log = logging.getLogger(__name__)

#: A socket route's request head must fit in this (hypercorn's h11 limit is 16 KiB too).
HEAD_MAX_BYTES: Final = 16_384
#: From accept to a decision (and, for a socket route, to the whole head).
HEAD_TIMEOUT_S: Final = 10.0
WEBSOCKET_GUID: Final = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def websocket_accept(key: bytes) -> bytes:
    """``Sec-WebSocket-Accept`` for a client's ``Sec-WebSocket-Key`` (RFC 6455 §4.2.2)."""
    return base64.b64encode(hashlib.sha1(key + WEBSOCKET_GUID).digest())  # noqa: S324 - RFC


def _tokens(value: bytes) -> set[bytes]:
    return {t.strip().lower() for t in value.split(b",")}


async def _send_all(sock: socket.socket, data: bytes) -> None:
    """Write ``data`` on a non-blocking socket, waiting for room as needed."""
    view = memoryview(data)
    while view:
        try:
            sent = sock.send(view)
        except BlockingIOError:
            await trio.lowlevel.wait_writable(sock)
            continue
        view = view[sent:]
    await trio.lowlevel.checkpoint()


@attrs.define(eq=False)
class WebSocketUpgrade:
    """A validated WebSocket upgrade request, its socket (non-blocking) and what followed the head.

    ``scope`` is ASGI-shaped (``type``, ``path``, ``raw_path``, ``query_string``, ``headers`` with
    lower-case names), so routes share their checks with their ASGI twins. The route answers with
    :meth:`accept` (then owns :attr:`sock` and must close it) or :meth:`refuse`.
    """

    sock: socket.socket
    scope: dict[str, Any]
    key: bytes
    received: bytes = b""

    async def accept(self) -> None:
        """Send ``101 Switching Protocols`` (no subprotocol, no extensions)."""
        await _send_all(self.sock, b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                                   b"Connection: Upgrade\r\nSec-WebSocket-Accept: "
                                   + websocket_accept(self.key) + b"\r\n\r\n")

    async def refuse(self, status: int, reason: str,
                     extra_headers: list[tuple[bytes, bytes]] | None = None) -> None:
        """Answer ``status`` with ``{"error": reason}`` and close the socket."""
        await _refuse(self.sock, status, reason, extra_headers)
        close_socket(self.sock)


@runtime_checkable
class SocketRoute(Protocol):
    """A WebSocket route that serves upgraded sockets itself instead of through ASGI.

    Mounted in ``App.websocket_routes`` like any handler (it is still called as an ASGI app when
    a request reaches it through hypercorn, e.g. an upgrade on a reused keep-alive connection).
    """

    async def run(self, *, task_status: trio.TaskStatus[None] = ...) -> None:
        """Route-wide machinery (e.g. a writer task), started before the first connection."""

    async def serve_upgrade(self, upgrade: WebSocketUpgrade) -> None:
        """Accept or refuse, then serve the socket until it closes."""


async def _refuse(sock: socket.socket, status: int, reason: str,
                  extra_headers: list[tuple[bytes, bytes]] | None = None) -> None:
    body = orjson.dumps({"error": reason})
    head = [b"HTTP/1.1 %d %s" % (status, HTTPStatus(status).phrase.encode()),
            b"content-type: application/json", b"content-length: %d" % len(body),
            b"connection: close"]
    head.extend(name + b": " + value for name, value in extra_headers or ())
    try:
        await _send_all(sock, b"\r\n".join(head) + b"\r\n\r\n" + body)
    except OSError:
        pass  # the client left first


def close_socket(sock: socket.socket) -> None:
    """Close a socket other tasks may be waiting on (idempotent)."""
    if sock.fileno() != -1:
        trio.lowlevel.notify_closing(sock)
        sock.close()


@attrs.define(eq=False)
class ReplayStream(trio.abc.HalfCloseableStream):
    """A socket stream that first gives back bytes someone already read from it.

    What hypercorn's ``TCPServer`` needs of a plain TCP stream: ``receive_some``, ``send_all``,
    ``send_eof``, ``aclose`` and ``socket``; no ``do_handshake``, so it is treated as non-TLS.
    """

    stream: trio.SocketStream
    replay: bytes

    @property
    def socket(self) -> trio.socket.SocketType:
        return self.stream.socket

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        if self.replay:
            await trio.lowlevel.checkpoint()
            if max_bytes is None or max_bytes >= len(self.replay):
                data, self.replay = self.replay, b""
            else:
                data, self.replay = self.replay[:max_bytes], self.replay[max_bytes:]
            return data
        return await self.stream.receive_some(max_bytes)

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self.stream.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.stream.wait_send_all_might_not_block()

    async def send_eof(self) -> None:
        await self.stream.send_eof()

    async def aclose(self) -> None:
        await self.stream.aclose()


_GET: Final = b"GET "


@attrs.frozen
class _Handoff:
    """Not ours: give the connection (and these bytes) to hypercorn."""

    received: bytes


@attrs.frozen
class _Upgrade:
    route: SocketRoute
    request: h11.Request
    path: str
    received: bytes  # after the head


@attrs.define(eq=False)
class FrontDoor:
    """Accepts connections for an :class:`App`; see the module docstring.

    Args:
        app: routes are read from ``app.websocket_routes`` (the :class:`SocketRoute` ones), and
            ``app.draining`` refuses upgrades during shutdown.
    """

    app: App
    _routes: dict[str, SocketRoute] = attrs.field(init=False)
    _open_upgrades: int = attrs.field(default=0, init=False)
    _upgrades_idle: trio.Event = attrs.field(factory=trio.Event, init=False)

    def __attrs_post_init__(self) -> None:
        self._routes = {}
        for path, route in self.app.websocket_routes.items():
            if isinstance(route, SocketRoute):
                self._routes[path] = route
        self._upgrades_idle.set()

    async def wait_upgrades_closed(self, timeout_s: float) -> bool:
        """Wait until every socket-route connection has ended; False if ``timeout_s`` ran out."""
        with trio.move_on_after(timeout_s):
            await self._upgrades_idle.wait()
            return True
        log.warning("socket routes still open after the drain timeout",
                    extra={"open_upgrades": self._open_upgrades})
        return False

    # -- the server ---------------------------------------------------------------------------
    async def serve(self, app: AppWrapper, config: Config, *, sockets: Sockets,
                    shutdown_trigger: Callable[..., Awaitable[None]],
                    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED) -> None:
        """hypercorn's trio ``worker_serve`` with the front door as connection handler.

        ``task_status.started`` receives the bound URLs.
        """
        if sockets.secure_sockets or sockets.quic_sockets:
            raise ValueError("the front door serves plain TCP only: terminate TLS at the proxy")
        config.set_statsd_logger_class(StatsdLogger)
        lifespan_state: LifespanState = {}
        lifespan = Lifespan(app, config, lifespan_state)
        max_requests = None
        if config.max_requests is not None:
            max_requests = config.max_requests + randint(0, config.max_requests_jitter)  # noqa: S311
        context = WorkerContext(max_requests)
        hand_off = partial(TCPServer, app, config, context, ConnectionState(lifespan_state.copy()))

        async with trio.open_nursery() as lifespan_nursery:
            await lifespan_nursery.start(lifespan.handle_lifespan)
            await lifespan.wait_for_startup()

            async with trio.open_nursery() as routes_nursery:
                for route in {id(r): r for r in self._routes.values()}.values():
                    await routes_nursery.start(route.run)

                async with trio.open_nursery() as server_nursery:
                    listeners = []
                    binds = []
                    for sock in sockets.insecure_sockets:
                        listeners.append(trio.SocketListener(trio.socket.from_stdlib_socket(sock)))
                        bind = repr_socket_addr(sock.family, sock.getsockname())
                        binds.append(f"http://{bind}")
                        await config.log.info(f"Running on http://{bind} (CTRL + C to quit)")

                    task_status.started(binds)
                    try:
                        async with trio.open_nursery(strict_exception_groups=True) as nursery:
                            nursery.start_soon(raise_shutdown, shutdown_trigger)
                            nursery.start_soon(raise_shutdown, context.terminate.wait)
                            nursery.start_soon(partial(
                                trio.serve_listeners, partial(self._connection, hand_off),
                                listeners, handler_nursery=server_nursery))
                            await trio.sleep_forever()
                    except BaseExceptionGroup as error:
                        _, other_errors = error.split((ShutdownError, KeyboardInterrupt))
                        if other_errors is not None:
                            raise other_errors from None
                    finally:
                        await context.terminated.set()
                        server_nursery.cancel_scope.deadline = (trio.current_time()
                                                                + config.graceful_timeout)
                routes_nursery.cancel_scope.cancel()

            await lifespan.wait_for_shutdown()
            lifespan_nursery.cancel_scope.cancel()

    # -- one connection -----------------------------------------------------------------------
    async def _connection(self, hand_off: Callable[[trio.abc.Stream], TCPServer],
                          stream: trio.SocketStream) -> None:
        verdict: _Handoff | _Upgrade | None = None
        try:
            with trio.move_on_after(HEAD_TIMEOUT_S):
                verdict = await self._decide(stream)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            verdict = None
        if verdict is None:  # timed out, reset, or a head too large for a socket route
            await trio.aclose_forcefully(stream)
            return
        if isinstance(verdict, _Handoff):
            await hand_off(ReplayStream(stream, verdict.received)).run()
            return
        # Ours from here: the plain socket, non-blocking, without trio's stream around it.
        sock = socket.socket(fileno=stream.socket.detach())
        sock.setblocking(False)
        self._open_upgrades += 1
        if self._upgrades_idle.is_set():
            self._upgrades_idle = trio.Event()
        try:
            await self._upgrade(sock, verdict)
        except OSError:
            pass  # the client went away mid-handshake
        except Exception:  # one connection's bug must not take the listener down
            log.exception("socket route failed", extra={"path": verdict.path})
        finally:
            close_socket(sock)
            self._open_upgrades -= 1
            if self._open_upgrades == 0:
                self._upgrades_idle.set()

    async def _decide(self, stream: trio.SocketStream) -> _Handoff | _Upgrade | None:
        """Read until we know whose connection this is."""
        buffer = b""
        while True:
            data = await stream.receive_some(HEAD_MAX_BYTES)
            if not data:
                return _Handoff(buffer)  # hypercorn sees the EOF and closes
            buffer += data
            if not buffer.startswith(_GET[:len(buffer)]):
                return _Handoff(buffer)
            line_end = buffer.find(b"\n")
            if line_end == -1:
                if len(buffer) > HEAD_MAX_BYTES:
                    return _Handoff(buffer)
                continue
            target = buffer[len(_GET):line_end].rstrip(b"\r").rpartition(b" ")[0]
            raw_path = target.partition(b"?")[0]
            try:
                path = unquote(raw_path.decode("ascii"))
            except UnicodeDecodeError:
                return _Handoff(buffer)
            route = self._routes.get(path)
            if route is None:
                return _Handoff(buffer)
            head_end = buffer.find(b"\r\n\r\n")
            if head_end == -1:
                if len(buffer) > HEAD_MAX_BYTES:
                    return _Handoff(buffer)  # hypercorn answers 431-ish and closes
                continue
            head_end += 4
            parser = h11.Connection(h11.SERVER, max_incomplete_event_size=HEAD_MAX_BYTES)
            parser.receive_data(buffer[:head_end])
            try:
                event = parser.next_event()
            except h11.RemoteProtocolError:
                return _Handoff(buffer)
            if not isinstance(event, h11.Request) or b"websocket" not in _tokens(
                    dict(event.headers).get(b"upgrade", b"")):
                return _Handoff(buffer)
            return _Upgrade(route=route, request=event, path=path, received=buffer[head_end:])

    async def _upgrade(self, sock: socket.socket, verdict: _Upgrade) -> None:
        request = verdict.request
        headers: dict[bytes, bytes] = {}
        for name, value in request.headers:  # repeated headers join, as RFC 9110 allows
            headers[name] = headers[name] + b", " + value if name in headers else value
        if request.http_version != b"1.1" or b"upgrade" not in _tokens(
                headers.get(b"connection", b"")):
            await _refuse(sock, 400, "a WebSocket upgrade needs HTTP/1.1 and Connection: Upgrade")
            return
        if headers.get(b"sec-websocket-version", b"").strip() != b"13":
            await _refuse(sock, 426, "only WebSocket version 13 is supported",
                          [(b"sec-websocket-version", b"13")])
            return
        key = headers.get(b"sec-websocket-key", b"").strip()
        try:
            valid_key = len(base64.b64decode(key, validate=True)) == 16
        except binascii.Error:
            valid_key = False
        if not valid_key:
            await _refuse(sock, 400, "Sec-WebSocket-Key must be 16 bytes in base64")
            return
        if self.app.draining:
            await _refuse(sock, 503, "server is shutting down")
            return
        raw_path, _, query_string = request.target.partition(b"?")
        scope = {"type": "websocket", "path": verdict.path, "raw_path": raw_path,
                 "query_string": query_string, "headers": list(request.headers)}
        await verdict.route.serve_upgrade(
            WebSocketUpgrade(sock=sock, scope=scope, key=key, received=verdict.received))
