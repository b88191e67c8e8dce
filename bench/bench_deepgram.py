"""Decode cost of Deepgram ``/v1/listen`` server messages: stdlib json vs the orjson cattrs preconf.

Run: ``.venv/bin/python -m bench.bench_deepgram`` (``--quick`` for a fast smoke run).

A call receives about one ``Results`` per second of caller audio (interim results on), plus the
odd ``SpeechStarted``/``UtteranceEnd``, so this path is nowhere near hot; the question is only
whether the choice of JSON library matters and what strict validation costs. Every variant
produces the same frozen attrs message from the same text:

(a)  stdlib ``json.loads`` + the module's converter (strict primitive hooks, detailed validation).
(a2) ``cattrs.preconf.json`` converter with cattrs' default (coercing) hooks: the textbook path.
(b)  ``decode_server()``: ``orjson.loads`` + the module's converter — what the code uses.
(b2) ``cattrs.preconf.orjson`` with default hooks, detailed validation off: a cattrs floor.
(c)  msgspec typed Structs (no attrs objects built): a reference floor, not a candidate.

Then ``encode_server()`` (the emulator's side) against stdlib ``json.dumps``.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import statistics
import sys
import timeit
from collections.abc import Callable
from typing import Any

import msgspec
import orjson
from cattrs.preconf.json import make_converter as make_json_converter
from cattrs.preconf.orjson import make_converter as make_orjson_converter
from cattrs.strategies import configure_tagged_union

from protocols import deepgram_listen as dl
from protocols import deepgram_messages as dm

_META = {
    "request_id": "5d3c2a1e-8f4b-4c6d-9e0a-1b2c3d4e5f60",
    "model_info": {"name": "general-nova-3", "version": "2025-04-17.21547", "arch": "nova-3"},
    "model_uuid": "40bd3654-e622-47c4-a111-63a61b23bfe0",
}
_WORDS = [("hola", 0.48, 0.8), ("quería", 0.8, 1.12), ("pedir", 1.12, 1.44), ("una", 1.44, 1.6),
          ("cita", 1.6, 2.0)]  # fmt: skip
RESULTS_FINAL = json.dumps(
    {
        "type": "Results", "channel_index": [0, 1], "duration": 2.3, "start": 0.0,
        "is_final": True, "speech_final": True, "from_finalize": False,
        "channel": {"alternatives": [{
            "transcript": "Hola, quería pedir una cita.", "confidence": 0.9871,
            "words": [{"word": w, "start": s, "end": e, "confidence": 0.98, "punctuated_word": w}
                      for w, s, e in _WORDS],
        }]},
        "metadata": _META,
    },
    ensure_ascii=False,
)  # fmt: skip
RESULTS_INTERIM = json.dumps(
    {
        "type": "Results", "channel_index": [0, 1], "duration": 1.08, "start": 90.32,
        "is_final": False, "speech_final": False, "from_finalize": False,
        "channel": {"alternatives": [{"transcript": "Yeah.", "confidence": 0.996, "words": [
            {"word": "yeah", "start": 90.96, "end": 91.4, "confidence": 0.996, "punctuated_word": "Yeah."}]}]},
        "metadata": _META,
    }
)  # fmt: skip
UTTERANCE_END = '{"type":"UtteranceEnd","channel":[0,1],"last_word_end":1.2}'


def _lax(factory: Callable[..., Any], *, detailed: bool) -> Any:
    conv = factory(detailed_validation=detailed)
    conv.register_structure_hook(dl.UnknownMessage, dl.structure_unknown)
    configure_tagged_union(
        dm._KnownServerMessage, conv, tag_generator=dm._SERVER_TAGS.__getitem__,
        tag_name="type", default=dl.UnknownMessage,
    )
    return conv


_LAX_JSON = _lax(make_json_converter, detailed=True)
_LAX_ORJSON_FAST = _lax(make_orjson_converter, detailed=False)


# (c) msgspec reference -------------------------------------------------------------------------
class _MWord(msgspec.Struct):
    word: str
    start: float
    end: float
    confidence: float = 0.0
    punctuated_word: str | None = None


class _MAlt(msgspec.Struct):
    transcript: str
    confidence: float = 0.0
    words: list[_MWord] = []


class _MChannel(msgspec.Struct):
    alternatives: list[_MAlt] = []


class _MModelInfo(msgspec.Struct, frozen=True):
    name: str = ""
    version: str = ""
    arch: str = ""


class _MMeta(msgspec.Struct, frozen=True):
    request_id: str = ""
    model_info: _MModelInfo = _MModelInfo()
    model_uuid: str = ""


class _MResults(msgspec.Struct, tag_field="type", tag="Results"):
    start: float
    duration: float
    channel: _MChannel
    channel_index: tuple[int, ...] = (0, 1)
    is_final: bool = False
    speech_final: bool = False
    from_finalize: bool = False
    metadata: _MMeta = _MMeta()


class _MUtteranceEnd(msgspec.Struct, tag_field="type", tag="UtteranceEnd"):
    channel: list[int]
    last_word_end: float


_MSGSPEC = msgspec.json.Decoder(_MResults | _MUtteranceEnd)


def measure(fn: Callable[[], Any], *, repeat: int, number: int) -> tuple[float, float]:
    """(best, median) microseconds per call over ``repeat`` runs of ``number`` calls."""
    runs = timeit.repeat(fn, repeat=repeat, number=number)
    per_call = [run / number * 1e6 for run in runs]
    return min(per_call), statistics.median(per_call)


def environment() -> str:
    cpu = platform.processor() or "?"
    try:
        with open("/proc/cpuinfo") as info:
            cpu = next(line.split(":", 1)[1].strip() for line in info if "model name" in line)
    except (OSError, StopIteration):
        pass
    versions = ", ".join(
        f"{name} {importlib.metadata.version(name)}" for name in ("attrs", "cattrs", "msgspec", "orjson")
    )
    return (
        f"Python {platform.python_version()} ({sys.implementation.name}) on {platform.system()} "
        f"{platform.machine()}, {cpu}, {os.cpu_count()} CPUs; {versions}"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="fewer iterations (smoke run)")
    args = parser.parse_args(argv)
    repeat, number = (3, 1_000) if args.quick else (7, 10_000)
    union: Any = dm._KnownServerMessage

    variants: list[tuple[str, str, Callable[[str], Any]]] = [
        ("a", "json.loads + module converter (strict)", lambda t: dl.CONVERTER.structure(json.loads(t), union)),
        ("a2", "cattrs preconf json, default hooks", lambda t: _LAX_JSON.loads(t, union)),
        ("b", "decode_server(): orjson + module converter", dl.decode_server),
        ("b2", "cattrs preconf orjson, lax, no detail", lambda t: _LAX_ORJSON_FAST.loads(t, union)),
        ("c", "msgspec Structs (no attrs; floor)", _MSGSPEC.decode),
    ]  # fmt: skip
    messages = [
        ("Results final, 5 words", RESULTS_FINAL),
        ("Results interim, 1 word", RESULTS_INTERIM),
        ("UtteranceEnd", UTTERANCE_END),
    ]
    for _, text in messages:
        expected = dl.decode_server(text)
        for key, _, fn in variants[:-1]:
            assert fn(text) == expected, key

    print(environment())
    print(f"best / median of {repeat} runs x {number} calls; microseconds per call\n")
    header = "".join(f"{label:>26}" for label, _ in messages)
    print(f"DECODE one server text frame ({len(RESULTS_FINAL)}/{len(RESULTS_INTERIM)}/{len(UTTERANCE_END)} chars)")
    print(f"{'':4}{'variant':44}{header}")
    for key, label, fn in variants:
        cells = []
        for _, text in messages:
            best, median = measure(lambda: fn(text), repeat=repeat, number=number)  # noqa: B023
            cells.append(f"{best:12.2f} / {median:8.2f}  ")
        print(f"{key:4}{label:44}{''.join(f'{c:>26}' for c in cells)}")
    print("\n  components")
    loaders: list[tuple[str, Callable[[str], Any]]] = [
        ("json.loads only", json.loads),
        ("orjson.loads only", orjson.loads),
    ]
    for label, fn in loaders:
        cells = []
        for _, text in messages:
            best, median = measure(lambda: fn(text), repeat=repeat, number=number)  # noqa: B023
            cells.append(f"{best:12.2f} / {median:8.2f}  ")
        print(f"{'':4}{label:44}{''.join(f'{c:>26}' for c in cells)}")

    print("\nENCODE (emulator side)")
    final = dl.decode_server(RESULTS_FINAL)
    encoders: list[tuple[str, Callable[[], str]]] = [
        ("encode_server(): converter + orjson", lambda: dl.encode_server(final)),
        ("converter + stdlib json.dumps", lambda: json.dumps(
            {"type": "Results", **dl.CONVERTER.unstructure(final, dl.Results)}, ensure_ascii=False)),
    ]  # fmt: skip
    for label, encoder in encoders:
        assert dl.decode_server(encoder()) == final, label
        best, median = measure(encoder, repeat=repeat, number=number)
        print(f"{'':4}{label:44}{best:12.2f} / {median:8.2f}")


if __name__ == "__main__":
    main()
