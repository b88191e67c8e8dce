"""The demo's simulated caller: its lines, its voice, and how it talks with the bot.

Real speech synthesised with espeak-ng, lines that walk the demo script's intents. It talks like
a person: it waits for the greeting, says one line, waits until the bot's answer has finished
playing, pauses, says the next. Its line is spliced into the TelnyxCaller's stream as it goes
(``SPLICE_LEAD_FRAMES`` ahead of the frame being sent), so the call's timeline follows the bot
instead of a script of fixed gaps.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

import attrs
import numpy as np
import trio

from actors.scripted_llm import DialogueScript
from bench.emulators.caller_audio import encode, espeak_audio
from bench.emulators.telnyx_caller import CallerRecord, TelnyxCaller
from centralita.demo_config import (CALLER_LINES, CODEC, FRAME_S, SAMPLE_RATE_HZ, DemoOptions,
                                    DemoUnavailable)
from centralita.demo_events import RelayEvents, of_type
from centralita.demo_result import DemoResult, Turn
from protocols.audio import AudioFormat

__all__ = ["CALL_START_TIMEOUT_S", "FINAL_TIMEOUT_S", "GREETING_TIMEOUT_S", "MAX_CALL_S",
           "PLAYOUT_IDLE_TIMEOUT_S", "REPLY_TIMEOUT_S", "SPEECH_FLOOR", "SPLICE_LEAD_FRAMES",
           "CallerVoice", "converse", "plan_turns", "playout_idle", "synthesise"]

#: The caller writes a line this many frames ahead of the one being sent (40 ms of margin).
SPLICE_LEAD_FRAMES: Final = 2
#: Trim espeak's own leading/trailing silence so a line's end is the end of its last word.
SPEECH_FLOOR: Final = 200  # |sample| above this is sound (about -44 dBFS)
#: The caller's call lasts until we hang up; this only bounds a runaway.
MAX_CALL_S: Final = 600.0

CALL_START_TIMEOUT_S: Final = 10.0
GREETING_TIMEOUT_S: Final = 20.0  # the greeting's reply event comes once it has been played
FINAL_TIMEOUT_S: Final = 6.0  # after the end of the caller's line
REPLY_TIMEOUT_S: Final = 30.0  # after the final: generation and the whole playout
PLAYOUT_IDLE_TIMEOUT_S: Final = 3.0


def plan_turns(options: DemoOptions, script: DialogueScript, language: str) -> list[Turn]:
    """The caller's lines for ``options.turns`` turns (goodbye last), each with its intent."""
    lines = CALLER_LINES[language]
    if not 1 <= options.turns <= len(lines):
        raise DemoUnavailable(f"--turns must be 1 to {len(lines)}, not {options.turns}")
    chosen = [*lines[: options.turns - 1], lines[-1]]
    turns = []
    for index, line in enumerate(chosen, start=1):
        intent = script.match(line)
        if intent is None:  # a line the script does not know would make the demo lie
            raise RuntimeError(f"the demo line {line!r} matches no intent of {script!r}")
        turns.append(Turn(index=index, line=line, expected=intent.name))
    return turns


def synthesise(lines: Sequence[str], voice: str, words_per_minute: int) -> list[np.ndarray]:
    """Each line spoken by espeak-ng at 8 kHz, its own leading and trailing silence trimmed."""
    spoken = []
    for line in lines:
        pcm = espeak_audio(line, voice, sample_rate=SAMPLE_RATE_HZ,
                           words_per_minute=words_per_minute)
        loud = np.flatnonzero(np.abs(pcm.astype(np.int32)) > SPEECH_FLOOR)
        spoken.append(pcm[loud[0]: loud[-1] + 1] if loud.size else pcm)
    return spoken


@attrs.define(eq=False)
class CallerVoice:
    """The caller's mouth: splices a line into the stream just ahead of the frame being sent."""

    caller: TelnyxCaller
    record: CallerRecord
    frame_bytes: int = AudioFormat(CODEC, SAMPLE_RATE_HZ).bytes_per_20ms

    def say(self, pcm: np.ndarray) -> tuple[float, float]:
        """Queue ``pcm`` to start 40 ms from now; returns its (start, end) in call time."""
        at = self.record.media_frames + SPLICE_LEAD_FRAMES
        sent = self.caller.audio[: at * self.frame_bytes]
        missing = at * self.frame_bytes - len(sent)  # silence since the last line ended
        self.caller.audio = sent + CODEC.silence_sample * (missing // len(CODEC.silence_sample)) \
            + encode(pcm, CODEC)
        start_s = at * FRAME_S
        return start_s, start_s + len(pcm) / SAMPLE_RATE_HZ


async def playout_idle(record: CallerRecord) -> None:
    """Until the caller's playout queue has drained (bounded: a stuck playout is not fatal)."""
    with trio.move_on_after(PLAYOUT_IDLE_TIMEOUT_S):
        while record.segments and record.segments[-1].ended_at is None:
            await trio.sleep(FRAME_S)


async def converse(voice: CallerVoice, record: CallerRecord, events: RelayEvents,
                   turns: list[Turn], spoken: list[np.ndarray], options: DemoOptions,
                   result: DemoResult) -> None:
    """The conversation: wait for the greeting, then each line, its final and the reply played.

    Fills in each turn's times, turn id and reply, and the result's greeting.

    Raises:
        DemoFailed: a step did not happen in time (the message says which).
    """
    await events.wait_for(of_type("call", state="started"), CALL_START_TIMEOUT_S,
                          "the service never started the call (no 'call started' event)")
    greeting = await events.wait_for(
        of_type("reply", turnId="greeting"), GREETING_TIMEOUT_S,
        f"the bot did not finish a greeting within {GREETING_TIMEOUT_S:.0f} s")
    result.greeting = str(greeting.get("text", ""))
    await playout_idle(record)
    used: set[str] = set()
    for turn, pcm in zip(turns, spoken, strict=True):
        await trio.sleep(options.pause_s)
        turn.spoken_from_s, turn.spoken_to_s = voice.say(pcm)
        left_s = turn.spoken_to_s - (trio.current_time() - (record.started_at or 0.0))
        final = await events.wait_for(
            lambda e: e.get("type") == "final" and e.get("turnId") not in used,
            left_s + FINAL_TIMEOUT_S,
            f"turn {turn.index} ({turn.line!r}): no final transcript within "
            f"{FINAL_TIMEOUT_S:.0f} s of the end of the caller's words")
        turn.turn_id = str(final.get("turnId"))
        used.add(turn.turn_id)
        reply = await events.wait_for(
            of_type("reply", turnId=turn.turn_id), REPLY_TIMEOUT_S,
            f"turn {turn.index} ({turn.line!r}): the bot did not answer (no reply within "
            f"{REPLY_TIMEOUT_S:.0f} s)")
        turn.reply, turn.interrupted = str(reply.get("text", "")), bool(reply.get("interrupted"))
        await playout_idle(record)
    await trio.sleep(options.pause_s)

