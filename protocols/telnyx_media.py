"""Telnyx Media Streaming over WebSocket, sans-I/O: JSON text frames <-> frozen attrs messages.

Telnyx dials our ``stream_url`` and sends ``connected``, ``start``, then ``media`` frames
(50/s per call at 20 ms ptime), maybe ``dtmf``/``mark``/``error``, and finally ``stop``
(:data:`TelnyxInbound`). We answer with ``media``, ``mark`` and ``clear``
(:data:`TelnyxOutbound`). The Telnyx emulator in ``bench/`` plays the other side, so both
directions are encoded *and* decoded here:

=====================  ===========================  =================================
direction              we use                       the emulator uses
=====================  ===========================  =================================
Telnyx -> us           :func:`decode`               :func:`encode_inbound`
us -> Telnyx           :func:`encode`               :func:`decode_outbound`
=====================  ===========================  =================================

Reading rules (fact sheet ``/work/shared/protocols/telnyx.md`` §1-2): unknown extra keys are
ignored everywhere; what we rely on is checked strictly (``stream_id``, ``start.call_control_id``,
``media_format``, ``media.track``, a strict-base64 ``media.payload``). Numbers arrive as
JSON ints *or* decimal strings (``"sequence_number": "4"``); both become ``int``. The shapes of
``stop``, ``dtmf``, ``mark`` and ``error`` are UNCONFIRMED upstream, so only their one
meaningful field is required and their ids are optional.

Every failure is a :class:`~protocols.errors.RemoteProtocolError` (the peer sent it) or a
:class:`~protocols.errors.LocalProtocolError` (we built something invalid); nothing else leaves.
"""

from __future__ import annotations

import binascii
from collections.abc import Callable, Mapping
from typing import Any, Final, Generic, Literal, Protocol, TypeAlias, TypeVar, Union

import attrs
import msgspec
import orjson
from cattrs.preconf.orjson import OrjsonConverter, make_converter
from cattrs.strategies import configure_tagged_union

from protocols.errors import (
    CLOSE_INVALID_PAYLOAD,
    CLOSE_PROTOCOL_ERROR,
    CLOSE_UNSUPPORTED_DATA,
    LocalProtocolError,
    RemoteProtocolError,
)

__all__ = [
    "AUTH_TOKEN_HEADER",
    "SUPPORTED_ENCODINGS",
    "Clear",
    "Connected",
    "Dtmf",
    "Error",
    "Mark",
    "MarkOut",
    "Media",
    "MediaFormat",
    "MediaOut",
    "ReorderStatistics",
    "SequenceReorderer",
    "Start",
    "Stop",
    "TelnyxInbound",
    "TelnyxOutbound",
    "Track",
    "UnknownEventError",
    "decode",
    "decode_outbound",
    "encode",
    "encode_inbound",
    "normalise_encoding",
]

#: Upgrade header (and key inside the ``connected`` frame) carrying ``stream_auth_token``.
AUTH_TOKEN_HEADER: Final = "x-telnyx-streaming-auth-token"
#: Encodings our audio path can decode; others (G722, OPUS, AMR-WB ...) parse but are flagged.
SUPPORTED_ENCODINGS: Final = frozenset({"PCMU", "PCMA", "L16"})
#: Largest integer accepted for sequence numbers, chunks, timestamps, rates (int64 max).
MAX_WIRE_INT: Final = 2**63 - 1

Track: TypeAlias = Literal["inbound", "outbound"]


class UnknownEventError(RemoteProtocolError):
    """A well-formed frame whose ``event`` we do not know. Callers may choose to log and skip it."""

    def __init__(self, event: str) -> None:
        super().__init__(
            f"unknown Telnyx media-stream event {event[:40]!r}", close_code=CLOSE_UNSUPPORTED_DATA
        )
        self.event = event


# --------------------------------------------------------------------------- messages


# Spellings seen in Telnyx docs and third-party code, compared case-insensitively after
# dropping an ``audio/`` prefix and ``;parameters`` (telnyx.md §1.3: 'audio/x-mulaw' UNCONFIRMED).
_ENCODING_ALIASES: Final = {
    "pcmu": "PCMU", "mulaw": "PCMU", "x-mulaw": "PCMU", "ulaw": "PCMU", "x-ulaw": "PCMU",
    "g711u": "PCMU", "g711_ulaw": "PCMU", "g711-ulaw": "PCMU",
    "pcma": "PCMA", "alaw": "PCMA", "x-alaw": "PCMA", "g711a": "PCMA", "g711_alaw": "PCMA",
    "g711-alaw": "PCMA",
    "l16": "L16", "linear16": "L16",
}  # fmt: skip


