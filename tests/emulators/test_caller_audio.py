"""Synthetic caller audio: levels, timing, encoders, optional espeak-ng."""

from __future__ import annotations

import numpy as np
import pytest

from bench.emulators.caller_audio import (
    encode,
    encode_for_deepgram,
    espeak_audio,
    espeak_available,
    script_audio,
    script_spans,
    silence,
    speech_like,
)
from protocols.audio import Codec, frame_rms_dbfs
from protocols.g711 import ulaw_decode


def test_speech_like_is_about_minus_20_dbfs_and_never_drops_below_the_vad_threshold() -> None:
    pcm = speech_like(2.0, np.random.default_rng(0))
    assert len(pcm) == 16000 and pcm.dtype == np.int16
    assert frame_rms_dbfs(pcm) == pytest.approx(-20.0, abs=0.5)
    decoded = ulaw_decode(encode(pcm, Codec.PCMU))
    frames = [frame_rms_dbfs(decoded[i : i + 160]) for i in range(0, len(decoded), 160)]
    assert min(frames) > -35.0 and max(frames) < -12.0


def test_script_audio_layout_matches_script_spans() -> None:
    pcm = script_audio([1.0, 0.5], [0.4], lead_in_s=0.3)
    assert script_spans([1.0, 0.5], [0.4], lead_in_s=0.3) == [(0.3, 1.3), (1.7, 2.2)]
    assert len(pcm) == round(2.2 * 8000)
    assert not pcm[: int(0.3 * 8000)].any() and not pcm[int(1.31 * 8000) : int(1.69 * 8000)].any()
    assert len(script_audio([1.0], 0.5, lead_in_s=0.0)) == 12000
    with pytest.raises(ValueError):
        script_spans([1.0, 1.0], [0.1, 0.2, 0.3])


def test_encoders_and_noise() -> None:
    pcm = silence(0.1, noise_dbfs=-60.0)
    assert frame_rms_dbfs(pcm) == pytest.approx(-60.0, abs=1.0)
    assert encode(silence(0.02), "PCMA") == Codec.PCMA.silence_sample * 160
    assert encode_for_deepgram(silence(0.02), "linear16") == b"\x00" * 320
    with pytest.raises(ValueError):
        encode_for_deepgram(pcm, "opus")


@pytest.mark.skipif(not espeak_available(), reason="espeak-ng is not installed")
def test_espeak_audio() -> None:  # pragma: no cover - depends on the machine
    pcm = espeak_audio("hola, buenos días", "es")
    assert len(pcm) > 4000 and frame_rms_dbfs(pcm) > -40
