"""The blocking half of `actors.local_stt`: one call's pocketsphinx decoder, fed call audio.

`SphinxStream` is synchronous and knows nothing of trio. It turns 20 ms `AudioFrame` s in the
call's codec into the same transcript events `DeepgramLink` sends, with call-time timestamps:

    decode codec -> resample to 16 kHz (the only rate the en-us model takes) -> 20 ms frames ->
    pocketsphinx ``Endpointer`` (WebRTC VAD + a 0.3 s majority window) -> ``Decoder``

* onset (the endpointer enters speech): `CallerStartedSpeaking` at the speech start;
* while in speech: a `TranscriptPartial` every ``partial_interval_s`` of audio when the
  hypothesis changed;
* endpoint (the endpointer leaves speech): ``end_utt()`` and a ``speech_final`` `TranscriptFinal`
  (nothing if no words were recognised), which ends the turn (``t-1`` -> ``t-2``);
* ``utterance_end_s`` of audio after the final with no new onset: `UtteranceEnded` for that turn.

**Threading.** pocketsphinx's Python binding holds the GIL inside every C call, so running it
in a worker thread only keeps the trio loop responsive if each call is short. The stream
therefore calls ``process_raw`` once per 20 ms frame (about 2-5 ms, spikes of about 30 ms), and
the defaults turn off the second and third passes (``fwdflat``, ``bestpath``), which make
``end_utt()`` cost 150-500 ms with the GIL held (see ``bench/bench_local_stt.py``).

**Memory.** Nothing is shared between decoders: pocketsphinx 5 has no API to share an acoustic
model, so each call's decoder loads its own (about 90 MB RSS with the free LM, less with a
grammar). Models come from the pocketsphinx wheel (`pocketsphinx.get_model_path`); nothing is
downloaded. English only: the wheel ships only en-us.
"""

from __future__ import annotations

import bisect
import math
import os
import re
import time
from collections.abc import Iterable
from typing import Any, Final

import attrs
import numpy as np

from actors.messages import (
    AudioFrame, CallerStartedSpeaking, Transcript, TranscriptFinal, TranscriptPartial,
    UtteranceEnded,
)
from protocols.audio import AudioFormat, StreamingResampler
from protocols.errors import RemoteProtocolError

__all__ = ["GRAMMAR_BEAMS", "LANGUAGES", "MODEL_RATE_HZ", "TELEPHONY_CMNINIT", "SphinxOptions",
           "SphinxStream", "normalise_phrase", "open_decoder", "phrases_to_jsgf"]

#: Languages the bundled models cover (the pocketsphinx wheel ships en-us only).
LANGUAGES: Final = ("en",)
#: The en-us acoustic model's rate: 8 kHz telephony audio is upsampled to it.
MODEL_RATE_HZ: Final = 16000
_STEP_SAMPLES: Final = MODEL_RATE_HZ // 50  # 20 ms at 16 kHz: one endpointer frame
_FRAME_RATE_HZ: Final = 100  # pocketsphinx feature frames per second (word segment units)
_TIMELINE_RUNS: Final = 1024
_TIME_TOLERANCE_S: Final = 0.001
_WORD = re.compile(r"[a-z']+")
#: Initial cepstral means for live CMN: those pocketsphinx converged to on the LibriVox clips of
#: pocketsphinx-testdata after 8 kHz mu-law and back to 16 kHz. The default (``40,3,-1``) is
#: full-band speech; with it the first utterance of a call is often lost.
TELEPHONY_CMNINIT: Final = "46.3,28.9,-32.8,45.8,-27.0,1.5,7.8,-28.2,21.5,-15.9,3.8,6.3,-14.5"
#: A grammar's search space is tiny, so it affords much wider beams than the free LM's defaults
#: (1e-48/1e-48/7e-29); measured: fewer utterances that never reach the grammar's end.
GRAMMAR_BEAMS: Final = {"beam": 1e-80, "pbeam": 1e-80, "wbeam": 1e-60}


def _model_path(name: str) -> str:
    from pocketsphinx import get_model_path  # imported late: the module is importable without it

    return str(get_model_path(name))


