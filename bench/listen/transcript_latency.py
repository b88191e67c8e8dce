"""A few calls speaking scripted utterances, and a relay subscriber timing each final.

Runs against ``centralita serve`` wired to the Deepgram emulator (:mod:`bench.listen.listen_emulator`).
Each of ``--calls`` callers (:class:`~bench.emulators.telnyx_caller.TelnyxCaller`, real time) says
three speech-like utterances of random length; a firehose subscriber (``WS /ws?callId=*``) on the
service records when each ``final`` arrives. Callers and subscriber share this process, so both
are on trio's clock.

For each utterance, the *end of speech* is when the caller handed over its last voiced frame (the
emulator's energy VAD decides "voiced", run here on the same bytes). The emulator finalises after
``endpointing`` = 200 ms of unvoiced audio, i.e. on the 10th frame after that one: the *trigger*
frame. Reported per final: speech end → final at the subscriber (what a dashboard sees), and
trigger frame sent → final at the subscriber (the pipeline's own share: two loopback hops in, the
batching wait, the emulator, the relay out).

Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import sys
import uuid
from collections.abc import Sequence
from typing import Any, Final

import attrs
import numpy as np
import trio
from trio_websocket import ConnectionClosed

from bench.emulators.caller_audio import encode, script_audio, script_spans
from bench.emulators.telnyx_caller import CallerRecord, TelnyxCaller
from bench.emulators.ws_client import open_ws_client
from protocols.audio import frame_rms_dbfs
from protocols.g711 import ulaw_decode

FRAME_S: Final = 0.02
VAD_THRESHOLD_DBFS: Final = -45.0  # the emulator's default
ENDPOINTING_FRAMES: Final = 10  # DeepgramLink asks for endpointing=200 ms
LEAD_IN_S: Final = 0.5
GAPS_S: Final = (0.9, 0.9, 1.2)
STAGGER_S: Final = 0.23
RUN_TIMEOUT_S: Final = 60.0
ENDED_WAIT_S: Final = 5.0


@attrs.frozen
class CallPlan:
    stream_id: str
    audio: bytes = attrs.field(repr=False)
    durations: list[float]
    last_voiced: list[int]  # per utterance: its last frame the emulator hears as voiced


def last_voiced_frames(audio: bytes, spans: Sequence[tuple[float, float]]) -> list[int]:
    """Index of the last frame of each utterance that the emulator's VAD hears as voiced."""
    out = []
    for start, end in spans:
        first, last = int(start / FRAME_S), int(np.ceil(end / FRAME_S))
        voiced = [k for k in range(first, last + 1)
                  if frame_rms_dbfs(ulaw_decode(audio[k * 160:(k + 1) * 160])) >= VAD_THRESHOLD_DBFS]
        out.append(voiced[-1])
    return out


async def run(args: argparse.Namespace) -> dict[str, Any]:
    rng = np.random.default_rng(args.seed)
    base = f"ws://127.0.0.1:{args.port}"
    plans: list[CallPlan] = []
    for _ in range(args.calls):
        durations = [round(float(d), 2) for d in rng.uniform(0.8, 1.6, size=3)]
        pcm = script_audio(durations, list(GAPS_S), lead_in_s=LEAD_IN_S, rng=rng)
        audio = encode(pcm)
        spans = script_spans(durations, list(GAPS_S), lead_in_s=LEAD_IN_S)
        plans.append(CallPlan(str(uuid.uuid4()), audio, durations, last_voiced_frames(audio, spans)))
    events: list[tuple[float, dict[str, Any]]] = []
    records: dict[int, CallerRecord] = {}
    ended: set[str] = set()
    with trio.fail_after(RUN_TIMEOUT_S):
        async with open_ws_client(base + "/ws?callId=*", message_queue_size=256) as sub:
            async with trio.open_nursery() as nursery:

                async def read() -> None:
                    while True:
                        try:
                            raw = await sub.get_message()
                        except ConnectionClosed:
                            return
                        event = json.loads(raw)
                        events.append((trio.current_time(), event))
                        if event.get("type") == "call" and event.get("state") == "ended":
                            ended.add(event.get("streamId", ""))

                nursery.start_soon(read)
                await trio.sleep(0.3)  # the subscription is registered once the upgrade is served

                async def call(i: int) -> None:
                    await trio.sleep(i * STAGGER_S)
                    plan = plans[i]
                    caller = TelnyxCaller(base + "/stream/media", token=args.token, audio=plan.audio,
                                          stream_id=plan.stream_id)
                    records[i] = await caller.run()

                async with trio.open_nursery() as callers:
                    for i in range(args.calls):
                        callers.start_soon(call, i)
                with trio.move_on_after(ENDED_WAIT_S):
                    while len(ended) < args.calls:
                        await trio.sleep(0.05)
                nursery.cancel_scope.cancel()

    call_ids = {e["streamId"]: e["callId"] for _, e in events
                if e.get("type") == "call" and e.get("state") == "started"}
    finals: list[dict[str, Any]] = []
    problems: list[str] = []
    for i, plan in enumerate(plans):
        cid = call_ids.get(plan.stream_id)
        got = [(t, e) for t, e in events if e.get("callId") == cid and e.get("type") == "final"]
        if len(got) != len(plan.last_voiced):
            problems.append(f"call {i}: {len(got)} finals for {len(plan.last_voiced)} utterances")
        sent = records[i].media_sent_at
        for u, ((t, event), kv) in enumerate(zip(got, plan.last_voiced, strict=False)):
            end_ms = (kv + 1) * FRAME_S * 1000
            if abs(event.get("tsEnd", 0) - end_ms) > 100:
                problems.append(f"call {i} utterance {u}: tsEnd {event.get('tsEnd')} vs voiced end {end_ms:.0f}")
            trigger = kv + ENDPOINTING_FRAMES
            finals.append({
                "call": i, "utterance": u, "last_voiced_frame": kv, "text": event.get("text"),
                "end_to_final_ms": round((t - sent[kv]) * 1000, 2),
                "trigger_to_final_ms": round((t - sent[trigger]) * 1000, 2),
            })
    return {"ok": not problems and bool(finals), "calls": args.calls, "finals": finals,
            "partials": sum(1 for _, e in events if e.get("type") == "partial"),
            "problems": problems}


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.listen.transcript_latency")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--token", required=True)
    p.add_argument("--calls", type=int, default=4)
    p.add_argument("--seed", type=int, default=5)
    args = p.parse_args(argv)
    if not 1 <= args.calls <= 50:
        p.error("1 ≤ calls ≤ 50")
    try:
        result = trio.run(run, args)
    except Exception as exc:  # noqa: BLE001 - reported to the orchestrator as a failed run
        result = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    print(json.dumps(result), flush=True)
    return 0 if result.get("ok") else 1


if __name__ == "__main__":
    sys.exit(main())
