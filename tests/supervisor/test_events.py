"""Observers and structured logs: what supervision reports, and that reporting never stalls it."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import trio

from supervisor import (
    ChildExited, ChildRestarting, ChildSpec, ChildStarted, Supervisor, SupervisorSpec,
    SupervisorStopped,
)

from .children import Scripted, bounded, run_briefly


@bounded
async def test_subscribe_receives_the_event_sequence(autojump_clock: trio.abc.Clock) -> None:
    child = Scripted([], "w", failures=1, up_s=2)
    sup = Supervisor(SupervisorSpec("s", [ChildSpec("w", child.run, shutdown_s=0)]))
    events = sup.subscribe()
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        await trio.sleep(3)
        sup.stop("done")
    seen = [e async for e in events]
    error = seen[1].exception  # type: ignore[union-attr]
    assert isinstance(error, ValueError)
    assert seen == [
        ChildStarted("s", "w", 1, 0.0),
        ChildExited("s", "w", 1, "raised ValueError", error, 2.0),
        ChildRestarting("s", "w", 0.0, "w", 2.0),
        ChildStarted("s", "w", 2, 2.0),
        ChildExited("s", "w", 2, "cancelled", None, 3.0),
        SupervisorStopped("s", "done", 3.0),
    ]
    late = sup.subscribe()  # after the supervisor stopped: born ended
    assert [e async for e in late] == []


@bounded
async def test_a_slow_observer_never_stalls_restarts(autojump_clock: trio.abc.Clock) -> None:
    flaky = Scripted([], "w", failures=20, up_s=1)
    sup = Supervisor(SupervisorSpec("s", [ChildSpec("w", flaky.run, shutdown_s=0)],
                                    max_restarts=100, period_s=1000))
    slow = sup.subscribe(capacity=2)  # never read while the supervisor runs
    gone = sup.subscribe(capacity=2)
    gone.close()  # an observer that went away is simply dropped
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        await trio.sleep(25)
        assert flaky.incarnations == 21
        sup.stop()
    stats = slow.statistics()
    total = 1 + 20 * 3 + 1 + 1  # started, 20 x (exited, restarting, started), exited, stopped
    assert (stats.sent, stats.dropped, stats.queued) == (total, total - 2, 2)
    tail = [e async for e in slow]
    assert [type(e) for e in tail] == [ChildExited, SupervisorStopped]


@bounded
async def test_every_log_line_carries_the_supervisor_and_no_secret(
        autojump_clock: trio.abc.Clock, caplog: pytest.LogCaptureFixture) -> None:
    async def leaky(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        await trio.sleep(1)
        raise PermissionError("bad token=sk-SECRET-123")

    caplog.set_level(logging.INFO, logger="supervisor")
    sup = Supervisor(SupervisorSpec("call-42", [ChildSpec("link", leaky)], max_restarts=1))
    with pytest.raises(Exception, match="sk-SECRET"):  # the error itself keeps its message
        await run_briefly(sup)
    records = [r for r in caplog.records if r.name == "supervisor"]
    assert {r.supervisor for r in records} == {"call-42"}  # type: ignore[attr-defined]
    assert [r.event for r in records] == [  # type: ignore[attr-defined]
        "ChildStarted", "ChildExited", "ChildRestarting", "ChildStarted", "ChildExited",
        "IntensityExceeded", "SupervisorStopped"]
    assert {r.child for r in records} == {"link", None}  # type: ignore[attr-defined]
    assert "SECRET" not in caplog.text and "PermissionError" in caplog.text


def test_the_runtime_knows_nothing_of_telephony() -> None:
    words = ("telnyx", "deepgram", "twilio", "sip", "anthropic", "httpx", "websocket")
    root = Path(__file__).resolve().parents[2] / "supervisor"
    for path in root.glob("*.py"):
        text = path.read_text().lower()
        assert not [w for w in words if f" {w}" in text or f"import {w}" in text], path.name
