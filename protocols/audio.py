"""Call audio: the media format, resampling, 20 ms framing and frame energy.

Pure computation (numpy and soxr), no I/O and no clock. The shapes follow STYLE.md: stateless
conversions are functions; the two stateful pieces (:class:`StreamingResampler` and
:class:`FrameChunker`) keep their carry-over in the object and expose ``reset()`` so a barge-in
can drop everything in flight without rebuilding them.

The G.711 and 16-bit PCM byte codecs live in :mod:`protocols.g711` and are re-exported here.
"""

from __future__ import annotations

import enum
import math
from typing import Final

import attrs
import numpy as np
import numpy.typing as npt
import soxr

from protocols.errors import CLOSE_UNSUPPORTED_DATA, LocalProtocolError, RemoteProtocolError
from protocols.g711 import (
    ALAW_SILENCE_BYTE,
    ULAW_SILENCE_BYTE,
    Pcm16,
    alaw_decode,
    alaw_encode,
    l16be_decode,
    l16be_encode,
    pcm16le_decode,
    pcm16le_encode,
    require_pcm16,
    ulaw_decode,
    ulaw_encode,
)

__all__ = [
    "ALAW_SILENCE_BYTE",
    "FRAME_MS",
    "L16_16K",
    "PCMA_8K",
    "PCMU_8K",
    "RESAMPLE_QUALITY",
    "SILENCE_THRESHOLD_DBFS",
    "ULAW_SILENCE_BYTE",
    "Codec",
    "FrameChunker",
    "AudioFormat",
    "Pcm16",
    "ResamplerStatistics",
    "StreamingResampler",
    "alaw_decode",
    "alaw_encode",
    "frame_rms_dbfs",
    "is_silent",
    "l16be_decode",
    "l16be_encode",
    "pcm16le_decode",
    "pcm16le_encode",
    "resample",
    "ulaw_decode",
    "ulaw_encode",
]

#: The telephony packet time: Telnyx sends (and we send back) 20 ms of audio per media frame.
FRAME_MS: Final = 20

#: soxr recipe for speech. 'MQ' has the same passband as 'HQ' for telephony (flat to 3.6 kHz,
#: -2.7 dB at 3.8 kHz when the output is 8 kHz) and the same stopband (> 85 dB, the int16
#: floor), with 10 ms of filter delay instead of 12.5 ms. 'LQ' is -8 dB at 3.4 kHz: too dull.
RESAMPLE_QUALITY: Final = "MQ"

#: Default for :func:`is_silent`: digital silence and codec idle patterns, not a VAD.
#: A-law "silence" (0xD5) decodes to ±8, which is -72.2 dBFS, so the floor must sit above that.
SILENCE_THRESHOLD_DBFS: Final = -60.0


class Codec(enum.Enum):
    """A media encoding, by the name Telnyx uses for it in ``media_format.encoding``."""

    PCMU = "PCMU"
    PCMA = "PCMA"
    L16 = "L16"

    @classmethod
    def from_wire(cls, name: str) -> Codec:
        """The codec a peer named (case-insensitive); :class:`RemoteProtocolError` if unknown."""
        try:
            return cls(name.upper())
        except (ValueError, AttributeError):
            raise RemoteProtocolError(
                f"unsupported audio encoding {name!r} (expected PCMU, PCMA or L16)",
                close_code=CLOSE_UNSUPPORTED_DATA,
            ) from None

    @property
    def bytes_per_sample(self) -> int:
        return 2 if self is Codec.L16 else 1

    @property
    def silence_sample(self) -> bytes:
        """One sample of digital silence in this encoding."""
        if self is Codec.PCMU:
            return bytes([ULAW_SILENCE_BYTE])
        if self is Codec.PCMA:
            return bytes([ALAW_SILENCE_BYTE])
        return b"\x00\x00"

    def decode(self, payload: bytes | bytearray | memoryview) -> Pcm16:
        """Payload bytes as received to int16 samples. Odd-length L16 → RemoteProtocolError."""
        if self is Codec.PCMU:
            return ulaw_decode(payload)
        if self is Codec.PCMA:
            return alaw_decode(payload)
        return l16be_decode(payload)

    def encode(self, pcm: Pcm16) -> bytes:
        """int16 samples to payload bytes. Anything but 1-D int16 → LocalProtocolError."""
        if self is Codec.PCMU:
            return ulaw_encode(pcm)
        if self is Codec.PCMA:
            return alaw_encode(pcm)
        return l16be_encode(pcm)


