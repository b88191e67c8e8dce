"""EspeakTts: the TTS port (:mod:`actors.tts`) on the espeak-ng command-line program, keyless.

espeak-ng is GPL-3.0-or-later, so it is only ever *run* as a separate process (never linked or
loaded into ours). It is robotic but immediate: ~200x faster than real time, first audio in
about a millisecond once its process is up (``/work/shared/notes/offline-engines.md`` §1).

**One process per text, spawned ahead.** ``espeak-ng -v VOICE --stdout`` with no text argument
loads its voice and then waits for text on stdin; writing the text and closing stdin makes it
synthesize, write a WAV stream to stdout and exit, so the end of a text's audio is the end of
the pipe (exact, no guessing). Each session keeps one such *spare* process waiting, spawned
when the session opens, after each text (while its audio plays) and on ``cancel()``: a reply
never waits for a spawn. Measured on the project box (espeak-ng 1.51, 2 busy cores, 24 texts of
4-14 words, raw pipe timings from writing the text; en-us, es in brackets)::

    design                                 first audio, median (max)   end of audio known
    spawn per text                         3.4-5.5 (6.4) ms [3.4 (4.5)]   5.9-8.4 ms
    spare spawned ahead (chosen)           0.4 (1.6) ms     [0.2 (1.4)]   3.2-3.8 ms (EOF)
    one long-lived process, line per text  0.4 (1.8) ms     [0.3 (1.4)]   only by an idle gap

Through this module (resampled and encoded, 0.2 s between texts): first audio 0.9 ms median
(1.1 max) with the spare, 6.5 ms (12.2) spawning per text. Texts back to back (chunks of one
reply) find the spare still loading its voice and cost about a spawn (~5 ms); the first chunk
of a reply, the one the caller waits for, finds it ready (spawned during the last reply).

The long-lived process is as quick to first audio but writes one endless WAV stream: nothing
marks where a text's audio ends, so the end could only be guessed from a pause in the output
(a loaded machine can pause mid-sentence too, and the next text's audio would then leak into
this one), and a barge-in has to kill it and start another anyway. The spare costs one idle
process (~8 MB RSS) per call.

Text goes in on stdin, never on the command line, so nothing in it can become an option; it is
sanitised first (control characters out, one line, espeak's ``[[phoneme]]`` escape defused,
bounded length). The WAV header is checked (its length fields are bogus, 0x7fffffff: the stream
is read to EOF), an odd trailing byte is carried to the next read, and the audio is resampled
from espeak's rate (22050 Hz, read from the header) to the call's rate with the session's
:class:`~protocols.audio.StreamingResampler` and encoded to its codec, as it arrives.

``cancel()`` (barge-in) kills the text's process and resets the resampler. Every process is
reaped (killed first if still running) in a bounded, shielded cleanup: when its text ends, when
its iterator is closed or cancelled, and when the session closes (which also reaps the spare).
"""

from __future__ import annotations

import logging
import re
import shutil
import struct
import subprocess
import unicodedata
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Final

import attrs
import numpy as np
import trio

from protocols.audio import AudioFormat, StreamingResampler
from supervisor import cleanup_scope

__all__ = ["DEFAULT_VOICE", "VOICES", "EspeakSession", "EspeakSessionStatistics", "EspeakTts",
           "EspeakTtsError", "sanitise_text"]

logger = logging.getLogger(__name__)

#: The keyless demo speaks English (the local STT only knows English).
DEFAULT_VOICE: Final = "en-us"
#: Language tags -> espeak-ng voices (anything else is tried as a voice name as it is).
VOICES: Final[Mapping[str, str]] = {
    "en": "en-us", "en-us": "en-us", "en-gb": "en-gb",
    "es": "es", "es-es": "es", "es-419": "es-419", "es-mx": "es-419", "es-us": "es-419",
}
#: espeak's default amplitude (100) clips (peaks up to 0.99 of full scale); 60 peaks near 0.4.
AMPLITUDE: Final = 60
#: A phone reply is a sentence or two; this is about a minute of speech.
MAX_TEXT_CHARS: Final = 1000
#: espeak runs ~200x real time: a pipe silent this long means it is stuck.
STALL_TIMEOUT_S: Final = 5.0
#: Killing and reaping a process (and closing its pipes), shielded.
REAP_TIMEOUT_S: Final = 2.0
READ_BYTES: Final = 65536
WAV_HEADER_BYTES: Final = 44
STDERR_BYTES: Final = 2048

