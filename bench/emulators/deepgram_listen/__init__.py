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
The package's parts: :mod:`.transcriber` (the sans-I/O ears), :mod:`.records` (what each
connection did), :mod:`.session` (one accepted connection), :mod:`.server` (the emulator);
the handshake and shutdown steps every Deepgram emulator shares are in
:mod:`bench.emulators.deepgram_server`. Every name is importable from here.
"""

from bench.emulators.deepgram_listen.records import EndedBy, ListenConnectionRecord, SentMessage
from bench.emulators.deepgram_listen.server import DeepgramListenEmulator, default_script_key
from bench.emulators.deepgram_listen.session import CLOSE_TIMEOUT_S, OUTBOX_MESSAGES
from bench.emulators.deepgram_listen.transcriber import (
    EMULATED_ENCODINGS,
    FINAL_WITHOUT_ENDPOINTING_S,
    VAD_FRAME_S,
    WORDS_PER_S,
    ListenTranscriber,
    spoken_words,
)
from bench.emulators.deepgram_server import SHUTDOWN_CLOSE_WAIT_S

__all__ = [
    "CLOSE_TIMEOUT_S",
    "EMULATED_ENCODINGS",
    "FINAL_WITHOUT_ENDPOINTING_S",
    "OUTBOX_MESSAGES",
    "SHUTDOWN_CLOSE_WAIT_S",
    "VAD_FRAME_S",
    "WORDS_PER_S",
    "DeepgramListenEmulator",
    "EndedBy",
    "ListenConnectionRecord",
    "ListenTranscriber",
    "SentMessage",
    "default_script_key",
    "spoken_words",
]
