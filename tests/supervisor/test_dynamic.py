"""Dynamic children: a registry of call supervisors, started and stopped at scale, isolated."""

from __future__ import annotations

from functools import partial

import pytest
import trio

from supervisor import (
    ChildExited, ChildSpec, ChildStartFailed, ChildState, MailboxReceiver, MailboxSender, Restart,
    Strategy, Supervisor, SupervisorGaveUp, SupervisorNotRunning, SupervisorSpec, open_mailbox,
    supervisor_child,
)

from .children import Scripted, bounded, count_tasks, launch


async def reader(inbox: MailboxReceiver[int], got: list[int] | None = None, *,
                 task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    async with inbox:
        task_status.started()
        async for item in inbox:
            if got is not None:
                got.append(item)


async def ticker(out: MailboxSender[int], *,
                 task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    async with out:
        task_status.started()
        for i in range(3):
            await out.send(i)
            await trio.sleep(1)
        await trio.sleep_forever()


def call_spec(call_id: str) -> SupervisorSpec:
    """A call-shaped supervisor: a producer feeding a worker, plus an idle sidecar."""
    send, recv = open_mailbox[int](8, name=f"{call_id}.inbox")
    return SupervisorSpec(call_id, [
        ChildSpec("worker", reader, {"inbox": recv}),
        ChildSpec("ticker", ticker, {"out": send}, shutdown_s=0.5),
        ChildSpec("sidecar", Scripted([], "sidecar").run, shutdown_s=0),
    ], strategy=Strategy.REST_FOR_ONE)


@bounded
async def test_a_thousand_call_supervisors_leave_no_task_behind(
        autojump_clock: trio.abc.Clock) -> None:
    before = count_tasks()
    async with trio.open_nursery() as nursery:
        registry = await launch(nursery, SupervisorSpec("registry"))
        root = registry.supervisor
        for i in range(1000):
            call = await root.start_child(
                supervisor_child(partial(call_spec, f"call-{i}"), name=f"call-{i}"))
            assert isinstance(call, Supervisor) and len(call.which_children()) == 3
        assert len(root.which_children()) == 1000
        assert count_tasks() >= before + 1000 * 4  # each call: its supervisor + 3 children
        await trio.sleep(5)
        for i in range(0, 1000, 2):  # half hang up one by one...
            assert await root.terminate_child(f"call-{i}")
        assert len(root.which_children()) == 500
        root.stop("draining")  # ...the rest go with the registry
        await registry.done.wait()
    assert registry.exit is not None and registry.exit.reason == "draining"
    assert count_tasks() == before


@bounded
async def test_an_escalating_call_does_not_disturb_its_sibling(autojump_clock: trio.abc.Clock) -> None:
    got: list[int] = []
    to_b, inbox_b = open_mailbox[int](16, name="b.inbox")
    doomed = Scripted([], "doomed", failures=100, up_s=1)
    spec_a = SupervisorSpec("call-a", [ChildSpec("doomed", doomed.run)], max_restarts=1)
    spec_b = SupervisorSpec("call-b", [ChildSpec("worker", partial(reader, got=got), {"inbox": inbox_b})])
    async with trio.open_nursery() as nursery:
        # zero tolerance at the top: temporary children never count toward intensity
        registry = await launch(nursery, SupervisorSpec("registry", max_restarts=0))
        root = registry.supervisor
        events = root.subscribe()
        await root.start_child(supervisor_child(spec_a))
        await root.start_child(supervisor_child(spec_b))
        for i in range(5):
            await to_b.send(i)
        await trio.sleep(5)  # call-a escalates at t=2
        assert doomed.incarnations == 2
        assert [c.name for c in root.which_children()] == ["call-b"]
        for i in range(5, 10):
            await to_b.send(i)
        await trio.sleep(1)
        assert got == list(range(10))
        root.stop()
    exits = [e async for e in events if isinstance(e, ChildExited)]
    assert [(e.child, e.reason) for e in exits] == [("call-a", "raised SupervisorGaveUp"),
                                                    ("call-b", "stopped")]
    assert isinstance(exits[0].exception, SupervisorGaveUp)
    assert isinstance(exits[0].exception.error, ValueError)


@bounded
async def test_start_child_errors(autojump_clock: trio.abc.Clock) -> None:
    root = Supervisor(SupervisorSpec("registry"))
    spec = ChildSpec("x", Scripted([], "x").run, restart=Restart.TEMPORARY)
    with pytest.raises(SupervisorNotRunning):
        await root.start_child(spec)

    async def broken(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        raise ConnectionRefusedError("upstream down")

    async with trio.open_nursery() as nursery:
        await nursery.start(root.run)
        assert await root.start_child(spec) is None
        with pytest.raises(ValueError, match="already has a child 'x'"):
            await root.start_child(spec)
        with pytest.raises(ChildStartFailed, match="raised ConnectionRefusedError") as info:
            await root.start_child(ChildSpec("broken", broken))
        assert isinstance(info.value.__cause__, ConnectionRefusedError)
        assert [c.name for c in root.which_children()] == ["x"]  # the registry is unharmed
        root.stop()
        with pytest.raises(SupervisorNotRunning):
            await root.start_child(ChildSpec("late", Scripted([], "late").run))


@bounded
async def test_terminate_child_and_which_children(autojump_clock: trio.abc.Clock) -> None:
    journal: list[str] = []
    send, recv = open_mailbox[int](4, name="w.inbox")
    async with trio.open_nursery() as nursery:
        registry = await launch(nursery, SupervisorSpec("registry"))
        root = registry.supervisor
        await trio.sleep(2)
        await root.start_child(ChildSpec("w", reader, {"inbox": recv}, restart=Restart.PERMANENT))
        await root.start_child(ChildSpec("s", Scripted(journal, "s").run, shutdown_s=1))
        info = root.which_children()
        assert [(c.name, c.state, c.dynamic, c.started_at, c.incarnation) for c in info] == [
            ("w", ChildState.RUNNING, True, 2.0, 1), ("s", ChildState.RUNNING, True, 2.0, 1)]
        send.send_nowait(1)
        assert await root.terminate_child("w")  # polite: its inbox ends, it returns
        assert not await root.terminate_child("w")
        assert root.terminate_child_nowait("s")
        assert root.which_children()[0].state is ChildState.STOPPING
        await trio.sleep(2)
        assert root.which_children() == () and journal == ["start s", "stop s"]
        assert registry.exit is None  # a registry (no static children) stays up when empty
        root.stop()
    assert send.statistics().open_receive_handles == 0


@bounded
async def test_a_nested_supervisor_is_stopped_politely(autojump_clock: trio.abc.Clock) -> None:
    got: list[int] = []
    send, recv = open_mailbox[int](8, name="inbox")

    async def slow_reader(inbox: MailboxReceiver[int], *,
                          task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with inbox:
            task_status.started()
            async for item in inbox:
                await trio.sleep(1)
                got.append(item)

    call = SupervisorSpec("call", [ChildSpec("r", slow_reader, {"inbox": recv}, shutdown_s=10)])
    root = Supervisor(SupervisorSpec("root", [supervisor_child(call, restart=Restart.PERMANENT)]))
    async with trio.open_nursery() as nursery:
        await nursery.start(root.run)
        for i in range(5):
            send.send_nowait(i)
        root.stop()
    assert got == [0, 1, 2, 3, 4] and trio.current_time() == 5
