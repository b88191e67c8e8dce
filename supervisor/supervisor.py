"""The supervisor: starts children in order, restarts them per their spec, stops them gracefully.

OTP's model on trio's mechanics. Each incarnation of a child runs in a wrapper task in the
supervisor's nursery, inside its own cancel scope. The wrapper catches the child's exception (any
`Exception`, ExceptionGroups included) and reports it to the supervising loop, so no child can
crash the nursery; `trio.Cancelled` from outside, `KeyboardInterrupt` and `SystemExit` are never
swallowed. The loop applies the restart type, intensity, backoff and strategy; when it gives up,
it shuts the other children down and `run` raises one `SupervisorGaveUp` carrying the child's
original error. Only the supervisor unpacks ExceptionGroups.

Stopping a child *for good* (supervisor stopping, `terminate_child`) is polite first: the input of
every mailbox it receives from is ended (`MailboxReceiver.end_input`; queued work still drains) and
a nested supervisor is asked to `stop`; the child then has ``shutdown_s`` to return before its
incarnation is cancelled; finally the originals of its channels are closed so end of input
reaches its consumers. Children are stopped in reverse start order.

Stopping a sibling *for a restart* (one_for_all, rest_for_one) skips the mailbox step, because
ending input is irreversible and the restarted incarnation must find its mailbox — with whatever
is still queued in it — intact; producers outside the restarted group never notice. Such a sibling
is cancelled at once (a nested supervisor is still asked to stop first, within ``shutdown_s``).

All timing is trio time, so tests run on `trio.testing.MockClock`. A supervisor runs once, and all
of its methods must be called from the trio thread. The restart rules themselves are plain
decisions in `supervisor.restart_policy`; how endings are told (exit reasons, unwrapping what
escapes the nursery) is `supervisor.exits`.
"""

from __future__ import annotations

import math
from typing import TypeAlias

import trio

from .events import (
    OBSERVER_EVENTS, ChildExited, ChildRestarting, IntensityExceeded, Observers, SupervisorEvent,
    SupervisorStopped,
)
from .exits import exit_reason, reraise_unwrapped
from .incarnation import LIVE, ChildRecord, Incarnation, StartedSignal
from .mailbox import MailboxReceiver
from .outcomes import (
    ChildInfo, ChildStartFailed, ChildState, SupervisorExit, SupervisorGaveUp, SupervisorNotRunning,
)
from .restart_policy import (
    RestartIntensity, auto_shutdown_reason, next_restart_delay_s, restart_group, wants_restart,
)
from .spec import ChildSpec, Restart, SupervisorSpec

__all__ = ["Supervisor"]

# What wrapper tasks send the supervising loop: an ended incarnation, or None to wake it.
_Report: TypeAlias = "tuple[ChildRecord, Incarnation] | None"


