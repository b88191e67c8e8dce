"""Bounded mailboxes: trio memory channels with an overflow policy, counters and a polite stop.

trio's memory channels are the model here and their semantics are kept exactly: handles are
cloned and closed independently; receivers get `trio.EndOfChannel` once every send handle is
closed and the buffer is drained; senders get `trio.BrokenResourceError` once every receive handle
is closed; a closed handle raises `trio.ClosedResourceError`; blocked tasks are served in FIFO
order; every operation is atomic with respect to cancellation.

What memory channels lack, and a real-time pipeline needs, is added:

* a declared overflow policy (`Overflow`): back-pressure, drop-oldest (live audio: stale frames
  are worthless) or fail fast;
* counters (`MailboxStatistics`), so that nothing is ever lost silently;
* `MailboxReceiver.end_input`, the owner's polite stop: no more sends are accepted, what is queued
  still drains, then the receiver sees `trio.EndOfChannel`. The supervisor uses it to ask a child
  to finish its work and return.

A mailbox is always bounded (``capacity >= 1``); there is no ``math.inf``.
"""

from __future__ import annotations

import enum
from collections import OrderedDict, deque
from types import TracebackType
from typing import Generic, Self, TypeVar, final

import attrs
import trio
from outcome import Error, Value

__all__ = [
    "MailboxFull",
    "MailboxReceiver",
    "MailboxSender",
    "MailboxStatistics",
    "Overflow",
    "open_mailbox",
]

T = TypeVar("T")


class Overflow(enum.Enum):
    """What a send does when the mailbox already holds ``capacity`` items."""

    BLOCK = "block"
    """`send` waits for room (back-pressure); `send_nowait` raises `trio.WouldBlock`."""
    DROP_OLDEST = "drop_oldest"
    """Sends never wait: the oldest queued item is discarded (and counted in ``dropped``)."""
    FAIL = "fail"
    """Sends never wait: the new item is refused with `MailboxFull` (and counted in ``rejected``)."""


class MailboxFull(trio.WouldBlock):
    """Raised by `send` and `send_nowait` on a full mailbox whose policy is `Overflow.FAIL`.

    It subclasses `trio.WouldBlock` so that code written against ``send_nowait`` (which raises
    ``WouldBlock`` when full) handles every policy the same way; unlike a plain ``WouldBlock`` it
    is also raised by the awaiting `send`, and it is counted in ``MailboxStatistics.rejected``.
    """


@attrs.frozen
class MailboxStatistics:
    """A snapshot of one mailbox, shared by all of its handles.

    ``queued == sent - received - dropped`` always holds: ``sent`` counts items the mailbox
    accepted, ``dropped`` those it discarded (evicted by `Overflow.DROP_OLDEST`, or still queued
    when the last receiver closed), ``rejected`` the sends refused by `Overflow.FAIL`.
    """

    name: str
    capacity: int
    overflow: Overflow
    queued: int
    sent: int
    received: int
    dropped: int
    rejected: int
    open_send_handles: int
    open_receive_handles: int
    tasks_waiting_send: int
    tasks_waiting_receive: int
    ended: bool
    """True once `MailboxReceiver.end_input` was called."""


class _State(Generic[T]):
    __slots__ = (
        "name", "capacity", "overflow", "data", "send_tasks", "receive_tasks",
        "open_send", "open_receive", "ended", "sent", "received", "dropped", "rejected",
    )

    def __init__(self, name: str, capacity: int, overflow: Overflow) -> None:
        self.name = name
        self.capacity = capacity
        self.overflow = overflow
        self.data: deque[T] = deque()
        # Blocked tasks in arrival order (FIFO fairness). A blocked sender's item is not "sent"
        # until the mailbox takes it.
        self.send_tasks: OrderedDict[trio.lowlevel.Task, T] = OrderedDict()
        self.receive_tasks: OrderedDict[trio.lowlevel.Task, None] = OrderedDict()
        self.open_send = 0
        self.open_receive = 0
        self.ended = False
        self.sent = 0
        self.received = 0
        self.dropped = 0
        self.rejected = 0

    def statistics(self) -> MailboxStatistics:
        return MailboxStatistics(
            name=self.name, capacity=self.capacity, overflow=self.overflow,
            queued=len(self.data), sent=self.sent, received=self.received,
            dropped=self.dropped, rejected=self.rejected,
            open_send_handles=self.open_send, open_receive_handles=self.open_receive,
            tasks_waiting_send=len(self.send_tasks),
            tasks_waiting_receive=len(self.receive_tasks), ended=self.ended,
        )

    def accepts_input(self) -> bool:
        return self.open_receive > 0 and not self.ended

    def wake_receivers_at_end(self) -> None:
        # Called when input can no longer arrive (last sender closed, or input ended): blocked
        # receivers necessarily face an empty buffer, so they see the end now.
        for task in self.receive_tasks:
            task.custom_sleep_data._tasks.remove(task)
            trio.lowlevel.reschedule(task, Error(trio.EndOfChannel()))
        self.receive_tasks.clear()

    def refuse_blocked_senders(self) -> None:
        for task in self.send_tasks:
            task.custom_sleep_data._tasks.remove(task)
            trio.lowlevel.reschedule(task, Error(trio.BrokenResourceError()))
        self.send_tasks.clear()


