"""A trio-websocket client connection that is closed properly on every path.

The only place that knows trio-websocket 0.12's client quirks; actors open sockets through
:func:`open_ws_client` and never touch the library's internals themselves:

* When the *server* closes first, ``WebSocketConnection.aclose()`` returns early without closing
  the TCP stream (its ``_aclose`` bails out once a close reason is set), and a rejected handshake
  never hands the connection (or its stream) back at all. Either way the socket is left to the
  garbage collector. Here the TCP stream is opened by us, so we can always close it.
* Since trio 0.25 every error leaving a nursery is an ExceptionGroup. The library's reader task
  lives in a nursery of ours, so its `ConnectionRejected`, and whatever the caller's block raises,
  would come out wrapped; they are unwrapped here so callers can ``except ConnectionRejected``.
* ``open_websocket_url``'s connect timeout does not cover a server that accepts TCP and then never
  answers the upgrade (the reader task keeps its nursery open); here the whole connect is bounded.
* A cancelled block cannot read the server's close reply (the reader task was cancelled with it),
  so waiting for it would only burn the cleanup budget: the close frame is sent and the socket is
  closed after a short grace.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Final
from urllib.parse import urlsplit

import trio
from trio_websocket import (
    ConnectionTimeout,
    HandshakeError,
    WebSocketConnection,
    wrap_client_stream,
)

from supervisor import cleanup_scope

__all__ = ["abort_ws", "open_ws_client"]

#: After a cancellation, how long the close frame may take to go out (no reply can be read).
CLOSE_GRACE_AFTER_CANCEL_S: Final = 0.1


@asynccontextmanager
async def open_ws_client(
    url: str,
    *,
    extra_headers: Sequence[tuple[bytes, bytes]] = (),
    connect_timeout_s: float,
    close_timeout_s: float,
    message_queue_size: int = 1,
    ssl_context: ssl.SSLContext | None = None,
) -> AsyncIterator[WebSocketConnection]:
    """Connect to ``url`` (``ws:`` or ``wss:``) and yield the open connection.

    On the way out, a connection the block left open is closed politely (close frame, wait for the
    reply, at most ``close_timeout_s``, shielded so it also runs when the block was cancelled), and
    the TCP stream is closed in every case.

    Raises:
      ConnectionRejected: the server refused the upgrade (``status_code``, ``headers``, ``body``).
      ConnectionTimeout: no upgrade within ``connect_timeout_s``.
      HandshakeError: the TCP or TLS connection failed (the OSError is its ``__cause__``).
      ValueError: not a ``ws:``/``wss:`` URL.
      Whatever the block raises, unwrapped from trio's ExceptionGroup when it is the only error.
    """
    host, port, resource, tls = _split(url, ssl_context)
    host_header = host if port in (80, 443) else f"{host}:{port}"
    stream: trio.SocketStream | trio.SSLStream[trio.SocketStream] | None = None
    try:
        async with trio.open_nursery() as nursery:  # hosts trio-websocket's reader task
            ws: WebSocketConnection | None = None
            with trio.move_on_after(connect_timeout_s):
                try:
                    if tls is None:
                        stream = await trio.open_tcp_stream(host, port)
                    else:
                        stream = await trio.open_ssl_over_tcp_stream(
                            host, port, ssl_context=tls, https_compatible=True
                        )
                except OSError as exc:
                    raise HandshakeError(f"cannot connect to {host_header}: {exc}") from exc
                ws = await wrap_client_stream(
                    nursery, stream, host_header, resource,
                    extra_headers=list(extra_headers), message_queue_size=message_queue_size,
                )
            if ws is None:
                raise ConnectionTimeout(f"no WebSocket upgrade within {connect_timeout_s:g}s")
            try:
                yield ws
            except BaseException as exc:
                if is_cancellation(exc) and ws.closed is None:
                    with cleanup_scope(CLOSE_GRACE_AFTER_CANCEL_S):
                        await ws.aclose()
                raise
            finally:
                if ws.closed is None:
                    with cleanup_scope(close_timeout_s):
                        await ws.aclose()
                # The reader task may still wait for the server's TCP FIN; we are done with it.
                nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        raise sole_error(group) from None
    finally:
        if stream is not None:
            await trio.aclose_forcefully(stream)


async def abort_ws(ws: WebSocketConnection) -> None:
    """Close the TCP stream under ``ws`` at once, without a close handshake.

    For a connection that is stuck (a send that cannot complete): a polite close would block on
    the same full socket buffer. trio-websocket then reports the connection closed with 1006.
    """
    await trio.aclose_forcefully(ws._stream)  # noqa: SLF001 - see the module docstring


def _split(url: str, ssl_context: ssl.SSLContext | None) -> tuple[str, int, str, ssl.SSLContext | None]:
    parts = urlsplit(url)
    if parts.scheme not in ("ws", "wss") or not parts.hostname:
        raise ValueError("expected a ws: or wss: URL with a host")
    tls = (ssl_context or ssl.create_default_context()) if parts.scheme == "wss" else None
    port = parts.port or (443 if tls else 80)
    resource = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return parts.hostname, port, resource, tls


def is_cancellation(exc: BaseException) -> bool:
    """True if ``exc`` (or every leaf of an exception group) is trio's Cancelled."""
    if isinstance(exc, BaseExceptionGroup):
        return exc.split(trio.Cancelled)[1] is None
    return isinstance(exc, trio.Cancelled)


def sole_error(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The one real error in ``group`` (Cancelled siblings dropped), else the group itself."""
    leaves: list[BaseException] = []
    pending: list[BaseException] = [group]
    while pending:
        exc = pending.pop()
        if isinstance(exc, BaseExceptionGroup):
            pending.extend(reversed(exc.exceptions))
        else:
            leaves.append(exc)
    real = [exc for exc in leaves if not isinstance(exc, trio.Cancelled)]
    if len(real) == 1:
        return real[0]
    if not real and leaves:
        return leaves[0]  # only cancellation: let it reach the scope that was cancelled
    return group
