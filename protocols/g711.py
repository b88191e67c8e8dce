"""G.711 mu-law and A-law, and 16-bit linear PCM byte orders, as numpy lookups (no ``audioop``).

``audioop`` left the stdlib in Python 3.13 and its PyPI replacement (audioop-lts) needs 3.13, so
the codecs here are lookup tables built once at import *from the algorithm*: a 256-entry decode
table per law and a 65536-entry encode table indexed by the int16 sample viewed as uint16. One
fancy-index per frame is all a call costs (about 1-2 µs per 20 ms frame, see bench/bench_audio.py).

What "bit-exact" means here:

- Decoding is the G.711 tables, exactly (the same values as Sun's g711.c, ITU G.191 and
  ``audioop.ulaw2lin``/``alaw2lin``), scaled to 16 bits: mu-law peaks at ±32124, A-law at ±32256.
- A-law encoding is Sun g711.c ``linear2alaw``, which is also the ITU G.191 STL encoder
  (negative samples quantised by one's complement, so the law is symmetric).
- mu-law encoding is Sun g711.c ``linear2ulaw`` in its classic form: sign-magnitude on the
  16-bit sample, BIAS 0x84, CLIP 32635. For every non-negative sample this equals G.191 and
  ``audioop.lin2ulaw``. G.711 leaves the exact decision boundaries to the implementation, and
  the three disagree only on *negative* inputs sitting exactly on a boundary: 127 of 65536
  against G.191 (one's complement), 381 against audioop (a flooring ``>> 2``). Each picks the
  adjacent code, which every decoder accepts; only byte-exact test vectors can tell.
- mu-law has two zeros: 0xFF (+0, what the encoder emits for 0 .. 3) and 0x7F (-0, emitted
  for -1 .. -3). Both decode to 0, so 0x7F is the one code that does not survive
  decode-then-encode (it comes back as 0xFF). A-law has no zero: 0xD5/0x55 decode to +8/-8.

Byte orders: Telnyx L16 is network byte order (big-endian, RFC 3551 §4.5.11); numpy, soxr and
most engines want native little-endian. Both directions are here, each returning a fresh array.

Errors: decoders take what a peer sent and raise :class:`RemoteProtocolError` for a byte count
that cannot be whole samples; encoders take what our code built and raise
:class:`LocalProtocolError` for anything but a 1-D int16 array.
"""

from __future__ import annotations

from typing import Final

import numpy as np
import numpy.typing as npt

from protocols.errors import CLOSE_INVALID_PAYLOAD, LocalProtocolError, RemoteProtocolError

__all__ = [
    "ALAW_SILENCE_BYTE",
    "ULAW_SILENCE_BYTE",
    "Pcm16",
    "alaw_decode",
    "alaw_encode",
    "l16be_decode",
    "l16be_encode",
    "pcm16le_decode",
    "pcm16le_encode",
    "require_pcm16",
    "ulaw_decode",
    "ulaw_encode",
]

#: A 1-D array of signed 16-bit linear samples, the one sample type every function here speaks.
Pcm16 = npt.NDArray[np.int16]

#: The byte each law sends for digital silence. mu-law 0xFF decodes to 0; A-law 0xD5 decodes
#: to +8 (A-law has no zero code: its smallest levels are ±8 on the 16-bit scale).
ULAW_SILENCE_BYTE: Final = 0xFF
ALAW_SILENCE_BYTE: Final = 0xD5

ULAW_BIAS: Final = 0x84
ULAW_CLIP: Final = 32635

_ALAW_SEGMENT_ENDS: Final = np.array([0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF])


def _every_int16_in_uint16_order() -> npt.NDArray[np.int32]:
    """All 65536 int16 values, ordered so that entry ``u`` is the sample whose bits are ``u``."""
    return np.arange(65536, dtype=np.uint32).astype(np.uint16).view(np.int16).astype(np.int32)


def _build_ulaw_decode() -> npt.NDArray[np.int16]:
    u = ~np.arange(256, dtype=np.int32) & 0xFF
    t = (((u & 0x0F) << 3) + ULAW_BIAS) << ((u & 0x70) >> 4)
    return np.where(u & 0x80, ULAW_BIAS - t, t - ULAW_BIAS).astype(np.int16)


def _build_ulaw_encode() -> npt.NDArray[np.uint8]:
    x = _every_int16_in_uint16_order()
    sign = np.where(x < 0, 0x80, 0)
    biased = np.minimum(np.abs(x), ULAW_CLIP) + ULAW_BIAS  # 132 .. 32767
    # Sun's exp_lut[biased >> 7] is floor(log2(biased >> 7)); counting the powers of two that
    # the value reaches keeps it exact integer arithmetic.
    exponent = (biased[:, None] >> 7 >= (1 << np.arange(1, 8))).sum(axis=1)
    mantissa = (biased >> (exponent + 3)) & 0x0F
    codes: npt.NDArray[np.int64] = ~(sign | (exponent << 4) | mantissa) & 0xFF
    return codes.astype(np.uint8)


