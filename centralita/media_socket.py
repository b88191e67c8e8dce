"""The Telnyx media WebSocket on its raw socket: the actors' :class:`~actors.ports.MediaSocket`.

Why not ASGI: every inbound ``media`` frame through hypercorn is a read task wake-up, h11's and
hypercorn's WebSocket stream dispatch, an ASGI event dict, a trip through hypercorn's app queue and
another task wake-up: ~100 µs of CPU per 20 ms frame, the larger part of a listening call's cost
(``bench/RESULTS.md``, listening half). Here the socket's reader is the actor that wants the frames
(``TelnyxRx`` calls :meth:`RawMediaSocket.receive`): one ``recv``, wsproto's frame parser, and the
text goes straight back to it.

- Reading happens only inside :meth:`~RawMediaSocket.receive`, in the caller's task. Pings get
  their pong there; a client close gets its close reply and ``receive`` returns ``None``, as do EOF
  and a reset. Fragmented messages are joined; a message larger than ``max_message_bytes`` or a
  protocol violation closes the socket with 1009 or wsproto's code (1002/1007) and ends the stream.
- Writing (:meth:`~RawMediaSocket.send`, :meth:`~RawMediaSocket.close`, pongs) goes through one
  lock, so a control frame never lands inside a data frame. A send cut off by cancellation after
  the kernel took part of a frame leaves the stream unusable: the socket is marked broken and
  later sends raise :class:`trio.BrokenResourceError`.
- :meth:`~RawMediaSocket.close` sends the close frame and returns; :meth:`~RawMediaSocket.finish`
  (the route's, after the call is over and nobody else reads) waits a bounded time for the peer's
  close reply or EOF and closes the TCP socket. No extension is ever negotiated.
"""

from __future__ import annotations

import logging
import socket
from collections import deque
from typing import Any, Final

import attrs
import trio
from wsproto.connection import Connection, ConnectionState, ConnectionType
from wsproto.events import BytesMessage, CloseConnection, Event, Ping, TextMessage

log = logging.getLogger(__name__)

RECEIVE_BYTES: Final = 65_536
#: Telnyx's frames are a few hundred bytes (a 20 ms ``media`` frame is ~400): 1 MiB is generous.
MAX_MESSAGE_BYTES: Final = 1 << 20
CLOSE_HANDSHAKE_TIMEOUT_S: Final = 2.0
CLOSE_MESSAGE_TOO_BIG: Final = 1009
#: RFC 6455 §5.5: a control frame's payload is at most 125 bytes, two of them the close code.
_CLOSE_REASON_MAX_BYTES: Final = 123


def _close_reason(reason: str) -> str:
    data = reason.encode()[:_CLOSE_REASON_MAX_BYTES]
    return data.decode(errors="ignore")


