"""The demo's relay subscriber: every event a dashboard would see, shown as it comes, waitable.

A firehose subscriber (``WS /ws?callId=*``) on the service under demo; what it receives is what
the terminal shows (:mod:`centralita.demo_view`) and what the demo waits on and judges.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any, Final

import attrs
import trio
from trio_websocket import ConnectionClosed

from bench.emulators.ws_client import open_ws_client
from centralita.demo_result import DemoFailed
from centralita.demo_view import DemoView

__all__ = ["SUBSCRIBER_READY_TIMEOUT_S", "RelayEvents", "of_type", "subscribe"]

SUBSCRIBER_READY_TIMEOUT_S: Final = 5.0


@attrs.define(eq=False)
class RelayEvents:
    """Every relay event in arrival order, shown on the view as it comes; waitable."""

    view: DemoView
    clock: Callable[[], float]  # call time now
    events: list[dict[str, Any]] = attrs.field(factory=list)
    _changed: trio.Event = attrs.field(factory=trio.Event)

    def add(self, event: dict[str, Any]) -> None:
        self.events.append(event)
        self._show(event)
        self._changed.set()
        self._changed = trio.Event()

    def _show(self, event: Mapping[str, Any]) -> None:
        now, kind = self.clock(), event.get("type")
        if kind == "call":
            reason = f" ({event['reason']})" if event.get("reason") else ""
            self.view.note(now, f"call {event.get('state')}{reason}")
        elif kind == "partial":
            self.view.partial(now, str(event.get("text", "")))
        elif kind == "final":
            self.view.final(now, str(event.get("text", "")))
        elif kind == "latency":
            self.view.bot_speaking(now)
        elif kind == "reply":
            self.view.reply(now, str(event.get("text", "")), bool(event.get("interrupted")))
            turn_id = event.get("turnId")
            stages = next((e.get("stages") for e in reversed(self.events)
                           if e.get("type") == "latency" and e.get("turnId") == turn_id), None)
            if isinstance(stages, dict):
                self.view.waterfall(stages)

    def find(self, predicate: Callable[[dict[str, Any]], bool]) -> dict[str, Any] | None:
        return next((e for e in self.events if predicate(e)), None)

    async def wait_for(self, predicate: Callable[[dict[str, Any]], bool], timeout_s: float,
                       failure: str) -> dict[str, Any]:
        with trio.move_on_after(timeout_s):
            while (found := self.find(predicate)) is None:
                await self._changed.wait()
            return found
        raise DemoFailed(failure)


async def subscribe(url: str, events: RelayEvents, ready: Callable[[], bool], *,
                    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    """Subscribe at ``url`` into ``events`` until the service shuts down; started once
    ``ready()`` says the hub has registered the subscriber."""
    async with open_ws_client(url) as ws:
        with trio.fail_after(SUBSCRIBER_READY_TIMEOUT_S):
            while not ready():  # the hub has registered us: no event of the call is missed
                await trio.sleep(0.005)
        task_status.started()
        while True:
            try:
                events.add(json.loads(await ws.get_message()))
            except ConnectionClosed:
                return  # the service shut down


def of_type(kind: str, **fields: Any) -> Callable[[dict[str, Any]], bool]:
    """A predicate for :meth:`RelayEvents.wait_for`: an event of type ``kind`` with these fields."""
    return lambda e: e.get("type") == kind and all(e.get(k) == v for k, v in fields.items())

