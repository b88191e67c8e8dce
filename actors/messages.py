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
    """Who and what a call is; fixed for the call's life and shared by its actors (read-only).

    ``started_at`` is ``trio.current_time()`` when the ``start`` frame arrived: wall-clock call
    time is ``trio.current_time() - started_at`` (audio call time and wall call time agree while
    Telnyx streams in real time).
    """

    call_id: str
    call_control_id: str
    stream_id: str
    audio_format: AudioFormat
    client_state: str | None = None
    started_at: float = 0.0
    callee_name: str | None = None


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




# -- the speaking half: Brain <-> Speaker -----------------------------------------------------------

@attrs.frozen
class Speak:
    """Say ``text`` (one speakable chunk of reply ``reply_id``); ``last`` closes the reply.

    Chunks of one reply arrive in ``chunk`` order (0, 1, 2 ...). ``turn_id`` is the caller turn
    being answered (``"greeting"`` for the opening line).
    """

    reply_id: str
    turn_id: str
    chunk: int
    text: str
    last: bool = False


@attrs.frozen
class ClearPlayback:
    """Barge-in: stop synthesis, clear what Telnyx has queued, report what was played."""

    reason: str


@attrs.frozen
class ChunkPlayed:
    """Telnyx echoed the mark after chunk ``chunk`` of ``reply_id``: the caller heard it."""

    reply_id: str
    chunk: int
    text: str
    call_time_s: float


@attrs.frozen
class ReplyAudioStarted:
    """The first audio of a reply: when TTS produced it and when its first frame left for Telnyx."""

    reply_id: str
    tts_first_audio_s: float
    first_frame_sent_s: float


@attrs.frozen
class PlaybackCleared:
    """A reply was cut (barge-in): ``played_text`` is what the caller actually heard of it."""

    reply_id: str
    played_text: str
    call_time_s: float


@attrs.frozen
class ReplyFinished:
    """Every chunk of ``reply_id`` was played to the end."""

    reply_id: str
    call_time_s: float


SpeakerReport = Union[ChunkPlayed, ReplyAudioStarted, PlaybackCleared, ReplyFinished]
SpeakerCommand = Union[Speak, ClearPlayback]
SpeakerInput = Union[Speak, ClearPlayback, MarkPlayed]
BrainInput = Union[Transcript, DtmfPressed, SpeakerReport]


@attrs.frozen
class Hangup:
    """The Brain decided the call is over (goodbye said): call control ends it."""

    reason: str


@attrs.frozen
class ReplySpoken:
    """For the relay: what the bot said, as spoken (``interrupted`` if the caller cut it)."""

    turn_id: str
    reply_id: str
    text: str
    interrupted: bool


@attrs.frozen
class TurnLatency:
    """A turn's waterfall, each stage in call time (seconds); see DESIGN.md."""

    turn_id: str
    stages: tuple[tuple[str, float], ...]


RelayInput = Union[Transcript, CallStarted, CallEnded, ReplySpoken, TurnLatency]