class Supervisor:
    """Runs the children of a `SupervisorSpec`; see the module docstring for the semantics.

    Typical use::

        sup = Supervisor(SupervisorSpec("call-42", children, strategy=Strategy.REST_FOR_ONE))
        await nursery.start(sup.run)   # returns once every child called task_status.started()
        ...
        sup.stop("hangup")             # run() returns SupervisorExit(reason="hangup")
    """

    def __init__(self, spec: SupervisorSpec) -> None:
        self.spec = spec
        self._children: dict[str, ChildRecord] = {}  # insertion order is start order
        self._nursery: trio.Nursery | None = None
        # Wrapper tasks report exits here, stop() wakes the loop with None; never blocks.
        self._wake_send, self._wake_recv = trio.open_memory_channel[_Report](math.inf)
        self._ran = False
        self._accepting = False
        self._stop_reason: str | None = None
        self._gave_up: tuple[str, BaseException | None, str] | None = None
        self._intensity = RestartIntensity(spec.max_restarts, spec.period_s)
        self._stopped_published = False
        self._observers = Observers(spec.name)

    @property
    def name(self) -> str:
        """The supervisor's name (a call supervisor uses the call id)."""
        return self.spec.name

    def __repr__(self) -> str:
        return f"<Supervisor {self.name!r} children={list(self._children)}>"

    def subscribe(self, capacity: int = OBSERVER_EVENTS) -> MailboxReceiver[SupervisorEvent]:
        """Receive every later event in a drop-oldest mailbox that ends when the supervisor stops.

        A slow observer loses the oldest events (see its ``statistics().dropped``) and never
        delays supervision.
        """
        return self._observers.subscribe(capacity)

    def which_children(self) -> tuple[ChildInfo, ...]:
        """A snapshot of the children still in the supervisor's care, in start order."""
        return tuple(child.info() for child in self._children.values())

    def stop(self, reason: str = "stop requested") -> None:
        """Ask the supervisor to stop every child (reverse start order) and return from `run`.

        Synchronous, idempotent (the first reason wins), callable from any task, including a
        child's; before `run` it makes `run` return at once.
        """
        if self._stop_reason is not None:
            return
        self._stop_reason = reason
        self._accepting = False
        for child in self._children.values():
            if child.state is ChildState.STARTING and child.incarnation is not None:
                child.incarnation.scope.cancel(f"supervisor {self.name!r} stopping")
        try:
            self._wake_send.send_nowait(None)
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            pass  # run() has already finished

    async def run(self, *, task_status: trio.TaskStatus[Supervisor] = trio.TASK_STATUS_IGNORED
                  ) -> SupervisorExit:
        """Start the children in order, supervise them, and stop them all when asked.

        Calls ``task_status.started(self)`` once every static child has started. Returns when the
        supervisor stops normally (`stop`, auto shutdown, or every static child gone); when it
        returns or raises, no task it started is still running.

        Raises:
          SupervisorGaveUp: restart intensity exceeded, or a static child failed to start (then
            before ``task_status.started``).
        """
        if self._ran:
            raise RuntimeError(f"supervisor {self.name!r} can run only once")
        self._ran = True
        try:
            try:
                async with trio.open_nursery() as nursery:
                    self._nursery = nursery
                    await self._start_static_children()
                    if self._gave_up is None:
                        self._accepting = self._stop_reason is None
                        task_status.started(self)
                        await self._supervise()
                    await self._shutdown()
                    nursery.cancel_scope.cancel()  # nothing should be left; make sure of it
            except BaseExceptionGroup as group:
                reraise_unwrapped(self.name, group)
        finally:
            self._accepting = False
            for spec in self.spec.children:
                _close_all(spec)
            for child in self._children.values():
                _close_all(child.spec)
                child.gone.set()
            self._children.clear()
            self._wake_send.close()
            self._publish_stopped("cancelled")  # only if the shutdown above did not run
            self._observers.close()
        if self._gave_up is not None:
            culprit, error, why = self._gave_up
            raise SupervisorGaveUp(self.name, culprit, error, why) from error
        assert self._stop_reason is not None
        return SupervisorExit(self.name, self._stop_reason, trio.current_time())

    async def start_child(self, spec: ChildSpec) -> object:
        """Add a dynamic child and wait until it has started; returns what it passed to
        ``task_status.started()`` (a nested supervisor passes itself).

        Raises:
          ValueError: a child of that name is already supervised.
          SupervisorNotRunning: the supervisor has not started yet or is stopping.
          ChildStartFailed: the child raised or returned before it started.
        """
        if not self._accepting:
            raise SupervisorNotRunning(f"supervisor {self.name!r} is not accepting children")
        if spec.name in self._children:
            raise ValueError(f"supervisor {self.name!r} already has a child {spec.name!r}")
        child = ChildRecord(spec, dynamic=True)
        self._children[spec.name] = child
        inc = await self._start_incarnation(child)
        if inc.started:
            return inc.value
        if not inc.handled:
            self._record_exit(child, inc)
        self._end_for_good(child)
        if self._stop_reason is not None:
            raise SupervisorNotRunning(f"supervisor {self.name!r} stopped while {spec.name!r} started")
        raise ChildStartFailed(self.name, spec.name, inc.error) from inc.error

    def terminate_child_nowait(self, name: str) -> bool:
        """Begin stopping child ``name`` for good (politely, see the module docstring); returns
        False when there is no such child."""
        child = self._children.get(name)
        if child is None or self._nursery is None:
            return False
        if child.state is not ChildState.STOPPING:
            was, child.state = child.state, ChildState.STOPPING
            self._nursery.start_soon(self._finish_stop, child, was, "terminated")
        return True

    async def terminate_child(self, name: str) -> bool:
        """Stop child ``name`` for good and wait until it is gone; False if there was none."""
        child = self._children.get(name)
        if child is None or not self.terminate_child_nowait(name):
            return False
        await child.gone.wait()
        return True

    # --- the supervising loop -----------------------------------------------------------------

    async def _start_static_children(self) -> None:
        for spec in self.spec.children:
            if self._stop_reason is not None:
                return
            child = ChildRecord(spec, dynamic=False)
            self._children[spec.name] = child
            inc = await self._start_incarnation(child)
            if inc.started or inc.handled:
                continue
            error = self._record_exit(child, inc)
            self._end_for_good(child)
            if self._stop_reason is None:  # a failure, not a stop() arriving mid-start
                self._give_up(spec.name, error, "failed to start")

    async def _supervise(self) -> None:
        while self._stop_reason is None:
            if self.spec.children and not self._children:
                self._stop_reason = "all children exited"
                return
            due = min((c.restart_due for c in self._children.values()
                       if c.state is ChildState.RESTARTING), default=math.inf)
            if due <= trio.current_time():
                await self._restart_due_children()
                continue
            report = None
            with trio.move_on_at(due):
                report = await self._wake_recv.receive()
            if report is not None:
                await self._on_exit(*report)

    async def _restart_due_children(self) -> None:
        now = trio.current_time()
        for child in list(self._children.values()):
            if self._stop_reason is not None:
                return
            if (child.state is ChildState.RESTARTING and child.restart_due <= now
                    and self._children.get(child.spec.name) is child):
                inc = await self._start_incarnation(child)
                if not inc.started:
                    await self._on_exit(child, inc)
                    return  # that may have rescheduled the rest of the group; look again

    async def _on_exit(self, child: ChildRecord, inc: Incarnation) -> None:
        if inc.handled or child.incarnation is not inc or child.gone.is_set():
            return  # already dealt with (stopped by us, or a stale report)
        error = self._record_exit(child, inc)
        spec = child.spec
        if self._stop_reason is not None or not wants_restart(spec, error):
            self._end_for_good(child)
            if self._stop_reason is None:
                why = auto_shutdown_reason(self.spec.auto_shutdown, child, self._children.values())
                if why is not None:
                    self.stop(why)
            return
        now = trio.current_time()
        if self._intensity.exceeded_by_restart_at(now):
            self._publish(IntensityExceeded(self.name, spec.name, self.spec.max_restarts,
                                            self.spec.period_s, error, now))
            self._end_for_good(child)
            self._give_up(spec.name, error, f"exceeded {self.spec.max_restarts} restarts "
                          f"in {self.spec.period_s:g}s")
            return
        delay = next_restart_delay_s(self.spec, child, inc, now)
        child.state = ChildState.RESTARTING
        child.restart_due = math.inf
        group = restart_group(self.spec.strategy, list(self._children.values()), child)
        for sibling in reversed(group):
            sib_inc = sibling.incarnation
            if sibling is not child and sibling.state is ChildState.RUNNING and sib_inc:
                sibling.state = ChildState.RESTARTING
                sibling.restart_due = math.inf
                await self._stop_incarnation(sibling, sib_inc, f"restart after {spec.name}",
                                             for_good=False)
        if self._stop_reason is not None:
            return  # stop() arrived meanwhile: the shutdown ends the whole group
        due = trio.current_time() + delay
        for member in group:
            if self._children.get(member.spec.name) is not member or member.state is not \
                    ChildState.RESTARTING:
                continue  # terminated meanwhile
            if member is not child and member.spec.restart is Restart.TEMPORARY:
                self._end_for_good(member)  # OTP: temporary siblings are not brought back
                continue
            member.restart_due = due
            member.restarts += 1
            self._publish(ChildRestarting(self.name, member.spec.name, delay, spec.name,
                                          trio.current_time()))

    def _give_up(self, child: str, error: BaseException | None, why: str) -> None:
        self._gave_up = (child, error, why)
        self.stop(f"gave up: child {child!r} {why}")

    async def _shutdown(self) -> None:
        reason = self._stop_reason or "stopping"
        for child in reversed(list(self._children.values())):
            await self._stop_child(child, reason)
        self._publish_stopped(reason)

    def _publish_stopped(self, reason: str) -> None:
        if not self._stopped_published:
            self._stopped_published = True
            self._publish(SupervisorStopped(self.name, reason, trio.current_time()))

    # --- one child ----------------------------------------------------------------------------

    async def _start_incarnation(self, child: ChildRecord) -> Incarnation:
        assert self._nursery is not None
        child.count += 1
        inc = Incarnation(child.count)
        child.incarnation = inc
        child.state = ChildState.STARTING
        child.restart_due = math.inf
        try:
            await self._nursery.start(self._run_incarnation, child, inc)
        except BaseException:
            # Our caller was cancelled while the child started; the child went with it.
            if not inc.started:
                inc.handled = True
                self._end_for_good(child)
            raise
        return inc

    async def _run_incarnation(self, child: ChildRecord, inc: Incarnation,
                               task_status: trio.TaskStatus[object]) -> None:
        try:
            with inc.scope:
                inc.clones = {key: ch.clone() for key, ch in child.spec.channels.items()}
                await child.spec.run(
                    **inc.clones, task_status=StartedSignal(self.name, self._publish, child, inc, task_status))
            if not inc.started and not inc.scope.cancelled_caught:
                inc.error = RuntimeError("returned without calling task_status.started()")
        except Exception as exc:  # Cancelled, KeyboardInterrupt, SystemExit propagate
            inc.error = exc
        finally:
            for channel in inc.clones.values():
                channel.close()
            inc.done.set()
        self._wake_send.send_nowait((child, inc))
        if not inc.started:
            task_status.started(None)  # release nursery.start; the caller reads inc

    async def _stop_child(self, child: ChildRecord, reason: str) -> None:
        """Stop ``child`` for good: polite stop, bounded wait, cancel, close its originals."""
        if child.gone.is_set():
            return
        if child.state is ChildState.STOPPING:
            await child.gone.wait()
            return
        was, child.state = child.state, ChildState.STOPPING
        await self._finish_stop(child, was, reason)

    async def _finish_stop(self, child: ChildRecord, was: ChildState, reason: str) -> None:
        inc = child.incarnation
        if was in LIVE and inc is not None and not inc.handled:
            await self._stop_incarnation(child, inc, reason, for_good=True)
        self._end_for_good(child)

    async def _stop_incarnation(self, child: ChildRecord, inc: Incarnation, reason: str, *,
                                for_good: bool) -> None:
        inc.handled = True
        if inc.started and not inc.done.is_set():
            asked = False
            if for_good:
                for channel in child.spec.channels.values():
                    if isinstance(channel, MailboxReceiver):
                        channel.end_input()
                asked = True
            if isinstance(inc.value, Supervisor):
                inc.value.stop(reason)
                asked = True
            if asked:
                inc.stop_requested = True
                with trio.move_on_after(child.spec.shutdown_s):
                    await inc.done.wait()
        if not inc.done.is_set():
            inc.scope.cancel(f"supervisor {self.name!r}: {reason}")
            await inc.done.wait()
        self._record_exit(child, inc)

    def _record_exit(self, child: ChildRecord, inc: Incarnation) -> Exception | None:
        inc.handled = True
        self._publish(ChildExited(self.name, child.spec.name, inc.number, exit_reason(inc),
                                  inc.error, trio.current_time()))
        return inc.error

    def _end_for_good(self, child: ChildRecord) -> None:
        if child.gone.is_set():
            return
        _close_all(child.spec)
        if self._children.get(child.spec.name) is child:
            del self._children[child.spec.name]
        child.gone.set()

    def _publish(self, event: SupervisorEvent) -> None:
        self._observers.publish(event)


def _close_all(spec: ChildSpec) -> None:
    for channel in spec.channels.values():
        channel.close()

