"""Telnyx Call Control v2 request builders: one function per command, returning an :class:`ApiRequest`.

Each returns the method, the path relative to the ``/v2`` base URL and the JSON body, and never
touches the network; the HTTP actor sends it with ``Authorization: Bearer``. Inputs are checked
(:mod:`protocols.telnyx_request_checks`) and a bad one raises
:class:`~protocols.errors.LocalProtocolError`. Re-exported by :mod:`protocols.telnyx_call_control`.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any, Final, Literal

from protocols.jsonwire import b64encode
from protocols.telnyx_request_checks import (
    ApiRequest,
    ClientState,
    call_path,
    check_choice,
    check_e164,
    check_int,
    check_text,
    check_url,
    common_fields,
    fail,
    json_body,
    stream_fields,
)

__all__ = [
    "DIAL_TIMEOUT_RANGE_S",
    "SPEAK_MAX_CHARS",
    "TIME_LIMIT_MAX_S",
    "answer",
    "dial",
    "hangup",
    "playback_start",
    "playback_stop",
    "speak",
    "streaming_start",
    "streaming_stop",
    "transcription_start",
    "transcription_stop",
]

SPEAK_MAX_CHARS: Final = 3000
DIAL_TIMEOUT_RANGE_S: Final = (5, 600)
TIME_LIMIT_MAX_S: Final = 14400


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
    check_text("connection_id", connection_id)
    check_e164("to", to, allow_sip=True)
    check_e164("from_", from_)
    if webhook_url is not None:
        check_url("webhook_url", webhook_url, ("https", "http"))
    if timeout_secs is not None:
        check_int("timeout_secs", timeout_secs, *DIAL_TIMEOUT_RANGE_S)
    if time_limit_secs is not None:
        check_int("time_limit_secs", time_limit_secs, 1, TIME_LIMIT_MAX_S)
    if from_display_name is not None:
        check_text("from_display_name", from_display_name, max_chars=128)
    if stream_establish_before_call_originate is not None:
        if type(stream_establish_before_call_originate) is not bool or stream_url is None:
            raise fail("stream_establish_before_call_originate needs a bool and a stream_url")
    body = json_body(
        connection_id=connection_id,
        to=to,
        from_=from_,
        from_display_name=from_display_name,
        webhook_url=webhook_url,
        timeout_secs=timeout_secs,
        time_limit_secs=time_limit_secs,
        stream_establish_before_call_originate=stream_establish_before_call_originate,
    )
    body |= stream_fields(
        stream_url=stream_url,
        stream_track=stream_track,
        stream_codec=stream_codec,
        stream_bidirectional_mode=stream_bidirectional_mode,
        stream_bidirectional_codec=stream_bidirectional_codec,
        stream_bidirectional_sampling_rate=stream_bidirectional_sampling_rate,
        stream_bidirectional_target_legs=stream_bidirectional_target_legs,
        stream_auth_token=stream_auth_token,
    )
    return ApiRequest("POST", "/calls", body | common_fields(client_state, command_id))


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
        check_url("webhook_url", webhook_url, ("https", "http"))
    if send_silence_when_idle is not None and type(send_silence_when_idle) is not bool:
        raise fail("send_silence_when_idle must be a bool")
    body = stream_fields(
        stream_url=stream_url,
        stream_track=stream_track,
        stream_codec=stream_codec,
        stream_bidirectional_mode=stream_bidirectional_mode,
        stream_bidirectional_codec=stream_bidirectional_codec,
        stream_bidirectional_sampling_rate=stream_bidirectional_sampling_rate,
        stream_bidirectional_target_legs=stream_bidirectional_target_legs,
        stream_auth_token=stream_auth_token,
    )
    body |= json_body(send_silence_when_idle=send_silence_when_idle, webhook_url=webhook_url)
    return ApiRequest(
        "POST", call_path(call_control_id, "answer"), body | common_fields(client_state, command_id)
    )


def hangup(
    call_control_id: str,
    *,
    client_state: ClientState | None = None,
    command_id: str | uuid.UUID | None = None,
) -> ApiRequest:
    """Hang up. A 422 with code ``90018`` means the call had already ended (benign)."""
    return ApiRequest("POST", call_path(call_control_id, "hangup"), common_fields(client_state, command_id))


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
        raise fail("playback_start needs exactly one of audio_url, media_name, playback_content")
    if audio_url is not None:
        check_url("audio_url", audio_url, ("https", "http"))
    if media_name is not None:
        check_text("media_name", media_name)
    content = None
    if playback_content is not None:
        if type(playback_content) is not bytes or not playback_content:
            raise fail("playback_content must be non-empty bytes")
        content = b64encode(playback_content)
    if audio_type is not None:
        check_choice("audio_type", audio_type, ("mp3", "wav"))
    if loop is not None and loop != "infinity":
        check_int("loop", loop, 1, 100)
    if stop is not None:
        check_choice("stop", stop, ("current", "all"))
    if target_legs is not None:
        check_choice("target_legs", target_legs, ("self", "opposite", "both"))
    for name, flag in (("overlay", overlay), ("cache_audio", cache_audio)):
        if flag is not None and type(flag) is not bool:
            raise fail(f"{name} must be a bool")
    body = json_body(
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
        "POST", call_path(call_control_id, "playback_start"), body | common_fields(client_state, command_id)
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
        check_choice("stop", stop, ("current", "all"))
    if overlay is not None and type(overlay) is not bool:
        raise fail("overlay must be a bool")
    body = json_body(stop=stop, overlay=overlay)
    return ApiRequest(
        "POST", call_path(call_control_id, "playback_stop"), body | common_fields(client_state, command_id)
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
    check_text("payload", payload, max_chars=SPEAK_MAX_CHARS)
    check_text("voice", voice)
    if language is not None:
        check_text("language", language)
    if payload_type is not None:
        check_choice("payload_type", payload_type, ("text", "ssml"))
    if service_level is not None:
        check_choice("service_level", service_level, ("basic", "premium"))
    if stop is not None:
        check_choice("stop", stop, ("current", "all"))
    if target_legs is not None:
        check_choice("target_legs", target_legs, ("self", "opposite", "both"))
    if voice_settings is not None and not isinstance(voice_settings, Mapping):
        raise fail("voice_settings must be a mapping")
    body = json_body(
        payload=payload,
        voice=voice,
        language=language,
        payload_type=payload_type,
        service_level=service_level,
        stop=stop,
        target_legs=target_legs,
        voice_settings=None if voice_settings is None else dict(voice_settings),
    )
    return ApiRequest(
        "POST", call_path(call_control_id, "speak"), body | common_fields(client_state, command_id)
    )


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
        raise fail("streaming_start needs a stream_url")
    body = stream_fields(
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
            raise fail("custom_parameters must map non-empty str names to str values")
        body["custom_parameters"] = [{"name": k, "value": v} for k, v in custom_parameters.items()]
    return ApiRequest(
        "POST", call_path(call_control_id, "streaming_start"), body | common_fields(client_state, command_id)
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
        check_text("stream_id", stream_id)
    body = json_body(stream_id=stream_id)
    return ApiRequest(
        "POST", call_path(call_control_id, "streaming_stop"), body | common_fields(client_state, command_id)
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
        check_text("transcription_engine", transcription_engine)
    if transcription_tracks is not None:
        check_choice("transcription_tracks", transcription_tracks, ("inbound", "outbound", "both"))
    if transcription_engine_config is not None and not isinstance(transcription_engine_config, Mapping):
        raise fail("transcription_engine_config must be a mapping")
    body = json_body(
        transcription_engine=transcription_engine,
        transcription_tracks=transcription_tracks,
        transcription_engine_config=(
            None if transcription_engine_config is None else dict(transcription_engine_config)
        ),
    )
    return ApiRequest(
        "POST",
        call_path(call_control_id, "transcription_start"),
        body | common_fields(client_state, command_id),
    )


def transcription_stop(
    call_control_id: str,
    *,
    client_state: ClientState | None = None,
    command_id: str | uuid.UUID | None = None,
) -> ApiRequest:
    """Stop Telnyx-side transcription."""
    return ApiRequest(
        "POST", call_path(call_control_id, "transcription_stop"), common_fields(client_state, command_id)
    )

