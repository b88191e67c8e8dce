"""Where the service's CPU goes, from a py-spy profile of a voice bench run (``bench_voice --profile``).

py-spy's ``raw`` format is one collapsed stack per line (``frame;frame;... count``, outermost
first, each frame ``function (file:line)``); only on-CPU samples are recorded. Each sample is
given to one *part* of the service: the innermost actor on the stack (the Speaker's call into the
Aura client counts for the TTS client, the Brain's into the SDK for the SDK), else the outermost
service code (supervisor, media route, hypercorn); samples with no task frame (trio's scheduler, epoll, the I/O manager) are "trio run loop". Separately, the
*socket layer* of ``/stream/media`` (hypercorn, wsproto, h11 and our front door and media route)
is measured wherever it runs — under the Speaker's sends as much as in the route's receive loop —
because another change replaces it, and the table says how much is left to the rest.

    .venv/bin/python -m bench.voice.profile_share bench/out/voice-<stamp>/n25-r1-p100-pyspy.txt
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from collections.abc import Sequence
from typing import Final

#: (part, substrings of a frame's file path), first match wins, tried from the outermost frame.
PARTS: Final = (
    ("Speaker (actors/speaker.py)", ("actors/speaker.py",)),
    ("Brain (actors/brain.py, reply_generation, conversation)",
     ("actors/brain.py", "actors/reply_generation.py", "actors/conversation.py")),
    ("TTS client (actors/aura_tts.py)", ("actors/aura_tts.py",)),
    ("Anthropic SDK + httpx (actors/llm.py)", ("actors/llm.py",)),
    ("STT (actors/deepgram_link.py)", ("actors/deepgram_link.py",)),
    ("TelnyxRx (actors/telnyx_rx.py)", ("actors/telnyx_rx.py",)),
    ("relay (fanout, hub, subscribers)", ("actors/relay_fanout.py", "centralita/relay_hub.py",
                                          "centralita/routes_relay.py", "centralita/fanout_socket.py")),
    ("supervisor", ("supervisor/",)),
    ("media route + front door", ("centralita/routes_media.py", "centralita/front_door.py",
                                  "centralita/media_socket.py")),
    ("hypercorn (other)", ("hypercorn/",)),
)
#: The first parts are actors, matched innermost first; the rest outermost first.
ACTOR_PARTS: Final = 7
SOCKET_LAYER: Final = ("hypercorn/", "h11/", "centralita/front_door.py",
                       "centralita/routes_media.py", "centralita/media_socket.py")
TRIO_LOOP: Final = "trio run loop (scheduler, epoll, no task frame)"


def parse(lines: Sequence[str]) -> list[tuple[list[str], int]]:
    stacks = []
    for line in lines:
        line = line.rstrip("\n")
        if not line or " " not in line:
            continue
        stack, _, count = line.rpartition(" ")
        try:
            stacks.append((stack.split(";"), int(count)))
        except ValueError:
            continue
    return stacks


def part_of(frames: Sequence[str]) -> str:
    for frame in reversed(frames):  # the innermost actor: the Speaker's call into Aura is Aura's
        for part, needles in PARTS[:ACTOR_PARTS]:
            if any(n in frame for n in needles):
                return part
    for frame in frames:
        for part, needles in PARTS[ACTOR_PARTS:]:
            if any(n in frame for n in needles):
                return part
    if any("trio/" in f or "trio\\" in f for f in frames):
        return TRIO_LOOP
    return "other"


def on_socket_layer(frames: Sequence[str]) -> bool:
    """Under the /stream/media socket layer (wsproto counts only outside trio-websocket, which
    the Deepgram and Aura clients use)."""
    if any(any(n in f for n in SOCKET_LAYER) for f in frames):
        return True
    return (any("wsproto/" in f for f in frames)
            and not any("trio_websocket/" in f for f in frames))


def summarize(stacks: list[tuple[list[str], int]]) -> tuple[int, Counter[str], Counter[str], Counter[str]]:
    """Total samples; samples per part; socket-layer samples per part; leaf frames overall."""
    total = 0
    parts: Counter[str] = Counter()
    socket: Counter[str] = Counter()
    leaves: Counter[str] = Counter()
    for frames, count in stacks:
        total += count
        part = part_of(frames)
        parts[part] += count
        if on_socket_layer(frames):
            socket[part] += count
        leaves[frames[-1]] += count
    return total, parts, socket, leaves


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.voice.profile_share")
    p.add_argument("profile")
    p.add_argument("--leaves", type=int, default=15, help="how many hottest leaf frames to list")
    args = p.parse_args(argv)
    with open(args.profile) as f:
        total, parts, socket, leaves = summarize(parse(f.readlines()))
    if not total:
        print("no samples", file=sys.stderr)
        return 1
    print(f"{total} on-CPU samples\n")
    print("| part | share of service CPU | of which /stream/media socket layer |")
    print("|---|---|---|")
    for part, n in parts.most_common():
        print(f"| {part} | {100 * n / total:.1f} % | {100 * socket[part] / total:.1f} % |")
    print(f"| **all** | 100 % | **{100 * sum(socket.values()) / total:.1f} %** |\n")
    print("| hottest leaf frames | share |")
    print("|---|---|")
    for leaf, n in leaves.most_common(args.leaves):
        print(f"| `{leaf}` | {100 * n / total:.1f} % |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
