"""The cloud, emulated: Deepgram listen, Anthropic Messages and Deepgram Aura in one trio process.

Prints one JSON line once serving (``{"listen_url", "anthropic_url", "speak_url"}``); on
SIGTERM/SIGINT (or after ``--max-s``) stops and prints a second one: what the emulators did and how
late they were against their *own* configured delays (their lateness is measured inside the
waterfall and so counted in "our share": an upper bound, reported so the reader can see it).

Every caller says the same lines (one cursor per call: the emulator keys scripts by the ``tag``
query parameter, which the service sets to the call id). ``--lines long`` (:data:`SCRIPT`): the
lines are long for the ~1 s of speech-like audio they stand for, so that an interim transcript
(``WORDS_PER_S`` words per second of speech, one interim per 0.5 s of audio) never equals the
final: the Brain's speculative request always misses and each turn takes the plain path (request
at ``stt_final``). ``--lines short`` (:data:`SHORT_SCRIPT`): two or three words, for utterances of
1.1-1.5 s; a two-word line is whole in the interim at 1.0 s, stable before the final comes (a
preemptive *hit*), a three-word one is not (the interim at 1.0 s has two words: a *miss*). See
``bench/bench_voice.py``.

    .venv/bin/python -m bench.voice.cloud --dg-delay-s 0.05 --ttft-s 0.3 --ttfa-s 0.15
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any, Final

import trio

from bench.emulators.anthropic_messages import AnthropicEmulator
from bench.emulators.deepgram_listen import DeepgramListenEmulator
from bench.emulators.deepgram_speak import DeepgramSpeakEmulator

API_KEY: Final = "test-key"
#: What every caller says, turn by turn (15+ words for ~1 s of audio: interims never catch up).
SCRIPT: Final = (
    "hola buenos días quería saber cuánto me queda por pagar del préstamo de este mes por favor",
    "y si lo pago todo ahora mismo me cobran alguna comisión o algún otro gasto extra de cancelación",
    "vale pues entonces prefiero esperar al mes que viene muchas gracias por la información hasta luego",
    "una cosa más antes de colgar me podría decir también el horario de la oficina de mi barrio",
)
#: Short lines (``--lines short``): the interims of a 2-word line settle on the final, a 3-word
#: line's do not (see the module docstring). Turns 1-2 may hit, turn 3 misses, turn 4 may hit.
SHORT_SCRIPT: Final = (
    "quiero pagar",
    "el préstamo",
    "cuánto me cobran",
    "muchas gracias",
)
LINES: Final = {"long": SCRIPT, "short": SHORT_SCRIPT}
#: The bot's reply to every turn: a short first clause ("Muy bien," is a chunk once " ahora" arrives).
DEFAULT_REPLY: Final = "Muy bien, ahora mismo se lo miro."


def _lateness_ms(values: list[float]) -> dict[str, Any]:
    if not values:
        return {"n": 0}
    values = sorted(values)

    def pct(p: float) -> float:
        return round(values[min(len(values) - 1, int(p / 100 * len(values)))] * 1000, 3)

    return {"n": len(values), "p50": pct(50), "p99": pct(99), "max": round(values[-1] * 1000, 3)}


async def _serve(args: argparse.Namespace) -> dict[str, Any]:
    listen = DeepgramListenEmulator(api_key=API_KEY, script=LINES[args.lines], keep_audio=False,
                                    first_result_delay_s=args.dg_delay_s)
    llm = AnthropicEmulator(api_key=API_KEY, reply_for=lambda _body: args.reply,
                            ttft_s=args.ttft_s, tokens_per_s=args.tokens_per_s)
    speak = DeepgramSpeakEmulator(api_key=API_KEY, ttfa_s=args.ttfa_s,
                                  speed_factor=args.speed_factor, ms_per_char=args.ms_per_char)
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with trio.open_nursery() as nursery:
            urls = {"anthropic_url": await nursery.start(llm.serve),
                    "speak_url": await nursery.start(speak.serve)}
            if not args.no_listen:
                urls["listen_url"] = await nursery.start(listen.serve)
            print(json.dumps(urls), flush=True)
            with trio.move_on_after(args.max_s):
                async for _ in signals:
                    break
            nursery.cancel_scope.cancel()
    outcomes = Counter(r.outcome or "unfinished" for r in llm.requests)
    first_token_late = [r.first_token_at - r.body_at - args.ttft_s for r in llm.requests
                        if r.first_token_at is not None and r.body_at is not None]
    flushes = [f for c in speak.connections for f in c.flushes]
    first_audio_late = [f.first_audio_at - f.at - args.ttfa_s for f in flushes
                        if f.first_audio_at is not None]
    return {
        "ok": True,
        "listen_connections": len(listen.connections),
        "utterances_detected": listen.utterances_detected,
        "finals": sum(len(c.utterances) for c in listen.connections),
        "llm_requests": len(llm.requests), "llm_outcomes": dict(outcomes),
        "llm_first_token_late_ms": _lateness_ms(first_token_late),
        "speak_connections": len(speak.connections), "speak_flushes": len(flushes),
        "speak_first_audio_late_ms": _lateness_ms(first_audio_late),
        "cpu_s": round(time.process_time(), 3),
    }


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.voice.cloud")
    p.add_argument("--dg-delay-s", type=float, default=0.05, help="Deepgram first_result_delay_s")
    p.add_argument("--ttft-s", type=float, default=0.3)
    p.add_argument("--tokens-per-s", type=float, default=200.0)
    p.add_argument("--ttfa-s", type=float, default=0.15)
    p.add_argument("--speed-factor", type=float, default=10.0)
    p.add_argument("--ms-per-char", type=float, default=30.0)
    p.add_argument("--reply", default=DEFAULT_REPLY)
    p.add_argument("--lines", choices=sorted(LINES), default="long", help="what the callers say")
    p.add_argument("--no-listen", action="store_true",
                   help="no Deepgram listen emulator (bench.voice.light_listen serves it instead)")
    p.add_argument("--max-s", type=float, default=120.0)
    args = p.parse_args(argv)
    args.max_s = min(args.max_s, 600.0)
    print(json.dumps(trio.run(_serve, args)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