@attrs.define(eq=False)
class RawMediaSocket:
    """An accepted WebSocket on a non-blocking socket; see the module docstring.

    Args:
        sock: the upgraded socket (the handshake's 101 already sent).
        received: bytes that followed the upgrade request's head.
        max_message_bytes: a bigger message closes the socket with 1009.
    """

    sock: socket.socket
    received: bytes = b""
    max_message_bytes: int = MAX_MESSAGE_BYTES
    closed: bool = attrs.field(default=False, init=False)  # no more frames either way
    close_code: int | None = attrs.field(default=None, init=False)  # the peer's, once it closed
    _ws: Connection = attrs.field(factory=lambda: Connection(ConnectionType.SERVER), init=False)
    _pending: deque[Event] = attrs.field(factory=deque, init=False)
    _fragments: list[Any] = attrs.field(factory=list, init=False)
    _fragment_bytes: int = attrs.field(default=0, init=False)
    _write_lock: trio.StrictFIFOLock = attrs.field(factory=trio.StrictFIFOLock, init=False)
    _broken: bool = attrs.field(default=False, init=False)
    _eof: bool = attrs.field(default=False, init=False)

    def __attrs_post_init__(self) -> None:
        if self.received:
            self._feed(self.received)
            self.received = b""

    # -- MediaSocket ------------------------------------------------------------------------
    async def receive(self) -> str | bytes | None:
        """The next whole message; ``None`` once the peer closed, left, or broke the protocol."""
        await trio.lowlevel.checkpoint_if_cancelled()
        while True:
            while self._pending:
                event = self._pending.popleft()
                if isinstance(event, (TextMessage, BytesMessage)):
                    message = self._assemble(event)
                    if message is not None:
                        await trio.lowlevel.cancel_shielded_checkpoint()
                        return message
                    if self.closed:
                        return None
                elif isinstance(event, Ping):
                    await self._write_frame(self._ws.send(event.response()))
                elif isinstance(event, CloseConnection):
                    await self._peer_closed(event)
                    return None
            if self.closed or self._eof:
                return None
            if not await self._recv():
                self.closed = True
                return None

    async def send(self, text: str) -> None:
        """One text frame; :class:`trio.BrokenResourceError` once the socket is closed or gone."""
        if self.closed or self._broken:
            raise trio.BrokenResourceError("telnyx socket closed")
        await self._write_frame(self._ws.send(TextMessage(data=text)))

    async def close(self, code: int, reason: str = "") -> None:
        """Send the close frame (idempotent, never raises for a closed or broken socket)."""
        if self.closed:
            return
        self.closed = True
        if self._ws.state is ConnectionState.OPEN and not self._broken:
            try:
                await self._write_frame(self._ws.send(
                    CloseConnection(code=code, reason=_close_reason(reason))))
            except trio.BrokenResourceError:
                pass

    # -- the route's part ---------------------------------------------------------------------
    async def finish(self, timeout_s: float = CLOSE_HANDSHAKE_TIMEOUT_S) -> None:
        """After :meth:`close` (and with no reader left): wait for the peer's close reply or EOF,
        at most ``timeout_s``, then close the TCP socket. Safe to call on any state."""
        with trio.move_on_after(timeout_s) as waiting:
            waiting.shield = True
            while (not self._eof and not self._broken
                   and self._ws.state is ConnectionState.LOCAL_CLOSING):
                self._pending.clear()  # whatever the peer still had to say is moot
                if not await self._recv():
                    break
        if self.sock.fileno() != -1:
            trio.lowlevel.notify_closing(self.sock)
            self.sock.close()

    # -- internals ------------------------------------------------------------------------------
    async def _recv(self) -> bool:
        """Read once more into the parser; False on EOF or a reset."""
        while True:
            try:
                data = self.sock.recv(RECEIVE_BYTES)
            except BlockingIOError:
                await trio.lowlevel.wait_readable(self.sock)
                continue
            except OSError:
                self._eof = True
                return False
            if not data:
                self._eof = True
                return False
            self._feed(data)
            return True

    def _feed(self, data: bytes) -> None:
        self._ws.receive_data(data)
        self._pending.extend(self._ws.events())

    def _assemble(self, event: TextMessage | BytesMessage) -> str | bytes | None:
        """Join fragments; the whole message once it is finished (None until then)."""
        self._fragment_bytes += len(event.data)
        if self._fragment_bytes > self.max_message_bytes:
            log.warning("telnyx message too large: closing", extra={"limit": self.max_message_bytes})
            self._fragments.clear()
            self._pending.clear()
            self._pending.append(CloseConnection(code=CLOSE_MESSAGE_TOO_BIG,
                                                 reason="message too big"))
            return None
        self._fragments.append(event.data)
        if not event.message_finished:
            return None
        self._fragment_bytes = 0
        pieces, self._fragments = self._fragments, []
        if isinstance(event, TextMessage):
            return pieces[0] if len(pieces) == 1 else "".join(pieces)
        return b"".join(pieces)

    async def _peer_closed(self, event: CloseConnection) -> None:
        """The peer closed, or its bytes broke the protocol (wsproto says so with a close)."""
        self.close_code = event.code
        already_closed = self.closed
        self.closed = True
        if already_closed or self._broken:
            return
        try:
            if self._ws.state is ConnectionState.REMOTE_CLOSING:
                await self._write_frame(self._ws.send(event.response()))
            elif self._ws.state is ConnectionState.OPEN:  # our own verdict (1002, 1007, 1009)
                log.warning("telnyx socket closed for a protocol error",
                            extra={"code": event.code, "reason": event.reason})
                await self._write_frame(self._ws.send(
                    CloseConnection(code=event.code, reason=_close_reason(event.reason or ""))))
        except trio.BrokenResourceError:
            pass

    async def _write_frame(self, data: bytes) -> None:
        async with self._write_lock:
            if self._broken:
                raise trio.BrokenResourceError("telnyx socket broken")
            view = memoryview(data)
            try:
                while view:
                    try:
                        sent = self.sock.send(view)
                    except BlockingIOError:
                        await trio.lowlevel.wait_writable(self.sock)
                        continue
                    view = view[sent:]
            except OSError as exc:
                self._broken = True
                raise trio.BrokenResourceError(f"telnyx socket gone: {exc}") from exc
            except BaseException:
                if len(view) != len(data):  # the peer got half a frame: nothing may follow
                    self._broken = True
                raise
