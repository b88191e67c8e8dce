"""The runtime's own share of a turn's voice-to-voice latency, from its ``latency`` waterfall.

A turn's stages are call times (seconds) stamped by the service: ``end_of_speech`` (the last
voiced audio, an *audio* timestamp from Deepgram's word timings), ``stt_final``, ``llm_request``,
``llm_first_token``, ``first_chunk``, ``tts_first_audio``, ``first_frame_sent``. Between them sit
delays the emulators were *configured* to add; what is left is ours (plus the loopback hops and
the emulators' own processing, which cannot be told apart from here: an upper bound).

Components (each in seconds; their sum is ``first_frame_sent − end_of_speech − configured``):

=========  ===============================================  ==========================================
name       measured span                                    configured delay subtracted
=========  ===============================================  ==========================================
stt        ``stt_final − end_of_speech``                    endpointing wait + ``first_result_delay_s``
brain      ``llm_request − stt_final``                      —
llm        ``llm_first_token − llm_request``                ``ttft_s``
chunk      ``first_chunk − llm_first_token``                first chunk's assembly (deltas 1..k)
tts        ``tts_first_audio − first_chunk``                ``ttfa_s``
send       ``first_frame_sent − tts_first_audio``           —
=========  ===============================================  ==========================================

*Endpointing wait.* The emulator finalises on the 20 ms frame that completes ``endpointing`` ms
of unvoiced audio: frames ``v+1 … v+10`` after the last voiced frame ``v`` (200 ms). Frame ``k``
covers call time ``[20k, 20k+20)`` ms and Telnyx (our caller) sends it at ``20k`` ms, so the
trigger frame ``v+10`` leaves the caller at ``end_of_speech + 180 ms`` (``end_of_speech`` is the
*end* of frame ``v``): the wait is ``endpointing − 20 ms``.

*Chunk assembly.* Delta ``i`` leaves the Anthropic emulator at ``ttft_s + i / tokens_per_s``
after the request body; the first chunk is cut when delta ``k`` arrives (the chunker waits for the
character after the space that follows the boundary), found by running the Brain's own chunker on
the emulator's own token split: ``k / tokens_per_s``.

*Preemption.* The Brain may send a speculative request on a stable interim transcript; when the
final matches it (a *hit*), ``llm_request`` precedes ``stt_final`` and the LLM's configured wait
overlaps endpointing: only the part of it still to come when the final arrives is on the path.
So ``total`` is, for every turn, ``stt + (first_frame_sent − stt_final) − ttfa − the LLM's
configured delay still ahead at stt_final``, where that delay is ``ttft + assembly`` less the
head start ``stt_final − llm_request`` (never below 0). Without a head start (``brain ≥ 0``) this
is exactly the sum of the components; for a hit the components ``brain``..``chunk`` are not
separable (``brain < 0``) and only ``total`` and ``v2v`` are meaningful.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

import attrs
import numpy as np

from actors.speakable import MarkerFilter, SpeakableChunker
from bench.emulators.anthropic_messages import split_tokens

__all__ = ["COMPONENTS", "Delays", "first_chunk_deltas", "summarize", "turn_share"]

FRAME_S: Final = 0.02
COMPONENTS: Final = ("stt", "brain", "llm", "chunk", "tts", "send")
PERCENTILES: Final = (50, 95, 99)


def first_chunk_deltas(reply: str) -> int:
    """Index of the delta whose arrival completes the first speakable chunk (as the Brain cuts it).

    Raises ValueError when the reply has no chunk before its end (it would go out only at
    ``message_stop``, after the last delta: choose a reply with an early clause).
    """
    chunker, marker = SpeakableChunker(), MarkerFilter(None)
    for index, delta in enumerate(split_tokens(reply)):
        if chunker.feed(marker.feed(delta)):
            return index
    raise ValueError(f"{reply!r} has no speakable chunk before its end")


@attrs.frozen
class Delays:
    """The emulators' configured delays on a turn's path (seconds)."""

    endpointing_s: float = 0.2
    dg_delay_s: float = 0.0
    ttft_s: float = 0.0
    tokens_per_s: float = float("inf")
    first_chunk_delta: int = 0
    ttfa_s: float = 0.0

    @property
    def endpointing_wait_s(self) -> float:
        return self.endpointing_s - FRAME_S

    @property
    def assembly_s(self) -> float:
        return self.first_chunk_delta / self.tokens_per_s

    @property
    def total_s(self) -> float:
        return (self.endpointing_wait_s + self.dg_delay_s + self.ttft_s + self.assembly_s
                + self.ttfa_s)

    def as_dict(self) -> dict[str, float]:
        return {**attrs.asdict(self), "endpointing_wait_s": self.endpointing_wait_s,
                "assembly_s": self.assembly_s, "total_s": self.total_s}


def turn_share(stages: Mapping[str, float], delays: Delays) -> dict[str, float] | None:
    """Per-component share (seconds) of one turn, plus ``total`` and ``v2v``; None if incomplete."""
    try:
        eos, final = stages["end_of_speech"], stages["stt_final"]
        request, token = stages["llm_request"], stages["llm_first_token"]
        chunk, audio, frame = stages["first_chunk"], stages["tts_first_audio"], stages["first_frame_sent"]
    except KeyError:
        return None
    parts = {
        "stt": final - eos - delays.endpointing_wait_s - delays.dg_delay_s,
        "brain": request - final,
        "llm": token - request - delays.ttft_s,
        "chunk": chunk - token - delays.assembly_s,
        "tts": audio - chunk - delays.ttfa_s,
        "send": frame - audio,
    }
    head_start = max(0.0, final - request)
    llm_ahead = max(0.0, delays.ttft_s + delays.assembly_s - head_start)
    total = parts["stt"] + (frame - final) - llm_ahead - delays.ttfa_s
    return {**parts, "total": total, "v2v": frame - eos, "head_start": head_start}


def _pct(values: Sequence[float]) -> dict[str, float]:
    arr = np.asarray(values, dtype=float) * 1000
    out = {f"p{p}": float(v) for p, v in zip(PERCENTILES, np.percentile(arr, PERCENTILES))}
    return {**out, "mean": float(arr.mean()), "max": float(arr.max()), "min": float(arr.min())}


def summarize(shares: Sequence[Mapping[str, float]]) -> dict[str, Any]:
    """Percentiles (ms) of every component, the total and voice-to-voice, over ``shares``."""
    if not shares:
        return {"n": 0}
    keys = (*COMPONENTS, "total", "v2v", "head_start",
            *(["total_less_caller"] if "total_less_caller" in shares[0] else []))
    return {"n": len(shares), **{k: _pct([s[k] for s in shares]) for k in keys}}
