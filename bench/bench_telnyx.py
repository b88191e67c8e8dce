"""Per-frame cost of the Telnyx media-stream codec: which JSON path the hot loop takes.

Run: ``.venv/bin/python -m bench.bench_telnyx`` (``--quick`` for a fast smoke run).

A call receives a 20 ms media frame 50 times a second, so decoding one (JSON parse + base64 +
building the frozen attrs ``Media``) is the per-call floor of the whole inbound path. The
candidates, all producing the same ``Media`` from the same 20 ms PCMU frame (160 B payload):

(a)  stdlib ``json.loads`` + the module's cattrs converter (hand-written flattening hook).
(a2) stdlib ``json.loads`` + cattrs *generated* hooks for wire-shaped attrs classes, then
     building ``Media`` from them (the textbook cattrs approach).
(b)  the cattrs orjson preconf converter (``orjson.loads`` + the same hook): the module's
     canonical slow path.
(c)  msgspec typed Struct (``payload: bytes`` decodes base64 in C), then ``Media(...)``,
     with the module's strict readers for numbers and track (``protocols.telnyx_media.decode``
     for a media frame).
(c0) the same without the Python-side checks (lax msgspec ints): a floor, not a candidate.
(e)  hand-rolled ``orjson.loads`` + dict access + ``binascii.a2b_base64`` + ``Media(...)``.
(d)  the hybrid in ``decode()``: (c) for media, falling back to (b) for every other event;
     shown for a ``mark`` frame to price the fallback.

Then the outbound side: ``encode(MediaOut)`` for 160 B and 800 B payloads against the
converter + orjson, stdlib json and msgspec; and what the Telnyx emulator pays per frame.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import importlib.metadata
import json
import os
import platform
import statistics
import sys
import timeit
from collections.abc import Callable
from typing import Any

import attrs
import cattrs
import msgspec
import orjson
from cattrs.gen import make_dict_structure_fn

from protocols import telnyx_fields as tf
from protocols import telnyx_media as tm
from protocols import telnyx_media_converter as tmc
from protocols import telnyx_media_fast as tmf
from protocols import telnyx_media_messages as tmm

PAYLOAD_160 = bytes(range(160))
PAYLOAD_800 = bytes(i % 256 for i in range(800))

MEDIA_FRAME = json.dumps(
    {
        "event": "media",
        "sequence_number": "4",
        "stream_id": "32de0dea-53cb-4b21-89a4-9e1819c043bc",
        "media": {
            "track": "inbound",
            "chunk": "2",
            "timestamp": "5",
            "payload": base64.b64encode(PAYLOAD_160).decode(),
        },
    }
)
MARK_FRAME = json.dumps(
    {"event": "mark", "sequence_number": "9", "stream_id": "32de0dea", "mark": {"name": "utt-17"}}
)
EXPECTED = tm.Media(
    stream_id="32de0dea-53cb-4b21-89a4-9e1819c043bc",
    sequence_number=4,
    track="inbound",
    payload=PAYLOAD_160,
    chunk=2,
    timestamp=5,
)


# (a2) cattrs generated hooks on wire-shaped classes ------------------------------------------
@attrs.frozen
class _WireBody:
    track: str
    payload: bytes
    chunk: int | str | None = None
    timestamp: int | str | None = None


@attrs.frozen
class _WireMedia:
    stream_id: str
    sequence_number: int | str
    media: _WireBody


def _generated_converter() -> cattrs.Converter:
    conv = cattrs.Converter()
    conv.register_structure_hook(bytes, lambda v, _: binascii.a2b_base64(v, strict_mode=True))
    conv.register_structure_hook(int | str, lambda v, _: v)
    conv.register_structure_hook(int | str | None, lambda v, _: v)
    conv.register_structure_hook(_WireBody, make_dict_structure_fn(_WireBody, conv))
    conv.register_structure_hook(_WireMedia, make_dict_structure_fn(_WireMedia, conv))
    return conv


_GEN = _generated_converter()


def decode_a2(text: str) -> tm.Media:
    wire = _GEN.structure(json.loads(text), _WireMedia)
    body = wire.media
    return tm.Media(
        stream_id=wire.stream_id,
        sequence_number=tf.wire_int(wire.sequence_number, "sequence_number"),
        track=tf.track(body.track, "media.track"),
        payload=body.payload,
        chunk=tf.opt_wire_int(body.chunk, "media.chunk"),
        timestamp=tf.opt_wire_int(body.timestamp, "media.timestamp"),
    )


# (c0) msgspec lax ints, no checks -------------------------------------------------------------
class _LaxBody(msgspec.Struct, gc=False):
    track: str
    payload: bytes
    chunk: int | None = None
    timestamp: int | None = None


class _LaxMedia(msgspec.Struct, tag_field="event", tag="media", gc=False):
    stream_id: str
    sequence_number: int
    media: _LaxBody


_LAX = msgspec.json.Decoder(_LaxMedia, strict=False)


def decode_c0(text: str) -> tm.Media:
    wire = _LAX.decode(text)
    body = wire.media
    return tm.Media(
        stream_id=wire.stream_id,
        sequence_number=wire.sequence_number,
        track=body.track,  # type: ignore[arg-type]
        payload=body.payload,
        chunk=body.chunk,
        timestamp=body.timestamp,
    )


# (e) hand-rolled --------------------------------------------------------------------------------
def decode_e(text: str) -> tm.Media:
    frame = orjson.loads(text)
    body = frame["media"]
    return tm.Media(
        stream_id=tf.required_text(frame.get("stream_id"), "stream_id"),
        sequence_number=tf.wire_int(frame.get("sequence_number"), "sequence_number"),
        track=tf.track(body.get("track"), "media.track"),
        payload=binascii.a2b_base64(body["payload"], strict_mode=True),
        chunk=tf.opt_wire_int(body.get("chunk"), "media.chunk"),
        timestamp=tf.opt_wire_int(body.get("timestamp"), "media.timestamp"),
    )


# outbound encoders ------------------------------------------------------------------------------
class _OutBody(msgspec.Struct):
    payload: bytes


class _OutMedia(msgspec.Struct, tag_field="event", tag="media"):
    media: _OutBody


_MSGSPEC_ENCODER = msgspec.json.Encoder()


def encode_converter(msg: tm.MediaOut) -> str:
    return tm._dumps(tmc.CONVERTER.unstructure(msg, tm.TelnyxOutbound))


def encode_stdlib(msg: tm.MediaOut) -> str:
    payload = base64.b64encode(msg.payload).decode("ascii")
    return json.dumps({"event": "media", "media": {"payload": payload}}, separators=(",", ":"))


def encode_orjson_dict(msg: tm.MediaOut) -> str:
    payload = binascii.b2a_base64(msg.payload, newline=False).decode("ascii")
    return orjson.dumps({"event": "media", "media": {"payload": payload}}).decode()


def encode_msgspec(msg: tm.MediaOut) -> str:
    return _MSGSPEC_ENCODER.encode(_OutMedia(_OutBody(msg.payload))).decode()


# harness ----------------------------------------------------------------------------------------
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
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="fewer iterations (smoke run)")
    args = parser.parse_args(argv)
    repeat, number = (3, 2_000) if args.quick else (9, 20_000)

    inbound: Any = tm.TelnyxInbound
    decoders: list[tuple[str, str, Callable[[], Any]]] = [
        ("a", "json.loads + cattrs hook", lambda: tmc.CONVERTER.structure(json.loads(MEDIA_FRAME), inbound)),
        ("a2", "json.loads + cattrs generated wire classes", lambda: decode_a2(MEDIA_FRAME)),
        ("b", "cattrs orjson preconf (orjson + hook)", lambda: tmc.CONVERTER.loads(MEDIA_FRAME, inbound)),
        ("b'", "module slow path (b + checks, errors)",
         lambda: tm._structure_frame(MEDIA_FRAME, inbound, tmm.INBOUND_EVENTS)),
        ("c", "msgspec Struct + strict readers + attrs", lambda: tmf.decode_media_fast(MEDIA_FRAME)),
        ("c0", "msgspec lax, no checks (floor)", lambda: decode_c0(MEDIA_FRAME)),
        ("e", "orjson + dict + a2b_base64 + attrs", lambda: decode_e(MEDIA_FRAME)),
        ("d", "decode(): hybrid, media frame", lambda: tm.decode(MEDIA_FRAME)),
        ("d", "decode(): hybrid, mark frame (fallback)", lambda: tm.decode(MARK_FRAME)),
    ]  # fmt: skip
    for key, _, fn in decoders[:-1]:
        assert fn() == EXPECTED, key
    parts: list[tuple[str, Callable[[], Any]]] = [
        ("json.loads only", lambda: json.loads(MEDIA_FRAME)),
        ("orjson.loads only", lambda: orjson.loads(MEDIA_FRAME)),
        ("msgspec Struct decode only", lambda: tmf.MEDIA_DECODER.decode(MEDIA_FRAME)),
        ("a2b_base64 of 216 chars only", lambda: binascii.a2b_base64(EXPECTED_B64, strict_mode=True)),
        ("Media(...) attrs build only", lambda: tm.Media(**BUILD_KW)),
    ]

    print(environment())
    print(f"best / median of {repeat} runs x {number} calls; microseconds per call\n")
    print("DECODE one 20 ms PCMU media frame (160 B payload, JSON text", len(MEDIA_FRAME), "chars)")
    print(f"{'':4} {'variant':46} {'best µs':>9} {'median µs':>10}")
    for key, label, fn in decoders:
        best, median = measure(fn, repeat=repeat, number=number)
        print(f"{key:4} {label:46} {best:9.2f} {median:10.2f}")
    print("\n  components")
    for label, fn in parts:
        best, median = measure(fn, repeat=repeat, number=number)
        print(f"{'':4} {label:46} {best:9.2f} {median:10.2f}")

    print("\nENCODE outbound MediaOut -> JSON text")
    print(f"{'':4} {'variant':46} {'160 B µs':>9} {'800 B µs':>10}")
    encoders: list[tuple[str, Callable[[tm.MediaOut], str]]] = [
        ("encode(): string assembly (module)", tm.encode),
        ("cattrs converter unstructure + orjson", encode_converter),
        ("dict + orjson.dumps", encode_orjson_dict),
        ("dict + stdlib json.dumps", encode_stdlib),
        ("msgspec Struct encode (native base64)", encode_msgspec),
    ]
    for label, encoder in encoders:
        small, large = tm.MediaOut(PAYLOAD_160), tm.MediaOut(PAYLOAD_800)
        assert tm.decode_outbound(encoder(small)) == small, label
        best_small, _ = measure(lambda: encoder(small), repeat=repeat, number=number)
        best_large, _ = measure(lambda: encoder(large), repeat=repeat, number=number)
        print(f"{'':4} {label:46} {best_small:9.2f} {best_large:10.2f}")

    print("\nEMULATOR side (per frame, 160 B payload)")
    media_out_text = tm.encode(tm.MediaOut(PAYLOAD_160))
    emulator: list[tuple[str, Callable[[], Any]]] = [
        ("encode_inbound(Media)", lambda: tm.encode_inbound(EXPECTED)),
        ("encode_inbound(Mark) (encode + re-decode check)", lambda: tm.encode_inbound(MARK)),
        ("decode_outbound(media frame)", lambda: tm.decode_outbound(media_out_text)),
    ]
    for label, fn in emulator:
        best, median = measure(fn, repeat=repeat, number=number)
        print(f"{'':4} {label:46} {best:9.2f} {median:10.2f}")


EXPECTED_B64 = base64.b64encode(PAYLOAD_160).decode()
MARK = tm.Mark(name="utt-17", stream_id="32de0dea", sequence_number=9)
BUILD_KW = attrs.asdict(EXPECTED)

if __name__ == "__main__":
    main()
