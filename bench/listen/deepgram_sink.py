"""A light ``/v1/listen`` server that timestamps every audio frame it receives: the latency probe.

The protocol-faithful :class:`~bench.emulators.deepgram_listen.DeepgramListenEmulator` runs on
trio-websocket (~100 µs of CPU per message) and an energy VAD per frame: at 100 calls it would
share CPU 1 with the load client and its own scheduling would pollute the figure. This sink does
only what the latency needs, from one stdlib epoll loop:

- the upgrade (``Authorization: Token <key>`` checked, else 401);
- binary frames are audio: each 160-byte PCMU frame in them is identified by its marker
  (:func:`bench.listen.wire.read_marker`) and stamped twice, both on ``CLOCK_MONOTONIC``:
  *kernel*: when the last segment of the read reached the socket (``SO_TIMESTAMPNS``, a
  ``CLOCK_REALTIME`` stamp converted with an offset measured at start; on loopback that is the
  moment the service's ``send()`` pushed the bytes through), and *user*: when ``epoll`` woke this
  process (what a real emulator reading with ``time.monotonic()`` would see);
- it answers as Deepgram does on continuous speech (``--mode deepgram``): per connection, an
  interim ``Results`` every ``--interim-every-s`` of audio received and a final one (with words)
  every ``--final-every-s``, from a random (seeded) phase per connection, since independent
  callers' results never all land in the same 20 ms. So the service does its real downstream work (decode, partials and
  finals to the relay hub), and its replay buffer — audio Deepgram has not finalised yet — stays
  as short as with the real service instead of growing towards its 30 s limit;
- text frames: ``KeepAlive`` is counted, ``CloseStream`` is answered with a close 1000;
- ``--mode telnyx`` accepts the light caller's Telnyx frames directly (the marker is read from
  the base64 payload): the bare loopback hop, for comparison.

On SIGTERM/SIGINT (or ``--max-s``) it writes ``--out`` (``.npz``: call, frame, kernel_ns, user_ns,
pos — the frame's place in its message —, and its own CPU samples) and prints one JSON line of counts.
"""

from __future__ import annotations

import argparse
import base64
import json
import random
import select
import signal
import socket
import struct
import sys
import time
from array import array
from collections.abc import Sequence
from typing import Any, Final

import numpy as np

from protocols.deepgram_listen import (Alternative, Channel, Results, ResultsMetadata, Word,
                                       encode_server)
from bench.listen.wire import (FRAME_BYTES, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG, OP_TEXT,
                               FrameReader, close_payload, read_marker, server_frame,
                               upgrade_response)

SO_TIMESTAMPNS: Final = getattr(socket, "SO_TIMESTAMPNS", 35)
SCM_TIMESTAMPNS: Final = SO_TIMESTAMPNS
RECV_BYTES: Final = 262_144
ANC_BYTES: Final = socket.CMSG_SPACE(16)
CPU_SAMPLE_NS: Final = 100_000_000
POLL_S: Final = 0.1
_PAYLOAD_KEY: Final = b'"payload":"'
AUDIO_BYTES_PER_S: Final = 8000  # PCMU, 8 kHz mono
_WORDS: Final = ("hola", "quiero", "pedir", "una", "cita", "para", "el", "martes")
_METADATA: Final = ResultsMetadata(request_id="bench-sink")


def results_text(start_s: float, end_s: float, *, is_final: bool) -> str:
    """A ``Results`` message for the audio window [start_s, end_s): a few words spread over it."""
    count = max(1, min(len(_WORDS), round((end_s - start_s) * 2.5)))
    slot = (end_s - start_s) / count
    words = tuple(Word(word=w, start=round(start_s + i * slot, 4), end=round(start_s + (i + 0.85) * slot, 4),
                       confidence=0.98) for i, w in enumerate(_WORDS[:count]))
    return encode_server(Results(
        start=round(start_s, 4), duration=round(end_s - start_s, 4), is_final=is_final,
        channel=Channel(alternatives=(Alternative(" ".join(w.word for w in words), 0.98, words),)),
        metadata=_METADATA))


