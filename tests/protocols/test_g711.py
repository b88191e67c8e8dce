"""G.711 against independent scalar references written from the formulas, plus spec spot values.

The references below are deliberately written differently from protocols/g711.py (scalar,
bit_length/while-loop segment search, the G.711 "(2m + 33) << e" decode form), so a shared
mistake would have to be made twice.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocols.errors import LocalProtocolError, RemoteProtocolError
from protocols.g711 import (
    alaw_decode,
    alaw_encode,
    l16be_decode,
    l16be_encode,
    pcm16le_decode,
    pcm16le_encode,
    ulaw_decode,
    ulaw_encode,
)

ALL_CODES = bytes(range(256))
ALL_INT16 = np.arange(-32768, 32768, dtype=np.int32).astype(np.int16)


# --- independent references -----------------------------------------------------------------


def ref_ulaw_decode(code: int) -> int:
    """G.711 mu-law: magnitude = ((2m + 33) << e) - 33 on the 14-bit scale, times 4."""
    code = ~code & 0xFF
    sign, exponent, mantissa = code & 0x80, (code >> 4) & 0x07, code & 0x0F
    magnitude = (((2 * mantissa + 33) << exponent) - 33) * 4
    return -magnitude if sign else magnitude


def ref_ulaw_encode(sample: int) -> int:
    """Sun g711.c linear2ulaw (classic): sign-magnitude, BIAS 0x84, CLIP 32635."""
    sign = 0x80 if sample < 0 else 0
    biased = min(abs(sample), 32635) + 0x84
    exponent = biased.bit_length() - 8  # biased >= 132 has 8..15 bits
    mantissa = (biased >> (exponent + 3)) & 0x0F
    return ~(sign | (exponent << 4) | mantissa) & 0xFF


def ref_ulaw_encode_g191(sample: int) -> int:
    """ITU G.191 STL ulaw_compress: one's complement for negatives, 14-bit magnitude."""
    absno = ((~sample) >> 2) + 33 if sample < 0 else (sample >> 2) + 33
    absno = min(absno, 0x1FFF)
    i, segno = absno >> 6, 1
    while i:
        segno, i = segno + 1, i >> 1
    code = ((8 - segno) << 4) | (0x0F - ((absno >> segno) & 0x0F))
    return code | 0x80 if sample >= 0 else code


def ref_alaw_decode(code: int) -> int:
    """G.711 A-law: 8(2m+1) in segment 0, 8((2m+33) << (s-1)) above; bit 7 set is positive."""
    code ^= 0x55
    segment, mantissa = (code >> 4) & 0x07, code & 0x0F
    if segment == 0:
        magnitude = 8 * (2 * mantissa + 1)
    else:
        magnitude = 8 * ((2 * mantissa + 33) << (segment - 1))
    return magnitude if code & 0x80 else -magnitude


def ref_alaw_encode(sample: int) -> int:
    """ITU G.191 STL alaw_compress (one's complement, 12-bit magnitude, even-bit inversion)."""
    ix = (~sample) >> 4 if sample < 0 else sample >> 4
    if ix > 15:
        exponent = 1
        while ix > 16 + 15:
            ix >>= 1
            exponent += 1
        ix -= 16
        ix += exponent << 4
    if sample >= 0:
        ix |= 0x80
    return ix ^ 0x55


# --- decode -----------------------------------------------------------------------------------


def test_ulaw_decodes_all_256_codes_like_the_reference() -> None:
    assert ulaw_decode(ALL_CODES).tolist() == [ref_ulaw_decode(c) for c in range(256)]


def test_alaw_decodes_all_256_codes_like_the_reference() -> None:
    assert alaw_decode(ALL_CODES).tolist() == [ref_alaw_decode(c) for c in range(256)]


@pytest.mark.parametrize(
    ("code", "value"),
    [(0x00, -32124), (0x7F, 0), (0x80, 32124), (0xFF, 0), (0x0F, -16764), (0xEF, 132),
     (0xF0, 120)],
)
def test_ulaw_spot_values(code: int, value: int) -> None:
    # G.711 Table 2a, on the 16-bit scale: 0x80 is the top of segment 8 (8031 * 4), 0xF0 the
    # top of the first segment (30 * 4), 0xEF the bottom of the second (33 * 4).
    assert int(ulaw_decode(bytes([code]))[0]) == value
    assert ref_ulaw_decode(code) == value


@pytest.mark.parametrize(
    ("code", "value"),
    [(0xD5, 8), (0x55, -8), (0x2A, -32256), (0xAA, 32256), (0xD4, 24), (0xC5, 264)],
)
def test_alaw_spot_values(code: int, value: int) -> None:
    # G.711 Table 1a: 0xD5 is the +1 step (8 on 16 bits), 0xAA the top (4032 * 8), 0xC5 the
    # first step of segment 2 (33 * 8).
    assert int(alaw_decode(bytes([code]))[0]) == value
    assert ref_alaw_decode(code) == value


def test_decoders_accept_every_bytes_like_and_return_writable_int16() -> None:
    for payload in (ALL_CODES, bytearray(ALL_CODES), memoryview(ALL_CODES)):
        for decode in (ulaw_decode, alaw_decode):
            pcm = decode(payload)
            assert pcm.dtype == np.int16 and pcm.shape == (256,) and pcm.flags.writeable


# --- encode -----------------------------------------------------------------------------------


def test_ulaw_encodes_all_65536_inputs_like_sun_g711() -> None:
    assert ulaw_encode(ALL_INT16) == bytes(ref_ulaw_encode(int(x)) for x in ALL_INT16)


