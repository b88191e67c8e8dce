"""Turns for `actors.deepgram_link.DeepgramLink`: Deepgram's speech messages as call-time events.

`Results`, `UtteranceEnd` and `SpeechStarted` become `TranscriptPartial`, `TranscriptFinal`,
`UtteranceEnded` and `CallerStartedSpeaking` in call time, numbered in turns (``t-1``, ``t-2``,
...). A turn ends with a ``speech_final`` final or an `UtteranceEnded`, whichever comes first (the
UtteranceEnd that follows a speech_final is dropped). After a reconnect the link replays audio, so
results ending before the last final, and onsets already reported, are heard again: dropped.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable
from typing import Final

import attrs

from actors.deepgram_connection import TIME_TOLERANCE_S
from actors.messages import (
    CallerStartedSpeaking, Transcript, TranscriptFinal, TranscriptPartial, UtteranceEnded,
)
from protocols.deepgram_listen import Results, ServerMessage, SpeechStarted, UtteranceEnd

__all__ = ["ONSET_TOLERANCE_S", "TurnTracker"]

#: A SpeechStarted this close to one already reported is that onset heard again in a replay.
ONSET_TOLERANCE_S: Final = 0.1


@attrs.define(eq=False)
class TurnTracker:
    """The call's turn bookkeeping; one per link, kept across its connections and restarts.

    ``on_final`` is called with the call time up to which Deepgram has finalised the audio, on
    every final that is not a replayed one (an empty final too: that audio needs no replay).
    ``counts`` holds the `DeepgramLinkStatistics` fields counted here.
    """

    on_final: Callable[[float], None]
    counts: Counter[str] = attrs.field(factory=Counter, init=False)
    _turn: int = attrs.field(default=1, init=False)
    _turn_has_words: bool = attrs.field(default=False, init=False)
    _turn_ended_at_s: float = attrs.field(default=-math.inf, init=False)
    _last_final_end_s: float = attrs.field(default=-math.inf, init=False)
    _onset_s: float = attrs.field(default=-math.inf, init=False)  # latest SpeechStarted sent

    @property
    def turn_id(self) -> str:
        return f"t-{self._turn}"

    def events(self, message: ServerMessage, offset_at: Callable[[float], float],
               received_at_s: float) -> list[Transcript]:
        """What ``message`` means for the call; [] for anything that is not about speech.

        ``offset_at(connection_s)`` is call time minus connection time at ``connection_s``;
        ``received_at_s`` (end of the latest audio sent) stamps finals.
        """
        if isinstance(message, Results):
            self.counts["results_received"] += 1
            return self._on_results(message.shifted(offset_at(message.start)), received_at_s)
        if isinstance(message, UtteranceEnd):
            end_s = message.shifted(offset_at(message.last_word_end)).last_word_end
            if not self._turn_has_words or end_s <= self._turn_ended_at_s + TIME_TOLERANCE_S:
                return []  # follows the speech_final that already ended this turn
            ended = UtteranceEnded(self.turn_id, end_s)
            self.counts["utterance_ends"] += 1
            self._end_turn(end_s)
            return [ended]
        if isinstance(message, SpeechStarted):
            onset_s = message.shifted(offset_at(message.timestamp)).timestamp
            if onset_s <= self._onset_s + ONSET_TOLERANCE_S:
                return []  # a replay made Deepgram hear an onset it had already reported
            self._onset_s = onset_s
            self.counts["speech_started"] += 1
            return [CallerStartedSpeaking(onset_s)]
        return []

    def _on_results(self, results: Results, received_at_s: float) -> list[Transcript]:
        text, start_s, end_s = results.transcript, results.start, results.end
        if end_s <= self._last_final_end_s + TIME_TOLERANCE_S:
            return []  # replayed audio that was finalised before the reconnect
        if results.is_final:  # an empty final too: that audio needs no replay
            self._last_final_end_s = end_s
            self.on_final(end_s)
        if not text:
            return []
        # Report when the words were said, not the result window (windows tile the audio).
        words = results.channel.alternatives[0].words
        if words:
            start_s, end_s = words[0].start, words[-1].end
        self._turn_has_words = True
        if not results.is_final:
            self.counts["partials"] += 1
            return [TranscriptPartial(self.turn_id, text, start_s, end_s)]
        final = TranscriptFinal(self.turn_id, text, start_s, end_s, results.speech_final,
                                received_at_s=received_at_s)
        self.counts["finals"] += 1
        if results.speech_final:
            self._end_turn(end_s)
        return [final]

    def _end_turn(self, end_s: float) -> None:
        self._turn, self._turn_has_words, self._turn_ended_at_s = self._turn + 1, False, end_s
