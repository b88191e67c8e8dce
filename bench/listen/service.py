"""The service with *listening* calls only, and ``DeepgramLink.batch_frames`` chosen per run.

Issue #5's figures are about the listening half (TelnyxRx → DeepgramLink → RelayFanout). Since
``centralita serve`` now answers every call with the bot (Brain and Speaker too), and
``batch_frames`` is not a setting of the service, this launcher builds the app exactly as
``centralita serve`` does (:func:`centralita.server.build_service_app`, then
:func:`centralita.server.serve`) and only swaps the media route's call builder for
:func:`centralita.call_wiring.listening_call` with :func:`centralita.call_wiring.deepgram_stt`
(``batch_frames``), publishing to the same relay hub and latency metrics. No file outside bench/
changes.

    .venv/bin/python -m bench.listen.service --batch-frames 2 --host 127.0.0.1 --port 8123
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import time
from collections import Counter
from functools import partial
from collections.abc import Sequence

import attrs
import trio

from actors.relay_publishers import InProcessPublisher
from centralita import logs
from centralita.call_wiring import deepgram_stt, listening_call
from centralita.composition import Service
from centralita.routes_media import BuildCall
from centralita.server import build_service_app, serve, settle_heap
from centralita.settings import Settings, SettingsError


def listening_calls(service: Service, settings: Settings, batch_frames: int) -> BuildCall:
    """Calls that only listen, over Deepgram with ``batch_frames`` frames per message."""
    key = settings.deepgram_api_key.value if settings.deepgram_api_key else ""
    return partial(listening_call, stt=deepgram_stt(settings.deepgram_listen_url, key, batch_frames),
                   publisher=InProcessPublisher(service.relay.hub.publish),
                   on_latency=service.relay.metrics.observe)


def log_gc_pauses(min_ms: float) -> None:
    """One JSON line on stderr per garbage collection of at least ``min_ms`` (a diagnostic)."""
    started: list[float] = []
    census_at = [time.monotonic() + 8.0]  # one census of what the heap holds, mid-run

    def callback(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            started[:] = [time.perf_counter()]
        elif started:
            ms = (time.perf_counter() - started[0]) * 1000
            if ms >= min_ms:
                print(json.dumps({"gc_pause_ms": round(ms, 2), "generation": info["generation"],
                                  "collected": info["collected"], "at_mono": round(time.monotonic(), 3)}),
                      file=sys.stderr, flush=True)
            if info["generation"] == 2 and time.monotonic() >= census_at[0]:
                census_at[0] = float("inf")
                tracked = gc.get_objects()
                by_type = Counter(type(o).__qualname__ for o in tracked)
                print(json.dumps({"gc_census_tracked": len(tracked), "top": by_type.most_common(12)}),
                      file=sys.stderr, flush=True)

    gc.callbacks.append(callback)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.listen.service")
    p.add_argument("--batch-frames", type=int, default=1)
    p.add_argument("--host", default=None)
    p.add_argument("--port", type=int, default=None)
    p.add_argument("--gc-untuned", action="store_true",
                   help="experiment: skip what `centralita serve` does to the GC once the app is "
                        "built (centralita.server.settle_heap: freeze, higher thresholds)")
    p.add_argument("--gc-threshold", default=None, metavar="G0,G1,G2",
                   help="experiment: settle_heap with these thresholds instead of the service's")
    p.add_argument("--gc-log-ms", type=float, default=None,
                   help="diagnostic: log every garbage collection that takes at least this long")
    args = p.parse_args(argv)
    try:
        settings = Settings.from_env(os.environ)
    except SettingsError as exc:
        print(f"bad configuration: {exc}", file=sys.stderr)
        return 2
    changes = {k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
    settings = attrs.evolve(settings, **changes)
    logs.configure()
    if args.gc_log_ms is not None:
        log_gc_pauses(args.gc_log_ms)
    app, service = build_service_app(settings)
    service.media.build_call = listening_calls(service, settings, args.batch_frames)
    if not args.gc_untuned:  # as `centralita serve` does
        if args.gc_threshold:
            g0, g1, g2 = (int(v) for v in args.gc_threshold.split(","))
            settle_heap((g0, g1, g2))
        else:
            settle_heap()

    async def run() -> None:
        async with trio.open_nursery() as nursery:
            binds = await nursery.start(serve, app, settings)
            print(f"centralita serve listening on {' '.join(binds)} (batch_frames "
                  f"{args.batch_frames})", flush=True)

    trio.run(run)
    return 0


if __name__ == "__main__":
    sys.exit(main())
