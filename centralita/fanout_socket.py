"""Relay subscribers served straight from their sockets: one writer task per hub, frames built once.

Why not ASGI: through hypercorn every delivery is a task wake-up, a ``websocket.send`` through its
WSStream and wsproto, and a ``send_all``: 30–50 µs of CPU per delivery, 10× Node's ``ws``
(``bench/RESULTS.md``). Here a delivery costs a list append in :meth:`RelayHub.publish`; the rest
is paid per subscriber per *flush*, and a flush carries everything queued for that subscriber:

- Server-to-client frames are unmasked, so one event's frame is the same bytes for every
  subscriber: it is built once (cached on the hub's :class:`Delivery`) and every queue holds a
  reference to it, never a copy.
- One writer task per hub (:meth:`FanoutWriter.run`) takes the subscriptions the hub marked ready
  and writes each one's queue with one non-blocking ``sendmsg`` (gather write) on the raw socket.
  While the writer is busy, events pile up in the queues, so the heavier the load, the more frames
  each system call carries.
- A subscriber whose kernel buffer is full gets a waiter task of its own (``wait_writable``) only
  while it stays blocked; the hub's ``queue_frames`` bound still applies to what waits behind it
  (close 1013, counted).
- Reading is one task per subscriber, asleep in ``wait_readable`` (subscribers have nothing to
  say): wsproto's frame parser; pings get pongs, data frames are counted as garbage and dropped, a
  client close gets its close reply, EOF or a reset ends the subscription.

Ordering on the wire: frames go out whole and in queue order; a control frame (pong, close) only
ever goes between two frames. Closing: a kicked subscription (slow: 1013, shutdown: 1001, client
close: its code echoed, protocol error: wsproto's code) drops what is still queued, finishes the
frame the kernel took part of, sends the close frame, waits for the client's close (or EOF) at most
:data:`CLOSE_HANDSHAKE_TIMEOUT_S` from the kick, then closes the TCP socket.
"""

from __future__ import annotations

import logging
import socket
import struct
from collections.abc import Callable
from typing import Final

import attrs
import trio
from wsproto.frame_protocol import FrameProtocol, Opcode, ParseFailed

from centralita.relay_hub import CLOSE_TRY_AGAIN_LATER, Delivery, RelayHub, Subscription

log = logging.getLogger(__name__)

CLOSE_HANDSHAKE_TIMEOUT_S: Final = 5.0
RECEIVE_BYTES: Final = 65_536
#: Before a round, the writer yields while other tasks are runnable (publishers mid-request), at
#: most this many times: more events per system call, at a bounded cost in latency.
YIELDS_BEFORE_FLUSH_MAX: Final = 4
#: Buffers per ``sendmsg`` call: the kernel refuses more than IOV_MAX (1024 on Linux).
SEND_BUFFERS_MAX: Final = 1024

_TEXT_FIN: Final = 0x81
_NO_CODE: Final = frozenset({None, 1005})
_SHORT = struct.Struct("!BB")
_MEDIUM = struct.Struct("!BBH")
_LONG = struct.Struct("!BBQ")


def text_frame(payload: bytes) -> bytes:
    """An unmasked, final WebSocket text frame (RFC 6455 §5.2) holding ``payload``."""
    n = len(payload)
    if n < 126:
        return _SHORT.pack(_TEXT_FIN, n) + payload
    if n < 65_536:
        return _MEDIUM.pack(_TEXT_FIN, 126, n) + payload
    return _LONG.pack(_TEXT_FIN, 127, n) + payload


def frame_of(delivery: Delivery) -> bytes:
    """The delivery's WebSocket frame, built on first use and cached for every other subscriber."""
    frame = delivery.frame
    if frame is None:
        frame = delivery.frame = text_frame(delivery.text.encode())
    return frame


@attrs.define(eq=False, slots=True)
class FanoutSocket:
    """The writer's and the reader's shared state for one subscriber's socket."""

    sock: socket.socket
    sub: Subscription
    protocol: FrameProtocol = attrs.field(factory=lambda: FrameProtocol(client=False,
                                                                        extensions=[]))
    #: The reader's scope: cancelled on a send error, given a deadline when closing starts.
    scope: trio.CancelScope = attrs.field(factory=trio.CancelScope)
    #: What the kernel has not yet taken of a frame it took part of (always sent first).
    partial: memoryview | None = None
    #: The close frame, until it is handed to the kernel.
    close_frame: bytes | None = None
    closing: bool = False
    close_sent: trio.Event = attrs.field(factory=trio.Event)
    blocked: bool = False
    dead: bool = False