def normalise_encoding(name: str) -> str:
    """Map a ``media_format.encoding`` spelling to ``PCMU``/``PCMA``/``L16``, else upper-case it.

    ``"audio/x-mulaw"`` and ``"pcmu"`` give ``"PCMU"``; ``"opus"`` gives ``"OPUS"`` (parsed, not
    supported: see :attr:`MediaFormat.supported`).
    """
    if not isinstance(name, str):
        raise LocalProtocolError(f"encoding must be a str, not {type(name).__name__}")
    key = name.split(";", 1)[0].strip().lower()
    key = key.removeprefix("audio/")
    return _ENCODING_ALIASES.get(key, key.upper())


@attrs.frozen
class MediaFormat:
    """The audio Telnyx sends us (``start.media_format``). ``encoding`` is normalised on creation."""

    encoding: str = attrs.field(converter=normalise_encoding)
    sample_rate: int
    channels: int = 1

    @property
    def supported(self) -> bool:
        """True for PCMU, PCMA and L16, the encodings the audio path can decode."""
        return self.encoding in SUPPORTED_ENCODINGS


@attrs.frozen(kw_only=True)
class Connected:
    """First frame. ``auth_token`` is the ``stream_auth_token`` if Telnyx repeated it in-band.

    The header of the same name is the primary check (telnyx.md §1.1); the in-frame copy, whose
    exact JSON is UNCONFIRMED, is read from ``connected[...]`` or the top level as a fallback.
    """

    version: str | None = None
    auth_token: str | None = attrs.field(default=None, repr=False)


@attrs.frozen(kw_only=True)
class Start:
    """Sent once before media. ``client_state`` stays raw base64 (validated); see the helpers."""

    stream_id: str
    sequence_number: int
    call_control_id: str
    media_format: MediaFormat
    call_session_id: str | None = None
    user_id: str | None = None
    from_: str | None = None
    to: str | None = None
    client_state: str | None = None
    custom_parameters: dict[str, str] = attrs.field(factory=dict, hash=False)
    tags: tuple[str, ...] = ()

    @property
    def client_state_bytes(self) -> bytes | None:
        """The decoded ``client_state`` (what we passed to dial/answer), or None."""
        if self.client_state is None:
            return None
        return _b64decode(self.client_state, "start.client_state", LocalProtocolError)

    @property
    def client_state_text(self) -> str | None:
        """``client_state`` decoded as UTF-8 text. Raises RemoteProtocolError if it is not."""
        raw = self.client_state_bytes
        if raw is None:
            return None
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise RemoteProtocolError("start.client_state is not UTF-8 text") from None


@attrs.frozen(kw_only=True)
class Media:
    """One chunk of audio: raw codec bytes (no RTP header), already base64-decoded.

    ``chunk``/``timestamp`` are optional because nothing here depends on them (timestamp units
    are UNCONFIRMED); order by ``sequence_number`` with :class:`SequenceReorderer`.
    """

    stream_id: str
    sequence_number: int
    track: Track
    payload: bytes
    chunk: int | None = None
    timestamp: int | None = None


@attrs.frozen(kw_only=True)
class Dtmf:
    """A key press on the call (``dtmf.digit``, confirmed by pipecat; other keys UNCONFIRMED)."""

    digit: str
    stream_id: str | None = None
    sequence_number: int | None = None
    occurred_at: str | None = None


@attrs.frozen(kw_only=True)
class Mark:
    """Telnyx echoing a mark we sent: the audio queued before it finished *or was cleared*."""

    name: str
    stream_id: str | None = None
    sequence_number: int | None = None


def _normalise_code(code: int | str | None) -> int | str | None:
    # Telnyx documents numeric codes (100003) but the wire type is UNCONFIRMED: "100003" -> 100003.
    if isinstance(code, str) and 0 < len(code) <= 18 and code.isascii() and code.isdigit():
        return int(code)
    return code


@attrs.frozen(kw_only=True)
class Error:
    """An error frame (e.g. 100003 malformed_frame, 100005 rate_limit_reached). Shape UNCONFIRMED.

    ``code`` is an int when it is numeric (wire int or digit string), else the string as sent.
    """

    code: int | str | None = attrs.field(default=None, converter=_normalise_code)
    title: str | None = None
    detail: str | None = None
    stream_id: str | None = None
    sequence_number: int | None = None


@attrs.frozen(kw_only=True)
class Stop:
    """Streaming ended (hangup or streaming_stop); Telnyx closes the socket next."""

    stream_id: str | None = None
    sequence_number: int | None = None
    call_control_id: str | None = None
    user_id: str | None = None


@attrs.frozen
class MediaOut:
    """Audio for Telnyx to play: raw bytes in the bidirectional codec (rtp mode), >= 20 ms.

    ``stream_id`` is omitted from the frame unless set (adding it is believed harmless, UNCONFIRMED).
    """

    payload: bytes
    stream_id: str | None = None


