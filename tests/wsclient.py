"""trio-websocket clients for tests, without the socket leak of trio-websocket 0.12.

When the *server* closes first, trio-websocket's client marks the WebSocket closed and then
``aclose()`` returns early without closing the TCP stream (its ``_aclose`` bails out once a close
reason is set), leaving the socket to the garbage collector (ResourceWarning, an error under
``filterwarnings = error``). This wrapper closes the stream on the way out.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import trio
from trio_websocket import WebSocketConnection, open_websocket_url


@asynccontextmanager
async def open_ws(url: str, **kwargs: Any) -> AsyncIterator[WebSocketConnection]:
    conn: WebSocketConnection | None = None
    try:
        async with open_websocket_url(url, **kwargs) as ws:
            conn = ws
            yield ws
    finally:
        if conn is not None:  # after trio-websocket's own close handshake
            await trio.aclose_forcefully(conn._stream)  # noqa: SLF001 - see module docstring