def realtime_offset_ns() -> int:
    """``CLOCK_REALTIME − CLOCK_MONOTONIC`` in ns, from the tightest of a few paired reads."""
    best: tuple[int, int] | None = None
    for _ in range(20):
        m0 = time.monotonic_ns()
        r = time.time_ns()
        m1 = time.monotonic_ns()
        if best is None or m1 - m0 < best[0]:
            best = (m1 - m0, r - (m0 + m1) // 2)
    assert best is not None
    return best[1]


class _Conn:
    __slots__ = ("sock", "http", "reader", "closing", "messages", "keepalives", "audio_bytes",
                 "final_at", "next_interim", "next_final")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.http: bytearray | None = bytearray()
        self.reader = FrameReader()
        self.closing = False
        self.messages = 0
        self.keepalives = 0
        self.audio_bytes = 0
        self.final_at = 0  # audio bytes covered by the last final sent
        self.next_interim = 0
        self.next_final = 0


class Sink:
    def __init__(self, mode: str, api_key: str, interim_every_s: float = 1.0,
                 final_every_s: float = 3.0) -> None:
        self.mode = mode
        self.api_key = api_key
        self.interim_bytes = round(interim_every_s * AUDIO_BYTES_PER_S)  # 0: never
        self._phase = random.Random(5)
        self.final_bytes = round(final_every_s * AUDIO_BYTES_PER_S)
        self.calls, self.frames = array("q"), array("q")
        self.kernel_ns, self.user_ns = array("q"), array("q")
        self.pos = array("b")  # the frame's place in its Deepgram message (0: it opened it)
        self.cpu_samples: list[tuple[int, float]] = []
        self.counts = {"connections": 0, "refused": 0, "audio_messages": 0, "audio_bytes": 0,
                       "unmarked_frames": 0, "keepalives": 0, "close_streams": 0, "text_other": 0,
                       "no_kernel_stamp": 0, "interims_sent": 0, "finals_sent": 0}
        self.offset_ns = realtime_offset_ns()
        self._conns: dict[int, _Conn] = {}
        self._stop = False

    def stop(self, *_: object) -> None:
        self._stop = True

    def serve(self, listener: socket.socket, max_s: float) -> None:
        ep = select.epoll()
        listener.setblocking(False)
        ep.register(listener.fileno(), select.EPOLLIN)
        deadline = time.monotonic() + max_s
        next_cpu = 0
        while not self._stop and time.monotonic() < deadline:
            events = ep.poll(POLL_S)
            woke = time.monotonic_ns()
            if woke >= next_cpu:
                self.cpu_samples.append((woke, time.process_time()))
                next_cpu = woke + CPU_SAMPLE_NS
            for fd, _ in events:
                if fd == listener.fileno():
                    self._accept(listener, ep)
                else:
                    conn = self._conns.get(fd)
                    if conn is not None:
                        self._readable(conn, woke, ep)
        self.cpu_samples.append((time.monotonic_ns(), time.process_time()))
        for conn in list(self._conns.values()):
            conn.sock.close()

    def _accept(self, listener: socket.socket, ep: select.epoll) -> None:
        while True:
            try:
                sock, _ = listener.accept()
            except BlockingIOError:
                return
            sock.setblocking(False)
            sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._conns[sock.fileno()] = _Conn(sock)
            ep.register(sock.fileno(), select.EPOLLIN)

    def _drop(self, conn: _Conn, ep: select.epoll) -> None:
        fd = conn.sock.fileno()
        self._conns.pop(fd, None)
        try:
            ep.unregister(fd)
        except (OSError, ValueError):
            pass
        conn.sock.close()

    def _readable(self, conn: _Conn, woke_ns: int, ep: select.epoll) -> None:
        try:
            data, anc, _, _ = conn.sock.recvmsg(RECV_BYTES, ANC_BYTES)
        except BlockingIOError:
            return
        except OSError:
            self._drop(conn, ep)
            return
        if not data:
            self._drop(conn, ep)
            return
        kernel_ns = 0
        for level, kind, raw in anc:
            if level == socket.SOL_SOCKET and kind == SCM_TIMESTAMPNS and len(raw) >= 16:
                sec, nsec = struct.unpack("qq", raw[:16])
                kernel_ns = sec * 1_000_000_000 + nsec - self.offset_ns
        if conn.http is not None:
            self._handshake(conn, data, ep)
            return
        for opcode, payload in conn.reader.feed(data):
            conn.messages += 1
            if opcode == OP_BINARY and self.mode == "deepgram":
                if not payload:
                    self._close(conn, "CloseStream")
                    continue
                self.counts["audio_messages"] += 1
                self.counts["audio_bytes"] += len(payload)
                for place, at in enumerate(range(0, len(payload) - FRAME_BYTES + 1, FRAME_BYTES)):
                    self._record(read_marker(payload[at:at + 6]), kernel_ns, woke_ns, min(place, 127))
                conn.audio_bytes += len(payload)
                self._maybe_results(conn)
            elif opcode == OP_TEXT:
                if self.mode == "telnyx":
                    at = payload.find(_PAYLOAD_KEY)
                    if at >= 0:
                        start = at + len(_PAYLOAD_KEY)
                        self.counts["audio_messages"] += 1
                        self._record(read_marker(base64.b64decode(payload[start:start + 8])),
                                     kernel_ns, woke_ns, 0)
                    continue
                if b"KeepAlive" in payload:
                    self.counts["keepalives"] += 1
                elif b"CloseStream" in payload:
                    self._close(conn, "CloseStream")
                else:
                    self.counts["text_other"] += 1
            elif opcode == OP_CLOSE:
                if not conn.closing:
                    self._send(conn, server_frame(payload[:2] or close_payload(1000), OP_CLOSE))
                self._drop(conn, ep)
                return
            elif opcode == OP_PING:
                self._send(conn, server_frame(payload, OP_PONG))

    def _maybe_results(self, conn: _Conn) -> None:
        if not conn.next_final:
            # Each connection's results start at a random phase (seeded): N callers who began
            # together must not all get their results in the same 20 ms, every second, when
            # independent callers' speech (and so Deepgram's results) never lines up like that.
            phase = self._phase.randrange(max(self.final_bytes, self.interim_bytes, 1))
            conn.next_interim, conn.next_final = self.interim_bytes + phase, self.final_bytes + phase
        heard = conn.audio_bytes
        if self.final_bytes and heard >= conn.next_final:
            self._send(conn, server_frame(results_text(conn.final_at / AUDIO_BYTES_PER_S,
                                                       heard / AUDIO_BYTES_PER_S, is_final=True).encode(), OP_TEXT))
            self.counts["finals_sent"] += 1
            conn.final_at = heard
            conn.next_final = heard + self.final_bytes
            conn.next_interim = heard + self.interim_bytes
        elif self.interim_bytes and heard >= conn.next_interim:
            self._send(conn, server_frame(results_text(conn.final_at / AUDIO_BYTES_PER_S,
                                                       heard / AUDIO_BYTES_PER_S, is_final=False).encode(), OP_TEXT))
            self.counts["interims_sent"] += 1
            conn.next_interim = heard + self.interim_bytes

    def _record(self, mark: tuple[int, int] | None, kernel_ns: int, user_ns: int, place: int) -> None:
        if mark is None:
            self.counts["unmarked_frames"] += 1
            return
        if not kernel_ns:
            self.counts["no_kernel_stamp"] += 1
        self.calls.append(mark[0])
        self.frames.append(mark[1])
        self.kernel_ns.append(kernel_ns or user_ns)
        self.user_ns.append(user_ns)
        self.pos.append(place)

    def _close(self, conn: _Conn, why: str) -> None:
        if why == "CloseStream":
            self.counts["close_streams"] += 1
        if not conn.closing:
            conn.closing = True
            self._send(conn, server_frame(close_payload(1000), OP_CLOSE))

    def _send(self, conn: _Conn, data: bytes) -> None:
        try:
            conn.sock.send(data)
        except OSError:
            pass

    def _handshake(self, conn: _Conn, data: bytes, ep: select.epoll) -> None:
        assert conn.http is not None
        conn.http += data
        if b"\r\n\r\n" not in conn.http:
            if len(conn.http) > 65536:
                self._drop(conn, ep)
            return
        head, _, rest = bytes(conn.http).partition(b"\r\n\r\n")
        headers = {}
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip()
        auth = headers.get(b"authorization", b"").decode(errors="replace").split()
        key = headers.get(b"sec-websocket-key")
        if key is None or (self.mode == "deepgram" and (
                len(auth) != 2 or auth[0].lower() not in ("token", "bearer") or auth[1] != self.api_key)):
            self.counts["refused"] += 1
            self._send(conn, b"HTTP/1.1 401 Unauthorized\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
            self._drop(conn, ep)
            return
        self._send(conn, upgrade_response(key))
        self.counts["connections"] += 1
        conn.http = None
        if rest:
            list(conn.reader.feed(rest))  # nothing is expected before our 101; ignored

    def result(self) -> dict[str, Any]:
        return {"ok": True, "mode": self.mode, "records": len(self.calls), **self.counts,
                "offset_drift_ns": realtime_offset_ns() - self.offset_ns}

    def save(self, path: str) -> None:
        cpu = np.array(self.cpu_samples, dtype=np.float64).reshape(-1, 2)
        np.savez(path, call=np.frombuffer(self.calls, dtype=np.int64),
                 frame=np.frombuffer(self.frames, dtype=np.int64),
                 kernel_ns=np.frombuffer(self.kernel_ns, dtype=np.int64),
                 user_ns=np.frombuffer(self.user_ns, dtype=np.int64),
                 pos=np.frombuffer(self.pos, dtype=np.int8), cpu=cpu)


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.listen.deepgram_sink")
    p.add_argument("--mode", choices=("deepgram", "telnyx"), default="deepgram")
    p.add_argument("--api-key", default="test-key")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--max-s", type=float, default=120.0, help="hard bound on its lifetime")
    p.add_argument("--interim-every-s", type=float, default=1.0, help="0: no interim results")
    p.add_argument("--final-every-s", type=float, default=3.0, help="0: no final results")
    p.add_argument("--out", required=True)
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse_args(argv)
    sink = Sink(args.mode, args.api_key, args.interim_every_s, args.final_every_s)
    signal.signal(signal.SIGTERM, sink.stop)
    signal.signal(signal.SIGINT, sink.stop)
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((args.host, args.port))
    listener.listen(4096)
    print(f"listening {listener.getsockname()[1]}", flush=True)
    sink.serve(listener, min(args.max_s, 600.0))
    listener.close()
    sink.save(args.out)
    print(json.dumps(sink.result()), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
