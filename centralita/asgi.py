"""Small ASGI building blocks shared by the routes: bodies with a limit, JSON replies, refusals.

Kept framework-free on purpose: the service has a handful of routes and hot paths where a
framework's per-request overhead would show up in the benchmarks.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, Final
from urllib.parse import parse_qsl

import orjson

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Handler = Callable[[Scope, Receive, Send], Awaitable[None]]

MAX_BODY_BYTES: Final = 1_048_576  # the seed relay's express.json({limit: '1mb'})


class BodyTooLarge(Exception):
    """The request body exceeded the route's limit (answer 413)."""


class ClientGone(Exception):
    """The client disconnected before the body was complete."""


def header(scope: Scope, name: bytes) -> bytes | None:
    """First value of a request header (``name`` lower-case), or None."""
    for key, value in scope.get("headers", ()):
        if key == name:
            return bytes(value)
    return None


def query_params(scope: Scope) -> dict[str, str]:
    """Query-string parameters; the last value wins for repeated names."""
    raw = scope.get("query_string", b"").decode("latin-1")
    return dict(parse_qsl(raw, keep_blank_values=True))


def bearer_token(scope: Scope) -> str | None:
    value = header(scope, b"authorization")
    if value is None:
        return None
    scheme, _, token = value.decode("latin-1").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else None


async def read_body(scope: Scope, receive: Receive, limit: int = MAX_BODY_BYTES) -> bytes:
    """Read a whole request body, refusing early when it cannot fit in ``limit`` bytes."""
    declared = header(scope, b"content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


async def respond(send: Send, status: int, body: bytes, content_type: bytes,
                  extra_headers: list[tuple[bytes, bytes]] | None = None) -> None:
    headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]
    if extra_headers:
        headers.extend(extra_headers)
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def respond_json(send: Send, status: int, payload: object,
                       extra_headers: list[tuple[bytes, bytes]] | None = None) -> None:
    await respond(send, status, orjson.dumps(payload), b"application/json", extra_headers)


async def respond_text(send: Send, status: int, text: str) -> None:
    await respond(send, status, text.encode(), b"text/plain; charset=utf-8")


async def refuse_websocket(send: Send, status: int, reason: str) -> None:
    """Refuse a WebSocket handshake with an HTTP status and a JSON reason (ASGI extension)."""
    body = orjson.dumps({"error": reason})
    await send({"type": "websocket.http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "websocket.http.response.body", "body": body})
