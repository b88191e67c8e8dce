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
"""

from __future__ import annotations

import binascii
import re
import uuid
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, Final, Literal, TypeAlias, Union
from urllib.parse import quote

import attrs
import orjson
from cattrs import ClassValidationError, IterableValidationError, transform_error
from cattrs.gen import make_dict_structure_fn, make_dict_unstructure_fn, override
from cattrs.preconf.orjson import OrjsonConverter, make_converter
from cattrs.v import format_exception

from protocols.errors import LocalProtocolError, ProtocolError, RemoteProtocolError

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

#: Telnyx error code for a command sent to a call that has ended (HTTP 422).
CALL_HAS_ENDED: Final = "90018"
SPEAK_MAX_CHARS: Final = 3000
#: ``stream_codec``: what Telnyx streams to us ("default" = the call's codec).
STREAM_CODECS: Final = frozenset({"PCMU", "PCMA", "G722", "OPUS", "AMR-WB", "L16", "default"})
#: ``stream_bidirectional_codec`` (rtp mode only; case-sensitive on Telnyx's side).
BIDIRECTIONAL_CODECS: Final = frozenset({"PCMU", "PCMA", "G722", "OPUS", "AMR-WB", "L16"})
BIDIRECTIONAL_SAMPLING_RATES: Final = frozenset({8000, 16000, 22050, 24000, 48000})
STREAM_TRACKS: Final = frozenset({"inbound_track", "outbound_track", "both_tracks"})
STREAM_AUTH_TOKEN_MAX_CHARS: Final = 4000
DIAL_TIMEOUT_RANGE_S: Final = (5, 600)
TIME_LIMIT_MAX_S: Final = 14400

_E164: Final = re.compile(r"\+[0-9]{8,15}")
_SIP_URI: Final = re.compile(r"sips?:[^\s@]+@[^\s]+", re.IGNORECASE)

# =========================================================================== requests


@attrs.frozen
class ApiRequest:
    """One REST call to make: ``method`` on ``base_url + path`` with ``json`` as the body."""

    method: Literal["GET", "POST"]
    path: str
    json: dict[str, Any] | None = attrs.field(default=None, hash=False)


ClientState: TypeAlias = bytes | str


def _fail(reason: str) -> LocalProtocolError:
    return LocalProtocolError(reason)


def _check_choice(name: str, value: Any, choices: frozenset[Any] | tuple[Any, ...]) -> None:
    try:
        known = value in choices and type(value) is not bool
    except TypeError:  # unhashable
        known = False
    if not known:
        raise _fail(f"{name} must be one of {sorted(map(str, choices))}, got {value!r:.60}")


def _utf8(name: str, value: str) -> bytes:
    try:
        return value.encode("utf-8")
    except UnicodeEncodeError:
        raise _fail(f"{name} is not encodable as UTF-8 (lone surrogate?)") from None


def _check_text(name: str, value: Any, *, max_chars: int | None = None) -> None:
    if type(value) is not str or not value:
        raise _fail(f"{name} must be a non-empty string, got {type(value).__name__}")
    if max_chars is not None and len(value) > max_chars:
        raise _fail(f"{name} is {len(value)} characters; Telnyx accepts at most {max_chars}")
    if not value.isascii():
        _utf8(name, value)


def _check_int(name: str, value: Any, low: int, high: int) -> None:
    if type(value) is not int or not low <= value <= high:
        raise _fail(f"{name} must be an int in [{low}, {high}], got {value!r}")


def _check_url(name: str, value: Any, schemes: tuple[str, ...]) -> None:
    _check_text(name, value)
    if not value.lower().startswith(tuple(f"{s}://" for s in schemes)) or any(c.isspace() for c in value):
        raise _fail(f"{name} must be a {'/'.join(schemes)}:// URL, got {value[:60]!r}")


def _check_e164(name: str, value: Any, *, allow_sip: bool = False) -> None:
    if type(value) is str and (_E164.fullmatch(value) or (allow_sip and _SIP_URI.fullmatch(value))):
        return
    shape = "'+' then 8-15 digits" + (" or a sip: URI" if allow_sip else "")
    raise _fail(f"{name} must be E.164 ({shape}), got {value!r}")


def _client_state(value: ClientState | None) -> str | None:
    if value is None:
        return None
    if type(value) is str:
        value = _utf8("client_state", value)
    if type(value) is not bytes or not value:
        raise _fail("client_state must be non-empty bytes or str")
    return binascii.b2a_base64(value, newline=False).decode("ascii")


def _command_id(value: str | uuid.UUID | None) -> str | None:
    if isinstance(value, uuid.UUID):
        return str(value)
    if value is not None:
        _check_text("command_id", value)
    return value


def _call_path(call_control_id: str, verb: str) -> str:
    _check_text("call_control_id", call_control_id)
    return f"/calls/{quote(call_control_id, safe=':')}/actions/{verb}"


def _body(**fields: Any) -> dict[str, Any]:
    return {key.removesuffix("_"): value for key, value in fields.items() if value is not None}


def _common(client_state: ClientState | None, command_id: str | uuid.UUID | None) -> dict[str, Any]:
    return _body(client_state=_client_state(client_state), command_id=_command_id(command_id))


def _stream_fields(
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
    fields = _body(
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
            raise _fail(f"{sorted(stray)} given without a stream_url")
        return {}
    _check_url("stream_url", stream_url, ("wss", "ws"))
    if stream_track is not None:
        _check_choice("stream_track", stream_track, STREAM_TRACKS)
    if stream_codec is not None:
        _check_choice("stream_codec", stream_codec, STREAM_CODECS)
    if stream_bidirectional_mode is not None:
        _check_choice("stream_bidirectional_mode", stream_bidirectional_mode, ("mp3", "rtp"))
    rtp_only = {"stream_bidirectional_codec", "stream_bidirectional_sampling_rate"} & fields.keys()
    if rtp_only and stream_bidirectional_mode != "rtp":
        raise _fail(f"{sorted(rtp_only)} need stream_bidirectional_mode='rtp'")
    if stream_bidirectional_codec is not None:
        _check_choice("stream_bidirectional_codec", stream_bidirectional_codec, BIDIRECTIONAL_CODECS)
    if stream_bidirectional_sampling_rate is not None:
        _check_choice(
            "stream_bidirectional_sampling_rate",
            stream_bidirectional_sampling_rate,
            BIDIRECTIONAL_SAMPLING_RATES,
        )
    if stream_bidirectional_target_legs is not None:
        _check_choice(
            "stream_bidirectional_target_legs", stream_bidirectional_target_legs, ("both", "self", "opposite")
        )
    if stream_auth_token is not None:
        _check_text("stream_auth_token", stream_auth_token, max_chars=STREAM_AUTH_TOKEN_MAX_CHARS)
    return {"stream_url": stream_url, **fields}


def dial(
    *,
    connection_id: str,
    to: str,
    from_: str,
    stream_url: str | None = None,
    stream_track: str | None = "inbound_track",
    stream_codec: str | None = None,
    stream_bidirectional_mode: str | None = "rtp",
    stream_bidirectional_codec: str | None = None,
    stream_bidirectional_sampling_rate: int | None = None,
    stream_bidirectional_target_legs: str | None = None,
    stream_auth_token: str | None = None,
    stream_establish_before_call_originate: bool | None = None,
    client_state: ClientState | None = None,
    command_id: str | uuid.UUID | None = None,
    webhook_url: str | None = None,
    timeout_secs: int | None = None,
    time_limit_secs: int | None = None,
    from_display_name: str | None = None,
) -> ApiRequest:
    """``POST /calls``: start an outbound call, optionally streaming its media to ``stream_url``.

    The stream_* defaults give the AI-agent setup (telnyx.md §0): only the caller's audio comes
    to us (``inbound_track``) and what we send back is played as raw RTP payload (``rtp``; the
    Telnyx default ``mp3`` silently plays nothing). They are omitted when ``stream_url`` is None.
    ``to`` may be E.164 or a ``sip:`` URI; ``from_`` must be E.164.
    """
    _check_text("connection_id", connection_id)
    _check_e164("to", to, allow_sip=True)
    _check_e164("from_", from_)
    if webhook_url is not None:
        _check_url("webhook_url", webhook_url, ("https", "http"))
    if timeout_secs is not None:
        _check_int("timeout_secs", timeout_secs, *DIAL_TIMEOUT_RANGE_S)
    if time_limit_secs is not None:
        _check_int("time_limit_secs", time_limit_secs, 1, TIME_LIMIT_MAX_S)
    if from_display_name is not None:
        _check_text("from_display_name", from_display_name, max_chars=128)
    if stream_establish_before_call_originate is not None:
        if type(stream_establish_before_call_originate) is not bool or stream_url is None:
            raise _fail("stream_establish_before_call_originate needs a bool and a stream_url")
    body = _body(
        connection_id=connection_id,
        to=to,
        from_=from_,
        from_display_name=from_display_name,
        webhook_url=webhook_url,
        timeout_secs=timeout_secs,
        time_limit_secs=time_limit_secs,
        stream_establish_before_call_originate=stream_establish_before_call_originate,
    )
    body |= _stream_fields(
        stream_url=stream_url,
        stream_track=stream_track,
        stream_codec=stream_codec,
        stream_bidirectional_mode=stream_bidirectional_mode,
        stream_bidirectional_codec=stream_bidirectional_codec,
        stream_bidirectional_sampling_rate=stream_bidirectional_sampling_rate,
        stream_bidirectional_target_legs=stream_bidirectional_target_legs,
        stream_auth_token=stream_auth_token,
    )
    return ApiRequest("POST", "/calls", body | _common(client_state, command_id))


def answer(
    call_control_id: str,
    *,
    stream_url: str | None = None,
    stream_track: str | None = "inbound_track",
    stream_codec: str | None = None,
    stream_bidirectional_mode: str | None = "rtp",
    stream_bidirectional_codec: str | None = None,
    stream_bidirectional_sampling_rate: int | None = None,
    stream_bidirectional_target_legs: str | None = None,
    stream_auth_token: str | None = None,
    send_silence_when_idle: bool | None = None,
    webhook_url: str | None = None,
    client_state: ClientState | None = None,
    command_id: str | uuid.UUID | None = None,
) -> ApiRequest:
    """Answer an incoming call, optionally streaming as in :func:`dial`.

    The SDK's answer params list neither ``stream_bidirectional_sampling_rate`` nor
    ``stream_auth_token`` (UNCONFIRMED whether Telnyx honours them on answer; third-party code
    sends them). They are sent only if given: leave them None and use :func:`streaming_start`
    after answering if the token must be enforced.
    """
    if webhook_url is not None:
        _check_url("webhook_url", webhook_url, ("https", "http"))
    if send_silence_when_idle is not None and type(send_silence_when_idle) is not bool:
        raise _fail("send_silence_when_idle must be a bool")
    body = _stream_fields(
        stream_url=stream_url,
        stream_track=stream_track,
        stream_codec=stream_codec,
        stream_bidirectional_mode=stream_bidirectional_mode,
        stream_bidirectional_codec=stream_bidirectional_codec,
        stream_bidirectional_sampling_rate=stream_bidirectional_sampling_rate,
        stream_bidirectional_target_legs=stream_bidirectional_target_legs,
        stream_auth_token=stream_auth_token,
    )
    body |= _body(send_silence_when_idle=send_silence_when_idle, webhook_url=webhook_url)
    return ApiRequest("POST", _call_path(call_control_id, "answer"), body | _common(client_state, command_id))


def hangup(
    call_control_id: str,
    *,
    client_state: ClientState | None = None,
    command_id: str | uuid.UUID | None = None,
) -> ApiRequest:
    """Hang up. A 422 with code ``90018`` means the call had already ended (benign)."""
    return ApiRequest("POST", _call_path(call_control_id, "hangup"), _common(client_state, command_id))


def playback_start(
    call_control_id: str,
    *,
    audio_url: str | None = None,
    media_name: str | None = None,
    playback_content: bytes | None = None,
    audio_type: Literal["mp3", "wav"] | None = None,
    loop: int | Literal["infinity"] | None = None,
    overlay: bool | None = None,
    stop: Literal["current", "all"] | None = None,
    target_legs: Literal["self", "opposite", "both"] | None = None,
    cache_audio: bool | None = None,
    client_state: ClientState | None = None,
    command_id: str | uuid.UUID | None = None,
) -> ApiRequest:
    """Play a file: exactly one of ``audio_url``, ``media_name`` or ``playback_content`` (raw
    mp3/wav bytes, base64-encoded here)."""
    sources = [s for s in (audio_url, media_name, playback_content) if s is not None]
    if len(sources) != 1:
        raise _fail("playback_start needs exactly one of audio_url, media_name, playback_content")
    if audio_url is not None:
        _check_url("audio_url", audio_url, ("https", "http"))
    if media_name is not None:
        _check_text("media_name", media_name)
    content = None
    if playback_content is not None:
        if type(playback_content) is not bytes or not playback_content:
            raise _fail("playback_content must be non-empty bytes")
        content = binascii.b2a_base64(playback_content, newline=False).decode("ascii")
    if audio_type is not None:
        _check_choice("audio_type", audio_type, ("mp3", "wav"))
    if loop is not None and loop != "infinity":
        _check_int("loop", loop, 1, 100)
    if stop is not None:
        _check_choice("stop", stop, ("current", "all"))
    if target_legs is not None:
        _check_choice("target_legs", target_legs, ("self", "opposite", "both"))
    for name, flag in (("overlay", overlay), ("cache_audio", cache_audio)):
        if flag is not None and type(flag) is not bool:
            raise _fail(f"{name} must be a bool")
    body = _body(
        audio_url=audio_url,
        media_name=media_name,
        playback_content=content,
        audio_type=audio_type,
        loop=loop,
        overlay=overlay,
        stop=stop,
        target_legs=target_legs,
        cache_audio=cache_audio,
    )
    return ApiRequest(
        "POST", _call_path(call_control_id, "playback_start"), body | _common(client_state, command_id)
    )


def playback_stop(
    call_control_id: str,
    *,
    stop: Literal["current", "all"] | None = None,
    overlay: bool | None = None,
    client_state: ClientState | None = None,
    command_id: str | uuid.UUID | None = None,
) -> ApiRequest:
    """Stop playback (and speak); Telnyx's default is ``stop="all"``."""
    if stop is not None:
        _check_choice("stop", stop, ("current", "all"))
    if overlay is not None and type(overlay) is not bool:
        raise _fail("overlay must be a bool")
    body = _body(stop=stop, overlay=overlay)
    return ApiRequest(
        "POST", _call_path(call_control_id, "playback_stop"), body | _common(client_state, command_id)
    )


