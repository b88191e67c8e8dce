"""A trio-websocket client that always closes its TCP stream, also when the server refuses it.

trio-websocket 0.12 leaves the client's socket open in two cases (a ResourceWarning, an error
under ``filterwarnings = error``): when the *server* closes first (``aclose()`` returns early once
a close reason is set) and when the server *rejects* the handshake (``ConnectionRejected`` is
raised from the reader task and nobody closes the stream). Here the stream is opened by us and
closed by us on every path; the rest is trio-websocket's own :class:`WebSocketConnection`.

Errors come out unwrapped (no ExceptionGroup): :class:`trio_websocket.ConnectionRejected` with
``status_code``/``headers``/``body``, :class:`trio_websocket.ConnectionTimeout`, ``OSError``
when nothing listens, and whatever the body of the ``async with`` raised.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from typing import Final
from urllib.parse import urlsplit

import trio
from trio_websocket import ConnectionRejected, ConnectionTimeout, WebSocketConnection
from wsproto import ConnectionType, WSConnection

__all__ = ["CLOSE_TIMEOUT_S", "CONNECT_TIMEOUT_S", "open_ws_client"]

CONNECT_TIMEOUT_S: Final = 5.0
CLOSE_TIMEOUT_S: Final = 2.0


@asynccontextmanager
async def open_ws_client(
    url: str,
    *,
    subprotocols: Iterable[str] | None = None,
    extra_headers: list[tuple[bytes, bytes]] | None = None,
    message_queue_size: int = 1,
    connect_timeout_s: float = CONNECT_TIMEOUT_S,
    close_timeout_s: float = CLOSE_TIMEOUT_S,
) -> AsyncIterator[WebSocketConnection]:
    """Connect to a ``ws://`` URL; on exit close politely (1000, bounded), then close the stream.

    Inside the block the connection may be closed or its stream closed forcefully (an abrupt
    drop): leaving the block copes with both.
    """
    parts = urlsplit(url)
    if parts.scheme != "ws" or parts.hostname is None:
        raise ValueError(f"expected a ws:// URL, got {url!r}")
    port = parts.port or 80
    resource = parts.path or "/"
    if parts.query:
        resource += "?" + parts.query
    host_header = parts.hostname if port == 80 else f"{parts.hostname}:{port}"
    with trio.move_on_after(connect_timeout_s) as connect_scope:
        stream = await trio.open_tcp_stream(parts.hostname, port)
    if connect_scope.cancelled_caught:
        raise ConnectionTimeout
    rejected: list[ConnectionRejected] = []
    body_error: list[BaseException] = []
    try:
        async with trio.open_nursery() as nursery:
            connection = WebSocketConnection(
                stream, WSConnection(ConnectionType.CLIENT), host=host_header, path=resource,
                client_subprotocols=subprotocols, client_extra_headers=extra_headers,
                message_queue_size=message_queue_size,
            )

            async def read() -> None:
                try:
                    await connection._reader_task()  # noqa: SLF001 - as connect_websocket does
                except ConnectionRejected as exc:
                    rejected.append(exc)
                    handshake_scope.cancel()

            nursery.start_soon(read)
            with trio.CancelScope() as handshake_scope:
                with trio.move_on_after(connect_timeout_s) as timeout_scope:
                    await connection._open_handshake.wait()  # noqa: SLF001
            if not rejected and not timeout_scope.cancelled_caught:
                try:
                    yield connection
                except BaseException as exc:  # re-raised below, outside the nursery (no group)
                    body_error.append(exc)
                finally:
                    with trio.CancelScope(shield=True), trio.move_on_after(close_timeout_s):
                        await connection.aclose()
            nursery.cancel_scope.cancel()
    finally:
        await trio.aclose_forcefully(stream)
    if body_error:
        raise body_error[0]
    if rejected:
        raise rejected[0]
    if timeout_scope.cancelled_caught:
        raise ConnectionTimeout