@attrs.frozen
class MarkOut:
    """Ask Telnyx to echo ``name`` once the audio sent before it has been played (or cleared)."""

    name: str
    stream_id: str | None = None


@attrs.frozen
class Clear:
    """Stop what is playing and drop queued audio; Telnyx echoes every queued mark at once."""

    stream_id: str | None = None


TelnyxInbound: TypeAlias = Union[Connected, Start, Media, Dtmf, Mark, Error, Stop]
TelnyxOutbound: TypeAlias = Union[MediaOut, MarkOut, Clear]

_INBOUND_EVENTS: Final[dict[str, type]] = {
    "connected": Connected, "start": Start, "media": Media, "dtmf": Dtmf, "mark": Mark,
    "error": Error, "stop": Stop,
}  # fmt: skip
_OUTBOUND_EVENTS: Final[dict[str, type]] = {"media": MediaOut, "mark": MarkOut, "clear": Clear}
_EVENT_OF: Final = {cls: event for event, cls in (*_INBOUND_EVENTS.items(), *_OUTBOUND_EVENTS.items())}

# --------------------------------------------------------------------------- field readers
# Small strict readers shared by the cattrs hooks and the msgspec fast path, so that both paths
# accept exactly the same values and give the same reasons.

_ErrorType = type[RemoteProtocolError] | type[LocalProtocolError]


def _describe(value: object) -> str:
    if isinstance(value, (bool, int, float)) or value is None:
        return f"{type(value).__name__} {str(value)[:24]}"
    return type(value).__name__


def _wire_int(value: object, where: str) -> int:
    """A JSON int or a decimal-digit string in [0, 2**63 - 1]; never bool, float or ' 4'."""
    if type(value) is int:
        if 0 <= value <= MAX_WIRE_INT:
            return value
    elif type(value) is str and 0 < len(value) <= 19 and value.isascii() and value.isdigit():
        number = int(value)
        if number <= MAX_WIRE_INT:
            return number
    raise RemoteProtocolError(
        f"{where}: expected a non-negative integer or decimal string (< 2**63), got {_describe(value)}"
    )


def _opt_wire_int(value: object, where: str) -> int | None:
    return None if value is None else _wire_int(value, where)


def _text(value: object, where: str) -> str:
    if type(value) is str and value:
        return value
    if value is None:
        raise RemoteProtocolError(f"{where} is missing")
    raise RemoteProtocolError(f"{where}: expected a non-empty string, got {_describe(value)}")


def _opt_text(value: object, where: str) -> str | None:
    if value is None:
        return None
    if type(value) is str:
        return value
    raise RemoteProtocolError(f"{where}: expected a string or null, got {_describe(value)}")


def _section(frame: Mapping[str, Any], key: str, *, required: bool = True) -> Mapping[str, Any]:
    value = frame.get(key)
    if type(value) is dict:
        return value
    if value is None and not required:
        return {}
    if value is None:
        raise RemoteProtocolError(f"'{key}' object is missing")
    raise RemoteProtocolError(f"{key}: expected an object, got {_describe(value)}")


def _b64decode(value: object, where: str, error: _ErrorType = RemoteProtocolError) -> bytes:
    """Strict standard base64 (padding required, no whitespace, no url-safe alphabet)."""
    if type(value) is not str:
        raise error(f"{where}: expected a base64 string, got {_describe(value)}")
    try:
        return binascii.a2b_base64(value, strict_mode=True)
    except (binascii.Error, ValueError) as exc:  # ValueError: non-ASCII str
        raise error(f"{where}: invalid base64 ({exc})", close_code=CLOSE_INVALID_PAYLOAD) from None


def _b64encode(data: bytes) -> str:
    return binascii.b2a_base64(data, newline=False).decode("ascii")


def _track(value: object, where: str) -> Track:
    # 'inbound'/'outbound'; a defensive '_track' suffix strip (telnyx.md §1.4, UNCONFIRMED).
    if type(value) is str:
        name = value.lower().removesuffix("_track")
        if name == "inbound":
            return "inbound"
        if name == "outbound":
            return "outbound"
        raise RemoteProtocolError(f"{where}: expected 'inbound' or 'outbound', got {value[:24]!r}")
    raise RemoteProtocolError(f"{where}: expected a string, got {_describe(value)}")


def _custom_parameters(value: object) -> dict[str, str]:
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
            f"start.custom_parameters: expected an object, got {_describe(value)}"
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


def _tags(value: object) -> tuple[str, ...]:
    if value is None:
        return ()
    if type(value) is list and all(type(tag) is str for tag in value):
        return tuple(value)
    raise RemoteProtocolError(f"start.tags: expected a list of strings, got {_describe(value)}")


