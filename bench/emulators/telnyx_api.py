"""A Telnyx Call Control v2 server (REST + signed webhooks + the far end of each call) for tests.

Speaks telnyx.md §3 (REST) and §4 (webhooks) through the pure codecs in
:mod:`protocols.telnyx_call_control` and :mod:`protocols.telnyx_signature`, as an ASGI app on
hypercorn's trio worker over real loopback sockets. The far end of every call is scripted
(:class:`CalleeScript`) and its media leg is a :class:`~bench.emulators.telnyx_caller.TelnyxCaller`
that dials our ``stream_url`` like Telnyx does::

    em = TelnyxApiEmulator(api_key="KEY", webhook_url=hook_url, callee_for=lambda to: CalleeScript(
        answer_after_s=0.5, audio=pcmu_bytes, hangup_after_s=8.0))
    base = await nursery.start(em.serve)       # "http://127.0.0.1:PORT/v2"; TELNYX_API_BASE=base
    settings.telnyx_public_key = em.public_key_b64
    ...
    call = em.calls[call_control_id]           # state, dial_body, commands, webhooks, caller_record

REST (every request needs ``Authorization: Bearer <api_key>``, else 401 code ``10009``):

- ``POST /v2/calls`` (dial) is validated: ``connection_id``, ``to`` (E.164 or ``sip:``; a list
  is allowed), ``from`` (E.164), ``client_state`` (canonical base64), ``webhook_url``,
  ``timeout_secs``, ``time_limit_secs`` and consistent ``stream_*`` fields (a ws/wss URL, known
  codecs/tracks/rates, the bidirectional codec and rate only with ``mode=rtp``, no stream option
  without a ``stream_url``). Bad input: 422 with one ``errors[]`` entry per problem, each with
  ``source.pointer`` (codes: ``10004`` missing, ``10016`` not E.164, ``10003`` bad URL, ``10015``
  otherwise); a body that is not a JSON object: 400 ``10015``. Success: 200 ``{data:
  {call_control_id: "v3:…", call_leg_id, call_session_id, is_alive: false, record_type: "call",
  client_state}}`` and the call starts ringing.
- ``POST /v2/calls/{id}/actions/{verb}`` for :data:`VERBS` → 200 ``{"data":{"result":"ok"}}``;
  an unknown id or an ended call → 422 ``90018`` "Call has already ended"; another verb → 404
  ``10005``. ``speak`` needs ``payload`` and ``voice``, ``playback_start`` exactly one source,
  ``streaming_start`` a valid stream (422 otherwise). A ``client_state`` on a command replaces
  the call's, and later webhooks echo it.
- ``GET /v2/calls/{id}``: the call's status (``is_alive``).
- ``command_id``: the same id within :data:`COMMAND_ID_WINDOW_S` (per call for actions, per
  account for dials) gets the first 200 answer again and does nothing (recorded as duplicate).
  Only 200s are remembered, so a retry after a 5xx is executed.

The far end (outbound: ``callee_for(to)``; inbound: the script given to
:meth:`TelnyxApiEmulator.place_inbound_call`). Webhooks in this order, per call and one at a time:

- outbound: ``call.initiated`` (outgoing, ``bridging``) → ring ``answer_after_s`` → ``answer``:
  ``call.answered`` → ``streaming.started`` once the caller has sent ``connected`` + ``start``
  to the dial's ``stream_url`` (header ``x-telnyx-streaming-auth-token`` = ``stream_auth_token``;
  codec from ``stream_codec``, else ``stream_bidirectional_codec``, else PCMU) → … →
  ``call.hangup`` (``normal_clearing``; ``hangup_source`` callee when the script hangs up after
  ``hangup_after_s``, caller after our ``hangup`` action) → ``streaming.stopped``. The caller
  sends ``stop`` and closes before ``call.hangup`` goes out. ``busy`` / ``reject`` /
  ``no_answer``: after the ring, ``call.hangup`` with ``user_busy`` / ``call_rejected`` /
  ``timeout``. Our hangup while ringing: ``originator_cancel``. The dial's ``timeout_secs``
  cuts a longer ring (``timeout``) and ``time_limit_secs`` a longer call (``time_limit``).
- inbound: ``call.initiated`` (incoming, ``parked``) → our ``answer`` (stream_* as on dial) →
  ``call.answered`` → ``streaming.started`` → … as above with the roles swapped
  (``hangup_source`` callee when we hang up). Unanswered after ``give_up_after_s``:
  ``originator_cancel``.
- ``streaming.failed`` (``connection_failed``) when the WebSocket cannot be opened or is
  refused; ``streaming_start`` / ``streaming_stop`` open and close more streams on a live call.
- ``speak`` → ``call.speak.started``, ``call.speak.ended`` after ``len(payload) /``
  :data:`SPEAK_CHARS_PER_S`. ``playback_start`` fetches ``audio_url`` with httpx (recorded in
  ``playback_fetches``) → ``call.playback.started``, ``call.playback.ended`` (``completed``)
  after the file's duration (WAV header, else 128 kbit/s mp3) or ``playback_duration_s``; a
  failed fetch gives only ``call.playback.ended`` with ``file_not_found``. ``playback_stop``
  ends playbacks and speaks with ``cancelled``; a hangup ends them with ``call_hangup`` (before
  ``call.hangup``). ``transcription_start`` → the script's ``transcripts`` as
  ``call.transcription`` events, each ``at_s`` after the command.

Times in scripts are call time; every wait is divided by ``speed`` (and the caller streams at
``speed`` x real time).

Webhook delivery: POST to the call's webhook URL (the dial's or answer's ``webhook_url``, else
the emulator's ``webhook_url``), the body from :func:`encode_webhook` with ``meta`` ``{attempt,
delivered_to}``, signed with the emulator's Ed25519 key (``telnyx-signature-ed25519``,
``telnyx-timestamp``). Non-2xx or no answer: retried up to ``webhook_attempts`` times with
``webhook_backoff_s * attempt`` between (same ``data.id``, re-signed). Every attempt is a
:class:`Delivery` in ``deliveries`` (and the call's).

Fault knobs (attributes; change them at any time): ``duplicate_webhooks`` (each event delivered
twice, same id), ``shuffle`` (events that become due within ``shuffle_window_s`` of each other
go out in a random order; ``call.initiated`` stays first and ``call.initiated`` /
``call.answered`` / ``call.hangup`` keep their relative order), ``bad_signature_next``,
``stale_timestamp_next`` (signed 600 s ago), ``missing_signature_next`` (counts of deliveries
to spoil, each attempt consumes one; the retry is signed properly), ``api_down`` (``"503"``:
every REST call gets 503; ``"refuse"``: the listener is closed, connections are refused, and
setting it back to None reopens the same port), ``stream_never_connects`` (answered, no
WebSocket, no streaming webhook).
"""

