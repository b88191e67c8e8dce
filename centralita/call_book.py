"""The call book: the calls we placed or answered through Telnyx Call Control, and their state.

A booked call is what call control knows about a call (who, which Telnyx leg, its stream token,
where it is in its life); the call *registry* (:mod:`centralita.calls`) holds the call's running
actors once its media stream has started. They share our ``call_id``: it is the dial's
``client_state`` (so every webhook names it), the value of the stream token in
``StreamTokens.issued``, and the registry's key.

State only moves forward — ``dialing`` (outbound) or ``incoming`` (inbound) → ``answered`` →
``streaming`` → ``ended`` — because Telnyx delivers webhooks out of order and twice: a late
``call.answered`` after ``streaming.started`` changes nothing, and the first end wins (a later
``call.hangup`` only fills in the ``hangup_cause``).

Bounded: ended calls stay ``keep_ended_s`` (10 min) for ``GET /api/calls`` and at most
``max_ended`` of them; processed webhook ids are remembered ``webhook_ids_ttl_s`` (15 min, well
past Telnyx's retries) and at most ``max_webhook_ids``. Dials that failed are forgotten at once,
but their call ids are remembered as *abandoned* for the same TTL, so that a call that did get
through after all (a timed-out dial) can be recognised by its webhooks and hung up.

Everything here is synchronous and cheap: the webhook route updates the book before answering.
"""

from __future__ import annotations

import collections
import enum
import time
from collections.abc import Callable, Iterable
from datetime import datetime, timezone
from typing import Any, Final, Literal

import attrs
import trio

__all__ = [
    "ENDED_KEEP_S",
    "MAX_ENDED_CALLS",
    "MAX_WEBHOOK_IDS",
    "WEBHOOK_IDS_TTL_S",
    "BookedCall",
    "CallBook",
    "CallState",
]

ENDED_KEEP_S: Final = 600.0
MAX_ENDED_CALLS: Final = 1000
WEBHOOK_IDS_TTL_S: Final = 900.0
MAX_WEBHOOK_IDS: Final = 100_000


class CallState(enum.Enum):
    DIALING = "dialing"
    INCOMING = "incoming"
    ANSWERED = "answered"
    STREAMING = "streaming"
    ENDED = "ended"


_RANK: Final = {CallState.DIALING: 0, CallState.INCOMING: 0, CallState.ANSWERED: 1,
                CallState.STREAMING: 2, CallState.ENDED: 3}


def _iso(t: float | None) -> str | None:
    if t is None:
        return None
    return datetime.fromtimestamp(t, timezone.utc).isoformat(timespec="milliseconds")


@attrs.define(eq=False)
class BookedCall:
    """One call as call control sees it. Times are Unix seconds (the book's clock)."""

    call_id: str
    direction: Literal["outbound", "inbound"]
    telefono: str | None
    stream_token: str = attrs.field(repr=False)
    created_at: float
    nombre: str | None = None
    call_control_id: str | None = None
    state: CallState = CallState.DIALING
    hangup_cause: str | None = None
    end_reason: str | None = None
    answered_at: float | None = None
    streaming_at: float | None = None
    stream_stopped_at: float | None = None
    ended_at: float | None = None
    #: Set when the call ends in the book (``call.hangup`` or our own end): waitable.
    ended_signal: trio.Event = attrs.field(factory=trio.Event, repr=False)

    @property
    def ended(self) -> bool:
        return self.state is CallState.ENDED

    def to_json(self, *, streaming: bool = False) -> dict[str, Any]:
        """The ``GET /api/calls`` shape; ``streaming``: its media stream is known to be up."""
        state = self.state
        if streaming and _RANK[state] < _RANK[CallState.STREAMING]:
            state = CallState.STREAMING
        return {
            "callId": self.call_id,
            "callControlId": self.call_control_id,
            "direction": self.direction,
            "nombre": self.nombre,
            "telefono": self.telefono,
            "state": state.value,
            "hangupCause": self.hangup_cause,
            "endReason": self.end_reason,
            "createdAt": _iso(self.created_at),
            "answeredAt": _iso(self.answered_at),
            "streamingAt": _iso(self.streaming_at),
            "endedAt": _iso(self.ended_at),
        }


