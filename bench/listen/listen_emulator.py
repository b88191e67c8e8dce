"""The protocol-faithful Deepgram emulator in its own process, for the transcript-latency part.

Prints ``listening ws://127.0.0.1:PORT/v1/listen`` once serving; stops on SIGTERM/SIGINT or after
``--max-s``. Every call walks its own copy of :data:`SCRIPT` (the emulator keys scripts by the
``tag`` query parameter, which the service sets to the call id).
"""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Sequence
from typing import Final

import trio

from bench.emulators.deepgram_listen import DeepgramListenEmulator

SCRIPT: Final = ("hola quiero pedir una cita", "el martes por la mañana si puede ser",
                 "perfecto muchas gracias")


async def _serve(max_s: float) -> None:
    emulator = DeepgramListenEmulator(api_key="test-key", script=SCRIPT, keep_audio=False)
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with trio.open_nursery() as nursery:
            url = await nursery.start(emulator.serve)
            print(f"listening {url}", flush=True)
            with trio.move_on_after(max_s):
                async for _ in signals:
                    break
            nursery.cancel_scope.cancel()


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.listen.listen_emulator")
    p.add_argument("--max-s", type=float, default=120.0)
    args = p.parse_args(argv)
    trio.run(_serve, min(args.max_s, 600.0))
    return 0


if __name__ == "__main__":
    sys.exit(main())