def _id_text(frame: Mapping[str, Any], key: str = "stream_id") -> str:
    return _text(frame.get(key), key)


# --------------------------------------------------------------------------- cattrs hooks
# The wire nests each event's body under its own key while the messages are flat, so each class
# has a hand-written hook pair; the converter holds them, the renames ('from' <-> from_) and the
# tagged unions keyed on 'event' (STYLE.md: one converter, built at import).


def _structure_connected(frame: dict[str, Any], _: type) -> Connected:
    inner = frame.get("connected")
    token = inner.get(AUTH_TOKEN_HEADER) if type(inner) is dict else None
    if token is None:
        token = frame.get(AUTH_TOKEN_HEADER)
    return Connected(
        version=_opt_text(frame.get("version"), "version"),
        auth_token=_opt_text(token, AUTH_TOKEN_HEADER),
    )


def _unstructure_connected(msg: Connected) -> dict[str, Any]:
    frame: dict[str, Any] = {}
    if msg.version is not None:
        frame["version"] = msg.version
    if msg.auth_token is not None:
        frame["connected"] = {AUTH_TOKEN_HEADER: msg.auth_token}
    return frame


def _structure_media_format(value: object) -> MediaFormat:
    if type(value) is not dict:
        raise RemoteProtocolError(
            "start.media_format is missing"
            if value is None
            else f"start.media_format: expected an object, got {_describe(value)}"
        )
    channels = value.get("channels")
    media_format = MediaFormat(
        encoding=_text(value.get("encoding"), "start.media_format.encoding"),
        sample_rate=_wire_int(value.get("sample_rate"), "start.media_format.sample_rate"),
        channels=1 if channels is None else _wire_int(channels, "start.media_format.channels"),
    )
    if media_format.sample_rate == 0 or media_format.channels == 0:
        raise RemoteProtocolError("start.media_format: sample_rate and channels must be > 0")
    return media_format


def _structure_start(frame: dict[str, Any], _: type) -> Start:
    body = _section(frame, "start")
    client_state = _opt_text(body.get("client_state"), "start.client_state")
    if client_state is not None:
        _b64decode(client_state, "start.client_state")
    return Start(
        stream_id=_id_text(frame),
        sequence_number=_wire_int(frame.get("sequence_number"), "sequence_number"),
        call_control_id=_text(body.get("call_control_id"), "start.call_control_id"),
        media_format=_structure_media_format(body.get("media_format")),
        call_session_id=_opt_text(body.get("call_session_id"), "start.call_session_id"),
        user_id=_opt_text(body.get("user_id"), "start.user_id"),
        from_=_opt_text(body.get("from"), "start.from"),
        to=_opt_text(body.get("to"), "start.to"),
        client_state=client_state,
        custom_parameters=_custom_parameters(body.get("custom_parameters")),
        tags=_tags(body.get("tags")),
    )


def _unstructure_start(msg: Start) -> dict[str, Any]:
    body: dict[str, Any] = {}
    for key, value in (
        ("user_id", msg.user_id),
        ("call_control_id", msg.call_control_id),
        ("call_session_id", msg.call_session_id),
        ("from", msg.from_),
        ("to", msg.to),
        ("tags", list(msg.tags) or None),
        ("client_state", msg.client_state),
        ("custom_parameters", dict(msg.custom_parameters) or None),
    ):
        if value is not None:
            body[key] = value
    fmt = msg.media_format
    body["media_format"] = {
        "encoding": fmt.encoding,
        "sample_rate": fmt.sample_rate,
        "channels": fmt.channels,
    }
    return {"sequence_number": str(msg.sequence_number), "stream_id": msg.stream_id, "start": body}


def _structure_media(frame: dict[str, Any], _: type) -> Media:
    body = _section(frame, "media")
    return Media(
        stream_id=_id_text(frame),
        sequence_number=_wire_int(frame.get("sequence_number"), "sequence_number"),
        track=_track(body.get("track"), "media.track"),
        payload=_b64decode(body.get("payload"), "media.payload"),
        chunk=_opt_wire_int(body.get("chunk"), "media.chunk"),
        timestamp=_opt_wire_int(body.get("timestamp"), "media.timestamp"),
    )


def _unstructure_media(msg: Media) -> dict[str, Any]:
    body: dict[str, Any] = {"track": msg.track}
    if msg.chunk is not None:
        body["chunk"] = str(msg.chunk)
    if msg.timestamp is not None:
        body["timestamp"] = str(msg.timestamp)
    body["payload"] = _b64encode(msg.payload)
    return {"sequence_number": str(msg.sequence_number), "stream_id": msg.stream_id, "media": body}


