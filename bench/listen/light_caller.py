"""N Telnyx media streams from one stdlib epoll loop: the light load client of ``bench_listen``.

Why not :class:`~bench.emulators.telnyx_caller.TelnyxCaller`: a trio-websocket client costs
~80–120 µs of CPU per message (``/work/shared/notes/websocket-baseline.md``), so 100 calls
(5 000 frames/s) would fill its core and its own scheduling would show up as latency.

Each call does what Telnyx does (telnyx.md §1): the upgrade with ``x-telnyx-streaming-auth-token``,
``connected``, ``start``, then one ``media`` frame every 20 ms (the exact JSON of
:func:`protocols.telnyx_media.encode_inbound`), ``stop`` and a close. Frames are built and masked
before the clock starts (a random non-zero mask per frame). The N calls are staggered evenly over
each 20 ms, one ``send()`` per frame, so frames arrive one by one as Telnyx's would.

The audio is speech-like (:func:`~bench.emulators.caller_audio.speech_like`, PCMU) and every
frame's first bytes carry a marker (:func:`bench.listen.wire.marker`) naming (call, frame).
``CLOCK_MONOTONIC`` is read just before each frame is handed to ``send()``; the sink reads the
same clock, so the difference is the latency of that frame.

Output: ``--out`` gets an ``.npz`` (``send_ns[call, frame]``, 0 when not sent), stdout one JSON line
(window, lateness, own CPU in the window).
"""

from __future__ import annotations

import argparse
import json
import select
import socket
import sys
import time
import uuid
from collections.abc import Sequence
from typing import Any, Final

import numpy as np

from bench.emulators.caller_audio import encode, speech_like
from bench.listen.wire import (FRAME_BYTES, MARKER_BYTES, OP_CLOSE, FrameReader, client_frame,
                               close_payload, marker, upgrade_request)
from protocols.audio import Codec
from protocols.telnyx_media import (AUTH_TOKEN_HEADER, Connected, Media, MediaFormat, Start, Stop,
                                    encode_inbound)

FRAME_NS: Final = 20_000_000
CONNECT_TIMEOUT_S: Final = 5.0
SETTLE_S: Final = 0.5  # after every start: the service dials Deepgram for each call
CLOSE_WAIT_S: Final = 3.0
AUDIO_LOOP_S: Final = 6.0
IDLE_POLL_NS: Final = 2_000_000  # wait in epoll (draining reads) only when the next send is this far;
# epoll rounds its timeout up to whole ms, so it gets 1 ms less and time.sleep() does the rest


def build_frames(call: int, frames: int, audio: bytes, stream_id: str) -> list[bytes]:
    """Masked ``media`` frames 0..frames-1 of one call (sequence numbers 2.., chunks 1..)."""
    out = []
    offset = (call * 997 * FRAME_BYTES) % len(audio)  # each call at its own place in the loop
    for k in range(frames):
        at = (offset + k * FRAME_BYTES) % (len(audio) - FRAME_BYTES)
        payload = marker(call, k) + audio[at + MARKER_BYTES:at + FRAME_BYTES]
        text = encode_inbound(Media(stream_id=stream_id, sequence_number=k + 2, track="inbound",
                                    payload=payload, chunk=k + 1, timestamp=k * 20))
        out.append(client_frame(text.encode()))
    return out


def connect(host: str, port: int, path: str, token: str) -> socket.socket:
    sock = socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    request, expect = upgrade_request(host, port, path, [(AUTH_TOKEN_HEADER, token)])
    sock.sendall(request)
    response = b""
    while b"\r\n\r\n" not in response:
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError("closed during the upgrade")
        response += chunk
    head, _, rest = response.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 101") or expect not in head:
        raise ConnectionError(f"upgrade refused: {head[:200]!r}")
    if rest:
        raise ConnectionError("unexpected bytes after the upgrade")
    return sock


