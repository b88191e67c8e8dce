"""Scripted children and small helpers for the supervisor tests (nothing actor-specific)."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any, Final, ParamSpec, TypeVar

import attrs
import trio

from supervisor import Supervisor, SupervisorError, SupervisorExit, SupervisorSpec


P = ParamSpec("P")
R = TypeVar("R")

HANG_S: Final = 3600.0


def bounded(test: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
    """Make a test whose failure mode is waiting forever fail instead of hanging.

    Under ``autojump_clock`` the HANG_S deadline arrives in an instant once every task is
    blocked, so a broken end-of-input or shutdown shows up as `trio.TooSlowError`.
    """

    @functools.wraps(test)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        with trio.fail_after(HANG_S):
            return await test(*args, **kwargs)

    return wrapper


@attrs.define(eq=False)
class Scripted:
    """A child whose first ``failures`` incarnations raise after ``up_s``; later ones either
    sleep forever or return. Writes ``start <name>`` / ``stop <name>`` to the journal (the stop
    line from a ``finally``, so it is written on cancellation too)."""

    journal: list[str]
    name: str
    failures: int = 0
    up_s: float = 0.0
    then: str = "forever"  # or "return"
    incarnations: int = 0

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        self.incarnations += 1
        n = self.incarnations
        self.journal.append(f"start {self.name}")
        try:
            task_status.started()
            await trio.sleep(self.up_s)
            if n <= self.failures:
                raise ValueError(f"{self.name} failure {n}")
            if self.then == "forever":
                await trio.sleep_forever()
        finally:
            self.journal.append(f"stop {self.name}")


async def run_briefly(sup: Supervisor, limit_s: float = 60.0) -> SupervisorExit:
    """Run a supervisor expected to end (or give up) soon: if that is broken it fails within
    ``limit_s`` of trio time rather than restarting forever."""
    with trio.fail_after(limit_s):
        return await sup.run()


@attrs.define(eq=False)
class Launched:
    """A supervisor running in a background task, with how it ended."""

    supervisor: Supervisor
    done: trio.Event = attrs.Factory(trio.Event)
    exit: SupervisorExit | None = None
    error: SupervisorError | None = None


async def launch(nursery: trio.Nursery, spec: SupervisorSpec) -> Launched:
    """Start a supervisor for ``spec`` in ``nursery``; returns once its children started."""
    launched = Launched(Supervisor(spec))

    async def runner(*, task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED) -> None:
        try:
            launched.exit = await launched.supervisor.run(task_status=task_status)
        except SupervisorError as exc:
            launched.error = exc
        finally:
            launched.done.set()

    await nursery.start(runner)
    return launched


def count_tasks() -> int:
    """Every task in the run, found by walking the task tree from the root."""

    def walk(task: trio.lowlevel.Task) -> int:
        return 1 + sum(walk(t) for n in task.child_nurseries for t in n.child_tasks)

    root = trio.lowlevel.current_root_task()
    assert root is not None
    return walk(root)
