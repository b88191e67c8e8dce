"""N bot calls at real time, and a firehose subscriber collecting their ``latency`` waterfalls.

Each call is a :class:`~bench.emulators.telnyx_caller.TelnyxCaller` (speed 1.0: one 20 ms frame
every 20 ms, Telnyx's pace) saying ``--turns`` speech-like utterances
(:func:`~bench.emulators.caller_audio.script_audio`) with pauses long enough for the bot's reply to
be heard out, after a lead-in that lets the greeting finish. Call starts are staggered evenly over
``--stagger-s``. The caller plays the bot's audio back in real time and echoes its marks, as Telnyx
does, so the Brain sees every reply finish (no barge-in, no ``clear``).

A ``/ws?callId=*`` subscriber on the service records every ``latency`` event (the turn's stages in
call time) and ``call`` event (``streamId`` → ``callId``). For each turn the caller's own lateness
at the *trigger frame* is added: the frame whose arrival makes the Deepgram emulator finalise (the
10th unvoiced frame after the last voiced one, ``endpointing`` = 200 ms). A frame sent late shifts
``stt_final`` and everything after it, while ``end_of_speech`` (an audio timestamp) does not move:
that lateness is the load generator's, not the service's.

Prints one JSON line; times for the orchestrator's CPU window are ``CLOCK_MONOTONIC`` ns.

    .venv/bin/python -m bench.voice.callers --port 8123 --token T --calls 100 --turns 3
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from typing import Any, Final

import numpy as np
import trio
from trio_websocket import ConnectionClosed

from bench.emulators.caller_audio import encode, script_audio
from bench.emulators.telnyx_caller import CallerRecord, TelnyxCaller
from bench.emulators.ws_client import open_ws_client
from protocols.telnyx_media import Clear

FRAME_S: Final = 0.02
ENDPOINTING_FRAMES: Final = 10  # DeepgramLink asks for endpointing=200 ms
SUBSCRIBER_QUEUE: Final = 1024
ENDED_WAIT_S: Final = 5.0
RUN_MARGIN_S: Final = 30.0


def plan_durations(rng: np.random.Generator, turns: int, low: float, high: float) -> list[float]:
    """Utterance lengths, whole 20 ms frames (so every span starts and ends on a frame edge)."""
    return [round(float(d) / FRAME_S) * FRAME_S for d in rng.uniform(low, high, size=turns)]


def percentiles_ms(values: Sequence[float]) -> dict[str, Any]:
    if not values:
        return {"n": 0}
    arr = np.asarray(values) * 1000
    p50, p95, p99 = np.percentile(arr, (50, 95, 99))
    return {"n": int(arr.size), "p50": round(float(p50), 3), "p95": round(float(p95), 3),
            "p99": round(float(p99), 3), "max": round(float(arr.max()), 3)}


async def run(args: argparse.Namespace) -> dict[str, Any]:
    rng = np.random.default_rng(args.seed)
    base = f"ws://127.0.0.1:{args.port}"
    plans = [plan_durations(rng, args.turns, args.utterance_min_s, args.utterance_max_s)
             for _ in range(args.calls)]
    call_s = max(args.lead_in_s + sum(d + args.gap_s for d in p) for p in plans)
    audios = [encode(script_audio(p, args.gap_s, lead_in_s=args.lead_in_s, rng=rng)) for p in plans]
    records: dict[int, CallerRecord] = {}
    callers: dict[int, TelnyxCaller] = {}
    events: list[dict[str, Any]] = []
    counts = {"events": 0, "latency": 0}
    ended: set[str] = set()
    marks: dict[str, float] = {}
    warmups: set[str] = set()
    bound_s = (args.stagger_s + call_s + RUN_MARGIN_S
               + args.warmup_calls * (args.lead_in_s + args.utterance_max_s + args.gap_s))
    with trio.fail_after(bound_s):
        async with open_ws_client(base + "/ws?callId=*", message_queue_size=SUBSCRIBER_QUEUE) as sub:
            async with trio.open_nursery() as nursery:

                async def read() -> None:
                    while True:
                        try:
                            raw = await sub.get_message()
                        except ConnectionClosed:
                            return
                        counts["events"] += 1
                        event = json.loads(raw)
                        kind = event.get("type")
                        if kind == "latency":
                            counts["latency"] += 1
                            events.append(event)
                        elif kind == "call":
                            events.append(event)
                            if event.get("state") == "ended":
                                ended.add(event.get("streamId", ""))

                nursery.start_soon(read)
                await trio.sleep(0.3)  # the subscription is registered once the upgrade is served

                async def call(i: int) -> None:
                    await trio.sleep(i * args.stagger_s / max(1, args.calls))
                    caller = callers[i] = TelnyxCaller(
                        base + "/stream/media", token=args.token, audio=audios[i], speed=1.0,
                        hangup_after_s=call_s)
                    if i == 0:
                        marks["first_start_mono_ns"] = time.monotonic_ns()
                    if i == args.calls - 1:
                        marks["all_started_mono_ns"] = time.monotonic_ns()
                    records[i] = await caller.run()
                    marks.setdefault("first_end_mono_ns", time.monotonic_ns())
                    marks["last_end_mono_ns"] = time.monotonic_ns()

                for w in range(args.warmup_calls):  # one turn each: connection pools, caches
                    durations = plan_durations(rng, 1, args.utterance_min_s, args.utterance_max_s)
                    warm = TelnyxCaller(
                        base + "/stream/media", token=args.token, speed=1.0,
                        audio=encode(script_audio(durations, args.gap_s, lead_in_s=args.lead_in_s,
                                                  rng=rng)),
                        hangup_after_s=args.lead_in_s + durations[0] + args.gap_s)
                    warmups.add(warm.stream_id)
                    await warm.run()
                cpu0 = time.process_time()
                async with trio.open_nursery() as calls:
                    for i in range(args.calls):
                        calls.start_soon(call, i)
                cpu1 = time.process_time()
                with trio.move_on_after(ENDED_WAIT_S):
                    while len(ended - warmups) < args.calls:
                        await trio.sleep(0.05)
                nursery.cancel_scope.cancel()

    stream_of = {e["callId"]: str(e.get("streamId", "")) for e in events
                 if e.get("type") == "call" and e.get("state") == "started"}
    index_of = {callers[i].stream_id: i for i in callers}
    turns: list[dict[str, Any]] = []
    lateness: list[float] = []
    for i, record in records.items():
        assert record.started_at is not None
        sent = np.asarray(record.media_sent_at)
        lateness += (sent - record.started_at - np.arange(sent.size) * FRAME_S).tolist()
    for event in events:
        if event.get("type") != "latency" or "end_of_speech" not in event.get("stages", {}):
            continue
        stages = event["stages"]
        stream = stream_of.get(event["callId"], "")
        if stream in warmups:
            continue
        i = index_of.get(stream, -1)
        turn: dict[str, Any] = {"call": i, "callId": event["callId"], "turnId": event.get("turnId"),
                                "stages": stages}
        found = records.get(i)
        if found is not None and found.started_at is not None:
            record = found
            trigger = round(stages["end_of_speech"] / FRAME_S) - 1 + ENDPOINTING_FRAMES
            if 0 <= trigger < len(record.media_sent_at):
                late = record.media_sent_at[trigger] - record.started_at - trigger * FRAME_S
                turn["trigger_late_ms"] = round(late * 1000, 3)
        turns.append(turn)
    problems = [f"call {i}: ended by {r.ended_by}" for i, r in records.items()
                if r.ended_by not in ("stop",)]
    clears = sum(sum(isinstance(f.message, Clear) for f in r.received) for r in records.values())
    media_in = sum(len(r.media_out) for r in records.values())
    return {
        "ok": len(records) == args.calls and not problems, "calls": args.calls,
        "call_s": round(call_s, 3), "turns": turns, "problems": problems[:10],
        "expected_turns": args.calls * args.turns, "ended_seen": len(ended - warmups),
        "warmup_calls": args.warmup_calls,
        "warmup_call_ids": sorted(cid for cid, stream in stream_of.items() if stream in warmups),
        "events": counts["events"], "latency_events": counts["latency"],
        "caller_send_late_ms": percentiles_ms(lateness), "clears_received": clears,
        "media_frames_received": media_in,
        "call_cpu_s": round(cpu1 - cpu0, 3), "cpu_s": round(time.process_time(), 3),
        **marks,
    }


def parse_caller_args(prog: str, argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line both load clients take (this one and :mod:`bench.voice.light_callers`)."""
    p = argparse.ArgumentParser(prog=prog)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--token", required=True)
    p.add_argument("--calls", type=int, default=1)
    p.add_argument("--turns", type=int, default=3)
    p.add_argument("--stagger-s", type=float, default=2.0)
    p.add_argument("--lead-in-s", type=float, default=3.0)
    p.add_argument("--gap-s", type=float, default=2.5)
    p.add_argument("--utterance-min-s", type=float, default=0.8)
    p.add_argument("--utterance-max-s", type=float, default=1.2)
    p.add_argument("--seed", type=int, default=6)
    p.add_argument("--warmup-calls", type=int, default=1)
    args = p.parse_args(argv)
    if not 1 <= args.calls <= 500 or not 1 <= args.turns <= 10:
        p.error("1 ≤ calls ≤ 500, 1 ≤ turns ≤ 10")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_caller_args("python -m bench.voice.callers", argv)
    try:
        result = trio.run(run, args)
    except Exception as exc:  # noqa: BLE001 - reported to the orchestrator as a failed run
        result = {"ok": False, "error": f"{type(exc).__name__}: {exc!r}"[:2000]}
    print(json.dumps(result), flush=True)
    return 0 if result.get("ok") else 1


if __name__ == "__main__":
    sys.exit(main())
