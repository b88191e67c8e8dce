"""Brain: the call's turn-taking and conversation: caller turns in, speakable reply chunks out.

Latency is the point: a reply is requested the moment the caller's turn ends (or earlier, on a
stable interim transcript, see ``preemptive``), and its first speakable chunk goes to the Speaker
as soon as the LLM has produced one. The parts, one job each: this module decides *when* (turns,
speculation, barge-in, what the caller heard); `actors.reply_generation` makes one reply's chunks
(LLM stream, retry, fallback; `actors.speakable` cuts them); `actors.conversation` holds the
history and the phrasing. The LLM sits behind the `LlmEngine` port (`actors.llm`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from contextlib import nullcontext
from typing import Final

import attrs
import trio

from actors.conversation import (
    CALL_OPENED, DEFAULT_FALLBACK, DEFAULT_GREETING, DEFAULT_SYSTEM_PROMPT, UNKNOWN_NAME,
    Conversation, fill_name, normalise,
)
from actors.llm import ChatMessage, LlmEngine
from actors.messages import (
    BrainInput, CallerStartedSpeaking, CallInfo, ChunkPlayed, ClearPlayback, DtmfPressed, Hangup,
    PlaybackCleared, RelayInput, ReplyAudioStarted, ReplyFinished, ReplySpoken, SpeakerCommand,
    TranscriptFinal, TranscriptPartial, TurnLatency, UtteranceEnded,
)
from actors.reply_generation import REPLY_CHUNKS, STAGES, Reply, ReplyGeneration
from supervisor import ChildSpec, CloneableChannel, MailboxReceiver, MailboxSender, Restart

__all__ = ["CALL_OPENED", "DEFAULT_FALLBACK", "DEFAULT_GREETING", "DEFAULT_SYSTEM_PROMPT",
           "REPLY_CHUNKS", "STAGES", "Brain", "BrainStatistics"]

log = logging.getLogger(__name__)

#: A drop-oldest mailbox (or a memory channel): sent to with ``send_nowait``, never waited on.
RelaySender = MailboxSender[RelayInput] | trio.MemorySendChannel[RelayInput]

GREETING_TURN: Final = "greeting"
TURN_TIMEOUT_S: Final = 10.0


@attrs.frozen
class BrainStatistics:
    turns: int = 0
    replies: int = 0
    preempt_hits: int = 0
    preempt_misses: int = 0
    barge_ins: int = 0
    llm_retries: int = 0
    llm_failures: int = 0
    fallbacks: int = 0
    dtmf: int = 0
    relay_dropped: int = 0
    history_messages: int = 0


@attrs.define(eq=False)
class Brain:
    """Listens to the caller's turns and answers each through the LLM, speakably and at once.

    Receives (``inbox``): `TranscriptPartial`, `TranscriptFinal`, `UtteranceEnded`,
      `CallerStartedSpeaking`, `DtmfPressed`; from the Speaker `ReplyAudioStarted`, `ChunkPlayed`,
      `PlaybackCleared`, `ReplyFinished`. A turn ends at the first of a ``speech_final`` final or
      an `UtteranceEnded` (a later one for the same turn is ignored); a DTMF digit is a turn of its
      own (``[tecla 5]``).
    Sends: `Speak` chunks to ``speaker_out`` (blocking: the Speaker's back-pressure), chunk 0 as
      soon as one is speakable; the reply's final chunk has ``last=True`` (its text is empty only
      when that chunk was nothing but the ``hangup_marker``: the Speaker must accept it), and
      `ClearPlayback` on barge-in (caller speech while a reply is generated or played). To
      ``relay_out`` (drop-oldest, never waited on) `ReplySpoken` when a reply ends or is cut and
      `TurnLatency` once a reply's first audio is out. A `Hangup` to ``control_out`` after a reply
      ending with ``hangup_marker`` has been played (off by default).
    On end of input: cancels any reply in progress and returns, closing its outputs. If the
      Speaker's channel is gone it returns quietly.
    On failure: an LLM hiccup never reaches the supervisor: one retry within
      ``llm_retry_budget_s``, else ``fallback_phrase`` is spoken (at once for ``refused``).
      Anything else raises; ``permanent``: the supervisor runs the same object again, and the
      conversation history (which holds only what the caller actually heard) lives on the object,
      so the call goes on where it was (with the fallback phrase if a turn was left unanswered).
    """

    call: CallInfo
    llm: LlmEngine
    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    greeting: str | None = DEFAULT_GREETING
    fallback_phrase: str = DEFAULT_FALLBACK
    preemptive: bool = True
    preempt_stable_s: float = 0.25
    barge_in_min_chars: int = 3
    llm_retry_budget_s: float = 1.5
    turn_timeout_s: float = TURN_TIMEOUT_S
    hangup_marker: str | None = None  # e.g. "[FIN]": the prompt must tell the LLM when to use it
    # Survives restarts:
    _conversation: Conversation = attrs.field(factory=Conversation, init=False)
    _greeted: bool = attrs.field(default=False, init=False)
    _seq: int = attrs.field(default=0, init=False)
    _counts: dict[str, int] = attrs.field(factory=dict, init=False)
    # One run's state (reset by run()):
    _nursery: trio.Nursery | None = attrs.field(default=None, init=False)
    _generation: ReplyGeneration | None = attrs.field(default=None, init=False)
    _speaker_out: trio.abc.SendChannel[SpeakerCommand] | None = attrs.field(default=None,
                                                                            init=False)
    _relay_out: RelaySender | None = attrs.field(default=None, init=False)
    _control_out: trio.abc.SendChannel[Hangup] | None = attrs.field(default=None, init=False)
    _speaker_gone: bool = attrs.field(default=False, init=False)
    _open: dict[str, Reply] = attrs.field(factory=dict, init=False)  # committed, not yet over
    _speaking: Reply | None = attrs.field(default=None, init=False)  # the one barge-in cuts
    _spec: Reply | None = attrs.field(default=None, init=False)  # speculative, unreleased
    _turn_id: str | None = attrs.field(default=None, init=False)
    _finals: list[str] = attrs.field(factory=list, init=False)
    _partial: str = attrs.field(default="", init=False)
    _candidate: str = attrs.field(default="", init=False)  # normalised text heard so far
    _candidate_since: float = attrs.field(default=math.inf, init=False)
    _ended_turn: str | None = attrs.field(default=None, init=False)

    def statistics(self) -> BrainStatistics:
        return BrainStatistics(**self._counts, history_messages=len(self._conversation))

    @property
    def history(self) -> Sequence[ChatMessage]:
        """The conversation so far, as the LLM will see it (only what was actually spoken)."""
        return self._conversation.history

    def child_spec(self, *, inbox: MailboxReceiver[BrainInput], speaker_out: CloneableChannel,
                   relay_out: CloneableChannel | None = None,
                   control_out: CloneableChannel | None = None, name: str = "brain") -> ChildSpec:
        channels = {"inbox": inbox, "speaker_out": speaker_out, "relay_out": relay_out,
                    "control_out": control_out}
        return ChildSpec(name, self.run, {k: v for k, v in channels.items() if v is not None},
                         restart=Restart.PERMANENT, shutdown_s=1.0)

    async def run(self, inbox: MailboxReceiver[BrainInput], *,
                  speaker_out: trio.abc.SendChannel[SpeakerCommand],
                  relay_out: RelaySender | None = None,
                  control_out: trio.abc.SendChannel[Hangup] | None = None,
                  task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Answer the caller until the inbox ends (return) or the Speaker is gone (return)."""
        async with inbox, speaker_out, relay_out or nullcontext(), control_out or nullcontext():
            self._speaker_out, self._relay_out = speaker_out, relay_out
            self._control_out = control_out
            self._speaker_gone, self._open, self._speaking, self._spec = False, {}, None, None
            self._ended_turn = None
            self._new_turn()
            self._generation = ReplyGeneration(
                llm=self.llm, call_id=self.call.call_id, fallback_phrase=self.fallback_phrase,
                hangup_marker=self.hangup_marker, turn_timeout_s=self.turn_timeout_s,
                llm_retry_budget_s=self.llm_retry_budget_s, now=self._now, count=self._count,
                send=self._to_speaker)
            try:
                await self._converse(inbox, task_status)
            finally:
                # One line per run, counts cumulative over restarts (the load harness sums them).
                log.info("brain statistics", extra={"call_id": self.call.call_id,
                                                    **attrs.asdict(self.statistics())})

    async def _converse(self, inbox: MailboxReceiver[BrainInput],
                        task_status: trio.TaskStatus[None]) -> None:
        """The run proper, inside the outputs (see `run`)."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            if self.greeting is not None and not self._greeted:
                self._greeted = True
                self._start_reply(GREETING_TURN, fill_name(self.greeting, self.call.callee_name))
            elif self._conversation.awaits_reply():  # restarted mid-turn
                self._start_reply("restart", self.fallback_phrase)
            await self._listen(inbox)
            nursery.cancel_scope.cancel()  # end of input: a reply now has nobody to hear it
        if self._speaker_gone:
            log.info("the Speaker is gone; stopping", extra={"call_id": self.call.call_id})

    # -- the inbox ------------------------------------------------------------------------------

    async def _listen(self, inbox: MailboxReceiver[BrainInput]) -> None:
        while True:
            due = self._candidate_since + self.preempt_stable_s
            if not self.preemptive or self._spec is not None or self._open or not self._candidate:
                due = math.inf
            msg: BrainInput | None = None
            with trio.move_on_at(due):  # only the wait: handling a message is never cut short
                try:
                    msg = await inbox.receive()
                except trio.EndOfChannel:
                    return
            if msg is None:
                self._speculate()
            else:
                await self._on(msg)

    async def _on(self, msg: BrainInput) -> None:
        match msg:
            case TranscriptPartial(turn_id=turn_id, text=text):
                await self._heard(turn_id, text)
                self._partial = text
                self._update_candidate()
            case TranscriptFinal(turn_id=turn_id, text=text):
                await self._heard(turn_id, text)
                self._finals.append(text)
                self._partial = ""
                if msg.speech_final:
                    await self._end_of_speech(turn_id, msg.end_s)
                else:
                    self._update_candidate()
            case UtteranceEnded(turn_id=turn_id):
                if turn_id != self._ended_turn and (self._finals or self._partial):
                    await self._end_of_speech(turn_id, msg.last_word_end_s)
            case CallerStartedSpeaking():
                await self._barge_in("caller started speaking")
            case DtmfPressed(digit=digit):
                self._count("dtmf")
                await self._barge_in(f"dtmf {digit}")
                self._finals.append(f"[tecla {digit}]")
                await self._end_of_speech(f"dtmf-{self._next_seq()}", msg.call_time_s)
            case ReplyAudioStarted(reply_id=reply_id) if (reply := self._open.get(reply_id)):
                reply.stages["tts_first_audio"] = msg.tts_first_audio_s
                reply.stages["first_frame_sent"] = msg.first_frame_sent_s
                self._send_latency(reply)
            case ChunkPlayed(reply_id=reply_id) if (reply := self._open.get(reply_id)):
                reply.played[msg.chunk] = msg.text
            case PlaybackCleared(reply_id=reply_id) if (reply := self._open.get(reply_id)):
                self._close(reply, interrupted=True, played=msg.played_text)
            case ReplyFinished(reply_id=reply_id) if (reply := self._open.get(reply_id)):
                self._close(reply, interrupted=False, played=" ".join(t for t in reply.sent if t))
                if reply.hangup_after and self._control_out is not None:
                    try:
                        await self._control_out.send(Hangup("goodbye said"))
                    except (trio.BrokenResourceError, trio.ClosedResourceError):
                        self._control_out = None

    async def _heard(self, turn_id: str, text: str) -> None:
        """Caller words: a barge-in if a reply is going; the current turn is ``turn_id``."""
        if len(text.strip()) >= self.barge_in_min_chars:
            await self._barge_in("caller speaking")
        self._turn_id = turn_id  # words of an unended earlier turn stay in _finals

    def _update_candidate(self) -> None:
        candidate = normalise(" ".join([*self._finals, self._partial]))
        if candidate == self._candidate:
            return
        self._candidate, self._candidate_since = candidate, trio.current_time()
        if self._spec is not None:  # the caller went on: what it answers is stale
            self._drop_spec()

    # -- turns and replies ----------------------------------------------------------------------

    async def _end_of_speech(self, turn_id: str, end_s: float) -> None:
        stt_final = self._now()
        text = " ".join(t.strip() for t in self._finals if t.strip())
        self._ended_turn = turn_id
        self._new_turn()
        if not text:
            return
        self._count("turns")
        await self._barge_in("new turn")  # spoke over a reply too briefly to cut it
        for reply in list(self._open.values()):  # cut, but the Speaker has not said so yet
            self._close(reply, interrupted=True, played=reply.played_text())
        self._conversation.add("user", text)
        spec = self._spec
        if spec is not None and not spec.failed and spec.text == normalise(text):
            self._spec, reply = None, spec
            self._count("preempt_hits")
            self._commit(reply)  # its buffered chunks go to the Speaker now
        else:
            self._drop_spec()
            reply = self._start_reply(turn_id, self._conversation.messages())
        reply.stages.update(end_of_speech=end_s, stt_final=stt_final)
        reply.released.set()

    def _new_turn(self) -> None:
        self._turn_id, self._finals, self._partial = None, [], ""
        self._candidate, self._candidate_since = "", math.inf

    def _speculate(self) -> None:
        text = " ".join(t.strip() for t in [*self._finals, self._partial] if t.strip())
        self._spec = self._start_reply(self._turn_id or "t-?", self._conversation.messages_with(text),
                                       speculative=True)
        self._spec.text = self._candidate

    def _drop_spec(self) -> None:
        if self._spec is not None:
            self._spec.scope.cancel("speculation missed")
            self._count("preempt_misses")
            self._spec = None

    def _start_reply(self, turn_id: str, what: list[ChatMessage] | str, *,
                     speculative: bool = False) -> Reply:
        """Start generating ``what``: the messages for the LLM, or a scripted text."""
        assert self._nursery is not None
        reply = Reply(f"r-{self._next_seq()}", turn_id, "")
        if not speculative:
            self._commit(reply)
            reply.released.set()
        assert self._generation is not None
        self._nursery.start_soon(self._generation.run, reply, what, self._system())
        return reply

    def _commit(self, reply: Reply) -> None:
        self._count("replies")
        self._open[reply.reply_id] = self._speaking = reply

    async def _barge_in(self, reason: str) -> None:
        reply, self._speaking = self._speaking, None
        if reply is None:
            return
        self._count("barge_ins")
        reply.scope.cancel(reason)
        if reply.sent:
            await self._to_speaker(ClearPlayback(reason))
        else:  # nothing reached the Speaker: nothing to clear or to remember
            self._close(reply, interrupted=True, played="")

    def _close(self, reply: Reply, *, interrupted: bool, played: str) -> None:
        self._open.pop(reply.reply_id, None)
        if self._speaking is reply:
            self._speaking = None
        reply.scope.cancel("reply over")
        if played.strip():
            self._conversation.add("assistant", played.strip())
        self._send_latency(reply)
        self._to_relay(ReplySpoken(reply.turn_id, reply.reply_id, played.strip(), interrupted))

    # -- outputs --------------------------------------------------------------------------------

    async def _to_speaker(self, command: SpeakerCommand) -> None:
        assert self._speaker_out is not None and self._nursery is not None
        try:
            await self._speaker_out.send(command)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self._speaker_gone = True
            self._nursery.cancel_scope.cancel("the Speaker is gone")
            await trio.lowlevel.checkpoint()

    def _to_relay(self, msg: RelayInput) -> None:
        if self._relay_out is None:
            return
        try:
            self._relay_out.send_nowait(msg)
        except trio.WouldBlock:
            self._count("relay_dropped")
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self._relay_out = None

    def _send_latency(self, reply: Reply) -> None:
        if reply.latency_sent or "first_chunk" not in reply.stages:
            return
        reply.latency_sent = True
        stages = tuple((name, reply.stages[name]) for name in STAGES if name in reply.stages)
        self._to_relay(TurnLatency(reply.turn_id, stages))
        log.info("turn latency", extra={"call_id": self.call.call_id, "turn_id": reply.turn_id,
                                        "reply_id": reply.reply_id, **dict(stages)})

    # -- helpers ------------------------------------------------------------------------------

    def _system(self) -> str:
        return self.system_prompt.replace("{nombre}", self.call.callee_name or UNKNOWN_NAME)

    def _now(self) -> float:
        return trio.current_time() - self.call.started_at

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def _count(self, name: str) -> None:
        self._counts[name] = self._counts.get(name, 0) + 1

