"""The one cattrs converter of the Telnyx media stream: a hand-written hook pair per event.

The wire nests each event's body under its own key while the messages are flat, so each class
has a hand-written hook pair; the converter holds them, the renames ('from' <-> from_) and the
tagged unions keyed on 'event' (STYLE.md: one converter, built at import). Every hook reads
through :mod:`protocols.telnyx_fields`, as the msgspec fast path does.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Final

from cattrs.preconf.orjson import OrjsonConverter, make_converter
from cattrs.strategies import configure_tagged_union

from protocols.errors import CLOSE_INVALID_PAYLOAD, RemoteProtocolError
from protocols.jsonwire import b64encode
from protocols.telnyx_fields import (
    b64_field,
    custom_parameters,
    describe,
    id_text,
    opt_text,
    opt_wire_int,
    required_text,
    section,
    tags,
    track,
    wire_int,
)
from protocols.telnyx_media_messages import (
    AUTH_TOKEN_HEADER,
    EVENT_OF,
    Clear,
    Connected,
    Dtmf,
    Error,
    Mark,
    MarkOut,
    Media,
    MediaFormat,
    MediaOut,
    Start,
    Stop,
    TelnyxInbound,
    TelnyxOutbound,
)

__all__ = ["CONVERTER", "unstructure_media"]


def _structure_connected(frame: dict[str, Any], _: type) -> Connected:
    inner = frame.get("connected")
    token = inner.get(AUTH_TOKEN_HEADER) if type(inner) is dict else None
    if token is None:
        token = frame.get(AUTH_TOKEN_HEADER)
    return Connected(
        version=opt_text(frame.get("version"), "version"),
        auth_token=opt_text(token, AUTH_TOKEN_HEADER),
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
            else f"start.media_format: expected an object, got {describe(value)}"
        )
    channels = value.get("channels")
    media_format = MediaFormat(
        encoding=required_text(value.get("encoding"), "start.media_format.encoding"),
        sample_rate=wire_int(value.get("sample_rate"), "start.media_format.sample_rate"),
        channels=1 if channels is None else wire_int(channels, "start.media_format.channels"),
    )
    if media_format.sample_rate == 0 or media_format.channels == 0:
        raise RemoteProtocolError("start.media_format: sample_rate and channels must be > 0")
    return media_format


def _structure_start(frame: dict[str, Any], _: type) -> Start:
    body = section(frame, "start")
    client_state = opt_text(body.get("client_state"), "start.client_state")
    if client_state is not None:
        b64_field(client_state, "start.client_state")
    return Start(
        stream_id=id_text(frame),
        sequence_number=wire_int(frame.get("sequence_number"), "sequence_number"),
        call_control_id=required_text(body.get("call_control_id"), "start.call_control_id"),
        media_format=_structure_media_format(body.get("media_format")),
        call_session_id=opt_text(body.get("call_session_id"), "start.call_session_id"),
        user_id=opt_text(body.get("user_id"), "start.user_id"),
        from_=opt_text(body.get("from"), "start.from"),
        to=opt_text(body.get("to"), "start.to"),
        client_state=client_state,
        custom_parameters=custom_parameters(body.get("custom_parameters")),
        tags=tags(body.get("tags")),
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
    body = section(frame, "media")
    return Media(
        stream_id=id_text(frame),
        sequence_number=wire_int(frame.get("sequence_number"), "sequence_number"),
        track=track(body.get("track"), "media.track"),
        payload=b64_field(body.get("payload"), "media.payload"),
        chunk=opt_wire_int(body.get("chunk"), "media.chunk"),
        timestamp=opt_wire_int(body.get("timestamp"), "media.timestamp"),
    )


def unstructure_media(msg: Media) -> dict[str, Any]:
    body: dict[str, Any] = {"track": msg.track}
    if msg.chunk is not None:
        body["chunk"] = str(msg.chunk)
    if msg.timestamp is not None:
        body["timestamp"] = str(msg.timestamp)
    body["payload"] = b64encode(msg.payload)
    return {"sequence_number": str(msg.sequence_number), "stream_id": msg.stream_id, "media": body}


def _common_ids(frame: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "stream_id": opt_text(frame.get("stream_id"), "stream_id"),
        "sequence_number": opt_wire_int(frame.get("sequence_number"), "sequence_number"),
    }


def _unstructure_ids(msg: Dtmf | Mark | Error | Stop) -> dict[str, Any]:
    frame: dict[str, Any] = {}
    if msg.stream_id is not None:
        frame["stream_id"] = msg.stream_id
    if msg.sequence_number is not None:
        frame["sequence_number"] = str(msg.sequence_number)
    return frame


def _structure_dtmf(frame: dict[str, Any], _: type) -> Dtmf:
    digit = section(frame, "dtmf").get("digit")
    if type(digit) is int and 0 <= digit <= 9:  # tolerate a numeric digit
        digit = str(digit)
    return Dtmf(
        digit=required_text(digit, "dtmf.digit"),
        occurred_at=opt_text(frame.get("occurred_at"), "occurred_at"),
        **_common_ids(frame),
    )


def _unstructure_dtmf(msg: Dtmf) -> dict[str, Any]:
    frame = _unstructure_ids(msg)
    if msg.occurred_at is not None:
        frame["occurred_at"] = msg.occurred_at
    frame["dtmf"] = {"digit": msg.digit}
    return frame


def _structure_mark(frame: dict[str, Any], _: type) -> Mark:
    name = section(frame, "mark").get("name")
    return Mark(name=required_text(name, "mark.name"), **_common_ids(frame))


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
        raise RemoteProtocolError(f"error.code: expected an int or string, got {describe(code)}")
    return Error(
        code=code,
        title=opt_text(body.get("title"), "error.title"),
        detail=opt_text(body.get("detail"), "error.detail"),
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
    body = section(frame, "stop", required=False)  # '{}' and missing both seen/possible
    return Stop(
        call_control_id=opt_text(body.get("call_control_id"), "stop.call_control_id"),
        user_id=opt_text(body.get("user_id"), "stop.user_id"),
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
    payload = b64_field(section(frame, "media").get("payload"), "media.payload")
    if not payload:
        raise RemoteProtocolError("media.payload is empty", close_code=CLOSE_INVALID_PAYLOAD)
    return MediaOut(payload, opt_text(frame.get("stream_id"), "stream_id"))


def _with_stream_id(msg: MediaOut | MarkOut | Clear, frame: dict[str, Any]) -> dict[str, Any]:
    if msg.stream_id is not None:
        frame["stream_id"] = msg.stream_id
    return frame


def _structure_mark_out(frame: dict[str, Any], _: type) -> MarkOut:
    name = required_text(section(frame, "mark").get("name"), "mark.name")
    return MarkOut(name, opt_text(frame.get("stream_id"), "stream_id"))


def _structure_clear(frame: dict[str, Any], _: type) -> Clear:
    return Clear(opt_text(frame.get("stream_id"), "stream_id"))


def _build_converter() -> OrjsonConverter:
    converter = make_converter()
    hooks: list[tuple[type, Callable[..., Any], Callable[..., Any]]] = [
        (Connected, _structure_connected, _unstructure_connected),
        (Start, _structure_start, _unstructure_start),
        (Media, _structure_media, unstructure_media),
        (Dtmf, _structure_dtmf, _unstructure_dtmf),
        (Mark, _structure_mark, _unstructure_mark),
        (Error, _structure_error, _unstructure_error),
        (Stop, _structure_stop, _unstructure_stop),
        (MediaOut, _structure_media_out,
         lambda m: _with_stream_id(m, {"media": {"payload": b64encode(m.payload)}})),
        (MarkOut, _structure_mark_out, lambda m: _with_stream_id(m, {"mark": {"name": m.name}})),
        (Clear, _structure_clear, lambda m: _with_stream_id(m, {})),
    ]  # fmt: skip
    for cls, structure, unstructure in hooks:
        converter.register_structure_hook(cls, structure)
        converter.register_unstructure_hook(cls, unstructure)
    for union in (TelnyxInbound, TelnyxOutbound):
        configure_tagged_union(union, converter, tag_generator=EVENT_OF.__getitem__, tag_name="event")
    return converter


CONVERTER: Final = _build_converter()
