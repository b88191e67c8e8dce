"""Telnyx Call Control webhooks: the ``{"data": {...}, "meta": {...}}`` envelope, both ways.

:func:`decode_webhook` parses a body into a :class:`WebhookEvent` whose ``payload`` is typed per
``event_type``; unknown event types become a :class:`GenericPayload` (never an error).
``client_state`` arrives base64 and is decoded to bytes (``null`` allowed; invalid base64 is a
RemoteProtocolError). :func:`encode_webhook` produces the same shape for the Telnyx emulator.
Check the signature first (:mod:`protocols.telnyx_signature`), on the raw body. Re-exported by
:mod:`protocols.telnyx_call_control`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Final, Literal, TypeAlias, Union

import attrs
from cattrs.preconf.orjson import OrjsonConverter

from protocols.errors import LocalProtocolError, RemoteProtocolError
from protocols.jsonwire import strict_object, strict_str
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
    "WEBHOOK_PAYLOADS",
    "CallAnswered",
    "CallDtmfReceived",
    "CallHangup",
    "CallInitiated",
    "CallPlaybackEnded",
    "CallPlaybackStarted",
    "CallSpeakEnded",
    "CallSpeakStarted",
    "CallTranscription",
    "GenericPayload",
    "StreamParams",
    "StreamingFailed",
    "StreamingStarted",
    "StreamingStopped",
    "TranscriptionData",
    "WebhookEvent",
    "WebhookMeta",
    "WebhookPayload",
    "decode_webhook",
    "encode_webhook",
]


@attrs.frozen(kw_only=True)
class _CallIds:
    # The ids every call event carries (telnyx.md §4.3). ``client_state`` is decoded to bytes.
    call_control_id: str
    call_leg_id: str | None = None
    call_session_id: str | None = None
    connection_id: str | None = None
    client_state: bytes | None = None


@attrs.frozen(kw_only=True)
class CallInitiated(_CallIds):
    """A call leg exists: ``incoming`` (answer it) or ``outgoing`` (our dial, state bridging)."""

    direction: Literal["incoming", "outgoing"]
    state: str | None = None
    from_: str | None = None
    to: str | None = None
    caller_id_name: str | None = None
    start_time: str | None = None


@attrs.frozen(kw_only=True)
class CallAnswered(_CallIds):
    """The callee picked up (or our answer took effect); live captures add codec and rate."""

    state: str | None = None
    from_: str | None = None
    to: str | None = None
    start_time: str | None = None
    codec: str | None = None
    sampling_rate: int | None = None


@attrs.frozen(kw_only=True)
class CallHangup(_CallIds):
    """``hangup_cause`` e.g. normal_clearing, timeout, no_answer, user_busy, call_rejected."""

    hangup_cause: str | None = None
    hangup_source: str | None = None
    sip_hangup_cause: str | None = None
    state: str | None = None
    from_: str | None = None
    to: str | None = None
    start_time: str | None = None
    call_quality_stats: dict[str, Any] | None = attrs.field(default=None, hash=False)


@attrs.frozen(kw_only=True)
class CallPlaybackStarted(_CallIds):
    """``playback_start`` began playing."""

    media_url: str | None = None
    media_name: str | None = None
    overlay: bool | None = None


@attrs.frozen(kw_only=True)
class CallPlaybackEnded(_CallIds):
    """``status``: completed, cancelled, call_hangup, file_not_found, failed, ..."""

    media_url: str | None = None
    media_name: str | None = None
    overlay: bool | None = None
    status: str | None = None
    status_detail: str | None = None


@attrs.frozen(kw_only=True)
class CallSpeakStarted(_CallIds):
    """Telnyx-side TTS (``speak``) began."""


@attrs.frozen(kw_only=True)
class CallSpeakEnded(_CallIds):
    """``status``: completed, call_hangup, cancelled_amd."""

    status: str | None = None


@attrs.frozen(kw_only=True)
class StreamingStarted(_CallIds):
    """The media WebSocket is up (note: no ``call.`` prefix on streaming events)."""

    stream_url: str | None = None
    stream_id: str | None = None


@attrs.frozen(kw_only=True)
class StreamingStopped(_CallIds):
    """The media WebSocket ended (hangup or ``streaming_stop``)."""

    stream_url: str | None = None
    stream_id: str | None = None


@attrs.frozen(kw_only=True)
class StreamParams:
    """``streaming.failed`` ``stream_params``; the track comes as ``track`` (SDK) or
    ``stream_track`` (docs example): both are read, ``track`` is written."""

    stream_url: str | None = None
    track: str | None = None


@attrs.frozen(kw_only=True)
class StreamingFailed(_CallIds):
    """Telnyx could not open or keep the WebSocket (e.g. ``connection_failed``, a refused token)."""

    failure_reason: str | None = None
    stream_id: str | None = None
    stream_type: str | None = None
    stream_params: StreamParams | None = None


@attrs.frozen(kw_only=True)
class TranscriptionData:
    """One ``call.transcription`` result; interim ones have ``is_final`` false."""

    transcript: str
    is_final: bool = False
    confidence: float | None = None
    transcription_track: str | None = None


@attrs.frozen(kw_only=True)
class CallTranscription(_CallIds):
    """Telnyx-side transcription (``transcription_start``)."""

    transcription_data: TranscriptionData


@attrs.frozen(kw_only=True)
class CallDtmfReceived(_CallIds):
    """A key press (also seen as a ``dtmf`` frame on the media socket: dedupe if both are used)."""

    digit: str
    from_: str | None = None
    to: str | None = None


@attrs.frozen
class GenericPayload:
    """The raw ``payload`` of an event type this module does not model (any JSON value)."""

    data: Any = attrs.field(default=None, hash=False)


WebhookPayload: TypeAlias = Union[
    CallInitiated, CallAnswered, CallHangup, CallPlaybackStarted, CallPlaybackEnded,
    CallSpeakStarted, CallSpeakEnded, StreamingStarted, StreamingStopped, StreamingFailed,
    CallTranscription, CallDtmfReceived, GenericPayload,
]  # fmt: skip

#: event_type -> payload class; anything else decodes to GenericPayload.
WEBHOOK_PAYLOADS: Final[dict[str, type]] = {
    "call.initiated": CallInitiated,
    "call.answered": CallAnswered,
    "call.hangup": CallHangup,
    "call.playback.started": CallPlaybackStarted,
    "call.playback.ended": CallPlaybackEnded,
    "call.speak.started": CallSpeakStarted,
    "call.speak.ended": CallSpeakEnded,
    "streaming.started": StreamingStarted,
    "streaming.stopped": StreamingStopped,
    "streaming.failed": StreamingFailed,
    "call.transcription": CallTranscription,
    "call.dtmf.received": CallDtmfReceived,
}


@attrs.frozen(kw_only=True)
class WebhookMeta:
    """The envelope's ``meta`` (seen live, not in the SDK): delivery attempt and target URL."""

    attempt: int | None = None
    delivered_to: str | None = None


