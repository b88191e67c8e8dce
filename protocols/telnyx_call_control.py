"""Telnyx Call Control v2, sans-I/O: request builders, response and webhook parsing.

Builders return an :class:`ApiRequest` (method, path relative to the ``/v2`` base URL, JSON
body) and never touch the network; the HTTP actor sends it with ``Authorization: Bearer``.
They validate *our* inputs and raise :class:`~protocols.errors.LocalProtocolError` on a bad
E.164 number, codec name, URL scheme, a speak text over 3000 characters and the like.
``client_state`` is passed as bytes or text and base64-encoded here.

Responses: :func:`decode_dial_response` and :func:`decode_command_response` return the typed
result on 2xx and a :class:`TelnyxApiErrors` **value** otherwise. An API error is a normal,
expected outcome (``90018`` "call has already ended" is routine after a hangup race), not a
protocol violation: the caller inspects ``status``/``codes`` and decides, so it is returned,
not raised. Only a body that breaks the documented shapes raises RemoteProtocolError.

Webhooks: :func:`decode_webhook` parses the ``{"data": {...}, "meta": {...}}`` envelope into a
:class:`WebhookEvent` whose ``payload`` is typed per ``event_type``; unknown event types become a
:class:`GenericPayload` (never an error). ``client_state`` arrives base64 and is decoded to bytes
(``null`` allowed; invalid base64 is a RemoteProtocolError). :func:`encode_webhook` and the
``encode_*_response`` functions produce the same shapes for the Telnyx emulator. Check the
signature first (:mod:`protocols.telnyx_signature`), on the raw body.

This module is the public face; the work is done in :mod:`protocols.telnyx_request_checks`
(:class:`ApiRequest` and the input checks), :mod:`protocols.telnyx_commands` (the builders),
:mod:`protocols.telnyx_responses` (REST answers), :mod:`protocols.telnyx_webhooks` (webhooks) and
:mod:`protocols.telnyx_rest_json` (how their JSON is read and written).
"""

from __future__ import annotations

from protocols.telnyx_commands import (
    SPEAK_MAX_CHARS,
    answer,
    dial,
    hangup,
    playback_start,
    playback_stop,
    speak,
    streaming_start,
    streaming_stop,
    transcription_start,
    transcription_stop,
)
from protocols.telnyx_commands import DIAL_TIMEOUT_RANGE_S as DIAL_TIMEOUT_RANGE_S
from protocols.telnyx_commands import TIME_LIMIT_MAX_S as TIME_LIMIT_MAX_S
from protocols.telnyx_request_checks import (
    BIDIRECTIONAL_CODECS,
    BIDIRECTIONAL_SAMPLING_RATES,
    STREAM_CODECS,
    STREAM_TRACKS,
    ApiRequest,
)
from protocols.telnyx_request_checks import ClientState as ClientState
from protocols.telnyx_request_checks import STREAM_AUTH_TOKEN_MAX_CHARS as STREAM_AUTH_TOKEN_MAX_CHARS
from protocols.telnyx_responses import (
    CALL_HAS_ENDED,
    ApiError,
    CommandResult,
    DialResult,
    TelnyxApiErrors,
    decode_api_errors,
    decode_command_response,
    decode_dial_response,
    encode_api_errors,
    encode_command_result,
    encode_dial_response,
)
from protocols.telnyx_webhooks import (
    WEBHOOK_PAYLOADS,
    CallAnswered,
    CallDtmfReceived,
    CallHangup,
    CallInitiated,
    CallPlaybackEnded,
    CallPlaybackStarted,
    CallSpeakEnded,
    CallSpeakStarted,
    CallTranscription,
    GenericPayload,
    StreamingFailed,
    StreamingStarted,
    StreamingStopped,
    StreamParams,
    TranscriptionData,
    WebhookEvent,
    WebhookMeta,
    WebhookPayload,
    decode_webhook,
    encode_webhook,
)

__all__ = [
    "BIDIRECTIONAL_CODECS",
    "BIDIRECTIONAL_SAMPLING_RATES",
    "CALL_HAS_ENDED",
    "SPEAK_MAX_CHARS",
    "STREAM_CODECS",
    "STREAM_TRACKS",
    "WEBHOOK_PAYLOADS",
    "ApiError",
    "ApiRequest",
    "CallAnswered",
    "CallDtmfReceived",
    "CallHangup",
    "CallInitiated",
    "CallPlaybackEnded",
    "CallPlaybackStarted",
    "CallSpeakEnded",
    "CallSpeakStarted",
    "CallTranscription",
    "CommandResult",
    "DialResult",
    "GenericPayload",
    "StreamParams",
    "StreamingFailed",
    "StreamingStarted",
    "StreamingStopped",
    "TelnyxApiErrors",
    "TranscriptionData",
    "WebhookEvent",
    "WebhookMeta",
    "WebhookPayload",
    "answer",
    "decode_api_errors",
    "decode_command_response",
    "decode_dial_response",
    "decode_webhook",
    "dial",
    "encode_api_errors",
    "encode_command_result",
    "encode_dial_response",
    "encode_webhook",
    "hangup",
    "playback_start",
    "playback_stop",
    "speak",
    "streaming_start",
    "streaming_stop",
    "transcription_start",
    "transcription_stop",
]
