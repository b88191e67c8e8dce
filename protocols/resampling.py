"""Resampling int16 audio with soxr: a whole buffer (:func:`resample`) or a stream chunk by chunk.

Pure computation, no I/O and no clock. Re-exported by :mod:`protocols.audio`.
"""

from __future__ import annotations

from typing import Final

import attrs
import numpy as np
import numpy.typing as npt
import soxr

from protocols.errors import LocalProtocolError
from protocols.g711 import Pcm16, require_pcm16

__all__ = [
    "RESAMPLE_QUALITY",
    "ResamplerStatistics",
    "StreamingResampler",
    "check_rate",
    "require_rate",
    "resample",
]

#: soxr recipe for speech. 'MQ' has the same passband as 'HQ' for telephony (flat to 3.6 kHz,
#: -2.7 dB at 3.8 kHz when the output is 8 kHz) and the same stopband (> 85 dB, the int16
#: floor), with 10 ms of filter delay instead of 12.5 ms. 'LQ' is -8 dB at 3.4 kHz: too dull.
RESAMPLE_QUALITY: Final = "MQ"


def require_rate(name: str, value: object) -> None:
    """LocalProtocolError unless ``value`` is a positive int (Hz)."""
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise LocalProtocolError(f"{name} must be a positive int of Hz, got {value!r}")


def check_rate(instance: object, attribute: attrs.Attribute[int], value: int) -> None:
    """:func:`require_rate` as an attrs validator."""
    require_rate(attribute.name, value)


def resample(pcm: Pcm16, from_hz: int, to_hz: int, *, quality: str = RESAMPLE_QUALITY) -> Pcm16:
    """Resample a whole int16 buffer (a finished TTS sentence, a test fixture) in one go.

    soxr's one-shot mode removes the filter delay, so output sample ``k`` lines up with input
    time ``k / to_hz``; the length is ``len(pcm) * to_hz / from_hz`` rounded (±1). Samples that
    overshoot after filtering (Gibbs ringing on full-scale input) are clipped to int16. Equal
    rates return a copy.

    soxr runs in float32 here and we round to int16 ourselves: soxr's own int16 output adds
    TPDF dither (±1 LSB), which would turn digital silence into noise and make streaming and
    one-shot output differ. Done this way, they are bit-identical and silence stays zero.
    """
    require_pcm16(pcm, "resample input")
    require_rate("from_hz", from_hz)
    require_rate("to_hz", to_hz)
    if from_hz == to_hz:
        return pcm.copy()
    try:
        out = soxr.resample(pcm.astype(np.float32), from_hz, to_hz, quality=quality)
    except ValueError as exc:  # unknown quality name
        raise LocalProtocolError(f"bad resampler setting: {exc}") from None
    return _to_int16(out)[0]


def _to_int16(samples: npt.NDArray[np.float32]) -> tuple[Pcm16, int]:
    """Round float samples to int16 in place-ish; also return how many had to be clipped."""
    np.rint(samples, out=samples)
    clipped = int(np.count_nonzero((samples > 32767.0) | (samples < -32768.0)))
    if clipped:
        np.clip(samples, -32768.0, 32767.0, out=samples)
    return samples.astype(np.int16), clipped


_NO_SAMPLES: Final = np.zeros(0, dtype=np.float32)


@attrs.frozen
class ResamplerStatistics:
    """Counters since construction or the last :meth:`StreamingResampler.reset`."""

    samples_in: int
    samples_out: int
    clipped: int


@attrs.define(eq=False)
class StreamingResampler:
    """One audio stream resampled chunk by chunk (soxr ``ResampleStream``), int16 in and out.

    The concatenation of every :meth:`process` output plus :meth:`flush` equals :func:`resample`
    of the concatenated input exactly (default mode), however the input was chunked. Call :meth:`flush` at the
    end of a stream (end of a TTS utterance) to get the tail the filter still holds; call
    :meth:`reset` on barge-in to drop it instead. Either way the object is ready for a new
    stream.

    Latency (measured, 20 ms chunks, see bench/bench_audio.py): soxr compensates its filter
    delay, so nothing is shifted in time, but it works in blocks and holds output back until a
    block is full. With ``low_latency=False`` (default) the audio withheld varies between about
    10 ms (the filter delay) and 118 ms (8k↔16k; 75-82 ms for 24k/22.05k→8k), 64 and 43-46 ms
    on average. For bursty input (TTS runs far faster than real time) that only shows as the tail
    :meth:`flush` returns. For paced input (the caller's audio) set ``low_latency=True``: it
    uses libsoxr's variable-rate engine (python-soxr calls it experimental), which holds a
    steady 25-30 ms, at 2-3x the CPU (11-20 µs per 20 ms chunk against 6), flat to 3.6 kHz
    with the same stopband; its output trails :func:`resample` by about 2 output samples, so
    the exact-equality promise above is for the default mode only.
    """

    from_hz: int = attrs.field(validator=check_rate)
    to_hz: int = attrs.field(validator=check_rate)
    quality: str = RESAMPLE_QUALITY
    low_latency: bool = False
    _stream: soxr.ResampleStream | None = attrs.field(init=False, default=None)
    _samples_in: int = attrs.field(init=False, default=0)
    _samples_out: int = attrs.field(init=False, default=0)
    _clipped: int = attrs.field(init=False, default=0)

    def __attrs_post_init__(self) -> None:
        if self.from_hz != self.to_hz:
            try:
                self._stream = soxr.ResampleStream(
                    self.from_hz, self.to_hz, 1, dtype="float32", quality=self.quality,
                    vr=self.low_latency,
                )
            except ValueError as exc:  # unknown quality name
                raise LocalProtocolError(f"bad resampler setting: {exc}") from None

    def process(self, pcm: Pcm16) -> Pcm16:
        """Feed a chunk (any length, including 0); returns whatever output is ready (maybe 0)."""
        require_pcm16(pcm, "StreamingResampler.process input")
        self._samples_in += len(pcm)
        if self._stream is None:
            out = pcm.copy()
        else:
            out, clipped = _to_int16(self._stream.resample_chunk(pcm.astype(np.float32)))
            self._clipped += clipped
        self._samples_out += len(out)
        return out

    def flush(self) -> Pcm16:
        """End of stream: return the held-back tail, then start afresh (counters are kept)."""
        if self._stream is None:
            return np.zeros(0, dtype=np.int16)
        out, clipped = _to_int16(self._stream.resample_chunk(_NO_SAMPLES, last=True))
        self._stream.clear()
        self._samples_out += len(out)
        self._clipped += clipped
        return out

    def reset(self) -> None:
        """Barge-in: forget every sample fed so far, so none of it can come out later."""
        if self._stream is not None:
            self._stream.clear()
        self._samples_in = self._samples_out = self._clipped = 0

    def statistics(self) -> ResamplerStatistics:
        return ResamplerStatistics(self._samples_in, self._samples_out, self._clipped)

