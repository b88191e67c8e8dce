"""What a `actors.deepgram_link.DeepgramLink` reports: its typed errors and its statistics record.

The errors carry the `CloseVerdict` of `protocols.deepgram_listen` that classified the failure;
`link_error` picks the class (transient or fatal) from that verdict.
"""

from __future__ import annotations

import attrs

from protocols.deepgram_listen import CloseVerdict, Recovery

__all__ = ["DeepgramDropped", "DeepgramLinkError", "DeepgramLinkStatistics", "DeepgramRejected",
           "link_error"]


class DeepgramLinkError(Exception):
    """The Deepgram connection failed; ``verdict`` (from `protocols.deepgram_listen`) says why."""

    def __init__(self, verdict: CloseVerdict, detail: str, *, status_code: int | None = None,
                 close_code: int | None = None) -> None:
        super().__init__(f"{detail} ({verdict.explanation})")
        self.verdict, self.detail = verdict, detail
        self.status_code, self.close_code = status_code, close_code


class DeepgramDropped(DeepgramLinkError):
    """Transient: the socket dropped, closed with 1011/1006, timed out, or was refused with 429/5xx."""


class DeepgramRejected(DeepgramLinkError):
    """Fatal: bad credentials or parameters (401/402/403/400), or audio Deepgram cannot decode."""


def link_error(verdict: CloseVerdict, detail: str, **codes: int | None) -> DeepgramLinkError:
    """`DeepgramRejected` if ``verdict`` is fatal, else `DeepgramDropped`."""
    kind = DeepgramRejected if verdict.recovery is Recovery.FATAL else DeepgramDropped
    return kind(verdict, detail, **codes)


@attrs.frozen
class DeepgramLinkStatistics:
    """A snapshot of one link across its connections (``connects - 1`` reconnects)."""

    connects: int = 0
    frames_sent: int = 0
    bytes_sent: int = 0
    audio_messages_sent: int = 0
    keepalives_sent: int = 0
    replayed_frames: int = 0
    replay_overflow_frames: int = 0  # evicted by replay_limit_s before Deepgram finalised them
    frames_skipped: int = 0  # empty or malformed payloads, never sent
    results_received: int = 0
    partials: int = 0
    finals: int = 0
    utterance_ends: int = 0
    speech_started: int = 0
    server_errors: int = 0
    undecodable: int = 0
    replay_buffered_s: float = 0.0
    turn_id: str = "t-1"
