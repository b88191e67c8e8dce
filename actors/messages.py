"""What a call's actors say to each other: frozen attrs messages on bounded mailboxes.

Facts are nouns or past tense (``AudioFrame``, ``TranscriptFinal``, ``CallerStartedSpeaking``);
commands are imperative (``Speak``, ``ClearPlayback``, ``Hangup``). Every time is **call time**:
seconds of audio since the Telnyx ``start`` frame (frame count x frame duration on the inbound
track), so transcripts, marks and latency stages line up across reconnects.
"""

from __future__ import annotations

import enum
from typing import Final, Union

import attrs

from protocols.audio import AudioFormat

FRAME_S: Final = 0.020


class Speaker(enum.Enum):
    CUSTOMER = "customer"
    AGENT = "agent"


@attrs.frozen
class CallInfo:
    """Who and what a call is; fixed for the call's life and shared by its actors (read-only)."""

    call_id: str
    call_control_id: str
    stream_id: str
    audio_format: AudioFormat
    client_state: str | None = None


# -- from TelnyxRx ---------------------------------------------------------------------------------

@attrs.frozen
class AudioFrame:
    """Caller audio in the call's codec, in order; ``call_time_s`` is where it starts."""

    call_time_s: float
    payload: bytes


@attrs.frozen
class DtmfPressed:
    digit: str
    call_time_s: float


@attrs.frozen
class MarkPlayed:
    """Telnyx echoed a mark: the media queued before it finished playing (or was cleared)."""

    name: str
    call_time_s: float


# -- from DeepgramLink (or a local STT engine with the same contract) ------------------------------

@attrs.frozen
class TranscriptPartial:
    """An interim hypothesis for the current utterance (replaces the previous partial)."""

    turn_id: str
    text: str
    start_s: float
    end_s: float


@attrs.frozen
class TranscriptFinal:
    """A finalised stretch of the utterance. ``speech_final``: the caller paused (endpointing)."""

    turn_id: str
    text: str
    start_s: float
    end_s: float
    speech_final: bool
    received_at_s: float  # call time at which the final arrived (latency waterfall)


@attrs.frozen
class CallerStartedSpeaking:
    """VAD says speech began (Deepgram ``SpeechStarted``): the barge-in signal."""

    call_time_s: float


@attrs.frozen
class UtteranceEnded:
    """No new words for ``utterance_end_ms``: end of turn even if endpointing never fired."""

    turn_id: str
    last_word_end_s: float


Transcript = Union[TranscriptPartial, TranscriptFinal, CallerStartedSpeaking, UtteranceEnded]


# -- call lifecycle (to RelayFanout) ---------------------------------------------------------------

@attrs.frozen
class CallStarted:
    info: CallInfo


@attrs.frozen
class CallEnded:
    info: CallInfo
    reason: str


RelayInput = Union[Transcript, CallStarted, CallEnded]