def speak(
    call_control_id: str,
    *,
    payload: str,
    voice: str,
    language: str | None = None,
    payload_type: Literal["text", "ssml"] | None = None,
    service_level: Literal["basic", "premium"] | None = None,
    stop: Literal["current", "all"] | None = None,
    target_legs: Literal["self", "opposite", "both"] | None = None,
    voice_settings: Mapping[str, Any] | None = None,
    client_state: ClientState | None = None,
    command_id: str | uuid.UUID | None = None,
) -> ApiRequest:
    """Telnyx-side TTS (e.g. ``voice="AWS.Polly.Joanna-Neural"``); ``payload`` <= 3000 chars."""
    _check_text("payload", payload, max_chars=SPEAK_MAX_CHARS)
    _check_text("voice", voice)
    if language is not None:
        _check_text("language", language)
    if payload_type is not None:
        _check_choice("payload_type", payload_type, ("text", "ssml"))
    if service_level is not None:
        _check_choice("service_level", service_level, ("basic", "premium"))
    if stop is not None:
        _check_choice("stop", stop, ("current", "all"))
    if target_legs is not None:
        _check_choice("target_legs", target_legs, ("self", "opposite", "both"))
    if voice_settings is not None and not isinstance(voice_settings, Mapping):
        raise _fail("voice_settings must be a mapping")
    body = _body(
        payload=payload,
        voice=voice,
        language=language,
        payload_type=payload_type,
        service_level=service_level,
        stop=stop,
        target_legs=target_legs,
        voice_settings=None if voice_settings is None else dict(voice_settings),
    )
    return ApiRequest("POST", _call_path(call_control_id, "speak"), body | _common(client_state, command_id))