@attrs.frozen(kw_only=True)
class WebhookEvent:
    """One webhook delivery. Dedupe on ``id``: Telnyx may deliver twice and out of order."""

    id: str
    event_type: str
    payload: WebhookPayload
    occurred_at: str | None = None
    record_type: str = "event"
    meta: WebhookMeta | None = None

    @property
    def occurred_at_datetime(self) -> datetime | None:
        """``occurred_at`` parsed (ISO 8601, e.g. ``2018-02-02T22:25:27.521992Z``)."""
        if self.occurred_at is None:
            return None
        try:
            return datetime.fromisoformat(self.occurred_at)
        except ValueError:
            raise RemoteProtocolError(f"occurred_at is not ISO 8601: {self.occurred_at[:40]!r}") from None


# --------------------------------------------------------------------------- converter


def _structure_stream_params(value: object, _: type) -> StreamParams:
    params = strict_object(value)
    track = params.get("track")
    if track is None:
        track = params.get("stream_track")
    url = params.get("stream_url")
    return StreamParams(
        stream_url=None if url is None else strict_str(url),
        track=None if track is None else strict_str(track),
    )


def _build_converter() -> OrjsonConverter:
    converter = make_converter()
    converter.register_structure_hook(StreamParams, _structure_stream_params)
    return converter


_converter: Final = _build_converter()


def decode_webhook(body: bytes | str) -> WebhookEvent:
    """Parse a webhook body (after :func:`protocols.telnyx_signature.verify_webhook`).

    Raises:
        RemoteProtocolError: not JSON, no ``data`` object, ``data.id``/``data.event_type`` missing,
            a known event's payload with a missing or mistyped field we model, bad base64
            ``client_state``. Unknown event types are *not* errors.
    """
    envelope = load_body(body, "webhook")
    data = data_object(envelope, "webhook")
    event_id, event_type = data.get("id"), data.get("event_type")
    if type(event_id) is not str or not event_id:
        raise RemoteProtocolError("webhook: data.id must be a non-empty string")
    if type(event_type) is not str or not event_type:
        raise RemoteProtocolError("webhook: data.event_type must be a non-empty string")
    cls = WEBHOOK_PAYLOADS.get(event_type)
    raw_payload = data.get("payload")
    if cls is None:
        payload: WebhookPayload = GenericPayload(raw_payload)
    elif type(raw_payload) is not dict:
        raise RemoteProtocolError(f"webhook {event_type}: data.payload must be an object")
    else:
        payload = structure(_converter, raw_payload, cls, "data.payload")
    occurred_at, record_type = data.get("occurred_at"), data.get("record_type", "event")
    if not (occurred_at is None or type(occurred_at) is str):
        raise RemoteProtocolError("webhook: data.occurred_at must be a string")
    if type(record_type) is not str:
        raise RemoteProtocolError("webhook: data.record_type must be a string")
    meta = envelope.get("meta")
    return WebhookEvent(
        id=event_id,
        event_type=event_type,
        payload=payload,
        occurred_at=occurred_at,
        record_type=record_type,
        meta=None if meta is None else structure(_converter, meta, WebhookMeta, "meta"),
    )


def encode_webhook(event: WebhookEvent) -> bytes:
    """The JSON body Telnyx would POST for ``event`` (emulator side; sign it afterwards).

    Raises:
        LocalProtocolError: the payload class does not match ``event_type``, or a field would not
            survive :func:`decode_webhook` unchanged.
    """
    if type(event) is not WebhookEvent:
        raise LocalProtocolError(f"not a WebhookEvent: {type(event).__name__}")
    expected = WEBHOOK_PAYLOADS.get(event.event_type, GenericPayload)
    if type(event.payload) is not expected:
        raise LocalProtocolError(
            f"{event.event_type!r} carries {expected.__name__}, not {type(event.payload).__name__}"
        )
    if isinstance(event.payload, GenericPayload):
        payload = event.payload.data
    else:
        payload = unstructure(_converter, event.payload, event.event_type)
    data: dict[str, Any] = {"record_type": event.record_type, "event_type": event.event_type, "id": event.id}
    if event.occurred_at is not None:
        data["occurred_at"] = event.occurred_at
    data["payload"] = payload
    envelope: dict[str, Any] = {"data": data}
    if event.meta is not None:
        envelope["meta"] = unstructure(_converter, event.meta, "meta")
    return normal_form(dumps(envelope, "webhook"), event, decode_webhook)