def run(args: argparse.Namespace) -> dict[str, Any]:
    n = args.calls
    warm_frames = round(args.warmup * 50)
    measure_frames = round(args.seconds * 50)
    total_frames = warm_frames + measure_frames + round(args.tail * 50)
    rng = np.random.default_rng(args.seed)
    audio = encode(speech_like(AUDIO_LOOP_S, rng), Codec.PCMU)
    stream_ids = [str(uuid.UUID(int=rng.integers(0, 2**63).item() << 64 | i)) for i in range(n)]
    built = time.monotonic()
    frames = [build_frames(i, total_frames, audio, stream_ids[i]) for i in range(n)]
    build_s = time.monotonic() - built

    socks = [connect(args.host, args.port, args.path, args.token) for _ in range(n)]
    for i, sock in enumerate(socks):
        sock.sendall(client_frame(encode_inbound(Connected(version="1.0.0", auth_token=args.token)).encode()))
        start = Start(stream_id=stream_ids[i], sequence_number=1, call_control_id=f"v3:bench-{i}",
                      call_session_id=str(uuid.uuid4()), user_id=str(uuid.uuid4()),
                      from_="+34910000001", to="+34910000002",
                      media_format=MediaFormat(encoding="PCMU", sample_rate=8000, channels=1))
        sock.sendall(client_frame(encode_inbound(start).encode()))
        sock.setblocking(False)
    ep = select.epoll()
    fd_index = {s.fileno(): i for i, s in enumerate(socks)}
    for s in socks:
        ep.register(s.fileno(), select.EPOLLIN)
    readers = [FrameReader() for _ in range(n)]
    closed_by_server = [False] * n

    def drain(timeout_s: float) -> None:
        for fd, _ in ep.poll(timeout_s):
            i = fd_index[fd]
            try:
                data = socks[i].recv(65536)
            except BlockingIOError:
                continue
            if not data:
                closed_by_server[i] = True
                ep.unregister(fd)
                continue
            for opcode, _payload in readers[i].feed(data):
                if opcode == OP_CLOSE:
                    closed_by_server[i] = True

    time.sleep(SETTLE_S)
    drain(0)
    send_ns = np.zeros((n, total_frames), dtype=np.int64)
    step = FRAME_NS // n
    t0 = time.monotonic_ns() + 20_000_000
    window = (t0 + warm_frames * FRAME_NS, t0 + (warm_frames + measure_frames) * FRAME_NS)
    cpu_marks: dict[str, tuple[int, float]] = {}
    partial_sends = 0
    late_1ms = late_5ms = 0
    max_late_ns = 0
    mono, send_row = time.monotonic_ns, send_ns
    for k in range(total_frames):
        if k == warm_frames:
            cpu_marks["start"] = (mono(), time.process_time())
        elif k == warm_frames + measure_frames:
            cpu_marks["end"] = (mono(), time.process_time())
        base = t0 + k * FRAME_NS
        row = frames
        for i in range(n):
            due = base + i * step
            now = mono()
            if due - now > IDLE_POLL_NS:
                drain((due - now - IDLE_POLL_NS) / 1e9)
                now = mono()
            if due > now:
                time.sleep((due - now) / 1e9)
            data = row[i][k]
            now = mono()
            try:
                sent = socks[i].send(data)
            except (BlockingIOError, BrokenPipeError, ConnectionResetError):
                sent = 0
            send_row[i, k] = now
            late = now - due
            if late > 1_000_000:
                late_1ms += 1
                if late > 5_000_000:
                    late_5ms += 1
            if late > max_late_ns:
                max_late_ns = late
            if sent < len(data):  # never expected at 388 B per 20 ms; counted if it happens
                partial_sends += 1
                socks[i].setblocking(True)
                socks[i].settimeout(1.0)
                try:
                    socks[i].sendall(data[sent:])
                except OSError:
                    pass
                socks[i].setblocking(False)
    if "end" not in cpu_marks:
        cpu_marks["end"] = (mono(), time.process_time())

    for i, sock in enumerate(socks):
        stop = Stop(stream_id=stream_ids[i], sequence_number=total_frames + 2,
                    call_control_id=f"v3:bench-{i}")
        try:
            sock.send(client_frame(encode_inbound(stop).encode()) + client_frame(close_payload(1000), OP_CLOSE))
        except OSError:
            closed_by_server[i] = True
    deadline = time.monotonic() + CLOSE_WAIT_S
    while not all(closed_by_server) and time.monotonic() < deadline:
        drain(0.05)
    for sock in socks:
        sock.close()

    np.savez(args.out, send_ns=send_ns)
    (w0, c0), (w1, c1) = cpu_marks["start"], cpu_marks["end"]
    return {
        "ok": True, "calls": n, "frames_per_call": total_frames, "warm_frames": warm_frames,
        "measure_frames": measure_frames, "window_start_mono_ns": window[0],
        "window_end_mono_ns": window[1], "build_s": round(build_s, 2),
        "client_cpu_pct": round(100 * (c1 - c0) / max(1e-9, (w1 - w0) / 1e9), 1),
        "client_cpu_us_per_frame": round(1e6 * (c1 - c0) / max(1, n * measure_frames), 1),
        "sends_late_over_1ms": late_1ms, "sends_late_over_5ms": late_5ms,
        "max_late_ms": round(max_late_ns / 1e6, 2), "partial_sends": partial_sends,
        "closed_by_server": sum(closed_by_server),
    }


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.listen.light_caller")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--path", default="/stream/media")
    p.add_argument("--token", required=True)
    p.add_argument("--calls", type=int, default=1)
    p.add_argument("--warmup", type=float, default=2.0)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--tail", type=float, default=0.2, help="frames sent after the window (s)")
    p.add_argument("--seed", type=int, default=5)
    p.add_argument("--out", required=True, help=".npz for the send times")
    args = p.parse_args(argv)
    if not (1 <= args.calls <= 2000 and 0 < args.seconds <= 120 and 0 <= args.warmup <= 60):
        p.error("keep it bounded: 1 ≤ calls ≤ 2000, 0 < seconds ≤ 120, 0 ≤ warmup ≤ 60")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    try:
        result = run(_parse_args(argv))
    except (OSError, ConnectionError) as exc:
        result = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    print(json.dumps(result), flush=True)
    return 0 if result.get("ok") else 1


if __name__ == "__main__":
    sys.exit(main())
