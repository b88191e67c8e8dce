"""What a supervisor reports: frozen event records, their log lines, and the observer fan-out.

Every event is logged on the ``supervisor`` logger with structured ``extra`` fields
(``supervisor``, ``child``, ``event``), so a call supervisor named by its call id stamps that id on
every line. Only names and reasons are logged; an exception appears by type name alone (its
message might carry a URL or a token), and the full exception travels in the event record for
observers that want it.

Observers get the same records through `Observers.subscribe`: each has its own drop-oldest
mailbox, so a slow observer loses old events (counted in its mailbox statistics) but can never
stall supervision.
"""

from __future__ import annotations

import logging
from typing import Final, TypeAlias

import attrs
import trio

from .mailbox import MailboxReceiver, MailboxSender, Overflow, open_mailbox

__all__ = [
    "ChildExited",
    "ChildRestarting",
    "ChildStarted",
    "IntensityExceeded",
    "SupervisorEvent",
    "SupervisorStopped",
]

logger: Final = logging.getLogger("supervisor")

OBSERVER_EVENTS: Final = 256


@attrs.frozen
class ChildStarted:
    """A child's incarnation called ``task_status.started()`` (incarnations count from 1)."""

    supervisor: str
    child: str
    incarnation: int
    at: float


@attrs.frozen
class ChildExited:
    """A child's incarnation ended.

    ``reason`` is one of ``"returned"``, ``"raised <Type>"``, ``"failed to start: <Type>"``,
    ``"stopped"`` (returned after a polite stop) or ``"cancelled"`` (by the supervisor).
    """

    supervisor: str
    child: str
    incarnation: int
    reason: str
    exception: BaseException | None
    at: float


@attrs.frozen
class ChildRestarting:
    """A child will be started again after ``delay_s``; ``trigger`` is the child whose exit
    caused it (itself, or a sibling under one_for_all / rest_for_one)."""

    supervisor: str
    child: str
    delay_s: float
    trigger: str
    at: float


@attrs.frozen
class IntensityExceeded:
    """Restarting ``child`` would exceed ``max_restarts`` within ``period_s``: the supervisor
    gives up (and raises `SupervisorGaveUp` once its children are shut down)."""

    supervisor: str
    child: str
    max_restarts: int
    period_s: float
    exception: BaseException | None
    at: float


@attrs.frozen
class SupervisorStopped:
    """The supervisor's last event: all its children are gone."""

    supervisor: str
    reason: str
    at: float


SupervisorEvent: TypeAlias = (
    ChildStarted | ChildExited | ChildRestarting | IntensityExceeded | SupervisorStopped
)


def log_event(event: SupervisorEvent) -> None:
    """Write one structured log line for ``event``."""
    child = getattr(event, "child", None)
    extra = {"supervisor": event.supervisor, "child": child, "event": type(event).__name__}
    match event:
        case ChildStarted():
            logger.info("%s: child %s started (incarnation %d)",
                        event.supervisor, child, event.incarnation, extra=extra)
        case ChildExited():
            level = logging.WARNING if event.exception is not None else logging.INFO
            logger.log(level, "%s: child %s exited: %s",
                       event.supervisor, child, event.reason, extra=extra)
        case ChildRestarting():
            logger.info("%s: restarting child %s in %.3fs (after %s exited)",
                        event.supervisor, child, event.delay_s, event.trigger, extra=extra)
        case IntensityExceeded():
            logger.error("%s: child %s exceeded %d restarts in %gs; giving up",
                         event.supervisor, child, event.max_restarts, event.period_s, extra=extra)
        case SupervisorStopped():
            logger.info("%s: stopped: %s", event.supervisor, event.reason, extra=extra)


class Observers:
    """The supervisor's subscribers; publishing never waits and never fails."""

    def __init__(self, supervisor: str) -> None:
        self._supervisor = supervisor
        self._senders: list[MailboxSender[SupervisorEvent]] = []
        self._closed = False

    def subscribe(self, capacity: int = OBSERVER_EVENTS) -> MailboxReceiver[SupervisorEvent]:
        """Open a drop-oldest mailbox that receives every later event, then ends with the
        supervisor. After the supervisor stopped, the mailbox is born ended."""
        send, receive = open_mailbox[SupervisorEvent](
            capacity, Overflow.DROP_OLDEST, name=f"{self._supervisor}.events"
        )
        if self._closed:
            send.close()
        else:
            self._senders.append(send)
        return receive

    def publish(self, event: SupervisorEvent) -> None:
        """Log ``event`` and hand it to every observer still listening."""
        log_event(event)
        gone = []
        for send in self._senders:
            try:
                send.send_nowait(event)
            except trio.BrokenResourceError:  # the observer closed its end
                gone.append(send)
        for send in gone:
            self._senders.remove(send)
            send.close()

    def close(self) -> None:
        """End every observer's stream (idempotent)."""
        self._closed = True
        for send in self._senders:
            send.close()
        self._senders.clear()