@attrs.define(eq=False)
class CallBook:
    """The booked calls, an index by ``call_control_id``, and the processed webhook ids."""

    keep_ended_s: float = ENDED_KEEP_S
    max_ended: int = MAX_ENDED_CALLS
    webhook_ids_ttl_s: float = WEBHOOK_IDS_TTL_S
    max_webhook_ids: int = MAX_WEBHOOK_IDS
    clock: Callable[[], float] = time.time
    _calls: dict[str, BookedCall] = attrs.field(factory=dict, init=False)
    _by_control_id: dict[str, str] = attrs.field(factory=dict, init=False)
    _ended: collections.OrderedDict[str, float] = attrs.field(
        factory=collections.OrderedDict, init=False)
    _webhook_ids: collections.OrderedDict[str, float] = attrs.field(
        factory=collections.OrderedDict, init=False)
    _abandoned: collections.OrderedDict[str, float] = attrs.field(
        factory=collections.OrderedDict, init=False)

    # -- calls ----------------------------------------------------------------------------------

    def open(self, call_id: str, *, direction: Literal["outbound", "inbound"],
             stream_token: str, telefono: str | None, nombre: str | None = None,
             call_control_id: str | None = None) -> BookedCall:
        """Book a call we are about to dial (``dialing``) or answer (``incoming``)."""
        if call_id in self._calls:
            raise ValueError(f"call {call_id!r} is already booked")
        self.prune()
        call = BookedCall(call_id=call_id, direction=direction, telefono=telefono, nombre=nombre,
                          stream_token=stream_token, created_at=self.clock(),
                          state=CallState.DIALING if direction == "outbound"
                          else CallState.INCOMING)
        self._calls[call_id] = call
        if call_control_id is not None:
            self.set_control_id(call, call_control_id)
        return call

    def get(self, call_id: str) -> BookedCall | None:
        return self._calls.get(call_id)

    def by_control_id(self, call_control_id: str) -> BookedCall | None:
        call_id = self._by_control_id.get(call_control_id)
        return None if call_id is None else self._calls.get(call_id)

    def set_control_id(self, call: BookedCall, call_control_id: str) -> None:
        """Record the Telnyx leg (from the dial's answer or the first webhook, whichever first)."""
        if call.call_control_id == call_control_id:
            return
        if call.call_control_id is not None:
            self._by_control_id.pop(call.call_control_id, None)
        call.call_control_id = call_control_id
        self._by_control_id[call_control_id] = call.call_id

    def advance(self, call: BookedCall, state: CallState) -> bool:
        """Move ``call`` forward to ``state`` (``answered`` or ``streaming``); False if it was
        already there or past it (a late or repeated webhook)."""
        if state is CallState.ENDED:
            raise ValueError("use end() to end a call")
        if _RANK[state] <= _RANK[call.state]:
            return False
        now = self.clock()
        call.state = state
        if state is CallState.ANSWERED:
            call.answered_at = now
        elif state is CallState.STREAMING:
            call.streaming_at = now
            call.answered_at = call.answered_at or now
        return True

    def end(self, call: BookedCall, *, hangup_cause: str | None = None,
            reason: str | None = None) -> bool:
        """Mark ``call`` ended; True the first time. A later end only fills the missing cause."""
        if call.ended:
            if call.hangup_cause is None and hangup_cause is not None:
                call.hangup_cause = hangup_cause
            return False
        call.state = CallState.ENDED
        call.hangup_cause = hangup_cause
        call.end_reason = reason or (f"hangup: {hangup_cause}" if hangup_cause else "ended")
        call.ended_at = self.clock()
        call.ended_signal.set()
        self._ended[call.call_id] = call.ended_at
        self.prune()
        return True

    def abandon(self, call_id: str) -> BookedCall | None:
        """Forget a call whose dial failed; its id is remembered as abandoned for a while."""
        call = self._calls.pop(call_id, None)
        if call is not None and call.call_control_id is not None:
            self._by_control_id.pop(call.call_control_id, None)
        self._ended.pop(call_id, None)
        self._abandoned[call_id] = self.clock()
        return call

    def is_abandoned(self, call_id: str) -> bool:
        return call_id in self._abandoned

    def take_abandoned(self, call_id: str) -> bool:
        """True once for an abandoned call id (then forgotten): hang that call up once."""
        return self._abandoned.pop(call_id, None) is not None

    def callee_name_for(self, call_id: str) -> str | None:
        """The ``nombre`` given for the call (the Brain greets by it); None if unknown."""
        call = self._calls.get(call_id)
        return None if call is None else call.nombre

    def calls(self) -> list[BookedCall]:
        """Live and recently ended calls, oldest first."""
        self.prune()
        return sorted(self._calls.values(), key=lambda c: c.created_at)

    def live(self) -> Iterable[BookedCall]:
        return (c for c in self._calls.values() if not c.ended)

    # -- webhooks -------------------------------------------------------------------------------

    def first_sighting(self, webhook_id: str) -> bool:
        """True the first time a webhook id is seen (then remembered); False for a duplicate."""
        self._prune_ids(self._webhook_ids, self.webhook_ids_ttl_s, self.max_webhook_ids)
        if webhook_id in self._webhook_ids:
            return False
        self._webhook_ids[webhook_id] = self.clock()
        return True

    # -- bounds ---------------------------------------------------------------------------------

    def prune(self) -> None:
        """Drop ended calls past their keep time (or beyond ``max_ended``) and old ids."""
        now = self.clock()
        while self._ended:
            call_id, ended_at = next(iter(self._ended.items()))
            if ended_at + self.keep_ended_s > now and len(self._ended) <= self.max_ended:
                break
            del self._ended[call_id]
            call = self._calls.pop(call_id, None)
            if call is not None and call.call_control_id is not None:
                self._by_control_id.pop(call.call_control_id, None)
        self._prune_ids(self._abandoned, self.webhook_ids_ttl_s, self.max_webhook_ids)

    def _prune_ids(self, ids: collections.OrderedDict[str, float], ttl_s: float,
                   limit: int) -> None:
        now = self.clock()
        while ids:
            oldest = next(iter(ids.values()))
            if oldest + ttl_s > now and len(ids) < limit:
                break
            ids.popitem(last=False)
