"""The speaking half end to end: caller → STT → Brain (real anthropic SDK → Anthropic emulator) →
Speaker (Aura client → speak emulator) → audio back over the same Telnyx socket, with barge-in,
LLM failure and the latency waterfall. Callers stream in real time (speed 1) here: pacing and
barge-in are what is being tested."""

from __future__ import annotations

from typing import Any

import pytest

from bench.emulators.anthropic_messages import AnthropicEmulator, Fault
from bench.emulators.caller_audio import script_spans
from bench.emulators.deepgram_speak import DeepgramSpeakEmulator
from bench.emulators.telnyx_caller import CallerRecord
from protocols.telnyx_media import Clear, MediaOut
from tests.e2e.conftest import Stack, open_stack, run_caller, subscribe_all

LONG_REPLY = ("Claro que sí. Su saldo actual es de ciento veinte euros con cincuenta céntimos. "
              "Además, tiene una transferencia pendiente que llegará mañana por la mañana. "
              "¿Desea que le ayude con algo más?")
GREETING_WORDS = "asistente"
LEAD_IN_S = 2.5  # the caller lets the greeting finish (~1.9 s of audio at 30 ms/char)


def speak_emulator() -> DeepgramSpeakEmulator:
    return DeepgramSpeakEmulator(api_key="test-key", ms_per_char=30.0)


def media_times(record: CallerRecord) -> list[float]:
    return [f.at for f in record.received if isinstance(f.message, MediaOut)]


def media_arrivals(record: CallerRecord) -> list[tuple[float, float]]:
    """(arrival time, seconds of audio) of each media message (PCMU: 8000 bytes a second)."""
    return [(f.at, len(f.message.payload) / 8000) for f in record.received
            if isinstance(f.message, MediaOut)]


def steady_overshoots(arrivals: list[tuple[float, float]], *, burst_s: float = 0.2,
                      dry_s: float = 0.3) -> list[float]:
    """How much later than the audio already sent each message arrived, in steady state.

    With one 20 ms frame per message the old check was "no gap over 40 ms" between arrivals;
    whatever the message size it reads: a message arrives at most 20 ms after the previous
    message's own audio would have ended, were it played on arrival. Runs split where the line
    ran dry (no audio for ``dry_s``: the LLM still generating); the first ``burst_s`` of audio of
    a run go out as a burst to build the pacing lead and are not steady state.
    """
    overshoots: list[float] = []
    run_audio_s = 0.0
    for (at, audio_s), (following_at, _) in zip(arrivals, arrivals[1:]):
        gap = following_at - at
        if gap >= dry_s:
            run_audio_s = 0.0
            continue
        run_audio_s += audio_s
        if run_audio_s > burst_s:
            overshoots.append(gap - audio_s)
    return overshoots


async def call(stack: Stack, call_id: str, durations: tuple[float, ...], gaps: Any,
               hangup_after_s: float) -> tuple[CallerRecord, list[dict[str, Any]]]:
    token = stack.issue_call(call_id, ("quiero saber mi saldo", "no gracias eso es todo"))
    sub = await stack.nursery.start(subscribe_all, stack)
    record = await run_caller(stack.caller(token, durations, gaps, speed=1.0, lead_in_s=LEAD_IN_S,
                                           hangup_after_s=hangup_after_s))
    return record, await sub.wait_ended(call_id, timeout=20)


