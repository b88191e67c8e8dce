"""How endings are told: one child incarnation's exit reason, and what escapes a supervisor.

Only the supervisor unpacks ExceptionGroups (since trio 0.25 every error leaving a nursery is
wrapped in one); this is where it does.
"""

from __future__ import annotations

import trio

from .incarnation import Incarnation
from .outcomes import SupervisorError

__all__ = ["exit_reason", "reraise_unwrapped"]


def exit_reason(inc: Incarnation) -> str:
    """The reason a `ChildExited` event gives for how ``inc`` ended."""
    error = inc.error
    if error is not None:
        kind = type(error).__name__
        return f"raised {kind}" if inc.started else f"failed to start: {kind}"
    if inc.scope.cancelled_caught:
        return "cancelled"
    if inc.stop_requested:
        return "stopped"
    return "returned"


def reraise_unwrapped(name: str, group: BaseExceptionGroup[BaseException]) -> None:
    """Turn what escaped the nursery into one exception: KeyboardInterrupt/SystemExit bare,
    outside cancellation untouched, anything else (a supervisor bug) as a SupervisorError."""
    fatal = group.subgroup((KeyboardInterrupt, SystemExit))
    if fatal is not None:
        leaf: BaseException = fatal
        while isinstance(leaf, BaseExceptionGroup):
            leaf = leaf.exceptions[0]
        raise leaf
    if group.split(trio.Cancelled)[1] is None:
        raise group
    raise SupervisorError(f"supervisor {name!r} failed internally") from group
