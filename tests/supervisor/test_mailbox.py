"""Mailboxes: overflow policies, counters, end_input, and trio memory-channel semantics."""

from __future__ import annotations

import math
from typing import Any

import pytest
import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st

from supervisor import MailboxFull, Overflow, open_mailbox

from .children import bounded


@bounded
async def test_block_applies_backpressure_in_fifo_order(autojump_clock: trio.abc.Clock) -> None:
    send, recv = open_mailbox[int](2, name="m")
    send.send_nowait(1)
    send.send_nowait(2)
    with pytest.raises(trio.WouldBlock):
        send.send_nowait(3)  # a probe, not a loss: not counted
    unblocked: list[int] = []

    async def blocked_sender(value: int) -> None:
        await send.send(value)
        unblocked.append(value)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(blocked_sender, 3)
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(blocked_sender, 4)
        await trio.testing.wait_all_tasks_blocked()
        assert send.statistics().tasks_waiting_send == 2
        assert unblocked == []
        assert [await recv.receive() for _ in range(4)] == [1, 2, 3, 4]
    assert unblocked == [3, 4]
    stats = recv.statistics()
    assert (stats.sent, stats.received, stats.dropped, stats.rejected) == (4, 4, 0, 0)


async def test_drop_oldest_keeps_the_newest_and_counts_drops() -> None:
    send, recv = open_mailbox[int](3, Overflow.DROP_OLDEST, name="audio")
    for i in range(10):
        await send.send(i)  # never waits
    stats = send.statistics()
    assert (stats.queued, stats.sent, stats.dropped) == (3, 10, 7)
    assert [recv.receive_nowait() for _ in range(3)] == [7, 8, 9]
    assert recv.statistics().received == 3


async def test_fail_raises_mailbox_full_and_counts() -> None:
    send, recv = open_mailbox[str](1, Overflow.FAIL, name="cmd")
    await send.send("a")
    with pytest.raises(MailboxFull, match="'cmd' is full"):
        await send.send("b")
    with pytest.raises(trio.WouldBlock):  # MailboxFull is a WouldBlock
        send.send_nowait("c")
    stats = send.statistics()
    assert (stats.sent, stats.rejected, stats.queued) == (1, 2, 1)
    assert recv.receive_nowait() == "a"


@bounded
async def test_end_input_refuses_sends_drains_then_ends(autojump_clock: trio.abc.Clock) -> None:
    send, recv = open_mailbox[int](2, name="inbox")
    send.send_nowait(1)
    send.send_nowait(2)
    outcome: list[type[BaseException]] = []

    async def blocked_sender() -> None:
        try:
            await send.send(3)
        except trio.BrokenResourceError:
            outcome.append(trio.BrokenResourceError)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(blocked_sender)
        await trio.testing.wait_all_tasks_blocked()
        recv.end_input()
        recv.end_input()  # idempotent
    assert outcome == [trio.BrokenResourceError]
    with pytest.raises(trio.BrokenResourceError):
        send.send_nowait(4)
    assert [item async for item in recv] == [1, 2]
    with pytest.raises(trio.EndOfChannel):
        recv.receive_nowait()
    stats = recv.statistics()
    assert stats.ended and stats.sent == 2 and stats.open_send_handles == 1


@bounded
async def test_end_input_wakes_a_waiting_receiver(autojump_clock: trio.abc.Clock) -> None:
    send, recv = open_mailbox[int](2, name="inbox")
    got: list[str] = []

    async def waiter() -> None:
        with pytest.raises(trio.EndOfChannel):
            await recv.receive()
        got.append("end")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(waiter)
        await trio.testing.wait_all_tasks_blocked()
        recv.end_input()
    assert got == ["end"]


@bounded
async def test_close_semantics_mirror_trio(autojump_clock: trio.abc.Clock) -> None:
    send, recv = open_mailbox[int](4, name="m")
    send2 = send.clone()
    send.send_nowait(1)
    await send.aclose()
    with pytest.raises(trio.ClosedResourceError):
        send.send_nowait(2)
    with pytest.raises(trio.ClosedResourceError):
        send.clone()
    send2.send_nowait(2)
    send2.close()
    assert [await recv.receive(), await recv.receive()] == [1, 2]
    with pytest.raises(trio.EndOfChannel):  # every sender closed and buffer drained
        await recv.receive()

    send, recv = open_mailbox[int](1, name="m2")
    recv2 = recv.clone()
    send.send_nowait(1)
    recv.close()
    with pytest.raises(trio.ClosedResourceError):
        recv.receive_nowait()
    assert recv.statistics().open_receive_handles == 1
    recv2.close()
    with pytest.raises(trio.BrokenResourceError):
        await send.send(2)
    assert send.statistics().dropped == 1  # discarded with the last receiver, but counted