_VOICE_NAME: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_+./-]*\Z")
_PHONEME_ESCAPE: Final = re.compile(r"\[(?=\[)")  # "[[" starts espeak's phoneme input


class EspeakTtsError(Exception):
    """espeak-ng is missing, failed (bad voice: its own message is included) or stalled."""


def sanitise_text(text: str, max_chars: int = MAX_TEXT_CHARS) -> str:
    """``text`` as one safe line for espeak's stdin.

    Control and format characters become spaces (a newline would end the text early), ``[[`` is
    split (espeak would read what follows as phoneme mnemonics), whitespace is collapsed, and a
    text longer than ``max_chars`` is cut at the last space before the limit.
    """
    cleaned = "".join(" " if unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp") else c
                      for c in text)
    cleaned = " ".join(_PHONEME_ESCAPE.sub("[ ", cleaned).split())
    if len(cleaned) > max_chars:
        cut = cleaned.rfind(" ", 0, max_chars + 1)
        cleaned = cleaned[: cut if cut > 0 else max_chars].rstrip()
    return cleaned


def _check_voice(instance: object, attribute: attrs.Attribute[str], value: str) -> None:
    if not _VOICE_NAME.match(value):  # also: never something espeak could take for an option
        raise ValueError(f"not an espeak-ng voice name: {value!r}")


@attrs.frozen
class EspeakSessionStatistics:
    texts: int
    spawned: int
    spare_hits: int  # texts that found a process already waiting
    killed: int  # processes killed before their text ended (cancel, abandoned, session end)
    reaped: int
    audio_bytes: int


@attrs.define(eq=False)
class EspeakTts:
    """An espeak-ng voice (a `TtsEngine`); :meth:`open_session` gives one call its processes.

    Args:
      voice: an espeak-ng voice (``espeak-ng --voices``); see :meth:`for_language`.
      amplitude: espeak's ``-a`` (0-200); the default keeps peaks well clear of clipping.
      words_per_minute: espeak's ``-s`` (default 175 wpm) when given.
      executable: the program, looked up on ``PATH`` when a session opens.
      prespawn: keep a spare process waiting (see the module docstring); off: spawn per text.
    """

    voice: str = attrs.field(default=DEFAULT_VOICE, validator=_check_voice)
    amplitude: int = AMPLITUDE
    words_per_minute: int | None = None
    executable: str = "espeak-ng"
    prespawn: bool = True
    max_text_chars: int = MAX_TEXT_CHARS
    stall_timeout_s: float = STALL_TIMEOUT_S
    reap_timeout_s: float = REAP_TIMEOUT_S

    @classmethod
    def for_language(cls, language: str, **kwargs: object) -> EspeakTts:
        """The voice for a language tag: ``en`` -> en-us, ``es`` -> es, ``es-419`` -> es-419."""
        tag = language.strip().lower().replace("_", "-")
        return cls(VOICES.get(tag, tag), **kwargs)  # type: ignore[arg-type]

    def command(self, executable: str | None = None) -> list[str]:
        """The argv of one synthesis process (text comes on stdin: there is no text argument)."""
        argv = [executable or self.executable, "-v", self.voice, "-a", str(int(self.amplitude)),
                "-b", "1"]  # -b 1: the input is UTF-8
        if self.words_per_minute is not None:
            argv += ["-s", str(int(self.words_per_minute))]
        return [*argv, "--stdout"]

    @asynccontextmanager
    async def open_session(self, audio_format: AudioFormat) -> AsyncIterator[EspeakSession]:
        """Find espeak-ng (:class:`EspeakTtsError` if it is not installed) and yield a session."""
        path = shutil.which(self.executable)
        if path is None:
            raise EspeakTtsError(f"{self.executable} not found on PATH "
                                 "(Debian/Ubuntu: apt-get install espeak-ng)")
        session = EspeakSession(self, self.command(path), audio_format)
        try:
            if self.prespawn:
                await session._prepare_spare()
            yield session
        finally:
            with cleanup_scope(self.reap_timeout_s):
                await session._close()


