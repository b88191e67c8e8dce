"""``centralita demo`` as a newcomer runs it: the real service on the local engines (no keys), a
Telnyx-like caller speaking espeak-ng lines, the relay firehose. Shortened (two turns, ``--fast``)
but through the same entry function as the command, and checked as the command checks itself,
plus from the outside: every turn understood (the script's reply for the line's intent),
answered without interruption, its audio played to the caller, and the saved files usable."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import wave
from pathlib import Path

import numpy as np
import pytest

from actors.scripted_llm import DialogueScript, normalise_words
from bench.emulators.caller_audio import espeak_available
from bench.emulators.telnyx_caller import CallerRecord, PlayoutSegment
from centralita.demo import DemoOptions, DemoResult, Engines, Turn, demo_settings, main, run_demo
from centralita.demo_result import judge
from centralita.demo_view import DemoView
from centralita.settings import Engine

ENTRY = Path(sys.executable).with_name("centralita")
SAMPLE_RATE_HZ = 8000

needs_espeak = pytest.mark.skipif(not espeak_available(), reason="espeak-ng is not installed "
                                  "(make system-deps)")


@needs_espeak
async def test_a_short_demo_call_is_understood_answered_and_heard(tmp_path: Path) -> None:
    settings, engines = demo_settings({}, "en")  # no keys at all: every engine local
    assert (engines.stt, engines.tts, engines.llm) == (Engine.LOCAL,) * 3
    out = io.StringIO()
    result = await run_demo(DemoOptions(fast=True, turns=2, out_dir=tmp_path), settings, engines,
                            DemoView.for_stream(out, {}))
    shown = out.getvalue()
    assert result.ok, f"{result.failure}\n{shown}"

    script = DialogueScript.builtin("demo_en")
    replies = {intent.name: intent.reply for intent in script.intents}
    assert [t.expected for t in result.turns] == ["balance", "goodbye"]
    assert result.greeting and "demo line" in result.greeting
    for turn in result.turns:
        assert turn.reply is not None and not turn.interrupted, turn
        assert normalise_words(turn.reply) == normalise_words(replies[turn.expected]), turn
        assert turn.understood and turn.bot_audio_s > 1.0, turn
        assert turn.first_audio_ms is not None and 0 < turn.first_audio_ms < 2000, turn.stages
        assert turn.heard_after_ms is not None and turn.heard_after_ms < 2500, turn

    # The WAV: the caller on the left, the bot on the right, each answer after its question.
    assert result.wav_path is not None
    with wave.open(str(result.wav_path)) as wav:
        assert (wav.getnchannels(), wav.getsampwidth(), wav.getframerate()) == (2, 2, 8000)
        stereo = np.frombuffer(wav.readframes(wav.getnframes()), "<i2").reshape(-1, 2)
    for turn in result.turns:
        said = stereo[int(turn.spoken_from_s * SAMPLE_RATE_HZ): int(turn.spoken_to_s *
                                                                    SAMPLE_RATE_HZ)]
        assert np.abs(said[:, 0]).max() > 1000 and np.abs(said[:, 1]).max() < 50  # no overlap
        answer_at = int((turn.spoken_to_s + turn.heard_after_ms / 1000) * SAMPLE_RATE_HZ)
        assert np.abs(stereo[answer_at: answer_at + SAMPLE_RATE_HZ, 1]).max() > 1000

    # The relay events, as saved: the whole call, one final-and-reply pair per turn.
    assert result.events_path is not None
    events = json.loads(result.events_path.read_text(encoding="utf-8"))
    kinds = [e["type"] for e in events]
    calls = [e["state"] for e in events if e["type"] == "call"]
    assert calls == ["started", "ended"] and events[-1]["type"] == "call"
    assert kinds.index("call") < kinds.index("final")
    assert kinds.count("reply") == 1 + len(result.turns)  # the greeting too

    # What the terminal got, written to a pipe: plain text, a summary, the verdict.
    assert "\x1b" not in shown and "\r" not in shown
    assert "Summary" in shown and "OK: 2 turns understood and answered" in shown
    assert "first_frame_sent" in shown  # a latency waterfall


def test_demo_help_from_the_installed_command() -> None:
    proc = subprocess.run([ENTRY, "demo", "--help"], capture_output=True, text=True, check=True,
                          timeout=30)
    for option in ("--language", "--realtime", "--fast", "--out", "--turns"):
        assert option in proc.stdout


def test_spanish_without_a_recogniser_is_a_clear_error(capsys: pytest.CaptureFixture[str]
                                                       ) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("DEEPGRAM_API_KEY", "STT_ENGINE")}
    assert main(DemoOptions(language="es"), env) == 2
    assert "DEEPGRAM_API_KEY" in capsys.readouterr().err


def _record(segments: list[tuple[float, float]]) -> CallerRecord:
    """A caller record that played ``(call time, seconds)`` segments of loud audio."""
    record = CallerRecord(stream_id="s", call_control_id="c", started_at=100.0)
    for at, seconds in segments:
        size = int(seconds * SAMPLE_RATE_HZ)
        record.segments.append(PlayoutSegment(started_at=100.0 + at, ended_at=100.0 + at + seconds,
                                              bytes_played=size))
        record.played += b"\x10" * size
    return record


def _answered(expected: str, reply: str, heard: str) -> Turn:
    return Turn(index=1, line="what is my balance", expected=expected, spoken_from_s=1.0,
                spoken_to_s=2.0, turn_id="t-1", heard=heard, reply=reply)


@pytest.mark.parametrize(("segments", "reply", "failure"), [
    ([(2.5, 3.0)], "Your balance is two hundred and forty dollars and fifteen cents. Is there "
     "anything else?", None),
    ([], "Your balance is ...", "the bot never spoke"),
    ([(0.1, 0.5)], "Your balance is ...", "never reached the caller"),
    ([(2.5, 3.0)], "Sorry, I did not catch that. You can say balance, opening hours, or agent.",
     "not understood"),
])
def test_no_silent_success(segments: list[tuple[float, float]], reply: str,
                           failure: str | None) -> None:
    script = DialogueScript.builtin("demo_en")
    result = DemoResult(engines=Engines(Engine.LOCAL, Engine.LOCAL, Engine.LOCAL, language="en"),
                        turns=[_answered("balance", reply, "what is my balance")],
                        events=[{"type": "final", "turnId": "t-1", "text": "what is my balance"}])
    judge(result, _record(segments), script, result.engines)
    if failure is None:
        assert result.ok and result.turns[0].understood
    else:
        assert result.failure is not None and failure in result.failure
