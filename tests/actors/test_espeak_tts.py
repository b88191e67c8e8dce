"""EspeakTts with the real espeak-ng program (real time: the processes do not run on trio's clock).

Skipped, saying why, where espeak-ng is not installed (``make system-deps`` installs it).
Whether processes are reaped is checked at the OS level: this process's espeak-ng children,
read from ``/proc``, must be gone (not even zombies) once a session has closed.
"""

from __future__ import annotations

import os
import shutil
import signal
import stat
import sys
from contextlib import aclosing
from pathlib import Path

import attrs
import numpy as np
import pytest
import trio

from actors.espeak_tts import EspeakSession, EspeakTts, EspeakTtsError, sanitise_text
from actors.messages import CallInfo, ClearPlayback, ReplyAudioStarted, Speak
from actors.speaker import Speaker
from protocols.audio import L16_16K, PCMA_8K, PCMU_8K, AudioFormat, Codec, frame_rms_dbfs
from protocols.telnyx_media import MediaOut, decode_outbound
from tests.actors.harness import open_actor

needs_espeak = pytest.mark.skipif(
    shutil.which("espeak-ng") is None,
    reason="espeak-ng is not installed (Debian/Ubuntu: apt-get install espeak-ng, or "
           "make system-deps)")

SHORT = "Okay."
SENTENCE = "Your balance is one hundred and twenty dollars."
PARAGRAPH = ("We are open from nine in the morning to six in the evening, Monday to Friday, and "
             "from ten to two on Saturdays. On public holidays the office is closed, but you can "
             "still check your balance on this line at any time of the day or night.")


async def say(session: EspeakSession, text: str, *, stop_after: int | None = None) -> bytes:
    audio = bytearray()
    async with aclosing(session.synthesize(text)) as pieces:
        async for data in pieces:
            audio += data
            if stop_after is not None and len(audio) >= stop_after:
                break
    return bytes(audio)


async def say_alone(text: str, audio_format: AudioFormat = PCMU_8K, **kwargs: object) -> bytes:
    async with EspeakTts(**kwargs).open_session(audio_format) as session:  # type: ignore[arg-type]
        return await say(session, text)


def seconds(audio: bytes, audio_format: AudioFormat = PCMU_8K) -> float:
    return len(audio_format.decode(audio)) / audio_format.sample_rate_hz


