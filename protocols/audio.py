"""Call audio: the media format, resampling, 20 ms framing and frame energy.

Pure computation (numpy and soxr), no I/O and no clock. The shapes follow STYLE.md: stateless
conversions are functions; the two stateful pieces (:class:`StreamingResampler` and
:class:`FrameChunker`) keep their carry-over in the object and expose ``reset()`` so a barge-in
can drop everything in flight without rebuilding them.

The G.711 and 16-bit PCM byte codecs live in :mod:`protocols.g711` and resampling in
:mod:`protocols.resampling`; both are re-exported here.
"""

from __future__ import annotations

import enum
import math
from typing import Final

import attrs
import numpy as np

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
from protocols.resampling import (
    RESAMPLE_QUALITY,
    ResamplerStatistics,
    StreamingResampler,
    check_rate,
    resample,
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


@attrs.frozen
class AudioFormat:
    """A call leg's audio: encoding plus sample rate (mono). G.711 is 8 kHz by definition.

    Not the wire model: ``protocols.telnyx_media.MediaFormat`` is what Telnyx said;
    :meth:`from_wire` turns its (normalised) encoding and rate into this, or refuses.
    """

    codec: Codec
    sample_rate_hz: int = attrs.field(default=8000, validator=check_rate)

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