@bounded
async def test_closing_a_handle_wakes_its_own_blocked_tasks(autojump_clock: trio.abc.Clock) -> None:
    send, recv = open_mailbox[int](1, name="m")
    errors: list[type[BaseException]] = []

    async def receive_on(handle: Any) -> None:
        try:
            await handle.receive()
        except trio.ClosedResourceError:
            errors.append(trio.ClosedResourceError)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(receive_on, recv)
        await trio.testing.wait_all_tasks_blocked()
        recv.close()
    assert errors == [trio.ClosedResourceError]


@bounded
async def test_waiting_receivers_are_served_fifo(autojump_clock: trio.abc.Clock) -> None:
    send, recv = open_mailbox[int](1, name="m")
    got: list[tuple[str, int]] = []

    async def receiver(name: str) -> None:
        got.append((name, await recv.receive()))

    async with trio.open_nursery() as nursery:
        for name in "abc":
            nursery.start_soon(receiver, name)
            await trio.testing.wait_all_tasks_blocked()
        for i in range(3):
            send.send_nowait(i)  # hands over directly, buffer of one never fills
    assert sorted(got) == [("a", 0), ("b", 1), ("c", 2)]  # wake-up order is trio's to choose


@bounded
async def test_a_cancelled_send_leaves_the_mailbox_unchanged(autojump_clock: trio.abc.Clock) -> None:
    send, recv = open_mailbox[int](1, name="m")
    send.send_nowait(1)
    with trio.move_on_after(1):
        await send.send(2)
    assert send.statistics().tasks_waiting_send == 0
    assert recv.receive_nowait() == 1
    with pytest.raises(trio.WouldBlock):
        recv.receive_nowait()
    assert recv.statistics().sent == 1


@pytest.mark.parametrize(("capacity", "error"), [(0, ValueError), (math.inf, TypeError), (1.5, TypeError)])
def test_a_mailbox_is_always_bounded(capacity: Any, error: type[Exception]) -> None:
    with pytest.raises(error):
        open_mailbox(capacity, name="m")


# --- properties: one script of non-blocking operations, run against a trio memory channel too ---

OPS = st.lists(st.sampled_from(
    ["send", "send", "send", "receive", "receive", "clone_send", "clone_recv",
     "close_send", "close_recv", "end_input"]), max_size=40)


def _apply(op: str, i: int, senders: list[Any], receivers: list[Any]) -> str:
    try:
        if op == "send":
            senders[-1].send_nowait(i)
        elif op == "receive":
            return f"got {receivers[-1].receive_nowait()}"
        elif op == "clone_send":
            senders.append(senders[-1].clone())
        elif op == "clone_recv":
            receivers.append(receivers[-1].clone())
        elif op == "close_send":
            senders[-1].close()
        elif op == "close_recv":
            receivers[-1].close()
    except (trio.WouldBlock, trio.EndOfChannel, trio.BrokenResourceError,
            trio.ClosedResourceError) as exc:
        return type(exc).__name__
    return "ok"


@given(OPS, st.integers(1, 4))
def test_block_mailbox_behaves_like_a_memory_channel(ops: list[str], capacity: int) -> None:
    mine = open_mailbox[int](capacity, name="m")
    theirs = trio.open_memory_channel[int](capacity)
    my_s, my_r, their_s, their_r = [mine[0]], [mine[1]], [theirs[0]], [theirs[1]]
    for i, op in enumerate(o for o in ops if o != "end_input"):
        assert _apply(op, i, my_s, my_r) == _apply(op, i, their_s, their_r), op


@given(OPS, st.integers(1, 4), st.sampled_from(list(Overflow)))
def test_counters_always_add_up(ops: list[str], capacity: int, overflow: Overflow) -> None:
    send, recv = open_mailbox[int](capacity, overflow, name="m")
    senders, receivers = [send], [recv]
    for i, op in enumerate(ops):
        if op == "end_input":
            recv.end_input()
        else:
            try:
                _apply(op, i, senders, receivers)
            except MailboxFull:
                pass
        s = send.statistics()
        assert s.queued == s.sent - s.received - s.dropped
        assert 0 <= s.queued <= s.capacity
        assert s.open_send_handles == sum(not h._closed for h in senders)
        assert s.open_receive_handles == sum(not h._closed for h in receivers)
