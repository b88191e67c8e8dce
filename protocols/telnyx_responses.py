"""Telnyx Call Control REST answers: the typed 2xx bodies and the ``errors`` envelope, both ways.

:func:`decode_dial_response` and :func:`decode_command_response` return the typed result on 2xx
and a :class:`TelnyxApiErrors` **value** otherwise. An API error is a normal, expected outcome
(``90018`` "call has already ended" is routine after a hangup race), not a protocol violation:
the caller inspects ``status``/``codes`` and decides, so it is returned, not raised. Only a body
that breaks the documented shapes raises RemoteProtocolError. The ``encode_*`` functions write the
same bodies for the Telnyx emulator. Re-exported by :mod:`protocols.telnyx_call_control`.
"""

from __future__ import annotations

from typing import Any, Final

import attrs

from protocols.errors import LocalProtocolError, RemoteProtocolError
from protocols.telnyx_rest_json import (
    data_object,
    dumps,
    load_body,
    make_converter,
    normal_form,
    structure,
    unstructure,
)

__all__ = [
    "CALL_HAS_ENDED",
    "ApiError",
    "CommandResult",
    "DialResult",
    "TelnyxApiErrors",
    "decode_api_errors",
    "decode_command_response",
    "decode_dial_response",
    "encode_api_errors",
    "encode_command_result",
    "encode_dial_response",
]

#: Telnyx error code for a command sent to a call that has ended (HTTP 422).
CALL_HAS_ENDED: Final = "90018"


@attrs.frozen(kw_only=True)
class DialResult:
    """``POST /calls`` 200. ``is_alive`` is always false here: dialing is asynchronous."""

    call_control_id: str
    call_leg_id: str | None = None
    call_session_id: str | None = None
    is_alive: bool = False
    record_type: str | None = None
    client_state: bytes | None = None


@attrs.frozen
class CommandResult:
    """A command's 200 body ``{"data": {"result": "ok"}}``."""

    result: str = "ok"

    @property
    def ok(self) -> bool:
        return self.result == "ok"


@attrs.frozen(kw_only=True)
class ApiError:
    """One entry of the ``errors`` envelope. ``code`` is a string on the wire (``"90018"``)."""

    code: str
    title: str | None = None
    detail: str | None = None
    source: dict[str, Any] | None = attrs.field(default=None, hash=False)
    meta: dict[str, Any] | None = attrs.field(default=None, hash=False)


@attrs.frozen(kw_only=True)
class TelnyxApiErrors:
    """A non-2xx answer: the HTTP status and the parsed ``errors`` (possibly empty, e.g. a proxy's
    HTML 502). A value, not an exception: the actor decides (retry, ignore 90018, fail the call)."""

    status: int
    errors: tuple[ApiError, ...] = ()

    @property
    def codes(self) -> tuple[str, ...]:
        return tuple(error.code for error in self.errors)

    @property
    def call_has_ended(self) -> bool:
        """Telnyx said the call is already over (422 / 90018): benign after a hangup race."""
        return CALL_HAS_ENDED in self.codes

    @property
    def retryable(self) -> bool:
        """5xx and 429: resend the identical command (same ``command_id``) per Telnyx's guidance."""
        return self.status >= 500 or self.status == 429

    def describe(self) -> str:
        """A log line: status plus ``code title`` of each error."""
        parts = [f"{e.code} {e.title or ''}".strip() for e in self.errors]
        return f"HTTP {self.status}: " + ("; ".join(parts) or "no error details")


#: The converter for these classes (see :mod:`protocols.telnyx_rest_json`).
_converter: Final = make_converter()


def decode_api_errors(status: int, body: bytes | str) -> TelnyxApiErrors:
    """The ``{"errors": [...]}`` envelope of a non-2xx answer. Tolerant by design: a body that is
    not the envelope (HTML from a proxy, empty) gives no errors rather than an exception, so the
    status still drives the caller's decision."""
    if type(status) is not int:
        raise LocalProtocolError("status must be an int")
    try:
        envelope = load_body(body, "error response")
    except RemoteProtocolError:
        return TelnyxApiErrors(status=status)
    raw = envelope.get("errors")
    if type(raw) is not list:
        return TelnyxApiErrors(status=status)
    errors = []
    for entry in raw:
        if type(entry) is not dict:
            continue
        code = entry.get("code")
        if type(code) is int:  # documented as a string; tolerate a number
            entry = {**entry, "code": str(code)}
        try:
            errors.append(structure(_converter, entry, ApiError, "errors[]"))
        except RemoteProtocolError:
            continue  # a malformed entry must not hide the others
    return TelnyxApiErrors(status=status, errors=tuple(errors))


def decode_dial_response(status: int, body: bytes | str) -> DialResult | TelnyxApiErrors:
    """``POST /calls`` answer: :class:`DialResult` on 2xx, :class:`TelnyxApiErrors` otherwise.

    Raises:
        RemoteProtocolError: a 2xx body without ``data.call_control_id`` (or otherwise garbled).
    """
    if type(status) is not int:
        raise LocalProtocolError("status must be an int")
    if not 200 <= status < 300:
        return decode_api_errors(status, body)
    data = data_object(load_body(body, "dial response"), "dial response")
    return structure(_converter, data, DialResult, "data")


def decode_command_response(status: int, body: bytes | str) -> CommandResult | TelnyxApiErrors:
    """A command's answer: :class:`CommandResult` on 2xx, :class:`TelnyxApiErrors` otherwise.

    Raises:
        RemoteProtocolError: a 2xx body that is not ``{"data": {"result": <str>}}``.
    """
    if type(status) is not int:
        raise LocalProtocolError("status must be an int")
    if not 200 <= status < 300:
        return decode_api_errors(status, body)
    result = data_object(load_body(body, "command response"), "command response").get("result")
    if type(result) is not str:
        raise RemoteProtocolError("command response: data.result must be a string")
    return CommandResult(result)


def encode_dial_response(result: DialResult) -> bytes:
    """The emulator's ``POST /calls`` 200 body."""
    data = unstructure(_converter, result, "DialResult")
    data.setdefault("is_alive", False)
    return normal_form(dumps({"data": data}, "DialResult"), result, lambda b: decode_dial_response(200, b))


def encode_command_result(result: CommandResult = CommandResult()) -> bytes:
    """The emulator's command 200 body, ``{"data":{"result":"ok"}}``."""
    if type(result) is not CommandResult or type(result.result) is not str:
        raise LocalProtocolError("encode_command_result takes a CommandResult with a str result")
    return dumps({"data": {"result": result.result}}, "CommandResult")


def encode_api_errors(errors: TelnyxApiErrors) -> bytes:
    """The emulator's error body, ``{"errors": [{code, title, detail, source, meta}]}``."""
    if type(errors) is not TelnyxApiErrors:
        raise LocalProtocolError(f"not a TelnyxApiErrors: {type(errors).__name__}")
    entries = [unstructure(_converter, e, "ApiError") for e in errors.errors]
    body = dumps({"errors": entries}, "TelnyxApiErrors")
    return normal_form(body, errors, lambda b: decode_api_errors(errors.status, b))
