"""The shared actor test harness, and the contract every actor passes (STYLE.md, "Tests").

``open_actor`` opens an actor's inbox (a mailbox, as the supervisor gives it) and its named
output channels, starts ``run`` with ``nursery.start`` (so it returns once the actor is ready),
and collects everything the actor sends until each output ends::

    async with open_actor(link.run, outputs=("transcripts_out", "relay_out")) as actor:
        await actor.feed(frames)
        actor.end_input()                    # the supervisor's polite stop
        await actor.wait_done()
        assert actor.received["transcripts_out"] == [...]

The contract checks take a *starter* (a zero-argument callable returning a fresh ``open_actor``
context) and an optional ``provoke`` coroutine that feeds input making the actor emit:

* `check_closes_outputs_when_input_ends`: end of input -> it returns and every output ends.
* `check_returns_quietly_when_downstream_gone`: every consumer closed -> it returns, no error.
* `check_exits_promptly_when_cancelled`: cancelled -> gone within a bound, no error.

`assert_actor_contract` runs all three. Timing is trio time: actors without sockets are checked
under ``autojump_clock``; actors with real sockets need real time and short bounds.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, Final

import attrs
import trio

from supervisor import MailboxReceiver, MailboxSender, Overflow, open_mailbox

__all__ = [
    "ActorUnderTest", "Provoke", "Starter", "assert_actor_contract",
    "check_closes_outputs_when_input_ends", "check_exits_promptly_when_cancelled",
    "check_returns_quietly_when_downstream_gone", "open_actor",
]

INBOX_ITEMS: Final = 64
OUTPUT_ITEMS: Final = 64
DONE_WITHIN_S: Final = 5.0
CANCELLED_WITHIN_S: Final = 1.0


@attrs.define(eq=False)
class ActorUnderTest:
    """A running actor and its channels: feed its inbox, stop it, read what it sent."""

    inbox: MailboxSender[Any]
    actor_inbox: MailboxReceiver[Any]  # the actor's own end (what the supervisor would end_input)
    outputs: dict[str, trio.MemoryReceiveChannel[Any]]
    received: dict[str, list[Any]]
    output_ended: dict[str, trio.Event]
    scope: trio.CancelScope = attrs.Factory(trio.CancelScope)
    done: trio.Event = attrs.Factory(trio.Event)
    started: bool = False
    returned: bool = False
    cancelled: bool = False
    error: Exception | None = None
    _arrived: trio.Event = attrs.Factory(trio.Event)

    async def feed(self, items: Iterable[Any], *, interval_s: float = 0.0) -> None:
        """Send ``items`` to the inbox, ``interval_s`` apart (0: as fast as the inbox takes them)."""
        for item in items:
            await self.inbox.send(item)
            if interval_s:
                await trio.sleep(interval_s)

    def end_input(self) -> None:
        """The supervisor's polite stop: what is queued still drains, then the actor sees the end."""
        self.actor_inbox.end_input()

    def close_outputs(self) -> None:
        """Every consumer goes away: the actor's sends now raise BrokenResourceError."""
        for channel in self.outputs.values():
            channel.close()

    def cancel(self) -> None:
        self.scope.cancel()

    async def wait_done(self, within_s: float = DONE_WITHIN_S) -> None:
        with trio.fail_after(within_s):
            await self.done.wait()

    async def wait_for(self, output: str, predicate: Callable[[Any], bool] = lambda item: True,
                       *, within_s: float = DONE_WITHIN_S) -> Any:
        """The first item on ``output`` (already received or still to come) matching ``predicate``."""
        with trio.fail_after(within_s):
            while True:
                for item in self.received[output]:
                    if predicate(item):
                        return item
                if self.output_ended[output].is_set():
                    raise AssertionError(f"{output} ended, no match in {self.received[output]}")
                self._arrived = trio.Event()
                await self._arrived.wait()

    async def _collect(self, name: str) -> None:
        try:
            async for item in self.outputs[name]:
                self.received[name].append(item)
                self._arrived.set()
        except trio.ClosedResourceError:
            pass  # close_outputs(): we stopped listening on purpose
        finally:
            self.output_ended[name].set()
            self._arrived.set()

    async def _run(self, run: Callable[..., Awaitable[object]], senders: dict[str, Any],
                   kwargs: dict[str, Any], task_status: trio.TaskStatus[None]) -> None:
        actor = self

        class _Started:
            def started(self, value: object = None) -> None:
                actor.started = True
                task_status.started()

        try:
            with self.scope:
                await run(self.actor_inbox, **senders, **kwargs, task_status=_Started())
                self.returned = True
            self.cancelled = self.scope.cancelled_caught
        except Exception as exc:
            self.error = exc
            if not self.started:
                raise
        finally:
            self.done.set()


