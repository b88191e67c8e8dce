"""What the Telnyx caller emulator records of a call, for assertions and benchmarks.

The records of :mod:`bench.emulators.telnyx_caller` (which re-exports them): frames received,
marks echoed, playout segments, the whole call's record, and the refused-handshake error.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import attrs

from protocols.telnyx_media import MediaOut, TelnyxOutbound

__all__ = ["CallRejected", "CallerRecord", "MarkEcho", "PlayoutSegment", "ReceivedFrame"]


class CallRejected(ConnectionError):
    """The service refused the media-stream handshake with an HTTP status."""

    def __init__(self, status_code: int, headers: Sequence[tuple[bytes, bytes]], body: bytes) -> None:
        super().__init__(f"media stream handshake refused with HTTP {status_code}")
        self.status_code = status_code
        self.headers = list(headers)
        self.body = body


@attrs.frozen
class ReceivedFrame:
    """A frame the service sent us: arrival time, the decoded message (None if malformed)."""

    at: float
    raw: str | bytes = attrs.field(repr=False)
    message: TelnyxOutbound | None
    error: str | None = None


@attrs.frozen
class MarkEcho:
    """A mark sent back: when, and whether its audio played (False: a ``clear`` released it)."""

    at: float
    name: str
    played: bool


@attrs.define
class PlayoutSegment:
    """A stretch of continuous playback; the time between segments is a gap (nothing to play)."""

    started_at: float
    ended_at: float | None = None
    bytes_played: int = 0
    cleared: bool = False


@attrs.define(eq=False)
class CallerRecord:
    """What happened on the call, for assertions. Times are ``trio.current_time()``."""

    stream_id: str
    call_control_id: str
    connected_at: float | None = None
    started_at: float | None = None
    #: When each media frame was handed to the socket, in send order.
    media_sent_at: list[float] = attrs.field(factory=list, repr=False)
    media_frames: int = 0
    #: Every frame we sent, as (time, event name, sequence number or None).
    sent: list[tuple[float, str, int | None]] = attrs.field(factory=list, repr=False)
    dtmf_sent: list[tuple[float, str]] = attrs.field(factory=list)
    received: list[ReceivedFrame] = attrs.field(factory=list, repr=False)
    marks: list[MarkEcho] = attrs.field(factory=list)
    clears: list[float] = attrs.field(factory=list)
    played: bytearray = attrs.field(factory=bytearray, repr=False)
    segments: list[PlayoutSegment] = attrs.field(factory=list)
    errors_sent: list[str] = attrs.field(factory=list)
    ended_by: Literal["stop", "close", "drop", "server_closed"] | None = None
    close_code: int | None = None
    close_reason: str | None = None
    ended_at: float | None = None

    @property
    def media_out(self) -> list[MediaOut]:
        return [f.message for f in self.received if isinstance(f.message, MediaOut)]

    @property
    def gaps_s(self) -> list[float]:
        """Wall time between consecutive playout segments."""
        return [
            later.started_at - earlier.ended_at
            for earlier, later in zip(self.segments, self.segments[1:], strict=False)
            if earlier.ended_at is not None
        ]