def _common_ids(frame: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "stream_id": _opt_text(frame.get("stream_id"), "stream_id"),
        "sequence_number": _opt_wire_int(frame.get("sequence_number"), "sequence_number"),
    }


def _unstructure_ids(msg: Dtmf | Mark | Error | Stop) -> dict[str, Any]:
    frame: dict[str, Any] = {}
    if msg.stream_id is not None:
        frame["stream_id"] = msg.stream_id
    if msg.sequence_number is not None:
        frame["sequence_number"] = str(msg.sequence_number)
    return frame


def _structure_dtmf(frame: dict[str, Any], _: type) -> Dtmf:
    digit = _section(frame, "dtmf").get("digit")
    if type(digit) is int and 0 <= digit <= 9:  # tolerate a numeric digit
        digit = str(digit)
    return Dtmf(
        digit=_text(digit, "dtmf.digit"),
        occurred_at=_opt_text(frame.get("occurred_at"), "occurred_at"),
        **_common_ids(frame),
    )


def _unstructure_dtmf(msg: Dtmf) -> dict[str, Any]:
    frame = _unstructure_ids(msg)
    if msg.occurred_at is not None:
        frame["occurred_at"] = msg.occurred_at
    frame["dtmf"] = {"digit": msg.digit}
    return frame


def _structure_mark(frame: dict[str, Any], _: type) -> Mark:
    name = _section(frame, "mark").get("name")
    return Mark(name=_text(name, "mark.name"), **_common_ids(frame))


def _unstructure_mark(msg: Mark) -> dict[str, Any]:
    return {**_unstructure_ids(msg), "mark": {"name": msg.name}}


def _structure_error(frame: dict[str, Any], _: type) -> Error:
    # Nesting is UNCONFIRMED: 'payload', then 'error', then the frame itself.
    body = frame.get("payload")
    if type(body) is not dict:
        body = frame.get("error")
    if type(body) is not dict:
        body = frame
    code = body.get("code")
    if not (code is None or type(code) is str or type(code) is int):
        raise RemoteProtocolError(f"error.code: expected an int or string, got {_describe(code)}")
    return Error(
        code=code,
        title=_opt_text(body.get("title"), "error.title"),
        detail=_opt_text(body.get("detail"), "error.detail"),
        **_common_ids(frame),
    )


def _unstructure_error(msg: Error) -> dict[str, Any]:
    body = {
        key: value
        for key, value in (("code", msg.code), ("title", msg.title), ("detail", msg.detail))
        if value is not None
    }
    return {**_unstructure_ids(msg), "payload": body}


def _structure_stop(frame: dict[str, Any], _: type) -> Stop:
    body = _section(frame, "stop", required=False)  # '{}' and missing both seen/possible
    return Stop(
        call_control_id=_opt_text(body.get("call_control_id"), "stop.call_control_id"),
        user_id=_opt_text(body.get("user_id"), "stop.user_id"),
        **_common_ids(frame),
    )


def _unstructure_stop(msg: Stop) -> dict[str, Any]:
    body = {
        key: value
        for key, value in (("user_id", msg.user_id), ("call_control_id", msg.call_control_id))
        if value is not None
    }
    return {**_unstructure_ids(msg), "stop": body}


def _structure_media_out(frame: dict[str, Any], _: type) -> MediaOut:
    payload = _b64decode(_section(frame, "media").get("payload"), "media.payload")
    if not payload:
        raise RemoteProtocolError("media.payload is empty", close_code=CLOSE_INVALID_PAYLOAD)
    return MediaOut(payload, _opt_text(frame.get("stream_id"), "stream_id"))


def _with_stream_id(msg: MediaOut | MarkOut | Clear, frame: dict[str, Any]) -> dict[str, Any]:
    if msg.stream_id is not None:
        frame["stream_id"] = msg.stream_id
    return frame


def _structure_mark_out(frame: dict[str, Any], _: type) -> MarkOut:
    name = _text(_section(frame, "mark").get("name"), "mark.name")
    return MarkOut(name, _opt_text(frame.get("stream_id"), "stream_id"))


def _structure_clear(frame: dict[str, Any], _: type) -> Clear:
    return Clear(_opt_text(frame.get("stream_id"), "stream_id"))


