"""N bot calls at real time from one stdlib epoll loop, and a firehose subscriber on the same loop.

The light twin of :mod:`bench.voice.callers` (same arguments, same JSON out). Why: at 100 calls the
trio :class:`~bench.emulators.telnyx_caller.TelnyxCaller` (trio-websocket, ~100 µs of CPU per
message) used a third of CPU 1 and, together with the emulators, left it 96 % busy: the callers'
frames went out up to ~100 ms late, and that lateness is indistinguishable from the service's.

Each call does what Telnyx does and what ``TelnyxCaller`` does at speed 1.0:

- the upgrade with ``x-telnyx-streaming-auth-token`` (made before the batch starts: Telnyx dials
  first), then at the call's start ``connected`` and ``start``, then media frame ``k`` at
  ``t0 + k × 20 ms`` (absolute deadlines, ``t0`` = when ``start`` was sent), exact
  :func:`~protocols.telnyx_media.encode_inbound` JSON with a random non-zero mask per frame;
  sequence numbers count every frame sent (media, mark echoes), as Telnyx's do;
- what the service sends back is played out in real time: each ``media`` message extends the
  playout by its duration; a ``mark`` is echoed when the audio queued before it has played (at
  once if nothing is queued); ``clear`` empties the queue and echoes pending marks at once;
- at ``--lead-in-s`` + the turns, ``stop`` and a close 1000.

The audio is :func:`~bench.emulators.caller_audio.script_audio` (speech-like utterances with
pauses). The subscriber reads ``/ws?callId=*`` and keeps ``latency`` and ``call`` events.

    .venv/bin/python -m bench.voice.light_callers --port 8123 --token T --calls 100 --turns 3
"""

from __future__ import annotations

import argparse
import heapq
import json
import select
import socket
import sys
import time
import uuid
from collections.abc import Sequence
from typing import Any, Final

import numpy as np
import orjson

from bench.emulators.caller_audio import encode, script_audio
from bench.listen.light_caller import connect
from bench.listen.wire import OP_CLOSE, OP_PING, OP_PONG, OP_TEXT, FrameReader, client_frame, close_payload
from bench.voice.callers import (ENDED_WAIT_S, ENDPOINTING_FRAMES, parse_caller_args, percentiles_ms,
                                 plan_durations)
from protocols.telnyx_media import (Connected, Mark, Media, MediaFormat, Start, Stop,
                                    encode_inbound)

FRAME_NS: Final = 20_000_000
FRAME_BYTES: Final = 160
BYTES_PER_S: Final = 8000  # PCMU 8 kHz
EARLY_WAKE_NS: Final = 1_200_000  # epoll's timeout is whole ms: wake before, sleep the rest
SETTLE_S: Final = 0.3
CLOSE_WAIT_S: Final = 5.0
_SEQ: Final = "999999999"


