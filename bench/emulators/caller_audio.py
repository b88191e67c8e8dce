"""A caller's audio, built offline: speech-like signal, silence, scripted turns, and encoders.

All functions return 8 kHz (by default) mono int16 arrays (:data:`protocols.g711.Pcm16`); encode
them with :func:`encode` (Telnyx codecs) or :func:`encode_for_deepgram` (Deepgram encodings).

:func:`speech_like` is not speech, but it has what our pipeline and the emulators look at: a
voiced harmonic spectrum (100-220 Hz pitch with a slow glide, harmonics shaped by two formant
bumps, all below 3.4 kHz), syllable-rate amplitude modulation (about 4 Hz) whose troughs stay
about 10 dB under the mean level, and an RMS of about -20 dBFS. So an energy VAD at -45 dBFS sees
one continuous utterance, never a gap inside it, while the level still moves like speech.

:func:`espeak_audio` shells out to ``espeak-ng`` for real (robotic) speech when it is installed;
:func:`espeak_available` says whether it is.
"""

from __future__ import annotations

import io
import shutil
import subprocess
import wave
from collections.abc import Sequence
from typing import Final

import numpy as np

from protocols.audio import Codec, resample
from protocols.g711 import Pcm16, alaw_encode, pcm16le_encode, ulaw_encode

__all__ = [
    "SAMPLE_RATE_HZ",
    "SPEECH_LEVEL_DBFS",
    "EspeakUnavailable",
    "encode",
    "encode_for_deepgram",
    "espeak_audio",
    "espeak_available",
    "script_audio",
    "script_spans",
    "silence",
    "speech_like",
]

SAMPLE_RATE_HZ: Final = 8000
#: Mean level of :func:`speech_like`, a normal telephone speech level.
SPEECH_LEVEL_DBFS: Final = -20.0
#: Syllables per second of the amplitude modulation.
SYLLABLE_RATE_HZ: Final = 4.0
_EDGE_S: Final = 0.01  # raised-cosine fade at both ends, so cuts do not click
_FORMANTS_HZ: Final = (600.0, 1700.0)
_ESPEAK_RATE_HZ: Final = 22050
_ESPEAK_TIMEOUT_S: Final = 30.0


def silence(duration_s: float, *, sample_rate: int = SAMPLE_RATE_HZ,
            noise_dbfs: float | None = None, rng: np.random.Generator | None = None) -> Pcm16:
    """``duration_s`` of digital silence, or of white noise at ``noise_dbfs`` (line noise)."""
    count = round(duration_s * sample_rate)
    if noise_dbfs is None:
        return np.zeros(count, dtype=np.int16)
    rng = rng if rng is not None else np.random.default_rng(0)
    noise = rng.standard_normal(count) * 32768.0 * 10 ** (noise_dbfs / 20)
    return np.clip(np.rint(noise), -32768, 32767).astype(np.int16)