def streaming_start(
    call_control_id: str,
    *,
    stream_url: str,
    stream_track: str | None = "inbound_track",
    stream_codec: str | None = None,
    stream_bidirectional_mode: str | None = "rtp",
    stream_bidirectional_codec: str | None = None,
    stream_bidirectional_sampling_rate: int | None = None,
    stream_bidirectional_target_legs: str | None = None,
    stream_auth_token: str | None = None,
    custom_parameters: Mapping[str, str] | None = None,
    client_state: ClientState | None = None,
    command_id: str | uuid.UUID | None = None,
) -> ApiRequest:
    """Start media streaming on a live call; ``custom_parameters`` go as ``[{name, value}]``."""
    if stream_url is None:
        raise _fail("streaming_start needs a stream_url")
    body = _stream_fields(
        stream_url=stream_url,
        stream_track=stream_track,
        stream_codec=stream_codec,
        stream_bidirectional_mode=stream_bidirectional_mode,
        stream_bidirectional_codec=stream_bidirectional_codec,
        stream_bidirectional_sampling_rate=stream_bidirectional_sampling_rate,
        stream_bidirectional_target_legs=stream_bidirectional_target_legs,
        stream_auth_token=stream_auth_token,
    )
    if custom_parameters is not None:
        if not isinstance(custom_parameters, Mapping) or not all(
            type(k) is str and k and type(v) is str for k, v in custom_parameters.items()
        ):
            raise _fail("custom_parameters must map non-empty str names to str values")
        body["custom_parameters"] = [{"name": k, "value": v} for k, v in custom_parameters.items()]
    return ApiRequest(
        "POST", _call_path(call_control_id, "streaming_start"), body | _common(client_state, command_id)
    )


