"""``centralita`` command line: one subcommand per job, each with ``--help``."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from centralita.settings import DEFAULT_PORT, DEFAULT_RELAY_PORT, Settings, SettingsError


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="centralita",
        description="Real-time AI phone calls: Telnyx media streams in, transcripts, replies and "
        "live events out. Configuration comes from the environment (see README).",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    serve = sub.add_parser("serve", help="run the full service (calls, relay, metrics)",
                           description="Serve every route of the service on hypercorn's trio worker.")
    serve.add_argument("--host", default=None, help="interface to bind (default 0.0.0.0, or HOST)")
    serve.add_argument("--port", type=int, default=None,
                       help=f"TCP port (default {DEFAULT_PORT}, or PORT)")

    relay = sub.add_parser("relay", help="run only the event relay hub (seed-compatible)",
                           description="Serve GET /health, POST /event, WS /ws?callId= and "
                           "GET /metrics: a drop-in for the seed's Node relay.")
    relay.add_argument("--host", default=None, help="interface to bind (default 0.0.0.0, or HOST)")
    relay.add_argument("--port", type=int, default=None,
                       help=f"TCP port (default {DEFAULT_RELAY_PORT}, or PORT)")

    demo = sub.add_parser(
        "demo", help="place one whole call on this machine, no API keys needed",
        description="Start the service on 127.0.0.1, call it like Telnyx with a simulated caller "
        "who speaks (espeak-ng) a few lines to the demo IVR, show the transcript, the replies and "
        "each turn's latency live, then a summary. Local engines (pocketsphinx, espeak-ng, a "
        "scripted IVR) unless DEEPGRAM_API_KEY / ANTHROPIC_API_KEY are set. Saves a two-track WAV "
        "of the call and every relay event. Exit status 1 if any step of the call failed.")
    demo.add_argument("--language", choices=("en", "es"), default=None,
                      help="the call's language (default: en on the local engines, es when "
                      "DEEPGRAM_API_KEY is set: the service is Spanish on Deepgram)")
    pace = demo.add_mutually_exclusive_group()
    pace.add_argument("--realtime", dest="fast", action="store_false", default=False,
                      help="the caller pauses like a person between turns (default)")
    pace.add_argument("--fast", dest="fast", action="store_true",
                      help="the caller answers at once and speaks faster (latencies stay real)")
    demo.add_argument("--turns", type=int, default=4, metavar="N",
                      help="how many lines the caller says, 1 to 4, goodbye last (default 4)")
    demo.add_argument("--out", type=Path, default=None, metavar="DIR",
                      help="where to save call.wav, events.json, service.log "
                      "(default demo-out/<date-time>)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _build_parser().parse_args(argv)
    if args.command == "demo":
        from centralita import demo  # imported late: --help stays fast

        return demo.main(demo.DemoOptions(language=args.language, fast=args.fast,
                                          turns=args.turns, out_dir=args.out), os.environ)
    default_port = DEFAULT_RELAY_PORT if args.command == "relay" else DEFAULT_PORT
    try:
        settings = Settings.from_env(os.environ, default_port=default_port)
    except SettingsError as exc:
        print(f"centralita: bad configuration: {exc}", file=sys.stderr)
        return 2
    if args.port is not None:
        settings = _with(settings, port=args.port)
    if args.host is not None:
        settings = _with(settings, host=args.host)

    from centralita import server  # imported late: --help stays fast

    return server.run_from_cli(args.command, settings)


def _with(settings: Settings, **changes: object) -> Settings:
    import attrs

    return attrs.evolve(settings, **changes)  # type: ignore[arg-type]


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
