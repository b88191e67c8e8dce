"""The relay hub: per-call backlogs with sequence numbers, and bounded fan-out to subscribers.

Transport-free: the hub never touches a socket. A publisher calls :meth:`RelayHub.publish` (sync,
never blocks); each subscriber is a :class:`Subscription` with a bounded queue of
:class:`Delivery` objects that its transport drains. One event is encoded once, whatever the number
of subscribers: every queue holds the same ``Delivery``, and a transport caches its wire bytes (the
WebSocket frame) on it, so they too are built once per event.

Transports learn about work through the subscription's ``notify`` callback, called when a queue
goes from idle to pending (not once per event) and on every kick. The default wakes
:meth:`Subscription.next_frames` (a task per subscriber, the ASGI path); the front door's fan-out
writer passes its own, which puts the subscription on one shared ready list.

Invariants:
- ``seq`` is per call, 1, 2, 3 ... in publish order; the backlog keeps the last ``backlog_events``.
- A subscriber that falls ``queue_frames`` behind is cut off (close code 1013) and counted: it can
  never slow the publisher or another subscriber, and memory stays bounded.
- A call's backlog is dropped ``backlog_ttl_s`` after its last event (the ``run`` janitor); a room
  (the set of a call's subscribers) is dropped with its last subscriber.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final

import attrs
import trio

from protocols import relay as wire

log = logging.getLogger(__name__)

BACKLOG_EVENTS: Final = 50
SUBSCRIBER_QUEUE_FRAMES: Final = 512
SWEEP_INTERVAL_MAX_S: Final = 60.0
FIREHOSE: Final = "*"

CLOSE_GOING_AWAY: Final = 1001
CLOSE_TRY_AGAIN_LATER: Final = 1013


@attrs.define(eq=False, slots=True)
class Delivery:
    """One event (or gap notice) as subscribers receive it, shared by all of their queues.

    ``text`` is the JSON text of the frame. ``frame`` is a cache for a transport's wire bytes of it
    (the fan-out writer puts the WebSocket frame there on first use), so that an event is framed
    once, not once per subscriber.
    """

    text: str
    frame: bytes | None = None


Notify = Callable[["Subscription"], object]


def _wake_reader(sub: Subscription) -> None:
    sub._wakeup.set()  # noqa: SLF001 - the default notify belongs to the class


@attrs.define(eq=False, slots=True)
class Subscription:
    """One subscriber's view of the hub: a bounded queue of deliveries and a reason to stop.

    The hub appends to :attr:`queue` and calls ``notify(self)`` when the queue goes from idle to
    pending (:attr:`scheduled` records that) and whenever it is kicked. A transport takes what it can
    send from the queue and clears :attr:`scheduled` once the queue is empty, so the next delivery
    notifies again. Once :attr:`close_code` is set, nothing more is queued: the transport closes the
    socket with that code. :attr:`transport` is the transport's own per-subscriber state.

    The default ``notify`` serves :meth:`next_frames`, for a transport with one task per subscriber.
    """

    call_id: str
    limit: int
    notify: Notify = _wake_reader
    queue: list[Delivery] = attrs.field(factory=list)
    close_code: int | None = None
    close_reason: str = ""
    scheduled: bool = False
    transport: Any = None
    _wakeup: trio.Event = attrs.field(factory=trio.Event)

    def offer(self, delivery: Delivery) -> bool:
        """Queue a delivery without blocking; False if the subscriber is too far behind."""
        if len(self.queue) >= self.limit:
            return False
        self.queue.append(delivery)
        if not self.scheduled:
            self.scheduled = True
            self.notify(self)
        return True

    def kick(self, code: int, reason: str) -> None:
        """Ask the transport to close this subscriber with ``code`` as soon as it can."""
        if self.close_code is None:
            self.close_code = code
            self.close_reason = reason
        self.queue.clear()
        self.scheduled = True
        self.notify(self)

    async def next_frames(self) -> list[Delivery] | None:
        """Wait for deliveries; return all queued ones at once, or None once kicked."""
        while True:
            if self.close_code is not None:
                await trio.lowlevel.checkpoint()
                return None
            if self.queue:
                await trio.lowlevel.checkpoint()
                frames = self.queue
                self.queue = []
                self.scheduled = False
                return frames
            await self._wakeup.wait()
            self._wakeup = trio.Event()


@attrs.define
class _Backlog:
    last_seq: int = 0
    last_event_at: float = 0.0
    events: deque[tuple[int, Delivery]] = attrs.field(
        factory=lambda: deque(maxlen=BACKLOG_EVENTS))


@attrs.frozen
class RelayStatistics:
    rooms: int
    subscribers: int
    backlog_calls: int
    events_total: int
    slow_subscribers_closed_total: int


@attrs.define(eq=False)
class RelayHub:
    """Sequenced per-call fan-out of relay events.

    Args:
        backlog_ttl_s: how long a call's backlog outlives its last event.
        queue_frames: per-subscriber send-queue bound; past it the subscriber is closed (1013).
        wall_clock: source of the ``ts`` field (epoch seconds); injectable for tests.
    """

    backlog_ttl_s: float = 3600.0
    queue_frames: int = SUBSCRIBER_QUEUE_FRAMES
    wall_clock: Callable[[], float] = time.time
    _rooms: dict[str, set[Subscription]] = attrs.field(factory=dict, init=False)
    _backlogs: dict[str, _Backlog] = attrs.field(factory=dict, init=False)
    _firehose: set[Subscription] = attrs.field(factory=set, init=False)
    _events_total: int = attrs.field(default=0, init=False)
    _slow_closed_total: int = attrs.field(default=0, init=False)
    _closing: bool = attrs.field(default=False, init=False)

    # -- publishing ---------------------------------------------------------------------------
    def publish(self, call_id: str, event: Mapping[str, Any]) -> int:
        """Sequence, remember and deliver one event; returns its ``seq``. Never blocks."""
        backlog = self._backlogs.get(call_id)
        if backlog is None:
            backlog = self._backlogs[call_id] = _Backlog()
        seq = backlog.last_seq + 1
        backlog.last_seq = seq
        backlog.last_event_at = trio.current_time()
        delivery = Delivery(wire.encode_delivery(event, seq, self.wall_clock()))
        backlog.events.append((seq, delivery))
        self._events_total += 1
        room = self._rooms.get(call_id)
        if room:
            self._deliver(delivery, room)
        if self._firehose:
            self._deliver(delivery, self._firehose)
        return seq

    def _deliver(self, delivery: Delivery, subscribers: Iterable[Subscription]) -> None:
        # The hot loop (once per event per subscriber): Subscription.offer, inlined.
        slow: list[Subscription] = []
        for sub in subscribers:
            queue = sub.queue
            if len(queue) >= sub.limit:
                slow.append(sub)
                continue
            queue.append(delivery)
            if not sub.scheduled:
                sub.scheduled = True
                sub.notify(sub)
        for sub in slow:
            self._slow_closed_total += 1
            log.warning("relay subscriber too slow, closing", extra={"call_id": sub.call_id,
                                                                       "queued": len(sub.queue)})
            sub.kick(CLOSE_TRY_AGAIN_LATER, "subscriber too slow")
            self.unsubscribe(sub)

    # -- subscribing --------------------------------------------------------------------------
    def subscribe(self, call_id: str, since: int | None = None, *,
                  notify: Notify | None = None) -> Subscription:
        """Register a subscriber; its queue starts with the backlog (after ``since``, if given).

        If events after ``since`` already left the backlog, the first frame is a ``gap`` event
        naming the missing range. ``call_id == "*"`` subscribes to live events of every call.
        ``notify`` replaces the default wake-up of :meth:`Subscription.next_frames` (see the
        module docstring); it may be called before this returns (backlog, or a kick when closing).
        """
        sub = Subscription(call_id=call_id, limit=self.queue_frames)
        if notify is not None:
            sub.notify = notify
        if self._closing:
            sub.kick(CLOSE_GOING_AWAY, "relay shutting down")
            return sub
        if call_id == FIREHOSE:
            self._firehose.add(sub)
            return sub
        backlog = self._backlogs.get(call_id)
        if backlog is not None and backlog.events:
            after = 0 if since is None else since
            oldest = backlog.events[0][0]
            if since is not None and oldest > after + 1 and backlog.last_seq > after:
                gap = wire.Gap(call_id=call_id, from_seq=after + 1, to_seq=oldest - 1)
                sub.offer(Delivery(wire.encode_gap(gap)))
            for seq, delivery in backlog.events:
                if seq > after:
                    sub.offer(delivery)
        self._rooms.setdefault(call_id, set()).add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        if sub.call_id == FIREHOSE:
            self._firehose.discard(sub)
            return
        room = self._rooms.get(sub.call_id)
        if room is not None:
            room.discard(sub)
            if not room:
                del self._rooms[sub.call_id]

    # -- lifecycle ----------------------------------------------------------------------------
    def close_all(self, code: int = CLOSE_GOING_AWAY, reason: str = "relay shutting down") -> None:
        """Kick every subscriber (shutdown) and refuse new ones.

        Kicked subscribers leave their rooms at once: nothing more is queued for them while their
        transports close the sockets.
        """
        self._closing = True
        subs = [*self._firehose, *(s for room in self._rooms.values() for s in room)]
        self._firehose.clear()
        self._rooms.clear()
        for sub in subs:
            sub.kick(code, reason)

    def expire_backlogs(self) -> int:
        """Drop backlogs whose last event is older than the TTL; returns how many."""
        horizon = trio.current_time() - self.backlog_ttl_s
        stale = [cid for cid, b in self._backlogs.items() if b.last_event_at <= horizon]
        for cid in stale:
            del self._backlogs[cid]
        return len(stale)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The janitor: drops expired backlogs, forever."""
        interval = min(SWEEP_INTERVAL_MAX_S, max(self.backlog_ttl_s / 4, 0.01))
        task_status.started()
        while True:
            await trio.sleep(interval)
            self.expire_backlogs()

    def statistics(self) -> RelayStatistics:
        return RelayStatistics(
            rooms=len(self._rooms),
            subscribers=sum(len(r) for r in self._rooms.values()) + len(self._firehose),
            backlog_calls=len(self._backlogs),
            events_total=self._events_total,
            slow_subscribers_closed_total=self._slow_closed_total,
        )
