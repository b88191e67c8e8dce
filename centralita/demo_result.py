"""What became of the demo call: each turn, the verdict on it, and the files saved under ``--out``.

The verdict is never a silent success: each line must come back as a final transcript, be
answered with a reply played to the caller without interruption, and be *understood* (its
intent's reply, or with Claude its intent's words heard).
"""

from __future__ import annotations

import json
import time
import wave
from pathlib import Path
from typing import Any

import attrs
import numpy as np

from actors.scripted_llm import DialogueScript, normalise_words
from bench.emulators.telnyx_caller import CallerRecord, TelnyxCaller
from centralita.demo_config import (CODEC, DEFAULT_OUT_ROOT, FRAME_S, SAMPLE_RATE_HZ, DemoOptions,
                                    Engines)
from centralita.settings import Engine
from protocols.audio import AudioFormat

__all__ = ["DemoFailed", "DemoResult", "Turn", "bot_segments", "judge", "save"]


class DemoFailed(Exception):
    """A step of the call did not happen; the message says which and what was expected."""


@attrs.define
class Turn:
    """One line of the caller and what became of it. Times are call time in seconds."""

    index: int
    line: str
    expected: str  # the script intent the line asks for
    spoken_from_s: float = 0.0
    spoken_to_s: float = 0.0
    turn_id: str | None = None
    heard: str = ""
    reply: str | None = None
    interrupted: bool = False
    stages: dict[str, float] = attrs.field(factory=dict)
    understood: bool = False
    bot_audio_s: float = 0.0  # of the answer, as played to the caller
    heard_after_ms: float | None = None  # end of the line -> the bot's first sound, at the caller

    @property
    def first_audio_ms(self) -> float | None:
        if "end_of_speech" in self.stages and "first_frame_sent" in self.stages:
            return (self.stages["first_frame_sent"] - self.stages["end_of_speech"]) * 1000
        return None


@attrs.define
class DemoResult:
    engines: Engines
    turns: list[Turn]
    greeting: str | None = None
    events: list[dict[str, Any]] = attrs.field(factory=list)
    failure: str | None = None
    call_s: float = 0.0
    out_dir: Path | None = None
    wav_path: Path | None = None
    events_path: Path | None = None
    log_path: Path | None = None

    @property
    def ok(self) -> bool:
        return self.failure is None


def bot_segments(record: CallerRecord) -> list[tuple[float, np.ndarray]]:
    """What the caller played, as (call time, samples) per playout segment."""
    assert record.started_at is not None
    out, offset = [], 0
    played = bytes(record.played)
    for segment in record.segments:
        chunk = played[offset: offset + segment.bytes_played]
        offset += segment.bytes_played
        out.append((segment.started_at - record.started_at, CODEC.decode(chunk)))
    return out


def judge(result: DemoResult, record: CallerRecord | None, script: DialogueScript,
          engines: Engines) -> None:
    """Fill in each turn's outcome; set ``failure`` for the first thing that went wrong."""
    by_name = {intent.name: intent for intent in script.intents}
    segments = bot_segments(record) if record is not None and record.started_at else []
    problems: list[str] = []
    for i, turn in enumerate(result.turns):
        if turn.turn_id is None:
            continue
        finals = [e for e in result.events
                  if e.get("type") == "final" and e.get("turnId") == turn.turn_id]
        turn.heard = " ".join(str(e.get("text", "")) for e in finals).strip()
        latency = next((e for e in result.events
                        if e.get("type") == "latency" and e.get("turnId") == turn.turn_id), None)
        if latency is not None and isinstance(latency.get("stages"), dict):
            turn.stages = {k: float(v) for k, v in latency["stages"].items()}
        heard_intent = script.match(turn.heard)
        if engines.llm is Engine.LOCAL:  # the scripted IVR: the reply names the intent it matched
            turn.understood = turn.reply is not None and normalise_words(turn.reply) == \
                normalise_words(by_name[turn.expected].reply)
        else:
            turn.understood = heard_intent is not None and heard_intent.name == turn.expected
        until = (result.turns[i + 1].spoken_from_s if i + 1 < len(result.turns)
                 and result.turns[i + 1].spoken_from_s else float("inf"))
        answer = [(at, pcm) for at, pcm in segments if turn.spoken_to_s <= at < until]
        turn.bot_audio_s = sum(len(pcm) for _, pcm in answer) / SAMPLE_RATE_HZ
        if answer:
            turn.heard_after_ms = (answer[0][0] - turn.spoken_to_s) * 1000
        if turn.reply is not None:
            if turn.interrupted:
                problems.append(f"turn {turn.index}: the bot's answer was interrupted")
            elif not turn.bot_audio_s:
                problems.append(f"turn {turn.index}: the answer's audio never reached the caller")
            elif not turn.understood:
                problems.append(f"turn {turn.index} was not understood: the caller said "
                                f"{turn.line!r}, the service heard {turn.heard!r} and answered "
                                f"{turn.reply!r} (expected the {turn.expected!r} intent)")
    if result.failure is None and record is not None and not record.played:
        problems.insert(0, "the bot never spoke: no audio reached the caller")
    if result.failure is None and problems:
        result.failure = problems[0]


def save(result: DemoResult, options: DemoOptions, caller: TelnyxCaller,
         record: CallerRecord | None) -> None:
    """Write ``events.json`` and (once the call started) ``call.wav``: left the caller, right the
    bot, aligned in call time; note the paths (and ``service.log``'s) in ``result``."""
    out = options.out_dir or DEFAULT_OUT_ROOT / time.strftime("%Y%m%d-%H%M%S")
    out.mkdir(parents=True, exist_ok=True)
    result.out_dir = out
    result.events_path = out / "events.json"
    result.events_path.write_text(json.dumps(result.events, indent=1, ensure_ascii=False) + "\n",
                                  encoding="utf-8")
    log_path = out / "service.log"
    result.log_path = log_path if log_path.exists() else None
    if record is None or record.started_at is None:
        return
    caller_bytes = caller.audio[: record.media_frames * AudioFormat(CODEC, SAMPLE_RATE_HZ)
                                .bytes_per_20ms]
    left = CODEC.decode(caller_bytes) if caller_bytes else np.zeros(0, np.int16)
    bot = bot_segments(record)
    length = max([len(left), record.media_frames * round(FRAME_S * SAMPLE_RATE_HZ)]
                 + [round(at * SAMPLE_RATE_HZ) + len(pcm) for at, pcm in bot])
    stereo = np.zeros((length, 2), dtype=np.int16)
    stereo[: len(left), 0] = left
    for at, pcm in bot:
        start = max(0, round(at * SAMPLE_RATE_HZ))
        stereo[start: start + len(pcm), 1] = pcm[: length - start]
    result.wav_path = out / "call.wav"
    with wave.open(str(result.wav_path), "wb") as wav:
        wav.setnchannels(2)
        wav.setsampwidth(2)
        wav.setframerate(SAMPLE_RATE_HZ)
        wav.writeframes(stereo.astype("<i2").tobytes())

