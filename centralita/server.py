"""Serving: runs the app built by ``centralita.composition`` on hypercorn's trio worker.

Shutdown belongs to us: SIGTERM/SIGINT → :meth:`App.drain` (refuse new work, close sockets with
proper codes, wait for handlers) → hypercorn's shutdown trigger → lifespan shutdown → exit.
"""

from __future__ import annotations

import gc
import logging
import signal
from functools import partial
from typing import Any, Final, cast

import trio
from hypercorn.config import Config
from hypercorn.utils import wrap_app

from centralita import logs
from centralita.app import App
from centralita.composition import (Relay, Service, build_relay_app,  # noqa: F401 - re-exported
                                    build_service_app)
from centralita.front_door import FrontDoor
from centralita.settings import Settings

log = logging.getLogger(__name__)

HYPERCORN_GRACEFUL_TIMEOUT_S: Final = 2.0
WEBSOCKET_MAX_MESSAGE_BYTES: Final = 1_048_576


def hypercorn_config(settings: Settings) -> Config:
    config = Config()
    host = settings.host
    config.bind = [f"[{host}]:{settings.port}" if ":" in host else f"{host}:{settings.port}"]
    config.accesslog = None
    config.errorlog = logging.getLogger("hypercorn.error")
    config.graceful_timeout = HYPERCORN_GRACEFUL_TIMEOUT_S
    config.websocket_max_message_size = WEBSOCKET_MAX_MESSAGE_BYTES
    config.backlog = 4096
    return config


async def serve_until(app: App, settings: Settings, stop: trio.Event, *,
                      task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED) -> None:
    """Serve ``app`` until ``stop`` is set; then drain it, then let hypercorn shut down.

    ``task_status.started`` receives the bound URLs (port 0 picks a free port).
    """
    shutdown = trio.Event()
    config = hypercorn_config(settings)
    door = FrontDoor(app)  # relay subscriber sockets bypass ASGI; the rest goes to hypercorn
    # We create (and close) the listening sockets: hypercorn's serve() leaves them to the GC.
    sockets = config.create_sockets()
    for sock in sockets.insecure_sockets + sockets.secure_sockets:
        sock.listen(config.backlog)
    try:
        async with trio.open_nursery() as nursery:

            async def drain_on_stop() -> None:
                await stop.wait()
                await app.drain()
                await door.wait_upgrades_closed(app.drain_timeout_s)
                shutdown.set()

            nursery.start_soon(drain_on_stop)
            binds = await nursery.start(partial(
                door.serve, wrap_app(cast(Any, app), config.wsgi_max_body_size, "asgi"), config,
                sockets=sockets, shutdown_trigger=shutdown.wait))
            task_status.started(binds)
    finally:
        for sock in sockets.insecure_sockets + sockets.secure_sockets:
            sock.close()


async def serve(app: App, settings: Settings, *,
                task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED) -> None:
    """Serve ``app`` until SIGTERM or SIGINT, then shut down gracefully."""
    stop = trio.Event()
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with trio.open_nursery() as nursery:

            async def watch_signals() -> None:
                async for signum in signals:
                    log.info("signal received, shutting down", extra={"signal": signum})
                    stop.set()
                    return

            nursery.start_soon(watch_signals)
            binds = await nursery.start(serve_until, app, settings, stop)
            task_status.started(binds)
            await stop.wait()


#: The cyclic GC's thresholds once the service is built (CPython's default: 700, 10, 10).
GC_THRESHOLDS: Final = (5_000, 50, 10)


def settle_heap(thresholds: tuple[int, int, int] = GC_THRESHOLDS) -> None:
    """Tune the cyclic garbage collector for a process full of live calls (call it once the app
    is built, before serving). The GC is process-wide state, so only the CLI (and benchmarks that
    stand in for it) call this.

    - ``gc.freeze()``: everything built so far lives for the whole process; without this, full
      collections walked ~250k start-up objects for 90-150 ms each, stalling every call at once.
    - Higher thresholds: a call's steady state makes little cyclic garbage (frames and messages die
      by reference count), but with the default 700 every burst of live objects triggered a
      collection, and every gen-1 pass promoted whatever was in flight to gen 2, so full passes
      over the calls' own objects (~50k at 100 calls, 30-40 ms) came every few seconds.
      ``bench/bench_listen.py`` at 100 calls: frame -> Deepgram p99 7.8-8.3 ms / max 49-53 ms with
      the defaults, 1.2-1.4 ms / max 4-5 ms with these (bench/RESULTS.md).
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(*thresholds)


def run_from_cli(command: str, settings: Settings) -> int:
    logs.configure()
    if command == "relay":
        app, _ = build_relay_app(settings)
    elif command == "serve":
        app, _ = build_service_app(settings)
    else:  # pragma: no cover - argparse restricts the choices
        raise SystemExit(f"unknown command {command}")
    settle_heap()

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            binds = await nursery.start(serve, app, settings)
            # One line on stdout so scripts (and tests) learn the bound port.
            print(f"centralita {command} listening on {' '.join(binds)}", flush=True)

    trio.run(main)
    return 0