def streaming_stop(
    call_control_id: str,
    *,
    stream_id: str | None = None,
    client_state: ClientState | None = None,
    command_id: str | uuid.UUID | None = None,
) -> ApiRequest:
    """Stop one stream (``stream_id``) or, without it, every stream on the call."""
    if stream_id is not None:
        _check_text("stream_id", stream_id)
    body = _body(stream_id=stream_id)
    return ApiRequest(
        "POST", _call_path(call_control_id, "streaming_stop"), body | _common(client_state, command_id)
    )


def transcription_start(
    call_control_id: str,
    *,
    transcription_engine: str | None = None,
    transcription_tracks: Literal["inbound", "outbound", "both"] | None = None,
    transcription_engine_config: Mapping[str, Any] | None = None,
    client_state: ClientState | None = None,
    command_id: str | uuid.UUID | None = None,
) -> ApiRequest:
    """Start Telnyx-side transcription (``call.transcription`` webhooks). The engine list grows
    (``Google``, ``Telnyx``, ``Deepgram``, ``Azure``, legacy ``A``/``B`` ...), so any name passes."""
    if transcription_engine is not None:
        _check_text("transcription_engine", transcription_engine)
    if transcription_tracks is not None:
        _check_choice("transcription_tracks", transcription_tracks, ("inbound", "outbound", "both"))
    if transcription_engine_config is not None and not isinstance(transcription_engine_config, Mapping):
        raise _fail("transcription_engine_config must be a mapping")
    body = _body(
        transcription_engine=transcription_engine,
        transcription_tracks=transcription_tracks,
        transcription_engine_config=(
            None if transcription_engine_config is None else dict(transcription_engine_config)
        ),
    )
    return ApiRequest(
        "POST", _call_path(call_control_id, "transcription_start"), body | _common(client_state, command_id)
    )


