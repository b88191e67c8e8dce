"""The Telnyx API emulator's request checks: what Telnyx answers 4xx to (telnyx.md §3)."""

from __future__ import annotations

import io
import wave
from collections.abc import Mapping
from typing import Any

import orjson

from bench.emulators.telnyx_api.records import MP3_BYTES_PER_S
from protocols.audio import Codec
from protocols.errors import LocalProtocolError
from protocols.jsonwire import b64decode, b64encode
from protocols.telnyx_call_control import (
    BIDIRECTIONAL_CODECS,
    BIDIRECTIONAL_SAMPLING_RATES,
    SPEAK_MAX_CHARS,
    STREAM_CODECS,
    STREAM_TRACKS,
    ApiError,
)
from protocols.telnyx_request_checks import STREAM_AUTH_TOKEN_MAX_CHARS, check_e164, check_url



class _ApiFailure(Exception):
    def __init__(self, status: int, *errors: ApiError) -> None:
        super().__init__(status)
        self.status = status
        self.errors = errors


def _error(code: str, title: str, detail: str, pointer: str | None = None) -> ApiError:
    return ApiError(
        code=code, title=title, detail=detail, source=None if pointer is None else {"pointer": pointer}
    )


def _missing(name: str) -> ApiError:
    return _error("10004", "Missing required parameter", f"The '{name}' parameter is required.", f"/{name}")


def _invalid(name: str, detail: str) -> ApiError:
    return _error("10015", "Invalid parameter", detail, f"/{name}")


def _json_object(raw: bytes, *, allow_empty: bool) -> dict[str, Any]:
    if allow_empty and not raw.strip():
        return {}
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        bad = _error("10015", "Bad Request", "The request body is not valid JSON.")
        raise _ApiFailure(400, bad) from None
    if type(body) is not dict:
        raise _ApiFailure(400, _error("10015", "Bad Request", "The request body must be a JSON object."))
    return body


def _is_text(value: Any) -> bool:
    return type(value) is str and bool(value)


def _canonical_b64(value: Any) -> bool:
    if not _is_text(value):
        return False
    try:
        return b64encode(b64decode(value)) == value
    except ValueError:
        return False


def _number_errors(body: Mapping[str, Any], name: str, e164_only: bool) -> list[ApiError]:
    if name not in body:
        return [_missing(name)]
    values = body[name] if type(body[name]) is list and not e164_only else [body[name]]
    for value in values or [None]:
        try:
            check_e164(name, value, allow_sip=not e164_only)
        except LocalProtocolError:
            detail = "must be in +E.164 format" + ("" if e164_only else " or a sip: URI")
            title = "Phone number must be in +E.164 format"
            return [_error("10016", title, f"'{name}' {detail}.", f"/{name}")]
    return []


def _common_errors(body: Mapping[str, Any]) -> list[ApiError]:
    errors = []
    if "client_state" in body and not _canonical_b64(body["client_state"]):
        errors.append(_invalid("client_state", "client_state must be a valid base64 string."))
    if "command_id" in body and not _is_text(body["command_id"]):
        errors.append(_invalid("command_id", "command_id must be a non-empty string."))
    if "webhook_url" in body:
        try:
            check_url("webhook_url", body["webhook_url"], ("https", "http"))
        except LocalProtocolError as exc:
            errors.append(_error("10003", "Invalid URL", exc.reason, "/webhook_url"))
    return errors


def _int_errors(body: Mapping[str, Any], name: str, low: int, high: int) -> list[ApiError]:
    value = body.get(name)
    if name in body and (type(value) is not int or not low <= value <= high):
        return [_invalid(name, f"{name} must be an integer between {low} and {high}.")]
    return []


