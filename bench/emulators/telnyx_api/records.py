"""The Telnyx API emulator's constants, scripts and records (what tests assert on)."""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Final, Literal

import attrs
import trio
from trio_websocket import WebSocketConnection

from bench.emulators.telnyx_caller import CallerRecord, TelnyxCaller
from protocols.jsonwire import b64decode
from protocols.telnyx_call_control import WebhookEvent

log = logging.getLogger("bench.emulators.telnyx_api")

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
_QUALITY_STATS: Final[Mapping[str, Any]] = {
    "inbound": {"jitter_max_variance": "2.74", "jitter_packet_count": "0", "mos": "4.50",
                "packet_count": "591", "skip_packet_count": "0"},
    "outbound": {"packet_count": "0", "skip_packet_count": "0"},
}  # fmt: skip


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



def _now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _new_call_control_id() -> str:
    return "v3:" + secrets.token_urlsafe(33)