def _build_converter() -> OrjsonConverter:
    converter = make_converter()
    hooks: list[tuple[type, Callable[..., Any], Callable[..., Any]]] = [
        (Connected, _structure_connected, _unstructure_connected),
        (Start, _structure_start, _unstructure_start),
        (Media, _structure_media, _unstructure_media),
        (Dtmf, _structure_dtmf, _unstructure_dtmf),
        (Mark, _structure_mark, _unstructure_mark),
        (Error, _structure_error, _unstructure_error),
        (Stop, _structure_stop, _unstructure_stop),
        (MediaOut, _structure_media_out,
         lambda m: _with_stream_id(m, {"media": {"payload": _b64encode(m.payload)}})),
        (MarkOut, _structure_mark_out, lambda m: _with_stream_id(m, {"mark": {"name": m.name}})),
        (Clear, _structure_clear, lambda m: _with_stream_id(m, {})),
    ]  # fmt: skip
    for cls, structure, unstructure in hooks:
        converter.register_structure_hook(cls, structure)
        converter.register_unstructure_hook(cls, unstructure)
    for union in (TelnyxInbound, TelnyxOutbound):
        configure_tagged_union(union, converter, tag_generator=_EVENT_OF.__getitem__, tag_name="event")
    return converter


_converter: Final = _build_converter()

# --------------------------------------------------------------------------- media fast path
# Why the converter is bypassed for media (`python -m bench.bench_telnyx`, CPython 3.11.7 on AMD
# EPYC, one 20 ms PCMU frame with a 160 B payload, best of 9 x 20k): stdlib json + the converter's
# hook 4.3 us/frame; cattrs-generated wire classes 5.1; orjson + the hook (the converter's own
# path) 3.2; a msgspec Struct (payload base64-decoded in C) + the strict readers + the attrs Media
# 1.8. At 50 frames/s per call that is 90 us/s per call instead of 160. So a media frame goes
# through msgspec first; anything it does not take (other events, every malformed frame) falls
# through to the converter, which stays the one source of truth for errors (a mark frame pays
# 2.7 us including the failed attempt; they are rare). Numbers are typed int | str and ids and
# track go through the same readers as the hooks, so both paths accept exactly the same frames
# with the same results and reasons (tests compare them under hypothesis).


class _MediaBodyWire(msgspec.Struct, gc=False):
    track: str
    payload: bytes
    chunk: int | str | None = None
    timestamp: int | str | None = None


class _MediaWire(msgspec.Struct, tag_field="event", tag="media", gc=False):
    stream_id: str
    sequence_number: int | str
    media: _MediaBodyWire


_media_decoder: Final = msgspec.json.Decoder(_MediaWire)


def _decode_media_fast(text: str | bytes) -> Media | None:
    try:
        wire = _media_decoder.decode(text)
    except (msgspec.MsgspecError, ValueError):  # ValueError: msgspec's UnicodeDecodeError
        return None
    body = wire.media
    chunk = body.chunk
    timestamp = body.timestamp
    return Media(
        stream_id=_text(wire.stream_id, "stream_id"),
        sequence_number=_wire_int(wire.sequence_number, "sequence_number"),
        track=_track(body.track, "media.track"),
        payload=body.payload,
        chunk=None if chunk is None else _wire_int(chunk, "media.chunk"),
        timestamp=None if timestamp is None else _wire_int(timestamp, "media.timestamp"),
    )


# --------------------------------------------------------------------------- codecs

_TEXT_TYPES: Final = (str, bytes, bytearray, memoryview)


def _load_frame(text: str | bytes) -> dict[str, Any]:
    if not isinstance(text, _TEXT_TYPES):
        raise LocalProtocolError(f"decode() takes str or bytes, not {type(text).__name__}")
    try:
        frame = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        utf8 = "UTF-8" in str(exc) or "surrogate" in str(exc)
        raise RemoteProtocolError(
            f"frame is not valid JSON ({str(exc)[:80]})",
            close_code=CLOSE_INVALID_PAYLOAD if utf8 else CLOSE_PROTOCOL_ERROR,
        ) from None
    if type(frame) is not dict:
        raise RemoteProtocolError(f"frame must be a JSON object, got {type(frame).__name__}")
    return frame


def _structure_frame(text: str | bytes, union: Any, events: Mapping[str, type]) -> Any:
    frame = _load_frame(text)
    event = frame.get("event")
    if type(event) is not str:
        raise RemoteProtocolError(
            "frame has no 'event'" if event is None else f"event: expected a string, got {_describe(event)}"
        )
    if event not in events:
        raise UnknownEventError(event)
    try:
        return _converter.structure(frame, union)
    except RemoteProtocolError:
        raise
    except Exception as exc:  # a safety net: the hooks raise RemoteProtocolError themselves
        raise RemoteProtocolError(f"malformed {event!r} frame ({type(exc).__name__})") from exc


