"""A light Deepgram ``/v1/listen`` server: the emulator's own ears, on one stdlib epoll loop.

Why: :class:`~bench.emulators.deepgram_listen.DeepgramListenEmulator` runs on trio-websocket
(~100 µs of CPU per message). At 100 calls it receives 5 000 audio frames a second and, sharing
CPU 1 with the callers, fell behind: its lateness landed inside the service's figure. This server
keeps the emulator's *behaviour* — the very same sans-I/O
:class:`~bench.emulators.deepgram_listen.ListenTranscriber` (energy VAD on 20 ms frames, interims,
``endpointing`` finals, ``SpeechStarted``, ``UtteranceEnd``), the same script cursor per ``tag``,
the same ``first_result_delay_s`` on every message — and drops only the trio/WebSocket layers:

- the upgrade (``Authorization: Token <key>`` checked, else 401; the query parsed by
  :func:`~protocols.deepgram_listen.parse_listen_query`, else 400);
- binary frames are audio fed to the transcriber; its messages go out ``--delay-s`` after the
  frame that caused them was read, as text frames, from a deadline heap (``epoll`` waits to 1 ms
  before a deadline, ``nanosleep`` does the rest: sub-millisecond, and measured);
- text frames: ``KeepAlive`` ignored, ``Finalize`` answered, ``CloseStream`` flushes the pending
  utterance, sends ``Metadata`` and closes 1000; close and ping frames are answered.

Prints ``{"listen_url": ...}`` once listening; on SIGTERM/SIGINT (or ``--max-s``) one JSON line:
counts, its own CPU, and how late its sends were against their deadlines.

    .venv/bin/python -m bench.voice.light_listen --delay-s 0.05
"""

from __future__ import annotations

import argparse
import heapq
import json
import select
import signal
import socket
import sys
import time
import uuid
from collections.abc import Sequence
from typing import Any, Final

from bench.emulators.deepgram_listen import ListenTranscriber
from bench.listen.wire import (OP_BINARY, OP_CLOSE, OP_PING, OP_PONG, OP_TEXT, FrameReader,
                               close_payload, server_frame, upgrade_response)
from bench.voice.cloud import API_KEY, LINES
from protocols.deepgram_listen import (CloseStream, Finalize, Metadata, decode_client_text,
                                       encode_server, parse_auth, parse_listen_query)
from protocols.errors import RemoteProtocolError

RECV_BYTES: Final = 65_536
EARLY_WAKE_NS: Final = 1_200_000  # epoll's timeout is whole ms: wake before, sleep the rest
LISTEN_BACKLOG: Final = 1024


class _Conn:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.head = b""
        self.reader: FrameReader | None = None
        self.transcriber: ListenTranscriber | None = None
        self.closing = False
        self.audio_bytes = 0