@attrs.frozen
class FanoutStatistics:
    subscribers: int
    blocked: int
    blocked_total: int
    flushes_total: int
    #: Frames handed to the kernel, whole or begun (the rest follows before anything else).
    frames_sent_total: int


@attrs.define(eq=False)
class FanoutWriter:
    """Writes a hub's deliveries to raw WebSocket sockets: one task for all subscribers.

    Receives: subscriptions the hub marks ready (``notify``). Sends: WebSocket frames on the
    subscriber sockets handed to :meth:`serve`. On end: :meth:`run` runs until cancelled; sockets
    belong to their :meth:`serve` calls, which close them.

    Args:
        hub: the deliveries' source.
        on_garbage: called once per data message a subscriber sends (they are dropped).
    """

    hub: RelayHub
    on_garbage: Callable[[], object] = lambda: None
    _ready: list[Subscription] = attrs.field(factory=list, init=False)
    _wake: trio.Event = attrs.field(factory=trio.Event, init=False)
    _nursery: trio.Nursery | None = attrs.field(default=None, init=False)
    _open: int = attrs.field(default=0, init=False)
    _blocked: int = attrs.field(default=0, init=False)
    _blocked_total: int = attrs.field(default=0, init=False)
    _flushes_total: int = attrs.field(default=0, init=False)
    _frames_sent_total: int = attrs.field(default=0, init=False)

    def statistics(self) -> FanoutStatistics:
        return FanoutStatistics(subscribers=self._open, blocked=self._blocked,
                                blocked_total=self._blocked_total,
                                flushes_total=self._flushes_total,
                                frames_sent_total=self._frames_sent_total)

    # -- the writer -------------------------------------------------------------------------
    def _schedule(self, sub: Subscription) -> None:
        """The hub's ``notify``: queue ``sub`` for the next flush round."""
        ready = self._ready
        if not ready:
            self._wake.set()
        ready.append(sub)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Flush ready subscribers, round after round, until cancelled."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            while True:
                if not self._ready:
                    self._wake = trio.Event()
                    await self._wake.wait()
                # Writer last: publishers already runnable add to this round first.
                for _ in range(YIELDS_BEFORE_FLUSH_MAX):
                    await trio.lowlevel.cancel_shielded_checkpoint()
                    if not trio.lowlevel.current_statistics().tasks_runnable:
                        break
                ready, self._ready = self._ready, []
                for sub in ready:
                    conn: FanoutSocket | None = sub.transport
                    if conn is None or conn.dead:
                        continue
                    if sub.close_code is not None and not conn.closing:
                        self._begin_close(conn)
                    if conn.blocked:
                        continue  # its waiter flushes when the socket drains
                    if self._flush(conn):
                        conn.blocked = True
                        self._blocked += 1
                        self._blocked_total += 1
                        nursery.start_soon(self._flush_when_writable, conn)

    def _begin_close(self, conn: FanoutSocket) -> None:
        sub = conn.sub
        conn.closing = True
        code = sub.close_code
        if code in _NO_CODE:  # nothing to echo: an empty close frame
            conn.close_frame = bytes(conn.protocol.close())
        else:
            conn.close_frame = bytes(conn.protocol.close(code, sub.close_reason or None))
        deadline = trio.current_time() + CLOSE_HANDSHAKE_TIMEOUT_S
        conn.scope.deadline = min(conn.scope.deadline, deadline)

    def _flush(self, conn: FanoutSocket) -> bool:
        """Hand the kernel everything pending for ``conn``; True if its socket buffer is full."""
        sub = conn.sub
        queue = sub.queue
        if conn.closing:
            queue.clear()
        n_frames = min(len(queue), SEND_BUFFERS_MAX - 2)
        buffers: list[bytes | memoryview] = [d.frame or frame_of(d) for d in queue[:n_frames]]
        if conn.partial is not None:
            buffers.insert(0, conn.partial)
        if conn.close_frame is not None:
            buffers.append(conn.close_frame)
        if not buffers:
            sub.scheduled = False
            return False
        try:
            if len(buffers) == 1:
                sent = conn.sock.send(buffers[0])
            else:
                sent = conn.sock.sendmsg(buffers)
        except BlockingIOError:
            sent = 0
        except OSError:
            self._broken(conn)
            return False
        self._flushes_total += 1
        total = sum(map(len, buffers))
        if sent == total:
            self._frames_sent_total += n_frames
            conn.partial = None
            if conn.closing:  # the close frame went out, in this call or as an earlier partial
                conn.close_frame = None
                conn.close_sent.set()
            if n_frames == len(queue):
                queue.clear()
                sub.scheduled = False
            else:  # more than one sendmsg's worth: the rest goes next round
                del queue[:n_frames]
                self._schedule(sub)
            return False
        self._account_partial_send(conn, buffers, sent, n_frames)
        return True

    def _account_partial_send(self, conn: FanoutSocket, buffers: list[bytes | memoryview],
                              sent: int, n_frames: int) -> None:
        """Drop what the kernel took whole; keep the rest of the buffer it took part of."""
        queue = conn.sub.queue
        index = 0
        for index, buffer in enumerate(buffers):  # noqa: B007 - index is used after the loop
            if sent < len(buffer):
                break
            sent -= len(buffer)
        first_frame = 1 if conn.partial is not None else 0
        if index < first_frame:  # still inside the old partial frame
            conn.partial = conn.partial[sent:] if conn.partial is not None else None
            return
        done = min(index - first_frame, n_frames)
        self._frames_sent_total += done
        del queue[:done]
        conn.partial = None
        if index - first_frame < n_frames:  # inside a queued frame
            if sent:
                conn.partial = memoryview(frame_of(queue.pop(0)))[sent:]
                self._frames_sent_total += 1
        elif sent and conn.close_frame is not None:  # inside the close frame
            conn.partial = memoryview(conn.close_frame)[sent:]
            conn.close_frame = None

    async def _flush_when_writable(self, conn: FanoutSocket) -> None:
        try:
            while not conn.dead:
                await trio.lowlevel.wait_writable(conn.sock)
                if conn.dead or not self._flush(conn):
                    return
        except (trio.ClosedResourceError, OSError):
            pass  # the reader closed the socket
        finally:
            conn.blocked = False
            self._blocked -= 1

    def _broken(self, conn: FanoutSocket) -> None:
        """The socket failed on send (reset, broken pipe): stop the reader, drop the subscriber."""
        conn.dead = True
        self.hub.unsubscribe(conn.sub)
        conn.sub.queue.clear()
        conn.scope.cancel()

    # -- one subscriber's lifetime ----------------------------------------------------------
    async def serve(self, sock: socket.socket, call_id: str, since: int | None,
                    received: bytes = b"") -> None:
        """Subscribe and serve one upgraded socket (non-blocking) until it closes; closes it.

        Args:
            sock: the socket, after the 101 response.
            received: bytes the client sent after its handshake, already read.
        """
        sub = self.hub.subscribe(call_id, since, notify=self._schedule)
        conn = sub.transport = FanoutSocket(sock=sock, sub=sub)
        self._open += 1
        try:
            with conn.scope:
                await self._read(conn, received)
        finally:
            self._open -= 1
            conn.dead = True
            self.hub.unsubscribe(sub)
            sub.queue.clear()
            trio.lowlevel.notify_closing(sock)
            sock.close()

    async def _read(self, conn: FanoutSocket, received: bytes) -> None:
        """Read client frames until the close handshake ends, the peer leaves, or the deadline."""
        sock, protocol = conn.sock, conn.protocol
        data = received
        while True:
            if data:
                protocol.receive_bytes(data)
                try:
                    for frame in protocol.received_frames():
                        opcode = frame.opcode
                        if opcode is Opcode.CLOSE:
                            await self._client_closed(conn, frame.payload)  # type: ignore[arg-type]
                            return
                        if opcode is Opcode.PING:
                            self._control(conn, bytes(protocol.pong(frame.payload)))  # type: ignore[arg-type]
                        elif opcode is not Opcode.PONG and frame.message_finished:
                            self.on_garbage()
                except ParseFailed as exc:
                    log.info("relay subscriber sent a bad frame, closing",
                             extra={"call_id": conn.sub.call_id, "error": str(exc)})
                    self._close(conn, int(exc.code), "protocol error")
                    await conn.close_sent.wait()
                    return
            await trio.lowlevel.wait_readable(sock)
            try:
                data = sock.recv(RECEIVE_BYTES)
            except (BlockingIOError, InterruptedError):
                data = b""
                continue
            except OSError:  # reset
                return
            if not data:  # EOF
                return

    def _control(self, conn: FanoutSocket, frame: bytes) -> None:
        """Queue a control frame between two data frames (it counts against the queue bound)."""
        if not conn.closing and not conn.sub.offer(Delivery(text="", frame=frame)):
            self._close(conn, CLOSE_TRY_AGAIN_LATER, "subscriber too slow")

    def _close(self, conn: FanoutSocket, code: int, reason: str) -> None:
        self.hub.unsubscribe(conn.sub)
        conn.sub.kick(code, reason)

    async def _client_closed(self, conn: FanoutSocket, payload: tuple[int, str]) -> None:
        """The client sent close: answer it (unless ours went first), then the socket closes."""
        if conn.close_sent.is_set():
            return  # that was the reply to ours
        code, _ = payload
        self._close(conn, int(code), "")
        await conn.close_sent.wait()
