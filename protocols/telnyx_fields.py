"""Strict readers of Telnyx media-stream JSON fields, shared by the converter and the fast path.

Telnyx sends numbers as JSON ints *or* decimal strings (``"sequence_number": "4"``); both become
``int`` here, never a bool, a float or ``" 4"``. Ids must be non-empty strings, ``client_state``
strict base64, a track ``inbound`` or ``outbound``. Each reader takes the JSON path it reads
(``where``) and raises :class:`~protocols.errors.RemoteProtocolError` naming it.

The cattrs hooks (:mod:`protocols.telnyx_media_converter`) and the msgspec fast path
(:mod:`protocols.telnyx_media_fast`) go through these same readers, so both accept exactly the
same values and give the same reasons; the Call Control webhooks read their numbers with
:func:`wire_int` too. ``wire_int`` is on the hot path (three calls per media frame): keep it one
function with no calls inside.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final, Literal, TypeAlias

import orjson

from protocols.errors import CLOSE_INVALID_PAYLOAD, LocalProtocolError, RemoteProtocolError
from protocols.jsonwire import b64decode

__all__ = [
    "MAX_WIRE_INT",
    "Track",
    "b64_field",
    "custom_parameters",
    "describe",
    "id_text",
    "is_wire_int",
    "opt_text",
    "opt_wire_int",
    "required_text",
    "section",
    "tags",
    "track",
    "wire_int",
]

#: Largest integer accepted for sequence numbers, chunks, timestamps, rates (int64 max).
MAX_WIRE_INT: Final = 2**63 - 1

Track: TypeAlias = Literal["inbound", "outbound"]

_ErrorType = type[RemoteProtocolError] | type[LocalProtocolError]


def describe(value: object) -> str:
    """The Python type of ``value``, with the value itself for a scalar (``int -1``)."""
    if isinstance(value, (bool, int, float)) or value is None:
        return f"{type(value).__name__} {str(value)[:24]}"
    return type(value).__name__


def wire_int(value: object, where: str) -> int:
    """A JSON int or a decimal-digit string in [0, 2**63 - 1]; never bool, float or ' 4'."""
    if type(value) is int:
        if 0 <= value <= MAX_WIRE_INT:
            return value
    elif type(value) is str and 0 < len(value) <= 19 and value.isascii() and value.isdigit():
        number = int(value)
        if number <= MAX_WIRE_INT:
            return number
    raise RemoteProtocolError(
        f"{where}: expected a non-negative integer or decimal string (< 2**63), got {describe(value)}"
    )


def opt_wire_int(value: object, where: str) -> int | None:
    return None if value is None else wire_int(value, where)


def required_text(value: object, where: str) -> str:
    if type(value) is str and value:
        return value
    if value is None:
        raise RemoteProtocolError(f"{where} is missing")
    raise RemoteProtocolError(f"{where}: expected a non-empty string, got {describe(value)}")


def opt_text(value: object, where: str) -> str | None:
    if value is None:
        return None
    if type(value) is str:
        return value
    raise RemoteProtocolError(f"{where}: expected a string or null, got {describe(value)}")


def section(frame: Mapping[str, Any], key: str, *, required: bool = True) -> Mapping[str, Any]:
    value = frame.get(key)
    if type(value) is dict:
        return value
    if value is None and not required:
        return {}
    if value is None:
        raise RemoteProtocolError(f"'{key}' object is missing")
    raise RemoteProtocolError(f"{key}: expected an object, got {describe(value)}")


def b64_field(value: object, where: str, error: _ErrorType = RemoteProtocolError) -> bytes:
    """Strict standard base64 (padding required, no whitespace, no url-safe alphabet)."""
    if type(value) is not str:
        raise error(f"{where}: expected a base64 string, got {describe(value)}")
    try:
        return b64decode(value)
    except ValueError as exc:  # binascii.Error, or a non-ASCII str
        raise error(f"{where}: invalid base64 ({exc})", close_code=CLOSE_INVALID_PAYLOAD) from None


def track(value: object, where: str) -> Track:
    # 'inbound'/'outbound'; a defensive '_track' suffix strip (telnyx.md §1.4, UNCONFIRMED).
    if type(value) is str:
        name = value.lower().removesuffix("_track")
        if name == "inbound":
            return "inbound"
        if name == "outbound":
            return "outbound"
        raise RemoteProtocolError(f"{where}: expected 'inbound' or 'outbound', got {value[:24]!r}")
    raise RemoteProtocolError(f"{where}: expected a string, got {describe(value)}")


def custom_parameters(value: object) -> dict[str, str]:
    # An object on the WS (telnyx.md §1.3); a [{name, value}] list as sent on streaming_start is
    # accepted too. Non-string values are kept as their JSON text so the type stays dict[str, str].
    if value is None:
        return {}
    if type(value) is dict:
        items = list(value.items())
    elif type(value) is list:
        items = []
        for entry in value:
            if type(entry) is not dict or type(entry.get("name")) is not str:
                raise RemoteProtocolError("start.custom_parameters: list entries need a 'name'")
            items.append((entry["name"], entry.get("value")))
    else:
        raise RemoteProtocolError(
            f"start.custom_parameters: expected an object, got {describe(value)}"
        )
    out = {}
    for key, item in items:
        if type(item) is str:
            out[key] = item
            continue
        try:
            out[key] = orjson.dumps(item).decode("utf-8")
        except orjson.JSONEncodeError:  # nested deeper than orjson writes (255)
            reason = f"start.custom_parameters: value of {key[:40]!r} is nested too deep"
            raise RemoteProtocolError(reason) from None
    return out


def tags(value: object) -> tuple[str, ...]:
    if value is None:
        return ()
    if type(value) is list and all(type(tag) is str for tag in value):
        return tuple(value)
    raise RemoteProtocolError(f"start.tags: expected a list of strings, got {describe(value)}")


def id_text(frame: Mapping[str, Any], key: str = "stream_id") -> str:
    return required_text(frame.get(key), key)


def is_wire_int(value: object) -> bool:
    """Whether :func:`wire_int` would return ``value`` unchanged (an int in range)."""
    return type(value) is int and 0 <= value <= MAX_WIRE_INT