def _require_rate(name: str, value: object) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise LocalProtocolError(f"{name} must be a positive int of Hz, got {value!r}")


def _check_rate(instance: object, attribute: attrs.Attribute[int], value: int) -> None:
    _require_rate(attribute.name, value)


@attrs.frozen
class AudioFormat:
    """A call leg's audio: encoding plus sample rate (mono). G.711 is 8 kHz by definition.

    Not the wire model: ``protocols.telnyx_media.MediaFormat`` is what Telnyx said;
    :meth:`from_wire` turns its (normalised) encoding and rate into this, or refuses.
    """

    codec: Codec
    sample_rate_hz: int = attrs.field(default=8000, validator=_check_rate)

    def __attrs_post_init__(self) -> None:
        if self.codec is not Codec.L16 and self.sample_rate_hz != 8000:
            raise LocalProtocolError(
                f"{self.codec.value} is 8000 Hz only, not {self.sample_rate_hz} Hz"
            )

    @classmethod
    def from_wire(cls, encoding: str, sample_rate_hz: int) -> AudioFormat:
        """The format a peer announced; :class:`RemoteProtocolError` if we cannot play it."""
        codec = Codec.from_wire(encoding)
        try:
            return cls(codec, sample_rate_hz)
        except LocalProtocolError as exc:
            raise RemoteProtocolError(exc.reason, close_code=CLOSE_UNSUPPORTED_DATA) from None

    def samples_per_frame(self, frame_ms: int = FRAME_MS) -> int:
        """Samples in ``frame_ms``; LocalProtocolError unless that is a whole positive number."""
        if not isinstance(frame_ms, int) or frame_ms <= 0:
            raise LocalProtocolError(f"frame_ms must be a positive int, got {frame_ms!r}")
        samples, remainder = divmod(self.sample_rate_hz * frame_ms, 1000)
        if remainder:
            raise LocalProtocolError(
                f"{frame_ms} ms at {self.sample_rate_hz} Hz is not a whole number of samples"
            )
        return samples

    def bytes_per_frame(self, frame_ms: int = FRAME_MS) -> int:
        return self.samples_per_frame(frame_ms) * self.codec.bytes_per_sample

    @property
    def bytes_per_20ms(self) -> int:
        """160 for G.711, 640 for L16 at 16 kHz."""
        return self.bytes_per_frame(FRAME_MS)

    def silence_frame(self, frame_ms: int = FRAME_MS) -> bytes:
        """A whole frame of digital silence (0xFF… mu-law, 0xD5… A-law, zeros for L16)."""
        return self.codec.silence_sample * self.samples_per_frame(frame_ms)

    def decode(self, payload: bytes | bytearray | memoryview) -> Pcm16:
        return self.codec.decode(payload)

    def encode(self, pcm: Pcm16) -> bytes:
        return self.codec.encode(pcm)


PCMU_8K: Final = AudioFormat(Codec.PCMU, 8000)
PCMA_8K: Final = AudioFormat(Codec.PCMA, 8000)
L16_16K: Final = AudioFormat(Codec.L16, 16000)


# --- resampling -----------------------------------------------------------------------------


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
    _require_rate("from_hz", from_hz)
    _require_rate("to_hz", to_hz)
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

    from_hz: int = attrs.field(validator=_check_rate)
    to_hz: int = attrs.field(validator=_check_rate)
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


# --- framing --------------------------------------------------------------------------------


