"""Speaker: the bot's voice. TTS audio, paced in real time, onto the call's Telnyx socket.

Fact sheet: ``/work/shared/protocols/telnyx.md`` §2 (media/mark/clear, 20 ms to 30 s per media
message) and §5 (pace from a monotonic clock with a small lead, catch up when late, reset audio
state on clear, bound every send). The TTS engine is a port (:mod:`actors.tts`).

Pacing. Telnyx queues what we send and plays it in real time, so we keep only a *lead* of audio
queued there (``pacing_lead_s``, 160 ms): enough to ride out scheduling and network jitter, small
enough that little is in flight when the caller barges in. A *playout* is a stretch of
continuous audio; it is anchored at the moment its first frame leaves (Telnyx starts playing on
arrival), and frame ``k`` of it leaves at the absolute deadline
``anchor + k * 20 ms - pacing_lead_s``. Deadlines are absolute, so a late wake-up is caught up
at the next send and never accumulates into drift. When the frames run out long enough for
Telnyx's queue to run dry (TTS slower than real time, or silence between replies), the next frame
starts a new playout with a new anchor, and the lead is rebuilt in a short burst.

Message size. A ``media`` message carries up to ``frames_per_message`` frames (the service's
``SPEAKER_MESSAGE_MS``, 100 ms by default: a fifth of the sends, wake-ups and JSON/base64
encodings of one frame per message). A message leaves at the deadline of its *first* frame and
takes the frames already synthesised behind it, so the audio queued at Telnyx never falls below
the lead (the jitter margin is unchanged) and peaks at the lead plus one message just after a
send. Barge-in does not depend on it: ``clear`` goes out at once and Telnyx drops what it queued.

Barge-in. ``ClearPlayback`` cancels the turn's CancelScope (synthesis and pacing together) instead
of draining queues, sends ``clear`` to Telnyx at once, drops the queued frames and the framing
tail, then tells the TTS session to cancel (its round trip is not on the caller's path). Telnyx
echoes the pending marks right after a clear; those chunks were *not* heard, so every mark sent
but not echoed before the clear is set aside and its echo ignored.

Chunks. Speak chunks are synthesised in order, one ``synthesize`` per chunk, while earlier chunks
are still being paced out. Chunks of the same reply that are already waiting when the synthesiser
gets to them are merged into one text (one TTS request, one mark named after the last chunk), up
to ``merge_max_chars``: fewer requests (Aura allows 20 flushes a minute) and no extra latency,
since those chunks would have waited anyway. Each request's audio ends padded with codec silence
to a whole 20 ms frame, so every mark sits exactly after its own audio (at most 19 ms of silence
between chunks).
"""

from __future__ import annotations

import logging
import math
from collections import deque
from contextlib import aclosing
from typing import Final

import attrs
import trio

from actors.messages import (
    FRAME_S, CallInfo, ChunkPlayed, ClearPlayback, MarkPlayed, PlaybackCleared, ReplyAudioStarted,
    ReplyFinished, Speak, SpeakerCommand, SpeakerReport,
)
from actors.ports import MediaSocket
from actors.tts import TtsEngine, TtsSession
from protocols import telnyx_media as wire
from protocols.audio import FrameChunker
from supervisor import MailboxReceiver

__all__ = ["PACING_LEAD_S", "Speaker", "SpeakerStatistics", "TelnyxSendFailed", "TelnyxTx"]

log = logging.getLogger(__name__)

PACING_LEAD_S: Final = 0.16
SEND_TIMEOUT_S: Final = 1.0
#: Synthesised frames waiting for their send time (10 s of audio); beyond it synthesis waits.
FRAME_QUEUE_FRAMES: Final = 500
MERGE_MAX_CHARS: Final = 600
#: Longest media message Telnyx accepts is 30 s; we stay far below it.
MAX_FRAMES_PER_MESSAGE: Final = 50


class TelnyxSendFailed(Exception):
    """The Telnyx socket is gone or stuck: the call is ending (the Speaker returns quietly)."""


class _DownstreamGone(Exception):
    """Nobody reads the reports any more (the Speaker returns quietly)."""