def test_ulaw_encode_equals_g191_for_non_negative_and_is_adjacent_for_negative() -> None:
    ours = np.frombuffer(ulaw_encode(ALL_INT16), dtype=np.uint8).astype(int)
    g191 = np.array([ref_ulaw_encode_g191(int(x)) for x in ALL_INT16])
    non_negative = ALL_INT16 >= 0
    assert (ours[non_negative] == g191[non_negative]).all()
    differ = ours != g191
    # Only boundary inputs, each one code step apart (the documented G.711 latitude).
    assert (np.abs(ours[differ] - g191[differ]) == 1).all()
    assert int(differ.sum()) == 127


def test_alaw_encodes_all_65536_inputs_like_g191() -> None:
    assert alaw_encode(ALL_INT16) == bytes(ref_alaw_encode(int(x)) for x in ALL_INT16)


def test_ulaw_code_round_trip_is_identity_except_negative_zero() -> None:
    back = ulaw_encode(ulaw_decode(ALL_CODES))
    changed = {c: back[c] for c in range(256) if back[c] != c}
    assert changed == {0x7F: 0xFF}


def test_alaw_code_round_trip_is_identity() -> None:
    assert alaw_encode(alaw_decode(ALL_CODES)) == ALL_CODES


def test_silence_and_extremes_encode_as_expected() -> None:
    pcm = np.array([0, 3, -1, -3, 32767, -32768], dtype=np.int16)
    assert ulaw_encode(pcm) == bytes([0xFF, 0xFF, 0x7F, 0x7F, 0x80, 0x00])
    assert alaw_encode(pcm) == bytes([0xD5, 0xD5, 0x55, 0x55, 0xAA, 0x2A])


@pytest.mark.parametrize("codec", ["ulaw", "alaw"])
@pytest.mark.parametrize("level_dbfs", [-3.0, -20.0])
def test_tone_round_trip_sqnr(codec: str, level_dbfs: float) -> None:
    # 1004 Hz (the telephony test tone: not a divisor of 8000, so every code gets exercised);
    # level is the sine's peak relative to full scale.
    n = np.arange(8000)
    tone = np.round(32767 * 10 ** (level_dbfs / 20) * np.sin(2 * np.pi * 1004 * n / 8000))
    pcm = tone.astype(np.int16)
    encode, decode = (ulaw_encode, ulaw_decode) if codec == "ulaw" else (alaw_encode, alaw_decode)
    back = decode(encode(pcm)).astype(np.float64)
    error = back - pcm
    sqnr_db = 10 * np.log10(np.sum(pcm.astype(np.float64) ** 2) / np.sum(error**2))
    assert sqnr_db > 33.0


def test_matches_stdlib_audioop_where_it_still_exists() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        audioop = pytest.importorskip("audioop")  # gone in 3.13
    assert audioop.ulaw2lin(ALL_CODES, 2) == pcm16le_encode(ulaw_decode(ALL_CODES))
    assert audioop.alaw2lin(ALL_CODES, 2) == pcm16le_encode(alaw_decode(ALL_CODES))
    assert audioop.lin2alaw(pcm16le_encode(ALL_INT16), 2) == alaw_encode(ALL_INT16)
    theirs = np.frombuffer(audioop.lin2ulaw(pcm16le_encode(ALL_INT16), 2), dtype=np.uint8)
    ours = np.frombuffer(ulaw_encode(ALL_INT16), dtype=np.uint8)
    differ = theirs != ours
    assert (ALL_INT16[differ] < 0).all()  # negative decision boundaries only
    assert int(differ.sum()) == 381


@pytest.mark.parametrize("encode", [ulaw_encode, alaw_encode, pcm16le_encode, l16be_encode])
@pytest.mark.parametrize(
    "bad",
    [np.zeros(4, dtype=np.float32), np.zeros(4, dtype=np.int32), np.zeros((2, 2), np.int16),
     [0, 1, 2], b"\x00\x00"],
)
def test_encoders_reject_anything_but_1d_int16(encode: object, bad: object) -> None:
    with pytest.raises(LocalProtocolError, match="int16|mono"):
        encode(bad)  # type: ignore[operator]


@pytest.mark.parametrize("decode", [ulaw_decode, alaw_decode, pcm16le_decode, l16be_decode])
def test_decoders_reject_non_bytes_as_our_mistake(decode: object) -> None:
    with pytest.raises(LocalProtocolError, match="takes bytes"):
        decode("ff")  # type: ignore[operator]


# --- 16-bit linear ----------------------------------------------------------------------------


def test_l16_is_big_endian_and_pcm16le_little_endian() -> None:
    pcm = np.array([1, -2, 0x1234], dtype=np.int16)
    assert l16be_encode(pcm) == b"\x00\x01\xff\xfe\x12\x34"
    assert pcm16le_encode(pcm) == b"\x01\x00\xfe\xff\x34\x12"
    assert l16be_decode(b"\x00\x01\xff\xfe\x12\x34").tolist() == [1, -2, 0x1234]
    assert pcm16le_decode(b"\x01\x00\xfe\xff\x34\x12").tolist() == [1, -2, 0x1234]


@given(st.binary(max_size=64).filter(lambda b: len(b) % 2 == 0))
def test_pcm16_round_trips_bytes(payload: bytes) -> None:
    assert l16be_encode(l16be_decode(payload)) == payload
    assert pcm16le_encode(pcm16le_decode(payload)) == payload
    assert l16be_decode(payload).flags.writeable


@pytest.mark.parametrize("decode", [pcm16le_decode, l16be_decode])
def test_odd_byte_count_is_the_peers_fault(decode: object) -> None:
    with pytest.raises(RemoteProtocolError, match="3 bytes is not a whole number"):
        decode(b"\x00\x01\x02")  # type: ignore[operator]
