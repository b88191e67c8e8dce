"""What a supervisor hands back: its exit record, its errors, and snapshots of its children."""

from __future__ import annotations

import enum

import attrs

from .spec import Restart

__all__ = [
    "ChildInfo",
    "ChildStartFailed",
    "ChildState",
    "SupervisorError",
    "SupervisorExit",
    "SupervisorGaveUp",
    "SupervisorNotRunning",
]


@attrs.frozen
class SupervisorExit:
    """How a supervisor stopped when it did not give up.

    ``reason`` is the one given to `Supervisor.stop`, ``"significant child <name> exited"``,
    ``"all significant children exited"`` or ``"all children exited"``.
    """

    name: str
    reason: str
    at: float


class ChildState(enum.Enum):
    """Where a child is in its life; ended children leave the supervisor's table."""

    STARTING = "starting"
    RUNNING = "running"
    RESTARTING = "restarting"
    """Exited (or stopped for a sibling's restart) and waiting to be started again."""
    STOPPING = "stopping"


@attrs.frozen
class ChildInfo:
    """A snapshot of one child, as returned by `Supervisor.which_children`."""

    name: str
    restart: Restart
    state: ChildState
    restarts: int
    incarnation: int
    started_at: float | None
    significant: bool
    dynamic: bool


class SupervisorError(Exception):
    """Base class of the errors a supervisor raises."""


class SupervisorGaveUp(SupervisorError):
    """A supervisor exceeded its restart intensity, or a static child failed to start.

    Raised by `Supervisor.run` once the other children are shut down; a single exception, never
    an ExceptionGroup. ``error`` (also ``__cause__``) is the child's original exception, or None
    when a permanent child kept returning normally.
    """

    def __init__(self, supervisor: str, child: str, error: BaseException | None, why: str) -> None:
        detail = "" if error is None else f": {type(error).__name__}: {error}"
        super().__init__(f"supervisor {supervisor!r} gave up: child {child!r} {why}{detail}")
        self.supervisor = supervisor
        self.child = child
        self.error = error


class ChildStartFailed(SupervisorError):
    """`Supervisor.start_child` could not start the child; ``error`` is why (also ``__cause__``)."""

    def __init__(self, supervisor: str, child: str, error: BaseException | None) -> None:
        detail = "returned" if error is None else f"raised {type(error).__name__}: {error}"
        super().__init__(f"supervisor {supervisor!r}: child {child!r} {detail} before it started")
        self.supervisor = supervisor
        self.child = child
        self.error = error


class SupervisorNotRunning(SupervisorError):
    """The supervisor is not running (not started yet, stopping, or stopped)."""
