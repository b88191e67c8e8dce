"""Call control's request and response helpers: URLs, the initiate body, errors, the 503 mount.

Pure functions and tiny ASGI helpers shared by :mod:`centralita.routes_calls` (which re-exports
the public ones).
"""

from __future__ import annotations

import re
from typing import Any, Final
from urllib.parse import urlsplit, urlunsplit

from actors.telnyx_control import TelnyxApiError, TelnyxError, TelnyxUnreachable
from centralita.app import App
from centralita.asgi import Handler, Receive, Scope, Send, respond_json

__all__ = [
    "NOMBRE_MAX_CHARS",
    "STREAM_PATH",
    "WEBHOOK_PATH",
    "headers_of",
    "method_not_allowed",
    "mount_disabled",
    "stream_url_for",
    "telnyx_error_body",
    "validate_initiate",
    "webhook_url_for",
]

NOMBRE_MAX_CHARS: Final = 100
STREAM_PATH: Final = "/stream/media"
WEBHOOK_PATH: Final = "/webhooks/telnyx"
_TELEFONO: Final = re.compile(r"\+[0-9]{8,15}")


def stream_url_for(webhook_base_url: str) -> str:
    """``WEBHOOK_BASE_URL`` → the ``wss://…/stream/media`` URL Telnyx connects to.

    ``https`` becomes ``wss`` and ``http`` becomes ``ws``.

    Raises:
        ValueError: not an http(s) URL with a host.
    """
    parts = urlsplit(webhook_base_url.strip())
    scheme = {"https": "wss", "http": "ws", "wss": "wss", "ws": "ws"}.get(parts.scheme.lower())
    if scheme is None or not parts.netloc:
        raise ValueError(f"WEBHOOK_BASE_URL must be an http(s) URL, got {webhook_base_url!r}")
    return urlunsplit((scheme, parts.netloc, parts.path.rstrip("/") + STREAM_PATH, "", ""))


def webhook_url_for(webhook_base_url: str) -> str:
    parts = urlsplit(webhook_base_url.strip())
    return urlunsplit((parts.scheme, parts.netloc, parts.path.rstrip("/") + WEBHOOK_PATH, "", ""))


def validate_initiate(body: object) -> tuple[dict[str, str], str, str]:
    """Check ``{"nombre", "telefono"}``; returns (field errors, nombre, telefono)."""
    errors: dict[str, str] = {}
    if not isinstance(body, dict):
        return {"body": "must be a JSON object with nombre and telefono"}, "", ""
    nombre, telefono = body.get("nombre"), body.get("telefono")
    if not isinstance(nombre, str) or not nombre.strip():
        errors["nombre"] = "required: a non-empty string"
    elif len(nombre.strip()) > NOMBRE_MAX_CHARS:
        errors["nombre"] = f"at most {NOMBRE_MAX_CHARS} characters"
    elif not nombre.strip().isprintable():
        errors["nombre"] = "must be printable text (no control characters)"
    if not isinstance(telefono, str) or not telefono:
        errors["telefono"] = "required: an E.164 number such as +573001234567"
    elif not _TELEFONO.fullmatch(telefono):
        errors["telefono"] = "must be E.164: '+' then 8 to 15 digits, e.g. +573001234567"
    if errors:
        return errors, "", ""
    assert isinstance(nombre, str) and isinstance(telefono, str)
    return {}, nombre.strip(), telefono


def headers_of(scope: Scope) -> dict[str, str]:
    return {bytes(k).decode("latin-1"): bytes(v).decode("latin-1")
            for k, v in scope.get("headers", ())}


async def method_not_allowed(send: Send, allowed: str) -> None:
    await respond_json(send, 405, {"error": f"use {allowed}"},
                       extra_headers=[(b"allow", allowed.encode())])


def telnyx_error_body(exc: TelnyxError) -> dict[str, Any]:
    if isinstance(exc, TelnyxApiError):
        return {"error": "telnyx", "code": exc.code, "detail": exc.detail}
    if isinstance(exc, TelnyxUnreachable):
        return {"error": "telnyx_unreachable", "code": None, "detail": str(exc)}
    return {"error": "telnyx", "code": None, "detail": str(exc)}


def mount_disabled(app: App, reason: str) -> None:
    """Call control is off: ``/api/*`` and the webhook answer 503 with ``reason``."""

    async def unavailable(scope: Scope, receive: Receive, send: Send) -> None:
        await respond_json(send, 503, {"error": reason})

    handler: Handler = unavailable
    app.http_prefix_routes.append(("/api/", handler))
    app.http_routes[WEBHOOK_PATH] = handler
