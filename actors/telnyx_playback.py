"""TelnyxPlayback: a webhook-mode call's voice — the Brain's replies played by Telnyx itself.

With ``USE_MEDIA_STREAMS=false`` there is no socket to stream audio on. A reply is played either
with Telnyx ``speak`` (Telnyx's TTS, ``voice``/``language`` from settings) or, when an
:class:`~actors.s3_audio.AudioStore` is configured, as our own TTS (the same engine port the
Speaker uses) rendered to a WAV, uploaded to S3 and started with ``playback_start`` on its
presigned URL. It takes the Speaker's place in the call: same inputs from the Brain, same reports
back, so the Brain cannot tell the modes apart.

One play at a time. Telnyx reports each play with ``call.speak.*`` / ``call.playback.*``
webhooks; chunk 0 of a reply goes out alone (first audio as soon as possible) and the chunks that
arrive while it plays are merged into the next play, up to ``merge_max_chars``. A play's
``ended`` with status ``completed`` is what proves the caller heard it (``ChunkPlayed``,
``ReplyFinished``); ``started`` gives the latency waterfall its last stages
(``ReplyAudioStarted``).

Barge-in: ``ClearPlayback`` cancels the play being prepared, sends ``playback_stop`` if a command
may have reached Telnyx (it stops speak too), and reports ``PlaybackCleared`` with what was heard;
the stopped play's late ``ended`` webhook is recognised and ignored.

Never a silent call: S3 or our TTS failing (or a playback Telnyx cannot fetch) falls back to
Telnyx ``speak`` of the same text, logged as an error. A command Telnyx refuses because the call
has ended (422 ``90018``) stops playback quietly: the hangup webhook is on its way.
"""

from __future__ import annotations

import logging
import uuid
from collections import deque
from contextlib import AsyncExitStack, aclosing
from typing import Any, Final, Protocol

import attrs
import trio

from actors.messages import (CallInfo, ChunkPlayed, ClearPlayback, PlaybackCleared,
                             ReplyAudioStarted, ReplyFinished, Speak, SpeakerReport)
from actors.s3_audio import AudioStore, AudioStoreError, wav_file
from actors.telnyx_call_events import PlaybackEnded, PlaybackEvent, PlaybackStarted, PlayKind
from actors.telnyx_control import TelnyxApiError, TelnyxError
from actors.tts import TtsEngine, TtsSession
from protocols.telnyx_call_control import SPEAK_MAX_CHARS
from supervisor import ChildSpec, MailboxReceiver, MailboxSender, Restart

log = logging.getLogger(__name__)

__all__ = ["MERGE_MAX_CHARS", "PLAY_END_TIMEOUT_S", "PlaybackCommands", "TelnyxPlayback",
           "TelnyxPlaybackStatistics"]

MERGE_MAX_CHARS: Final = 600
#: A play whose ``ended`` webhook never comes (lost for good) is taken as finished after this.
PLAY_END_TIMEOUT_S: Final = 120.0
SHUTDOWN_S: Final = 3.0  # a playback_stop in flight may need a resend and a full timeout
_FALLBACK_STATUSES: Final = frozenset({"file_not_found", "failed"})

PlaybackInput = Speak | ClearPlayback | PlaybackEvent


class PlaybackCommands(Protocol):
    """The Call Control commands playback needs (``TelnyxControl`` has them)."""

    async def speak(self, call_control_id: str, **fields: Any) -> object: ...

    async def playback_start(self, call_control_id: str, **fields: Any) -> object: ...

    async def playback_stop(self, call_control_id: str, **fields: Any) -> object: ...


@attrs.frozen
class TelnyxPlaybackStatistics:
    speaks: int
    playbacks: int
    fallbacks: int
    stops: int
    failures: int


@attrs.define(eq=False)
class _Reply:
    reply_id: str
    texts: dict[int, str] = attrs.field(factory=dict)
    heard: list[int] = attrs.field(factory=list)
    audio_started: bool = False

    def heard_text(self) -> str:
        return " ".join(self.texts[c].strip() for c in self.heard if self.texts[c].strip())


@attrs.define(eq=False)
class _Play:
    """One command in flight: which chunks it says, how, and how it ended."""

    reply_id: str
    chunks: tuple[int, ...]
    last: bool
    text: str
    kind: PlayKind = "speak"
    media_url: str | None = None
    issued_at_s: float = 0.0
    ended: trio.Event = attrs.field(factory=trio.Event)
    status: str | None = None

    def matches(self, kind: PlayKind, media_url: str | None) -> bool:
        return self.kind == kind and (kind == "speak" or self.media_url == media_url)


