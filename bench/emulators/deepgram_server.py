"""What every Deepgram WebSocket emulator does alike: listen on loopback, check the handshake's
credential, refuse a handshake as Deepgram does, note a client's close, and say goodbye to its
clients at shutdown.

Deepgram refuses a handshake with an HTTP status, ``dg-error`` and ``dg-request-id`` headers and
a JSON body (``err_code``, ``err_msg``, ``request_id``); a credential is ``Authorization:
Token|Bearer <key>`` or the subprotocol pair ``["token", key]`` (``protocols.deepgram_options``).
Used by :mod:`bench.emulators.deepgram_listen`; :mod:`bench.emulators.deepgram_speak` still has
its own copy of the same steps.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from typing import Any, Final, Protocol

import orjson
import trio
from trio_websocket import ConnectionClosed, WebSocketConnection, WebSocketRequest, serve_websocket

from protocols.deepgram_close import CLOSE_GOING_AWAY
from protocols.deepgram_options import Credential, parse_auth
from protocols.errors import RemoteProtocolError

__all__ = ["SHUTDOWN_CLOSE_WAIT_S", "ConnectionRecord", "authenticate", "close_at_shutdown",
           "record_client_close", "reject", "serve_loopback"]

#: How long a shutting-down emulator lingers after sending its 1001 close frames.
SHUTDOWN_CLOSE_WAIT_S: Final = 0.05


class ConnectionRecord(Protocol):
    """What an emulator's record of a connection holds about its handshake and its end."""

    request_id: str
    rejected_status: int | None
    rejected_reason: str | None
    ended_by: Any  # each record's own Literal of endings, or None while it lives
    close_code: int | None
    close_reason: str | None
    ended_at: float | None


async def serve_loopback(handler: Callable[[WebSocketRequest], Awaitable[None]], host: str,
                         port: int, path: str, task_status: trio.TaskStatus[str]) -> None:
    """Serve ``handler`` on ``host:port`` (0: any free port); report ``ws://host:port<path>``
    through ``task_status``; serve until cancelled."""
    async with trio.open_nursery() as nursery:
        server = await nursery.start(serve_websocket, handler, host, port, None)
        task_status.started(f"ws://{host}:{server.port}{path}")


async def authenticate(request: WebSocketRequest, record: ConnectionRecord,
                       api_key: str | None) -> Credential | None:
    """The handshake's credential, or None once the handshake was refused with 401 (a missing or
    malformed credential; or a key other than ``api_key``, unless that is None: any key)."""
    authorization = next(
        (value for name, value in request.headers if name.lower() == b"authorization"), None)
    try:
        credential = parse_auth(authorization, request.proposed_subprotocols)
    except RemoteProtocolError as exc:
        await reject(request, record, 401, "INVALID_AUTH", f"Invalid credentials: {exc.reason}")
        return None
    if api_key is not None and not hmac.compare_digest(credential.secret.encode(), api_key.encode()):
        await reject(request, record, 401, "INVALID_AUTH", "Invalid credentials.")
        return None
    return credential


async def reject(request: WebSocketRequest, record: ConnectionRecord, status: int, err_code: str,
                 message: str) -> None:
    """Refuse the handshake as Deepgram does, and record it."""
    record.rejected_status = status
    record.rejected_reason = message
    record.ended_by = "rejected"
    body = orjson.dumps({"err_code": err_code, "err_msg": message, "request_id": record.request_id})
    await request.reject(status, extra_headers=[
        (b"dg-error", message.encode("ascii", "replace")),
        (b"dg-request-id", record.request_id.encode()),
        (b"content-type", b"application/json"),
    ], body=body)


def record_client_close(record: ConnectionRecord, exc: ConnectionClosed) -> None:
    """The client closed the connection (``client_closed``) or dropped it (``client_dropped``, code
    1006: no close frame): note how in ``record``."""
    code = exc.reason.code if exc.reason is not None else 1006
    record.ended_by = "client_dropped" if code == 1006 else "client_closed"
    record.close_code = code
    record.close_reason = exc.reason.reason if exc.reason is not None else None


async def close_at_shutdown(request: WebSocketRequest, record: ConnectionRecord,
                            ws: WebSocketConnection | None) -> None:
    """End a connection's handler: goodbye (1001) if it was accepted and is still open, then close
    the TCP stream. Runs shielded, bounded.

    When the handler was cancelled (``serve`` is shutting down), trio-websocket's reader is being
    cancelled too, so the client's reply cannot be awaited: the close frame is sent and the reply
    given a moment only. trio-websocket leaves the stream open when the peer dropped or we
    rejected, so it is closed here on every path.
    """
    stream = request._connection._stream  # noqa: SLF001 - closed by us, see the docstring
    with trio.CancelScope(shield=True):
        if ws is not None and record.ended_by is None:
            record.ended_by = "server_shutdown"
            record.close_code = CLOSE_GOING_AWAY
            with trio.move_on_after(SHUTDOWN_CLOSE_WAIT_S):
                await ws.aclose(CLOSE_GOING_AWAY, "emulator shutting down")
        record.ended_at = trio.current_time()
        await trio.aclose_forcefully(stream)
