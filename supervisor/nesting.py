"""Supervisors as children of supervisors: a call registry holding one supervisor per call."""

from __future__ import annotations

import math
from collections.abc import Callable

import trio

from .outcomes import SupervisorExit
from .spec import ChildSpec, Restart, SupervisorSpec
from .supervisor import Supervisor

__all__ = ["supervisor_child"]


def supervisor_child(
    spec: SupervisorSpec | Callable[[], SupervisorSpec],
    *,
    name: str | None = None,
    restart: Restart = Restart.TEMPORARY,
    significant: bool = False,
    shutdown_s: float = math.inf,
) -> ChildSpec:
    """A `ChildSpec` that runs a nested supervisor, built afresh for every incarnation.

    Pass a factory rather than a spec when the nested children own channels and the nested
    supervisor may be restarted: channels are closed when a supervisor ends, so a restarted one
    needs new ones. The parent's polite stop calls the nested supervisor's `Supervisor.stop`;
    ``shutdown_s`` defaults to infinity (OTP's default for supervisors), since the nested
    supervisor bounds each of its own children. The child's started value, returned by the
    parent's `Supervisor.start_child`, is the nested `Supervisor`.
    """
    make = spec if callable(spec) else (lambda: spec)
    if name is None:
        if not isinstance(spec, SupervisorSpec):
            raise TypeError("supervisor_child(factory) needs name=")
        name = spec.name

    async def run_nested(*, task_status: trio.TaskStatus[Supervisor] = trio.TASK_STATUS_IGNORED
                         ) -> SupervisorExit:
        return await Supervisor(make()).run(task_status=task_status)

    return ChildSpec(name, run_nested, restart=restart, significant=significant,
                     shutdown_s=shutdown_s)