def _build_alaw_decode() -> npt.NDArray[np.int16]:
    a = np.arange(256, dtype=np.int32) ^ 0x55
    t = (a & 0x0F) << 4
    segment = (a & 0x70) >> 4
    t = np.where(segment == 0, t + 8, (t + 0x108) << np.maximum(segment - 1, 0))
    return np.where(a & 0x80, t, -t).astype(np.int16)


def _build_alaw_encode() -> npt.NDArray[np.uint8]:
    x = _every_int16_in_uint16_order()
    thirteen_bit = x >> 3
    negative = x < 0
    mask = np.where(negative, 0x55, 0xD5)
    magnitude = np.where(negative, ~thirteen_bit, thirteen_bit)  # one's complement: 0 .. 4095
    segment = (magnitude[:, None] > _ALAW_SEGMENT_ENDS[:7]).sum(axis=1)  # never 8: max is 0xFFF
    mantissa = np.where(segment < 2, magnitude >> 1, magnitude >> segment) & 0x0F
    codes: npt.NDArray[np.int64] = ((segment << 4) | mantissa) ^ mask
    return codes.astype(np.uint8)


_ULAW_DECODE: Final = _build_ulaw_decode()
_ULAW_ENCODE: Final = _build_ulaw_encode()
_ALAW_DECODE: Final = _build_alaw_decode()
_ALAW_ENCODE: Final = _build_alaw_encode()
for _table in (_ULAW_DECODE, _ULAW_ENCODE, _ALAW_DECODE, _ALAW_ENCODE):
    _table.flags.writeable = False
del _table


def _as_bytes(payload: object, what: str) -> bytes | bytearray | memoryview:
    if not isinstance(payload, bytes | bytearray | memoryview):
        raise LocalProtocolError(f"{what} takes bytes, got {type(payload).__name__}")
    return payload


def require_pcm16(pcm: object, what: str = "audio") -> Pcm16:
    """Return ``pcm`` if it is a 1-D int16 numpy array, else raise :class:`LocalProtocolError`.

    Audio inside the service is always int16 at this layer: floats, other widths, 2-D
    (multi-channel) arrays and Python lists are bugs in the caller, reported by name.
    """
    if not isinstance(pcm, np.ndarray):
        raise LocalProtocolError(f"{what} must be a numpy int16 array, got {type(pcm).__name__}")
    if pcm.dtype != np.int16:
        raise LocalProtocolError(f"{what} must be int16 samples, got dtype {pcm.dtype}")
    if pcm.ndim != 1:
        raise LocalProtocolError(f"{what} must be mono (1-D), got shape {pcm.shape}")
    return pcm


def ulaw_decode(payload: bytes | bytearray | memoryview) -> Pcm16:
    """Decode G.711 mu-law bytes (one sample each) to a new int16 array."""
    codes = np.frombuffer(_as_bytes(payload, "ulaw_decode"), dtype=np.uint8)
    return _ULAW_DECODE[codes]


def ulaw_encode(pcm: Pcm16) -> bytes:
    """Encode int16 samples to G.711 mu-law bytes (Sun g711.c: BIAS 0x84, CLIP 32635)."""
    return _ULAW_ENCODE[require_pcm16(pcm, "ulaw_encode input").view(np.uint16)].tobytes()


def alaw_decode(payload: bytes | bytearray | memoryview) -> Pcm16:
    """Decode G.711 A-law bytes (one sample each, even bits inverted) to a new int16 array."""
    codes = np.frombuffer(_as_bytes(payload, "alaw_decode"), dtype=np.uint8)
    return _ALAW_DECODE[codes]


def alaw_encode(pcm: Pcm16) -> bytes:
    """Encode int16 samples to G.711 A-law bytes (Sun g711.c / ITU G.191, 0x55 inversion)."""
    return _ALAW_ENCODE[require_pcm16(pcm, "alaw_encode input").view(np.uint16)].tobytes()


def _pcm16_decode(payload: bytes | bytearray | memoryview, dtype: str, what: str) -> Pcm16:
    data = _as_bytes(payload, what)
    if len(data) % 2:
        raise RemoteProtocolError(
            f"{what}: {len(data)} bytes is not a whole number of 16-bit samples",
            close_code=CLOSE_INVALID_PAYLOAD,
        )
    return np.frombuffer(data, dtype=dtype).astype(np.int16)  # astype copies: writable, native


def pcm16le_decode(payload: bytes | bytearray | memoryview) -> Pcm16:
    """Little-endian signed 16-bit bytes (WAV, espeak-ng, most TTS) to a new int16 array."""
    return _pcm16_decode(payload, "<i2", "pcm16le_decode")


def pcm16le_encode(pcm: Pcm16) -> bytes:
    """An int16 array to little-endian signed 16-bit bytes."""
    return require_pcm16(pcm, "pcm16le_encode input").astype("<i2", copy=False).tobytes()


def l16be_decode(payload: bytes | bytearray | memoryview) -> Pcm16:
    """L16 (RFC 3551: big-endian signed 16-bit, as Telnyx sends it) to a new int16 array."""
    return _pcm16_decode(payload, ">i2", "l16be_decode")


def l16be_encode(pcm: Pcm16) -> bytes:
    """An int16 array to L16 network-order bytes."""
    return require_pcm16(pcm, "l16be_encode input").astype(">i2").tobytes()