def espeak_children() -> list[tuple[int, str]]:
    """(pid, state) of this process's espeak-ng children, zombies included."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat_line = (entry / "stat").read_text()
        except OSError:
            continue  # gone meanwhile
        comm_end = stat_line.rindex(")")
        comm = stat_line[stat_line.index("(") + 1 : comm_end]
        state, ppid = stat_line[comm_end + 2 :].split()[:2]
        if int(ppid) == os.getpid() and comm.startswith("espeak"):
            found.append((int(entry.name), state))
    return found


# -- text handling (no espeak needed) ------------------------------------------------------------

def test_sanitise_text_makes_one_safe_line() -> None:
    assert sanitise_text("Hola,\n¿qué\ttal?\x00\x1b[31m \u200b") == "Hola, ¿qué tal? [31m"
    assert sanitise_text("say [[h@'loU]] now") == "say [ [h@'loU]] now"
    assert sanitise_text("  \n\x07 ") == ""
    assert sanitise_text("one two three four", max_chars=12) == "one two"
    assert sanitise_text("abcdefghijklmnop", max_chars=5) == "abcde"


def test_voice_names_are_checked_and_languages_mapped() -> None:
    with pytest.raises(ValueError, match="voice"):
        EspeakTts(voice="--help")
    assert EspeakTts.for_language("en").voice == "en-us"
    assert EspeakTts.for_language("es").voice == "es"
    assert EspeakTts.for_language("es_419").voice == "es-419"
    argv = EspeakTts.for_language("es", words_per_minute=160).command("/usr/bin/espeak-ng")
    assert argv == ["/usr/bin/espeak-ng", "-v", "es", "-a", "60", "-b", "1", "-s", "160",
                    "--stdout"]


async def test_missing_program_is_a_clear_error() -> None:
    with pytest.raises(EspeakTtsError, match="not found on PATH.*apt-get install espeak-ng"):
        async with EspeakTts(executable="espeak-ng-not-installed").open_session(PCMU_8K):
            pass


# -- with espeak-ng ------------------------------------------------------------------------------

@needs_espeak
async def test_audio_length_follows_the_text_at_speech_rate() -> None:
    async with EspeakTts().open_session(PCMU_8K) as session:
        short, long = await say(session, SHORT), await say(session, PARAGRAPH)
    words = len(PARAGRAPH.split())
    assert 0.2 < seconds(short) < 1.5
    # espeak speaks 175 words a minute by default (0.34 s a word), plus pauses at commas.
    assert 0.25 * words < seconds(long) < 0.6 * words
    assert seconds(long) > 8 * seconds(short)


@needs_espeak
async def test_first_audio_is_quick_and_comes_before_the_end() -> None:
    async with EspeakTts().open_session(PCMU_8K) as session:
        await trio.sleep(0.2)  # the previous reply playing: the spare process is ready
        begun = trio.current_time()
        arrivals = []
        async with aclosing(session.synthesize(PARAGRAPH)) as pieces:
            async for data in pieces:
                arrivals.append((trio.current_time() - begun, len(data)))
    first_s = arrivals[0][0]
    assert first_s < 0.150, f"first audio after {first_s * 1000:.1f} ms"
    assert len(arrivals) > 3  # streamed as espeak writes it, not in one piece at the end
    print(f"\nfirst audio {first_s * 1000:.1f} ms, all {arrivals[-1][0] * 1000:.1f} ms, "
          f"{len(arrivals)} pieces")


@needs_espeak
@pytest.mark.parametrize("audio_format", [PCMU_8K, PCMA_8K, L16_16K],
                         ids=lambda f: f"{f.codec.value}-{f.sample_rate_hz}")
async def test_audio_is_speech_in_the_call_codec(audio_format: AudioFormat) -> None:
    audio = await say_alone(SENTENCE, audio_format)
    reference = AudioFormat(Codec.L16, audio_format.sample_rate_hz)
    linear = reference.decode(await say_alone(SENTENCE, reference))
    pcm = audio_format.decode(audio)
    assert len(audio) == len(linear) * audio_format.codec.bytes_per_sample
    assert 2.0 < seconds(audio, audio_format) < 5.0
    assert frame_rms_dbfs(pcm) > -40.0  # speech, not silence or noise
    assert np.abs(pcm).max() < 32767 * 0.9  # -a 60: no clipping
    # Decoded, it is the same waveform as the linear rendering: the right codec was applied.
    correlation = np.corrcoef(pcm.astype(float), linear.astype(float))[0, 1]
    assert correlation > 0.99


@needs_espeak
async def test_spanish_voices_speak() -> None:
    for language in ("es", "es-419"):
        audio = await say_alone("Buenos días, ¿en qué puedo ayudarle?",
                                voice=EspeakTts.for_language(language).voice)
        assert 1.0 < seconds(audio) < 4.0 and frame_rms_dbfs(PCMU_8K.decode(audio)) > -40.0


@needs_espeak
async def test_cancel_mid_sentence_stops_and_the_next_text_is_clean() -> None:
    reference = await say_alone(SHORT)
    full = await say_alone(PARAGRAPH)
    async with EspeakTts().open_session(PCMU_8K) as session:
        heard = bytearray()
        with trio.CancelScope() as turn:  # the Speaker's turn, cancelled by a barge-in
            async with aclosing(session.synthesize(PARAGRAPH)) as pieces:
                async for data in pieces:
                    heard += data
                    if len(heard) >= 4000:
                        turn.cancel()
                        await trio.sleep(1)  # never wakes: cancelled at once
        await session.cancel()
        assert len(espeak_children()) == 1  # the cut text's process is gone; a spare waits
        after = await say(session, SHORT)
        stats = session.statistics()
    assert turn.cancelled_caught
    assert 4000 <= len(heard) < len(full) / 2
    assert after == reference  # exactly its own audio: no tail of the cut text, no filter state
    assert stats.killed == 1 and stats.texts == 2
    assert espeak_children() == []


@needs_espeak
async def test_an_abandoned_iterator_without_cancel_leaks_nothing() -> None:
    reference = await say_alone(SHORT)
    async with EspeakTts().open_session(PCMU_8K) as session:
        await say(session, PARAGRAPH, stop_after=2000)  # closed early, no cancel()
        assert await say(session, SHORT) == reference


@needs_espeak
async def test_cancel_while_an_iterator_is_suspended_ends_it_quietly() -> None:
    async with EspeakTts().open_session(PCMU_8K) as session:
        pieces = session.synthesize(PARAGRAPH)
        async with aclosing(pieces):
            assert await anext(pieces)
            await session.cancel()  # a consumer that did not close its iterator first
            assert [data async for data in pieces] == []
        assert len(espeak_children()) == 1  # only the spare
    assert espeak_children() == []


@needs_espeak
async def test_a_spare_that_died_is_replaced() -> None:
    reference = await say_alone(SHORT)
    async with EspeakTts().open_session(PCMU_8K) as session:
        [(spare, _)] = espeak_children()
        os.kill(spare, signal.SIGKILL)
        await trio.sleep(0.1)  # it died a while before the next text
        assert await say(session, SHORT) == reference
        stats = session.statistics()
    assert stats.spare_hits == 0 and stats.spawned == 3  # spare, its replacement, next spare
    assert espeak_children() == []


@needs_espeak
@pytest.mark.parametrize("text", ["-v xx-bogus --help", "--version", "-w {out} hello"])
async def test_text_that_looks_like_options_is_spoken(text: str, tmp_path: Path) -> None:
    out = tmp_path / "out.wav"
    audio = await say_alone(text.format(out=out))
    assert seconds(audio) > 0.5 and frame_rms_dbfs(PCMU_8K.decode(audio)) > -40.0
    assert not out.exists()


@needs_espeak
async def test_phoneme_escape_is_read_as_text() -> None:
    escaped = await say_alone("[[h@'loU]]")
    assert seconds(escaped) > seconds(await say_alone("hello")) + 0.3  # symbols spelt out


@needs_espeak
@pytest.mark.parametrize("prespawn", [True, False])
async def test_processes_are_reaped_when_the_session_closes(prespawn: bool) -> None:
    async with EspeakTts(prespawn=prespawn).open_session(PCMU_8K) as session:
        assert len(espeak_children()) == int(prespawn)  # the spare, waiting
        await say(session, SENTENCE)
        await say(session, PARAGRAPH, stop_after=1000)
    assert espeak_children() == []
    stats = session.statistics()
    assert stats.reaped == stats.spawned == 2  # with prespawn: the spare at open, after 1st
    assert stats.spare_hits == (2 if prespawn else 0)


@needs_espeak
async def test_processes_are_reaped_when_the_call_is_cancelled() -> None:
    with trio.move_on_after(0.5) as deadline:
        async with EspeakTts(stall_timeout_s=60).open_session(PCMU_8K) as session:
            while True:  # texts back to back: cancelled mid-synthesis or mid-spawn
                await say(session, PARAGRAPH)
    assert deadline.cancelled_caught
    assert espeak_children() == []
    assert session.statistics().reaped == session.statistics().spawned


@needs_espeak
async def test_a_bad_voice_fails_with_espeaks_own_message() -> None:
    async with EspeakTts(voice="xx-bogus").open_session(PCMU_8K) as session:
        with pytest.raises(EspeakTtsError, match="does not exist"):
            await say(session, SHORT)
    assert espeak_children() == []


async def test_a_stalled_program_is_killed_and_reported(tmp_path: Path) -> None:
    program = tmp_path / "stuck-tts"
    program.write_text(f"#!{sys.executable}\nimport time\ntime.sleep(30)\n")
    program.chmod(program.stat().st_mode | stat.S_IXUSR)
    tts = EspeakTts(executable=str(program), stall_timeout_s=0.3)
    async with tts.open_session(PCMU_8K) as session:
        with trio.fail_after(3), pytest.raises(EspeakTtsError, match="produced nothing"):
            await say(session, SHORT)
        assert session.statistics().killed == 1
    assert session.statistics().reaped == session.statistics().spawned == 1


# -- through the Speaker ---------------------------------------------------------------------------

@attrs.define(eq=False)
class RecordingSocket:
    """A MediaSocket that keeps what the Speaker sends (no mark echoes)."""

    sent: list[object] = attrs.field(factory=list)

    async def receive(self) -> str | bytes | None:
        await trio.sleep_forever()

    async def send(self, text: str) -> None:
        self.sent.append(decode_outbound(text))

    async def close(self, code: int, reason: str = "") -> None:
        pass

    def audio(self) -> bytes:
        return b"".join(m.payload for m in self.sent if isinstance(m, MediaOut))


@needs_espeak
async def test_the_speaker_plays_espeak_and_barge_in_kills_synthesis() -> None:
    call = CallInfo(call_id="c1", call_control_id="v3:c1", stream_id="s1", audio_format=PCMU_8K,
                    started_at=trio.current_time())
    socket = RecordingSocket()
    speaker = Speaker(call, EspeakTts(), socket)
    async with open_actor(speaker.run, outputs=("reports_out",)) as actor:
        await trio.sleep(0.1)
        asked = trio.current_time() - call.started_at
        await actor.feed([Speak("r1", "t-1", 0, PARAGRAPH, last=True)])
        started = await actor.wait_for("reports_out", lambda r: isinstance(r, ReplyAudioStarted))
        await trio.sleep(0.5)
        await actor.feed([ClearPlayback("caller spoke")])
        await trio.sleep(0.3)
        assert len(espeak_children()) <= 1  # the spare at most: the cut text's process is gone
    assert started.tts_first_audio_s - asked < 0.150
    heard = socket.audio()
    assert 0.5 < seconds(heard) < 2.0  # paced in real time, then cut
    assert frame_rms_dbfs(PCMU_8K.decode(heard)) > -40.0
    assert espeak_children() == []


# -- the WAV stream, split anywhere (no espeak needed) ---------------------------------------------

def test_wav_stream_split_at_any_byte_keeps_every_sample() -> None:
    from actors.espeak_tts import _WavReader

    samples = np.arange(-500, 501, 7, dtype=np.int16)
    header = (b"RIFF\x24\xf0\xff\x7fWAVEfmt \x10\x00\x00\x00\x01\x00\x01\x00\x22\x56\x00\x00"
              b"\x44\xac\x00\x00\x02\x00\x10\x00data\x00\xf0\xff\x7f")
    stream = header + samples.astype("<i2").tobytes()
    for size in (1, 2, 3, 43, 44, 45, 101):
        reader, out = _WavReader(), []
        for offset in range(0, len(stream), size):
            pcm = reader.feed(stream[offset : offset + size])
            if pcm is not None:
                out.append(pcm)
        assert reader.rate_hz == 22050
        assert np.array_equal(np.concatenate(out), samples), size


def test_a_stream_that_is_not_espeaks_wav_is_refused() -> None:
    from actors.espeak_tts import _WavReader

    with pytest.raises(EspeakTtsError, match="unexpected WAV header"):
        _WavReader().feed(b"Usage: espeak-ng [options] [words]\n" + b" " * 20)