@attrs.define(eq=False)
class FrameChunker:
    """Cuts an encoded byte stream of any chunking into exact, equal frames, carrying the rest.

    ``feed()`` returns the frames completed so far (possibly none) and keeps the remainder;
    ``flush()`` ends the stream, padding the tail with the codec's silence to a whole frame;
    ``reset()`` (barge-in) drops the remainder. Frames are 20 ms by default; outbound batching
    can ask for any whole multiple (40, 60, 100 ms ...). Build one with :meth:`for_format`.
    """

    frame_bytes: int
    silence_sample: bytes
    _pending: bytearray = attrs.field(init=False, factory=bytearray)

    def __attrs_post_init__(self) -> None:
        width = len(self.silence_sample)
        if width == 0 or self.frame_bytes <= 0 or self.frame_bytes % width:
            raise LocalProtocolError(
                f"frame of {self.frame_bytes} bytes is not whole {width}-byte samples"
            )

    @classmethod
    def for_format(cls, audio_format: AudioFormat, frame_ms: int = FRAME_MS) -> FrameChunker:
        return cls(audio_format.bytes_per_frame(frame_ms), audio_format.codec.silence_sample)

    @property
    def pending_bytes(self) -> int:
        """Bytes held towards the next frame (always less than ``frame_bytes``)."""
        return len(self._pending)

    def feed(self, data: bytes | bytearray | memoryview) -> list[bytes]:
        """Add bytes; return every frame now complete, oldest first."""
        if not isinstance(data, bytes | bytearray | memoryview):
            raise LocalProtocolError(f"FrameChunker.feed takes bytes, got {type(data).__name__}")
        size = self.frame_bytes
        if len(self._pending) + len(data) < size:
            self._pending += data
            return []
        self._pending += data
        buffered = bytes(self._pending)
        whole = len(buffered) - len(buffered) % size
        self._pending = bytearray(buffered[whole:])
        return [buffered[i : i + size] for i in range(0, whole, size)]

    def flush(self, *, pad: bool = True) -> bytes | None:
        """End of stream: the tail as one last frame (silence-padded unless ``pad=False``).

        Returns None when nothing is pending. A tail that is not whole samples (an odd byte of
        L16) means our producer broke the stream: :class:`LocalProtocolError`, and the tail is
        dropped so the chunker is usable again.
        """
        tail, self._pending = bytes(self._pending), bytearray()
        if not tail:
            return None
        width = len(self.silence_sample)
        if len(tail) % width:
            raise LocalProtocolError(f"stream ended mid-sample: {len(tail)} bytes left over")
        if not pad:
            return tail
        return tail + self.silence_sample * ((self.frame_bytes - len(tail)) // width)

    def reset(self) -> int:
        """Barge-in: drop the pending tail; returns how many bytes were dropped."""
        dropped = len(self._pending)
        self._pending = bytearray()
        return dropped


# --- energy ---------------------------------------------------------------------------------


def frame_rms_dbfs(pcm: Pcm16) -> float:
    """RMS level of int16 samples in dBFS: ``20 log10(rms / 32768)``.

    0 dBFS is a full-scale square wave, so a full-scale sine reads -3.01 dBFS. All-zero (and
    empty) input returns ``-inf``: there is no floor to tune, and ``-inf < threshold`` is True
    for any threshold. The quietest non-zero frame (one ±1 sample in 160) is about -112 dBFS.
    """
    require_pcm16(pcm, "frame_rms_dbfs input")
    if len(pcm) == 0:
        return -math.inf
    samples = pcm.astype(np.float64)
    mean_square = float(np.dot(samples, samples)) / len(samples)
    if mean_square == 0.0:
        return -math.inf
    return 10.0 * math.log10(mean_square / (32768.0 * 32768.0))


def is_silent(
    payload: bytes | bytearray | memoryview,
    codec: Codec | AudioFormat,
    threshold_dbfs: float = SILENCE_THRESHOLD_DBFS,
) -> bool:
    """Whether an encoded frame is quieter than ``threshold_dbfs`` (an energy gate, not a VAD)."""
    return frame_rms_dbfs(codec.decode(payload)) < threshold_dbfs