class LightListen:
    def __init__(self, args: argparse.Namespace) -> None:
        self.delay_ns = round(args.delay_s * 1e9)
        self.api_key = args.api_key
        self.script = LINES[args.lines]
        self.listener = socket.create_server(("127.0.0.1", args.port), backlog=LISTEN_BACKLOG)
        self.listener.setblocking(False)
        self.ep = select.epoll()
        self.ep.register(self.listener.fileno(), select.EPOLLIN)
        self.conns: dict[int, _Conn] = {}
        self.heap: list[tuple[int, int, int, bytes]] = []  # (due ns, seq, fd, frame)
        self.seq = 0
        self.positions: dict[str, int] = {}
        self.late_ns: list[int] = []
        self.counts = {"connections": 0, "rejected": 0, "frames_in": 0, "messages_out": 0,
                       "finals": 0, "send_errors": 0}
        self.stop = False

    # -- connections --------------------------------------------------------------------------

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self.listener.accept()
            except BlockingIOError:
                return
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.conns[sock.fileno()] = _Conn(sock)
            self.ep.register(sock.fileno(), select.EPOLLIN)

    def _drop(self, fd: int) -> None:
        conn = self.conns.pop(fd, None)
        if conn is None:
            return
        try:
            self.ep.unregister(fd)
        except OSError:
            pass
        conn.sock.close()

    def _send_now(self, fd: int, data: bytes) -> None:
        conn = self.conns.get(fd)
        if conn is None:
            return
        try:
            conn.sock.sendall(data)  # small frames on loopback: never blocks in practice
        except BlockingIOError:
            conn.sock.setblocking(True)
            conn.sock.settimeout(1.0)
            try:
                conn.sock.sendall(data)
            except OSError:
                self.counts["send_errors"] += 1
            conn.sock.setblocking(False)
        except OSError:
            self.counts["send_errors"] += 1
            self._drop(fd)

    def _handshake(self, fd: int, conn: _Conn) -> None:
        head, _, rest = conn.head.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        path = lines[0].split(" ")[1] if len(lines[0].split(" ")) >= 2 else "/"
        headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
        try:
            credential = parse_auth(headers.get("authorization"))
            if credential.secret != self.api_key:
                raise RemoteProtocolError("wrong key")
            options = parse_listen_query(path)
        except RemoteProtocolError as exc:
            self.counts["rejected"] += 1
            body = json.dumps({"err_msg": exc.reason}).encode()
            self._send_now(fd, b"HTTP/1.1 401 Unauthorized\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body))
            self._drop(fd)
            return
        key = options.extra.get("tag", "")

        def peek() -> str:
            index = self.positions.get(key, 0)
            return self.script[index] if index < len(self.script) else ""

        def finalized(_text: str) -> None:
            self.positions[key] = self.positions.get(key, 0) + 1
            self.counts["finals"] += 1

        conn.transcriber = ListenTranscriber(options=options, next_text=peek,
                                             utterance_finalized=finalized,
                                             request_id=str(uuid.uuid4()))
        conn.reader = FrameReader()
        self.counts["connections"] += 1
        self._send_now(fd, upgrade_response(headers.get("sec-websocket-key", "").encode()))
        if rest:
            self._frames(fd, conn, rest)

    def _queue(self, fd: int, messages: Sequence[Any], now: int) -> None:
        for message in messages:
            self.seq += 1
            frame = server_frame(encode_server(message).encode(), OP_TEXT)
            heapq.heappush(self.heap, (now + self.delay_ns, self.seq, fd, frame))

    def _frames(self, fd: int, conn: _Conn, data: bytes) -> None:
        assert conn.reader is not None and conn.transcriber is not None
        now = time.monotonic_ns()
        for opcode, payload in conn.reader.feed(data):
            if opcode == OP_BINARY:
                if not payload:  # an empty binary frame is CloseStream
                    self._close_stream(fd, conn, now)
                    continue
                self.counts["frames_in"] += 1
                conn.audio_bytes += len(payload)
                self._queue(fd, conn.transcriber.feed(payload), now)
            elif opcode == OP_TEXT:
                try:
                    control = decode_client_text(payload)
                except RemoteProtocolError:
                    continue
                if isinstance(control, Finalize):
                    self._queue(fd, conn.transcriber.finalize(), now)
                elif isinstance(control, CloseStream):
                    self._close_stream(fd, conn, now)
            elif opcode == OP_PING:
                self._send_now(fd, server_frame(payload, OP_PONG))
            elif opcode == OP_CLOSE:
                if not conn.closing:
                    self._send_now(fd, server_frame(payload[:2] or close_payload(1000), OP_CLOSE))
                self._drop(fd)
                return

    def _close_stream(self, fd: int, conn: _Conn, now: int) -> None:
        assert conn.transcriber is not None
        metadata = Metadata(request_id=conn.transcriber.request_id,
                            duration=round(conn.transcriber.audio_s, 4), channels=1)
        self._queue(fd, [*conn.transcriber.close(), metadata], now)
        self.seq += 1
        heapq.heappush(self.heap, (now + self.delay_ns, self.seq, fd,
                                   server_frame(close_payload(1000), OP_CLOSE)))
        conn.closing = True

    def _read(self, fd: int) -> None:
        conn = self.conns.get(fd)
        if conn is None:
            return
        try:
            data = conn.sock.recv(RECV_BYTES)
        except BlockingIOError:
            return
        except OSError:
            self._drop(fd)
            return
        if not data:
            self._drop(fd)
            return
        if conn.reader is None:
            conn.head += data
            if b"\r\n\r\n" in conn.head:
                self._handshake(fd, conn)
            return
        self._frames(fd, conn, data)

    # -- the loop -----------------------------------------------------------------------------

    def _send_due(self) -> None:
        heap = self.heap
        while heap and heap[0][0] <= time.monotonic_ns():
            due, _, fd, frame = heapq.heappop(heap)
            self.late_ns.append(time.monotonic_ns() - due)
            self.counts["messages_out"] += 1
            self._send_now(fd, frame)

    def run(self, max_s: float) -> None:
        end = time.monotonic() + max_s
        listener = self.listener.fileno()
        while not self.stop and time.monotonic() < end:
            self._send_due()
            timeout = 0.1
            if self.heap:
                wait_ns = self.heap[0][0] - time.monotonic_ns()
                if wait_ns <= EARLY_WAKE_NS:
                    if wait_ns > 0:
                        time.sleep(wait_ns / 1e9)
                    timeout = 0.0
                else:
                    timeout = (wait_ns - EARLY_WAKE_NS) / 1e9
            for fd, _ in self.ep.poll(timeout):
                if fd == listener:
                    self._accept()
                else:
                    self._read(fd)

    def summary(self) -> dict[str, Any]:
        late = sorted(self.late_ns)

        def pct(p: float) -> float | None:
            return round(late[min(len(late) - 1, int(p / 100 * len(late)))] / 1e6, 3) if late else None

        return {"ok": True, **self.counts, "send_late_ms": {"n": len(late), "p50": pct(50), "p99": pct(99),
                                                            "max": pct(100)},
                "cpu_s": round(time.process_time(), 3)}


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.voice.light_listen")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--delay-s", type=float, default=0.05, help="first_result_delay_s")
    p.add_argument("--api-key", default=API_KEY)
    p.add_argument("--max-s", type=float, default=300.0)
    p.add_argument("--lines", choices=sorted(LINES), default="long", help="what the callers say")
    args = p.parse_args(argv)
    server = LightListen(args)

    def on_signal(_signum: int, _frame: object) -> None:
        server.stop = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    port = server.listener.getsockname()[1]
    print(json.dumps({"listen_url": f"ws://127.0.0.1:{port}/v1/listen"}), flush=True)
    server.run(min(args.max_s, 600.0))
    print(json.dumps(server.summary()), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
