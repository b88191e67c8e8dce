"""What every Telnyx Call Control request builder shares: :class:`ApiRequest` and the input checks.

The checks validate *our* inputs and raise :class:`~protocols.errors.LocalProtocolError` naming the
parameter: a bad E.164 number, codec name, URL scheme, an over-long text and the like.
``client_state`` is taken as bytes or text and base64-encoded here. The builders themselves are in
:mod:`protocols.telnyx_commands`; both are re-exported by :mod:`protocols.telnyx_call_control`.
"""

from __future__ import annotations

import re
import uuid
from typing import Any, Final, Literal, TypeAlias
from urllib.parse import quote

import attrs

from protocols.errors import LocalProtocolError
from protocols.jsonwire import b64encode

__all__ = [
    "BIDIRECTIONAL_CODECS",
    "BIDIRECTIONAL_SAMPLING_RATES",
    "STREAM_AUTH_TOKEN_MAX_CHARS",
    "STREAM_CODECS",
    "STREAM_TRACKS",
    "ApiRequest",
    "ClientState",
    "call_path",
    "check_choice",
    "check_e164",
    "check_int",
    "check_text",
    "check_url",
    "client_state_b64",
    "command_id_text",
    "common_fields",
    "fail",
    "json_body",
    "stream_fields",
    "utf8",
]

#: ``stream_codec``: what Telnyx streams to us ("default" = the call's codec).
STREAM_CODECS: Final = frozenset({"PCMU", "PCMA", "G722", "OPUS", "AMR-WB", "L16", "default"})
#: ``stream_bidirectional_codec`` (rtp mode only; case-sensitive on Telnyx's side).
BIDIRECTIONAL_CODECS: Final = frozenset({"PCMU", "PCMA", "G722", "OPUS", "AMR-WB", "L16"})
BIDIRECTIONAL_SAMPLING_RATES: Final = frozenset({8000, 16000, 22050, 24000, 48000})
STREAM_TRACKS: Final = frozenset({"inbound_track", "outbound_track", "both_tracks"})
STREAM_AUTH_TOKEN_MAX_CHARS: Final = 4000

_E164: Final = re.compile(r"\+[0-9]{8,15}")
_SIP_URI: Final = re.compile(r"sips?:[^\s@]+@[^\s]+", re.IGNORECASE)


@attrs.frozen
class ApiRequest:
    """One REST call to make: ``method`` on ``base_url + path`` with ``json`` as the body."""

    method: Literal["GET", "POST"]
    path: str
    json: dict[str, Any] | None = attrs.field(default=None, hash=False)


ClientState: TypeAlias = bytes | str


def fail(reason: str) -> LocalProtocolError:
    return LocalProtocolError(reason)


def check_choice(name: str, value: Any, choices: frozenset[Any] | tuple[Any, ...]) -> None:
    try:
        known = value in choices and type(value) is not bool
    except TypeError:  # unhashable
        known = False
    if not known:
        raise fail(f"{name} must be one of {sorted(map(str, choices))}, got {value!r:.60}")


def utf8(name: str, value: str) -> bytes:
    try:
        return value.encode("utf-8")
    except UnicodeEncodeError:
        raise fail(f"{name} is not encodable as UTF-8 (lone surrogate?)") from None


def check_text(name: str, value: Any, *, max_chars: int | None = None) -> None:
    if type(value) is not str or not value:
        raise fail(f"{name} must be a non-empty string, got {type(value).__name__}")
    if max_chars is not None and len(value) > max_chars:
        raise fail(f"{name} is {len(value)} characters; Telnyx accepts at most {max_chars}")
    if not value.isascii():
        utf8(name, value)


def check_int(name: str, value: Any, low: int, high: int) -> None:
    if type(value) is not int or not low <= value <= high:
        raise fail(f"{name} must be an int in [{low}, {high}], got {value!r}")


def check_url(name: str, value: Any, schemes: tuple[str, ...]) -> None:
    check_text(name, value)
    if not value.lower().startswith(tuple(f"{s}://" for s in schemes)) or any(c.isspace() for c in value):
        raise fail(f"{name} must be a {'/'.join(schemes)}:// URL, got {value[:60]!r}")


