"""One Deepgram socket's state for `actors.deepgram_link.DeepgramLink`, and its time mapping.

Deepgram's timestamps count the audio *this connection* has received, from 0; `Connection` maps
them back to call time. What must outlive a connection (replay audio, turns) is on the link.
"""

from __future__ import annotations

import bisect
import math
from typing import Any, Final

import attrs
import trio
from trio_websocket import WebSocketConnection

from actors.deepgram_errors import DeepgramLinkError

__all__ = ["TIMELINE_RUNS", "TIME_TOLERANCE_S", "Connection", "ConnectionOver"]

#: Call times closer than this count as equal (frame contiguity, "already finalised").
TIME_TOLERANCE_S: Final = 0.001
#: Contiguous runs of audio a connection remembers for mapping its times to call time.
TIMELINE_RUNS: Final = 1024


class ConnectionOver(Exception):
    """Internal: a send found the connection over; the reason is in ``Connection.failure``."""


@attrs.define(eq=False)
class Connection:
    """One socket's state; what must outlive it is on the link.

    It also maps the connection's audio time (seconds it has received, from 0) to call time.
    Deepgram's clock advances only with audio, so a gap in the call's audio (frames dropped under
    load or while reconnecting) would skew every later time: each contiguous run keeps its offset.
    """

    ws: WebSocketConnection
    outputs: list[trio.abc.SendChannel[Any]]  # those still open
    given_outputs: bool
    scope: trio.CancelScope = attrs.Factory(trio.CancelScope)
    ended: trio.Event = attrs.Factory(trio.Event)
    failure: DeepgramLinkError | None = None
    close_stream_sent: bool = False
    stuck: bool = False
    keepalive_due: float = 0.0
    run_starts: list[float] = attrs.Factory(list)  # connection time at which each run begins
    run_offsets: list[float] = attrs.Factory(list)  # call time minus connection time in it
    audio_s: float = 0.0
    next_call_s: float = math.nan

    def end(self, failure: DeepgramLinkError | None) -> None:
        """Over: closed as asked (None) or with ``failure`` (the first one wins)."""
        self.failure = self.failure or failure
        self.ended.set()
        if self.failure is not None or (self.given_outputs and not self.outputs):
            self.scope.cancel()

    def sent(self, call_time_s: float, duration_s: float) -> None:
        if not abs(call_time_s - self.next_call_s) <= TIME_TOLERANCE_S:  # NaN: the first frame
            self.run_starts.append(self.audio_s)
            self.run_offsets.append(call_time_s - self.audio_s)
            if len(self.run_starts) > TIMELINE_RUNS:
                del self.run_starts[0], self.run_offsets[0]
        self.audio_s += duration_s
        self.next_call_s = call_time_s + duration_s

    def offset_at(self, connection_s: float) -> float:
        index = bisect.bisect_right(self.run_starts, connection_s + TIME_TOLERANCE_S) - 1
        return self.run_offsets[max(index, 0)] if self.run_offsets else 0.0