@final
class open_mailbox(tuple["MailboxSender[T]", "MailboxReceiver[T]"]):  # noqa: N801
    """Open a bounded mailbox; returns ``(sender, receiver)``, data flowing left to right.

    Written as a class, like `trio.open_memory_channel`, so that the item type can be given:
    ``send, recv = open_mailbox[AudioFrame](50, Overflow.DROP_OLDEST, name="audio_in")``.

    Args:
      capacity: how many items may wait in the mailbox; at least 1.
      overflow: what a send does when the mailbox is full (see `Overflow`).
      name: shown in `statistics`, reprs and supervisor logs.

    Raises:
      ValueError: capacity is below 1.
      TypeError: capacity is not an int (there are no unbounded mailboxes).
    """

    def __new__(  # type: ignore[misc]  # returns a plain tuple, like trio's
        cls, capacity: int, overflow: Overflow = Overflow.BLOCK, *, name: str
    ) -> tuple[MailboxSender[T], MailboxReceiver[T]]:
        if not isinstance(capacity, int) or isinstance(capacity, bool):
            raise TypeError(f"mailbox {name!r}: capacity must be an int, got {capacity!r}")
        if capacity < 1:
            raise ValueError(f"mailbox {name!r}: capacity must be >= 1, got {capacity}")
        if not isinstance(overflow, Overflow):
            raise TypeError(f"mailbox {name!r}: overflow must be an Overflow, got {overflow!r}")
        state: _State[T] = _State(name, capacity, overflow)
        return MailboxSender(state), MailboxReceiver(state)

    def __init__(
        self, capacity: int, overflow: Overflow = Overflow.BLOCK, *, name: str
    ) -> None: ...


class _Handle(Generic[T]):
    __slots__ = ("_state", "_closed", "_tasks")

    def __init__(self, state: _State[T]) -> None:
        self._state = state
        self._closed = False
        # Tasks blocked on this very handle, so that closing it wakes them.
        self._tasks: set[trio.lowlevel.Task] = set()

    @property
    def name(self) -> str:
        """The mailbox's name."""
        return self._state.name

    def statistics(self) -> MailboxStatistics:
        """Return a snapshot of the mailbox (shared by every handle)."""
        return self._state.statistics()

    def __repr__(self) -> str:
        closed = " closed" if self._closed else ""
        return f"<{type(self).__name__} {self._state.name!r}{closed}>"

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


@final
class MailboxSender(_Handle[T], trio.abc.SendChannel[T]):
    """The sending side of a mailbox; `clone` it to give each producer its own handle."""

    __slots__ = ()

    def __init__(self, state: _State[T]) -> None:
        super().__init__(state)
        state.open_send += 1

    @trio.lowlevel.enable_ki_protection
    def send_nowait(self, value: T) -> None:
        """Put ``value`` in the mailbox without waiting.

        Raises:
          trio.WouldBlock: the mailbox is full and its policy is `Overflow.BLOCK`.
          MailboxFull: the mailbox is full and its policy is `Overflow.FAIL` (counted).
          trio.BrokenResourceError: every receiver is closed, or the input was ended.
          trio.ClosedResourceError: this handle is closed.
        """
        state = self._state
        if self._closed:
            raise trio.ClosedResourceError
        if state.open_receive == 0 or state.ended:
            raise trio.BrokenResourceError
        if state.receive_tasks:
            # A receiver is waiting, so the buffer is empty: hand the item over directly.
            task, _ = state.receive_tasks.popitem(last=False)
            task.custom_sleep_data._tasks.remove(task)
            state.sent += 1
            state.received += 1
            trio.lowlevel.reschedule(task, Value(value))
        elif len(state.data) < state.capacity:
            state.data.append(value)
            state.sent += 1
        elif state.overflow is Overflow.DROP_OLDEST:
            state.data.popleft()
            state.data.append(value)
            state.sent += 1
            state.dropped += 1
        elif state.overflow is Overflow.FAIL:
            state.rejected += 1
            raise MailboxFull(f"mailbox {state.name!r} is full ({state.capacity} items)")
        else:
            raise trio.WouldBlock

    @trio.lowlevel.enable_ki_protection
    async def send(self, value: T) -> None:
        """Put ``value`` in the mailbox; with `Overflow.BLOCK`, wait for room when it is full.

        Raises what `send_nowait` raises, except `trio.WouldBlock`; a handle closed while this
        call waits makes it raise `trio.ClosedResourceError`.
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        try:
            self.send_nowait(value)
        except MailboxFull:
            await trio.lowlevel.cancel_shielded_checkpoint()
            raise
        except trio.WouldBlock:
            pass
        else:
            await trio.lowlevel.cancel_shielded_checkpoint()
            return

        task = trio.lowlevel.current_task()
        self._tasks.add(task)
        self._state.send_tasks[task] = value
        task.custom_sleep_data = self

        def abort_fn(_: trio.lowlevel.RaiseCancelT) -> trio.lowlevel.Abort:
            self._tasks.remove(task)
            del self._state.send_tasks[task]
            return trio.lowlevel.Abort.SUCCEEDED

        await trio.lowlevel.wait_task_rescheduled(abort_fn)

    @trio.lowlevel.enable_ki_protection
    def clone(self) -> MailboxSender[T]:
        """Return a new, independent send handle on the same mailbox."""
        if self._closed:
            raise trio.ClosedResourceError
        return MailboxSender(self._state)

    @trio.lowlevel.enable_ki_protection
    def close(self) -> None:
        """Close this handle (idempotent); the last one closed ends the receivers' input."""
        if self._closed:
            return
        self._closed = True
        state = self._state
        for task in self._tasks:
            trio.lowlevel.reschedule(task, Error(trio.ClosedResourceError()))
            del state.send_tasks[task]
        self._tasks.clear()
        state.open_send -= 1
        if state.open_send == 0:
            state.wake_receivers_at_end()

    async def aclose(self) -> None:
        """Close this handle; a checkpoint, like every trio ``aclose``."""
        self.close()
        await trio.lowlevel.checkpoint()


