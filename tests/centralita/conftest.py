"""Fixtures that run the real relay (hypercorn trio worker) on a loopback port inside the test."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import attrs
import httpx
import pytest
import trio

from centralita.app import App
from centralita.relay_hub import RelayHub
from centralita.server import Relay, build_relay_app, serve_until
from centralita.settings import Secret, Settings


@attrs.define(eq=False)
class RunningRelay:
    app: App
    relay: Relay
    base_url: str
    stop: trio.Event
    http: httpx.AsyncClient

    @property
    def hub(self) -> RelayHub:
        return self.relay.hub

    @property
    def ws_url(self) -> str:
        return self.base_url.replace("http://", "ws://")

    async def post(self, event: dict[str, Any], **kwargs: Any) -> httpx.Response:
        return await self.http.post(f"{self.base_url}/event", json=event, **kwargs)


StartRelay = Callable[..., Any]


@pytest.fixture
async def start_relay() -> AsyncIterator[StartRelay]:
    """Start a relay with chosen settings/hub knobs; drained and stopped at test end."""
    running: list[RunningRelay] = []
    async with trio.open_nursery() as nursery, httpx.AsyncClient(timeout=10) as client:

        async def start(*, token: str | None = None, ttl_s: float = 3600.0,
                        queue_frames: int | None = None) -> RunningRelay:
            settings = Settings(host="127.0.0.1", port=0,
                                relay_token=Secret(token) if token else None,
                                relay_backlog_ttl_s=ttl_s)
            app, relay = build_relay_app(settings)
            if queue_frames is not None:
                relay.hub.queue_frames = queue_frames
            stop = trio.Event()
            binds = await nursery.start(serve_until, app, settings, stop)
            r = RunningRelay(app=app, relay=relay, base_url=binds[0], stop=stop, http=client)
            running.append(r)
            return r

        yield start
        for r in running:
            r.stop.set()


@pytest.fixture
async def relay(start_relay: StartRelay) -> RunningRelay:
    result: RunningRelay = await start_relay()
    return result
