"""Child and supervisor specifications, in Erlang/OTP's vocabulary.

A `ChildSpec` says how to run one child and when to bring it back; a `SupervisorSpec` says how a
group of children is supervised: the restart `Strategy`, the restart intensity (more than
``max_restarts`` restarts within ``period_s`` seconds and the supervisor gives up, escalating the
child's error), an optional `Backoff` and the `AutoShutdown` rule for significant children.
Specs are frozen values: a supervisor can be rebuilt from the same spec on every restart.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, Final, Protocol, Self, runtime_checkable

import attrs

__all__ = [
    "AutoShutdown",
    "Backoff",
    "ChildSpec",
    "CloneableChannel",
    "Restart",
    "Strategy",
    "SupervisorSpec",
]

CHILD_SHUTDOWN_S: Final = 5.0
MAX_RESTARTS: Final = 3
RESTART_PERIOD_S: Final = 5.0


class Restart(enum.Enum):
    """When a child that has exited is started again."""

    PERMANENT = "permanent"
    """Always restarted, after a normal return too."""
    TRANSIENT = "transient"
    """Restarted only after it raised; a normal return ends it for good."""
    TEMPORARY = "temporary"
    """Never restarted."""


class Strategy(enum.Enum):
    """Which children are restarted when one of them is."""

    ONE_FOR_ONE = "one_for_one"
    """Only the child that exited."""
    ONE_FOR_ALL = "one_for_all"
    """Every child: the others are stopped (reverse start order), then all start again in order."""
    REST_FOR_ONE = "rest_for_one"
    """The child that exited and every child started after it."""


class AutoShutdown(enum.Enum):
    """Whether the ending of significant children stops the supervisor (OTP 24)."""

    NEVER = "never"
    ANY_SIGNIFICANT = "any_significant"
    """The first significant child to end for good stops the supervisor (a call ends when its
    socket reader does)."""
    ALL_SIGNIFICANT = "all_significant"
    """The supervisor stops once every significant child has ended for good."""


@runtime_checkable
class CloneableChannel(Protocol):
    """A channel end the supervisor can hand out per incarnation: trio memory channels, mailboxes."""

    def clone(self) -> Self: ...

    def close(self) -> None: ...


def _check_channels(_: object, attribute: attrs.Attribute[Any], value: Mapping[str, Any]) -> None:
    for key, channel in value.items():
        if not isinstance(channel, CloneableChannel):
            raise TypeError(f"channel {key!r} ({channel!r}) has no clone()/close()")


def _to_channels(channels: Mapping[str, CloneableChannel]) -> Mapping[str, CloneableChannel]:
    return dict(channels)


def _to_children(children: Iterable[ChildSpec]) -> tuple[ChildSpec, ...]:
    return tuple(children)


def _check_shutdown(_: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if not value >= 0:
        raise ValueError(f"shutdown_s must be >= 0, got {value!r}")


@attrs.frozen
class ChildSpec:
    """How to run one child and when to bring it back.

    ``run`` is called once per incarnation as ``await run(**channels, task_status=task_status)``
    and is started with ``nursery.start``: the child counts as started once it calls
    ``task_status.started(value)`` (children start in order, each ready before the next). The
    value it passes is what `Supervisor.start_child` returns.

    ``channels`` holds the originals of the child's channel ends (trio memory channels or
    mailboxes). Each incarnation gets fresh ``clone()``\\ s, which the supervisor closes when the
    incarnation ends; a restarted child therefore gets the *same* channels: what was queued for
    it survives the restart and its peers never notice. When the child ends for good (not
    restarted, or the supervisor stops) the supervisor closes the originals too, which is how end
    of input travels down a pipeline and how producers learn that their consumer is gone.

    Args:
      name: unique among the supervisor's children; used in events and logs.
      run: the child's long-lived coroutine function (an actor's ``run``).
      channels: keyword name -> channel end passed to ``run``.
      restart: see `Restart`.
      shutdown_s: how long a polite stop may take before the child is cancelled.
      significant: whether its ending counts for `AutoShutdown` (not allowed for permanent
        children, which never end for good).
    """

    name: str = attrs.field(validator=attrs.validators.min_len(1))
    run: Callable[..., Awaitable[object]]
    channels: Mapping[str, CloneableChannel] = attrs.field(
        factory=dict, converter=_to_channels, validator=_check_channels
    )
    restart: Restart = Restart.PERMANENT
    shutdown_s: float = attrs.field(default=CHILD_SHUTDOWN_S, validator=_check_shutdown)
    significant: bool = False

    def __attrs_post_init__(self) -> None:
        if self.significant and self.restart is Restart.PERMANENT:
            raise ValueError(f"child {self.name!r}: a permanent child cannot be significant")


@attrs.frozen
class Backoff:
    """Exponential delay before restarting a child: ``min(initial_s * factor**n, max_s)``.

    ``n`` counts the child's consecutive restarts. It resets to 0 when an incarnation stayed up
    for at least the supervisor's ``period_s`` — a failure after that long is not part of a burst,
    so the child is restarted promptly again.
    """

    initial_s: float = 0.1
    factor: float = 2.0
    max_s: float = 10.0

    def __attrs_post_init__(self) -> None:
        if not (0 <= self.initial_s <= self.max_s and self.factor >= 1 and math.isfinite(self.max_s)):
            raise ValueError(f"invalid backoff {self!r}")

    def delay_s(self, consecutive: int) -> float:
        """The delay before restart number ``consecutive`` (0 for the first)."""
        if consecutive > 64:  # factor**n would overflow long after max_s was reached
            return self.max_s
        return min(self.initial_s * self.factor**consecutive, self.max_s)


@attrs.frozen
class SupervisorSpec:
    """How a group of children is supervised.

    Args:
      name: names the supervisor in events, logs and errors (a call supervisor uses the call id).
      children: the static children, started in this order and stopped in reverse.
      strategy: see `Strategy`.
      max_restarts, period_s: restart intensity; more than ``max_restarts`` restarts within
        ``period_s`` seconds (trio time) and the supervisor gives up.
      backoff: delay before each restart; None restarts at once, as OTP does.
      auto_shutdown: see `AutoShutdown`.
    """

    name: str = attrs.field(validator=attrs.validators.min_len(1))
    children: tuple[ChildSpec, ...] = attrs.field(factory=tuple, converter=_to_children)
    strategy: Strategy = Strategy.ONE_FOR_ONE
    max_restarts: int = attrs.field(default=MAX_RESTARTS, validator=attrs.validators.ge(0))
    period_s: float = attrs.field(default=RESTART_PERIOD_S, validator=attrs.validators.gt(0))
    backoff: Backoff | None = None
    auto_shutdown: AutoShutdown = AutoShutdown.NEVER

    def __attrs_post_init__(self) -> None:
        names = [child.name for child in self.children]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"supervisor {self.name!r}: duplicate child names {duplicates}")