@attrs.frozen
class SphinxOptions:
    """How a call's audio is recognised. Defaults: the free en-us n-gram LM, one pass.

    Args:
      language: ``"en"`` only (no other pocketsphinx model is packaged; anything else raises).
      phrases: when given, recognition is constrained to exactly one of these phrases (a JSGF
        grammar built by `phrases_to_jsgf`): the IVR technique for a script that knows what it
        expects. Every word must be in the pronunciation dictionary (else ``ValueError``).
      jsgf: a JSGF grammar text instead (its first public rule is the start); excludes phrases.
      fwdflat, bestpath: pocketsphinx's second and third passes. Off by default: they cost
        150-500 ms at each endpoint with the GIL held, for a few points of WER.
      vad_mode: WebRTC VAD aggressiveness 0-3 for the endpointer.
      endpoint_window_s, endpoint_ratio: the endpointer's majority window: speech starts (ends)
        when ``ratio`` of the last ``window`` is speech (silence).
      partial_interval_s: audio between partial hypotheses.
      utterance_end_s: silence after a final before `UtteranceEnded` (None: never send one).
      cmninit: initial cepstral means (`TELEPHONY_CMNINIT`; pocketsphinx's own is ``40,3,-1``).
      hmm, lm, dictionary: model paths; None means the wheel's en-us models.
    """

    language: str = attrs.field(default="en", validator=attrs.validators.in_(LANGUAGES))
    phrases: tuple[str, ...] = attrs.field(default=(), converter=tuple)
    jsgf: str | None = None
    fwdflat: bool = False
    bestpath: bool = False
    vad_mode: int = attrs.field(default=1, validator=attrs.validators.in_((0, 1, 2, 3)))
    endpoint_window_s: float = 0.3
    endpoint_ratio: float = 0.9
    partial_interval_s: float = 0.2
    utterance_end_s: float | None = 1.0
    cmninit: str = TELEPHONY_CMNINIT
    hmm: str | None = None
    lm: str | None = None
    dictionary: str | None = None

    def __attrs_post_init__(self) -> None:
        if self.phrases and self.jsgf is not None:
            raise ValueError("give phrases or a JSGF grammar, not both")

    @property
    def constrained(self) -> bool:
        return bool(self.phrases) or self.jsgf is not None


def normalise_phrase(phrase: str) -> str:
    """Lower-case words only, as the dictionary spells them ("Yes, please!" -> "yes please")."""
    return " ".join(_WORD.findall(phrase.lower()))


def phrases_to_jsgf(phrases: Iterable[str], *, name: str = "expected") -> str:
    """A JSGF grammar accepting exactly one of ``phrases`` (normalised; empty ones dropped)."""
    alternatives = sorted({p for p in map(normalise_phrase, phrases) if p})
    if not alternatives:
        raise ValueError("no phrase has any word in it")
    return f"#JSGF V1.0;\ngrammar {name};\npublic <{name}> = {' | '.join(alternatives)};\n"


def open_decoder(options: SphinxOptions) -> Any:  # a pocketsphinx.Decoder
    """A decoder for ``options`` (blocking, about 0.4 s: run it in a worker thread)."""
    from pocketsphinx import Decoder

    grammar = phrases_to_jsgf(options.phrases) if options.phrases else options.jsgf
    beams = GRAMMAR_BEAMS if grammar is not None else {}
    decoder = Decoder(
        hmm=options.hmm or _model_path("en-us/en-us"),
        lm=None if grammar is not None else (options.lm or _model_path("en-us/en-us.lm.bin")),
        dict=options.dictionary or _model_path("en-us/cmudict-en-us.dict"),
        samprate=MODEL_RATE_HZ, fwdflat=options.fwdflat, bestpath=options.bestpath,
        cmninit=options.cmninit, loglevel="FATAL", **beams,
    )
    if grammar is not None:
        missing = sorted({w for w in _grammar_words(grammar) if decoder.lookup_word(w) is None})
        if missing:
            raise ValueError(f"not in the pronunciation dictionary: {', '.join(missing)}")
        decoder.add_jsgf_string("expected", grammar)
        decoder.activate_search("expected")
    return decoder


def _grammar_words(grammar: str) -> set[str]:
    """The words a JSGF text can produce (rule names, tags, comments and keywords left out)."""
    body = re.sub(r"/\*.*?\*/|//[^\n]*|<[^>]*>|\{[^}]*\}|/[0-9.eE+-]+/", " ", grammar, flags=re.S)
    body = "\n".join(line for line in body.splitlines()
                     if not line.strip().startswith(("#JSGF", "grammar", "import")))
    return set(_WORD.findall(body.lower())) - {"public"}


