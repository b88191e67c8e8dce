"""DeepgramLink: the call's live speech-to-text over one Deepgram ``/v1/listen`` WebSocket.

The wire format is `protocols.deepgram_listen`; the failure modes guarded against are those of
``/work/shared/protocols/deepgram.md`` §3 and §7 (idle 1011 closes, finals lost on close, empty
frames, reconnect gaps, timestamps restarting at zero on every connection).

This module is the actor: connection lifecycle, writer (replay, audio, KeepAlive, CloseStream) and
reader. Its parts live beside it: `actors.deepgram_errors` (the errors it raises and its statistics
record), `actors.deepgram_connection` (one socket's state and its connection-time to call-time
timeline), `actors.deepgram_turns` (server messages as call-time transcript events, in turns) and
`actors.deepgram_audio` (audio as Deepgram takes it; what is not yet finalised, for replay).
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from contextlib import nullcontext
from typing import Any, Final

import attrs
import trio
from trio_websocket import CloseReason, ConnectionClosed, ConnectionRejected, HandshakeError

from actors.deepgram_audio import ReplayBuffer, listen_options, payload_seconds, to_deepgram
from actors.deepgram_connection import (  # the two constants: re-exported, they used to live here
    TIME_TOLERANCE_S, TIMELINE_RUNS, Connection, ConnectionOver,
)
from actors.deepgram_errors import (
    DeepgramDropped, DeepgramLinkError, DeepgramLinkStatistics, DeepgramRejected, link_error,
)
from actors.deepgram_turns import ONSET_TOLERANCE_S, TurnTracker  # the constant: re-exported
from actors.messages import FRAME_S, AudioFrame, CallInfo, RelayInput, Transcript
from actors.ws_client import abort_ws, open_ws_client
from protocols.deepgram_listen import (
    KEEPALIVE_INTERVAL_S, KEEPALIVE_TEXT, CloseStream, CloseVerdict, ErrorMessage, ListenOptions,
    Metadata, Recovery, ServerMessage, auth_header, build_listen_url, classify_close,
    classify_handshake, decode_server, encode_client,
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
#: What the composition root gives the call supervisor (`SupervisorSpec.backoff`).
RESTART_BACKOFF: Final = Backoff(initial_s=0.1, factor=2.0, max_s=2.0)

_CLOSE_STREAM_TEXT: Final = encode_client(CloseStream())


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
    # Survives restarts (the supervisor calls run() again on this object): the audio sent but not
    # yet finalised, and the turns (counter, last final's time, latest onset; a final trims replay).
    _replay: ReplayBuffer = attrs.field(init=False, default=attrs.Factory(
        lambda self: ReplayBuffer(self.call.audio_format), takes_self=True))
    _turns: TurnTracker = attrs.field(init=False, default=attrs.Factory(
        lambda self: TurnTracker(on_final=self._replay.forget_until), takes_self=True))
    _clock_s: float = attrs.field(default=0.0, init=False)  # end of the latest frame sent
    _rejected: DeepgramRejected | None = attrs.field(default=None, init=False)
    _counts: Counter[str] = attrs.field(factory=Counter, init=False)

    @staticmethod
    def options_for(call: CallInfo, **overrides: Any) -> ListenOptions:
        """Centralita's listen options for ``call``'s audio (Spanish, nova-3, turn events on).

        L16 goes out as ``linear16``, little-endian: the link swaps Telnyx's big-endian samples.
        """
        return listen_options(call, **overrides)

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
        return DeepgramLinkStatistics(**self._counts, **self._turns.counts,
                                      replay_buffered_s=self._replay.buffered_s,
                                      turn_id=self._turns.turn_id)

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
                          self._counts["connects"], self._replay.buffered_s)
                task_status.started()
                await self._stream(Connection(ws, outputs, bool(outputs)), inbox)
        except ConnectionRejected as exc:
            raise link_error(classify_handshake(exc.status_code),
                             f"handshake refused with HTTP {exc.status_code}",
                             status_code=exc.status_code) from exc
        except HandshakeError as exc:  # connect timeout, DNS, TCP or TLS failure
            raise DeepgramDropped(CloseVerdict(Recovery.RECONNECT, None, "could not connect"),
                                  f"connect failed: {exc}") from exc

    async def _stream(self, conn: Connection, inbox: MailboxReceiver[AudioFrame]) -> None:
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

    async def _write(self, conn: Connection, inbox: MailboxReceiver[AudioFrame],
                     nursery: trio.Nursery) -> None:
        """Replay, then forward audio, then CloseStream at end of input; KeepAlive runs beside.

        The common case (one frame per message) waits on the inbox with no deadline: a cancel
        scope per 20 ms frame is a measurable share of a listening call's CPU. Only a partly
        filled batch waits with one (it goes out after one batch's worth of audio at most).
        """
        try:
            replay = self._replay.frames()
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
        except ConnectionOver:
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

    async def _keep_alive(self, conn: Connection) -> None:
        """``KeepAlive`` whenever no audio has gone out for ``keepalive_s`` (every send moves
        ``conn.keepalive_due``); Deepgram closes a socket that hears nothing for ~10 s."""
        try:
            while not conn.close_stream_sent:
                if trio.current_time() >= conn.keepalive_due:
                    await self._send(conn, KEEPALIVE_TEXT)
                    self._counts["keepalives_sent"] += 1
                    conn.keepalive_due = trio.current_time() + self.keepalive_s
                await trio.sleep_until(conn.keepalive_due)
        except ConnectionOver:
            return

    async def _read(self, conn: Connection) -> None:
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

    async def _send_audio(self, conn: Connection, frames: list[AudioFrame]) -> None:
        payload = b"".join(frame.payload for frame in frames)
        for frame in frames:
            conn.sent(frame.call_time_s, self._duration_s(frame))
        await self._send(conn, payload)
        self._clock_s = max(self._clock_s, self._end_s(frames[-1]))
        self._counts.update(frames_sent=len(frames), bytes_sent=len(payload), audio_messages_sent=1)
        conn.keepalive_due = trio.current_time() + self.keepalive_s

    async def _send(self, conn: Connection, message: str | bytes) -> None:
        if not message:  # an empty binary frame means CloseStream to Deepgram
            return
        try:
            with trio.move_on_after(self.send_timeout_s) as sending:
                await conn.ws.send_message(message)
        except ConnectionClosed as exc:
            conn.end(self._close_error(conn, exc.reason))
            raise ConnectionOver from None
        if sending.cancelled_caught:  # a polite close would block on the same full buffer
            conn.stuck = True
            conn.end(DeepgramDropped(CloseVerdict(Recovery.RECONNECT, None, "network stalled"),
                                     f"a send took longer than {self.send_timeout_s:g}s"))
            await abort_ws(conn.ws)
            raise ConnectionOver

    def _close_error(self, conn: Connection, reason: CloseReason | None) -> DeepgramLinkError | None:
        code = None if reason is None else reason.code
        text = (None if reason is None else reason.reason) or ""
        verdict = classify_close(code, text)
        if conn.close_stream_sent:
            if verdict.recovery is not Recovery.FINISHED:
                self._log(logging.WARNING, "closed with %s %r after CloseStream", code, text)
            return None  # the end we asked for
        if verdict.recovery is Recovery.FINISHED:
            verdict = CloseVerdict(Recovery.RECONNECT, verdict.error_code, "closed unasked")
        return link_error(verdict, f"connection closed with {code} {text}".rstrip(), close_code=code)

    # -- what the server says, in call time -----------------------------------------------------

    def _events(self, conn: Connection, message: ServerMessage) -> list[Transcript]:
        if isinstance(message, ErrorMessage):
            self._counts["server_errors"] += 1
            self._log(logging.WARNING, "Deepgram error %s: %s", message.variant, message.description)
            return []
        if isinstance(message, Metadata):
            self._log(logging.INFO, "Deepgram session %s ended after %.2fs of audio",
                      message.request_id, message.duration)
            return []
        # Speech (Results, UtteranceEnd, SpeechStarted); UnknownMessage: skipped, as Deepgram asks.
        return self._turns.events(message, conn.offset_at, self._clock_s)

    # -- audio ----------------------------------------------------------------------------------

    def _accept(self, frame: AudioFrame) -> AudioFrame | None:
        """The frame as Deepgram wants it, kept for replay; None if it must not be sent."""
        payload = to_deepgram(frame.payload, self.call.audio_format.codec)
        if not payload:
            self._counts["frames_skipped"] += 1
            return None
        accepted = frame if payload is frame.payload else AudioFrame(frame.call_time_s, payload)
        evicted = self._replay.add(frame.call_time_s, payload, self.replay_limit_s)
        if evicted:
            self._counts["replay_overflow_frames"] += evicted
        return accepted

    def _duration_s(self, frame: AudioFrame) -> float:
        return payload_seconds(self.call.audio_format, frame.payload)

    def _end_s(self, frame: AudioFrame) -> float:
        return frame.call_time_s + self._duration_s(frame)

    def _log(self, level: int, message: str, *args: object) -> None:
        logger.log(level, message, *args, extra={"call_id": self.call.call_id})