def _stream_errors(body: Mapping[str, Any], *, required: bool = False) -> list[ApiError]:
    url = body.get("stream_url")
    options = [k for k in body if k.startswith("stream_") and k != "stream_url"]
    if url is None:
        if required:
            return [_missing("stream_url")]
        # Track and mode have defaults and are harmless; anything else needs the stream.
        stray = [k for k in options if k not in ("stream_track", "stream_bidirectional_mode")]
        return [_invalid(k, f"{k} requires stream_url.") for k in stray]
    errors = []
    try:
        check_url("stream_url", url, ("wss", "ws"))
    except LocalProtocolError as exc:
        errors.append(_error("10003", "Invalid URL", exc.reason, "/stream_url"))
    choices: dict[str, frozenset[Any]] = {
        "stream_track": STREAM_TRACKS,
        "stream_codec": STREAM_CODECS,
        "stream_bidirectional_mode": frozenset({"mp3", "rtp"}),
        "stream_bidirectional_codec": BIDIRECTIONAL_CODECS,
        "stream_bidirectional_sampling_rate": BIDIRECTIONAL_SAMPLING_RATES,
        "stream_bidirectional_target_legs": frozenset({"both", "self", "opposite"}),
    }
    for name, allowed in choices.items():
        value = body.get(name)
        if name in body and (type(value) is bool or type(value) not in (str, int) or value not in allowed):
            errors.append(_invalid(name, f"{name} must be one of {sorted(map(str, allowed))}."))
    if body.get("stream_bidirectional_mode") != "rtp":
        for name in ("stream_bidirectional_codec", "stream_bidirectional_sampling_rate"):
            if name in body:
                errors.append(_invalid(name, f"{name} requires stream_bidirectional_mode 'rtp'."))
    token = body.get("stream_auth_token")
    if "stream_auth_token" in body and not (
        isinstance(token, str) and 0 < len(token) <= STREAM_AUTH_TOKEN_MAX_CHARS
    ):
        errors.append(_invalid("stream_auth_token", "stream_auth_token must be a string of at most "
                                                    f"{STREAM_AUTH_TOKEN_MAX_CHARS} characters."))
    flag = "stream_establish_before_call_originate"
    if flag in body and type(body[flag]) is not bool:
        errors.append(_invalid(flag, f"{flag} must be a boolean."))
    return errors


def _dial_errors(body: Mapping[str, Any]) -> list[ApiError]:
    errors = []
    if "connection_id" not in body:
        errors.append(_missing("connection_id"))
    elif not _is_text(body["connection_id"]):
        errors.append(_invalid("connection_id", "connection_id must be a non-empty string."))
    errors += _number_errors(body, "to", e164_only=False)
    errors += _number_errors(body, "from", e164_only=True)
    errors += _common_errors(body)
    errors += _int_errors(body, "timeout_secs", 5, 600)
    errors += _int_errors(body, "time_limit_secs", 1, 14400)
    errors += _stream_errors(body)
    return errors


def _action_errors(verb: str, body: Mapping[str, Any]) -> list[ApiError]:
    errors = _common_errors(body)
    if verb == "answer":
        errors += _stream_errors(body)
    elif verb == "streaming_start":
        errors += _stream_errors(body, required=True)
    elif verb == "speak":
        for name in ("payload", "voice"):
            if name not in body:
                errors.append(_missing(name))
            elif not _is_text(body[name]):
                errors.append(_invalid(name, f"{name} must be a non-empty string."))
        payload = body.get("payload")
        if type(payload) is str and len(payload) > SPEAK_MAX_CHARS:
            errors.append(_invalid("payload", f"payload must be at most {SPEAK_MAX_CHARS} characters."))
    elif verb == "playback_start":
        sources = [k for k in ("audio_url", "media_name", "playback_content") if k in body]
        if len(sources) != 1:
            errors.append(_invalid("audio_url", "Exactly one of audio_url, media_name or "
                                                "playback_content is required."))
        elif "audio_url" in body:
            try:
                check_url("audio_url", body["audio_url"], ("https", "http"))
            except LocalProtocolError as exc:
                errors.append(_error("10003", "Invalid URL", exc.reason, "/audio_url"))
        elif "playback_content" in body and not _canonical_b64(body["playback_content"]):
            errors.append(_invalid("playback_content", "playback_content must be base64."))
    return errors


def _stream_format(params: Mapping[str, Any]) -> tuple[Codec, int]:
    """The codec and rate the caller streams in (ValueError: a codec the emulator cannot make)."""
    name = params.get("stream_codec")
    if name in (None, "default"):
        name = params.get("stream_bidirectional_codec") or "PCMU"
    codec = Codec(name)
    if codec is Codec.L16:
        return codec, int(params.get("stream_bidirectional_sampling_rate") or 16000)
    return codec, 8000


def _audio_duration_s(content: bytes) -> float:
    if content[:4] == b"RIFF":
        try:
            with wave.open(io.BytesIO(content)) as wav:
                return wav.getnframes() / wav.getframerate()
        except (wave.Error, EOFError):
            pass
    return len(content) / MP3_BYTES_PER_S

