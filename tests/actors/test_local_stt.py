"""LocalStt on real speech: espeak-ng sentences, 8 kHz mu-law, 20 ms frames, real pocketsphinx.

Decoding runs in worker threads, so these tests use the real clock (``autojump_clock`` would
jump while the loop waits on a thread); each is bounded. Accuracy is asserted at the level of
intent words, never exact transcripts: espeak's voice is hard for pocketsphinx.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from functools import cache
from typing import Any, Final

import numpy as np
import pytest
import trio

pytest.importorskip("pocketsphinx", reason="pocketsphinx is the local STT engine")

from actors.local_stt import LocalStt, SphinxOptions  # noqa: E402
from actors.messages import (  # noqa: E402
    AudioFrame, CallerStartedSpeaking, CallInfo, TranscriptFinal, TranscriptPartial, UtteranceEnded,
)
from bench.emulators.caller_audio import encode, espeak_audio, espeak_available, silence  # noqa: E402
from protocols.audio import PCMU_8K  # noqa: E402

from .harness import ActorUnderTest, assert_actor_contract, open_actor  # noqa: E402

needs_espeak = pytest.mark.skipif(
    not espeak_available(),
    reason="espeak-ng is not installed (Debian package espeak-ng; `make system-deps` installs it)",
)
pytestmark = needs_espeak

OUTPUTS: Final = ("transcripts_out", "relay_out")
CALL: Final = CallInfo("call-1", "cc-1", "stream-1", PCMU_8K)
START_S: Final = 10.0  # call time of the first frame: times must come from the frames
GAP_S: Final = 1.6  # silence after each sentence: endpoint (~0.3 s) plus utterance_end_s (1 s)
EXPECTED: Final = ("I want to check my balance", "talk to an agent", "yes please", "no thanks",
                   "goodbye", "I would like to pay my bill", "cancel my order")
#: A span's edges as reported may differ from the true ones by the endpointer's window.
SPAN_TOLERANCE_S: Final = 0.35


@cache
def _speech(text: str) -> np.ndarray:
    return espeak_audio(text, "en-us")


def _voiced(pcm: np.ndarray) -> tuple[float, float]:
    """Where the sound is (espeak pads its sentences with silence), in seconds from the start."""
    loud = np.flatnonzero(np.abs(pcm.astype(np.int32)) > 500)
    return loud[0] / 8000, (loud[-1] + 1) / 8000


def call_audio(sentences: Sequence[str]) -> tuple[bytes, list[tuple[float, float]]]:
    """Mu-law for 0.5 s of silence then each sentence and a gap; spans of sound in call time."""
    parts, spans, cursor = [silence(0.5)], [], START_S + 0.5
    for text in sentences:
        pcm = _speech(text)
        parts += [pcm, silence(GAP_S)]
        first_s, last_s = _voiced(pcm)
        spans.append((cursor + first_s, cursor + last_s))
        cursor += len(pcm) / 8000 + GAP_S
    return encode(np.concatenate(parts)), spans


def frames_of(audio: bytes, start_s: float = START_S) -> list[AudioFrame]:
    return [AudioFrame(round(start_s + i / 8000, 6), audio[i:i + 160])
            for i in range(0, len(audio), 160)]


def starter(**kwargs: Any) -> Callable[[], AbstractAsyncContextManager[ActorUnderTest]]:
    return lambda: open_actor(LocalStt(CALL, **kwargs).run, outputs=OUTPUTS)


async def run_through(stt: LocalStt, frames: list[AudioFrame]) -> list[Any]:
    async with open_actor(stt.run, outputs=OUTPUTS) as actor:
        await actor.feed(frames)
        actor.end_input()
        await actor.wait_done(10.0)
        assert actor.error is None and actor.returned
        assert actor.received["relay_out"] == actor.received["transcripts_out"]
        return actor.received["transcripts_out"]


def turns(events: Sequence[Any]) -> list[list[Any]]:
    """Events split at each onset."""
    grouped: list[list[Any]] = []
    for event in events:
        if isinstance(event, CallerStartedSpeaking) or not grouped:
            grouped.append([])
        grouped[-1].append(event)
    return grouped


async def test_each_utterance_is_onset_partials_final_then_utterance_ended() -> None:
    audio, spans = call_audio(["talk to an agent", "I would like to pay my bill"])
    stt = LocalStt(CALL)
    events = await run_through(stt, frames_of(audio))
    grouped = turns(events)
    assert len(grouped) == len(spans), events
    for number, (turn, (start_s, end_s)) in enumerate(zip(grouped, spans, strict=True), 1):
        kinds = [type(e) for e in turn]
        assert kinds[0] is CallerStartedSpeaking and kinds[-2:] == [TranscriptFinal, UtteranceEnded]
        assert set(kinds[1:-2]) == {TranscriptPartial}, kinds  # at least one partial between
        onset, *partials, final, ended = turn
        turn_id = f"t-{number}"
        assert all(p.turn_id == turn_id for p in partials)
        assert final.turn_id == ended.turn_id == turn_id and final.speech_final and final.text
        assert ended.last_word_end_s == final.end_s
        assert abs(onset.call_time_s - start_s) < SPAN_TOLERANCE_S
        assert abs(final.start_s - start_s) < SPAN_TOLERANCE_S
        assert abs(final.end_s - end_s) < SPAN_TOLERANCE_S
        # the endpoint needs silence first, then the final is at most one batch later
        assert end_s < final.received_at_s < end_s + 0.6
        assert all(start_s - SPAN_TOLERANCE_S < p.start_s <= p.end_s < end_s + 0.5 for p in partials)
    stats = stt.statistics()
    assert stats.finals == stats.utterance_ends == 2 and stats.turn_id == "t-3"
    assert stats.audio_s == pytest.approx(len(audio) / 8000)


async def test_a_grammar_recognises_the_expected_phrases() -> None:
    said = ["I want to check my balance", "talk to an agent", "no thanks"]
    audio, _ = call_audio(said)
    events = await run_through(LocalStt(CALL, SphinxOptions(phrases=EXPECTED)), frames_of(audio))
    finals = [e.text for e in events if isinstance(e, TranscriptFinal)]
    assert len(finals) == 3, events
    assert "balance" in finals[0] and "agent" in finals[1] and "no" in finals[2].split()
    assert all(text in {" ".join(p.lower().split()) for p in EXPECTED} for text in finals)


@pytest.mark.parametrize("noise_dbfs", [None, -50.0])
async def test_silence_and_steady_line_noise_produce_nothing(noise_dbfs: float | None) -> None:
    # (The step from digital silence to noise is a sound: the VAD may report an onset there.)
    quiet = silence(4.0, noise_dbfs=noise_dbfs)
    events = await run_through(LocalStt(CALL), frames_of(encode(quiet)))
    assert events == []


async def test_end_of_input_mid_sentence_flushes_a_final() -> None:
    audio, _ = call_audio(["I would like to pay my bill"])
    cut = audio[:len(audio) - round(GAP_S * 8000) - 2400]  # stop 0.3 s before the sentence ends
    events = await run_through(LocalStt(CALL), frames_of(cut))
    assert isinstance(events[0], CallerStartedSpeaking)
    assert isinstance(events[-1], TranscriptFinal) and not events[-1].speech_final


async def test_decoding_never_blocks_the_loop() -> None:
    audio, _ = call_audio(EXPECTED[:4])
    gaps: list[float] = []

    async def tick(done: trio.Event) -> None:
        last = trio.current_time()
        while not done.is_set():
            await trio.sleep(0.02)
            now = trio.current_time()
            gaps.append(now - last)
            last = now

    stt = LocalStt(CALL, batch_frames=5)
    async with open_actor(stt.run, outputs=OUTPUTS) as actor:
        done = trio.Event()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(tick, done)
            await actor.feed(frames_of(audio))  # as fast as it decodes: the thread is always busy
            actor.end_input()
            await actor.wait_done(15.0)
            done.set()
    stats = stt.statistics()
    assert stats.finals >= 3 and stats.batches > 10
    assert stats.decode_cpu_s > 0.1  # it really was decoding while we ticked
    assert max(gaps) < 0.1, f"the loop stalled {max(gaps) * 1000:.0f} ms"


async def test_a_restart_keeps_the_decoder_and_the_turn_count() -> None:
    audio, _ = call_audio(["talk to an agent"])
    stt = LocalStt(CALL)
    first = await run_through(stt, frames_of(audio))
    decoder = stt._stream.decoder  # noqa: SLF001 - the point of the test
    second = await run_through(stt, frames_of(audio, start_s=30.0))
    assert stt._stream.decoder is decoder  # noqa: SLF001
    assert {e.turn_id for e in first if isinstance(e, TranscriptFinal)} == {"t-1"}
    assert {e.turn_id for e in second if isinstance(e, TranscriptFinal)} == {"t-2"}
    assert isinstance(second[0], CallerStartedSpeaking) and second[0].call_time_s > 30.0


async def test_actor_contract() -> None:
    audio, _ = call_audio(["yes please"])
    speech = frames_of(audio)

    async def provoke(actor: ActorUnderTest) -> None:
        await actor.feed(speech)

    await assert_actor_contract(starter(), provoke=provoke, done_within_s=10.0)


def test_options_refuse_what_cannot_work() -> None:
    with pytest.raises(ValueError):
        SphinxOptions(language="es")
    with pytest.raises(ValueError):
        SphinxOptions(phrases=("yes",), jsgf="#JSGF V1.0; grammar g; public <g> = yes;")


async def test_a_phrase_outside_the_dictionary_fails_the_start() -> None:
    with pytest.raises(ValueError, match="zxqvword"):
        async with starter(options=SphinxOptions(phrases=("yes", "zxqvword please")))():
            pass


async def test_a_jsgf_grammar_constrains_recognition() -> None:
    grammar = ("#JSGF V1.0;\ngrammar menu;\n"
               "public <menu> = [i want to] (talk to an agent | check my balance) [please];\n")
    audio, _ = call_audio(["talk to an agent"])
    events = await run_through(LocalStt(CALL, SphinxOptions(jsgf=grammar)), frames_of(audio))
    finals = [e.text for e in events if isinstance(e, TranscriptFinal)]
    assert len(finals) == 1 and "agent" in finals[0], events