def decode(text: str | bytes) -> TelnyxInbound:
    """Parse one frame Telnyx sent us.

    Raises:
        UnknownEventError: a JSON object whose ``event`` we do not know (a RemoteProtocolError).
        RemoteProtocolError: anything else wrong: bad JSON or UTF-8, missing or mistyped fields,
            invalid base64, numbers out of range.
        LocalProtocolError: ``text`` is not str/bytes.
    """
    media = _decode_media_fast(text) if isinstance(text, (str, bytes)) else None
    if media is not None:
        return media
    return _structure_frame(text, TelnyxInbound, _INBOUND_EVENTS)


def decode_outbound(text: str | bytes) -> TelnyxOutbound:
    """Parse one frame we sent to Telnyx (used by the emulator). Errors as in :func:`decode`."""
    return _structure_frame(text, TelnyxOutbound, _OUTBOUND_EVENTS)


def _dumps(frame: dict[str, Any]) -> str:
    # The tagged union appends 'event'; Telnyx (and every log reader) expects it first.
    return orjson.dumps({"event": frame.pop("event"), **frame}).decode("utf-8")


_MEDIA_OUT_HEAD: Final = '{"event":"media","media":{"payload":"'
_MEDIA_OUT_TAIL: Final = '"}}'


def encode(msg: TelnyxOutbound) -> str:
    """Serialise a frame for Telnyx as a JSON text frame.

    ``MediaOut`` without ``stream_id`` (the hot path) is assembled as a string: base64 needs no
    JSON escaping, and it costs 0.32 us for 160 B / 0.91 us for 800 B against 1.18 / 1.92 us
    through the converter and orjson (msgspec's native encoder is on par: 0.31 / 0.80 us).

    Raises:
        LocalProtocolError: not an outbound message, an empty or non-bytes payload, an empty mark.
    """
    cls = type(msg)
    if cls is MediaOut:
        payload = msg.payload  # type: ignore[union-attr]
        if type(payload) is not bytes or not payload:
            raise LocalProtocolError("MediaOut.payload must be non-empty bytes")
        if msg.stream_id is None:
            return _MEDIA_OUT_HEAD + _b64encode(payload) + _MEDIA_OUT_TAIL
    elif cls is MarkOut:
        if type(msg.name) is not str or not msg.name:  # type: ignore[union-attr]
            raise LocalProtocolError("MarkOut.name must be a non-empty string")
    elif cls is not Clear:
        raise LocalProtocolError(f"not a Telnyx outbound message: {cls.__name__}")
    if msg.stream_id is not None and (type(msg.stream_id) is not str or not msg.stream_id):
        raise LocalProtocolError("stream_id must be a non-empty string or None")
    return _dumps(_converter.unstructure(msg, TelnyxOutbound))


def encode_inbound(msg: TelnyxInbound) -> str:
    """Serialise a frame as Telnyx would send it (for the emulator): numbers as strings.

    The result is decoded again before it is returned, so the emulator can only emit frames our
    parser accepts, and only messages in the normal form :func:`decode` produces (``decode(
    encode_inbound(m)) == m``): e.g. ``track="inbound_track"`` is refused rather than rewritten.

    Raises:
        LocalProtocolError: not an inbound message, or one whose fields would not survive decode.
    """
    if type(msg) is Media:
        return _encode_inbound_media(msg)
    if type(msg) not in _INBOUND_EVENTS.values():
        raise LocalProtocolError(f"not a Telnyx inbound message: {type(msg).__name__}")
    try:
        text = _dumps(_converter.unstructure(msg, TelnyxInbound))
        again = _structure_frame(text, TelnyxInbound, _INBOUND_EVENTS)
    except RemoteProtocolError as exc:
        raise LocalProtocolError(f"cannot encode {type(msg).__name__}: {exc.reason}") from None
    except (TypeError, ValueError, AttributeError, orjson.JSONEncodeError) as exc:
        raise LocalProtocolError(f"cannot encode {type(msg).__name__}: {exc}") from None
    if again != msg:
        raise LocalProtocolError(
            f"{type(msg).__name__} is not in normal form (it would decode as {again!r})"
        )
    return text


def _is_wire_int(value: object) -> bool:
    return type(value) is int and 0 <= value <= MAX_WIRE_INT


def _encode_inbound_media(msg: Media) -> str:
    # The emulator sends 50 of these per call per second: checking the normal form field by field
    # costs 1.3 us where encode-then-decode cost 11 us. Same rules as _structure_media.
    if not (
        type(msg.stream_id) is str
        and msg.stream_id
        and _is_wire_int(msg.sequence_number)
        and (msg.track == "inbound" or msg.track == "outbound")
        and type(msg.payload) is bytes
        and (msg.chunk is None or _is_wire_int(msg.chunk))
        and (msg.timestamp is None or _is_wire_int(msg.timestamp))
    ):
        raise LocalProtocolError(f"cannot encode {msg!r}: a field is outside what decode() returns")
    try:
        return _dumps({"event": "media", **_unstructure_media(msg)})
    except orjson.JSONEncodeError as exc:  # e.g. a lone surrogate in stream_id
        raise LocalProtocolError(f"cannot encode Media: {exc}") from None