from __future__ import annotations

import io
import logging
import math
import random
import re
import secrets
import time
import uuid
import wave
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime
from functools import partial
from typing import Any, Final, Literal, cast

import attrs
import httpx
import orjson
import trio
from hypercorn.config import Config
from hypercorn.trio.run import worker_serve
from hypercorn.utils import wrap_app
from trio_websocket import HandshakeError, WebSocketConnection

from bench.emulators.telnyx_caller import CallerRecord, TelnyxCaller
from protocols.audio import Codec
from protocols.errors import LocalProtocolError
from protocols.jsonwire import b64decode, b64encode
from protocols.telnyx_call_control import (
    BIDIRECTIONAL_CODECS,
    BIDIRECTIONAL_SAMPLING_RATES,
    CALL_HAS_ENDED,
    SPEAK_MAX_CHARS,
    STREAM_CODECS,
    STREAM_TRACKS,
    ApiError,
    CallAnswered,
    CallHangup,
    CallInitiated,
    CallPlaybackEnded,
    CallPlaybackStarted,
    CallSpeakEnded,
    CallSpeakStarted,
    CallTranscription,
    DialResult,
    StreamingFailed,
    StreamingStarted,
    StreamingStopped,
    StreamParams,
    TelnyxApiErrors,
    TranscriptionData,
    WebhookEvent,
    WebhookMeta,
    WebhookPayload,
    encode_api_errors,
    encode_command_result,
    encode_dial_response,
    encode_webhook,
)
from protocols.telnyx_request_checks import STREAM_AUTH_TOKEN_MAX_CHARS, check_e164, check_url
from protocols.telnyx_signature import SIGNATURE_HEADER, WebhookKeypair, new_keypair, sign_webhook

__all__ = [
    "COMMAND_ID_WINDOW_S",
    "SPEAK_CHARS_PER_S",
    "VERBS",
    "ApiDown",
    "CalleeScript",
    "Delivery",
    "EmulatedCall",
    "EmulatedStream",
    "PlaybackFetch",
    "RecordedCommand",
    "ScriptedTranscript",
    "TelnyxApiEmulator",
]

log = logging.getLogger(__name__)

VERBS: Final = frozenset({
    "answer", "hangup", "playback_start", "playback_stop", "speak", "streaming_start",
    "streaming_stop", "transcription_start", "transcription_stop",
})  # fmt: skip
COMMAND_ID_WINDOW_S: Final = 60.0
WEBHOOK_ATTEMPTS: Final = 3
WEBHOOK_BACKOFF_S: Final = 0.05
WEBHOOK_TIMEOUT_S: Final = 2.0
SHUFFLE_WINDOW_S: Final = 0.05
STALE_TIMESTAMP_AGE_S: Final = 600
#: Telnyx-side TTS speed for the ``speak`` duration (about 180 words a minute).
SPEAK_CHARS_PER_S: Final = 15.0
#: Duration of a non-WAV file: assume a 128 kbit/s mp3.
MP3_BYTES_PER_S: Final = 16_000
#: Duration of a ``media_name`` playback (the stored file is not known here).
MEDIA_NAME_DURATION_S: Final = 1.0
PLAYBACK_FETCH_TIMEOUT_S: Final = 5.0
#: How long a hangup waits for the caller to send ``stop`` and for media to report, before cancelling.
TEARDOWN_TIMEOUT_S: Final = 2.0
#: The caller streams (silence after the script's audio) until stopped; this only bounds it.
CALLER_MAX_CALL_S: Final = 24 * 3600.0
GRACEFUL_SHUTDOWN_S: Final = 1.0
MAX_REQUEST_BYTES: Final = 1_000_000

Outcome = Literal["answer", "busy", "no_answer", "reject"]
CallState = Literal["parked", "bridging", "answered", "hangup"]
ApiDown = Literal["503", "refuse"]
SignatureFault = Literal["bad_signature", "stale_timestamp", "missing_signature"]

#: Events whose relative order ``shuffle`` keeps.
_LIFECYCLE: Final = frozenset({"call.initiated", "call.answered", "call.hangup"})
#: outcome -> (hangup_cause, sip_hangup_cause) after the ring.
_FAILED_OUTCOMES: Final[Mapping[str, tuple[str, str]]] = {
    "busy": ("user_busy", "486"),
    "reject": ("call_rejected", "603"),
    "no_answer": ("timeout", "480"),
}
_ACTION_PATH: Final = re.compile(r"/v2/calls/([^/]+)/actions/([^/]+)")
_CALL_PATH: Final = re.compile(r"/v2/calls/([^/]+)")
_QUALITY_STATS: Final[Mapping[str, Any]] = {
    "inbound": {"jitter_max_variance": "2.74", "jitter_packet_count": "0", "mos": "4.50",
                "packet_count": "591", "skip_packet_count": "0"},
    "outbound": {"packet_count": "0", "skip_packet_count": "0"},
}  # fmt: skip

_Scope = Mapping[str, Any]
_Receive = Callable[[], Awaitable[dict[str, Any]]]
_Send = Callable[[dict[str, Any]], Awaitable[None]]


# --------------------------------------------------------------------------- scripts and records


@attrs.frozen
class ScriptedTranscript:
    """One ``call.transcription`` event, ``at_s`` of call time after ``transcription_start``."""

    at_s: float
    transcript: str
    is_final: bool = True
    confidence: float = 0.92


