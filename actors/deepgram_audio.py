"""The call's audio on its way to Deepgram, for `actors.deepgram_link.DeepgramLink`.

The listen options for a call's audio, payloads as Deepgram takes them (L16 swapped to
little-endian), and `ReplayBuffer`: the audio sent but not yet finalised, kept on the link across
restarts and replayed first on the next connection, so a reconnect mid-sentence loses no words.
"""

from __future__ import annotations

from collections import deque
from typing import Any, Final

import attrs

from actors.deepgram_connection import TIME_TOLERANCE_S
from actors.messages import AudioFrame, CallInfo
from protocols.audio import AudioFormat, Codec, l16be_decode, pcm16le_encode
from protocols.deepgram_listen import ListenOptions
from protocols.errors import RemoteProtocolError

__all__ = ["ENCODINGS", "ReplayBuffer", "listen_options", "payload_seconds", "to_deepgram"]

#: Deepgram's ``encoding`` for each codec; L16 goes out little-endian (`to_deepgram`).
ENCODINGS: Final = {Codec.PCMU: "mulaw", Codec.PCMA: "alaw", Codec.L16: "linear16"}


def listen_options(call: CallInfo, **overrides: Any) -> ListenOptions:
    """Centralita's listen options for ``call``'s audio (Spanish, nova-3, turn events on), with
    ``overrides``; see `actors.deepgram_link.DeepgramLink.options_for`."""
    fmt = call.audio_format
    options = ListenOptions(
        model="nova-3", language="es", encoding=ENCODINGS[fmt.codec],
        sample_rate=fmt.sample_rate_hz, channels=1, interim_results=True, endpointing=200,
        utterance_end_ms=1000, vad_events=True,
    )
    return attrs.evolve(options, **overrides)


def to_deepgram(payload: bytes, codec: Codec) -> bytes:
    """``payload`` as Deepgram takes it (``payload`` itself unless it is L16, whose big-endian
    samples are swapped); ``b""`` if it must not be sent (empty, or an odd L16 byte count)."""
    if payload and codec is Codec.L16:
        try:
            return pcm16le_encode(l16be_decode(payload))
        except RemoteProtocolError:  # an odd byte count
            return b""
    return payload


def payload_seconds(fmt: AudioFormat, payload: bytes) -> float:
    return len(payload) / (fmt.sample_rate_hz * fmt.codec.bytes_per_sample)


@attrs.define(eq=False)
class ReplayBuffer:
    """Sent audio as (call time, payload), oldest first, and how many seconds it holds.

    Plain tuples of a float and bytes, which the garbage collector stops tracking after one pass,
    so the seconds of audio every call keeps do not weigh on every later gen-1/gen-2 collection
    (AudioFrames were ~20 % of the tracked heap at 100 calls, and most of what survived gen 0).
    """

    audio_format: AudioFormat
    _audio: deque[tuple[float, bytes]] = attrs.field(factory=deque, init=False)
    buffered_s: float = attrs.field(default=0.0, init=False)

    def add(self, call_time_s: float, payload: bytes, limit_s: float) -> int:
        """Keep ``payload``, then evict the oldest beyond ``limit_s`` seconds (never the newest);
        return how many were evicted."""
        self._audio.append((call_time_s, payload))
        self.buffered_s += self._seconds(payload)
        evicted = 0
        while self.buffered_s > limit_s and len(self._audio) > 1:
            self.buffered_s -= self._seconds(self._audio.popleft()[1])
            evicted += 1
        return evicted

    def forget_until(self, end_s: float) -> None:
        """Drop the audio that ends by call time ``end_s``: Deepgram has finalised it."""
        while self._audio and self._end_s(self._audio[0]) <= end_s + TIME_TOLERANCE_S:
            self.buffered_s -= self._seconds(self._audio.popleft()[1])

    def frames(self) -> list[AudioFrame]:
        return [AudioFrame(call_time_s, payload) for call_time_s, payload in self._audio]

    def _seconds(self, payload: bytes) -> float:
        return payload_seconds(self.audio_format, payload)

    def _end_s(self, buffered: tuple[float, bytes]) -> float:
        return buffered[0] + self._seconds(buffered[1])