Starter = Callable[[], AbstractAsyncContextManager[ActorUnderTest]]
Provoke = Callable[[ActorUnderTest], Awaitable[None]]


@asynccontextmanager
async def open_actor(run: Callable[..., Awaitable[object]], *, outputs: Sequence[str] = (),
                     inbox_items: int = INBOX_ITEMS, inbox_overflow: Overflow = Overflow.BLOCK,
                     output_items: int = OUTPUT_ITEMS, **kwargs: Any) -> AsyncIterator[ActorUnderTest]:
    """Start ``run(inbox, **outputs, **kwargs, task_status=...)`` and yield it once it is ready.

    Raises what the actor raised if it failed before ``task_status.started()``. Leaving the block
    cancels an actor that is still running.
    """
    inbox, actor_inbox = open_mailbox[Any](inbox_items, inbox_overflow, name="inbox")
    senders: dict[str, Any] = {}
    receivers: dict[str, trio.MemoryReceiveChannel[Any]] = {}
    for name in outputs:
        senders[name], receivers[name] = trio.open_memory_channel[Any](output_items)
    actor = ActorUnderTest(
        inbox=inbox, actor_inbox=actor_inbox, outputs=receivers,
        received={name: [] for name in outputs}, output_ended={name: trio.Event() for name in outputs},
    )
    try:
        async with trio.open_nursery() as nursery:
            for name in outputs:
                nursery.start_soon(actor._collect, name)
            await nursery.start(actor._run, run, senders, kwargs)
            try:
                yield actor
            finally:
                inbox.close()
                nursery.cancel_scope.cancel()  # the actor, if still running, and the collectors
    except BaseExceptionGroup as group:  # show the test's own failure, not a group around it
        real = group.split(trio.Cancelled)[1]
        if real is not None and len(real.exceptions) == 1 and not isinstance(
                real.exceptions[0], BaseExceptionGroup):
            raise real.exceptions[0] from None
        raise


# -- the contract -----------------------------------------------------------------------------------

async def check_closes_outputs_when_input_ends(start: Starter, *, provoke: Provoke | None = None,
                                               within_s: float = DONE_WITHIN_S) -> None:
    """End of input: the actor finishes its work, returns, and every output channel ends."""
    async with start() as actor:
        if provoke is not None:
            await provoke(actor)
        actor.end_input()
        await actor.wait_done(within_s)
        assert actor.error is None, f"raised {actor.error!r} at end of input"
        assert actor.returned, "did not return at end of input"
        with trio.move_on_after(within_s):
            for ended in actor.output_ended.values():
                await ended.wait()
        still_open = [name for name, ended in actor.output_ended.items() if not ended.is_set()]
        assert not still_open, f"returned without closing {still_open}"


async def check_returns_quietly_when_downstream_gone(start: Starter, *, provoke: Provoke,
                                                     within_s: float = DONE_WITHIN_S) -> None:
    """Every consumer gone: the actor notices on its next send and returns without an error."""
    async with start() as actor:
        actor.close_outputs()
        with trio.move_on_after(within_s):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_provoke_until_gone, provoke, actor)
                await actor.done.wait()
                nursery.cancel_scope.cancel()  # provoke may block on a full inbox: it is over
        assert actor.done.is_set(), f"still running {within_s}s after its outputs closed"
        assert actor.error is None, f"raised {actor.error!r} when its outputs closed"
        assert actor.returned


async def _provoke_until_gone(provoke: Provoke, actor: ActorUnderTest) -> None:
    try:
        await provoke(actor)
    except trio.BrokenResourceError:
        pass  # the actor has stopped and its inbox is closed: what the check waits for


async def check_exits_promptly_when_cancelled(start: Starter, *, provoke: Provoke | None = None,
                                              within_s: float = CANCELLED_WITHIN_S) -> None:
    """Cancelled (a supervisor deadline, shutdown): the actor is gone within ``within_s``."""
    async with start() as actor:
        if provoke is not None:
            await provoke(actor)
        begun = trio.current_time()
        actor.cancel()
        await actor.wait_done(within_s + 1.0)
        took = trio.current_time() - begun
        assert actor.error is None, f"raised {actor.error!r} when cancelled"
        assert actor.cancelled and not actor.returned
        assert took <= within_s, f"took {took:.3f}s to exit after cancellation"


async def assert_actor_contract(start: Starter, *, provoke: Provoke,
                                done_within_s: float = DONE_WITHIN_S,
                                cancelled_within_s: float = CANCELLED_WITHIN_S) -> None:
    """All three checks, each on a fresh actor from ``start``."""
    await check_closes_outputs_when_input_ends(start, provoke=provoke, within_s=done_within_s)
    await check_returns_quietly_when_downstream_gone(start, provoke=provoke, within_s=done_within_s)
    await check_exits_promptly_when_cancelled(start, provoke=provoke, within_s=cancelled_within_s)
