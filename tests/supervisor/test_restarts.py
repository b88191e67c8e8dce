"""Restart types, intensity, escalation, backoff and strategies, by fault injection."""

from __future__ import annotations

import pytest
import trio

from supervisor import (
    Backoff, ChildExited, ChildRestarting, ChildSpec, ChildStarted, IntensityExceeded, Restart,
    Strategy, Supervisor, SupervisorEvent, SupervisorGaveUp, SupervisorSpec, SupervisorStopped,
)

from .children import Scripted, bounded, launch, run_briefly


async def _drain(events: trio.abc.ReceiveChannel[SupervisorEvent]) -> list[SupervisorEvent]:
    return [event async for event in events]


@bounded
async def test_a_child_raising_n_times_is_restarted_n_times(autojump_clock: trio.abc.Clock) -> None:
    journal: list[str] = []
    flaky = Scripted(journal, "flaky", failures=3)
    sup = Supervisor(SupervisorSpec("s", [ChildSpec("flaky", flaky.run)], max_restarts=3))
    events = sup.subscribe()
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        await trio.sleep(1)
        (info,) = sup.which_children()
        assert (info.restarts, info.incarnation, info.state.value) == (3, 4, "running")
        sup.stop()
    seen = await _drain(events)
    assert [type(e).__name__ for e in seen] == [
        "ChildStarted", *["ChildExited", "ChildRestarting", "ChildStarted"] * 3,
        "ChildExited", "SupervisorStopped"]
    exits = [e for e in seen if isinstance(e, ChildExited)]
    assert [e.reason for e in exits] == ["raised ValueError"] * 3 + ["cancelled"]
    assert [str(e.exception) for e in exits[:3]] == [f"flaky failure {n}" for n in (1, 2, 3)]
    assert [e.incarnation for e in seen if isinstance(e, ChildStarted)] == [1, 2, 3, 4]
    assert journal.count("start flaky") == 4


@bounded
async def test_intensity_exceeded_escalates_the_original_error(autojump_clock: trio.abc.Clock) -> None:
    journal: list[str] = []
    steady = Scripted(journal, "steady")
    doomed = Scripted(journal, "doomed", failures=100, up_s=0.1)
    sup = Supervisor(SupervisorSpec("call-7", [
        ChildSpec("steady", steady.run), ChildSpec("doomed", doomed.run),
        ChildSpec("after", Scripted(journal, "after").run)], max_restarts=2, period_s=5))
    events = sup.subscribe()
    with pytest.raises(SupervisorGaveUp) as info:
        await run_briefly(sup)
    gave_up = info.value
    assert (gave_up.supervisor, gave_up.child) == ("call-7", "doomed")
    assert isinstance(gave_up.error, ValueError) and gave_up.__cause__ is gave_up.error
    assert str(gave_up.error) == "doomed failure 3"
    assert str(gave_up) == ("supervisor 'call-7' gave up: child 'doomed' exceeded 2 restarts "
                            "in 5s: ValueError: doomed failure 3")
    assert not isinstance(gave_up, BaseExceptionGroup)
    # the others were shut down, in reverse start order, and their cleanup ran
    assert journal[-2:] == ["stop after", "stop steady"]
    assert journal.count("start doomed") == 3
    seen = await _drain(events)
    assert any(isinstance(e, IntensityExceeded) and e.child == "doomed" for e in seen)
    assert isinstance(seen[-1], SupervisorStopped) and "gave up" in seen[-1].reason


@bounded
async def test_restarts_spread_out_over_time_never_exceed_intensity(
        autojump_clock: trio.abc.Clock) -> None:
    journal: list[str] = []
    slow_fail = Scripted(journal, "w", failures=6, up_s=5.5)  # one failure every 5.5 s
    spec = SupervisorSpec("s", [ChildSpec("w", slow_fail.run)], max_restarts=1, period_s=5)
    async with trio.open_nursery() as nursery:
        launched = await launch(nursery, spec)
        await trio.sleep(40)
        assert launched.error is None
        assert slow_fail.incarnations == 7
        launched.supervisor.stop()
    assert launched.exit is not None


@pytest.mark.parametrize(("restart", "then", "failures", "expected_incarnations"), [
    (Restart.TRANSIENT, "return", 0, 1),      # normal exit: not restarted
    (Restart.TRANSIENT, "return", 2, 3),      # restarted after each exception
    (Restart.TEMPORARY, "return", 1, 1),      # never restarted, even after raising
    (Restart.TEMPORARY, "return", 0, 1),
    (Restart.PERMANENT, "return", 0, 4),      # restarted after a normal return too
])
@bounded
async def test_restart_types(autojump_clock: trio.abc.Clock, restart: Restart, then: str,
                             failures: int, expected_incarnations: int) -> None:
    journal: list[str] = []
    child = Scripted(journal, "c", failures=failures, then=then, up_s=1)
    keeper = Scripted(journal, "keeper")  # keeps the supervisor alive
    sup = Supervisor(SupervisorSpec("s", [ChildSpec("keeper", keeper.run),
                                          ChildSpec("c", child.run, restart=restart)],
                                    max_restarts=3, period_s=100))
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        await trio.sleep(3.5)
        sup.stop()
    assert child.incarnations == expected_incarnations


@bounded
async def test_a_permanent_child_returning_forever_exhausts_intensity(
        autojump_clock: trio.abc.Clock) -> None:
    child = Scripted([], "c", then="return", up_s=0.1)  # time moves: a broken check can't spin
    sup = Supervisor(SupervisorSpec("s", [ChildSpec("c", child.run)], max_restarts=3))
    with pytest.raises(SupervisorGaveUp, match="child 'c' exceeded 3 restarts") as info:
        await run_briefly(sup)
    assert info.value.error is None and child.incarnations == 4