@attrs.frozen(kw_only=True)
class CalleeScript:
    """The far end of one call.

    ``outcome``: ``answer``, or ``busy`` / ``reject`` / ``no_answer`` (hangup after the ring).
    ``answer_after_s``: the ring (outbound). ``audio``: the far end's voice in the stream codec,
    streamed on every media stream of the call, then silence. ``hangup_after_s``: call time
    after the answer when the far end hangs up (None: it waits for our hangup).
    ``give_up_after_s``: inbound only, the caller hangs up if not answered by then.
    ``caller_options``: extra :class:`TelnyxCaller` arguments (``jitter_s``, ``end_with`` ...).
    """

    outcome: Outcome = "answer"
    answer_after_s: float = 0.05
    audio: bytes = attrs.field(default=b"", repr=False)
    dtmf: Sequence[tuple[float, str]] = ()
    hangup_after_s: float | None = None
    give_up_after_s: float | None = None
    transcripts: Sequence[ScriptedTranscript] = ()
    caller_options: Mapping[str, Any] = attrs.field(factory=dict, hash=False)


@attrs.frozen
class RecordedCommand:
    """One REST request: ``verb`` is ``dial``, an action verb, ``get``, or ``?`` (no route)."""

    at: float
    method: str
    path: str
    verb: str
    call_control_id: str | None
    headers: Mapping[str, str] = attrs.field(repr=False, hash=False)
    body: Any = attrs.field(hash=False)
    status: int
    duplicate: bool = False


@attrs.frozen
class Delivery:
    """One webhook POST attempt: ``status`` None when there was no HTTP answer (see ``error``)."""

    at: float
    call_control_id: str
    event_id: str
    event_type: str
    url: str | None
    attempt: int
    status: int | None
    error: str | None = None
    fault: SignatureFault | None = None
    duplicate: bool = False

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


@attrs.frozen
class PlaybackFetch:
    """``playback_start`` fetched ``url``: the HTTP status (None: no answer) and the bytes."""

    at: float
    url: str
    status: int | None
    content: bytes = attrs.field(repr=False)
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


@attrs.define(eq=False)
class _StreamingCaller(TelnyxCaller):
    """A TelnyxCaller that reports when it starts streaming and can be told to hang up (``stop``)."""

    on_streaming: Callable[[CallerRecord], None] | None = attrs.field(default=None, kw_only=True)
    _stop_scope: trio.CancelScope = attrs.field(init=False, factory=trio.CancelScope)

    def hang_up_now(self) -> None:
        """Stop streaming; the caller then sends ``stop`` and closes (``end_with``)."""
        self._stop_scope.cancel()

    async def _stream_media(self, ws: WebSocketConnection, record: CallerRecord) -> None:
        # Called right after ``start`` went out: that is when Telnyx reports streaming.started.
        if self.on_streaming is not None:
            self.on_streaming(record)
        with self._stop_scope:
            await super()._stream_media(ws, record)


@attrs.define(eq=False)
class EmulatedStream:
    """One media stream of a call; ``record`` is the caller's, set once it streams."""

    stream_id: str
    stream_url: str
    params: Mapping[str, Any] = attrs.field(repr=False)
    caller: _StreamingCaller | None = attrs.field(default=None, repr=False)
    record: CallerRecord | None = attrs.field(default=None, repr=False)
    started_at: float | None = None
    ended_at: float | None = None
    failure: str | None = None
    done: trio.Event = attrs.field(factory=trio.Event, repr=False)
    _scope: trio.CancelScope = attrs.field(factory=trio.CancelScope, repr=False)
    _stopped_reported: bool = attrs.field(default=False, repr=False)

    def hang_up(self) -> None:
        if self.caller is not None:
            self.caller.hang_up_now()
        else:
            self._scope.cancel()


@attrs.define(eq=False)
class _Activity:
    """A playback, speak or transcription in progress; ``end_status`` is set once (first wins)."""

    kind: Literal["playback", "speak", "transcription"]
    scope: trio.CancelScope = attrs.field(factory=trio.CancelScope)
    done: trio.Event = attrs.field(factory=trio.Event)
    end_status: str | None = None

    def stop(self, status: str) -> None:
        self.finish(status)
        self.scope.cancel()

    def finish(self, status: str) -> None:
        if self.end_status is None:
            self.end_status = status


