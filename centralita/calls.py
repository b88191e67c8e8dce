"""The call registry: live calls as temporary children of one root supervisor.

A call is a nested supervisor (its actors wired by ``call_wiring``). One call crashing, or giving
up after too many restarts, ends that call only: it is a *temporary* child, never restarted, and
its failure never reaches a sibling. Shutdown stops every call concurrently (each with its own
children's deadlines), which is what ``App.drain`` waits for.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Final

import attrs
import trio

from actors.messages import CallInfo
from supervisor import (ChildSpec, Restart, Supervisor, SupervisorGaveUp, SupervisorNotRunning,
                        SupervisorSpec)

log = logging.getLogger(__name__)

CALL_SHUTDOWN_S: Final = 10.0  # a call's own children have shorter deadlines; this bounds them all


class CallsUnavailable(Exception):
    """The registry is not taking calls (starting up or shutting down)."""


@attrs.frozen
class CallOutcome:
    """How a call ended: ``reason`` is a sentence; ``failed`` when its supervisor gave up."""

    reason: str
    failed: bool = False


@attrs.define(eq=False)
class CallHandle:
    info: CallInfo
    started_at: float
    done: trio.Event = attrs.field(factory=trio.Event)
    outcome: CallOutcome | None = None
    supervisor: Supervisor | None = None

    def stop(self, reason: str) -> None:
        if self.supervisor is not None:
            self.supervisor.stop(reason)


@attrs.define(eq=False)
class CallRegistry:
    """Holds the live calls. ``run`` is a service started in the app's lifespan."""

    root: Supervisor = attrs.field(factory=lambda: Supervisor(SupervisorSpec(name="calls")))
    calls: dict[str, CallHandle] = attrs.field(factory=dict)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(self.root.run)
            task_status.started()

    async def start_call(self, info: CallInfo,
                         build: Callable[[], SupervisorSpec]) -> CallHandle:
        """Start a call's supervisor; returns once all its actors have started.

        Raises:
            CallsUnavailable: the service is shutting down (or not started).
            supervisor.ChildStartFailed: an actor could not start (e.g. STT unreachable).
        """
        handle = CallHandle(info=info, started_at=trio.current_time())

        async def run_call(*, task_status: trio.TaskStatus[object]) -> None:
            sup = Supervisor(build())
            handle.supervisor = sup
            self.calls[info.call_id] = handle
            try:
                result = await sup.run(task_status=task_status)
                handle.outcome = CallOutcome(reason=result.reason)
            except SupervisorGaveUp as exc:
                handle.outcome = CallOutcome(reason=str(exc), failed=True)
                log.error("call gave up", extra={"call_id": info.call_id, "reason": str(exc)})
            finally:
                if handle.outcome is None:
                    handle.outcome = CallOutcome(reason="call cancelled", failed=True)
                self.calls.pop(info.call_id, None)
                handle.done.set()
                log.info("call ended", extra={"call_id": info.call_id,
                                              "reason": handle.outcome.reason,
                                              "duration_s": round(trio.current_time()
                                                                  - handle.started_at, 3)})

        spec = ChildSpec(name=info.call_id, run=run_call, restart=Restart.TEMPORARY,
                         shutdown_s=CALL_SHUTDOWN_S)
        try:
            await self.root.start_child(spec)
        except SupervisorNotRunning as exc:
            raise CallsUnavailable("not taking calls: the service is shutting down") from exc
        log.info("call started", extra={"call_id": info.call_id,
                                        "call_control_id": info.call_control_id})
        return handle

    async def stop_all(self, reason: str = "service shutting down") -> None:
        """Stop every call at once and wait for them (each bounded by its own deadlines)."""
        handles = list(self.calls.values())
        for handle in handles:
            handle.stop(reason)
        self.root.stop(reason)
        for handle in handles:
            await handle.done.wait()
