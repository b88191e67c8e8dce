"""A supervisor's restart policy as plain decisions: whether, when, with whom, and when to give up.

OTP's rules, kept apart from the supervising loop that acts on them: the restart type of a child
(`Restart`), the restart intensity (more than ``max_restarts`` restarts within ``period_s``), the
`Backoff` step, the group a `Strategy` restarts together, and the `AutoShutdown` rule for
significant children. Nothing here waits, starts or stops anything.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Sequence

from .incarnation import ChildRecord, Incarnation
from .spec import AutoShutdown, ChildSpec, Restart, Strategy, SupervisorSpec

__all__ = ["RestartIntensity", "auto_shutdown_reason", "next_restart_delay_s", "restart_group",
           "wants_restart"]


def wants_restart(spec: ChildSpec, error: BaseException | None) -> bool:
    """Whether a child that exited (``error`` None: it returned) is to be started again."""
    return spec.restart is Restart.PERMANENT or (spec.restart is Restart.TRANSIENT and error is not None)


class RestartIntensity:
    """The restarts of the last ``period_s`` seconds; too many of them and the supervisor gives up."""

    def __init__(self, max_restarts: int, period_s: float) -> None:
        self.max_restarts = max_restarts
        self.period_s = period_s
        self._times: deque[float] = deque()

    def exceeded_by_restart_at(self, now: float) -> bool:
        """Count a restart at ``now``; True when that makes more than ``max_restarts`` in the period."""
        times = self._times
        times.append(now)
        while times[0] <= now - self.period_s:
            times.popleft()
        return len(times) > self.max_restarts


def next_restart_delay_s(spec: SupervisorSpec, child: ChildRecord, inc: Incarnation,
                         now: float) -> float:
    """The backoff before ``child`` restarts after ``inc`` ended at ``now``; advances its step.

    An incarnation that stayed up for at least ``period_s`` was not part of a burst: the step
    starts again from 0.
    """
    if inc.started_at is not None and now - inc.started_at >= spec.period_s:
        child.consecutive = 0
    delay = 0.0 if spec.backoff is None else spec.backoff.delay_s(child.consecutive)
    child.consecutive += 1
    return delay


def restart_group(strategy: Strategy, children: Sequence[ChildRecord],
                  child: ChildRecord) -> list[ChildRecord]:
    """The children (in start order) restarted together with ``child`` under ``strategy``."""
    order = list(children)
    if strategy is Strategy.ONE_FOR_ALL:
        return order
    if strategy is Strategy.REST_FOR_ONE:
        return order[order.index(child):]
    return [child]


def auto_shutdown_reason(mode: AutoShutdown, child: ChildRecord,
                         remaining: Iterable[ChildRecord]) -> str | None:
    """Why the supervisor stops now that ``child`` ended by itself, or None if it goes on.

    Only a child ending by itself counts, as in OTP (not one the supervisor terminated).
    ``remaining``: the children still in the supervisor's care.
    """
    if not child.spec.significant or mode is AutoShutdown.NEVER:
        return None
    if mode is AutoShutdown.ANY_SIGNIFICANT:
        return f"significant child {child.spec.name!r} exited"
    if not any(c.spec.significant for c in remaining):
        return "all significant children exited"
    return None
