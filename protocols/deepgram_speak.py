"""Deepgram Aura text-to-speech streaming (``/v1/speak``) on the wire. Sans-I/O.

The client sends text frames (``Speak`` fragments, ``Flush`` to synthesise what is buffered,
``Clear`` for barge-in, ``Close``); the server answers with **binary** frames of raw audio in the
requested encoding (nothing to parse: hand them to the caller as they are) and a few JSON text frames
(``Metadata``, ``Flushed``, ``Cleared``, ``Warning``). Only text frames go through
:func:`decode_server`.

Same conventions as :mod:`protocols.deepgram_listen` (the shared helpers are in :mod:`protocols.jsonwire`):
one union per direction, one orjson-preconf cattrs converter with a tagged union on ``type``, strict
types, tolerant presence, unknown server types as :class:`UnknownMessage`. Unlike ``/v1/listen``,
Deepgram closes a ``/v1/speak`` socket with **1008** when a client sends an unknown control type, so
:func:`decode_client_text` errors carry ``close_code=1008``.

UNCONFIRMED upstream, so left to the emulator's configuration: whether ``Close`` flushes first or
closes at once, when ``Metadata`` is sent (we assume right after connect), what ``sequence_id``
counts, and the ``Warning`` codes.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any, Final, TypeAlias

import attrs
from cattrs.preconf.orjson import OrjsonConverter

from protocols.deepgram_close import CLOSE_NORMAL
from protocols.jsonwire import (
    UnknownMessage,
    configure_type_union,
    decode_tagged,
    encode_tagged,
    encode_unknown,
    make_strict_converter,
    omit_none_fields,
)
from protocols.querystring import (
    collect_params,
    extra_problem,
    frozen_mapping,
    join_query,
    parse_uint,
    split_query,
)
from protocols.errors import CLOSE_POLICY_VIOLATION, LocalProtocolError, RemoteProtocolError

__all__ = [
    "CLOSE_NORMAL",
    "CLOSE_UNKNOWN_CONTROL",
    "CONVERTER",
    "FLUSH_LIMIT_PER_WINDOW",
    "FLUSH_WINDOW_S",
    "SPEAK_ENCODINGS",
    "SPEAK_SAMPLE_RATES",
    "SPEAK_SERVER_DEFAULTS",
    "SPEAK_URL",
    "Clear",
    "Cleared",
    "ClientMessage",
    "Close",
    "Flush",
    "Flushed",
    "Metadata",
    "ServerMessage",
    "Speak",
    "SpeakOptions",
    "UnknownMessage",
    "WarningMessage",
    "build_speak_url",
    "decode_client_text",
    "decode_server",
    "encode_client",
    "encode_server",
    "parse_speak_query",
]

SPEAK_URL: Final = "wss://api.deepgram.com/v1/speak"

SPEAK_ENCODINGS: Final = frozenset({"linear16", "mulaw", "alaw"})
SPEAK_SAMPLE_RATES: Final = frozenset({8000, 16000, 24000, 32000, 48000})
#: mu-law and A-law only at these rates (REST schemas; assumed to hold for the WebSocket too).
_G711_SAMPLE_RATES: Final = frozenset({8000, 16000})

#: More than this many Flush per window → a Warning, and flushes are ignored until it passes.
FLUSH_LIMIT_PER_WINDOW: Final = 20
FLUSH_WINDOW_S: Final = 60.0

#: What Deepgram closes with when a client sends an unknown control type (deepgram-go-sdk#347).
CLOSE_UNKNOWN_CONTROL: Final = CLOSE_POLICY_VIOLATION


# == connection options and URL =====================================================================

@attrs.frozen
class SpeakOptions:
    """The query of a ``/v1/speak`` connection; defaults are Centralita's (telephony mu-law 8 kHz).

    ``model``, ``encoding`` and ``sample_rate`` are always written (Deepgram's defaults,
    :data:`SPEAK_SERVER_DEFAULTS`, suit no phone line); ``speed`` only when set (not supported for
    every language). ``extra`` carries other raw parameters; the WebSocket accepts ``container``
    only as ``none``, which is also what the REST endpoint needs for headerless audio.
    """

    model: str = "aura-2-celeste-es"
    encoding: str = "mulaw"
    sample_rate: int = 8000
    speed: float | None = None
    extra: Mapping[str, str] = attrs.field(
        factory=dict, converter=frozen_mapping, hash=False
    )


#: What the server assumes for parameters left out (AsyncAPI spec).
SPEAK_SERVER_DEFAULTS: Final = SpeakOptions(
    model="aura-asteria-en", encoding="linear16", sample_rate=24000, speed=None
)

_SPEAK_PARAMS: Final = frozenset(f.name for f in attrs.fields(SpeakOptions) if f.name != "extra")
_DECIMAL = re.compile(r"[0-9]{1,17}(\.[0-9]{1,17})?([eE][-+]?[0-9]{1,3})?")


def _speak_problem(o: SpeakOptions) -> str | None:
    """The first thing wrong with ``o`` as a request, or None. Shared by builder and parser."""
    if not isinstance(o.model, str) or not o.model:
        return "model must be a non-empty string"
    if o.encoding not in SPEAK_ENCODINGS:
        return f"unknown encoding {o.encoding!r} (expected one of {sorted(SPEAK_ENCODINGS)})"
    if type(o.sample_rate) is not int or o.sample_rate not in SPEAK_SAMPLE_RATES:
        return f"sample_rate must be one of {sorted(SPEAK_SAMPLE_RATES)}"
    if o.encoding in ("mulaw", "alaw") and o.sample_rate not in _G711_SAMPLE_RATES:
        return f"{o.encoding} needs sample_rate 8000 or 16000"
    if o.speed is not None:
        if type(o.speed) not in (int, float) or not (math.isfinite(o.speed) and o.speed > 0):
            return "speed must be a positive number"
    if o.extra.get("container", "none") != "none":
        return "container must be 'none' on the WebSocket"
    return extra_problem(o.extra, _SPEAK_PARAMS)


def build_speak_url(base_url: str, options: SpeakOptions) -> str:
    """The ``/v1/speak`` URL for ``options``; LocalProtocolError for an invalid combination."""
    if not isinstance(options, SpeakOptions):
        raise LocalProtocolError(f"expected SpeakOptions, got {type(options).__name__}")
    problem = _speak_problem(options)
    if problem is not None:
        raise LocalProtocolError(problem)
    pairs = [
        ("model", options.model),
        ("encoding", options.encoding),
        ("sample_rate", str(options.sample_rate)),
    ]
    if options.speed is not None:
        pairs.append(("speed", repr(float(options.speed))))
    pairs.extend(options.extra.items())
    return join_query(base_url, pairs)


def parse_speak_query(query: str | bytes) -> SpeakOptions:
    """The emulator's inverse of :func:`build_speak_url` (order-free; unknown params into ``extra``;
    missing ones take :data:`SPEAK_SERVER_DEFAULTS`).

    Raises:
        RemoteProtocolError: for anything worth an HTTP 400.
    """
    single, _, unknown = collect_params(split_query(query), _SPEAK_PARAMS, frozenset())
    values: dict[str, Any] = {}
    for name, value in single.items():
        if name in ("model", "encoding"):
            values[name] = value
        elif name == "sample_rate":
            values[name] = parse_uint(name, value)
        else:  # speed
            if _DECIMAL.fullmatch(value) is None:
                raise RemoteProtocolError(f"speed must be a decimal number, got {value[:20]!r}")
            values[name] = float(value)
    options = attrs.evolve(SPEAK_SERVER_DEFAULTS, extra=unknown, **values)
    problem = _speak_problem(options)
    if problem is not None:
        raise RemoteProtocolError(problem)
    return options


# == client → server ================================================================================

@attrs.frozen
class Speak:
    """Append ``text`` to the server's buffer (any fragment, e.g. LLM tokens)."""

    text: str