@attrs.define(eq=False)
class _Turn:
    scope: trio.CancelScope = attrs.field(factory=trio.CancelScope)
    done: trio.Event = attrs.field(factory=trio.Event)


@attrs.define(eq=False)
class TelnyxPlayback:
    """Plays the Brain's replies on a call with Telnyx ``speak`` or S3 + ``playback_start``.

    Receives (``inbox``): `Speak` and `ClearPlayback` from the Brain; `PlaybackStarted` and
      `PlaybackEnded` from the webhook route (``send_nowait``).
    Sends: Call Control commands over HTTP (``commands``); `ReplyAudioStarted`, `ChunkPlayed`,
      `ReplyFinished`, `PlaybackCleared` to ``reports_out`` (the Brain), as the Speaker does.
    On end of input: stops preparing plays and returns (what Telnyx plays goes on; the call is
      ending), closing ``reports_out``. Reports gone: returns quietly.
    On failure: Telnyx, S3 and TTS errors are logged and handled (fallback to ``speak``, or the
      reply reported as cut); never raised. Permanent: anything else is a bug, and a restart
      starts clean (replies in flight are lost, as with the Speaker).
    """

    call: CallInfo
    commands: PlaybackCommands
    voice: str
    language: str | None = None
    tts: TtsEngine | None = None
    store: AudioStore | None = None
    merge_max_chars: int = MERGE_MAX_CHARS
    play_end_timeout_s: float = PLAY_END_TIMEOUT_S
    # Per run:
    _reports: trio.abc.SendChannel[SpeakerReport] | None = attrs.field(default=None, init=False)
    _session: TtsSession | None = attrs.field(default=None, init=False)
    _replies: dict[str, _Reply] = attrs.field(factory=dict, init=False)
    _pending: deque[Speak] = attrs.field(factory=deque, init=False)
    _pending_changed: trio.Event = attrs.field(factory=trio.Event, init=False)
    _cleared: set[str] = attrs.field(factory=set, init=False)
    _current: _Play | None = attrs.field(default=None, init=False)
    _stale: list[tuple[PlayKind, str | None]] = attrs.field(factory=list, init=False)
    _turn: _Turn = attrs.field(factory=_Turn, init=False)
    _call_gone: bool = attrs.field(default=False, init=False)
    _counts: dict[str, int] = attrs.field(factory=dict, init=False)

    def statistics(self) -> TelnyxPlaybackStatistics:
        return TelnyxPlaybackStatistics(**{k: self._counts.get(k, 0) for k in (
            "speaks", "playbacks", "fallbacks", "stops", "failures")})

    def child_spec(self, *, inbox: MailboxReceiver[PlaybackInput],
                   reports_out: MailboxSender[Any], name: str = "telnyx_playback") -> ChildSpec:
        return ChildSpec(name=name, run=self.run,
                         channels={"inbox": inbox, "reports_out": reports_out},
                         restart=Restart.PERMANENT, shutdown_s=SHUTDOWN_S)

    async def run(self, inbox: trio.abc.ReceiveChannel[PlaybackInput], *,
                  reports_out: trio.abc.SendChannel[SpeakerReport],
                  task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        self._reports, self._replies, self._pending = reports_out, {}, deque()
        self._cleared, self._current, self._stale, self._call_gone = set(), None, [], False
        async with inbox, reports_out, AsyncExitStack() as stack:
            self._session = await self._open_tts(stack)
            try:
                async with trio.open_nursery() as nursery:
                    self._start_turn(nursery)
                    task_status.started()
                    async for msg in inbox:
                        await self._on(msg, nursery)
                    nursery.cancel_scope.cancel("end of input")
            except* _DownstreamGone:
                log.info("playback stopping: the Brain is gone",
                         extra={"call_id": self.call.call_id})

    async def _open_tts(self, stack: AsyncExitStack) -> TtsSession | None:
        if self.store is None or self.tts is None:
            return None
        try:
            return await stack.enter_async_context(self.tts.open_session(self.call.audio_format))
        except Exception as exc:  # noqa: BLE001 - Telnyx speak still gives the call a voice
            log.error("our TTS could not start: replies fall back to Telnyx speak",
                      extra={"call_id": self.call.call_id, "error": type(exc).__name__})
            return None

    # -- inbox ----------------------------------------------------------------------------------

    async def _on(self, msg: PlaybackInput, nursery: trio.Nursery) -> None:
        if isinstance(msg, Speak):
            if msg.reply_id in self._cleared or self._call_gone:
                return
            reply = self._replies.setdefault(msg.reply_id, _Reply(msg.reply_id))
            reply.texts[msg.chunk] = msg.text
            self._pending.append(msg)
            self._pending_changed.set()
        elif isinstance(msg, ClearPlayback):
            await self._barge_in(nursery, msg.reason)
        elif isinstance(msg, PlaybackStarted):
            play = self._current
            if play is not None and play.matches(msg.kind, msg.media_url) and not self._is_stale(msg):
                started = self._replies.get(play.reply_id)
                if started is not None and not started.audio_started:
                    started.audio_started = True
                    await self._report(ReplyAudioStarted(play.reply_id, play.issued_at_s,
                                                         msg.call_time_s))
        elif isinstance(msg, PlaybackEnded):
            if self._take_stale(msg):
                return
            play = self._current
            if play is not None and play.matches(msg.kind, msg.media_url):
                play.status = msg.status
                play.ended.set()

    def _is_stale(self, msg: PlaybackStarted) -> bool:
        return (msg.kind, msg.media_url if msg.kind == "playback" else None) in self._stale

    def _take_stale(self, msg: PlaybackEnded) -> bool:
        """The ``ended`` of a play we stopped (barge-in): consumed once, never a new play's."""
        key = (msg.kind, msg.media_url if msg.kind == "playback" else None)
        if key in self._stale:
            self._stale.remove(key)
            return True
        return False

    async def _barge_in(self, nursery: trio.Nursery, reason: str) -> None:
        self._turn.scope.cancel(f"barge-in: {reason}")
        await self._turn.done.wait()
        play, self._current = self._current, None
        if play is not None:
            self._stale.append((play.kind, play.media_url if play.kind == "playback" else None))
            await self._stop_on_telnyx(reason)
        cut = list(self._replies.values())
        self._pending.clear()
        self._replies.clear()
        now = self._call_time()
        for reply in cut:
            self._cleared.add(reply.reply_id)
            log.info("playback cleared", extra={"call_id": self.call.call_id,
                                                "reply_id": reply.reply_id, "reason": reason})
            await self._report(PlaybackCleared(reply.reply_id, reply.heard_text(), now))
        self._start_turn(nursery)

    async def _stop_on_telnyx(self, reason: str) -> None:
        self._counts["stops"] = self._counts.get("stops", 0) + 1
        try:
            await self.commands.playback_stop(self.call.call_control_id, stop="all")
        except TelnyxError as exc:
            if not _call_has_ended(exc):
                log.error("playback_stop failed: the caller may hear the rest of the reply",
                          extra={"call_id": self.call.call_id, "error": str(exc),
                                 "reason": reason})

    # -- a turn: prepare and play, one at a time; cancelled as a whole on barge-in ---------------

    def _start_turn(self, nursery: trio.Nursery) -> None:
        self._turn = _Turn()
        nursery.start_soon(self._run_turn, self._turn)

    async def _run_turn(self, turn: _Turn) -> None:
        try:
            with turn.scope:
                while True:
                    play = await self._next_play()
                    await self._play(play)
        finally:
            turn.done.set()

    async def _next_play(self) -> _Play:
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
        text = " ".join(s.text.strip() for s in group if s.text.strip())
        return _Play(reply_id=group[0].reply_id, chunks=tuple(s.chunk for s in group),
                     last=group[-1].last, text=text[:SPEAK_MAX_CHARS])

    async def _play(self, play: _Play) -> None:
        if not play.text:  # e.g. a last chunk that was only the hangup marker: nothing to say
            await self._heard(play)
            return
        url = await self._publish(play) if self._session is not None else None
        status = await self._issue(play, "playback" if url else "speak", url)
        if status in _FALLBACK_STATUSES and play.kind == "playback":
            self._counts["fallbacks"] = self._counts.get("fallbacks", 0) + 1
            log.error("Telnyx could not play our audio: falling back to speak",
                      extra={"call_id": self.call.call_id, "reply_id": play.reply_id,
                             "status": status})
            status = await self._issue(play, "speak", None)
        if status == "completed":
            await self._heard(play)
        elif status is not None:  # cut by Telnyx (call_hangup, failed ...): heard up to here
            await self._drop_reply(play.reply_id, f"play ended {status}")

    async def _publish(self, play: _Play) -> str | None:
        """Our TTS → WAV → S3; None (fall back to speak) if any of it fails."""
        assert self._session is not None and self.store is not None
        pieces: list[bytes] = []
        try:
            async with aclosing(self._session.synthesize(play.text)) as audio:
                async for data in audio:
                    pieces.append(data)
            fmt = self.call.audio_format
            wav = wav_file(fmt.decode(b"".join(pieces)), fmt.sample_rate_hz)
            key = f"{self.call.call_id}/{play.reply_id}-{play.chunks[0]}-{uuid.uuid4().hex[:8]}.wav"
            return await self.store.publish(key, wav)
        except AudioStoreError as exc:
            reason = str(exc)
        except Exception as exc:  # noqa: BLE001 - any TTS failure: Telnyx speak still works
            reason = f"TTS failed: {type(exc).__name__}"
        self._counts["fallbacks"] = self._counts.get("fallbacks", 0) + 1
        log.error("S3 playback unavailable: falling back to Telnyx speak",
                  extra={"call_id": self.call.call_id, "reply_id": play.reply_id,
                         "error": reason})
        return None

    async def _issue(self, play: _Play, kind: PlayKind, url: str | None) -> str | None:
        """Send the command and wait for its ``ended``; the status, or None if it never played."""
        play.kind, play.media_url, play.status = kind, url, None
        play.ended = trio.Event()
        play.issued_at_s = self._call_time()
        self._current = play  # before the request: a barge-in mid-request still stops it
        cid = self.call.call_control_id
        try:
            if kind == "playback":
                assert url is not None
                self._counts["playbacks"] = self._counts.get("playbacks", 0) + 1
                await self.commands.playback_start(cid, audio_url=url, audio_type="wav")
            else:
                self._counts["speaks"] = self._counts.get("speaks", 0) + 1
                await self.commands.speak(cid, payload=play.text, voice=self.voice,
                                          language=self.language)
        except TelnyxError as exc:
            self._current = None
            return await self._refused(play, kind, exc)
        with trio.move_on_after(self.play_end_timeout_s):
            await play.ended.wait()
        self._current = None
        if not play.ended.is_set():
            log.warning("no ended webhook for a play: taking it as heard",
                        extra={"call_id": self.call.call_id, "reply_id": play.reply_id})
            return "completed"
        return play.status

    async def _refused(self, play: _Play, kind: PlayKind, exc: TelnyxError) -> str | None:
        extra = {"call_id": self.call.call_id, "reply_id": play.reply_id, "error": str(exc)}
        if _call_has_ended(exc):
            log.info("call has ended at Telnyx: playback stops", extra=extra)
            self._call_gone = True
            self._pending.clear()
            await self._drop_reply(play.reply_id, "call ended")
            return None
        if kind == "playback":
            log.error("playback_start refused: falling back to speak", extra=extra)
            self._counts["fallbacks"] = self._counts.get("fallbacks", 0) + 1
            return await self._issue(play, "speak", None)
        self._counts["failures"] = self._counts.get("failures", 0) + 1
        log.error("speak refused: this part of the reply is not played", extra=extra)
        await self._drop_reply(play.reply_id, "speak refused")
        return None

    # -- reports --------------------------------------------------------------------------------

    async def _heard(self, play: _Play) -> None:
        reply = self._replies.get(play.reply_id)
        if reply is None:
            return
        now = self._call_time()
        if not reply.audio_started and play.text:
            reply.audio_started = True
            await self._report(ReplyAudioStarted(play.reply_id, play.issued_at_s, now))
        for chunk in play.chunks:
            reply.heard.append(chunk)
            await self._report(ChunkPlayed(play.reply_id, chunk, reply.texts[chunk], now))
        if play.last:
            del self._replies[play.reply_id]
            await self._report(ReplyFinished(play.reply_id, now))

    async def _drop_reply(self, reply_id: str, why: str) -> None:
        """A reply that cannot be played on: the Brain hears it was cut where the caller was."""
        reply = self._replies.pop(reply_id, None)
        self._cleared.add(reply_id)
        self._pending = deque(s for s in self._pending if s.reply_id != reply_id)
        if reply is not None:
            log.info("reply cut", extra={"call_id": self.call.call_id, "reply_id": reply_id,
                                         "reason": why})
            await self._report(PlaybackCleared(reply_id, reply.heard_text(), self._call_time()))

    async def _report(self, report: SpeakerReport) -> None:
        assert self._reports is not None
        try:
            await self._reports.send(report)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            raise _DownstreamGone from None

    def _call_time(self) -> float:
        return trio.current_time() - self.call.started_at


class _DownstreamGone(Exception):
    """Nobody reads the reports any more (playback returns quietly)."""


def _call_has_ended(exc: TelnyxError) -> bool:
    return isinstance(exc, TelnyxApiError) and exc.errors.call_has_ended