def check_e164(name: str, value: Any, *, allow_sip: bool = False) -> None:
    if type(value) is str and (_E164.fullmatch(value) or (allow_sip and _SIP_URI.fullmatch(value))):
        return
    shape = "'+' then 8-15 digits" + (" or a sip: URI" if allow_sip else "")
    raise fail(f"{name} must be E.164 ({shape}), got {value!r}")


def client_state_b64(value: ClientState | None) -> str | None:
    if value is None:
        return None
    if type(value) is str:
        value = utf8("client_state", value)
    if type(value) is not bytes or not value:
        raise fail("client_state must be non-empty bytes or str")
    return b64encode(value)


def command_id_text(value: str | uuid.UUID | None) -> str | None:
    if isinstance(value, uuid.UUID):
        return str(value)
    if value is not None:
        check_text("command_id", value)
    return value


def call_path(call_control_id: str, verb: str) -> str:
    check_text("call_control_id", call_control_id)
    return f"/calls/{quote(call_control_id, safe=':')}/actions/{verb}"


def json_body(**fields: Any) -> dict[str, Any]:
    return {key.removesuffix("_"): value for key, value in fields.items() if value is not None}


def common_fields(client_state: ClientState | None, command_id: str | uuid.UUID | None) -> dict[str, Any]:
    return json_body(client_state=client_state_b64(client_state), command_id=command_id_text(command_id))


def stream_fields(
    *,
    stream_url: str | None,
    stream_track: str | None,
    stream_codec: str | None,
    stream_bidirectional_mode: str | None,
    stream_bidirectional_codec: str | None,
    stream_bidirectional_sampling_rate: int | None,
    stream_bidirectional_target_legs: str | None,
    stream_auth_token: str | None,
) -> dict[str, Any]:
    fields = json_body(
        stream_track=stream_track,
        stream_codec=stream_codec,
        stream_bidirectional_mode=stream_bidirectional_mode,
        stream_bidirectional_codec=stream_bidirectional_codec,
        stream_bidirectional_sampling_rate=stream_bidirectional_sampling_rate,
        stream_bidirectional_target_legs=stream_bidirectional_target_legs,
        stream_auth_token=stream_auth_token,
    )
    if stream_url is None:
        # stream_track and the mode have defaults and are simply not sent; anything else set
        # without a stream_url is a mistake that would otherwise vanish silently.
        stray = fields.keys() - {"stream_track", "stream_bidirectional_mode"}
        if stray:
            raise fail(f"{sorted(stray)} given without a stream_url")
        return {}
    check_url("stream_url", stream_url, ("wss", "ws"))
    if stream_track is not None:
        check_choice("stream_track", stream_track, STREAM_TRACKS)
    if stream_codec is not None:
        check_choice("stream_codec", stream_codec, STREAM_CODECS)
    if stream_bidirectional_mode is not None:
        check_choice("stream_bidirectional_mode", stream_bidirectional_mode, ("mp3", "rtp"))
    rtp_only = {"stream_bidirectional_codec", "stream_bidirectional_sampling_rate"} & fields.keys()
    if rtp_only and stream_bidirectional_mode != "rtp":
        raise fail(f"{sorted(rtp_only)} need stream_bidirectional_mode='rtp'")
    if stream_bidirectional_codec is not None:
        check_choice("stream_bidirectional_codec", stream_bidirectional_codec, BIDIRECTIONAL_CODECS)
    if stream_bidirectional_sampling_rate is not None:
        check_choice(
            "stream_bidirectional_sampling_rate",
            stream_bidirectional_sampling_rate,
            BIDIRECTIONAL_SAMPLING_RATES,
        )
    if stream_bidirectional_target_legs is not None:
        check_choice(
            "stream_bidirectional_target_legs", stream_bidirectional_target_legs, ("both", "self", "opposite")
        )
    if stream_auth_token is not None:
        check_text("stream_auth_token", stream_auth_token, max_chars=STREAM_AUTH_TOKEN_MAX_CHARS)
    return {"stream_url": stream_url, **fields}