@attrs.frozen
class Flush:
    """Synthesise what is buffered; answered by audio frames, then ``Flushed``. Max 20 per minute."""


@attrs.frozen
class Clear:
    """Barge-in: drop buffered text and audio; answered by ``Cleared``. Drop audio until then."""


@attrs.frozen
class Close:
    """End the session (server closes 1000). Flush and await ``Flushed`` first to keep the tail."""


ClientMessage: TypeAlias = Speak | Flush | Clear | Close

_CLIENT_TAGS: Final[Mapping[type, str]] = {
    Speak: "Speak", Flush: "Flush", Clear: "Clear", Close: "Close",
}


# == server → client (text frames) ==================================================================

@attrs.frozen
class Metadata:
    """Connection metadata, presumably sent right after connect (UNCONFIRMED); all fields tolerated
    when absent."""

    request_id: str = ""
    model_name: str = ""
    model_version: str = ""
    model_uuid: str = ""
    additional_model_uuids: tuple[str, ...] | None = None


@attrs.frozen
class Flushed:
    """All audio for a Flush has been sent. What ``sequence_id`` counts is UNCONFIRMED."""

    sequence_id: int | None = None


@attrs.frozen
class Cleared:
    """Reply to Clear: no audio from before the Clear follows."""

    sequence_id: int | None = None