def speech_like(duration_s: float, rng: np.random.Generator, *, level_dbfs: float = SPEECH_LEVEL_DBFS,
                sample_rate: int = SAMPLE_RATE_HZ) -> Pcm16:
    """A voiced, syllable-modulated signal of ``duration_s`` at about ``level_dbfs`` RMS."""
    count = round(duration_s * sample_rate)
    if count == 0:
        return np.zeros(0, dtype=np.int16)
    t = np.arange(count) / sample_rate
    f0_start, f0_end = rng.uniform(100.0, 220.0, size=2)
    f0 = np.linspace(f0_start, f0_end, count) * (1 + 0.02 * np.sin(2 * np.pi * 5.5 * t))
    phase = 2 * np.pi * np.cumsum(f0) / sample_rate
    signal = np.zeros(count)
    for k in range(1, 40):
        mean_freq = k * (f0_start + f0_end) / 2
        if mean_freq > 3400:
            break
        gain = 1 / k + sum(np.exp(-(((mean_freq - f) / 250) ** 2)) for f in _FORMANTS_HZ)
        signal += gain * np.sin(k * phase + rng.uniform(0, 2 * np.pi))
    syllable_phase = rng.uniform(0, 2 * np.pi)
    rate = SYLLABLE_RATE_HZ * rng.uniform(0.8, 1.2)
    envelope = 0.65 + 0.35 * np.sin(2 * np.pi * rate * t + syllable_phase)  # troughs 10.5 dB under the peaks
    signal *= envelope
    signal += 0.02 * rng.standard_normal(count) * np.std(signal)  # breath
    edge = min(round(_EDGE_S * sample_rate), count // 2)
    if edge:
        ramp = 0.5 - 0.5 * np.cos(np.linspace(0, np.pi, edge))
        signal[:edge] *= ramp
        signal[-edge:] *= ramp[::-1]
    rms = float(np.sqrt(np.mean(signal**2)))
    if rms > 0:
        signal *= 32768.0 * 10 ** (level_dbfs / 20) / rms
    return np.clip(np.rint(signal), -32768, 32767).astype(np.int16)


def _gap_list(gaps: float | Sequence[float], utterances: int) -> list[float]:
    if isinstance(gaps, int | float):
        return [float(gaps)] * utterances
    gap_list = [float(g) for g in gaps]
    if len(gap_list) == utterances - 1:
        gap_list.append(0.0)
    if len(gap_list) != utterances:
        raise ValueError(f"need {utterances - 1} or {utterances} gaps, got {len(gap_list)}")
    return gap_list


def script_spans(utterance_durations: Sequence[float], gaps: float | Sequence[float],
                 lead_in_s: float = 0.5) -> list[tuple[float, float]]:
    """``(start_s, end_s)`` of each utterance in :func:`script_audio` with the same arguments.

    ``gaps`` is one gap after every utterance, or a list: ``n - 1`` gaps between utterances, or
    ``n`` (the last one trailing silence).
    """
    spans = []
    cursor = lead_in_s
    for duration, gap in zip(utterance_durations, _gap_list(gaps, len(utterance_durations)), strict=True):
        spans.append((cursor, cursor + duration))
        cursor += duration + gap
    return spans


def script_audio(utterance_durations: Sequence[float], gaps: float | Sequence[float],
                 lead_in_s: float = 0.5, *, rng: np.random.Generator | None = None,
                 sample_rate: int = SAMPLE_RATE_HZ, level_dbfs: float = SPEECH_LEVEL_DBFS,
                 noise_dbfs: float | None = None) -> Pcm16:
    """A caller's turns: ``lead_in_s`` of silence, then each utterance followed by its gap.

    Timing as in :func:`script_spans`. ``noise_dbfs`` fills the silences with line noise.
    """
    rng = rng if rng is not None else np.random.default_rng(0)
    parts = [silence(lead_in_s, sample_rate=sample_rate, noise_dbfs=noise_dbfs, rng=rng)]
    for duration, gap in zip(utterance_durations, _gap_list(gaps, len(utterance_durations)), strict=True):
        parts.append(speech_like(duration, rng, level_dbfs=level_dbfs, sample_rate=sample_rate))
        parts.append(silence(gap, sample_rate=sample_rate, noise_dbfs=noise_dbfs, rng=rng))
    return np.concatenate(parts)


def encode(pcm: Pcm16, codec: Codec | str = Codec.PCMU) -> bytes:
    """int16 samples as a Telnyx payload stream (PCMU/PCMA bytes, or big-endian L16)."""
    return (codec if isinstance(codec, Codec) else Codec.from_wire(codec)).encode(pcm)


def encode_for_deepgram(pcm: Pcm16, encoding: str = "mulaw") -> bytes:
    """int16 samples in a Deepgram ``encoding``: ``mulaw``, ``alaw`` or ``linear16`` (little-endian)."""
    encoders = {"mulaw": ulaw_encode, "alaw": alaw_encode, "linear16": pcm16le_encode}
    try:
        return encoders[encoding](pcm)
    except KeyError:
        raise ValueError(f"no encoder for {encoding!r}") from None


class EspeakUnavailable(RuntimeError):
    """``espeak-ng`` (or ``espeak``) is not installed, or failed."""


def _espeak_binary() -> str | None:
    return shutil.which("espeak-ng") or shutil.which("espeak")


def espeak_available() -> bool:
    return _espeak_binary() is not None


def espeak_audio(text: str, voice: str = "es", *, sample_rate: int = SAMPLE_RATE_HZ,
                 words_per_minute: int = 160) -> Pcm16:
    """``text`` spoken by espeak-ng (22.05 kHz WAV on stdout), resampled to ``sample_rate``.

    Blocking (a subprocess): build audio before the run, or call it through ``trio.to_thread``.

    Raises:
        EspeakUnavailable: espeak-ng is not installed or returned an error.
    """
    binary = _espeak_binary()
    if binary is None:
        raise EspeakUnavailable("espeak-ng is not installed")
    try:
        completed = subprocess.run(  # noqa: S603 - fixed binary, text passed as one argument
            [binary, "--stdout", "-v", voice, "-s", str(words_per_minute), text],
            capture_output=True, check=True, timeout=_ESPEAK_TIMEOUT_S,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        raise EspeakUnavailable(f"espeak-ng failed: {exc}") from exc
    with wave.open(io.BytesIO(completed.stdout)) as wav:
        if wav.getsampwidth() != 2 or wav.getnchannels() != 1:
            raise EspeakUnavailable("espeak-ng did not produce 16-bit mono audio")
        rate = wav.getframerate() or _ESPEAK_RATE_HZ
        pcm = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2").astype(np.int16)
    return resample(pcm, rate, sample_rate)