@bounded
async def test_one_for_all_restarts_every_sibling_in_order(autojump_clock: trio.abc.Clock) -> None:
    journal: list[str] = []
    children = [Scripted(journal, "a"), Scripted(journal, "b", failures=1, up_s=1),
                Scripted(journal, "c")]
    sup = Supervisor(SupervisorSpec("s", [ChildSpec(c.name, c.run) for c in children],
                                    strategy=Strategy.ONE_FOR_ALL))
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        await trio.sleep(2)
        journal.append("--")
        sup.stop()
    assert journal == ["start a", "start b", "start c",
                       "stop b", "stop c", "stop a",
                       "start a", "start b", "start c",
                       "--", "stop c", "stop b", "stop a"]
    assert [i.restarts for i in sup.which_children()] == []  # all gone after stop


@bounded
async def test_rest_for_one_restarts_the_failed_child_and_those_after_it(
        autojump_clock: trio.abc.Clock) -> None:
    journal: list[str] = []
    children = [Scripted(journal, "a"), Scripted(journal, "b", failures=1, up_s=1),
                Scripted(journal, "c"), Scripted(journal, "d")]
    sup = Supervisor(SupervisorSpec("s", [ChildSpec(c.name, c.run) for c in children],
                                    strategy=Strategy.REST_FOR_ONE))
    events = sup.subscribe()
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        await trio.sleep(2)
        assert [(i.name, i.restarts) for i in sup.which_children()] == [
            ("a", 0), ("b", 1), ("c", 1), ("d", 1)]
        sup.stop()
    assert journal[:10] == ["start a", "start b", "start c", "start d",
                            "stop b", "stop d", "stop c",
                            "start b", "start c", "start d"]
    restarting = [e for e in await _drain(events) if isinstance(e, ChildRestarting)]
    assert [(e.child, e.trigger) for e in restarting] == [("b", "b"), ("c", "b"), ("d", "b")]


@bounded
async def test_one_for_all_does_not_bring_back_temporary_siblings(
        autojump_clock: trio.abc.Clock) -> None:
    journal: list[str] = []
    temp = Scripted(journal, "temp")
    failing = Scripted(journal, "f", failures=1, up_s=1)
    sup = Supervisor(SupervisorSpec("s", [ChildSpec("temp", temp.run, restart=Restart.TEMPORARY),
                                          ChildSpec("f", failing.run)],
                                    strategy=Strategy.ONE_FOR_ALL))
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        await trio.sleep(2)
        assert [i.name for i in sup.which_children()] == ["f"]
        sup.stop()
    assert temp.incarnations == 1 and failing.incarnations == 2


@bounded
async def test_backoff_delays_are_honoured_and_reset(autojump_clock: trio.abc.Clock) -> None:
    starts: list[float] = []
    crashes = iter([True, True, True, True, False, True, False])

    async def child(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        starts.append(trio.current_time())
        task_status.started()
        if next(crashes):
            raise OSError("link down")
        await trio.sleep(10)  # up for longer than period_s: the backoff resets
        raise OSError("link down again")

    sup = Supervisor(SupervisorSpec("s", [ChildSpec("link", child)], max_restarts=10, period_s=5,
                                    backoff=Backoff(initial_s=1, factor=2, max_s=3)))
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        await trio.sleep(30)
        sup.stop()
    gaps = [round(b - a, 6) for a, b in zip(starts, starts[1:], strict=False)]
    # 1, 2, 4->3 (capped), 3; then up 10 s and a reset: 10 + 1; then 1 + 2 for the next burst
    assert gaps[:6] == [1, 2, 3, 3, 11, 2]


@bounded
async def test_a_restart_that_fails_to_start_counts_toward_intensity(
        autojump_clock: trio.abc.Clock) -> None:
    incarnations = 0

    async def child(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        nonlocal incarnations
        incarnations += 1
        await trio.sleep(0.1)
        if incarnations > 1:
            raise ConnectionRefusedError("no upstream")
        task_status.started()
        raise ConnectionResetError("lost upstream")

    sup = Supervisor(SupervisorSpec("s", [ChildSpec("c", child)], max_restarts=2))
    events = sup.subscribe()
    with pytest.raises(SupervisorGaveUp) as info:
        await run_briefly(sup)
    assert isinstance(info.value.error, ConnectionRefusedError) and incarnations == 3
    reasons = [e.reason for e in await _drain(events) if isinstance(e, ChildExited)]
    assert reasons == ["raised ConnectionResetError"] + ["failed to start: ConnectionRefusedError"] * 2


@bounded
async def test_a_static_child_failing_to_start_fails_the_supervisor_start(
        autojump_clock: trio.abc.Clock) -> None:
    journal: list[str] = []

    async def broken(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        raise KeyError("missing config")

    sup = Supervisor(SupervisorSpec("s", [ChildSpec("a", Scripted(journal, "a").run),
                                          ChildSpec("broken", broken),
                                          ChildSpec("c", Scripted(journal, "c").run)]))
    async with trio.open_nursery() as nursery:
        with pytest.raises(SupervisorGaveUp, match="child 'broken' failed to start: KeyError"):
            await nursery.start(sup.run)
    assert journal == ["start a", "stop a"]  # c never started; a was shut down


@bounded
async def test_a_child_returning_without_started_is_a_start_failure(
        autojump_clock: trio.abc.Clock) -> None:
    async def lazy(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        return None

    with pytest.raises(SupervisorGaveUp) as info:
        await run_briefly(Supervisor(SupervisorSpec("s", [ChildSpec("lazy", lazy)])))
    assert isinstance(info.value.error, RuntimeError)
    assert "task_status.started()" in str(info.value.error)