@attrs.define(eq=False)
class EspeakSession:
    """One call's espeak-ng processes (a `TtsSession`). Made by :meth:`EspeakTts.open_session`."""

    engine: EspeakTts
    argv: list[str]
    audio_format: AudioFormat
    _spare: trio.Process | None = None
    _current: trio.Process | None = None
    _live: set[trio.Process] = attrs.field(factory=set)  # spawned and not yet reaped
    _epoch: int = 0  # bumped by cancel(): an iterator from an older epoch yields nothing more
    _closed: bool = False
    _resampler: StreamingResampler | None = None
    _counts: dict[str, int] = attrs.field(factory=lambda: dict.fromkeys(
        ("texts", "spawned", "spare_hits", "killed", "reaped", "audio_bytes"), 0))

    def statistics(self) -> EspeakSessionStatistics:
        return EspeakSessionStatistics(**self._counts)

    # -- the port -------------------------------------------------------------------------------

    async def synthesize(self, text: str) -> AsyncGenerator[bytes, None]:
        """The audio of ``text`` in the call's format, read by read, until espeak exits."""
        line = sanitise_text(text, self.engine.max_text_chars)
        if not line:
            return
        if self._closed:
            raise EspeakTtsError("the session is closed")
        if self._current is not None:  # the previous iterator was abandoned without cancel()
            await self._reap(self._current)
        if self._resampler is not None:  # a text cut short without cancel() left its tail
            self._resampler.reset()
        epoch = self._epoch
        proc = await self._take_process()
        self._current = proc
        self._counts["texts"] += 1
        finished = False
        try:
            await self._send_text(proc, line)
            wav = _WavReader()
            while True:
                data = await self._read(proc)
                if epoch != self._epoch or self._closed:
                    return  # cancel() ran meanwhile: whatever is left is not this text's
                if not data:
                    break
                pcm = wav.feed(data)
                if pcm is not None and (audio := self._convert(pcm, wav.rate_hz)):
                    yield audio
            if wav.rate_hz is None:
                raise EspeakTtsError(f"espeak-ng gave no audio: {await self._failure(proc)}")
            if (audio := self._flush()):
                yield audio
            finished = True
        finally:
            await self._reap(proc, expected_exit=finished)
        if self.engine.prespawn:
            await self._prepare_spare()  # while this text plays

    async def cancel(self) -> None:
        """Barge-in: kill the text's process (if still there), drop the resampler's tail, and
        have a spare process ready for the next text."""
        self._epoch += 1
        if self._resampler is not None:
            self._resampler.reset()
        if self._current is not None:
            with cleanup_scope(self.engine.reap_timeout_s):
                await self._reap(self._current)
        if self.engine.prespawn:
            await self._prepare_spare()  # the caller's next turn will want a quick answer

    # -- processes ------------------------------------------------------------------------------

    async def _spawn(self) -> trio.Process:
        try:
            proc = await trio.lowlevel.open_process(
                self.argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        except OSError as exc:
            raise EspeakTtsError(f"cannot start espeak-ng: {exc}") from exc
        self._live.add(proc)
        self._counts["spawned"] += 1
        return proc

    async def _prepare_spare(self) -> None:
        if self._spare is not None or self._closed:
            return
        try:
            self._spare = await self._spawn()
        except EspeakTtsError as exc:  # the next text spawns its own and reports the failure
            logger.warning("no spare espeak-ng process: %s", exc)

    async def _take_process(self) -> trio.Process:
        proc, self._spare = self._spare, None
        if proc is not None and proc.poll() is not None:  # the spare died while it waited
            await self._reap(proc)  # (a bad voice: the fresh one below fails and says why)
            proc = None
        if proc is not None:
            self._counts["spare_hits"] += 1
            return proc
        return await self._spawn()

    async def _send_text(self, proc: trio.Process, line: str) -> None:
        assert proc.stdin is not None
        try:
            await proc.stdin.send_all(line.encode() + b"\n")
            await proc.stdin.aclose()  # EOF: synthesize, then exit
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            raise EspeakTtsError(f"espeak-ng did not take the text: {await self._failure(proc)}"
                                 ) from None

    async def _read(self, proc: trio.Process) -> bytes | bytearray:
        assert proc.stdout is not None
        with trio.move_on_after(self.engine.stall_timeout_s):
            try:
                return await proc.stdout.receive_some(READ_BYTES)
            except trio.ClosedResourceError:
                return b""  # reaped by cancel() or the session's end: the caller checks which
        raise EspeakTtsError(f"espeak-ng produced nothing for {self.engine.stall_timeout_s:g}s")

    async def _failure(self, proc: trio.Process) -> str:
        """What a failed process said (its stderr) and its exit status, bounded."""
        said = b""
        with trio.move_on_after(self.engine.reap_timeout_s):
            code = await proc.wait()
            if proc.stderr is not None:
                while len(said) < STDERR_BYTES and (more := await proc.stderr.receive_some()):
                    said += more
            return f"exit status {code}: {said.decode(errors='replace').strip() or '(no message)'}"
        return "(no exit status)"

    async def _reap(self, proc: trio.Process, *, expected_exit: bool = False) -> None:
        """Kill ``proc`` unless it ended on its own, wait for it and close its pipes; shielded
        and bounded, since this runs in cleanup (a closed or cancelled iterator, session end)."""
        if self._current is proc:
            self._current = None
        if proc not in self._live:
            return  # already reaped (by cancel() or the session's end)
        with cleanup_scope(self.engine.reap_timeout_s) as scope:
            if proc.returncode is None and not expected_exit:
                proc.kill()
                self._counts["killed"] += 1
            try:
                with trio.move_on_after(self.engine.reap_timeout_s / 2) as waited:
                    await proc.wait()
                if waited.cancelled_caught:  # it ended its output but will not exit: make it
                    proc.kill()
                    self._counts["killed"] += 1
                    await proc.wait()
            finally:
                for pipe in (proc.stdin, proc.stdout, proc.stderr):
                    if pipe is not None:
                        await pipe.aclose()
        if scope.cancelled_caught:
            logger.error("espeak-ng process %d not reaped within %gs", proc.pid,
                         self.engine.reap_timeout_s)
        else:
            self._live.discard(proc)
            self._counts["reaped"] += 1

    async def _close(self) -> None:
        self._closed = True
        self._current = self._spare = None
        for proc in list(self._live):
            await self._reap(proc)

    # -- audio ----------------------------------------------------------------------------------

    def _convert(self, pcm: np.ndarray, rate_hz: int | None) -> bytes:
        assert rate_hz is not None
        resampler = self._resampler
        if resampler is None or resampler.from_hz != rate_hz:
            resampler = self._resampler = StreamingResampler(rate_hz,
                                                             self.audio_format.sample_rate_hz)
        return self._encode(resampler.process(pcm))

    def _flush(self) -> bytes:
        return b"" if self._resampler is None else self._encode(self._resampler.flush())

    def _encode(self, pcm: np.ndarray) -> bytes:
        if not len(pcm):
            return b""
        audio = self.audio_format.encode(pcm)
        self._counts["audio_bytes"] += len(audio)
        return audio


@attrs.define(eq=False)
class _WavReader:
    """espeak's ``--stdout`` stream: a 44-byte WAV header (checked), then s16le mono samples."""

    rate_hz: int | None = None
    _head: bytes = b""
    _odd: bytes = b""  # half a sample carried to the next read

    def feed(self, data: bytes | bytearray) -> np.ndarray | None:
        if self.rate_hz is None:
            self._head += data
            if len(self._head) < WAV_HEADER_BYTES:
                return None
            header, data = self._head[:WAV_HEADER_BYTES], self._head[WAV_HEADER_BYTES:]
            self.rate_hz = _parse_header(header)
        data = self._odd + data
        whole = len(data) - len(data) % 2
        self._odd = data[whole:]
        return np.frombuffer(data[:whole], dtype="<i2").astype(np.int16)


def _parse_header(header: bytes) -> int:
    """The sample rate of espeak's canonical header (PCM, mono, 16-bit; lengths are ignored)."""
    riff, _, wave, fmt, _, pcm, channels, rate, _, _, bits, data, _ = struct.unpack(
        "<4sI4s4sIHHIIHH4sI", header)
    if (riff, wave, fmt, data) != (b"RIFF", b"WAVE", b"fmt ", b"data") or (
            pcm, channels, bits) != (1, 1, 16):
        raise EspeakTtsError(f"unexpected WAV header from espeak-ng: {header!r}")
    return int(rate)
