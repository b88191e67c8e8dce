"""A Deepgram live speech-to-text server (``/v1/listen``) for tests, the demo and the load harness.

Speaks the wire protocol of ``/work/shared/protocols/deepgram.md`` through the pure codecs in
:mod:`protocols.deepgram_listen`, over a real trio-websocket server on loopback::

    emulator = DeepgramListenEmulator(script=["hola quiero una cita", "el martes"])
    url = await nursery.start(emulator.serve)        # "ws://127.0.0.1:PORT/v1/listen"
    ...                                              # a client streams audio to url
    emulator.connections[0].messages                 # every message sent, decoded

What it does, in the fact sheet's terms (§1-4, §8):

- Handshake: ``Authorization: Token|Bearer <key>`` or subprotocols ``["token", key]`` (the
  ``token`` subprotocol is then selected); anything else is refused with HTTP 401 and
  ``dg-error``/``dg-request-id`` headers. The query goes through
  :func:`~protocols.deepgram_listen.parse_listen_query` (order-free, unknown parameters kept in
  ``extra``); a bad one is refused with 400. The emulator can only hear ``mulaw``, ``alaw`` and
  ``linear16`` (little-endian), so any other or missing ``encoding`` is refused with 400 too (the
  real service would sniff a container: out of scope here). A wrong path gets 404.
- Audio: binary frames; the audio clock is the byte count (``sample_rate`` x bytes per sample x
  ``channels``), so times in every message are *audio* seconds since the connection began and a
  client may send faster or slower than real time. An empty binary frame is CloseStream.
- Speech: an energy detector on 20 ms frames (RMS of the decoded samples, channels averaged,
  against ``vad_threshold_dbfs``). Speech starts once ``speech_min_s`` of consecutive voiced
  frames are heard; ``SpeechStarted{timestamp}`` (if ``vad_events``) carries the start of that
  run. While it lasts, interim ``Results`` come every ``interim_interval_s`` of audio (if
  ``interim_results``) with a growing prefix of the utterance's scripted text, ``words_per_s``
  words per second of speech so far. After ``endpointing`` ms of unvoiced frames the final comes
  (``is_final`` and ``speech_final`` true) with the whole text and word timings spread over the
  voiced span. With ``endpointing=false`` the final comes after
  :data:`FINAL_WITHOUT_ENDPOINTING_S` of silence with ``speech_final`` false. ``UtteranceEnd``
  follows once ``utterance_end_ms`` have passed after the last word's end (once per utterance;
  cancelled if speech resumes first).
- Transcripts are normalised as Deepgram does without formatting: lowercase words without
  punctuation (``"Hola, ¿qué tal?"`` -> ``"hola qué tal"``). With ``punctuate=true`` or
  ``smart_format=true`` the scripted text is returned as written and words carry
  ``punctuated_word``. Write scripts in lowercase if tests compare transcripts either way.
- Results windows are contiguous, as Deepgram's are: each ``Results`` starts where the previous
  final ended (0 at first), so ``start``/``duration`` cover the silence before the speech too.
- Text frames: ``KeepAlive`` resets the idle timer (every frame does); ``Finalize`` emits the
  pending utterance as a final with ``from_finalize`` true and ``speech_final`` false (with
  nothing pending: an empty ``from_finalize`` final, or no reply when
  ``answer_idle_finalize=False``); ``CloseStream`` emits what is pending (``is_final`` true,
  ``speech_final`` false), then ``Metadata``, then close 1000. Bad JSON or an unknown type gets
  an ``Error`` of variant ``SchemaError``; the connection stays open.
- ``idle_timeout_s`` of *wall* time without any frame: close 1011 with the NET-0001 reason
  (optionally preceded by an ``Error`` of variant ``Closing`` with ``error_before_close``).
- ``first_result_delay_s`` delays *every* message by that much wall time (a FIFO outbox, so the
  audio reader never stalls and order is kept): artificial server latency.

Scripts: the Nth utterance *finalised* under a script key gets ``script[N]`` ("" past the end).
The key is the ``tag`` query parameter (``ListenOptions.extra["tag"]``, a real Deepgram
parameter; "" when absent), so each call of the load harness walks its own copy of the script,
and a reconnect with the same tag continues where the previous connection stopped. The cursor
only advances when an utterance is *finalised* (endpointing, Finalize or CloseStream): if a
connection drops mid-utterance, the next connection with the same tag that hears the replayed
audio produces that same utterance's text. (A client that also replays audio of utterances
already finalised would get the next lines for them: replay only what was not finalised.)
``script_for(options)`` picks a different script per connection; ``script_key(options)`` a
different key.

Fault injection, all one-shot and claimed by the *next connection to open*: the
``drop_after_audio_s`` attribute (TCP closed without a close frame after that much audio),
:meth:`close_with` (a close frame after some audio, e.g. 1011 NET-0000), :meth:`reject_next_with`
(refuse the next handshake, e.g. 429). :meth:`close_all` closes the live connections now.

Recording: :attr:`connections` holds one :class:`ListenConnectionRecord` per handshake (refused
ones included), :attr:`utterances_detected` counts detected utterances across all connections.

API note for clients written against the first draft: unchanged, only additions (``words_per_s``,
``script_key``, ``answer_idle_finalize``, ``error_before_close``, ``close_all``,
``script_position``, ``ListenTranscriber``).
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import re
import uuid
from collections.abc import Callable, Sequence
from typing import Final, Literal

import attrs
import numpy as np
import orjson
import trio
from trio_websocket import ConnectionClosed, WebSocketConnection, WebSocketRequest, serve_websocket

from protocols.audio import frame_rms_dbfs
from protocols.deepgram_listen import (
    CLOSE_AFTER_CLOSE_STREAM,
    CLOSE_GOING_AWAY,
    CLOSE_NET_0001,
    IDLE_TIMEOUT_S,
    Alternative,
    Channel,
    CloseStream,
    ErrorMessage,
    Finalize,
    KeepAlive,
    ListenOptions,
    Metadata,
    ModelInfo,
    Results,
    ResultsMetadata,
    ServerClose,
    ServerMessage,
    SpeechStarted,
    UtteranceEnd,
    Word,
    decode_client_text,
    encode_server,
    parse_auth,
    parse_listen_query,
    schema_error,
)
from protocols.errors import RemoteProtocolError
from protocols.g711 import Pcm16, alaw_decode, pcm16le_decode, ulaw_decode

__all__ = [
    "EMULATED_ENCODINGS",
    "FINAL_WITHOUT_ENDPOINTING_S",
    "VAD_FRAME_S",
    "DeepgramListenEmulator",
    "ListenConnectionRecord",
    "ListenTranscriber",
    "SentMessage",
    "default_script_key",
    "spoken_words",
]

#: Encodings the emulator can decode, with their bytes per sample.
EMULATED_ENCODINGS: Final = {"mulaw": 1, "alaw": 1, "linear16": 2}
#: The detector's frame: 20 ms, the telephony packet time.
VAD_FRAME_S: Final = 0.02
#: With ``endpointing=false``, silence after which the utterance is finalised (speech_final false).
FINAL_WITHOUT_ENDPOINTING_S: Final = 1.0
#: Speaking rate used to grow interim transcripts.
WORDS_PER_S: Final = 2.5
#: Messages waiting in a connection's outbox (only fills when first_result_delay_s is large).
OUTBOX_MESSAGES: Final = 256
#: Bound on every closing handshake the emulator waits for.
CLOSE_TIMEOUT_S: Final = 2.0

#: How long a shutting-down emulator lingers after sending its 1001 close frames.
SHUTDOWN_CLOSE_WAIT_S: Final = 0.05

_MODEL_UUID: Final = "1e9c4f3a-5b7d-4c2e-9a61-0d8f3b2c7e45"
_MODEL_VERSION: Final = "2025-01-01.0"
_INTERIM_CONFIDENCE: Final = 0.87
_FINAL_CONFIDENCE: Final = 0.98
_EPS: Final = 1e-9

_NOT_SPOKEN = re.compile(r"[^\w'’-]+")  # what a word loses without punctuation (\w keeps ñ, é, 4)


def spoken_words(text: str) -> list[tuple[str, str]]:
    """``(word, punctuated_word)`` pairs of a scripted text, as Deepgram would report them."""
    pairs: list[tuple[str, str]] = []
    for token in text.split():
        word = _NOT_SPOKEN.sub("", token).strip("-'’").lower()
        if word:
            pairs.append((word, token))
    return pairs


def default_script_key(options: ListenOptions) -> str:
    """The script cursor of a connection: its ``tag`` query parameter, "" without one."""
    return options.extra.get("tag", "")


# == recording ======================================================================================

@attrs.frozen
class SentMessage:
    """One message the emulator sent: wall time of the send, audio clock when it was produced."""

    at: float
    audio_s: float
    message: ServerMessage


EndedBy = Literal[
    "rejected", "close_stream", "idle_timeout", "client_closed", "client_dropped", "dropped",
    "fault_close", "server_shutdown",
]


@attrs.define(eq=False)
class ListenConnectionRecord:
    """Everything one connection did, for assertions. Mutated while the connection lives."""

    path: str
    request_id: str
    started_at: float
    options: ListenOptions | None = None
    auth_scheme: str | None = None
    auth_subprotocol: str | None = None
    rejected_status: int | None = None
    rejected_reason: str | None = None
    audio_bytes: int = 0
    #: The raw audio received (empty when the emulator's ``keep_audio`` is off).
    audio: bytearray = attrs.field(factory=bytearray, repr=False)
    audio_s: float = 0.0
    #: Client text frames in order: ``KeepAlive``, ``Finalize``, ``CloseStream`` or ``Invalid``
    #: (an empty binary frame is recorded as ``CloseStream``).
    controls: list[str] = attrs.field(factory=list)
    sent: list[SentMessage] = attrs.field(factory=list, repr=False)
    #: Texts of the utterances finalised on this connection, in order.
    utterances: list[str] = attrs.field(factory=list)
    ended_by: EndedBy | None = None
    #: The close code on the wire (ours or the client's); 1006 when TCP dropped without one.
    close_code: int | None = None
    close_reason: str | None = None
    ended_at: float | None = None

    @property
    def messages(self) -> list[ServerMessage]:
        return [sent.message for sent in self.sent]

    @property
    def results(self) -> list[Results]:
        return [m for m in self.messages if isinstance(m, Results)]

    @property
    def finals(self) -> list[Results]:
        return [r for r in self.results if r.is_final]

    @property
    def dropped(self) -> bool:
        """True if the TCP connection ended without a close frame (either side)."""
        return self.ended_by in ("dropped", "client_dropped")


# == the sans-I/O transcriber =======================================================================

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
            FINAL_WITHOUT_ENDPOINTING_S if endpointing is False else max(endpointing / 1000, _EPS)
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
                if utterance.silence_s + _EPS >= self._endpoint_s:
                    out.append(self._final(
                        utterance, speech_final=self.options.endpointing is not False,
                        from_finalize=False,
                    ))
                elif self.options.interim_results and t1 + _EPS >= utterance.next_interim_s:
                    out.append(self._interim(utterance, t1))
                    while utterance.next_interim_s <= t1 + _EPS:
                        utterance.next_interim_s += self.interim_interval_s
            if utterance.finalized and utterance.silence_s + _EPS >= self._endpoint_s:
                self._utterance = utterance = None  # the caller fell silent after a Finalize
        due = self._utterance_end_due_s
        if due is not None and t1 + _EPS >= due:
            out.append(UtteranceEnd(last_word_end=self._last_word_end_s))
            self._utterance_end_due_s = None
        if self._utterance is None and self._voiced_run_s + _EPS >= self.speech_min_s:
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
            return [SpeechStarted(timestamp=_round(start))]
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
                word=word, start=_round(w_start), end=_round(w_end), confidence=_FINAL_CONFIDENCE,
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
            start=_round(start),
            duration=_round(now - start),
            is_final=is_final,
            speech_final=speech_final,
            from_finalize=from_finalize,
            channel=Channel(alternatives=(Alternative(
                transcript=transcript, confidence=confidence if transcript else 0.0, words=words,
            ),)),
            metadata=self._metadata,
        )


def _round(seconds: float) -> float:
    return round(seconds, 4)


# == the server =====================================================================================

@attrs.frozen
class _CloseFault:
    close: ServerClose
    after_audio_s: float


@attrs.frozen
class _Ending:
    kind: Literal["close", "drop"]
    ended_by: EndedBy
    close: ServerClose | None = None


@attrs.define(eq=False)
class _ScriptCursor:
    lines: Sequence[str]
    key: str
    positions: dict[str, int]

    def peek(self) -> str:
        index = self.positions.get(self.key, 0)
        return self.lines[index] if index < len(self.lines) else ""

    def advance(self, _text: str) -> None:
        self.positions[self.key] = self.positions.get(self.key, 0) + 1


@attrs.define(eq=False)
class DeepgramListenEmulator:
    """A ``/v1/listen`` server on ``host:port`` (0 = any free port). See the module docstring.

    Serve it with ``url = await nursery.start(emulator.serve)``; it runs until cancelled and then
    closes its live connections with 1001.
    """

    api_key: str | None = "test-key"  # None: any credential is accepted (but one is required)
    script: Sequence[str] = ()
    interim_interval_s: float = 0.5
    vad_threshold_dbfs: float = -45.0
    speech_min_s: float = 0.1
    idle_timeout_s: float = IDLE_TIMEOUT_S
    first_result_delay_s: float = 0.0
    require_model: bool = True
    words_per_s: float = WORDS_PER_S
    script_for: Callable[[ListenOptions], Sequence[str]] | None = None
    script_key: Callable[[ListenOptions], str] = default_script_key
    answer_idle_finalize: bool = True
    error_before_close: bool = False
    #: One-shot: the next connection to open is dropped (no close frame) after this much audio.
    drop_after_audio_s: float | None = None
    #: Keep each connection's raw audio in its record (turn off for long load runs: 8 kB/s a call).
    keep_audio: bool = True
    host: str = "127.0.0.1"
    port: int = 0
    path: str = "/v1/listen"
    connections: list[ListenConnectionRecord] = attrs.field(init=False, factory=list)
    utterances_detected: int = attrs.field(init=False, default=0)
    url: str | None = attrs.field(init=False, default=None)
    _positions: dict[str, int] = attrs.field(init=False, factory=dict)
    _close_fault: _CloseFault | None = attrs.field(init=False, default=None)
    _reject_fault: tuple[int, str] | None = attrs.field(init=False, default=None)
    _live: set[_ListenSession] = attrs.field(init=False, factory=set)

    # -- control ------------------------------------------------------------------------------

    def close_with(self, code: int, reason: str = "", *, after_audio_s: float = 0.0) -> None:
        """One-shot: the next connection to open is closed with ``code``/``reason`` once it has
        received ``after_audio_s`` of audio (e.g. ``close_with(1011, NET_0000_REASON, after_audio_s=1)``)."""
        self._close_fault = _CloseFault(ServerClose(code, reason), after_audio_s)

    def reject_next_with(self, status: int, reason: str = "") -> None:
        """One-shot: refuse the next handshake with HTTP ``status`` (e.g. 429, 402, 503)."""
        self._reject_fault = (status, reason or f"emulated rejection {status}")

    def close_all(self, code: int = CLOSE_NET_0001.code, reason: str = "") -> int:
        """Close every live connection now (pending messages are flushed first); returns how many."""
        sessions = list(self._live)
        for session in sessions:
            session.end(_Ending("close", "fault_close", ServerClose(code, reason)))
        return len(sessions)

    def script_position(self, key: str = "") -> int:
        """How many utterances have been finalised under script key ``key`` (the next line's index)."""
        return self._positions.get(key, 0)

    # -- serving ------------------------------------------------------------------------------

    async def serve(self, *, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> None:
        """Listen, report ``ws://host:port/v1/listen`` through ``task_status``, serve until cancelled."""
        async with trio.open_nursery() as nursery:
            server = await nursery.start(serve_websocket, self._handle, self.host, self.port, None)
            self.url = f"ws://{self.host}:{server.port}{self.path}"
            task_status.started(self.url)

    async def _handle(self, request: WebSocketRequest) -> None:
        record = ListenConnectionRecord(
            path=request.path, request_id=str(uuid.uuid4()), started_at=trio.current_time()
        )
        self.connections.append(record)
        stream = request._connection._stream  # noqa: SLF001 - closed by us, see _close_stream
        session: _ListenSession | None = None
        try:
            ws = await self._handshake(request, record)
            if ws is None:
                return
            session = self._session(ws, record)
            self._live.add(session)
            await session.run()
        finally:
            if session is not None:
                self._live.discard(session)
            with trio.CancelScope(shield=True):
                if session is not None and record.ended_by is None:
                    # Cancelled (serve() is shutting down): say goodbye. trio-websocket's reader
                    # is being cancelled too, so the client's reply cannot be awaited: send the
                    # close frame and give the reply a moment only.
                    record.ended_by = "server_shutdown"
                    record.close_code = CLOSE_GOING_AWAY
                    with trio.move_on_after(SHUTDOWN_CLOSE_WAIT_S):
                        await session.ws.aclose(CLOSE_GOING_AWAY, "emulator shutting down")
                record.ended_at = trio.current_time()
                # trio-websocket leaves the stream open when the peer dropped or we rejected.
                await trio.aclose_forcefully(stream)

    def _session(self, ws: WebSocketConnection, record: ListenConnectionRecord) -> _ListenSession:
        options = record.options
        assert options is not None
        lines = self.script_for(options) if self.script_for is not None else self.script
        cursor = _ScriptCursor(lines, self.script_key(options), self._positions)

        def detected(text: str) -> None:
            self.utterances_detected += 1

        def finalized(text: str) -> None:
            record.utterances.append(text)
            cursor.advance(text)

        transcriber = ListenTranscriber(
            options=options, next_text=cursor.peek, utterance_finalized=finalized,
            utterance_detected=detected, request_id=record.request_id,
            vad_threshold_dbfs=self.vad_threshold_dbfs, speech_min_s=self.speech_min_s,
            interim_interval_s=self.interim_interval_s, words_per_s=self.words_per_s,
            answer_idle_finalize=self.answer_idle_finalize,
        )
        drop_after, self.drop_after_audio_s = self.drop_after_audio_s, None
        close_fault, self._close_fault = self._close_fault, None
        return _ListenSession(
            ws=ws, record=record, transcriber=transcriber, idle_timeout_s=self.idle_timeout_s,
            delay_s=self.first_result_delay_s, error_before_close=self.error_before_close,
            drop_after_audio_s=drop_after, close_fault=close_fault, keep_audio=self.keep_audio,
        )

    async def _handshake(
        self, request: WebSocketRequest, record: ListenConnectionRecord
    ) -> WebSocketConnection | None:
        path = request.path
        if path.split("?", 1)[0] != self.path:
            await self._reject(request, record, 404, "NOT_FOUND", f"no such endpoint: {path[:80]}")
            return None
        if self._reject_fault is not None:
            (status, reason), self._reject_fault = self._reject_fault, None
            await self._reject(request, record, status, "EMULATED", reason)
            return None
        authorization = next(
            (value for name, value in request.headers if name.lower() == b"authorization"), None
        )
        try:
            credential = parse_auth(authorization, request.proposed_subprotocols)
        except RemoteProtocolError as exc:
            await self._reject(request, record, 401, "INVALID_AUTH", f"Invalid credentials: {exc.reason}")
            return None
        if self.api_key is not None and not hmac.compare_digest(
            credential.secret.encode(), self.api_key.encode()
        ):
            await self._reject(request, record, 401, "INVALID_AUTH", "Invalid credentials.")
            return None
        record.auth_scheme = credential.scheme
        record.auth_subprotocol = credential.subprotocol
        try:
            options = parse_listen_query(path, require_model=self.require_model)
        except RemoteProtocolError as exc:
            await self._reject(request, record, 400, "Bad Request", exc.reason)
            return None
        if options.encoding not in EMULATED_ENCODINGS:
            await self._reject(
                request, record, 400, "Bad Request",
                f"the emulator only decodes {sorted(EMULATED_ENCODINGS)}, not {options.encoding!r}",
            )
            return None
        record.options = options
        return await request.accept(
            subprotocol=credential.subprotocol,
            extra_headers=[(b"dg-request-id", record.request_id.encode())],
        )

    async def _reject(
        self, request: WebSocketRequest, record: ListenConnectionRecord, status: int,
        err_code: str, message: str,
    ) -> None:
        record.rejected_status = status
        record.rejected_reason = message
        record.ended_by = "rejected"
        body = orjson.dumps(
            {"err_code": err_code, "err_msg": message, "request_id": record.request_id}
        )
        await request.reject(status, extra_headers=[
            (b"dg-error", message.encode("ascii", "replace")),
            (b"dg-request-id", record.request_id.encode()),
            (b"content-type", b"application/json"),
        ], body=body)


@attrs.define(eq=False)
class _ListenSession:
    """One accepted connection: a reader (audio and controls), an outbox sender, an idle watchdog."""

    ws: WebSocketConnection
    record: ListenConnectionRecord
    transcriber: ListenTranscriber
    idle_timeout_s: float
    delay_s: float
    error_before_close: bool
    drop_after_audio_s: float | None
    close_fault: _CloseFault | None
    keep_audio: bool = True
    _sha256: hashlib._Hash = attrs.field(init=False, factory=hashlib.sha256)
    _ending: _Ending | None = attrs.field(init=False, default=None)
    _receive_scope: trio.CancelScope = attrs.field(init=False, factory=trio.CancelScope)
    _last_frame_at: float = attrs.field(init=False, factory=trio.current_time)
    _sender_done: trio.Event = attrs.field(init=False, factory=trio.Event)
    _client_gone: bool = attrs.field(init=False, default=False)
    _outbox: trio.MemorySendChannel[tuple[float, float, ServerMessage]] = attrs.field(init=False)
    _outbox_out: trio.MemoryReceiveChannel[tuple[float, float, ServerMessage]] = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self._outbox, self._outbox_out = trio.open_memory_channel[tuple[float, float, ServerMessage]](
            OUTBOX_MESSAGES
        )

    def end(self, ending: _Ending) -> None:
        """Decide how the connection ends (first decision wins) and stop reading."""
        if self._ending is None:
            self._ending = ending
        self._receive_scope.cancel()

    async def run(self) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._send_loop)
            nursery.start_soon(self._watchdog)
            with self._receive_scope:
                await self._receive_loop()
            await self._conclude()
            nursery.cancel_scope.cancel()

    async def _enqueue(self, messages: Sequence[ServerMessage]) -> None:
        now = trio.current_time()
        for message in messages:
            await self._outbox.send((now + self.delay_s, self.transcriber.audio_s, message))

    async def _receive_loop(self) -> None:
        record = self.record
        while True:
            try:
                frame = await self.ws.get_message()
            except ConnectionClosed as exc:
                code = exc.reason.code if exc.reason is not None else 1006
                record.ended_by = "client_dropped" if code == 1006 else "client_closed"
                record.close_code = code
                record.close_reason = exc.reason.reason if exc.reason is not None else None
                self._client_gone = True
                return
            self._last_frame_at = trio.current_time()
            if isinstance(frame, bytes):
                if not frame:
                    record.controls.append("CloseStream")
                    await self._close_stream()
                    return
                record.audio_bytes += len(frame)
                self._sha256.update(frame)
                if self.keep_audio:
                    record.audio += frame
                await self._enqueue(self.transcriber.feed(frame))
                record.audio_s = self.transcriber.audio_s
                if self._fault_due():
                    return
                continue
            try:
                control = decode_client_text(frame)
            except RemoteProtocolError as exc:
                record.controls.append("Invalid")
                await self._enqueue([schema_error(exc, frame)])
                continue
            record.controls.append(type(control).__name__)
            if isinstance(control, Finalize):
                await self._enqueue(self.transcriber.finalize())
            elif isinstance(control, CloseStream):
                await self._close_stream()
                return
            else:
                assert isinstance(control, KeepAlive)  # resets the idle timer, like every frame

    def _fault_due(self) -> bool:
        audio_s = self.transcriber.audio_s
        if self.drop_after_audio_s is not None and audio_s + _EPS >= self.drop_after_audio_s:
            self.end(_Ending("drop", "dropped"))
            return True
        fault = self.close_fault
        if fault is not None and audio_s + _EPS >= fault.after_audio_s:
            self.end(_Ending("close", "fault_close", fault.close))
            return True
        return False

    async def _close_stream(self) -> None:
        messages = self.transcriber.close()
        record = self.record
        metadata = Metadata(
            request_id=record.request_id,
            sha256=self._sha256.hexdigest(),
            created=datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            duration=_round(self.transcriber.audio_s),
            channels=self.transcriber.options.channels,
        )
        await self._enqueue([*messages, metadata])
        self.end(_Ending("close", "close_stream", CLOSE_AFTER_CLOSE_STREAM))

    async def _watchdog(self) -> None:
        while True:
            await trio.sleep_until(self._last_frame_at + self.idle_timeout_s)
            if trio.current_time() >= self._last_frame_at + self.idle_timeout_s:
                self.end(_Ending("close", "idle_timeout", CLOSE_NET_0001))
                return

    async def _send_loop(self) -> None:
        try:
            async for due, audio_s, message in self._outbox_out:
                await trio.sleep_until(due)
                if self._client_gone:
                    continue
                try:
                    await self.ws.send_message(encode_server(message))
                except ConnectionClosed:
                    self._client_gone = True
                    continue
                self.record.sent.append(SentMessage(trio.current_time(), audio_s, message))
        finally:
            self._sender_done.set()

    async def _conclude(self) -> None:
        ending = self._ending
        record = self.record
        if ending is None:  # the client closed or dropped; recorded by the reader
            return
        if ending.kind == "drop":
            record.ended_by = ending.ended_by
            record.close_code = 1006
            await trio.aclose_forcefully(self.ws._stream)  # noqa: SLF001 - no close frame, on purpose
            return
        assert ending.close is not None
        if ending.ended_by == "idle_timeout" and self.error_before_close:
            await self._enqueue([ErrorMessage(
                variant="Closing", code="NET-0001", description=ending.close.reason,
            )])
        self._outbox.close()
        with trio.move_on_after(self.delay_s + CLOSE_TIMEOUT_S):
            await self._sender_done.wait()
        record.ended_by = ending.ended_by
        record.close_code = ending.close.code
        record.close_reason = ending.close.reason
        with trio.move_on_after(CLOSE_TIMEOUT_S):
            await self.ws.aclose(ending.close.code, ending.close.reason)
