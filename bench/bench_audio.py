"""Cost of the call-audio primitives in protocols/audio.py and protocols/g711.py.

Run: ``.venv/bin/python -m bench.bench_audio`` (about 10 s). Each figure is the best of
several timeit repeats (the minimum is the least disturbed by other load), per call. The
resampler section also measures how much audio soxr holds back when fed paced 20 ms chunks.
"""

from __future__ import annotations

import platform
import sys
import timeit
from collections.abc import Callable
from typing import Final

import numpy as np
import soxr

from protocols.audio import (
    PCMU_8K,
    FrameChunker,
    StreamingResampler,
    frame_rms_dbfs,
    resample,
)
from protocols.g711 import alaw_decode, alaw_encode, ulaw_decode, ulaw_encode

REPEATS: Final = 5
TARGET_PER_REPEAT_S: Final = 0.05
FRAME_SAMPLES: Final = 160


def best_seconds(fn: Callable[[], object]) -> float:
    """Best-of-REPEATS seconds per call, with the loop count calibrated to ~50 ms a repeat."""
    timer = timeit.Timer(fn)
    number = 1
    while (elapsed := timer.timeit(number)) < 0.005:
        number *= 4
    number = max(1, int(number * TARGET_PER_REPEAT_S / elapsed))
    return min(timer.repeat(repeat=REPEATS, number=number)) / number


def speech_like(rate_hz: int, seconds: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    n = int(rate_hz * seconds)
    t = np.arange(n) / rate_hz
    signal = 6000 * np.sin(2 * np.pi * 220 * t) + 1500 * rng.standard_normal(n)
    return np.clip(np.round(signal), -32768, 32767).astype(np.int16)


def withheld_ms(from_hz: int, to_hz: int, low_latency: bool) -> tuple[float, float, float]:
    """Audio held inside the resampler after each paced 20 ms chunk: min/mean/max, in ms."""
    resampler = StreamingResampler(from_hz, to_hz, low_latency=low_latency)
    chunk = speech_like(from_hz, 0.02)
    fed = out = 0
    lags = []
    for i in range(300):
        out += len(resampler.process(chunk))
        fed += len(chunk)
        if i >= 50:  # past start-up
            lags.append((fed * to_hz / from_hz - out) * 1000 / to_hz)
    return min(lags), sum(lags) / len(lags), max(lags)


def main() -> None:
    rows: list[tuple[str, str]] = []

    def row(name: str, seconds: float, unit: str = "us") -> None:
        value = seconds * (1e6 if unit == "us" else 1e3)
        rows.append((name, f"{value:10.2f} {unit}"))
        print(f"  {name:<52} {value:10.2f} {unit}", flush=True)

    print(f"Python {platform.python_version()} ({sys.implementation.name}), numpy {np.__version__}, "
          f"soxr {soxr.__version__}, {platform.machine()}")
    print(f"best of {REPEATS} repeats, per call\n")

    print("G.711 (one 20 ms frame = 160 samples; 60 s = 480 000 samples)")
    frame = speech_like(8000, 0.02)
    minute = speech_like(8000, 60.0)
    ulaw_frame, alaw_frame = ulaw_encode(frame), alaw_encode(frame)
    ulaw_minute = ulaw_encode(minute)
    row("ulaw_decode, 20 ms frame", best_seconds(lambda: ulaw_decode(ulaw_frame)))
    row("ulaw_encode, 20 ms frame", best_seconds(lambda: ulaw_encode(frame)))
    row("alaw_decode, 20 ms frame", best_seconds(lambda: alaw_decode(alaw_frame)))
    row("alaw_encode, 20 ms frame", best_seconds(lambda: alaw_encode(frame)))
    row("ulaw_decode, 60 s buffer", best_seconds(lambda: ulaw_decode(ulaw_minute)), "ms")
    row("ulaw_encode, 60 s buffer", best_seconds(lambda: ulaw_encode(minute)), "ms")

    print("\nStreaming resampler, one 20 ms chunk (soxr 'MQ', int16 in/out via float32)")
    for from_hz, to_hz in ((8000, 16000), (24000, 8000), (22050, 8000)):
        for low_latency in (False, True):
            resampler = StreamingResampler(from_hz, to_hz, low_latency=low_latency)
            chunk = speech_like(from_hz, 0.02)
            mode = "low_latency" if low_latency else "default"
            row(f"{from_hz} -> {to_hz} Hz, {mode}", best_seconds(lambda: resampler.process(chunk)))
    sentence = speech_like(22050, 3.7)
    row("one-shot resample 22050 -> 8000 Hz, 3.7 s sentence",
        best_seconds(lambda: resample(sentence, 22050, 8000)), "ms")

    print("\nAudio held back by the streaming resampler, paced 20 ms chunks (ms: min / mean / max)")
    for from_hz, to_hz in ((8000, 16000), (24000, 8000), (22050, 8000)):
        for low_latency in (False, True):
            lo, mean, hi = withheld_ms(from_hz, to_hz, low_latency)
            mode = "low_latency" if low_latency else "default"
            print(f"  {from_hz} -> {to_hz} Hz, {mode:<11}  {lo:6.1f} / {mean:6.1f} / {hi:6.1f} ms")

    print("\nFrameChunker (PCMU, 20 ms frames) and energy")
    chunker = FrameChunker.for_format(PCMU_8K)
    row("feed one 160-byte frame (cost per frame out)", best_seconds(lambda: chunker.feed(ulaw_frame)))
    burst = ulaw_minute[:4099]  # a TTS-sized burst that does not divide into frames
    frames_per_burst = len(burst) / 160
    row("feed 4099-byte bursts (cost per frame out)",
        best_seconds(lambda: chunker.feed(burst)) / frames_per_burst)
    row("feed 60 s in one call (cost per frame out)",
        best_seconds(lambda: chunker.feed(ulaw_minute)) / (len(ulaw_minute) / 160))
    row("frame_rms_dbfs, 20 ms frame", best_seconds(lambda: frame_rms_dbfs(frame)))


if __name__ == "__main__":
    main()
