"""The Deepgram listen emulator's ears, without I/O: audio and control messages in, messages out.

An energy detector on 20 ms frames finds utterances; each gets the next scripted text, grown as
interim ``Results`` while it lasts and finalised after ``endpointing`` of silence, with word
timings spread over the voiced span (see :mod:`bench.emulators.deepgram_listen` for the whole
behaviour). Times are audio seconds since the stream began.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Final

import attrs
import numpy as np

from protocols.audio import frame_rms_dbfs
from protocols.deepgram_listen import (
    Alternative,
    Channel,
    ListenOptions,
    ModelInfo,
    Results,
    ResultsMetadata,
    ServerMessage,
    SpeechStarted,
    UtteranceEnd,
    Word,
)
from protocols.g711 import Pcm16, alaw_decode, pcm16le_decode, ulaw_decode

__all__ = ["EMULATED_ENCODINGS", "EPS_S", "FINAL_WITHOUT_ENDPOINTING_S", "VAD_FRAME_S",
           "WORDS_PER_S", "ListenTranscriber", "rounded_s", "spoken_words"]

#: Encodings the emulator can decode, with their bytes per sample.
EMULATED_ENCODINGS: Final = {"mulaw": 1, "alaw": 1, "linear16": 2}
#: The detector's frame: 20 ms, the telephony packet time.
VAD_FRAME_S: Final = 0.02
#: With ``endpointing=false``, silence after which the utterance is finalised (speech_final false).
FINAL_WITHOUT_ENDPOINTING_S: Final = 1.0
#: Speaking rate used to grow interim transcripts.
WORDS_PER_S: Final = 2.5

_MODEL_UUID: Final = "1e9c4f3a-5b7d-4c2e-9a61-0d8f3b2c7e45"
_MODEL_VERSION: Final = "2025-01-01.0"
_INTERIM_CONFIDENCE: Final = 0.87
_FINAL_CONFIDENCE: Final = 0.98
#: Slack in comparisons of audio times (sums of frame durations).
EPS_S: Final = 1e-9

_NOT_SPOKEN = re.compile(r"[^\w'’-]+")  # what a word loses without punctuation (\w keeps ñ, é, 4)


def spoken_words(text: str) -> list[tuple[str, str]]:
    """``(word, punctuated_word)`` pairs of a scripted text, as Deepgram would report them."""
    pairs: list[tuple[str, str]] = []
    for token in text.split():
        word = _NOT_SPOKEN.sub("", token).strip("-'’").lower()
        if word:
            pairs.append((word, token))
    return pairs


@attrs.define(eq=False)
class _Utterance:
    text: str
    start_s: float
    voiced_end_s: float
    next_interim_s: float
    finalized: bool = False
    silence_s: float = 0.0


@attrs.define(eq=False)
class ListenTranscriber:
    """The emulator's ears, without I/O: audio bytes and control messages in, server messages out.

    ``next_text()`` gives the scripted text of the utterance being detected (called at detection);
    ``utterance_finalized(text)`` is called when its final is produced (the script advances then).
    Times are audio seconds since the stream began.
    """

    options: ListenOptions
    next_text: Callable[[], str]
    utterance_finalized: Callable[[str], None]
    request_id: str
    vad_threshold_dbfs: float = -45.0
    speech_min_s: float = 0.1
    interim_interval_s: float = 0.5
    words_per_s: float = WORDS_PER_S
    answer_idle_finalize: bool = True
    utterance_detected: Callable[[str], None] = lambda text: None
    _pending: bytearray = attrs.field(init=False, factory=bytearray)
    _bytes: int = attrs.field(init=False, default=0)
    _clock_s: float = attrs.field(init=False, default=0.0)
    _voiced_run_s: float = attrs.field(init=False, default=0.0)
    _voiced_run_start_s: float = attrs.field(init=False, default=0.0)
    _utterance: _Utterance | None = attrs.field(init=False, default=None)
    _window_start_s: float = attrs.field(init=False, default=0.0)
    _utterance_end_due_s: float | None = attrs.field(init=False, default=None)
    _last_word_end_s: float = attrs.field(init=False, default=0.0)
    _bytes_per_s: int = attrs.field(init=False, default=0)
    _frame_bytes: int = attrs.field(init=False, default=0)
    _sample_bytes: int = attrs.field(init=False, default=0)
    _decode: Callable[[bytes], Pcm16] = attrs.field(init=False, default=ulaw_decode)
    _punctuated: bool = attrs.field(init=False, default=False)
    _endpoint_s: float = attrs.field(init=False, default=0.0)
    _metadata: ResultsMetadata = attrs.field(init=False, factory=ResultsMetadata)

    def __attrs_post_init__(self) -> None:
        encoding = self.options.encoding
        if encoding not in EMULATED_ENCODINGS or self.options.sample_rate is None:
            raise ValueError(f"cannot emulate encoding {encoding!r}")
        self._bytes_per_s = (
            EMULATED_ENCODINGS[encoding] * self.options.sample_rate * self.options.channels
        )
        sample_bytes = EMULATED_ENCODINGS[encoding] * self.options.channels
        self._frame_bytes = max(1, round(self.options.sample_rate * VAD_FRAME_S)) * sample_bytes
        self._sample_bytes = sample_bytes
        self._decode = {
            "mulaw": ulaw_decode, "alaw": alaw_decode, "linear16": pcm16le_decode,
        }[encoding]  # fmt: skip
        self._punctuated = self.options.punctuate or self.options.smart_format
        endpointing = self.options.endpointing
        self._endpoint_s = (
            FINAL_WITHOUT_ENDPOINTING_S if endpointing is False else max(endpointing / 1000, EPS_S)
        )
        self._metadata = ResultsMetadata(
            request_id=self.request_id,
            model_info=ModelInfo(
                name=f"general-{self.options.model or 'nova-3'}", version=_MODEL_VERSION,
                arch=self.options.model or "nova-3",
            ),
            model_uuid=_MODEL_UUID,
        )

    @property
    def audio_s(self) -> float:
        """Audio received so far, in seconds (from the byte count)."""
        return self._bytes / self._bytes_per_s

    @property
    def speaking(self) -> bool:
        """An utterance has been detected and not yet finalised."""
        return self._utterance is not None and not self._utterance.finalized

    def feed(self, data: bytes) -> list[ServerMessage]:
        """Audio bytes (any chunking); the messages that the whole 20 ms frames in them cause."""
        self._bytes += len(data)
        self._pending += data
        out: list[ServerMessage] = []
        size = self._frame_bytes
        whole = len(self._pending) - len(self._pending) % size
        for offset in range(0, whole, size):
            out += self._frame(bytes(self._pending[offset : offset + size]))
        del self._pending[:whole]
        return out

    def finalize(self) -> list[ServerMessage]:
        """A Finalize: the pending utterance as a ``from_finalize`` final (speech_final false)."""
        utterance = self._utterance
        if utterance is not None and not utterance.finalized:
            return [self._final(utterance, speech_final=False, from_finalize=True)]
        if self.answer_idle_finalize:
            return [self._results("", (), is_final=True, from_finalize=True)]
        return []

    def close(self) -> list[ServerMessage]:
        """CloseStream: hear the partial last frame, then finalise what is pending."""
        out: list[ServerMessage] = []
        whole = len(self._pending) - len(self._pending) % self._sample_bytes
        if whole:
            out += self._frame(bytes(self._pending[:whole]))
        self._pending.clear()
        utterance = self._utterance
        if utterance is not None and not utterance.finalized:
            out.append(self._final(utterance, speech_final=False, from_finalize=False))
        return out

    # -- internals ----------------------------------------------------------------------------

    def _frame(self, frame: bytes) -> list[ServerMessage]:
        pcm = self._decode(frame)
        channels = self.options.channels
        if channels > 1:
            pcm = pcm.reshape(-1, channels).mean(axis=1).astype(np.int16)
        voiced = frame_rms_dbfs(pcm) >= self.vad_threshold_dbfs
        t0 = self._clock_s
        t1 = self._clock_s = t0 + len(frame) / self._bytes_per_s
        out: list[ServerMessage] = []
        utterance = self._utterance
        if utterance is None or utterance.finalized:
            if voiced:
                if self._voiced_run_s == 0.0:
                    self._voiced_run_start_s = t0
                self._voiced_run_s += t1 - t0
            else:
                self._voiced_run_s = 0.0
        if utterance is not None:
            if voiced:
                utterance.voiced_end_s = t1
                utterance.silence_s = 0.0
            else:
                utterance.silence_s += t1 - t0
            if not utterance.finalized:
                if utterance.silence_s + EPS_S >= self._endpoint_s:
                    out.append(self._final(
                        utterance, speech_final=self.options.endpointing is not False,
                        from_finalize=False,
                    ))
                elif self.options.interim_results and t1 + EPS_S >= utterance.next_interim_s:
                    out.append(self._interim(utterance, t1))
                    while utterance.next_interim_s <= t1 + EPS_S:
                        utterance.next_interim_s += self.interim_interval_s
            if utterance.finalized and utterance.silence_s + EPS_S >= self._endpoint_s:
                self._utterance = utterance = None  # the caller fell silent after a Finalize
        due = self._utterance_end_due_s
        if due is not None and t1 + EPS_S >= due:
            out.append(UtteranceEnd(last_word_end=self._last_word_end_s))
            self._utterance_end_due_s = None
        if self._utterance is None and self._voiced_run_s + EPS_S >= self.speech_min_s:
            out += self._start_utterance(t1)
        return out

    def _start_utterance(self, now_s: float) -> list[ServerMessage]:
        start = self._voiced_run_start_s
        self._voiced_run_s = 0.0
        text = self.next_text()
        self.utterance_detected(text)
        self._utterance = _Utterance(
            text=text, start_s=start, voiced_end_s=now_s,
            next_interim_s=start + self.interim_interval_s,
        )
        self._utterance_end_due_s = None  # new words before UtteranceEnd was due: no UtteranceEnd
        if self.options.vad_events:
            return [SpeechStarted(timestamp=rounded_s(start))]
        return []

    def _interim(self, utterance: _Utterance, now_s: float) -> Results:
        pairs = spoken_words(utterance.text)
        elapsed = max(now_s - utterance.start_s, 0.0)
        count = min(len(pairs), max(1, round(elapsed * self.words_per_s))) if pairs else 0
        words = self._timed_words(pairs[:count], utterance.start_s, max(utterance.voiced_end_s, now_s))
        return self._results(
            self._transcript(pairs[:count]), words, is_final=False, confidence=_INTERIM_CONFIDENCE,
            advance=False,
        )

    def _final(self, utterance: _Utterance, *, speech_final: bool, from_finalize: bool) -> Results:
        pairs = spoken_words(utterance.text)
        end = max(utterance.voiced_end_s, utterance.start_s + VAD_FRAME_S)
        words = self._timed_words(pairs, utterance.start_s, end)
        utterance.finalized = True
        if words:
            self._last_word_end_s = words[-1].end
        if self.options.utterance_end_ms is not None:
            self._utterance_end_due_s = self._last_word_end_s + self.options.utterance_end_ms / 1000
        self.utterance_finalized(utterance.text)
        return self._results(
            self._transcript(pairs), words, is_final=True, speech_final=speech_final,
            from_finalize=from_finalize,
        )

    def _timed_words(
        self, pairs: Sequence[tuple[str, str]], start_s: float, end_s: float
    ) -> tuple[Word, ...]:
        if not pairs:
            return ()
        slot = (end_s - start_s) / len(pairs)
        words = []
        for index, (word, punctuated) in enumerate(pairs):
            w_start = start_s + index * slot
            w_end = end_s if index == len(pairs) - 1 else w_start + 0.85 * slot
            words.append(Word(
                word=word, start=rounded_s(w_start), end=rounded_s(w_end), confidence=_FINAL_CONFIDENCE,
                punctuated_word=punctuated if self._punctuated else None,
            ))
        return tuple(words)

    def _transcript(self, pairs: Sequence[tuple[str, str]]) -> str:
        return " ".join(p if self._punctuated else w for w, p in pairs)

    def _results(
        self, transcript: str, words: tuple[Word, ...], *, is_final: bool,
        speech_final: bool = False, from_finalize: bool = False,
        confidence: float = _FINAL_CONFIDENCE, advance: bool = True,
    ) -> Results:
        start = self._window_start_s
        now = self._clock_s
        if is_final and advance:
            self._window_start_s = now
        return Results(
            channel_index=(0, self.options.channels),
            start=rounded_s(start),
            duration=rounded_s(now - start),
            is_final=is_final,
            speech_final=speech_final,
            from_finalize=from_finalize,
            channel=Channel(alternatives=(Alternative(
                transcript=transcript, confidence=confidence if transcript else 0.0, words=words,
            ),)),
            metadata=self._metadata,
        )


def rounded_s(seconds: float) -> float:
    """A time as Deepgram's messages carry it: seconds to 0.1 ms."""
    return round(seconds, 4)

