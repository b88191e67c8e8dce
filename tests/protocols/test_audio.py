"""Media format, resampling, 20 ms framing and frame energy (no event loop needed)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocols.audio import (
    L16_16K,
    PCMA_8K,
    PCMU_8K,
    Codec,
    FrameChunker,
    AudioFormat,
    StreamingResampler,
    frame_rms_dbfs,
    is_silent,
    resample,
)
from protocols.errors import LocalProtocolError, RemoteProtocolError

RATE_PAIRS = [(8000, 16000), (16000, 8000), (8000, 24000), (24000, 8000), (22050, 8000),
              (24000, 16000)]


def tone(freq_hz: float, rate_hz: int, seconds: float = 1.0, peak: float = 16000.0) -> np.ndarray:
    n = np.arange(int(rate_hz * seconds))
    return np.round(peak * np.sin(2 * np.pi * freq_hz * n / rate_hz)).astype(np.int16)


def level_db(pcm: np.ndarray) -> float:
    """RMS level of the middle half (away from filter edges)."""
    middle = pcm[len(pcm) // 4 : -len(pcm) // 4].astype(np.float64)
    return 10 * math.log10(max(float(np.mean(middle**2)), 1e-30))


# --- media format -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "bytes_20ms", "silence_byte"),
    [(PCMU_8K, 160, 0xFF), (PCMA_8K, 160, 0xD5), (L16_16K, 640, 0x00)],
)
def test_audio_format_sizes_and_silence(fmt: AudioFormat, bytes_20ms: int, silence_byte: int) -> None:
    assert fmt.bytes_per_20ms == bytes_20ms
    assert fmt.bytes_per_frame(60) == 3 * bytes_20ms
    assert fmt.silence_frame() == bytes([silence_byte]) * bytes_20ms
    assert fmt.silence_frame(100) == bytes([silence_byte]) * 5 * bytes_20ms


def test_silence_frames_decode_to_silence() -> None:
    assert not PCMU_8K.decode(PCMU_8K.silence_frame()).any()
    assert not L16_16K.decode(L16_16K.silence_frame()).any()
    assert set(PCMA_8K.decode(PCMA_8K.silence_frame()).tolist()) == {8}  # A-law has no zero


@pytest.mark.parametrize("fmt", [PCMU_8K, PCMA_8K, L16_16K])
def test_codec_round_trip_through_decode(fmt: AudioFormat) -> None:
    pcm = fmt.decode(fmt.encode(tone(440, fmt.sample_rate_hz, 0.02)))
    assert fmt.decode(fmt.encode(pcm)).tolist() == pcm.tolist()  # decoded values are fixed points


def test_codec_from_wire() -> None:
    assert Codec.from_wire("pcmu") is Codec.PCMU
    assert Codec.from_wire("L16") is Codec.L16
    with pytest.raises(RemoteProtocolError, match="unsupported audio encoding 'G729'"):
        Codec.from_wire("G729")


def test_audio_format_from_wire() -> None:
    assert AudioFormat.from_wire("PCMA", 8000) == PCMA_8K
    assert AudioFormat.from_wire("l16", 16000) == L16_16K
    with pytest.raises(RemoteProtocolError, match="PCMU is 8000 Hz only, not 16000 Hz"):
        AudioFormat.from_wire("PCMU", 16000)
    with pytest.raises(RemoteProtocolError, match="positive int"):
        AudioFormat.from_wire("L16", 0)
    with pytest.raises(RemoteProtocolError, match="unsupported"):
        AudioFormat.from_wire("OPUS", 48000)


def test_audio_format_validation() -> None:
    with pytest.raises(LocalProtocolError, match="8000 Hz only"):
        AudioFormat(Codec.PCMU, 16000)
    with pytest.raises(LocalProtocolError, match="positive int"):
        AudioFormat(Codec.L16, 0)
    with pytest.raises(LocalProtocolError, match="not a whole number of samples"):
        AudioFormat(Codec.L16, 11025).samples_per_frame(20)
    with pytest.raises(LocalProtocolError, match="positive int"):
        PCMU_8K.bytes_per_frame(0)


@given(st.binary(max_size=400))
def test_garbage_payloads_only_ever_raise_remote_protocol_error(payload: bytes) -> None:
    for codec in Codec:
        try:
            pcm = codec.decode(payload)
        except RemoteProtocolError:
            assert codec is Codec.L16 and len(payload) % 2
        else:
            assert pcm.dtype == np.int16 and len(pcm) == len(payload) // codec.bytes_per_sample


# --- resampling -------------------------------------------------------------------------------


def test_1k_tone_survives_8k_16k_8k() -> None:
    original = tone(1004, 8000)
    back = resample(resample(original, 8000, 16000), 16000, 8000)
    assert len(back) == len(original)
    # A 1 kHz tone is deep in both passbands and soxr removes its delay: apart from the first
    # and last few ms, it comes back within rounding.
    middle = slice(80, -80)
    assert np.abs(back[middle].astype(np.int32) - original[middle]).max() <= 1
    assert abs(level_db(back) - level_db(original)) < 0.05


@pytest.mark.parametrize("low_latency", [False, True])
def test_6k_tone_at_22050_is_suppressed_going_to_8k(low_latency: bool) -> None:
    loud = tone(6000, 22050, peak=30000)
    if low_latency:
        resampler = StreamingResampler(22050, 8000, low_latency=True)
        out = np.concatenate([resampler.process(loud), resampler.flush()])
    else:
        out = resample(loud, 22050, 8000)
    assert level_db(loud) - level_db(out) > 60  # it would alias to 2 kHz without a filter


@pytest.mark.parametrize("low_latency", [False, True])
@pytest.mark.parametrize(("from_hz", "to_hz"), RATE_PAIRS)
def test_streamed_tone_keeps_its_level(from_hz: int, to_hz: int, low_latency: bool) -> None:
    resampler = StreamingResampler(from_hz, to_hz, low_latency=low_latency)
    source = tone(1004, from_hz)
    chunk = from_hz // 50
    out = np.concatenate(
        [resampler.process(source[i : i + chunk]) for i in range(0, len(source), chunk)]
        + [resampler.flush()]
    )
    assert abs(len(out) - len(source) * to_hz / from_hz) <= 1
    assert abs(level_db(out) - level_db(source)) < 0.1


@settings(max_examples=40, deadline=None)
@given(
    pair=st.sampled_from(RATE_PAIRS),
    seed=st.integers(0, 2**32 - 1),
    cuts=st.lists(st.integers(0, 700), max_size=40),
)
def test_streaming_in_any_chunks_equals_one_shot(
    pair: tuple[int, int], seed: int, cuts: list[int]
) -> None:
    from_hz, to_hz = pair
    rng = np.random.default_rng(seed)
    source = np.round(rng.standard_normal(sum(cuts) + 37) * 4000).astype(np.int16)
    resampler = StreamingResampler(from_hz, to_hz)
    pieces, start = [], 0
    for size in [*cuts, 37]:
        pieces.append(resampler.process(source[start : start + size]))
        start += size
    pieces.append(resampler.flush())
    streamed = np.concatenate(pieces)
    assert streamed.tolist() == resample(source, from_hz, to_hz).tolist()
    stats = resampler.statistics()
    assert (stats.samples_in, stats.samples_out) == (len(source), len(streamed))


def test_reset_drops_everything_in_flight() -> None:
    resampler = StreamingResampler(24000, 8000)
    resampler.process(tone(1004, 24000, 0.5))  # most of this is still held back
    resampler.reset()
    after = np.concatenate([resampler.process(np.zeros(4800, np.int16)), resampler.flush()])
    assert len(after) == 1600 and not after.any()  # no dither, no stale tone
    assert resampler.statistics().samples_in == 4800


def test_after_reset_or_flush_output_matches_a_fresh_resampler() -> None:
    speech = tone(700, 16000, 0.3)
    fresh = StreamingResampler(16000, 8000)
    expected = np.concatenate([fresh.process(speech), fresh.flush()])
    used = StreamingResampler(16000, 8000)
    used.process(tone(3000, 16000, 0.2))
    used.reset()
    assert np.concatenate([used.process(speech), used.flush()]).tolist() == expected.tolist()
    assert np.concatenate([used.process(speech), used.flush()]).tolist() == expected.tolist()


def test_silence_resamples_to_exact_silence() -> None:
    assert not resample(np.zeros(8000, np.int16), 8000, 16000).any()


def test_full_scale_overshoot_is_clipped_and_counted() -> None:
    square = np.where(np.arange(8000) % 40 < 20, 32767, -32768).astype(np.int16)
    resampler = StreamingResampler(8000, 16000)
    out = np.concatenate([resampler.process(square), resampler.flush()])
    assert out.dtype == np.int16
    assert resampler.statistics().clipped > 0  # Gibbs ringing past full scale
    assert resample(square, 8000, 16000).tolist() == out.tolist()


def test_equal_rates_pass_through() -> None:
    pcm = tone(440, 8000, 0.1)
    assert resample(pcm, 8000, 8000).tolist() == pcm.tolist()
    resampler = StreamingResampler(8000, 8000)
    assert resampler.process(pcm).tolist() == pcm.tolist()
    assert len(resampler.flush()) == 0


def test_resampler_validation() -> None:
    with pytest.raises(LocalProtocolError, match="positive int"):
        resample(np.zeros(10, np.int16), 8000, 0)
    with pytest.raises(LocalProtocolError, match="positive int"):
        StreamingResampler(8000.0, 16000)  # type: ignore[arg-type]
    with pytest.raises(LocalProtocolError, match="int16"):
        resample(np.zeros(10, np.float32), 8000, 16000)
    with pytest.raises(LocalProtocolError, match="int16"):
        StreamingResampler(8000, 16000).process(np.zeros(10, np.float64))
    with pytest.raises(LocalProtocolError, match="bad resampler setting"):
        StreamingResampler(8000, 16000, quality="best")


# --- framing ----------------------------------------------------------------------------------


@settings(max_examples=200)
@given(
    data=st.binary(max_size=2000),
    cuts=st.lists(st.integers(0, 2000), max_size=20),
    fmt=st.sampled_from([PCMU_8K, PCMA_8K]),
    frame_ms=st.sampled_from([20, 40, 60, 100]),
)
def test_any_split_yields_the_same_whole_frames(
    data: bytes, cuts: list[int], fmt: AudioFormat, frame_ms: int
) -> None:
    size = fmt.bytes_per_frame(frame_ms)
    chunker = FrameChunker.for_format(fmt, frame_ms)
    frames: list[bytes] = []
    for a, b in zip([0, *sorted(cuts)], [*sorted(cuts), len(data)], strict=True):
        frames += chunker.feed(data[a:b])
        assert chunker.pending_bytes < size
    whole = len(data) // size
    assert frames == [data[i * size : (i + 1) * size] for i in range(whole)]
    tail = chunker.flush()
    rest = data[whole * size :]
    if rest:
        assert tail == rest + fmt.codec.silence_sample * (size - len(rest))
    else:
        assert tail is None
    assert chunker.pending_bytes == 0


def test_flush_without_padding_and_reset() -> None:
    chunker = FrameChunker.for_format(PCMU_8K)
    assert chunker.feed(b"\x01" * 170) == [b"\x01" * 160]
    assert chunker.flush(pad=False) == b"\x01" * 10
    assert chunker.flush() is None
    chunker.feed(memoryview(b"\x02" * 50))
    assert chunker.reset() == 50
    assert chunker.feed(bytearray(b"\x03" * 160)) == [b"\x03" * 160]


def test_l16_flush_pads_with_zero_samples_and_rejects_half_a_sample() -> None:
    chunker = FrameChunker.for_format(L16_16K)
    assert chunker.feed(b"\x12\x34" * 3) == []
    assert chunker.flush() == b"\x12\x34" * 3 + b"\x00" * (640 - 6)
    chunker.feed(b"\x12\x34\x56")
    with pytest.raises(LocalProtocolError, match="mid-sample"):
        chunker.flush()
    assert chunker.pending_bytes == 0


def test_chunker_validation() -> None:
    with pytest.raises(LocalProtocolError, match="not whole 2-byte samples"):
        FrameChunker(641, b"\x00\x00")
    with pytest.raises(LocalProtocolError, match="takes bytes"):
        FrameChunker.for_format(PCMU_8K).feed("abc")  # type: ignore[arg-type]


# --- energy -----------------------------------------------------------------------------------


def test_rms_of_silence_is_minus_infinity() -> None:
    assert frame_rms_dbfs(np.zeros(160, np.int16)) == -math.inf
    assert frame_rms_dbfs(np.zeros(0, np.int16)) == -math.inf


def test_rms_of_known_signals() -> None:
    assert frame_rms_dbfs(np.full(160, -32768, np.int16)) == pytest.approx(0.0)
    full_sine = tone(1000, 8000, 0.02, peak=32767)
    assert frame_rms_dbfs(full_sine) == pytest.approx(-3.01, abs=0.01)
    assert frame_rms_dbfs(tone(1000, 8000, 0.02, peak=3277)) == pytest.approx(-23.01, abs=0.02)
    one_tick = np.zeros(160, np.int16)
    one_tick[0] = 1
    assert frame_rms_dbfs(one_tick) == pytest.approx(-112.4, abs=0.1)


@pytest.mark.parametrize("fmt", [PCMU_8K, PCMA_8K, L16_16K])
def test_is_silent_tells_codec_silence_from_a_tone(fmt: AudioFormat) -> None:
    assert is_silent(fmt.silence_frame(), fmt)
    assert is_silent(fmt.silence_frame(), fmt.codec)
    speech = fmt.encode(tone(440, fmt.sample_rate_hz, 0.02, peak=1000))  # about -33 dBFS
    assert not is_silent(speech, fmt)
    assert is_silent(speech, fmt, threshold_dbfs=-20.0)