def transcription_stop(
    call_control_id: str,
    *,
    client_state: ClientState | None = None,
    command_id: str | uuid.UUID | None = None,
) -> ApiRequest:
    """Stop Telnyx-side transcription."""
    return ApiRequest(
        "POST", _call_path(call_control_id, "transcription_stop"), _common(client_state, command_id)
    )


# =========================================================================== responses


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


# =========================================================================== webhooks


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
# One converter (STYLE.md): strict primitives (no str(123) or int(4.7) coercion), base64 bytes,
# the 'from' <-> from_ rename, and generated hooks for every payload class.


def _describe(value: object) -> str:
    return type(value).__name__


def _strict_str(value: object, _: type) -> str:
    if type(value) is str:
        return value
    raise RemoteProtocolError(f"expected a string, got {_describe(value)}")


def _wire_int(value: object, _: type) -> int:
    # Ints or decimal strings ("attempt": "1" would be plausible), never bool or float.
    if type(value) is int and -(2**63) <= value < 2**63:
        return value
    if type(value) is str and 0 < len(value) <= 18 and value.isascii() and value.isdigit():
        return int(value)
    raise RemoteProtocolError(f"expected an integer, got {_describe(value)}")


def _strict_bool(value: object, _: type) -> bool:
    if type(value) is bool:
        return value
    raise RemoteProtocolError(f"expected true or false, got {_describe(value)}")


def _strict_float(value: object, _: type) -> float:
    if type(value) in (int, float):
        return float(value)  # type: ignore[arg-type]
    if type(value) is str:  # confidence "0.97" tolerated; 'nan'/'inf' are not numbers here
        try:
            number = float(value)
        except ValueError:
            pass
        else:
            if number == number and abs(number) != float("inf"):
                return number
    raise RemoteProtocolError(f"expected a number, got {_describe(value)}")