@pytest.mark.parametrize("message_ms", [20, 100])
async def test_reply_audio_starts_before_the_llm_finishes_and_flows_without_gaps(
        message_ms: int) -> None:
    anthropic = AnthropicEmulator(api_key="test-key", reply_for=lambda body: LONG_REPLY,
                                  ttft_s=0.15, tokens_per_s=12.0)
    async with open_stack(bot=True, anthropic=anthropic, speak=speak_emulator(),
                          speaker_message_ms=message_ms) as stack:
        record, events = await call(stack, "call-speak", (1.0,), 8.0, hangup_after_s=11.0)
    # (a preemptive request may have been cancelled first: the answer is the completed one)
    (request,) = [r for r in anthropic.requests if r.outcome == "completed"]
    assert request.done_at is not None
    replies = [e for e in events if e["type"] == "reply"]
    assert [r["interrupted"] for r in replies] == [False, False]  # greeting, then the answer
    assert GREETING_WORDS in str(replies[0]["text"])
    # The answer's first audio reached the caller while the LLM was still streaming.
    turn_end_s = script_spans((1.0,), 8.0, lead_in_s=LEAD_IN_S)[0][1]
    answer_media = [t for t in media_times(record)
                    if t > record.started_at + turn_end_s]  # type: ignore[operator]
    assert answer_media and answer_media[0] < request.done_at
    # Steady state: no message later than 20 ms after the audio already sent would have played
    # (one frame per message: no gap above 40 ms), after the burst that builds the pacing lead.
    # A pause over 0.3 s means the line ran dry (the next sentence was still being generated:
    # the LLM is paced at 12 tokens/s here); within each run of audio the pacing must be steady.
    arrivals = [(t, s) for t, s in media_arrivals(record) if t >= answer_media[0]]
    runs = 1 + sum(b[0] - a[0] >= 0.3 for a, b in zip(arrivals, arrivals[1:]))
    overshoots = steady_overshoots(arrivals)
    per_message_s = max(s for _, s in arrivals)
    assert per_message_s == message_ms / 1000  # the setting reaches the Speaker
    assert runs <= 4 and sum(s for _, s in arrivals) > 2.0, runs
    assert len(overshoots) > 2.0 / per_message_s and max(overshoots) <= 0.020, max(overshoots)
    (latency,) = [e for e in events if e["type"] == "latency"  # the greeting has no turn
                  and "end_of_speech" in e["stages"]]
    stages = latency["stages"]
    order = ["end_of_speech", "stt_final", "llm_request", "llm_first_token", "first_chunk",
             "tts_first_audio", "first_frame_sent"]
    assert [s for s in order if s in stages] == order
    assert [stages[s] for s in order] == sorted(stages[s] for s in order)
    # Our own share: everything but the emulators' configured delays stays well under a second.
    assert stages["first_frame_sent"] - stages["end_of_speech"] < 1.5


@pytest.mark.parametrize("message_ms", [20, 100])
async def test_barge_in_clears_within_one_lead_and_history_keeps_only_what_was_heard(
        message_ms: int) -> None:
    anthropic = AnthropicEmulator(api_key="test-key", reply_for=lambda body: LONG_REPLY)
    async with open_stack(bot=True, anthropic=anthropic, speak=speak_emulator(),
                          speaker_message_ms=message_ms) as stack:
        # Utterance 1 at 2.5–3.5 s; the reply starts ~0.3 s later and lasts ~5.7 s;
        # utterance 2 starts at 5.5 s, in the middle of it.
        record, events = await call(stack, "call-barge", (1.0, 1.0), (2.0, 3.0),
                                    hangup_after_s=10.0)
        (conn,) = stack.deepgram.connections
    clears = [f.at for f in record.received if isinstance(f.message, Clear)]
    assert len(clears) == 1
    onsets = [m.at for m in conn.sent if type(m.message).__name__ == "SpeechStarted"]
    barge_signal = max(t for t in onsets if t < clears[0])
    assert clears[0] - barge_signal < 0.16  # within one pacing lead
    cut = [e for e in events if e["type"] == "reply" and e["interrupted"]]
    assert len(cut) == 1 and LONG_REPLY.startswith(str(cut[0]["text"]).rstrip("."))
    assert len(str(cut[0]["text"])) < len(LONG_REPLY)
    # The next request's history holds the interrupted reply only as far as it was heard.
    assistant_says = [m["content"] for m in anthropic.requests[-1].messages
                      if m["role"] == "assistant"]
    assert str(cut[0]["text"]) in assistant_says
    assert LONG_REPLY not in assistant_says


async def test_an_overloaded_llm_yields_the_fallback_phrase_not_silence() -> None:
    # Every request fails (a speculative preemptive request would otherwise use up one-shot
    # faults): the Brain retries once, then speaks its fallback phrase.
    anthropic = AnthropicEmulator(api_key="test-key", reply_for=lambda body: LONG_REPLY,
                                  always_fail=Fault("overloaded"))
    async with open_stack(bot=True, anthropic=anthropic, speak=speak_emulator()) as stack:
        record, events = await call(stack, "call-529", (1.0,), 5.0, hangup_after_s=7.0)
    replies = [str(e["text"]) for e in events if e["type"] == "reply"]
    assert len(replies) == 2 and "Disculpe" in replies[1], events
    assert len([r for r in anthropic.requests if r.status == 529]) >= 2
    assert media_times(record)  # the caller heard audio