@attrs.frozen
class WarningMessage:
    """The ``Warning`` text message (e.g. flush rate exceeded); codes are UNCONFIRMED."""

    description: str = ""
    code: str = ""


_KnownServerMessage: TypeAlias = Metadata | Flushed | Cleared | WarningMessage
ServerMessage: TypeAlias = Metadata | Flushed | Cleared | WarningMessage | UnknownMessage

_SERVER_TAGS: Final[Mapping[type, str]] = {
    Metadata: "Metadata", Flushed: "Flushed", Cleared: "Cleared", WarningMessage: "Warning",
}


def _build_converter() -> OrjsonConverter:
    converter = make_strict_converter()
    omit_none_fields(converter, Metadata, "additional_model_uuids")
    omit_none_fields(converter, Flushed, "sequence_id")
    omit_none_fields(converter, Cleared, "sequence_id")
    configure_type_union(converter, _KnownServerMessage, _SERVER_TAGS, unknown=True)
    configure_type_union(converter, ClientMessage, _CLIENT_TAGS)
    return converter


#: The one converter for this module's messages.
CONVERTER: Final = _build_converter()


def decode_server(text: str | bytes) -> ServerMessage:
    """One server **text** frame → a message (binary frames are audio: never pass them here)."""
    result: ServerMessage = decode_tagged(
        CONVERTER, text, _KnownServerMessage, what="Deepgram speak message", label="Deepgram speak",
        close_code=CLOSE_POLICY_VIOLATION,
    )
    return result


def encode_server(msg: ServerMessage) -> str:
    """A server message as the emulator's text frame (``type`` first)."""
    if isinstance(msg, UnknownMessage):
        return encode_unknown(msg)
    return encode_tagged(CONVERTER, msg, _SERVER_TAGS, kind="Deepgram speak server message")


def encode_client(msg: ClientMessage) -> str:
    """A client message as the text frame to send."""
    if type(msg) is Speak and not isinstance(msg.text, str):
        raise LocalProtocolError("Speak.text must be a string")
    return encode_tagged(CONVERTER, msg, _CLIENT_TAGS, kind="Deepgram speak client message")


def decode_client_text(text: str | bytes) -> ClientMessage:
    """The emulator's reading of a client text frame.

    Raises:
        RemoteProtocolError: with ``close_code=1008`` (what Deepgram closes with) for bad JSON, no
            ``type``, an unknown ``type`` or a bad field (``Speak`` without a string ``text``).
    """
    result: ClientMessage = decode_tagged(
        CONVERTER, text, ClientMessage, what="Deepgram speak control message",
        label="Deepgram speak", close_code=CLOSE_UNKNOWN_CONTROL, known_tags=_CLIENT_TAGS.values(),
    )
    return result
