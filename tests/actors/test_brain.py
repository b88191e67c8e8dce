"""Brain: turn-taking, streaming, speculation, barge-in, LLM failures and the latency waterfall.

The LLM is a scripted `LlmEngine` (the port: the only seam faked); the test plays the Speaker's
part by feeding its reports back into the inbox. Everything runs on the autojump clock.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import attrs
import pytest
import trio

from actors.brain import CALL_OPENED, DEFAULT_FALLBACK, STAGES, Brain
from actors.llm import ChatMessage, LlmUnavailable
from actors.messages import (
    CallerStartedSpeaking, CallInfo, ChunkPlayed, ClearPlayback, DtmfPressed, Hangup,
    PlaybackCleared, ReplyAudioStarted, ReplyFinished, ReplySpoken, Speak, TranscriptFinal,
    TranscriptPartial, TurnLatency, UtteranceEnded,
)
from protocols.audio import PCMU_8K
from tests.actors.harness import ActorUnderTest, assert_actor_contract, open_actor

OUTPUTS = ("speaker_out", "relay_out", "control_out")


# -- the scripted LLM (a fake at the port) --------------------------------------------------------

@attrs.define
class Script:
    """One reply: ``pieces`` after ``ttft_s`` then ``gap_s`` apart; ``fail`` raised when opening
    (``fail_after`` None) or after that many pieces."""

    pieces: Sequence[str] = ()
    ttft_s: float = 0.3
    gap_s: float = 0.05
    fail: LlmUnavailable | None = None
    fail_after: int | None = None

    @classmethod
    def words(cls, text: str, **kw: Any) -> Script:
        words = text.split(" ")
        return cls([words[0], *(" " + w for w in words[1:])], **kw)


@attrs.define(eq=False)
class LlmCall:
    system: str
    messages: list[ChatMessage]
    at: float
    pieces_sent: int = 0
    cancelled: bool = False
    finished: bool = False


@attrs.define(eq=False)
class ScriptedLlm:
    script: list[Script]
    calls: list[LlmCall] = attrs.Factory(list)

    def stream_reply(self, *, system: str, messages: Sequence[ChatMessage]
                     ) -> AbstractAsyncContextManager[AsyncIterator[str]]:
        return self._stream(system, list(messages))

    @asynccontextmanager
    async def _stream(self, system: str,
                      messages: list[ChatMessage]) -> AsyncIterator[AsyncIterator[str]]:
        call = LlmCall(system, messages, trio.current_time())
        self.calls.append(call)
        step = self.script.pop(0) if self.script else Script(["Vale."])
        try:
            if step.fail is not None and step.fail_after is None:
                await trio.sleep(0.05)
                raise step.fail
            yield self._pieces(step, call)
            call.finished = True
        except trio.Cancelled:
            call.cancelled = True
            raise

    @staticmethod
    async def _pieces(step: Script, call: LlmCall) -> AsyncIterator[str]:
        for i, piece in enumerate(step.pieces):
            if step.fail is not None and i == step.fail_after:
                raise step.fail
            await trio.sleep(step.ttft_s if i == 0 else step.gap_s)
            call.pieces_sent += 1
            yield piece
        if step.fail is not None and step.fail_after == len(step.pieces):
            raise step.fail


# -- helpers --------------------------------------------------------------------------------------

def brain(llm: ScriptedLlm, **kw: Any) -> Brain:
    call = CallInfo(call_id="c1", call_control_id="v3:c1", stream_id="s1", audio_format=PCMU_8K,
                    started_at=trio.current_time(), callee_name=kw.pop("callee_name", None))
    kw.setdefault("greeting", None)
    kw.setdefault("preemptive", False)
    return Brain(call, llm, **kw)


def now_s(b: Brain) -> float:
    return trio.current_time() - b.call.started_at


def final(text: str, end_s: float, *, turn: str = "t-1",
          speech_final: bool = True) -> TranscriptFinal:
    return TranscriptFinal(turn, text, max(0.0, end_s - 1.0), end_s, speech_final, end_s + 0.1)


def speaks(actor: ActorUnderTest, reply_id: str | None = None) -> list[Speak]:
    return [m for m in actor.received["speaker_out"]
            if isinstance(m, Speak) and reply_id in (None, m.reply_id)]


async def whole_reply(actor: ActorUnderTest, after: int = 0) -> list[Speak]:
    """The Speaks of the reply with the ``after``-th last chunk (from 0), once that is out."""
    await actor.wait_for("speaker_out", lambda m: sum(1 for x in speaks(actor) if x.last) > after)
    last = [s for s in speaks(actor) if s.last][after]
    return speaks(actor, last.reply_id)


async def play(actor: ActorUnderTest, b: Brain, chunks: list[Speak]) -> None:
    """Be the Speaker: first audio 80 ms after the request, each chunk played 0.5 s apart."""
    await trio.sleep(0.08)
    t = now_s(b)
    await actor.feed([ReplyAudioStarted(chunks[0].reply_id, t - 0.01, t)])
    for chunk in chunks:
        await trio.sleep(0.5)
        await actor.feed([ChunkPlayed(chunk.reply_id, chunk.chunk, chunk.text, now_s(b))])
    await actor.feed([ReplyFinished(chunks[0].reply_id, now_s(b))])


def relayed(actor: ActorUnderTest, kind: type) -> list[Any]:
    return [m for m in actor.received["relay_out"] if isinstance(m, kind)]


async def at(b: Brain, call_time_s: float) -> None:
    await trio.sleep_until(b.call.started_at + call_time_s)


# -- tests ----------------------------------------------------------------------------------------

async def test_the_greeting_is_spoken_first_and_opens_the_history(autojump_clock: object) -> None:
    llm = ScriptedLlm([Script.words("Claro, dígame.")])
    b = brain(llm, callee_name="Ana",
              greeting="Hola{, nombre}, le habla el asistente virtual. ¿En qué puedo ayudarle?")
    async with open_actor(b.run, outputs=OUTPUTS) as actor:
        greeting = await whole_reply(actor)
        assert [s.turn_id for s in greeting] == ["greeting"] * len(greeting)
        assert " ".join(s.text for s in greeting) == (
            "Hola, Ana, le habla el asistente virtual. ¿En qué puedo ayudarle?")
        assert greeting[0].text == "Hola, Ana,"  # the first chunk goes early
        await play(actor, b, greeting)
        await actor.feed([final("Quería información.", 5.0)])
        await whole_reply(actor, after=1)
    assert llm.calls[0].messages == [
        ChatMessage("user", CALL_OPENED),
        ChatMessage("assistant", " ".join(s.text for s in greeting)),
        ChatMessage("user", "Quería información.")]
    assert "Ana" in llm.calls[0].system


async def test_a_speech_final_turn_streams_chunks_and_a_monotonic_waterfall(
        autojump_clock: object) -> None:
    llm = ScriptedLlm([Script.words("Muy bien, ¿para qué día la quiere?")])
    b = brain(llm)
    async with open_actor(b.run, outputs=OUTPUTS) as actor:
        await at(b, 1.0)
        await actor.feed([CallerStartedSpeaking(0.2), TranscriptPartial("t-1", "quería", 0.2, 0.6)])
        await at(b, 1.3)
        await actor.feed([final("Quería una cita.", 1.1)])
        reply = await whole_reply(actor)
        assert [(s.chunk, s.text, s.last) for s in reply] == [
            (0, "Muy bien,", False), (1, "¿para qué día la quiere?", True)]
        await play(actor, b, reply)
        latency = await actor.wait_for("relay_out", lambda m: isinstance(m, TurnLatency))
        spoken = await actor.wait_for("relay_out", lambda m: isinstance(m, ReplySpoken))
    assert latency.turn_id == "t-1" and [name for name, _ in latency.stages] == list(STAGES)
    times = [t for _, t in latency.stages]
    assert times == sorted(times) and times[0] == 1.1 and times[1] == pytest.approx(1.3)
    stages = dict(latency.stages)
    assert stages["llm_first_token"] - stages["llm_request"] == pytest.approx(0.3)
    assert spoken == ReplySpoken(
        "t-1", reply[0].reply_id, "Muy bien, ¿para qué día la quiere?", False)
    assert b.history == (ChatMessage("user", "Quería una cita."),
                         ChatMessage("assistant", "Muy bien, ¿para qué día la quiere?"))
    assert len(llm.calls) == 1 and b.statistics().turns == 1


async def test_utterance_end_without_speech_final_ends_the_turn(autojump_clock: object) -> None:
    llm = ScriptedLlm([Script(["Vale."])])
    b = brain(llm)
    async with open_actor(b.run, outputs=OUTPUTS) as actor:
        await actor.feed([final("Hola", 0.5, speech_final=False),
                          final("buenos días", 1.0, speech_final=False)])
        await trio.sleep(1.0)
        assert speaks(actor) == [] and llm.calls == []
        await actor.feed([UtteranceEnded("t-1", 1.0)])
        reply = await whole_reply(actor)
        await actor.feed([UtteranceEnded("t-1", 1.0)])  # the same turn's again: ignored
        await trio.sleep(2.0)
    assert [s.text for s in reply] == ["Vale."] and reply[0].turn_id == "t-1"
    assert len(llm.calls) == 1
    assert llm.calls[0].messages == [ChatMessage("user", "Hola buenos días")]


async def test_a_speech_final_turn_is_not_answered_again_by_its_utterance_end(
        autojump_clock: object) -> None:
    llm = ScriptedLlm([Script(["Vale."])])
    b = brain(llm)
    async with open_actor(b.run, outputs=OUTPUTS) as actor:
        await actor.feed([final("Hola.", 1.0), UtteranceEnded("t-1", 1.0)])
        await trio.sleep(3.0)
    assert len(llm.calls) == 1


async def test_preemptive_hit_speaks_the_moment_the_final_arrives(autojump_clock: object) -> None:
    llm = ScriptedLlm([Script.words("Claro, ¿a qué hora le viene bien?")])
    b = brain(llm, preemptive=True)
    async with open_actor(b.run, outputs=OUTPUTS) as actor:
        await at(b, 1.0)
        await actor.feed([TranscriptPartial("t-1", "quería una cita", 0.2, 0.9)])
        await at(b, 2.0)  # the LLM answered long ago; nothing may be said before the final
        assert len(llm.calls) == 1 and llm.calls[0].at - b.call.started_at == pytest.approx(1.25)
        assert llm.calls[0].finished and speaks(actor) == []
        await actor.feed([final("Quería una cita.", 1.6)])
        reply = await whole_reply(actor)
        await play(actor, b, reply)
        latency = await actor.wait_for("relay_out", lambda m: isinstance(m, TurnLatency))
    stages = dict(latency.stages)
    assert stages["first_chunk"] == pytest.approx(stages["stt_final"])  # no LLM wait at all
    assert stages["llm_request"] < stages["end_of_speech"]
    assert len(llm.calls) == 1 and llm.calls[0].messages == [ChatMessage("user", "quería una cita")]
    assert b.history[0] == ChatMessage("user", "Quería una cita.")  # the final's words are kept
    assert (b.statistics().preempt_hits, b.statistics().preempt_misses) == (1, 0)


async def test_preemptive_miss_is_cancelled_and_the_final_asked_again(
        autojump_clock: object) -> None:
    llm = ScriptedLlm([Script(["Claro."], ttft_s=2.0), Script.words("Para mañana, perfecto.")])
    b = brain(llm, preemptive=True)
    async with open_actor(b.run, outputs=OUTPUTS) as actor:
        await at(b, 1.0)
        await actor.feed([TranscriptPartial("t-1", "quería una cita", 0.2, 0.9)])
        await at(b, 1.5)
        await actor.feed([final("Quería una cita para mañana.", 1.4)])
        reply = await whole_reply(actor)
    assert len(llm.calls) == 2 and llm.calls[0].cancelled
    assert llm.calls[1].messages == [ChatMessage("user", "Quería una cita para mañana.")]
    assert " ".join(s.text for s in reply) == "Para mañana, perfecto."
    assert (b.statistics().preempt_hits, b.statistics().preempt_misses) == (0, 1)


async def test_each_run_logs_its_statistics_with_the_call_id(
        autojump_clock: object, caplog: pytest.LogCaptureFixture) -> None:
    """The load harness counts preemptive hits and misses from this line (bench_voice)."""
    llm = ScriptedLlm([Script.words("Claro, ¿a qué hora?")])
    b = brain(llm, preemptive=True)
    with caplog.at_level(logging.INFO, logger="actors.brain"):
        async with open_actor(b.run, outputs=OUTPUTS) as actor:
            await actor.feed([TranscriptPartial("t-1", "quería una cita", 0.2, 0.9)])
            await trio.sleep(1.0)
            await actor.feed([final("Quería una cita.", 1.0)])
            await whole_reply(actor)
    (line,) = [r for r in caplog.records if r.getMessage() == "brain statistics"]
    assert line.__dict__["call_id"] == "c1"
    assert (line.__dict__["preempt_hits"], line.__dict__["preempt_misses"]) == (1, 0)
    assert line.__dict__["turns"] == 1 and line.__dict__["replies"] == 1


async def test_a_changing_partial_drops_the_speculation_and_a_stable_one_starts_again(
        autojump_clock: object) -> None:
    llm = ScriptedLlm([Script(["Sí."], ttft_s=2.0), Script(["Claro."])])
    b = brain(llm, preemptive=True)
    async with open_actor(b.run, outputs=OUTPUTS) as actor:
        await actor.feed([TranscriptPartial("t-1", "quería", 0.2, 0.5)])
        await trio.sleep(0.5)
        await actor.feed([TranscriptPartial("t-1", "quería una cita", 0.2, 0.9),
                          TranscriptPartial("t-1", "Quería una cita", 0.2, 0.9)])  # same words
        await trio.sleep(0.5)
        await actor.feed([final("¡Quería una cita!", 1.0)])
        reply = await whole_reply(actor)
    assert len(llm.calls) == 2 and llm.calls[0].cancelled
    assert [s.text for s in reply] == ["Claro."]
    assert (b.statistics().preempt_hits, b.statistics().preempt_misses) == (1, 1)


async def test_barge_in_clears_playback_cancels_and_keeps_only_what_was_played(
        autojump_clock: object) -> None:
    long = "Muy bien, le cuento las opciones. Tenemos cita el lunes. También el martes."
    llm = ScriptedLlm([Script.words(long, gap_s=0.2), Script(["Entendido."])])
    b = brain(llm)
    async with open_actor(b.run, outputs=OUTPUTS) as actor:
        await actor.feed([final("¿Qué citas hay?", 1.0)])
        second = await actor.wait_for("speaker_out",
                                      lambda m: isinstance(m, Speak) and m.chunk == 1)
        rid = second.reply_id
        await actor.feed([ReplyAudioStarted(rid, now_s(b), now_s(b)),
                          ChunkPlayed(rid, 0, "Muy bien,", now_s(b))])
        await actor.feed([CallerStartedSpeaking(now_s(b))])
        clear = await actor.wait_for("speaker_out", lambda m: isinstance(m, ClearPlayback))
        assert llm.calls[0].cancelled and not llm.calls[0].finished
        await actor.feed([PlaybackCleared(rid, "Muy bien,", now_s(b))])
        spoken = await actor.wait_for("relay_out", lambda m: isinstance(m, ReplySpoken))
        await actor.feed([final("No, el jueves.", now_s(b))])
        await whole_reply(actor)
    assert clear.reason == "caller started speaking"
    assert spoken == ReplySpoken("t-1", rid, "Muy bien,", True)
    assert not any(s.last for s in speaks(actor, rid))  # cut before its end
    assert llm.calls[1].messages == [ChatMessage("user", "¿Qué citas hay?"),
                                     ChatMessage("assistant", "Muy bien,"),
                                     ChatMessage("user", "No, el jueves.")]
    assert b.statistics().barge_ins == 1


async def test_barge_in_before_anything_was_said_leaves_no_assistant_message(
        autojump_clock: object) -> None:
    llm = ScriptedLlm([Script(["Claro."], ttft_s=1.0), Script(["Vale."])])
    b = brain(llm)
    async with open_actor(b.run, outputs=OUTPUTS) as actor:
        await actor.feed([final("Hola.", 1.0)])
        await trio.sleep(0.5)
        await actor.feed([TranscriptPartial("t-2", "perdone", 1.5, 1.8)])
        await trio.sleep(0.1)
        assert llm.calls[0].cancelled
        await actor.feed([final("perdone, una cosa.", 2.0, turn="t-2")])
        reply = await whole_reply(actor)
    assert not any(isinstance(m, ClearPlayback) for m in actor.received["speaker_out"])
    assert [s.text for s in reply] == ["Vale."]
    assert llm.calls[1].messages == [ChatMessage("user", "Hola. perdone, una cosa.")]


async def test_overloaded_is_retried_once_then_succeeds(autojump_clock: object) -> None:
    llm = ScriptedLlm([Script(fail=LlmUnavailable("overloaded")), Script(["Vale."])])
    b = brain(llm)
    async with open_actor(b.run, outputs=OUTPUTS) as actor:
        await actor.feed([final("Hola.", 1.0)])
        reply = await whole_reply(actor)
    assert [s.text for s in reply] == ["Vale."] and len(llm.calls) == 2
    assert b.statistics().llm_retries == 1 and b.statistics().fallbacks == 0


@pytest.mark.parametrize("failures", [
    [LlmUnavailable("overloaded"), LlmUnavailable("overloaded")],
    [LlmUnavailable("rate_limited", retry_after_s=5.0)],  # beyond the retry budget: no retry
    [LlmUnavailable("timeout"), LlmUnavailable("connection")],
])
async def test_persistent_failure_speaks_the_fallback(autojump_clock: object,
                                                      failures: list[LlmUnavailable]) -> None:
    llm = ScriptedLlm([Script(fail=f) for f in failures])
    b = brain(llm)
    async with open_actor(b.run, outputs=OUTPUTS) as actor:
        await actor.feed([final("Hola.", 1.0)])
        reply = await whole_reply(actor)
        await trio.sleep(1.0)
    assert [(s.text, s.last) for s in reply] == [(DEFAULT_FALLBACK, True)]
    assert len(llm.calls) == len(failures) and b.statistics().fallbacks == 1


async def test_refused_speaks_the_fallback_at_once_and_logs_an_error(
        autojump_clock: object, caplog: pytest.LogCaptureFixture) -> None:
    llm = ScriptedLlm([Script(fail=LlmUnavailable("refused")), Script(["Nunca."])])
    b = brain(llm)
    async with open_actor(b.run, outputs=OUTPUTS) as actor:
        await actor.feed([final("Hola.", 1.0)])
        reply = await whole_reply(actor)
    assert [s.text for s in reply] == [DEFAULT_FALLBACK] and len(llm.calls) == 1
    assert any(r.levelno == logging.ERROR and "refused" in r.getMessage() for r in caplog.records)


async def test_a_failure_mid_reply_ends_it_with_the_fallback(autojump_clock: object) -> None:
    llm = ScriptedLlm([Script.words("Muy bien, ahora le digo qué",
                                    fail=LlmUnavailable("overloaded"), fail_after=5)])
    b = brain(llm)
    async with open_actor(b.run, outputs=OUTPUTS) as actor:
        await actor.feed([final("Hola.", 1.0)])
        reply = await whole_reply(actor)
    assert [(s.text, s.last) for s in reply] == [("Muy bien,", False), (DEFAULT_FALLBACK, True)]
    assert len(llm.calls) == 1  # what was said cannot be unsaid by a retry


async def test_a_dtmf_digit_is_a_turn(autojump_clock: object) -> None:
    llm = ScriptedLlm([Script(["Ha elegido citas."])])
    b = brain(llm)
    async with open_actor(b.run, outputs=OUTPUTS) as actor:
        await actor.feed([DtmfPressed("1", 2.0)])
        reply = await whole_reply(actor)
    assert [s.text for s in reply] == ["Ha elegido citas."] and reply[0].turn_id.startswith("dtmf")
    assert llm.calls[0].messages == [ChatMessage("user", "[tecla 1]")]


@pytest.mark.parametrize("pieces", [
    ["Gracias", " por llamar,", " adiós.", " [FIN]"],
    ["Gracias", " por llamar,", " adiós. [", "F", "IN", "]\n"],
])
async def test_a_reply_ending_with_the_marker_hangs_up_once_played(
        autojump_clock: object, pieces: list[str]) -> None:
    llm = ScriptedLlm([Script(pieces)])
    b = brain(llm, hangup_marker="[FIN]")
    async with open_actor(b.run, outputs=OUTPUTS) as actor:
        await actor.feed([final("Nada más, gracias.", 1.0)])
        reply = await whole_reply(actor)
        assert actor.received["control_out"] == []
        await play(actor, b, reply)
        hangup = await actor.wait_for("control_out")
    assert [(s.text, s.last) for s in reply] == [("Gracias por llamar,", False), ("adiós.", True)]
    assert hangup == Hangup("goodbye said")


async def test_text_that_only_looks_like_the_marker_is_spoken(autojump_clock: object) -> None:
    llm = ScriptedLlm([Script(["Vale", " [F", "IJO]", " ["])])
    b = brain(llm, hangup_marker="[FIN]")
    async with open_actor(b.run, outputs=OUTPUTS) as actor:
        await actor.feed([final("Hola.", 1.0)])
        reply = await whole_reply(actor)
        await play(actor, b, reply)
        await trio.sleep(1.0)
    assert [s.text for s in reply] == ["Vale [FIJO] ["] and actor.received["control_out"] == []


async def test_a_restart_keeps_the_history_and_does_not_greet_again(autojump_clock: object) -> None:
    llm = ScriptedLlm([Script(["Vale."]), Script(["Claro."])])
    b = brain(llm, greeting="Hola.")
    async with open_actor(b.run, outputs=OUTPUTS) as actor:
        await play(actor, b, await whole_reply(actor))
        await actor.feed([final("Hola.", 3.0)])
        await play(actor, b, await whole_reply(actor, after=1))
        actor.end_input()
        await actor.wait_done()
    async with open_actor(b.run, outputs=OUTPUTS) as actor:
        await trio.sleep(1.0)
        assert speaks(actor) == []
        await actor.feed([final("Otra cosa.", 9.0, turn="t-2")])
        await whole_reply(actor)
    assert llm.calls[1].messages[1:] == [
        ChatMessage("assistant", "Hola."), ChatMessage("user", "Hola."),
        ChatMessage("assistant", "Vale."), ChatMessage("user", "Otra cosa.")]


async def test_a_restart_with_an_unanswered_turn_speaks_the_fallback(
        autojump_clock: object) -> None:
    llm = ScriptedLlm([Script(["Vale."], ttft_s=5.0)])
    b = brain(llm)
    async with open_actor(b.run, outputs=OUTPUTS) as actor:
        await actor.feed([final("Hola.", 1.0)])
        await trio.sleep(1.0)
        actor.cancel()  # the incarnation dies mid-turn
        await actor.wait_done()
    async with open_actor(b.run, outputs=OUTPUTS) as actor:
        reply = await whole_reply(actor)
    assert " ".join(s.text for s in reply) == DEFAULT_FALLBACK and reply[0].turn_id == "restart"


async def test_the_actor_contract(autojump_clock: object) -> None:
    def start() -> AbstractAsyncContextManager[ActorUnderTest]:
        return open_actor(brain(ScriptedLlm([Script(["Vale."])] * 4)).run, outputs=OUTPUTS)

    async def provoke(actor: ActorUnderTest) -> None:
        await actor.feed([final("Hola.", 1.0)])
        await trio.sleep(0.5)

    await assert_actor_contract(start, provoke=provoke)