@attrs.define(eq=False)
class EmulatedCall:
    """Everything about one call, for assertions. ``finished`` is set once its last webhook went."""

    call_control_id: str
    call_leg_id: str
    call_session_id: str
    connection_id: str
    direction: Literal["incoming", "outgoing"]
    from_: str
    to: str
    script: CalleeScript
    state: CallState
    client_state: str | None
    webhook_url: str | None
    start_time: str
    dial_body: Mapping[str, Any] | None = attrs.field(default=None, repr=False)
    commands: list[RecordedCommand] = attrs.field(factory=list, repr=False)
    webhooks: list[WebhookEvent] = attrs.field(factory=list, repr=False)
    deliveries: list[Delivery] = attrs.field(factory=list, repr=False)
    streams: list[EmulatedStream] = attrs.field(factory=list, repr=False)
    playback_fetches: list[PlaybackFetch] = attrs.field(factory=list, repr=False)
    hangup_cause: str | None = None
    hangup_source: str | None = None
    answered_at: float | None = None
    ended_at: float | None = None
    finished: trio.Event = attrs.field(factory=trio.Event, repr=False)
    _hangup_requested: trio.Event = attrs.field(factory=trio.Event, repr=False)
    _answer_or_hangup: trio.Event = attrs.field(factory=trio.Event, repr=False)
    _answer_params: Mapping[str, Any] | None = attrs.field(default=None, repr=False)
    _activities: list[_Activity] = attrs.field(factory=list, repr=False)
    _outbox: trio.MemorySendChannel[WebhookEvent] | None = attrs.field(default=None, repr=False)
    _nursery: trio.Nursery | None = attrs.field(default=None, repr=False)
    _changed: trio.Event = attrs.field(factory=trio.Event, repr=False)

    @property
    def alive(self) -> bool:
        return self.state != "hangup"

    @property
    def event_types(self) -> list[str]:
        """Emitted webhook event types, in emission order (deliveries may differ: see ``shuffle``)."""
        return [event.event_type for event in self.webhooks]

    @property
    def caller_record(self) -> CallerRecord | None:
        """The latest media stream's :class:`CallerRecord` (None until one streams)."""
        for stream in reversed(self.streams):
            if stream.record is not None:
                return stream.record
        return None

    async def wait_for_event(self, event_type: str, *, count: int = 1) -> WebhookEvent:
        """Wait until ``event_type`` has been emitted ``count`` times; return the last of them."""
        while True:
            found = [event for event in self.webhooks if event.event_type == event_type]
            if len(found) >= count:
                return found[count - 1]
            await self._changed.wait()

    def _touch(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    def _ids(self) -> dict[str, Any]:
        return {
            "call_control_id": self.call_control_id,
            "call_leg_id": self.call_leg_id,
            "call_session_id": self.call_session_id,
            "connection_id": self.connection_id,
            "client_state": None if self.client_state is None else b64decode(self.client_state),
        }


# --------------------------------------------------------------------------- request checks


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


def _now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _api_down_changed(instance: TelnyxApiEmulator, _: attrs.Attribute[Any], value: Any) -> Any:
    if value not in (None, "503", "refuse"):
        raise ValueError(f"api_down must be None, '503' or 'refuse', got {value!r}")
    instance._api_changed.set()  # noqa: SLF001 - the emulator's own hook
    instance._api_changed = trio.Event()  # noqa: SLF001
    return value


def _default_callee(to: str) -> CalleeScript:
    return CalleeScript()


# --------------------------------------------------------------------------- the emulator


@attrs.define(eq=False)
class TelnyxApiEmulator:
    """Telnyx Call Control v2 for tests: REST, the scripted far end, signed webhooks, faults.

    See the module docstring for the behaviour; every public attribute below the constructor
    arguments is a fault knob or a record.
    """

    api_key: str | None = "test-key"
    webhook_url: str | None = None
    callee_for: Callable[[str], CalleeScript] = _default_callee
    speed: float = 1.0
    host: str = "127.0.0.1"
    port: int = 0
    # -- fault knobs
    duplicate_webhooks: bool = False
    shuffle: bool = False
    shuffle_window_s: float = SHUFFLE_WINDOW_S
    bad_signature_next: int = 0
    stale_timestamp_next: int = 0
    missing_signature_next: int = 0
    api_down: ApiDown | None = attrs.field(default=None, on_setattr=_api_down_changed)
    stream_never_connects: bool = False
    # -- tuning
    webhook_attempts: int = WEBHOOK_ATTEMPTS
    webhook_backoff_s: float = WEBHOOK_BACKOFF_S
    playback_duration_s: float | None = None
    seed: int = 0
    keypair: WebhookKeypair = attrs.field(factory=new_keypair, repr=False)
    # -- records
    calls: dict[str, EmulatedCall] = attrs.field(factory=dict, init=False, repr=False)
    commands: list[RecordedCommand] = attrs.field(factory=list, init=False, repr=False)
    deliveries: list[Delivery] = attrs.field(factory=list, init=False, repr=False)
    base_url: str | None = attrs.field(default=None, init=False)
    _api_changed: trio.Event = attrs.field(factory=trio.Event, init=False, repr=False)
    _dedupe: dict[tuple[str, str], tuple[float, bytes]] = attrs.field(factory=dict, init=False, repr=False)
    _nursery: trio.Nursery | None = attrs.field(default=None, init=False, repr=False)
    _client: httpx.AsyncClient | None = attrs.field(default=None, init=False, repr=False)
    _rng: random.Random = attrs.field(init=False, repr=False)

    def __attrs_post_init__(self) -> None:
        self._rng = random.Random(self.seed)
        if self.speed <= 0:
            raise ValueError("speed must be positive")

    @property
    def public_key_b64(self) -> str:
        """The webhook verification key (base64 of the raw 32 bytes): the service's TELNYX_PUBLIC_KEY."""
        return self.keypair.public_key_b64

    # -- serving ------------------------------------------------------------------------------

    async def serve(self, *, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> None:
        """Listen, report the REST base ``http://host:port/v2``, serve until cancelled."""
        client = httpx.AsyncClient(timeout=WEBHOOK_TIMEOUT_S)
        try:
            async with trio.open_nursery() as nursery:
                self._client, self._nursery = client, nursery
                port, reported = self.port, False
                while True:
                    if self.api_down == "refuse":
                        await self._api_changed.wait()
                        continue
                    binds = await self._listen_until_refused(port, task_status if not reported else None)
                    port, reported = int(binds[0].rsplit(":", 1)[1]), True
        finally:
            with trio.CancelScope(shield=True):
                await client.aclose()

    async def _listen_until_refused(
        self, port: int, task_status: trio.TaskStatus[str] | None
    ) -> list[str]:
        config = Config()
        config.bind = [f"{self.host}:{port}"]
        config.accesslog = None
        config.errorlog = log
        config.graceful_timeout = GRACEFUL_SHUTDOWN_S
        # We create and close the listening socket: hypercorn's serve() leaves it to the GC.
        sockets = config.create_sockets()
        binds: list[str] = []

        async def refused() -> None:
            while self.api_down != "refuse":
                await self._api_changed.wait()

        try:
            for sock in sockets.insecure_sockets:
                sock.listen(config.backlog)
            async with trio.open_nursery() as server:
                binds = await server.start(partial(
                    worker_serve, wrap_app(cast(Any, self.asgi), config.wsgi_max_body_size, "asgi"),
                    config, sockets=sockets, shutdown_trigger=refused))  # fmt: skip
                if task_status is not None:
                    self.base_url = binds[0] + "/v2"
                    task_status.started(self.base_url)
        finally:
            for sock in sockets.insecure_sockets:
                sock.close()
        return binds

    async def place_inbound_call(
        self,
        to: str,
        from_: str,
        script: CalleeScript | None = None,
        *,
        connection_id: str = "emulated-connection",
    ) -> EmulatedCall:
        """Ring us: ``call.initiated`` (incoming, parked) goes to ``webhook_url``; returns the call."""
        if self._nursery is None:
            raise RuntimeError("serve() is not running")
        call = EmulatedCall(
            call_control_id=_new_call_control_id(), call_leg_id=str(uuid.uuid4()),
            call_session_id=str(uuid.uuid4()), connection_id=connection_id, direction="incoming",
            from_=from_, to=to, script=script or CalleeScript(), state="parked", client_state=None,
            webhook_url=self.webhook_url, start_time=_now_iso(),
        )  # fmt: skip
        self.calls[call.call_control_id] = call
        await self._nursery.start(self._run_call, call)
        return call

    # -- ASGI -----------------------------------------------------------------------------------

    async def asgi(self, scope: _Scope, receive: _Receive, send: _Send) -> None:
        """The ASGI application (lifespan and http)."""
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        elif scope["type"] == "http":
            await self._http(scope, receive, send)

    async def _http(self, scope: _Scope, receive: _Receive, send: _Send) -> None:
        at = trio.current_time()
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        method, path = scope["method"], scope["path"]
        raw = b""
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            raw += message.get("body", b"")
            if len(raw) > MAX_REQUEST_BYTES or not message.get("more_body", False):
                break
        verb, call_control_id = self._route(method, path)
        duplicate = False
        try:
            status, body, duplicate, call_control_id = await self._handle(
                method, verb, call_control_id, headers, raw
            )
        except _ApiFailure as failure:
            status = failure.status
            body = encode_api_errors(TelnyxApiErrors(status=status, errors=failure.errors))
        try:
            parsed: Any = orjson.loads(raw) if raw.strip() else None
        except orjson.JSONDecodeError:
            parsed = raw
        command = RecordedCommand(
            at=at, method=method, path=path, verb=verb, call_control_id=call_control_id,
            headers=headers, body=parsed, status=status, duplicate=duplicate,
        )  # fmt: skip
        self.commands.append(command)
        call = self.calls.get(call_control_id or "")
        if call is not None:
            call.commands.append(command)
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json")]})  # fmt: skip
        await send({"type": "http.response.body", "body": body})

    @staticmethod
    def _route(method: str, path: str) -> tuple[str, str | None]:
        if path.rstrip("/") == "/v2/calls":
            return "dial", None
        if match := _ACTION_PATH.fullmatch(path):
            return match[2], match[1]
        if method == "GET" and (match := _CALL_PATH.fullmatch(path)):
            return "get", match[1]
        return "?", None

    async def _handle(
        self, method: str, verb: str, call_control_id: str | None, headers: Mapping[str, str], raw: bytes
    ) -> tuple[int, bytes, bool, str | None]:
        """(status, body, duplicate, call_control_id) of a request; raises _ApiFailure."""
        if self.api_down is not None:
            raise _ApiFailure(503, _error("10007", "Service unavailable",
                                          "The service is temporarily unavailable (emulated outage)."))
        if self.api_key is not None and headers.get("authorization") != f"Bearer {self.api_key}":
            raise _ApiFailure(401, _error(
                "10009", "Authentication failed",
                "The required authentication headers were either invalid or not included in the request."))
        expected_method = "GET" if verb == "get" else "POST"
        if verb == "?" or (verb not in VERBS and verb not in ("dial", "get")):
            raise _ApiFailure(404, _error("10005", "Resource not found",
                                          "The requested resource or URL could not be found."))
        if method != expected_method:
            raise _ApiFailure(405, _error("10015", "Bad Request", f"{method} is not allowed here."))
        if verb == "get":
            assert call_control_id is not None
            return 200, self._status_body(call_control_id), False, call_control_id
        body = _json_object(raw, allow_empty=verb != "dial")
        command_id = body.get("command_id")
        key = ("dial" if verb == "dial" else f"call:{call_control_id}", command_id)
        if _is_text(command_id) and (cached := self._remembered(key)) is not None:
            if verb == "dial":
                call_control_id = orjson.loads(cached)["data"]["call_control_id"]
            return 200, cached, True, call_control_id
        if verb == "dial":
            response, call_control_id = await self._dial(body)
        else:
            assert call_control_id is not None
            response = self._action(call_control_id, verb, body)
        if _is_text(command_id):
            self._dedupe[cast(tuple[str, str], key)] = (trio.current_time(), response)
        return 200, response, False, call_control_id

    def _remembered(self, key: tuple[str, Any]) -> bytes | None:
        entry = self._dedupe.get(key)
        if entry is None:
            return None
        if trio.current_time() - entry[0] > COMMAND_ID_WINDOW_S:
            del self._dedupe[key]
            return None
        return entry[1]

    def _status_body(self, call_control_id: str) -> bytes:
        call = self.calls.get(call_control_id)
        if call is None:
            raise _ApiFailure(404, _error("10005", "Resource not found", "No call with that id."))
        return orjson.dumps({"data": {
            "record_type": "call", "call_control_id": call.call_control_id,
            "call_leg_id": call.call_leg_id, "call_session_id": call.call_session_id,
            "is_alive": call.alive, "client_state": call.client_state, "start_time": call.start_time,
        }})  # fmt: skip

    async def _dial(self, body: dict[str, Any]) -> tuple[bytes, str]:
        errors = _dial_errors(body)
        if errors:
            raise _ApiFailure(422, *errors)
        to = body["to"][0] if type(body["to"]) is list else body["to"]
        call = EmulatedCall(
            call_control_id=_new_call_control_id(), call_leg_id=str(uuid.uuid4()),
            call_session_id=str(uuid.uuid4()), connection_id=body["connection_id"],
            direction="outgoing", from_=body["from"], to=to, script=self.callee_for(to),
            state="bridging", client_state=body.get("client_state"),
            webhook_url=body.get("webhook_url", self.webhook_url), start_time=_now_iso(),
            dial_body=body,
        )  # fmt: skip
        response = encode_dial_response(DialResult(
            call_control_id=call.call_control_id, call_leg_id=call.call_leg_id,
            call_session_id=call.call_session_id, is_alive=False, record_type="call",
            client_state=call._ids()["client_state"],  # noqa: SLF001
        ))  # fmt: skip
        self.calls[call.call_control_id] = call
        assert self._nursery is not None
        await self._nursery.start(self._run_call, call)
        return response, call.call_control_id

    def _action(self, call_control_id: str, verb: str, body: dict[str, Any]) -> bytes:
        call = self.calls.get(call_control_id)
        if call is None or not call.alive:
            raise _ApiFailure(422, _error(CALL_HAS_ENDED, "Call has already ended",
                                          "This call is no longer active and can't receive commands."))
        errors = _action_errors(verb, body)
        if errors:
            raise _ApiFailure(422, *errors)
        if "client_state" in body:
            call.client_state = body["client_state"]
        nursery = call._nursery  # noqa: SLF001
        assert nursery is not None
        if verb == "answer":
            if call.direction == "incoming" and call.state == "parked":
                call.state = "answered"
                call._answer_params = body  # noqa: SLF001
                call.webhook_url = body.get("webhook_url", call.webhook_url)
                call._answer_or_hangup.set()  # noqa: SLF001
        elif verb == "hangup":
            call.state = "hangup"
            call._hangup_requested.set()  # noqa: SLF001
            call._answer_or_hangup.set()  # noqa: SLF001
        elif verb in ("playback_start", "speak", "transcription_start"):
            kind = {"playback_start": "playback", "speak": "speak"}.get(verb, "transcription")
            activity = _Activity(cast(Any, kind))
            call._activities.append(activity)  # noqa: SLF001
            run = {"playback": self._playback, "speak": self._speak}.get(kind, self._transcribe)
            nursery.start_soon(self._activity, call, activity, run, body)
        elif verb in ("playback_stop", "transcription_stop"):
            kinds = ("playback", "speak") if verb == "playback_stop" else ("transcription",)
            targets = [a for a in call._activities if a.kind in kinds]  # noqa: SLF001
            if verb == "playback_stop" and body.get("stop") == "current":
                targets = targets[-1:]
            for activity in targets:
                activity.stop("cancelled")
        elif verb == "streaming_start":
            nursery.start_soon(self._stream, call, body)
        elif verb == "streaming_stop":
            for stream in call.streams:
                if body.get("stream_id") in (None, stream.stream_id) and not stream.done.is_set():
                    stream.hang_up()
        return encode_command_result()

    # -- one call ---------------------------------------------------------------------------

    async def _run_call(self, call: EmulatedCall, *, task_status: trio.TaskStatus[None]) -> None:
        outbox, inbox = trio.open_memory_channel[WebhookEvent](math.inf)
        call._outbox = outbox  # noqa: SLF001
        async with trio.open_nursery() as nursery:
            call._nursery = nursery  # noqa: SLF001
            nursery.start_soon(self._deliver_all, call, inbox)
            task_status.started()
            with outbox:
                await self._lifecycle(call)
        call.finished.set()
        call._touch()  # noqa: SLF001

    async def _wait(self, event: trio.Event, call_s: float | None) -> bool:
        """Wait ``call_s`` of call time (None: forever) or until ``event``; True if it was set."""
        with trio.move_on_after(math.inf if call_s is None else call_s / self.speed):
            await event.wait()
        return event.is_set()

    async def _lifecycle(self, call: EmulatedCall) -> None:
        script, outgoing = call.script, call.direction == "outgoing"
        self._emit(call, "call.initiated", CallInitiated(
            **call._ids(), direction=call.direction, state=call.state, from_=call.from_,  # noqa: SLF001
            to=call.to, start_time=call.start_time,
        ))  # fmt: skip
        dial_body = call.dial_body or {}
        if outgoing:
            ring_s, timeout_s = script.answer_after_s, dial_body.get("timeout_secs")
            timed_out = timeout_s is not None and ring_s > timeout_s
            if await self._wait(call._hangup_requested, timeout_s if timed_out else ring_s):  # noqa: SLF001
                await self._end(call, "originator_cancel", "caller", "487")
                return
            if timed_out or script.outcome in _FAILED_OUTCOMES:
                cause, sip = _FAILED_OUTCOMES["no_answer" if timed_out else script.outcome]
                await self._end(call, cause, "callee", sip)
                return
            call.state = "answered"
            params = call.dial_body or {}
        else:
            await self._wait(call._answer_or_hangup, script.give_up_after_s)  # noqa: SLF001
            if call._hangup_requested.is_set():  # noqa: SLF001 - we refused it unanswered
                await self._end(call, "normal_clearing", "callee", "unspecified")
                return
            if call.state != "answered":
                await self._end(call, "originator_cancel", "caller", "487")
                return
            params = call._answer_params or {}  # noqa: SLF001
        call.answered_at = trio.current_time()
        self._emit(call, "call.answered", CallAnswered(
            **call._ids(), state="answered", from_=call.from_, to=call.to,  # noqa: SLF001
            start_time=call.start_time, codec="PCMU", sampling_rate=8000,
        ))  # fmt: skip
        if params.get("stream_url") is not None:
            assert call._nursery is not None  # noqa: SLF001
            call._nursery.start_soon(self._stream, call, params)  # noqa: SLF001
        hangup_s, limit_s = script.hangup_after_s, dial_body.get("time_limit_secs")
        limited = limit_s is not None and (hangup_s is None or limit_s < hangup_s)
        if await self._wait(call._hangup_requested, limit_s if limited else hangup_s):  # noqa: SLF001
            await self._end(call, "normal_clearing", "caller" if outgoing else "callee", "unspecified")
        elif limited:
            await self._end(call, "time_limit", "unknown", "unspecified")
        else:
            await self._end(call, "normal_clearing", "callee" if outgoing else "caller", "unspecified")

    async def _end(self, call: EmulatedCall, cause: str, source: str, sip_cause: str) -> None:
        """Stop media (ended webhooks first), let the caller send ``stop``, then ``call.hangup``."""
        call.state = "hangup"
        call.hangup_cause, call.hangup_source = cause, source
        call.ended_at = trio.current_time()
        activities = list(call._activities)  # noqa: SLF001
        for activity in activities:
            activity.stop("call_hangup")
        for stream in call.streams:
            stream.hang_up()
        waitables: list[_Activity | EmulatedStream] = [*activities, *call.streams]
        with trio.move_on_after(TEARDOWN_TIMEOUT_S):
            for waitable in waitables:
                await waitable.done.wait()
        for stream in call.streams:
            stream._scope.cancel()  # noqa: SLF001 - a caller that did not close in time
        self._emit(call, "call.hangup", CallHangup(
            **call._ids(), hangup_cause=cause, hangup_source=source,  # noqa: SLF001
            sip_hangup_cause=sip_cause, state="hangup", from_=call.from_, to=call.to,
            start_time=call.start_time,
            call_quality_stats=dict(_QUALITY_STATS) if call.answered_at is not None else None,
        ))  # fmt: skip
        for stream in call.streams:
            self._report_stopped(call, stream)

    def _emit(self, call: EmulatedCall, event_type: str, payload: WebhookPayload) -> None:
        event = WebhookEvent(id=str(uuid.uuid4()), event_type=event_type, payload=payload,
                             occurred_at=_now_iso())  # fmt: skip
        call.webhooks.append(event)
        call._touch()  # noqa: SLF001
        try:
            assert call._outbox is not None  # noqa: SLF001
            call._outbox.send_nowait(event)  # noqa: SLF001
        except trio.ClosedResourceError:
            log.debug("call %s ended: %s not delivered", call.call_control_id, event_type)

    # -- media streams ------------------------------------------------------------------------

    async def _stream(self, call: EmulatedCall, params: Mapping[str, Any]) -> None:
        stream = EmulatedStream(stream_id=str(uuid.uuid4()), stream_url=params["stream_url"], params=params)
        call.streams.append(stream)
        try:
            with stream._scope:  # noqa: SLF001
                if self.stream_never_connects:
                    stream.failure = "stream_never_connects (fault)"
                    await trio.sleep_forever()
                try:
                    codec, rate = _stream_format(params)
                except ValueError:
                    codec_name = params.get("stream_codec") or params.get("stream_bidirectional_codec")
                    self._stream_failed(call, stream, f"emulator cannot stream {codec_name!r}")
                    return
                options: dict[str, Any] = {"hangup_after_s": CALLER_MAX_CALL_S, "speed": self.speed,
                                           **call.script.caller_options}  # fmt: skip
                custom = params.get("custom_parameters")
                if type(custom) is list:
                    options["custom_parameters"] = {
                        p["name"]: p["value"]
                        for p in custom
                        if type(p) is dict and {"name", "value"} <= p.keys()
                    }
                stream.caller = _StreamingCaller(
                    stream.stream_url, token=params.get("stream_auth_token"), codec=codec,
                    sample_rate_hz=rate, audio=call.script.audio, dtmf=call.script.dtmf,
                    from_=call.from_, to=call.to, client_state=call.client_state,
                    stream_id=stream.stream_id, call_control_id=call.call_control_id,
                    call_session_id=call.call_session_id,
                    on_streaming=partial(self._stream_started, call, stream), **options,
                )  # fmt: skip
                try:
                    stream.record = await stream.caller.run()
                except (OSError, HandshakeError, trio.BrokenResourceError, ValueError) as exc:
                    self._stream_failed(call, stream, f"{type(exc).__name__}: {exc}")
                    return
        finally:
            stream.ended_at = trio.current_time()
            stream.done.set()
        if call.alive:  # ended by streaming_stop or by the service: the call goes on
            self._report_stopped(call, stream)

    def _stream_started(self, call: EmulatedCall, stream: EmulatedStream, record: CallerRecord) -> None:
        stream.record, stream.started_at = record, trio.current_time()
        self._emit(call, "streaming.started", StreamingStarted(
            **call._ids(), stream_url=stream.stream_url, stream_id=stream.stream_id,  # noqa: SLF001
        ))  # fmt: skip

    def _stream_failed(self, call: EmulatedCall, stream: EmulatedStream, detail: str) -> None:
        stream.failure = f"connection_failed: {detail}"
        self._emit(call, "streaming.failed", StreamingFailed(
            **call._ids(), failure_reason="connection_failed", stream_id=stream.stream_id,  # noqa: SLF001
            stream_type="websocket",
            stream_params=StreamParams(stream_url=stream.stream_url, track=stream.params.get("stream_track")),
        ))  # fmt: skip

    def _report_stopped(self, call: EmulatedCall, stream: EmulatedStream) -> None:
        if stream.started_at is None or stream._stopped_reported:  # noqa: SLF001
            return
        stream._stopped_reported = True  # noqa: SLF001
        self._emit(call, "streaming.stopped", StreamingStopped(
            **call._ids(), stream_url=stream.stream_url, stream_id=stream.stream_id,  # noqa: SLF001
        ))  # fmt: skip

    # -- speak, playback, transcription ---------------------------------------------------------

    async def _activity(
        self,
        call: EmulatedCall,
        activity: _Activity,
        run: Callable[[EmulatedCall, _Activity, Mapping[str, Any]], Awaitable[None]],
        body: Mapping[str, Any],
    ) -> None:
        try:
            await run(call, activity, body)
        finally:
            call._activities.remove(activity)  # noqa: SLF001
            activity.done.set()

    async def _speak(self, call: EmulatedCall, activity: _Activity, body: Mapping[str, Any]) -> None:
        self._emit(call, "call.speak.started", CallSpeakStarted(**call._ids()))  # noqa: SLF001
        with activity.scope:
            await trio.sleep(len(body["payload"]) / SPEAK_CHARS_PER_S / self.speed)
            activity.finish("completed")
        self._emit(call, "call.speak.ended", CallSpeakEnded(
            **call._ids(), status=activity.end_status,  # noqa: SLF001
        ))  # fmt: skip

    async def _playback(self, call: EmulatedCall, activity: _Activity, body: Mapping[str, Any]) -> None:
        url, name, overlay = body.get("audio_url"), body.get("media_name"), body.get("overlay")
        overlay = overlay if type(overlay) is bool else None
        detail: str | None = None
        with activity.scope:
            if url is not None:
                fetch = await self._fetch(url)
                call.playback_fetches.append(fetch)
                call._touch()  # noqa: SLF001
                if not fetch.ok:
                    activity.finish("file_not_found")
                    detail = fetch.error or f"HTTP {fetch.status}"
                content = fetch.content
            elif name is not None:
                content = b""
            else:
                content = b64decode(body["playback_content"])
            if activity.end_status is None:
                self._emit(call, "call.playback.started", CallPlaybackStarted(
                    **call._ids(), media_url=url, media_name=name, overlay=overlay,  # noqa: SLF001
                ))  # fmt: skip
                duration = self.playback_duration_s
                if duration is None:
                    duration = MEDIA_NAME_DURATION_S if name is not None else _audio_duration_s(content)
                loop = body.get("loop", 1)
                if loop == "infinity":
                    await trio.sleep_forever()
                await trio.sleep(duration * (loop if type(loop) is int else 1) / self.speed)
                activity.finish("completed")
        self._emit(call, "call.playback.ended", CallPlaybackEnded(
            **call._ids(), media_url=url, media_name=name, overlay=overlay,  # noqa: SLF001
            status=activity.end_status, status_detail=detail,
        ))  # fmt: skip

    async def _fetch(self, url: str) -> PlaybackFetch:
        assert self._client is not None
        at = trio.current_time()
        try:
            response = await self._client.get(url, timeout=PLAYBACK_FETCH_TIMEOUT_S, follow_redirects=True)
        except httpx.HTTPError as exc:
            return PlaybackFetch(at, url, None, b"", f"{type(exc).__name__}: {exc}")
        return PlaybackFetch(at, url, response.status_code, response.content)

    async def _transcribe(self, call: EmulatedCall, activity: _Activity, body: Mapping[str, Any]) -> None:
        track = body.get("transcription_tracks") or "inbound"
        started = trio.current_time()
        with activity.scope:
            for item in sorted(call.script.transcripts, key=lambda t: t.at_s):
                await trio.sleep_until(started + item.at_s / self.speed)
                self._emit(call, "call.transcription", CallTranscription(
                    **call._ids(),  # noqa: SLF001
                    transcription_data=TranscriptionData(
                        transcript=item.transcript, is_final=item.is_final,
                        confidence=float(item.confidence), transcription_track=track,
                    ),
                ))  # fmt: skip
            activity.finish("completed")

    # -- webhook delivery -----------------------------------------------------------------------

    async def _deliver_all(self, call: EmulatedCall, inbox: trio.MemoryReceiveChannel[WebhookEvent]) -> None:
        async with inbox:
            async for event in inbox:
                batch = [event]
                if self.shuffle:
                    await trio.sleep(self.shuffle_window_s)
                    while True:
                        try:
                            batch.append(inbox.receive_nowait())
                        except (trio.WouldBlock, trio.EndOfChannel):
                            break
                    batch = self._shuffled(batch)
                for item in batch:
                    await self._deliver(call, item)
                    if self.duplicate_webhooks:
                        await self._deliver(call, item, duplicate=True)

    def _shuffled(self, batch: list[WebhookEvent]) -> list[WebhookEvent]:
        if batch and batch[0].event_type == "call.initiated":
            return batch[:1] + self._shuffled(batch[1:])
        if len(batch) < 2 or all(e.event_type in _LIFECYCLE for e in batch):
            return batch
        order = list(range(len(batch)))
        self._rng.shuffle(order)
        if order == sorted(order):
            order = order[1:] + order[:1]  # a shuffle that changes nothing proves nothing
        shuffled = [batch[i] for i in order]
        # Lifecycle events take the slots lifecycle events landed in, in their original order.
        lifecycle = iter([e for e in batch if e.event_type in _LIFECYCLE])
        return [next(lifecycle) if e.event_type in _LIFECYCLE else e for e in shuffled]

    def _signature_headers(self, body: bytes) -> tuple[dict[str, str], SignatureFault | None]:
        now = time.time()
        key = self.keypair.private_key
        if self.bad_signature_next > 0:
            self.bad_signature_next -= 1
            headers = sign_webhook(key, body, now)
            headers[SIGNATURE_HEADER] = sign_webhook(key, b"tampered" + body, now)[SIGNATURE_HEADER]
            return headers, "bad_signature"
        if self.stale_timestamp_next > 0:
            self.stale_timestamp_next -= 1
            return sign_webhook(key, body, now - STALE_TIMESTAMP_AGE_S), "stale_timestamp"
        if self.missing_signature_next > 0:
            self.missing_signature_next -= 1
            headers = sign_webhook(key, body, now)
            del headers[SIGNATURE_HEADER]
            return headers, "missing_signature"
        return sign_webhook(key, body, now), None

    async def _deliver(self, call: EmulatedCall, event: WebhookEvent, *, duplicate: bool = False) -> None:
        assert self._client is not None
        for attempt in range(1, self.webhook_attempts + 1):
            url = call.webhook_url
            status: int | None = None
            error: str | None = None
            fault: SignatureFault | None = None
            if url is None:
                error = "no webhook_url (dial, answer or emulator)"
            else:
                meta = WebhookMeta(attempt=attempt, delivered_to=url)
                body = encode_webhook(attrs.evolve(event, meta=meta))
                headers, fault = self._signature_headers(body)
                try:
                    response = await self._client.post(
                        url, content=body, headers={"content-type": "application/json", **headers}
                    )
                    status = response.status_code
                except httpx.HTTPError as exc:
                    error = f"{type(exc).__name__}: {exc}"
            delivery = Delivery(
                at=trio.current_time(), call_control_id=call.call_control_id, event_id=event.id,
                event_type=event.event_type, url=url, attempt=attempt, status=status, error=error,
                fault=fault, duplicate=duplicate,
            )  # fmt: skip
            self.deliveries.append(delivery)
            call.deliveries.append(delivery)
            call._touch()  # noqa: SLF001
            if delivery.ok or url is None:
                return
            if attempt < self.webhook_attempts:
                await trio.sleep(self.webhook_backoff_s * attempt)


def _new_call_control_id() -> str:
    return "v3:" + secrets.token_urlsafe(33)