class Call:
    """One call's stream: its frames, schedule, playout clock and what it saw."""

    def __init__(self, index: int, audio: bytes, total_frames: int, token: str) -> None:
        self.index = index
        self.stream_id = str(uuid.uuid4())
        self.token = token
        self.sock: socket.socket | None = None
        self.reader = FrameReader()
        self.seq = 0
        self.templates: list[tuple[str, str]] = []
        silence = b"\xff" * FRAME_BYTES
        for k in range(total_frames):
            payload = audio[k * FRAME_BYTES:(k + 1) * FRAME_BYTES] or silence
            payload += silence[len(payload):]
            text = encode_inbound(Media(stream_id=self.stream_id, sequence_number=int(_SEQ),
                                        track="inbound", payload=payload, chunk=k + 1, timestamp=k * 20))
            head, _, tail = text.partition(_SEQ)
            self.templates.append((head, tail))
        self.sent_ns = np.zeros(total_frames, dtype=np.int64)
        self.start_ns = 0
        self.next_frame = 0
        self.playout_end_ns = 0
        self.pending_marks: list[tuple[int, str]] = []  # (due ns, name), in arrival order
        self.media_in = self.marks_in = self.marks_echoed = self.clears = 0
        self.closed = False
        self.ended_ns = 0

    def send(self, text: str) -> None:
        assert self.sock is not None
        data = client_frame(text.encode())
        try:
            sent = self.sock.send(data)
        except BlockingIOError:
            sent = 0
        except OSError:
            self.closed = True
            return
        if sent < len(data):  # never expected for ~400 B every 20 ms; finish it blocking
            self.sock.setblocking(True)
            self.sock.settimeout(1.0)
            try:
                self.sock.sendall(data[sent:])
            except OSError:
                self.closed = True
            self.sock.setblocking(False)

    def next_seq(self) -> int:
        self.seq += 1
        return self.seq

    def begin(self, token: str) -> None:
        self.send(encode_inbound(Connected(version="1.0.0", auth_token=token)))
        self.send(encode_inbound(Start(
            stream_id=self.stream_id, sequence_number=self.next_seq(),
            call_control_id=f"v3:bench-{self.index}-{uuid.uuid4().hex[:8]}",
            call_session_id=str(uuid.uuid4()), user_id=str(uuid.uuid4()), from_="+34910000001",
            to="+34910000002", media_format=MediaFormat(encoding="PCMU", sample_rate=8000, channels=1))))
        self.start_ns = time.monotonic_ns()

    def send_frame(self, k: int) -> None:
        head, tail = self.templates[k]
        self.send(f"{head}{self.next_seq()}{tail}")
        self.sent_ns[k] = time.monotonic_ns()

    def echo(self, name: str) -> None:
        self.send(encode_inbound(Mark(name=name, stream_id=self.stream_id, sequence_number=self.next_seq())))
        self.marks_echoed += 1

    def hang_up(self) -> None:
        self.send(encode_inbound(Stop(stream_id=self.stream_id, sequence_number=self.next_seq(),
                                      call_control_id=f"v3:bench-{self.index}")))
        assert self.sock is not None
        try:
            self.sock.send(client_frame(close_payload(1000), OP_CLOSE))
        except OSError:
            self.closed = True
        self.ended_ns = time.monotonic_ns()

    def on_text(self, payload: bytes, now: int) -> None:
        msg = orjson.loads(payload)
        event = msg.get("event")
        if event == "media":
            self.media_in += 1
            b64 = msg["media"]["payload"]
            duration_ns = (len(b64) * 3 // 4 - b64.count("=")) * 1_000_000_000 // BYTES_PER_S
            self.playout_end_ns = max(self.playout_end_ns, now) + duration_ns
        elif event == "mark":
            self.marks_in += 1
            name = msg["mark"]["name"]
            if self.playout_end_ns > now:
                self.pending_marks.append((self.playout_end_ns, name))
            else:
                self.echo(name)
        elif event == "clear":
            self.clears += 1
            self.playout_end_ns = now
            marks, self.pending_marks = self.pending_marks, []
            for _, name in marks:
                self.echo(name)

    def echo_due(self, now: int) -> None:
        while self.pending_marks and self.pending_marks[0][0] <= now:
            _, name = self.pending_marks.pop(0)
            self.echo(name)


class Loop:
    def __init__(self, port: int) -> None:
        self.port = port
        self.ep = select.epoll()
        self.by_fd: dict[int, Call] = {}
        self.sub: socket.socket | None = None
        self.sub_reader = FrameReader()
        self.events: list[dict[str, Any]] = []
        self.event_count = 0
        self.ended: set[str] = set()
        self.marking: set[Call] = set()  # calls holding marks whose audio is still playing

    def subscribe(self) -> None:
        self.sub = connect("127.0.0.1", self.port, "/ws?callId=*", "unused")
        self.sub.setblocking(False)
        self.ep.register(self.sub.fileno(), select.EPOLLIN)

    def dial(self, call: Call) -> None:
        call.sock = connect("127.0.0.1", self.port, "/stream/media", call.token)
        call.sock.setblocking(False)
        self.by_fd[call.sock.fileno()] = call
        self.ep.register(call.sock.fileno(), select.EPOLLIN)

    def _on_sub(self, data: bytes) -> None:
        for opcode, payload in self.sub_reader.feed(data):
            if opcode != OP_TEXT:
                continue
            self.event_count += 1
            event = orjson.loads(payload)
            kind = event.get("type")
            if kind == "latency":
                self.events.append(event)
            elif kind == "call":
                self.events.append(event)
                if event.get("state") == "ended":
                    self.ended.add(event.get("streamId", ""))

    def poll(self, timeout_s: float) -> None:
        for fd, _ in self.ep.poll(timeout_s):
            sock = self.sub if self.sub is not None and fd == self.sub.fileno() else self.by_fd[fd].sock
            assert sock is not None
            try:
                data = sock.recv(262_144)
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            if sock is self.sub:
                if data:
                    self._on_sub(data)
                else:
                    self.ep.unregister(fd)
                continue
            call = self.by_fd[fd]
            if not data:
                call.closed = True
                self.ep.unregister(fd)
                continue
            now = time.monotonic_ns()
            for opcode, payload in call.reader.feed(data):
                if opcode == OP_TEXT:
                    call.on_text(payload, now)
                    if call.pending_marks:
                        self.marking.add(call)
                elif opcode == OP_PING:
                    try:
                        sock.send(client_frame(payload, OP_PONG))
                    except OSError:
                        pass
                elif opcode == OP_CLOSE:
                    call.closed = True

    def wait_until(self, due_ns: int) -> None:
        """Serve reads until ``due_ns`` (to the sub-millisecond)."""
        while True:
            now = time.monotonic_ns()
            left = due_ns - now
            if left <= 0:
                self.poll(0)
                return
            if left <= EARLY_WAKE_NS:
                time.sleep(left / 1e9)
                continue
            self.poll((left - EARLY_WAKE_NS) / 1e9)


def run_calls(loop: Loop, calls: list[Call], offsets_ns: list[int], frames: int,
              marks: dict[str, int] | None) -> None:
    """Stream ``calls`` (call ``i`` starting ``offsets_ns[i]`` after now) until every one hung up."""
    t_base = time.monotonic_ns() + 20_000_000
    # heap of (due ns, kind, call index): kind 0 = begin, 1 = media frame, 2 = hang up
    heap = [(t_base + off, 0, i) for i, off in enumerate(offsets_ns)]
    heapq.heapify(heap)
    while heap:
        due, kind, i = heapq.heappop(heap)
        loop.wait_until(due)
        call = calls[i]
        now = time.monotonic_ns()
        for c in [c for c in loop.marking if c.pending_marks]:  # echo marks whose audio has played
            c.echo_due(now)
        loop.marking = {c for c in loop.marking if c.pending_marks}
        if call.closed:
            continue
        if kind == 0:
            call.begin(call.token)
            if marks is not None:
                marks.setdefault("first_start_mono_ns", call.start_ns)
                marks["all_started_mono_ns"] = call.start_ns
            heapq.heappush(heap, (call.start_ns, 1, i))
        elif kind == 1:
            k = call.next_frame
            call.send_frame(k)
            call.next_frame += 1
            if call.next_frame < frames:
                heapq.heappush(heap, (call.start_ns + call.next_frame * FRAME_NS, 1, i))
            else:
                heapq.heappush(heap, (call.start_ns + frames * FRAME_NS, 2, i))
        else:
            call.hang_up()
            if marks is not None:
                marks.setdefault("first_end_mono_ns", call.ended_ns)
                marks["last_end_mono_ns"] = call.ended_ns


def run(args: argparse.Namespace) -> dict[str, Any]:
    rng = np.random.default_rng(args.seed)
    plans = [plan_durations(rng, args.turns, args.utterance_min_s, args.utterance_max_s)
             for _ in range(args.calls)]
    call_s = max(args.lead_in_s + sum(d + args.gap_s for d in p) for p in plans)
    frames = round(call_s / 0.02)
    calls = [Call(i, encode(script_audio(p, args.gap_s, lead_in_s=args.lead_in_s, rng=rng)), frames,
                  args.token) for i, p in enumerate(plans)]
    loop = Loop(args.port)
    loop.subscribe()
    time.sleep(SETTLE_S)
    loop.poll(0)
    warmups: set[str] = set()
    for _ in range(args.warmup_calls):  # one turn each: connection pools, caches
        durations = plan_durations(rng, 1, args.utterance_min_s, args.utterance_max_s)
        warm_s = args.lead_in_s + durations[0] + args.gap_s
        warm = Call(-1, encode(script_audio(durations, args.gap_s, lead_in_s=args.lead_in_s, rng=rng)),
                    round(warm_s / 0.02), args.token)
        warmups.add(warm.stream_id)
        loop.dial(warm)
        run_calls(loop, [warm], [0], round(warm_s / 0.02), None)
    for call in calls:
        loop.dial(call)
    loop.wait_until(time.monotonic_ns() + round(SETTLE_S * 1e9))
    stagger_ns = round(args.stagger_s * 1e9)
    offsets = [i * stagger_ns // max(1, args.calls) for i in range(args.calls)]
    marks: dict[str, int] = {}
    cpu0 = time.process_time()
    run_calls(loop, calls, offsets, frames, marks)
    cpu1 = time.process_time()
    deadline = time.monotonic() + ENDED_WAIT_S
    while len(loop.ended - warmups) < args.calls and time.monotonic() < deadline:
        loop.poll(0.05)
    deadline = time.monotonic() + CLOSE_WAIT_S
    while not all(c.closed for c in calls) and time.monotonic() < deadline:
        loop.poll(0.05)
    for c in calls:
        if c.sock is not None:
            c.sock.close()
    if loop.sub is not None:
        loop.sub.close()

    stream_of = {e["callId"]: str(e.get("streamId", "")) for e in loop.events
                 if e.get("type") == "call" and e.get("state") == "started"}
    index_of = {c.stream_id: c.index for c in calls}
    lateness: list[float] = []
    for c in calls:
        sent = c.sent_ns[c.sent_ns > 0]
        lateness += ((sent - c.start_ns - np.arange(sent.size) * FRAME_NS) / 1e9).tolist()
    turns: list[dict[str, Any]] = []
    for event in loop.events:
        if event.get("type") != "latency" or "end_of_speech" not in event.get("stages", {}):
            continue
        stream = stream_of.get(event["callId"], "")
        if stream in warmups:
            continue
        stages = event["stages"]
        i = index_of.get(stream, -1)
        turn: dict[str, Any] = {"call": i, "callId": event["callId"], "turnId": event.get("turnId"),
                                "stages": stages}
        if i >= 0:
            c = calls[i]
            trigger = round(stages["end_of_speech"] / 0.02) - 1 + ENDPOINTING_FRAMES
            if 0 <= trigger < frames and c.sent_ns[trigger]:
                turn["trigger_late_ms"] = round((int(c.sent_ns[trigger]) - c.start_ns - trigger * FRAME_NS) / 1e6, 3)
        turns.append(turn)
    problems = [f"call {c.index}: sent {c.next_frame} of {frames} frames" for c in calls if c.next_frame < frames]
    return {
        "ok": not problems, "calls": args.calls, "call_s": round(call_s, 3), "turns": turns,
        "problems": problems[:10], "expected_turns": args.calls * args.turns,
        "ended_seen": len(loop.ended - warmups), "warmup_calls": args.warmup_calls,
        "warmup_call_ids": sorted(cid for cid, stream in stream_of.items() if stream in warmups),
        "events": loop.event_count, "latency_events": sum(e.get("type") == "latency" for e in loop.events),
        "caller_send_late_ms": percentiles_ms(lateness), "clears_received": sum(c.clears for c in calls),
        "media_frames_received": sum(c.media_in for c in calls),
        "marks_received": sum(c.marks_in for c in calls), "marks_echoed": sum(c.marks_echoed for c in calls),
        "call_cpu_s": round(cpu1 - cpu0, 3), "cpu_s": round(time.process_time(), 3), **marks,
    }


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_caller_args("python -m bench.voice.light_callers", argv)
    try:
        result = run(args)
    except (OSError, ConnectionError, KeyError, ValueError) as exc:
        result = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    print(json.dumps(result), flush=True)
    return 0 if result.get("ok") else 1


if __name__ == "__main__":
    sys.exit(main())
