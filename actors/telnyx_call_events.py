"""What Telnyx's webhooks tell a webhook-mode call's actors (``USE_MEDIA_STREAMS=false``).

In webhook mode no media socket exists: Telnyx transcribes the caller (``call.transcription``)
and plays our replies (``speak`` / ``playback_start``), and reports both through signed webhooks.
Call control (the webhook route) verifies and dedupes them, then hands each one, as one of these
frozen messages, to the call's actors with a non-blocking send; the actors never see HTTP.

Facts only (past tense or nouns): what Telnyx heard, what it started or finished playing, that the
call hung up. Times are wall call time (``trio.current_time() - CallInfo.started_at``), taken when
the webhook reached us.
"""

from __future__ import annotations

from typing import Literal, Union

import attrs

__all__ = [
    "CallHungUp",
    "PlayKind",
    "PlaybackEnded",
    "PlaybackEvent",
    "PlaybackStarted",
    "TranscriptionEvent",
    "TranscriptionHeard",
]

PlayKind = Literal["speak", "playback"]


@attrs.frozen
class TranscriptionHeard:
    """One ``call.transcription`` result: ``is_final`` closes the caller's turn."""

    text: str
    is_final: bool
    confidence: float | None
    call_time_s: float


@attrs.frozen
class CallHungUp:
    """The call is over: ``call.hangup`` (``cause`` is Telnyx's ``hangup_cause``, if it said) or
    ended from our side; ``reason`` is the end reason the relay publishes."""

    cause: str | None
    reason: str


@attrs.frozen
class PlaybackStarted:
    """``call.speak.started`` or ``call.playback.started`` (``media_url`` for a playback)."""

    kind: PlayKind
    media_url: str | None
    call_time_s: float


@attrs.frozen
class PlaybackEnded:
    """``call.speak.ended`` / ``call.playback.ended``; ``status`` e.g. completed, cancelled,
    call_hangup, file_not_found, failed."""

    kind: PlayKind
    media_url: str | None
    status: str | None
    call_time_s: float


TranscriptionEvent = Union[TranscriptionHeard, CallHungUp]
PlaybackEvent = Union[PlaybackStarted, PlaybackEnded]