@attrs.define(eq=False)
class SphinxStream:
    """One call's recognition state: decoder, endpointer, resampler, turn counter, call clock.

    Not thread-safe: one thread at a time (the actor hops to a worker thread per batch).
    ``feed`` and ``finish`` return the events in the order they happened.
    """

    audio_format: AudioFormat
    options: SphinxOptions = attrs.Factory(SphinxOptions)
    decoder: Any = None  # a pocketsphinx.Decoder; built by open() if not given
    # counters (read by statistics())
    audio_s: float = attrs.field(default=0.0, init=False)
    cpu_s: float = attrs.field(default=0.0, init=False)
    utterances: int = attrs.field(default=0, init=False)
    worst_call_ms: float = attrs.field(default=0.0, init=False)  # longest C call, GIL held
    turn: int = attrs.field(default=1, init=False)
    _ep: Any = attrs.field(default=None, init=False)  # a pocketsphinx.Endpointer
    _resampler: StreamingResampler | None = attrs.field(default=None, init=False)
    _pending: np.ndarray = attrs.field(factory=lambda: np.zeros(0, np.int16), init=False)
    _model_samples: int = attrs.field(default=0, init=False)  # 16 kHz samples stepped
    _in_samples: int = attrs.field(default=0, init=False)  # call-rate samples received
    _run_starts: list[float] = attrs.field(factory=list, init=False)  # stream time of each run
    _run_offsets: list[float] = attrs.field(factory=list, init=False)  # call - stream time
    _next_call_s: float = attrs.field(default=math.nan, init=False)
    _clock_s: float = attrs.field(default=0.0, init=False)  # call time at the end of the input
    _in_utt: bool = attrs.field(default=False, init=False)
    _utt_start_s: float = attrs.field(default=0.0, init=False)  # stream time
    _utt_samples: int = attrs.field(default=0, init=False)
    _partial_due: int = attrs.field(default=0, init=False)
    _last_partial: str = attrs.field(default="", init=False)
    _pending_end: tuple[str, float] | None = attrs.field(default=None, init=False)

    def open(self) -> SphinxStream:
        """Load the models (blocking) and reset the stream; returns self."""
        if self.decoder is None:
            self.decoder = open_decoder(self.options)
        self.reset()
        return self

    def reset(self) -> None:
        """Forget the audio in flight (a restart): abandon any utterance; turns keep counting."""
        from pocketsphinx import Endpointer

        if self._in_utt:
            self.decoder.end_utt()
        self._ep = Endpointer(window=self.options.endpoint_window_s,
                              ratio=self.options.endpoint_ratio, vad_mode=self.options.vad_mode,
                              sample_rate=MODEL_RATE_HZ, frame_length=0.02)
        assert self._ep.frame_bytes == 2 * _STEP_SAMPLES
        rate = self.audio_format.sample_rate_hz
        self._resampler = StreamingResampler(rate, MODEL_RATE_HZ, low_latency=True)
        self._pending = np.zeros(0, np.int16)
        self._model_samples = self._in_samples = 0
        self._run_starts, self._run_offsets = [], []
        self._next_call_s = math.nan
        self._in_utt, self._pending_end = False, None

    @property
    def turn_id(self) -> str:
        return f"t-{self.turn}"

    # -- feeding --------------------------------------------------------------------------------

    def feed(self, frames: Iterable[AudioFrame]) -> list[Transcript]:
        """Decode ``frames`` (in order, the call's codec); the events they produced."""
        started = time.thread_time()
        events: list[Transcript] = []
        for frame in frames:
            try:
                pcm = self.audio_format.decode(frame.payload)
            except RemoteProtocolError:  # an odd byte count of L16: skip the frame
                continue
            if not len(pcm):
                continue
            rate = self.audio_format.sample_rate_hz
            stream_s = self._in_samples / rate
            if not abs(frame.call_time_s - self._next_call_s) <= _TIME_TOLERANCE_S:
                self._run_starts.append(stream_s)
                self._run_offsets.append(frame.call_time_s - stream_s)
                if len(self._run_starts) > _TIMELINE_RUNS:
                    del self._run_starts[0], self._run_offsets[0]
            self._in_samples += len(pcm)
            self._next_call_s = frame.call_time_s + len(pcm) / rate
            self._clock_s = max(self._clock_s, self._next_call_s)
            self.audio_s += len(pcm) / rate
            resampler = self._resampler
            assert resampler is not None, "open() first"
            self._pending = np.concatenate((self._pending, resampler.process(pcm)))
            while len(self._pending) >= _STEP_SAMPLES:
                step, self._pending = self._pending[:_STEP_SAMPLES], self._pending[_STEP_SAMPLES:]
                self._step(step.tobytes(), events)
        self.cpu_s += time.thread_time() - started
        return events

    def finish(self, frames: Iterable[AudioFrame] = ()) -> list[Transcript]:
        """End of input: decode ``frames``, then close any utterance (its final is not speech_final)."""
        events = self.feed(frames)
        started = time.thread_time()
        if self._ep is not None and self._ep.in_speech:
            tail = self._ep.end_stream(self._pending[:_STEP_SAMPLES].tobytes())
            if tail:
                self._process(tail)
            self._end_utterance(events, speech_final=False)
        self._pending = np.zeros(0, np.int16)
        self.cpu_s += time.thread_time() - started
        return events

    def _step(self, step: bytes, events: list[Transcript]) -> None:
        was_in_speech = self._ep.in_speech
        speech = self._ep.process(step)
        self._model_samples += _STEP_SAMPLES
        if speech is None:
            self._maybe_utterance_ended(events)
            return
        if not was_in_speech and not self._in_utt:
            self._start_utterance(events)
        self._process(speech)
        if not self._ep.in_speech:
            self._end_utterance(events, speech_final=True)
        elif self._utt_samples >= self._partial_due:
            self._partial_due = self._utt_samples + round(self.options.partial_interval_s * MODEL_RATE_HZ)
            self._partial(events)

    def _start_utterance(self, events: list[Transcript]) -> None:
        self._utt_start_s = self._ep.speech_start
        self._utt_samples = 0
        self._partial_due = round(self.options.partial_interval_s * MODEL_RATE_HZ)
        self._last_partial = ""
        self._pending_end = None  # new speech: the previous turn's UtteranceEnded is moot
        self.decoder.start_utt()
        self._in_utt = True
        self.utterances += 1
        events.append(CallerStartedSpeaking(self._call_s(self._utt_start_s)))

    def _process(self, speech: bytes) -> None:
        began = time.perf_counter()
        self.decoder.process_raw(speech, full_utt=False)
        self._utt_samples += len(speech) // 2
        self._note_call(began)

    def _partial(self, events: list[Transcript]) -> None:
        hyp = self.decoder.hyp()
        text = hyp.hypstr if hyp is not None else ""
        if text and text != self._last_partial:
            self._last_partial = text
            start = self._utt_start_s
            events.append(TranscriptPartial(self.turn_id, text, self._call_s(start),
                                            self._call_s(start + self._utt_samples / MODEL_RATE_HZ)))

    def _end_utterance(self, events: list[Transcript], *, speech_final: bool) -> None:
        began = time.perf_counter()
        self.decoder.end_utt()
        self._note_call(began)
        self._in_utt = False
        hyp = self.decoder.hyp()
        text = hyp.hypstr.strip() if hyp is not None else ""
        if not text and self.options.constrained:
            # The search never reached the grammar's end (pocketsphinx then has no result): the
            # best path so far, a prefix of some phrase, is the most it can say.
            text = self._last_partial
        if not text:
            return  # noise the VAD took for speech: no words, no final, the turn goes on
        start_s, end_s = self._word_span()
        final = TranscriptFinal(self.turn_id, text, self._call_s(start_s), self._call_s(end_s),
                                speech_final, received_at_s=round(self._clock_s, 6))
        events.append(final)
        if speech_final and self.options.utterance_end_s is not None:
            self._pending_end = (self.turn_id, final.end_s)
        self.turn += 1

    def _word_span(self) -> tuple[float, float]:
        """Stream times of the first and last real word of the utterance just ended."""
        utt_s = self._utt_start_s
        words = [s for s in self.decoder.seg() if s.word[:1] not in "<[+(" and s.word != "(NULL)"]
        if not words:
            return utt_s, utt_s + self._utt_samples / MODEL_RATE_HZ
        return (utt_s + words[0].start_frame / _FRAME_RATE_HZ,
                utt_s + (words[-1].end_frame + 1) / _FRAME_RATE_HZ)

    def _maybe_utterance_ended(self, events: list[Transcript]) -> None:
        wait_s = self.options.utterance_end_s
        if self._pending_end is None or wait_s is None:
            return
        turn_id, end_s = self._pending_end
        if self._clock_s >= end_s + wait_s - _TIME_TOLERANCE_S:
            self._pending_end = None
            events.append(UtteranceEnded(turn_id, end_s))

    # -- time -----------------------------------------------------------------------------------

    def _call_s(self, stream_s: float) -> float:
        """Call time of a point of the input stream (gaps in the call's audio keep their offset)."""
        index = bisect.bisect_right(self._run_starts, stream_s + _TIME_TOLERANCE_S) - 1
        offset = self._run_offsets[max(index, 0)] if self._run_offsets else 0.0
        return round(stream_s + offset, 6)

    def _note_call(self, began: float) -> None:
        self.worst_call_ms = max(self.worst_call_ms, (time.perf_counter() - began) * 1000)


def default_thread_tokens() -> int:
    """Decoders that may run at once in one process: one per core."""
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
