"""The supervisor's bookkeeping for one child: its record, its incarnations, its start signal.

Internal to the runtime (`Supervisor` is the public face); kept apart so that the supervising
logic reads without the record-keeping in the way.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import attrs
import trio

from .events import ChildStarted, SupervisorEvent
from .outcomes import ChildInfo, ChildState
from .spec import ChildSpec, CloneableChannel

__all__ = ["LIVE", "ChildRecord", "Incarnation", "StartedSignal"]

LIVE: frozenset[ChildState] = frozenset({ChildState.STARTING, ChildState.RUNNING})


@attrs.define(eq=False)
class Incarnation:
    """One run of a child: its channel clones, its cancel scope, and how it ended."""

    number: int
    clones: dict[str, CloneableChannel] = attrs.Factory(dict)
    scope: trio.CancelScope = attrs.Factory(trio.CancelScope)
    done: trio.Event = attrs.Factory(trio.Event)
    started_at: float | None = None
    value: object = None
    error: Exception | None = None
    stop_requested: bool = False
    handled: bool = False  # its exit has been recorded; a late report about it is ignored

    @property
    def started(self) -> bool:
        return self.started_at is not None


@attrs.define(eq=False)
class ChildRecord:
    """A child in the supervisor's care, across its incarnations."""

    spec: ChildSpec
    dynamic: bool
    state: ChildState = ChildState.STARTING
    incarnation: Incarnation | None = None
    count: int = 0
    restarts: int = 0
    consecutive: int = 0  # restarts since it last stayed up for period_s (the backoff step)
    restart_due: float = math.inf
    gone: trio.Event = attrs.Factory(trio.Event)  # set once it has ended for good

    def info(self) -> ChildInfo:
        inc = self.incarnation
        return ChildInfo(
            name=self.spec.name, restart=self.spec.restart, state=self.state,
            restarts=self.restarts, incarnation=self.count,
            started_at=None if inc is None else inc.started_at,
            significant=self.spec.significant, dynamic=self.dynamic,
        )


class StartedSignal:
    """The ``task_status`` a child sees: forwards readiness to ``nursery.start`` and records it."""

    __slots__ = ("_supervisor", "_publish", "_child", "_inc", "_outer")

    def __init__(self, supervisor: str, publish: Callable[[SupervisorEvent], None],
                 child: ChildRecord, inc: Incarnation, outer: trio.TaskStatus[object]) -> None:
        self._supervisor, self._publish = supervisor, publish
        self._child, self._inc, self._outer = child, inc, outer

    def started(self, value: object = None) -> None:
        self._outer.started(value)  # first: it raises if called twice
        now = trio.current_time()
        self._inc.started_at = now
        self._inc.value = value
        if self._child.state is ChildState.STARTING:
            self._child.state = ChildState.RUNNING
        self._publish(ChildStarted(self._supervisor, self._child.spec.name, self._inc.number, now))
