"""DeepgramLink: the call's live speech-to-text over one Deepgram ``/v1/listen`` WebSocket.

The wire format is `protocols.deepgram_listen`; the failure modes guarded against are those of
``/work/shared/protocols/deepgram.md`` §3 and §7 (idle 1011 closes, finals lost on close, empty
frames, reconnect gaps, timestamps restarting at zero on every connection).
"""

from __future__ import annotations

import bisect
import logging
import math
from collections import Counter, deque
from contextlib import nullcontext
from typing import Any, Final

import attrs
import trio
from trio_websocket import (
    CloseReason, ConnectionClosed, ConnectionRejected, HandshakeError, WebSocketConnection,
)

from actors.messages import (
    FRAME_S, AudioFrame, CallerStartedSpeaking, CallInfo, RelayInput, Transcript, TranscriptFinal,
    TranscriptPartial, UtteranceEnded,
)
from actors.ws_client import abort_ws, open_ws_client
from protocols.audio import Codec, l16be_decode, pcm16le_encode
from protocols.deepgram_listen import (
    KEEPALIVE_INTERVAL_S, KEEPALIVE_TEXT, CloseStream, CloseVerdict, ErrorMessage, ListenOptions,
    Metadata, Recovery, Results, ServerMessage, SpeechStarted, UtteranceEnd, auth_header,
    build_listen_url, classify_close, classify_handshake, decode_server, encode_client,
)
from protocols.errors import RemoteProtocolError
from supervisor import Backoff, ChildSpec, CloneableChannel, MailboxReceiver, Restart, cleanup_scope

__all__ = ["RESTART_BACKOFF", "DeepgramDropped", "DeepgramLink", "DeepgramLinkError",
           "DeepgramLinkStatistics", "DeepgramRejected"]

logger = logging.getLogger(__name__)

CONNECT_TIMEOUT_S: Final = 3.0
CLOSE_TIMEOUT_S: Final = 3.0
SEND_TIMEOUT_S: Final = 2.0
REPLAY_LIMIT_S: Final = 30.0
#: Received messages trio-websocket may buffer; its default (1) stops reading TCP whenever the
#: Brain is slow to take one transcript.
WS_QUEUE_MESSAGES: Final = 16
#: Replayed audio goes out in 200 ms messages: Deepgram takes it faster than real time.
REPLAY_BATCH_FRAMES: Final = 10
#: Frames already queued when a message goes out join it, up to this many (200 ms of audio).
COALESCE_MAX_FRAMES: Final = 10
#: Call times closer than this count as equal (frame contiguity, "already finalised").
TIME_TOLERANCE_S: Final = 0.001
#: A SpeechStarted this close to one already reported is that onset heard again in a replay.
ONSET_TOLERANCE_S: Final = 0.1
#: Contiguous runs of audio a connection remembers for mapping its times to call time.
TIMELINE_RUNS: Final = 1024
#: What the composition root gives the call supervisor (`SupervisorSpec.backoff`).
RESTART_BACKOFF: Final = Backoff(initial_s=0.1, factor=2.0, max_s=2.0)

_CLOSE_STREAM_TEXT: Final = encode_client(CloseStream())
_ENCODINGS: Final = {Codec.PCMU: "mulaw", Codec.PCMA: "alaw", Codec.L16: "linear16"}


class DeepgramLinkError(Exception):
    """The Deepgram connection failed; ``verdict`` (from `protocols.deepgram_listen`) says why."""

    def __init__(self, verdict: CloseVerdict, detail: str, *, status_code: int | None = None,
                 close_code: int | None = None) -> None:
        super().__init__(f"{detail} ({verdict.explanation})")
        self.verdict, self.detail = verdict, detail
        self.status_code, self.close_code = status_code, close_code


class DeepgramDropped(DeepgramLinkError):
    """Transient: the socket dropped, closed with 1011/1006, timed out, or was refused with 429/5xx."""


class DeepgramRejected(DeepgramLinkError):
    """Fatal: bad credentials or parameters (401/402/403/400), or audio Deepgram cannot decode."""


def _link_error(verdict: CloseVerdict, detail: str, **codes: int | None) -> DeepgramLinkError:
    kind = DeepgramRejected if verdict.recovery is Recovery.FATAL else DeepgramDropped
    return kind(verdict, detail, **codes)