# --------------------------------------------------------------------------- reordering


class _Sequenced(Protocol):
    @property
    def sequence_number(self) -> int | None: ...


_F = TypeVar("_F", bound=_Sequenced)


@attrs.frozen
class ReorderStatistics:
    """Counters of a :class:`SequenceReorderer` (all since creation)."""

    delivered: int
    lost: int
    duplicate: int
    late: int
    pending: int
    next_sequence_number: int | None


# Recent gaps remembered to tell a 'late' frame from a 'duplicate'; older ones count as duplicates.
_LOST_RANGES_KEPT: Final = 64


@attrs.define(eq=False)
class SequenceReorderer(Generic[_F]):
    """Puts frames back in ``sequence_number`` order (Telnyx does not guarantee order).

    ``push`` frames as they arrive, then ``pop`` until it returns None. A missing number is
    waited for until ``window`` later frames are buffered; then it is counted as lost and
    skipped (``window=0`` never waits: pass-through that still drops late frames). A frame
    whose number was already delivered or is buffered is a *duplicate*; one whose number was
    given up on is *late*; both are dropped and counted. :meth:`flush` releases the rest at
    end of stream.

    Telnyx numbers every frame of a stream (start, media, dtmf, mark, stop) in one sequence, so
    push every sequenced frame, not only media: otherwise each dtmf or mark leaves a gap that
    costs ``window`` frames of delay and counts as a loss. The first frame pushed sets the
    starting number unless ``first`` is given. A real loss delays what follows by up to
    ``window`` frames (3 frames of 20 ms: 60 ms), so keep the window small. Drained with ``pop``
    after each ``push``, the buffer holds fewer than ``window`` frames.
    """

    window: int = attrs.field()
    first: int | None = None
    _pending: dict[int, _F] = attrs.field(factory=dict, init=False)
    _expected: int | None = attrs.field(default=None, init=False)
    _lost_ranges: list[tuple[int, int]] = attrs.field(factory=list, init=False)
    _delivered: int = attrs.field(default=0, init=False)
    _lost: int = attrs.field(default=0, init=False)
    _duplicate: int = attrs.field(default=0, init=False)
    _late: int = attrs.field(default=0, init=False)

    @window.validator
    def _check_window(self, _: attrs.Attribute[int], value: int) -> None:
        if type(value) is not int or value < 0:
            raise LocalProtocolError(f"window must be an int >= 0, got {value!r}")

    def __attrs_post_init__(self) -> None:
        self._expected = self.first

    def push(self, frame: _F) -> None:
        """Add a frame; it becomes poppable once every earlier number is delivered or lost."""
        number = frame.sequence_number
        if type(number) is not int:
            raise LocalProtocolError("SequenceReorderer.push needs a frame with an int sequence_number")
        if self._expected is None:
            self._expected = number
        if number in self._pending:
            self._duplicate += 1
        elif number < self._expected:
            if any(low <= number < high for low, high in self._lost_ranges):
                self._late += 1
            else:
                self._duplicate += 1
        else:
            self._pending[number] = frame

    def pop(self) -> _F | None:
        """The next frame in order, or None if none is ready (waiting for a gap, or empty)."""
        pending = self._pending
        if not pending:
            return None
        expected = self._expected
        assert expected is not None
        frame = pending.pop(expected, None)
        if frame is None:
            if len(pending) < self.window:
                return None
            # 'window' later frames are here: give up on the gap.
            resume = min(pending)
            self._count_lost(expected, resume)
            expected = resume
            frame = pending.pop(resume)
        self._expected = expected + 1
        self._delivered += 1
        return frame

    def flush(self) -> list[_F]:
        """Release every buffered frame in order (end of stream), counting the gaps as lost."""
        out: list[_F] = []
        while self._pending:
            resume = min(self._pending)
            assert self._expected is not None
            self._count_lost(self._expected, resume)
            self._expected = resume
            while (frame := self._pending.pop(self._expected, None)) is not None:
                out.append(frame)
                self._expected += 1
                self._delivered += 1
        return out

    def _count_lost(self, low: int, high: int) -> None:
        if high > low:
            self._lost += high - low
            self._lost_ranges.append((low, high))
            del self._lost_ranges[:-_LOST_RANGES_KEPT]

    def statistics(self) -> ReorderStatistics:
        """A snapshot of the counters."""
        return ReorderStatistics(
            delivered=self._delivered,
            lost=self._lost,
            duplicate=self._duplicate,
            late=self._late,
            pending=len(self._pending),
            next_sequence_number=self._expected,
        )