@final
class MailboxReceiver(_Handle[T], trio.abc.ReceiveChannel[T]):
    """The receiving side of a mailbox: what an actor iterates with ``async for``."""

    __slots__ = ()

    def __init__(self, state: _State[T]) -> None:
        super().__init__(state)
        state.open_receive += 1

    @trio.lowlevel.enable_ki_protection
    def receive_nowait(self) -> T:
        """Take the oldest item without waiting.

        Raises:
          trio.WouldBlock: the mailbox is empty but more input may come.
          trio.EndOfChannel: the mailbox is empty and every sender is closed, or input was ended.
          trio.ClosedResourceError: this handle is closed.
        """
        state = self._state
        if self._closed:
            raise trio.ClosedResourceError
        if state.send_tasks:
            # The buffer is full and a sender waits: its item takes the freed slot.
            task, value = state.send_tasks.popitem(last=False)
            task.custom_sleep_data._tasks.remove(task)
            trio.lowlevel.reschedule(task)
            state.data.append(value)
            state.sent += 1
        if state.data:
            state.received += 1
            return state.data.popleft()
        if state.open_send == 0 or state.ended:
            raise trio.EndOfChannel
        raise trio.WouldBlock

    @trio.lowlevel.enable_ki_protection
    async def receive(self) -> T:
        """Take the oldest item, waiting for one if needed; raises what `receive_nowait` does."""
        await trio.lowlevel.checkpoint_if_cancelled()
        try:
            value = self.receive_nowait()
        except trio.WouldBlock:
            pass
        else:
            await trio.lowlevel.cancel_shielded_checkpoint()
            return value

        task = trio.lowlevel.current_task()
        self._tasks.add(task)
        self._state.receive_tasks[task] = None
        task.custom_sleep_data = self

        def abort_fn(_: trio.lowlevel.RaiseCancelT) -> trio.lowlevel.Abort:
            self._tasks.remove(task)
            del self._state.receive_tasks[task]
            return trio.lowlevel.Abort.SUCCEEDED

        return await trio.lowlevel.wait_task_rescheduled(abort_fn)

    @trio.lowlevel.enable_ki_protection
    def end_input(self) -> None:
        """Stop accepting input, politely: the owner's way to ask its consumer to finish.

        From now on every send raises `trio.BrokenResourceError` (senders blocked on a full
        mailbox are woken with it; their items were never accepted). What is already queued still
        drains; then receivers get `trio.EndOfChannel`, exactly as if every sender had closed.
        Idempotent, and allowed on a closed handle, since it only ever makes the mailbox accept
        less. It cannot be undone.
        """
        state = self._state
        if state.ended:
            return
        state.ended = True
        state.refuse_blocked_senders()
        if not state.data:
            state.wake_receivers_at_end()

    @trio.lowlevel.enable_ki_protection
    def clone(self) -> MailboxReceiver[T]:
        """Return a new, independent receive handle on the same mailbox."""
        if self._closed:
            raise trio.ClosedResourceError
        return MailboxReceiver(self._state)

    @trio.lowlevel.enable_ki_protection
    def close(self) -> None:
        """Close this handle (idempotent).

        When the last receive handle closes, senders get `trio.BrokenResourceError` and whatever
        was still queued is discarded and counted in ``dropped``.
        """
        if self._closed:
            return
        self._closed = True
        state = self._state
        for task in self._tasks:
            trio.lowlevel.reschedule(task, Error(trio.ClosedResourceError()))
            del state.receive_tasks[task]
        self._tasks.clear()
        state.open_receive -= 1
        if state.open_receive == 0:
            state.refuse_blocked_senders()
            state.dropped += len(state.data)
            state.data.clear()

    async def aclose(self) -> None:
        """Close this handle; a checkpoint, like every trio ``aclose``."""
        self.close()
        await trio.lowlevel.checkpoint()