@attrs.frozen
class DeepgramLinkStatistics:
    """A snapshot of one link across its connections (``connects - 1`` reconnects)."""

    connects: int = 0
    frames_sent: int = 0
    bytes_sent: int = 0
    audio_messages_sent: int = 0
    keepalives_sent: int = 0
    replayed_frames: int = 0
    replay_overflow_frames: int = 0  # evicted by replay_limit_s before Deepgram finalised them
    frames_skipped: int = 0  # empty or malformed payloads, never sent
    results_received: int = 0
    partials: int = 0
    finals: int = 0
    utterance_ends: int = 0
    speech_started: int = 0
    server_errors: int = 0
    undecodable: int = 0
    replay_buffered_s: float = 0.0
    turn_id: str = "t-1"


@attrs.define(eq=False)
class DeepgramLink:
    """Streams the caller's audio to Deepgram and turns what comes back into call-time transcripts.

    Receives: `AudioFrame` (the call's codec, in call-time order) on ``inbox``.
    Sends: `TranscriptPartial`, `TranscriptFinal`, `UtteranceEnded`, `CallerStartedSpeaking`, each to
      ``relay_out`` (a drop-oldest mailbox: never blocks) and then ``transcripts_out`` (the Brain:
      may block, which is the back-pressure). Either may be None or close early; once every given
      output is gone the link sends CloseStream and returns quietly. Times are call time; a turn
      (``t-1``, ``t-2``, ...) ends with a ``speech_final`` final or an `UtteranceEnded`, whichever
      comes first (the UtteranceEnd that follows a speech_final is dropped).
    On end of input: sends what is batched, then CloseStream, and keeps reading until Deepgram
      closes (at most ``close_timeout_s``) so the last finals are delivered; then returns, which
      closes its outputs.
    On failure: raises `DeepgramDropped` (socket dropped, 1006/1011, connect timeout, 429/5xx);
      ``permanent`` (see `child_spec`, `RESTART_BACKOFF`): the supervisor runs the *same* object
      again, which keeps the audio Deepgram has not finalised (up to ``replay_limit_s``), the turn
      counter and the last final's time, and replays that audio first, so a reconnect
      mid-sentence loses no words. `DeepgramRejected` (401/402/403/400, undecodable audio) cannot
      be cured by retrying: later runs fail at once without dialling, the restart intensity is
      exceeded and the call ends with this error. A first connect that fails fails the call's
      start. Cancelled, it sends CloseStream and closes the socket, shielded and bounded.
    """

    call: CallInfo
    listen_url: str
    api_key: str = attrs.field(repr=False)
    options: ListenOptions
    keepalive_s: float = KEEPALIVE_INTERVAL_S
    connect_timeout_s: float = CONNECT_TIMEOUT_S
    close_timeout_s: float = CLOSE_TIMEOUT_S
    send_timeout_s: float = SEND_TIMEOUT_S
    replay_limit_s: float = REPLAY_LIMIT_S
    batch_frames: int = attrs.field(default=1, validator=attrs.validators.ge(1))
    # Survives restarts (the supervisor calls run() again on this object):
    # Audio sent but not yet finalised, as (call time, payload): plain tuples of a float and bytes,
    # which the garbage collector stops tracking after one pass, so the seconds of audio every call
    # keeps do not weigh on every later gen-1/gen-2 collection (AudioFrames were ~20 % of the
    # tracked heap at 100 calls, and most of what survived gen 0).
    _replay: deque[tuple[float, bytes]] = attrs.field(factory=deque, init=False)
    _replay_s: float = attrs.field(default=0.0, init=False)
    _turn: int = attrs.field(default=1, init=False)
    _turn_has_words: bool = attrs.field(default=False, init=False)
    _turn_ended_at_s: float = attrs.field(default=-math.inf, init=False)
    _last_final_end_s: float = attrs.field(default=-math.inf, init=False)
    _onset_s: float = attrs.field(default=-math.inf, init=False)  # latest SpeechStarted sent
    _clock_s: float = attrs.field(default=0.0, init=False)  # end of the latest frame sent
    _rejected: DeepgramRejected | None = attrs.field(default=None, init=False)
    _counts: Counter[str] = attrs.field(factory=Counter, init=False)

    @staticmethod
    def options_for(call: CallInfo, **overrides: Any) -> ListenOptions:
        """Centralita's listen options for ``call``'s audio (Spanish, nova-3, turn events on).

        L16 goes out as ``linear16``, little-endian: the link swaps Telnyx's big-endian samples.
        """
        fmt = call.audio_format
        options = ListenOptions(
            model="nova-3", language="es", encoding=_ENCODINGS[fmt.codec],
            sample_rate=fmt.sample_rate_hz, channels=1, interim_results=True, endpointing=200,
            utterance_end_ms=1000, vad_events=True,
        )
        return attrs.evolve(options, **overrides)

    def child_spec(self, *, inbox: MailboxReceiver[AudioFrame],
                   transcripts_out: CloneableChannel | None = None,
                   relay_out: CloneableChannel | None = None,
                   name: str = "deepgram_link") -> ChildSpec:
        """The recommended `ChildSpec`: permanent, and time for the polite stop (a last send, then
        the CloseStream drain). Pair it with ``SupervisorSpec(backoff=RESTART_BACKOFF)``."""
        channels = {"inbox": inbox, "transcripts_out": transcripts_out, "relay_out": relay_out}
        return ChildSpec(name, self.run, {k: v for k, v in channels.items() if v is not None},
                         restart=Restart.PERMANENT,
                         shutdown_s=self.send_timeout_s + self.close_timeout_s + 1.0)

    def statistics(self) -> DeepgramLinkStatistics:
        return DeepgramLinkStatistics(**self._counts, replay_buffered_s=self._replay_s,
                                      turn_id=self._turn_id)

    async def run(self, inbox: MailboxReceiver[AudioFrame], *,
                  transcripts_out: trio.abc.SendChannel[Transcript] | None = None,
                  relay_out: trio.abc.SendChannel[RelayInput] | None = None,
                  task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Connect, then stream until the inbox ends (return) or the connection fails (raise)."""
        outputs = [c for c in (relay_out, transcripts_out) if c is not None]
        async with inbox, relay_out or nullcontext(), transcripts_out or nullcontext():
            if self._rejected is not None:
                raise DeepgramRejected(self._rejected.verdict, "rejected earlier; not dialling again",
                                       status_code=self._rejected.status_code,
                                       close_code=self._rejected.close_code)
            try:
                await self._connect_and_stream(inbox, outputs, task_status)
            except DeepgramRejected as exc:
                self._rejected = exc
                self._log(logging.ERROR, "Deepgram rejected the link: %s", exc)
                raise
            except DeepgramDropped as exc:
                self._log(logging.WARNING, "Deepgram connection lost: %s", exc)
                raise

    # -- one connection -------------------------------------------------------------------------

    async def _connect_and_stream(self, inbox: MailboxReceiver[AudioFrame],
                                  outputs: list[trio.abc.SendChannel[Any]],
                                  task_status: trio.TaskStatus[None]) -> None:
        url = build_listen_url(self.listen_url, self.options)
        try:
            async with open_ws_client(
                url, extra_headers=[auth_header(self.api_key)], message_queue_size=WS_QUEUE_MESSAGES,
                connect_timeout_s=self.connect_timeout_s, close_timeout_s=self.close_timeout_s,
            ) as ws:
                self._counts["connects"] += 1
                self._log(logging.INFO, "connected to Deepgram (connection %d, %.2fs to replay)",
                          self._counts["connects"], self._replay_s)
                task_status.started()
                await self._stream(_Connection(ws, outputs, bool(outputs)), inbox)
        except ConnectionRejected as exc:
            raise _link_error(classify_handshake(exc.status_code),
                              f"handshake refused with HTTP {exc.status_code}",
                              status_code=exc.status_code) from exc
        except HandshakeError as exc:  # connect timeout, DNS, TCP or TLS failure
            raise DeepgramDropped(CloseVerdict(Recovery.RECONNECT, None, "could not connect"),
                                  f"connect failed: {exc}") from exc

    async def _stream(self, conn: _Connection, inbox: MailboxReceiver[AudioFrame]) -> None:
        try:
            async with trio.open_nursery() as nursery:
                conn.scope = nursery.cancel_scope
                nursery.start_soon(self._read, conn)
                await self._write(conn, inbox, nursery)
                if conn.close_stream_sent:  # end of input: wait for the last results
                    with trio.move_on_after(self.close_timeout_s) as waiting:
                        await conn.ended.wait()
                    if waiting.cancelled_caught:
                        self._log(logging.WARNING, "no close %.1fs after CloseStream",
                                  self.close_timeout_s)
                nursery.cancel_scope.cancel()
        finally:  # cancelled, or every output gone: tell Deepgram we are done, then close
            if conn.ws.closed is None and not conn.close_stream_sent and not conn.stuck:
                with cleanup_scope(self.close_timeout_s):
                    try:
                        await conn.ws.send_message(_CLOSE_STREAM_TEXT)
                    except ConnectionClosed:
                        pass
        if conn.failure is not None:
            raise conn.failure
        if conn.given_outputs and not conn.outputs:
            self._log(logging.INFO, "every output is closed; stopping")

    async def _write(self, conn: _Connection, inbox: MailboxReceiver[AudioFrame],
                     nursery: trio.Nursery) -> None:
        """Replay, then forward audio, then CloseStream at end of input; KeepAlive runs beside.

        The common case (one frame per message) waits on the inbox with no deadline: a cancel
        scope per 20 ms frame is a measurable share of a listening call's CPU. Only a partly
        filled batch waits with one (it goes out after one batch's worth of audio at most).
        """
        try:
            replay = [AudioFrame(call_time_s, payload) for call_time_s, payload in self._replay]
            for i in range(0, len(replay), REPLAY_BATCH_FRAMES):
                await self._send_audio(conn, replay[i:i + REPLAY_BATCH_FRAMES])
            self._counts["replayed_frames"] += len(replay)
            # Nothing replayed: a KeepAlive at once (a new socket must hear from us within 10 s).
            conn.keepalive_due = trio.current_time() + (self.keepalive_s if replay else 0.0)
            nursery.start_soon(self._keep_alive, conn)
            batch: list[AudioFrame] = []
            batch_due = math.inf
            while True:
                frame: AudioFrame | None = None
                try:
                    if batch:
                        with trio.move_on_at(batch_due):
                            frame = await inbox.receive()
                    else:
                        frame = await inbox.receive()
                except trio.EndOfChannel:
                    break
                accepted = None if frame is None else self._accept(frame)
                if accepted is not None:
                    if not batch:
                        batch_due = trio.current_time() + self.batch_frames * FRAME_S
                    batch.append(accepted)
                if batch and (frame is None or len(batch) >= self.batch_frames):
                    ended = self._take_waiting(inbox, batch)
                    await self._send_audio(conn, batch)
                    batch, batch_due = [], math.inf
                    if ended:
                        break
            if batch:
                await self._send_audio(conn, batch)
            conn.close_stream_sent = True  # before sending: the server may close at once
            await self._send(conn, _CLOSE_STREAM_TEXT)
        except _ConnectionOver:
            return

    def _take_waiting(self, inbox: MailboxReceiver[AudioFrame], batch: list[AudioFrame]) -> bool:
        """Add the frames already waiting in the inbox to ``batch`` (up to `COALESCE_MAX_FRAMES`):
        behind schedule (a burst, a pause), the backlog goes out in fewer messages, with no
        frame held back to wait for another. True if the inbox has ended."""
        while len(batch) < COALESCE_MAX_FRAMES:
            try:
                frame = inbox.receive_nowait()
            except trio.WouldBlock:
                return False
            except trio.EndOfChannel:
                return True
            accepted = self._accept(frame)
            if accepted is not None:
                batch.append(accepted)
        return False

    async def _keep_alive(self, conn: _Connection) -> None:
        """``KeepAlive`` whenever no audio has gone out for ``keepalive_s`` (every send moves
        ``conn.keepalive_due``); Deepgram closes a socket that hears nothing for ~10 s."""
        try:
            while not conn.close_stream_sent:
                if trio.current_time() >= conn.keepalive_due:
                    await self._send(conn, KEEPALIVE_TEXT)
                    self._counts["keepalives_sent"] += 1
                    conn.keepalive_due = trio.current_time() + self.keepalive_s
                await trio.sleep_until(conn.keepalive_due)
        except _ConnectionOver:
            return

    async def _read(self, conn: _Connection) -> None:
        while True:
            try:
                data = await conn.ws.get_message()
            except ConnectionClosed as exc:
                conn.end(self._close_error(conn, exc.reason))
                return
            try:
                if isinstance(data, bytes):
                    raise RemoteProtocolError("a binary frame on /v1/listen")
                message = decode_server(data)
            except RemoteProtocolError as exc:
                self._counts["undecodable"] += 1
                self._log(logging.WARNING, "skipping a server message: %s", exc.reason)
                continue
            for event in self._events(conn, message):
                for channel in list(conn.outputs):
                    try:
                        await channel.send(event)
                    except (trio.BrokenResourceError, trio.ClosedResourceError):
                        conn.outputs.remove(channel)  # the others keep going
                if conn.given_outputs and not conn.outputs:
                    conn.end(None)
                    return

    async def _send_audio(self, conn: _Connection, frames: list[AudioFrame]) -> None:
        payload = b"".join(frame.payload for frame in frames)
        for frame in frames:
            conn.sent(frame.call_time_s, self._duration_s(frame))
        await self._send(conn, payload)
        self._clock_s = max(self._clock_s, self._end_s(frames[-1]))
        self._counts.update(frames_sent=len(frames), bytes_sent=len(payload), audio_messages_sent=1)
        conn.keepalive_due = trio.current_time() + self.keepalive_s

    async def _send(self, conn: _Connection, message: str | bytes) -> None:
        if not message:  # an empty binary frame means CloseStream to Deepgram
            return
        try:
            with trio.move_on_after(self.send_timeout_s) as sending:
                await conn.ws.send_message(message)
        except ConnectionClosed as exc:
            conn.end(self._close_error(conn, exc.reason))
            raise _ConnectionOver from None
        if sending.cancelled_caught:  # a polite close would block on the same full buffer
            conn.stuck = True
            conn.end(DeepgramDropped(CloseVerdict(Recovery.RECONNECT, None, "network stalled"),
                                     f"a send took longer than {self.send_timeout_s:g}s"))
            await abort_ws(conn.ws)
            raise _ConnectionOver

    def _close_error(self, conn: _Connection, reason: CloseReason | None) -> DeepgramLinkError | None:
        code = None if reason is None else reason.code
        text = (None if reason is None else reason.reason) or ""
        verdict = classify_close(code, text)
        if conn.close_stream_sent:
            if verdict.recovery is not Recovery.FINISHED:
                self._log(logging.WARNING, "closed with %s %r after CloseStream", code, text)
            return None  # the end we asked for
        if verdict.recovery is Recovery.FINISHED:
            verdict = CloseVerdict(Recovery.RECONNECT, verdict.error_code, "closed unasked")
        return _link_error(verdict, f"connection closed with {code} {text}".rstrip(), close_code=code)

    # -- what the server says, in call time -----------------------------------------------------

    def _events(self, conn: _Connection, message: ServerMessage) -> list[Transcript]:
        if isinstance(message, Results):
            self._counts["results_received"] += 1
            return self._on_results(message.shifted(conn.offset_at(message.start)))
        if isinstance(message, UtteranceEnd):
            end_s = message.shifted(conn.offset_at(message.last_word_end)).last_word_end
            if not self._turn_has_words or end_s <= self._turn_ended_at_s + TIME_TOLERANCE_S:
                return []  # follows the speech_final that already ended this turn
            ended = UtteranceEnded(self._turn_id, end_s)
            self._counts["utterance_ends"] += 1
            self._end_turn(end_s)
            return [ended]
        if isinstance(message, SpeechStarted):
            onset_s = message.shifted(conn.offset_at(message.timestamp)).timestamp
            if onset_s <= self._onset_s + ONSET_TOLERANCE_S:
                return []  # a replay made Deepgram hear an onset it had already reported
            self._onset_s = onset_s
            self._counts["speech_started"] += 1
            return [CallerStartedSpeaking(onset_s)]
        if isinstance(message, ErrorMessage):
            self._counts["server_errors"] += 1
            self._log(logging.WARNING, "Deepgram error %s: %s", message.variant, message.description)
        elif isinstance(message, Metadata):
            self._log(logging.INFO, "Deepgram session %s ended after %.2fs of audio",
                      message.request_id, message.duration)
        return []  # UnknownMessage: skipped, as Deepgram asks of clients

    def _on_results(self, results: Results) -> list[Transcript]:
        text, start_s, end_s = results.transcript, results.start, results.end
        if end_s <= self._last_final_end_s + TIME_TOLERANCE_S:
            return []  # replayed audio that was finalised before the reconnect
        if results.is_final:  # an empty final too: that audio needs no replay
            self._last_final_end_s = end_s
            while self._replay and self._replay_end_s(self._replay[0]) <= end_s + TIME_TOLERANCE_S:
                self._replay_s -= self._seconds(self._replay.popleft()[1])
        if not text:
            return []
        # Report when the words were said, not the result window (windows tile the audio).
        words = results.channel.alternatives[0].words
        if words:
            start_s, end_s = words[0].start, words[-1].end
        self._turn_has_words = True
        if not results.is_final:
            self._counts["partials"] += 1
            return [TranscriptPartial(self._turn_id, text, start_s, end_s)]
        final = TranscriptFinal(self._turn_id, text, start_s, end_s, results.speech_final,
                                received_at_s=self._clock_s)
        self._counts["finals"] += 1
        if results.speech_final:
            self._end_turn(end_s)
        return [final]

    @property
    def _turn_id(self) -> str:
        return f"t-{self._turn}"

    def _end_turn(self, end_s: float) -> None:
        self._turn, self._turn_has_words, self._turn_ended_at_s = self._turn + 1, False, end_s

    # -- audio ----------------------------------------------------------------------------------

    def _accept(self, frame: AudioFrame) -> AudioFrame | None:
        """The frame as Deepgram wants it, kept for replay; None if it must not be sent."""
        payload = frame.payload
        if payload and self.call.audio_format.codec is Codec.L16:
            try:
                payload = pcm16le_encode(l16be_decode(payload))
            except RemoteProtocolError:  # an odd byte count
                payload = b""
        if not payload:
            self._counts["frames_skipped"] += 1
            return None
        accepted = frame if payload is frame.payload else AudioFrame(frame.call_time_s, payload)
        self._replay.append((frame.call_time_s, payload))
        self._replay_s += self._seconds(payload)
        while self._replay_s > self.replay_limit_s and len(self._replay) > 1:
            self._replay_s -= self._seconds(self._replay.popleft()[1])
            self._counts["replay_overflow_frames"] += 1
        return accepted

    def _seconds(self, payload: bytes) -> float:
        fmt = self.call.audio_format
        return len(payload) / (fmt.sample_rate_hz * fmt.codec.bytes_per_sample)

    def _duration_s(self, frame: AudioFrame) -> float:
        return self._seconds(frame.payload)

    def _end_s(self, frame: AudioFrame) -> float:
        return frame.call_time_s + self._duration_s(frame)

    def _replay_end_s(self, buffered: tuple[float, bytes]) -> float:
        return buffered[0] + self._seconds(buffered[1])

    def _log(self, level: int, message: str, *args: object) -> None:
        logger.log(level, message, *args, extra={"call_id": self.call.call_id})


class _ConnectionOver(Exception):
    """Internal: a send found the connection over; the reason is in ``_Connection.failure``."""


@attrs.define(eq=False)
class _Connection:
    """One socket's state; what must outlive it is on the link.

    It also maps the connection's audio time (seconds it has received, from 0) to call time.
    Deepgram's clock advances only with audio, so a gap in the call's audio (frames dropped under
    load or while reconnecting) would skew every later time: each contiguous run keeps its offset.
    """

    ws: WebSocketConnection
    outputs: list[trio.abc.SendChannel[Any]]  # those still open
    given_outputs: bool
    scope: trio.CancelScope = attrs.Factory(trio.CancelScope)
    ended: trio.Event = attrs.Factory(trio.Event)
    failure: DeepgramLinkError | None = None
    close_stream_sent: bool = False
    stuck: bool = False
    keepalive_due: float = 0.0
    run_starts: list[float] = attrs.Factory(list)  # connection time at which each run begins
    run_offsets: list[float] = attrs.Factory(list)  # call time minus connection time in it
    audio_s: float = 0.0
    next_call_s: float = math.nan

    def end(self, failure: DeepgramLinkError | None) -> None:
        """Over: closed as asked (None) or with ``failure`` (the first one wins)."""
        self.failure = self.failure or failure
        self.ended.set()
        if self.failure is not None or (self.given_outputs and not self.outputs):
            self.scope.cancel()

    def sent(self, call_time_s: float, duration_s: float) -> None:
        if not abs(call_time_s - self.next_call_s) <= TIME_TOLERANCE_S:  # NaN: the first frame
            self.run_starts.append(self.audio_s)
            self.run_offsets.append(call_time_s - self.audio_s)
            if len(self.run_starts) > TIMELINE_RUNS:
                del self.run_starts[0], self.run_offsets[0]
        self.audio_s += duration_s
        self.next_call_s = call_time_s + duration_s

    def offset_at(self, connection_s: float) -> float:
        index = bisect.bisect_right(self.run_starts, connection_s + TIME_TOLERANCE_S) - 1
        return self.run_offsets[max(index, 0)] if self.run_offsets else 0.0
