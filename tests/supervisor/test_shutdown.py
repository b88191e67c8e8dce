"""Graceful shutdown, end of input, auto shutdown, and channels that outlive a restart."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest
import trio

from supervisor import (
    AutoShutdown, ChildExited, ChildSpec, MailboxReceiver, MailboxSender, Restart, Supervisor,
    SupervisorEvent, SupervisorSpec, SupervisorStopped, cleanup_scope, open_mailbox,
)

from .children import Scripted, bounded, count_tasks, run_briefly


def inbox_reader(journal: list[str], name: str, got: list[int] | None = None
                 ) -> Callable[..., Awaitable[None]]:
    """An actor that works through its inbox until it ends (its polite stop)."""

    async def run(inbox: MailboxReceiver[int], *,
                  task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        journal.append(f"start {name}")
        async with inbox:
            task_status.started()
            async for item in inbox:
                await trio.sleep(0.1)
                if got is not None:
                    got.append(item)
        journal.append(f"stop {name}")

    return run


async def _exits(events: trio.abc.ReceiveChannel[SupervisorEvent]) -> dict[str, list[str]]:
    reasons: dict[str, list[str]] = {}
    async for event in events:
        if isinstance(event, ChildExited):
            reasons.setdefault(event.child, []).append(event.reason)
    return reasons


@bounded
async def test_stop_is_polite_and_in_reverse_start_order(autojump_clock: trio.abc.Clock) -> None:
    journal: list[str] = []
    got: list[int] = []
    specs, senders = [], []
    for name in "abc":
        send, recv = open_mailbox[int](8, name=f"{name}.inbox")
        specs.append(ChildSpec(name, inbox_reader(journal, name, got), {"inbox": recv}))
        senders.append(send)
    sup = Supervisor(SupervisorSpec("s", specs))
    events = sup.subscribe()
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        for i, send in enumerate(senders):
            send.send_nowait(i)
            send.send_nowait(i + 10)
        sup.stop("hangup")
        sup.stop("ignored: the first reason wins")
    assert journal == ["start a", "start b", "start c", "stop c", "stop b", "stop a"]
    assert sorted(got) == [0, 1, 2, 10, 11, 12]  # queued work drained before each stopped
    assert await _exits(events) == {"a": ["stopped"], "b": ["stopped"], "c": ["stopped"]}
    with pytest.raises(trio.BrokenResourceError):
        senders[0].send_nowait(99)  # the child is gone for good: its inbox is closed


@bounded
async def test_run_returns_the_stop_reason(autojump_clock: trio.abc.Clock) -> None:
    sup = Supervisor(SupervisorSpec("call-9", [ChildSpec("a", Scripted([], "a").run)]))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(lambda: _stop_later(sup))
        result = await sup.run()
    assert (result.name, result.reason) == ("call-9", "hangup")


async def _stop_later(sup: Supervisor) -> None:
    await trio.sleep(1)
    sup.stop("hangup")


@bounded
async def test_a_child_ignoring_the_polite_stop_is_cancelled_and_still_cleans_up(
        autojump_clock: trio.abc.Clock) -> None:
    journal: list[str] = []

    async def stubborn(inbox: MailboxReceiver[int], *,
                       task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        try:
            await trio.sleep_forever()  # never looks at its inbox
        finally:
            with cleanup_scope(1.0):
                await trio.sleep(0.5)  # closing a socket, say
                journal.append(f"closed at {trio.current_time():g}")
            with cleanup_scope(1.0) as scope:
                await trio.sleep(60)  # a dead peer: bounded
            journal.append(f"gave up closing: {scope.cancelled_caught}")

    _, recv = open_mailbox[int](4, name="inbox")
    sup = Supervisor(SupervisorSpec("s", [
        ChildSpec("first", Scripted(journal, "first").run, shutdown_s=0),
        ChildSpec("stubborn", stubborn, {"inbox": recv}, shutdown_s=2.0)]))
    events = sup.subscribe()
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        sup.stop()
    assert journal == ["start first", "closed at 2.5", "gave up closing: True", "stop first"]
    assert trio.current_time() == pytest.approx(3.5)
    assert (await _exits(events))["stubborn"] == ["cancelled"]


@bounded
async def test_queued_messages_survive_the_consumers_restart(autojump_clock: trio.abc.Clock) -> None:
    send, recv = open_mailbox[int](4, name="work")  # small: the producer blocks meanwhile
    received: list[list[int]] = []

    async def producer(out: MailboxSender[int], *,
                       task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with out:
            task_status.started()
            for i in range(10):
                await out.send(i)
            await trio.sleep_forever()

    async def consumer(inbox: MailboxReceiver[int], *,
                       task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        mine: list[int] = []
        received.append(mine)
        async with inbox:
            task_status.started()
            async for item in inbox:
                mine.append(item)
                if len(received) == 1 and len(mine) == 3:
                    raise RuntimeError("consumer bug")

    sup = Supervisor(SupervisorSpec("s", [ChildSpec("consumer", consumer, {"inbox": recv}),
                                          ChildSpec("producer", producer, {"out": send})]))
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        await trio.sleep(1)
        assert [i.restarts for i in sup.which_children()] == [1, 0]  # the producer never noticed
        sup.stop()
    assert received == [[0, 1, 2], [3, 4, 5, 6, 7, 8, 9]]


@bounded
async def test_end_of_input_travels_down_the_pipeline(autojump_clock: trio.abc.Clock) -> None:
    send, recv = open_mailbox[int](2, name="pipe")
    got: list[int] = []
    journal: list[str] = []

    async def producer(out: MailboxSender[int], *,
                       task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        for i in range(5):
            await out.send(i)
        # returns without closing `out`: the supervisor closes the clone and the original

    sup = Supervisor(SupervisorSpec("s", [
        ChildSpec("producer", producer, {"out": send}, restart=Restart.TRANSIENT),
        ChildSpec("consumer", inbox_reader(journal, "consumer", got), {"inbox": recv},
                  restart=Restart.TRANSIENT)]))
    events = sup.subscribe()
    result = await run_briefly(sup)
    assert result.reason == "all children exited"
    assert got == [0, 1, 2, 3, 4] and journal == ["start consumer", "stop consumer"]
    assert await _exits(events) == {"producer": ["returned"], "consumer": ["returned"]}


@pytest.mark.parametrize("mode", [AutoShutdown.ANY_SIGNIFICANT, AutoShutdown.ALL_SIGNIFICANT])
@bounded
async def test_auto_shutdown_when_significant_children_exit(
        autojump_clock: trio.abc.Clock, mode: AutoShutdown) -> None:
    journal: list[str] = []
    reader = Scripted(journal, "reader", then="return", up_s=3)
    other = Scripted(journal, "other", then="return", up_s=5)
    sup = Supervisor(SupervisorSpec("call-1", [
        ChildSpec("brain", Scripted(journal, "brain").run, shutdown_s=0),
        ChildSpec("reader", reader.run, restart=Restart.TRANSIENT, significant=True),
        ChildSpec("other", other.run, restart=Restart.TEMPORARY, significant=True, shutdown_s=0),
        ChildSpec("speaker", Scripted(journal, "speaker").run, shutdown_s=0)],
        auto_shutdown=mode))
    result = await run_briefly(sup)
    if mode is AutoShutdown.ANY_SIGNIFICANT:
        assert result.reason == "significant child 'reader' exited"
        assert trio.current_time() == 3
        assert journal[-3:] == ["stop speaker", "stop other", "stop brain"]
    else:
        assert result.reason == "all significant children exited"
        assert trio.current_time() == 5
        assert journal[-2:] == ["stop speaker", "stop brain"]


@bounded
async def test_stop_before_run_and_during_start_up(autojump_clock: trio.abc.Clock) -> None:
    early = Supervisor(SupervisorSpec("s", [ChildSpec("a", Scripted([], "a").run)]))
    early.stop("never mind")
    assert (await early.run()).reason == "never mind"

    journal: list[str] = []
    holder: list[Supervisor] = []

    async def slow_start(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        holder[0].stop("shutting down")
        await trio.sleep(10)  # "connecting"; cancelled by the stop
        task_status.started()

    sup = Supervisor(SupervisorSpec("s", [ChildSpec("a", Scripted(journal, "a").run, shutdown_s=0),
                                          ChildSpec("slow", slow_start),
                                          ChildSpec("c", Scripted(journal, "c").run)]))
    holder.append(sup)
    async with trio.open_nursery() as nursery:
        assert await nursery.start(sup.run) is sup
    assert journal == ["start a", "stop a"] and trio.current_time() < 1


@bounded
async def test_outer_cancellation_leaves_nothing_running(autojump_clock: trio.abc.Clock) -> None:
    journal: list[str] = []
    send, recv = open_mailbox[int](4, name="inbox")
    sup = Supervisor(SupervisorSpec("s", [
        ChildSpec("a", Scripted(journal, "a").run),
        ChildSpec("reader", inbox_reader(journal, "reader"), {"inbox": recv})]))
    events = sup.subscribe()
    before = count_tasks()
    with trio.move_on_after(5) as scope:
        await sup.run()
    assert scope.cancelled_caught and count_tasks() == before
    assert [e.reason for e in [e async for e in events]
            if isinstance(e, SupervisorStopped)] == ["cancelled"]
    assert sorted(journal) == ["start a", "start reader", "stop a"]  # reader was cancelled mid-loop
    with pytest.raises(trio.BrokenResourceError):
        send.send_nowait(1)  # its inbox was closed with it


@bounded
async def test_system_exit_from_a_child_is_not_swallowed(autojump_clock: trio.abc.Clock) -> None:
    async def exits(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        raise SystemExit(3)

    with pytest.raises(SystemExit):
        await run_briefly(Supervisor(SupervisorSpec("s", [ChildSpec("x", exits)])))


@bounded
async def test_a_childs_exception_group_is_a_failure_like_any_other(
        autojump_clock: trio.abc.Clock) -> None:
    async def grouped(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.sleep_forever)
            await trio.sleep(0.1)
            raise ConnectionError("socket closed")

    sup = Supervisor(SupervisorSpec("s", [ChildSpec("g", grouped, restart=Restart.TRANSIENT)],
                                    max_restarts=1))
    events = sup.subscribe()
    from supervisor import SupervisorGaveUp

    with pytest.raises(SupervisorGaveUp) as info:
        await run_briefly(sup)
    assert isinstance(info.value.error, ExceptionGroup)
    assert info.value.error.subgroup(ConnectionError) is not None
    assert (await _exits(events))["g"] == ["raised ExceptionGroup"] * 2