@attrs.define(eq=False)
class TelnyxTx:
    """The one writer of the call's Telnyx socket: media, mark and clear, one frame at a time.

    Every send is bounded by ``send_timeout_s`` and shielded from the caller's cancellation, so a
    barge-in that cancels the pacer never cuts a WebSocket frame in half (a loopback or LAN send
    takes microseconds; a stuck one is abandoned after the timeout and the call is over).
    """

    socket: MediaSocket
    send_timeout_s: float = SEND_TIMEOUT_S
    _lock: trio.Lock = attrs.field(factory=trio.Lock)

    async def send(self, msg: wire.TelnyxOutbound) -> None:
        text = wire.encode(msg)
        with trio.CancelScope(shield=True):
            with trio.move_on_after(self.send_timeout_s) as waited:
                async with self._lock:
                    try:
                        await self.socket.send(text)
                    except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                        raise TelnyxSendFailed("telnyx socket closed") from exc
        if waited.cancelled_caught:
            raise TelnyxSendFailed(f"telnyx send stuck for {self.send_timeout_s:g}s")


@attrs.frozen
class SpeakerStatistics:
    media_messages: int
    frames_sent: int
    marks_sent: int
    clears_sent: int
    playouts: int  # anchors: 1 per reply when TTS keeps ahead; more means the line ran dry
    max_late_s: float  # worst lateness of a send against its deadline


@attrs.define(eq=False)
class _Reply:
    reply_id: str
    texts: dict[int, str] = attrs.field(factory=dict)
    heard: list[int] = attrs.field(factory=list)
    tts_first_audio_s: float | None = None
    audio_started: bool = False

    def heard_text(self) -> str:
        return " ".join(self.texts[c].strip() for c in self.heard if self.texts[c].strip())


@attrs.frozen
class _Mark:
    name: str
    reply_id: str
    chunks: tuple[int, ...]
    last: bool


@attrs.frozen
class _Audio:
    reply_id: str
    frame: bytes


@attrs.define(eq=False)
class _Turn:
    scope: trio.CancelScope = attrs.field(factory=trio.CancelScope)
    done: trio.Event = attrs.field(factory=trio.Event)