def _strict_dict(value: object, _: type) -> dict[str, Any]:
    if type(value) is dict:
        return value
    raise RemoteProtocolError(f"expected an object, got {_describe(value)}")


def _b64(value: object, _: type) -> bytes:
    if type(value) is not str:
        raise RemoteProtocolError(f"expected a base64 string, got {_describe(value)}")
    try:
        return binascii.a2b_base64(value, strict_mode=True)
    except (binascii.Error, ValueError) as exc:
        raise RemoteProtocolError(f"invalid base64 ({exc})") from None


def _structure_stream_params(value: object, _: type) -> StreamParams:
    params = _strict_dict(value, dict)
    track = params.get("track")
    if track is None:
        track = params.get("stream_track")
    url = params.get("stream_url")
    return StreamParams(
        stream_url=None if url is None else _strict_str(url, str),
        track=None if track is None else _strict_str(track, str),
    )


def _build_converter() -> OrjsonConverter:
    converter = make_converter(detailed_validation=True, forbid_extra_keys=False)
    converter.register_structure_hook(str, _strict_str)
    converter.register_structure_hook(int, _wire_int)
    converter.register_structure_hook(bool, _strict_bool)
    converter.register_structure_hook(float, _strict_float)
    converter.register_structure_hook_func(lambda t: t == dict[str, Any], _strict_dict)
    converter.register_structure_hook(bytes, _b64)
    converter.register_unstructure_hook(bytes, lambda b: binascii.b2a_base64(b, newline=False).decode())
    converter.register_structure_hook(StreamParams, _structure_stream_params)
    classes = [*WEBHOOK_PAYLOADS.values(), TranscriptionData, WebhookMeta, DialResult, ApiError]
    for cls in classes:
        renames: dict[str, Any] = {}
        if "from_" in attrs.fields_dict(cls):
            renames["from_"] = override(rename="from")
        converter.register_structure_hook(cls, make_dict_structure_fn(cls, converter, **renames))
        converter.register_unstructure_hook(
            cls, make_dict_unstructure_fn(cls, converter, _cattrs_omit_if_default=True, **renames)
        )
    converter.register_unstructure_hook(
        StreamParams, make_dict_unstructure_fn(StreamParams, converter, _cattrs_omit_if_default=True)
    )
    return converter


_converter: Final = _build_converter()


def _format_exception(exc: BaseException, type_: type | None) -> str:
    if isinstance(exc, ProtocolError):
        return exc.reason
    if isinstance(exc, KeyError):
        return "required field missing"
    return format_exception(exc, type_)


def _structure(value: Any, cls: type, where: str) -> Any:
    """Structure with the converter, turning cattrs' exception groups into one readable reason."""
    try:
        return _converter.structure(value, cls)
    except (ClassValidationError, IterableValidationError) as exc:
        messages = transform_error(exc, path=where, format_exception=_format_exception)
        reason = "; ".join(messages[:3]).replace(".from_", ".from")
        raise RemoteProtocolError(reason or f"invalid {where}") from None
    except ProtocolError as exc:
        raise RemoteProtocolError(f"{where}: {exc.reason}") from None
    except (TypeError, ValueError, KeyError, AttributeError) as exc:  # safety net
        raise RemoteProtocolError(f"invalid {where} ({type(exc).__name__})") from None


def _load(body: bytes | str, what: str) -> dict[str, Any]:
    if not isinstance(body, (bytes, bytearray, memoryview, str)):
        raise LocalProtocolError(f"{what} body must be bytes or str, not {type(body).__name__}")
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise RemoteProtocolError(f"{what} is not valid JSON ({str(exc)[:80]})") from None
    if type(value) is not dict:
        raise RemoteProtocolError(f"{what} must be a JSON object, got {_describe(value)}")
    return value


def _data(envelope: dict[str, Any], what: str) -> dict[str, Any]:
    data = envelope.get("data")
    if type(data) is not dict:
        raise RemoteProtocolError(f"{what}: 'data' must be an object, got {_describe(data)}")
    return data


