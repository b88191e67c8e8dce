"""What the HTTP emulators (Anthropic Messages, Telnyx Call Control) share: an ASGI app on
hypercorn's trio worker over a real loopback socket, and the lifespan protocol answered.

We create and close the listening sockets ourselves: hypercorn's ``serve()`` leaves them to the GC.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from functools import partial
from typing import Any, cast

import trio
from hypercorn.config import Config
from hypercorn.trio.run import worker_serve
from hypercorn.utils import wrap_app

__all__ = ["Receive", "Scope", "Send", "answer_lifespan", "serve_asgi"]

Scope = Mapping[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


async def answer_lifespan(receive: Receive, send: Send) -> None:
    """An emulator's ``lifespan`` scope: nothing to start or stop, so just say done."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def serve_asgi(app: Callable[[Scope, Receive, Send], Awaitable[None]], host: str, port: int,
                     *, log: logging.Logger,
                     shutdown_trigger: Callable[[], Awaitable[None]] | None = None,
                     graceful_timeout_s: float | None = None,
                     task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED
                     ) -> list[str]:
    """Serve ``app`` on ``host:port`` (0: any free port) until cancelled or ``shutdown_trigger``
    returns; ``task_status`` gets the bound URLs, and so does the return."""
    config = Config()
    config.bind = [f"{host}:{port}"]
    config.accesslog = None
    config.errorlog = log
    if graceful_timeout_s is not None:
        config.graceful_timeout = graceful_timeout_s
    sockets = config.create_sockets()
    binds: list[str] = []
    try:
        for sock in sockets.insecure_sockets:
            sock.listen(config.backlog)
        async with trio.open_nursery() as server:
            binds = await server.start(partial(
                worker_serve, wrap_app(cast(Any, app), config.wsgi_max_body_size, "asgi"),
                config, sockets=sockets, shutdown_trigger=shutdown_trigger))
            task_status.started(binds)
    finally:
        for sock in sockets.insecure_sockets:
            sock.close()
    return binds