@attrs.define(eq=False)
class Speaker:
    """Speaks the Brain's replies on the call and reports what the caller actually heard.

    Receives: `Speak` chunks and `ClearPlayback` from the Brain, `MarkPlayed` from TelnyxRx
      (Telnyx echoed a mark), all on one ``inbox``.
    Sends: ``media``/``mark``/``clear`` frames on ``socket`` — the single writer of its send side,
      through one `TelnyxTx`; `ReplyAudioStarted` (first frame of a reply left),
      `ChunkPlayed` (a chunk's mark echoed: heard), `ReplyFinished` (its last chunk heard) and
      `PlaybackCleared` (barge-in: ``played_text`` is what was heard before the clear) on
      ``reports_out``. Times are call time (``trio.current_time() - call.started_at``, or the
      echo's own call time for marks).
    On end of input: stops synthesis and pacing (the call is ending; what Telnyx already queued
      keeps playing), closes the TTS session gracefully and returns, closing ``reports_out``.
      Reports gone (downstream closed) or the socket gone or stuck: returns quietly.
    On failure: a TTS error propagates — ``permanent``: the supervisor restarts the Speaker with a
      fresh TTS session (replies in flight are lost; the Brain sees no ReplyFinished for them).
      Cancelled: nothing to close on Telnyx (the route owns the socket); the TTS session is closed
      in a bounded, shielded scope by the engine.
    """

    call: CallInfo
    tts: TtsEngine
    socket: MediaSocket
    pacing_lead_s: float = PACING_LEAD_S
    frames_per_message: int = attrs.field(
        default=1, validator=[attrs.validators.ge(1), attrs.validators.le(MAX_FRAMES_PER_MESSAGE)])
    send_timeout_s: float = SEND_TIMEOUT_S
    merge_max_chars: int = MERGE_MAX_CHARS
    # Per run (reset when the supervisor runs the same object again):
    _tx: TelnyxTx = attrs.field(init=False)
    _chunker: FrameChunker = attrs.field(init=False)
    _reports: trio.abc.SendChannel[SpeakerReport] | None = attrs.field(init=False, default=None)
    _replies: dict[str, _Reply] = attrs.field(init=False, factory=dict)
    _pending: deque[Speak] = attrs.field(init=False, factory=deque)
    _pending_changed: trio.Event = attrs.field(init=False, factory=trio.Event)
    _marks: dict[str, _Mark] = attrs.field(init=False, factory=dict)  # sent, not yet echoed
    _cleared_marks: set[str] = attrs.field(init=False, factory=set)
    _cleared_replies: set[str] = attrs.field(init=False, factory=set)
    _turn: _Turn = attrs.field(init=False, factory=_Turn)
    _counts: dict[str, int] = attrs.field(init=False, factory=dict)
    _max_late_s: float = attrs.field(init=False, default=0.0)

    def __attrs_post_init__(self) -> None:
        self._reset()

    def statistics(self) -> SpeakerStatistics:
        return SpeakerStatistics(**self._counts, max_late_s=self._max_late_s)

    def _reset(self) -> None:
        self._tx = TelnyxTx(self.socket, self.send_timeout_s)
        self._chunker = FrameChunker.for_format(self.call.audio_format)
        self._replies, self._pending, self._marks = {}, deque(), {}
        self._cleared_marks, self._cleared_replies = set(), set()
        self._counts = dict.fromkeys(
            ("media_messages", "frames_sent", "marks_sent", "clears_sent", "playouts"), 0)
        self._max_late_s = 0.0

    async def run(self, inbox: MailboxReceiver[SpeakerCommand | MarkPlayed], *,
                  reports_out: trio.abc.SendChannel[SpeakerReport],
                  task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Open the TTS session, then speak until the inbox ends (see the class docstring)."""
        self._reset()
        self._reports = reports_out
        async with inbox, reports_out:
            try:
                async with self.tts.open_session(self.call.audio_format) as session:
                    task_status.started()
                    async with trio.open_nursery() as nursery:
                        self._start_turn(nursery, session)
                        async for msg in inbox:
                            if isinstance(msg, Speak):
                                self._enqueue(msg)
                            elif isinstance(msg, ClearPlayback):
                                await self._barge_in(nursery, session, msg.reason)
                            elif isinstance(msg, MarkPlayed):
                                await self._mark_played(msg)
                        nursery.cancel_scope.cancel(reason="end of input")
            except (TelnyxSendFailed, _DownstreamGone, BaseExceptionGroup) as exc:
                quiet, sole = _quiet_ending(exc)
                if quiet is None:
                    if sole is not None and sole is not exc:
                        raise sole from None  # one real failure: not wrapped in a group
                    raise
                log.info("speaker stopping: %s", quiet, extra={"call_id": self.call.call_id})

    # -- inbox ----------------------------------------------------------------------------------

    def _enqueue(self, msg: Speak) -> None:
        if msg.reply_id in self._cleared_replies:
            return  # a chunk of a reply the caller already cut off
        reply = self._replies.setdefault(msg.reply_id, _Reply(msg.reply_id))
        reply.texts[msg.chunk] = msg.text
        self._pending.append(msg)
        self._pending_changed.set()

    async def _mark_played(self, msg: MarkPlayed) -> None:
        if msg.name in self._cleared_marks:
            self._cleared_marks.discard(msg.name)  # released by our clear: not heard
            return
        mark = self._marks.pop(msg.name, None)
        reply = None if mark is None else self._replies.get(mark.reply_id)
        if mark is None or reply is None:
            return  # not ours (sent before a restart)
        for chunk in mark.chunks:
            reply.heard.append(chunk)
            await self._report(ChunkPlayed(reply.reply_id, chunk, reply.texts[chunk],
                                           msg.call_time_s))
        if mark.last:
            del self._replies[reply.reply_id]
            await self._report(ReplyFinished(reply.reply_id, msg.call_time_s))

    async def _barge_in(self, nursery: trio.Nursery, session: TtsSession, reason: str) -> None:
        self._turn.scope.cancel(reason=f"barge-in: {reason}")
        await self._turn.done.wait()  # at most one in-flight (shielded, bounded) frame send
        cut = list(self._replies.values())
        cleared_at = self._call_time()
        if cut:
            await self._tx.send(wire.Clear())
            self._counts["clears_sent"] += 1
        self._pending.clear()
        self._chunker.reset()
        self._cleared_marks.update(self._marks)
        self._marks.clear()
        self._replies.clear()
        for reply in cut:
            self._cleared_replies.add(reply.reply_id)
            log.info("playback cleared", extra={"call_id": self.call.call_id,
                                                "reply_id": reply.reply_id, "reason": reason})
            await self._report(PlaybackCleared(reply.reply_id, reply.heard_text(), cleared_at))
        await session.cancel()
        self._start_turn(nursery, session)

    # -- a turn: synthesis and pacing, cancelled together -----------------------------------------

    def _start_turn(self, nursery: trio.Nursery, session: TtsSession) -> None:
        self._turn = _Turn()
        nursery.start_soon(self._run_turn, self._turn, session)

    async def _run_turn(self, turn: _Turn, session: TtsSession) -> None:
        frames_in, frames_out = trio.open_memory_channel[_Audio | _Mark](FRAME_QUEUE_FRAMES)
        try:
            with turn.scope:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._synthesize, session, frames_in)
                    nursery.start_soon(self._pace, frames_out)
        finally:
            turn.done.set()

    async def _next_group(self) -> list[Speak]:
        while not self._pending:
            self._pending_changed = trio.Event()
            await self._pending_changed.wait()
        group = [self._pending.popleft()]
        size = len(group[0].text)
        while (self._pending and not group[-1].last
               and self._pending[0].reply_id == group[0].reply_id
               and size + len(self._pending[0].text) <= self.merge_max_chars):
            group.append(self._pending.popleft())
            size += len(group[-1].text)
        return group

    async def _synthesize(self, session: TtsSession,
                          frames: trio.MemorySendChannel[_Audio | _Mark]) -> None:
        while True:
            group = await self._next_group()
            reply_id = group[0].reply_id
            reply = self._replies[reply_id]
            text = " ".join(s.text.strip() for s in group if s.text.strip())
            async with aclosing(session.synthesize(text)) as audio:
                async for data in audio:
                    if reply.tts_first_audio_s is None:
                        reply.tts_first_audio_s = self._call_time()
                    for frame in self._chunker.feed(data):
                        await frames.send(_Audio(reply_id, frame))
            tail = self._chunker.flush(pad=True)
            if tail is not None:
                await frames.send(_Audio(reply_id, tail))
            name = f"{reply_id}:{group[-1].chunk}"
            await frames.send(_Mark(name, reply_id, tuple(s.chunk for s in group), group[-1].last))

    async def _pace(self, frames: trio.MemoryReceiveChannel[_Audio | _Mark]) -> None:
        """Send frames at ``anchor + k * 20 ms - lead`` (see the module docstring)."""
        lead, per_message = self.pacing_lead_s, self.frames_per_message
        anchor, sent = -math.inf, 0  # frame `sent` of this playout starts playing at anchor + sent * FRAME_S
        held: _Audio | _Mark | None = None
        while True:
            item = held if held is not None else await frames.receive()
            held = None
            if isinstance(item, _Mark):
                self._marks[item.name] = item
                await self._tx.send(wire.MarkOut(item.name))
                self._counts["marks_sent"] += 1
                continue
            now = trio.current_time()
            if now >= anchor + sent * FRAME_S:  # Telnyx has played everything we sent
                anchor, sent = now, 0
                self._counts["playouts"] += 1
            deadline = anchor + sent * FRAME_S - lead
            await trio.sleep_until(deadline)
            batch = [item.frame]
            while len(batch) < per_message:
                try:
                    following = frames.receive_nowait()
                except trio.WouldBlock:
                    break
                if isinstance(following, _Audio) and following.reply_id == item.reply_id:
                    batch.append(following.frame)
                else:
                    held = following
                    break
            self._max_late_s = max(self._max_late_s, trio.current_time() - max(deadline, now))
            await self._tx.send(wire.MediaOut(b"".join(batch)))
            self._counts["media_messages"] += 1
            self._counts["frames_sent"] += len(batch)
            sent += len(batch)
            reply = self._replies.get(item.reply_id)
            if reply is not None and not reply.audio_started:
                reply.audio_started = True
                sent_at = self._call_time()
                first_audio = reply.tts_first_audio_s if reply.tts_first_audio_s is not None else sent_at
                await self._report(ReplyAudioStarted(item.reply_id, first_audio, sent_at))

    # -- helpers --------------------------------------------------------------------------------

    def _call_time(self) -> float:
        return trio.current_time() - self.call.started_at

    async def _report(self, report: SpeakerReport) -> None:
        assert self._reports is not None
        try:
            await self._reports.send(report)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            raise _DownstreamGone("reports_out closed") from None


def _quiet_ending(exc: BaseException) -> tuple[str | None, BaseException | None]:
    """``(why the Speaker may return quietly, None)`` if ``exc`` (maybe a group) holds only such
    endings and cancellations; else ``(None, the sole real failure or None if several)``."""
    leaves: list[BaseException] = []
    pending = [exc]
    while pending:
        current = pending.pop()
        if isinstance(current, BaseExceptionGroup):
            pending.extend(current.exceptions)
        else:
            leaves.append(current)
    quiet = [e for e in leaves if isinstance(e, TelnyxSendFailed | _DownstreamGone)]
    others = [e for e in leaves if not isinstance(e, TelnyxSendFailed | _DownstreamGone | trio.Cancelled)]
    if quiet and not others:
        return str(quiet[0]), None
    return None, others[0] if len(others) == 1 else None