def decode_webhook(body: bytes | str) -> WebhookEvent:
    """Parse a webhook body (after :func:`protocols.telnyx_signature.verify_webhook`).

    Raises:
        RemoteProtocolError: not JSON, no ``data`` object, ``data.id``/``data.event_type`` missing,
            a known event's payload with a missing or mistyped field we model, bad base64
            ``client_state``. Unknown event types are *not* errors.
    """
    envelope = _load(body, "webhook")
    data = _data(envelope, "webhook")
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
        payload = _structure(raw_payload, cls, "data.payload")
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
        meta=None if meta is None else _structure(meta, WebhookMeta, "meta"),
    )


def _normal_form(encoded: bytes, original: Any, decoder: Callable[[bytes], Any]) -> bytes:
    """Decode what we encoded: the emulator must only emit what our parser accepts, unchanged."""
    try:
        again = decoder(encoded)
    except RemoteProtocolError as exc:
        raise LocalProtocolError(f"cannot encode {type(original).__name__}: {exc.reason}") from None
    if again != original:
        raise LocalProtocolError(f"{type(original).__name__} is not in normal form (decodes as {again!r})")
    return encoded


def _dumps(value: Any, what: str) -> bytes:
    try:
        return orjson.dumps(value)
    except (TypeError, orjson.JSONEncodeError) as exc:
        raise LocalProtocolError(f"cannot encode {what}: {exc}") from None


def _unstructure(value: Any, what: str) -> Any:
    try:
        return _converter.unstructure(value)
    except (TypeError, ValueError, AttributeError) as exc:
        raise LocalProtocolError(f"cannot encode {what}: {exc}") from None


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
        payload = _unstructure(event.payload, event.event_type)
    data: dict[str, Any] = {"record_type": event.record_type, "event_type": event.event_type, "id": event.id}
    if event.occurred_at is not None:
        data["occurred_at"] = event.occurred_at
    data["payload"] = payload
    envelope: dict[str, Any] = {"data": data}
    if event.meta is not None:
        envelope["meta"] = _unstructure(event.meta, "meta")
    return _normal_form(_dumps(envelope, "webhook"), event, decode_webhook)


def decode_api_errors(status: int, body: bytes | str) -> TelnyxApiErrors:
    """The ``{"errors": [...]}`` envelope of a non-2xx answer. Tolerant by design: a body that is
    not the envelope (HTML from a proxy, empty) gives no errors rather than an exception, so the
    status still drives the caller's decision."""
    if type(status) is not int:
        raise LocalProtocolError("status must be an int")
    try:
        envelope = _load(body, "error response")
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
            errors.append(_structure(entry, ApiError, "errors[]"))
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
    data = _data(_load(body, "dial response"), "dial response")
    return _structure(data, DialResult, "data")


def decode_command_response(status: int, body: bytes | str) -> CommandResult | TelnyxApiErrors:
    """A command's answer: :class:`CommandResult` on 2xx, :class:`TelnyxApiErrors` otherwise.

    Raises:
        RemoteProtocolError: a 2xx body that is not ``{"data": {"result": <str>}}``.
    """
    if type(status) is not int:
        raise LocalProtocolError("status must be an int")
    if not 200 <= status < 300:
        return decode_api_errors(status, body)
    result = _data(_load(body, "command response"), "command response").get("result")
    if type(result) is not str:
        raise RemoteProtocolError("command response: data.result must be a string")
    return CommandResult(result)


def encode_dial_response(result: DialResult) -> bytes:
    """The emulator's ``POST /calls`` 200 body."""
    data = _unstructure(result, "DialResult")
    data.setdefault("is_alive", False)
    return _normal_form(_dumps({"data": data}, "DialResult"), result, lambda b: decode_dial_response(200, b))


def encode_command_result(result: CommandResult = CommandResult()) -> bytes:
    """The emulator's command 200 body, ``{"data":{"result":"ok"}}``."""
    if type(result) is not CommandResult or type(result.result) is not str:
        raise LocalProtocolError("encode_command_result takes a CommandResult with a str result")
    return _dumps({"data": {"result": result.result}}, "CommandResult")


def encode_api_errors(errors: TelnyxApiErrors) -> bytes:
    """The emulator's error body, ``{"errors": [{code, title, detail, source, meta}]}``."""
    if type(errors) is not TelnyxApiErrors:
        raise LocalProtocolError(f"not a TelnyxApiErrors: {type(errors).__name__}")
    body = _dumps({"errors": [_unstructure(e, "ApiError") for e in errors.errors]}, "TelnyxApiErrors")
    return _normal_form(body, errors, lambda b: decode_api_errors(errors.status, b))
