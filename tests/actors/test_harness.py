"""The shared actor harness checks itself: a well-behaved actor passes the contract, and each
check fails on an actor that breaks the clause it checks (no sockets: MockClock)."""

from __future__ import annotations

from typing import Any

import attrs
import pytest
import trio

from supervisor import MailboxReceiver

from .harness import (
    ActorUnderTest, assert_actor_contract, check_closes_outputs_when_input_ends,
    check_exits_promptly_when_cancelled, check_returns_quietly_when_downstream_gone, open_actor,
)


@attrs.define(eq=False)
class Doubler:
    """Receives ints; sends each one doubled to ``out``. The contract, done right."""

    delay_s: float = 0.0
    forget_to_close: bool = False
    crash_when_downstream_gone: bool = False
    linger_when_cancelled_s: float = 0.0

    async def run(self, inbox: MailboxReceiver[int], *, out: trio.MemorySendChannel[int],
                  task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        try:
            async with inbox:
                task_status.started()
                async for number in inbox:
                    await trio.sleep(self.delay_s)
                    try:
                        await out.send(number * 2)
                    except trio.BrokenResourceError:
                        if self.crash_when_downstream_gone:
                            raise
                        return
        finally:
            if self.linger_when_cancelled_s:
                with trio.CancelScope(shield=True):
                    await trio.sleep(self.linger_when_cancelled_s)
            if not self.forget_to_close:
                out.close()


def start(doubler: Doubler) -> Any:
    return lambda: open_actor(doubler.run, outputs=("out",))


async def provoke(actor: ActorUnderTest) -> None:
    await actor.feed([1, 2, 3])


async def test_the_harness_feeds_and_collects(autojump_clock: trio.abc.Clock) -> None:
    async with open_actor(Doubler(delay_s=0.1).run, outputs=("out",)) as actor:
        await actor.feed(range(5))
        assert await actor.wait_for("out", lambda n: n == 6) == 6
        actor.end_input()
        await actor.wait_done()
        await actor.output_ended["out"].wait()
    assert actor.received == {"out": [0, 2, 4, 6, 8]} and actor.returned


async def test_a_well_behaved_actor_passes_the_contract(autojump_clock: trio.abc.Clock) -> None:
    await assert_actor_contract(start(Doubler(delay_s=0.01)), provoke=provoke)


async def test_not_closing_outputs_is_caught(autojump_clock: trio.abc.Clock) -> None:
    with pytest.raises(AssertionError, match="without closing"):
        await check_closes_outputs_when_input_ends(start(Doubler(forget_to_close=True)),
                                                   provoke=provoke)


async def test_raising_when_downstream_is_gone_is_caught(autojump_clock: trio.abc.Clock) -> None:
    with pytest.raises(AssertionError, match="BrokenResourceError"):
        await check_returns_quietly_when_downstream_gone(
            start(Doubler(crash_when_downstream_gone=True)), provoke=provoke)


async def test_a_slow_exit_after_cancel_is_caught(autojump_clock: trio.abc.Clock) -> None:
    with pytest.raises(AssertionError, match="to exit after cancellation"):
        await check_exits_promptly_when_cancelled(start(Doubler(linger_when_cancelled_s=1.5)),
                                                  within_s=1.0)


async def test_a_failure_before_started_reaches_the_test(autojump_clock: trio.abc.Clock) -> None:
    async def broken(inbox: MailboxReceiver[int], *, task_status: Any) -> None:
        raise ValueError("no socket")

    with pytest.raises(ValueError, match="no socket"):
        async with open_actor(broken):
            pass
