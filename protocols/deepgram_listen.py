"""Deepgram live speech-to-text (``/v1/listen``) on the wire: messages, codecs, URL, auth, close codes.

Sans-I/O, after h11/wsproto: this module turns text frames into frozen attrs messages and back, builds
and parses the handshake's query string and ``Authorization`` header, and says what a close frame
means for the link. It opens nothing; ``actors/deepgram_link.py`` (client) and the Deepgram emulator in
``bench/`` (server) drive it. Audio travels as binary frames of raw bytes and is not parsed here; note
that an *empty* binary frame means CloseStream to the server, so a client must never send one.

One union per direction, one cattrs converter (orjson preconf) built at import with a tagged union keyed
on the wire's own ``type`` field. Decoding is strict about types (a string is not a number, ``"false"``
is not a boolean) and tolerant about presence: fields the fact sheet marks optional or UNCONFIRMED have
defaults, unknown fields are ignored, and an unknown ``type`` becomes :class:`UnknownMessage`, which a
client must skip. Encoders always write the full documented shape, so the emulator speaks like Deepgram.

Every error leaving this module is a :class:`~protocols.errors.RemoteProtocolError` (the peer sent
garbage) or a :class:`~protocols.errors.LocalProtocolError` (we misused a builder).

The JSON helpers marked "shared" are also used by :mod:`protocols.deepgram_speak`.
"""

from __future__ import annotations

import enum
import math
import re
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final, Literal, TypeAlias
from urllib.parse import parse_qsl, quote, urlencode, urlsplit

import attrs
import cattrs
import orjson
from cattrs.errors import IterableValidationError, IterableValidationNote
from cattrs.gen import make_dict_structure_fn, make_dict_unstructure_fn, override
from cattrs.preconf.orjson import OrjsonConverter
from cattrs.preconf.orjson import make_converter as _make_orjson_converter
from cattrs.strategies import configure_tagged_union

from protocols.errors import (
    CLOSE_POLICY_VIOLATION,
    LocalProtocolError,
    RemoteProtocolError,
)

__all__ = [
    "CLOSE_ABNORMAL",
    "CLOSE_AFTER_CLOSE_STREAM",
    "CLOSE_DATA_0000",
    "CLOSE_GOING_AWAY",
    "CLOSE_INTERNAL_ERROR",
    "CLOSE_NET_0000",
    "CLOSE_NET_0001",
    "CLOSE_NORMAL",
    "CONVERTER",
    "DATA_0000_REASON",
    "IDLE_TIMEOUT_S",
    "KEEPALIVE_INTERVAL_S",
    "KEEPALIVE_TEXT",
    "LISTEN_ENCODINGS",
    "LISTEN_SERVER_DEFAULTS",
    "LISTEN_URL",
    "NET_0000_REASON",
    "NET_0001_REASON",
    "Alternative",
    "Channel",
    "ClientControl",
    "CloseStream",
    "CloseVerdict",
    "Credential",
    "ErrorMessage",
    "Finalize",
    "KeepAlive",
    "ListenOptions",
    "Metadata",
    "ModelInfo",
    "Recovery",
    "Results",
    "ResultsMetadata",
    "ServerClose",
    "ServerMessage",
    "SpeechStarted",
    "UnknownMessage",
    "UtteranceEnd",
    "Word",
    "auth_header",
    "build_listen_url",
    "classify_close",
    "classify_handshake",
    "close_error_code",
    "decode_client_text",
    "decode_server",
    "encode_client",
    "encode_server",
    "parse_auth",
    "parse_listen_query",
    "schema_error",
    "shifted",
]

LISTEN_URL: Final = "wss://api.deepgram.com/v1/listen"

#: Encodings ``/v1/listen`` accepts for raw audio (AsyncAPI spec). Telephony uses ``mulaw`` at 8 kHz.
LISTEN_ENCODINGS: Final = frozenset(
    {"linear16", "linear32", "flac", "alaw", "mulaw", "amr-nb", "amr-wb", "opus", "ogg-opus",
     "speex", "g729"}
)

#: The server closes with 1011/NET-0001 after this long without any frame from the client.
IDLE_TIMEOUT_S: Final = 10.0
#: Deepgram recommends a KeepAlive every 3-5 s while no audio flows.
KEEPALIVE_INTERVAL_S: Final = 4.0

# -- close codes ------------------------------------------------------------------------------------

CLOSE_NORMAL: Final = 1000
CLOSE_GOING_AWAY: Final = 1001
#: Never sent on the wire: what a WebSocket library reports when TCP dropped without a close frame.
CLOSE_ABNORMAL: Final = 1006
CLOSE_INTERNAL_ERROR: Final = 1011
CLOSE_SERVICE_RESTART: Final = 1012
CLOSE_TRY_AGAIN_LATER: Final = 1013

#: The reason text users have seen with close 1011 after 10 s without audio or text (NET-0001).
NET_0001_REASON: Final = (
    "Deepgram did not receive audio data or a text message within the timeout window. "
    "See https://dpgr.am/net0001"
)
#: UNCONFIRMED wording (only the code and its meaning are documented): the server sent no text frame
#: within its window. Written in the same style as NET-0001 so :func:`close_error_code` finds it.
NET_0000_REASON: Final = (
    "Deepgram did not provide a response message within the timeout window. "
    "See https://dpgr.am/net0000"
)
#: UNCONFIRMED wording: the payload could not be decoded as audio in the declared format.
DATA_0000_REASON: Final = (
    "Deepgram could not decode the audio: it is not audio data or not in the declared encoding. "
    "See https://dpgr.am/data0000"
)


@attrs.frozen
class ServerClose:
    """A close frame Deepgram sends: what the emulator puts on the wire, and what tests expect."""

    code: int
    reason: str = ""


#: After CloseStream: remaining Results, then Metadata, then this.
CLOSE_AFTER_CLOSE_STREAM: Final = ServerClose(CLOSE_NORMAL, "")
CLOSE_NET_0001: Final = ServerClose(CLOSE_INTERNAL_ERROR, NET_0001_REASON)
CLOSE_NET_0000: Final = ServerClose(CLOSE_INTERNAL_ERROR, NET_0000_REASON)
#: 1008 per the prototype spec; a 2021 document says 1002 (UNCONFIRMED). :func:`classify_close`
#: recognises DATA-0000 by its reason, whatever the code.
CLOSE_DATA_0000: Final = ServerClose(CLOSE_POLICY_VIOLATION, DATA_0000_REASON)


# == shared JSON machinery (also used by deepgram_speak) ============================================

_REASON_LIMIT_CHARS: Final = 300  # characters of validation detail kept in an error's reason


def _strict_str(value: object, _: object) -> str:
    if type(value) is str:
        return value
    raise TypeError(f"expected a string, got {type(value).__name__}")


def _strict_bool(value: object, _: object) -> bool:
    if type(value) is bool:
        return value
    raise TypeError(f"expected true or false, got {type(value).__name__}")


def _strict_int(value: object, _: object) -> int:
    # bool is an int in Python but not a number on the wire; orjson turns integers beyond 64 bits
    # into floats, which land here and are refused.
    if type(value) is int:
        return value
    raise TypeError(f"expected an integer, got {type(value).__name__}")


def _strict_float(value: object, _: object) -> float:
    if type(value) is float:
        result = value
    elif type(value) is int:
        result = float(value)  # may raise OverflowError for huge ints from the stdlib parser
    else:
        raise TypeError(f"expected a number, got {type(value).__name__}")
    if not math.isfinite(result):
        raise ValueError("expected a finite number")
    return result


def _is_homogeneous_tuple(tp: Any) -> bool:
    args = typing.get_args(tp)
    return typing.get_origin(tp) is tuple and len(args) == 2 and args[1] is Ellipsis


def _homogeneous_tuple_hook(tp: Any, converter: cattrs.Converter) -> Callable[[Any, Any], tuple[Any, ...]]:
    item_type = typing.get_args(tp)[0]
    item_hook = converter.get_structure_hook(item_type)

    def structure(value: Any, _: Any) -> tuple[Any, ...]:
        # Without this check cattrs would happily iterate a string or an object's keys.
        if type(value) is not list:
            raise TypeError(f"expected an array, got {type(value).__name__}")
        items: list[Any] = []
        errors: list[Exception] = []
        for index, item in enumerate(value):
            try:
                items.append(item_hook(item, item_type))
            except Exception as exc:  # collected into cattrs' group, as its own hooks do
                note = IterableValidationNote(f"Structuring {tp} @ index {index}", index, item_type)
                exc.add_note(note)
                errors.append(exc)
        if errors:
            raise IterableValidationError(f"While structuring {tp!r}", errors, tp)
        return tuple(items)

    return structure


def _object_hook(cl: type, converter: cattrs.Converter) -> Callable[[Any, Any], Any]:
    generated: Callable[[Any, Any], Any] = make_dict_structure_fn(cl, converter)

    def structure(value: Any, _: Any) -> Any:
        # A message whose fields all have defaults would otherwise accept ``[]`` or ``"x"``.
        if type(value) is not dict:
            raise TypeError(f"expected an object, got {type(value).__name__}")
        return generated(value, cl)

    return structure


def make_strict_converter() -> OrjsonConverter:
    """Shared: an orjson-preconf converter that refuses JSON values of the wrong type.

    cattrs' defaults coerce (``bool("false") is True``, ``float("1.5")``, a string iterated as a
    list, ``[]`` read as an all-defaults object); a protocol parser must not, so primitives,
    homogeneous tuples and attrs classes get strict hooks.
    Detailed validation stays on: its error groups carry the JSON path of every problem, which
    :func:`structure_or_raise` turns into a one-line reason.
    """
    converter = _make_orjson_converter(detailed_validation=True, forbid_extra_keys=False)
    converter.register_structure_hook(str, _strict_str)
    converter.register_structure_hook(bool, _strict_bool)
    converter.register_structure_hook(int, _strict_int)
    converter.register_structure_hook(float, _strict_float)
    converter.register_structure_hook_factory(_is_homogeneous_tuple, _homogeneous_tuple_hook)
    converter.register_structure_hook_factory(attrs.has, _object_hook)
    return converter


def omit_none_fields(converter: cattrs.Converter, cls: type, *names: str) -> None:
    """Shared: unstructure ``cls`` leaving out the named optional fields while they are ``None``."""
    overrides: dict[str, Any] = {name: override(omit_if_default=True) for name in names}
    converter.register_unstructure_hook(cls, make_dict_unstructure_fn(cls, converter, **overrides))


def load_object(text: str | bytes, *, what: str, close_code: int) -> dict[str, Any]:
    """Shared: parse one JSON text frame that must hold an object; garbage → RemoteProtocolError."""
    if not isinstance(text, str | bytes | bytearray | memoryview):
        raise LocalProtocolError(f"{what}: expected str or bytes, got {type(text).__name__}")
    try:
        obj = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise RemoteProtocolError(f"{what}: invalid JSON ({exc})", close_code=close_code) from None
    if type(obj) is not dict:
        raise RemoteProtocolError(
            f"{what}: expected a JSON object, got {type(obj).__name__}", close_code=close_code
        )
    return obj


def message_tag(obj: Mapping[str, Any], *, what: str, close_code: int) -> str:
    """Shared: the ``type`` field of a decoded object, which must be a string."""
    tag = obj.get("type")
    if type(tag) is not str:
        detail = "has no 'type'" if tag is None else f"has a non-string 'type' ({type(tag).__name__})"
        raise RemoteProtocolError(f"{what}: message {detail}", close_code=close_code)
    return tag


def structure_or_raise(
    converter: cattrs.Converter, obj: Any, cl: Any, *, what: str, close_code: int
) -> Any:
    """Shared: ``converter.structure`` with every failure turned into one RemoteProtocolError."""
    try:
        return converter.structure(obj, cl)
    except cattrs.BaseValidationError as exc:
        detail = "; ".join(cattrs.transform_error(exc))
    except (KeyError, TypeError, ValueError, AttributeError, OverflowError, RecursionError) as exc:
        detail = f"{type(exc).__name__}: {exc}"
    if len(detail) > _REASON_LIMIT_CHARS:
        detail = detail[: _REASON_LIMIT_CHARS - 3] + "..."
    raise RemoteProtocolError(f"{what}: {detail}", close_code=close_code)


def dump_tagged(converter: cattrs.Converter, msg: Any, tag: str) -> str:
    """Shared: ``{"type": tag, ...fields}`` as compact JSON text."""
    try:
        body = converter.unstructure(msg, type(msg))
        return orjson.dumps({"type": tag, **body}).decode()
    except (TypeError, ValueError) as exc:  # orjson.JSONEncodeError is a TypeError
        raise LocalProtocolError(f"cannot encode {type(msg).__name__}: {exc}") from None


@attrs.frozen
class UnknownMessage:
    """A server message whose ``type`` this module does not know. Clients must skip it, never fail.

    ``raw`` is the whole decoded object, ``type`` included. Shared with deepgram_speak.
    """

    type: str
    raw: Mapping[str, Any] = attrs.field(hash=False)


def structure_unknown(obj: Mapping[str, Any], _: Any) -> UnknownMessage:
    """Shared: the tagged union's fallback hook (the tag was checked by :func:`message_tag`)."""
    return UnknownMessage(type=obj["type"], raw=obj)


def encode_unknown(msg: UnknownMessage) -> str:
    """Shared: put an :class:`UnknownMessage` back on the wire, ``type`` first."""
    body = {key: value for key, value in msg.raw.items() if key != "type"}
    try:
        return orjson.dumps({"type": msg.type, **body}).decode()
    except TypeError as exc:
        raise LocalProtocolError(f"cannot encode UnknownMessage: {exc}") from None


# == connection options and URL =====================================================================

def _to_str_tuple(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        raise LocalProtocolError("expected a sequence of strings, not one string")
    try:
        return tuple(value)
    except TypeError:
        raise LocalProtocolError(f"expected a sequence of strings, got {type(value).__name__}") from None


def frozen_mapping(value: Any) -> Mapping[str, str]:
    """Shared: attrs converter giving an options class a read-only copy of a mapping."""
    try:
        return types.MappingProxyType(dict(value))
    except (TypeError, ValueError):
        raise LocalProtocolError(f"expected a mapping, got {type(value).__name__}") from None


@attrs.frozen
class ListenOptions:
    """The query parameters of a ``/v1/listen`` connection; defaults are Centralita's choices.

    Every typed field is written to the URL explicitly (Deepgram's own defaults differ: see
    :data:`LISTEN_SERVER_DEFAULTS`), except ``model``/``encoding``/``sample_rate``/
    ``utterance_end_ms`` when ``None`` and ``no_delay`` when false (``no_delay`` is not in the
    published spec, so it goes out only when asked for). ``endpointing`` is milliseconds of
    silence before ``speech_final``, or ``False`` to disable it. ``extra`` carries any other raw
    parameter (``multichannel``, ``diarize``, ``language_hint`` ...); it may not repeat a typed one.
    """

    model: str | None = "nova-3"
    language: str = "es"
    encoding: str | None = "mulaw"
    sample_rate: int | None = 8000
    channels: int = 1
    interim_results: bool = True
    endpointing: int | Literal[False] = 200
    utterance_end_ms: int | None = 1000
    vad_events: bool = True
    smart_format: bool = False
    punctuate: bool = False
    no_delay: bool = False
    keyterm: tuple[str, ...] = attrs.field(default=(), converter=_to_str_tuple)
    extra: Mapping[str, str] = attrs.field(
        factory=dict, converter=frozen_mapping, hash=False
    )


#: What the server assumes for each parameter left out of the URL (AsyncAPI spec), as parsed by
#: :func:`parse_listen_query`. ``model`` has no documented default.
LISTEN_SERVER_DEFAULTS: Final = ListenOptions(
    model=None, language="en", encoding=None, sample_rate=None, channels=1,
    interim_results=False, endpointing=10, utterance_end_ms=None, vad_events=False,
    smart_format=False, punctuate=False, no_delay=False,
)

_LISTEN_PARAMS: Final = frozenset(
    f.name for f in attrs.fields(ListenOptions) if f.name != "extra"
)
_MAX_QUERY_FIELDS: Final = 200
_DIGITS = re.compile(r"[0-9]{1,9}")


def _is_int(value: object) -> bool:
    return type(value) is int


def _nonempty_str(value: object) -> bool:
    return isinstance(value, str) and value != ""


def _listen_problem(options: ListenOptions) -> str | None:
    """The first thing wrong with ``options`` as a request, or None. Shared by builder and parser."""
    o = options
    if o.model is not None and not _nonempty_str(o.model):
        return "model must be a non-empty string"
    if not _nonempty_str(o.language):
        return "language must be a non-empty string"
    if o.encoding is not None and o.encoding not in LISTEN_ENCODINGS:
        return f"unknown encoding {o.encoding!r}"
    if o.sample_rate is not None and not (_is_int(o.sample_rate) and o.sample_rate > 0):
        return "sample_rate must be a positive integer"
    if o.encoding is not None and o.sample_rate is None:
        return "sample_rate is required when encoding is given"
    if not (_is_int(o.channels) and o.channels >= 1):
        return "channels must be an integer >= 1"
    if o.endpointing is not False and not (_is_int(o.endpointing) and o.endpointing >= 0):
        return "endpointing must be a non-negative integer (ms) or False"
    if o.utterance_end_ms is not None:
        if not (_is_int(o.utterance_end_ms) and o.utterance_end_ms > 0):
            return "utterance_end_ms must be a positive integer"
    for name in ("interim_results", "vad_events", "smart_format", "punctuate", "no_delay"):
        if type(getattr(o, name)) is not bool:
            return f"{name} must be a bool"
    if not all(_nonempty_str(term) for term in o.keyterm):
        return "every keyterm must be a non-empty string"
    return extra_problem(o.extra, _LISTEN_PARAMS)


def extra_problem(extra: Mapping[str, str], typed: frozenset[str]) -> str | None:
    """Shared: what is wrong with an options class's ``extra`` parameters, or None."""
    for key, value in extra.items():
        if not _nonempty_str(key) or not isinstance(value, str):
            return "extra must map non-empty strings to strings"
        if key in typed:
            return f"extra repeats the typed parameter {key!r}"
    return None


def _bool_text(value: bool) -> str:
    return "true" if value else "false"


def _listen_pairs(o: ListenOptions) -> list[tuple[str, str]]:
    pairs: list[tuple[str, str]] = []
    if o.model is not None:
        pairs.append(("model", o.model))
    pairs.append(("language", o.language))
    if o.encoding is not None:
        pairs.append(("encoding", o.encoding))
    if o.sample_rate is not None:
        pairs.append(("sample_rate", str(o.sample_rate)))
    pairs.append(("channels", str(o.channels)))
    pairs.append(("interim_results", _bool_text(o.interim_results)))
    pairs.append(("endpointing", "false" if o.endpointing is False else str(o.endpointing)))
    if o.utterance_end_ms is not None:
        pairs.append(("utterance_end_ms", str(o.utterance_end_ms)))
    pairs.append(("vad_events", _bool_text(o.vad_events)))
    pairs.append(("smart_format", _bool_text(o.smart_format)))
    pairs.append(("punctuate", _bool_text(o.punctuate)))
    if o.no_delay:
        pairs.append(("no_delay", "true"))
    pairs.extend(("keyterm", term) for term in o.keyterm)
    pairs.extend(o.extra.items())
    return pairs


def join_query(base_url: str, pairs: Sequence[tuple[str, str]]) -> str:
    """Shared: ``base_url`` plus the encoded pairs (``%20`` for spaces, as httpx writes them)."""
    if not isinstance(base_url, str) or not base_url:
        raise LocalProtocolError("base_url must be a non-empty string")
    if "#" in base_url:
        raise LocalProtocolError("base_url must not contain a fragment")
    query = urlencode(pairs, quote_via=quote)
    if not query:
        return base_url
    if "?" not in base_url:
        return f"{base_url}?{query}"
    if base_url.endswith(("?", "&")):
        return base_url + query
    return f"{base_url}&{query}"


def build_listen_url(base_url: str, options: ListenOptions) -> str:
    """The WebSocket URL for ``options``, e.g. ``build_listen_url(LISTEN_URL, ListenOptions())``.

    Booleans are written lowercase ``true``/``false``. Raises LocalProtocolError for an invalid
    combination: ``encoding`` without ``sample_rate``, ``utterance_end_ms`` without
    ``interim_results``, an unknown encoding, a wrongly typed field, or ``extra`` repeating a
    typed parameter.
    """
    if not isinstance(options, ListenOptions):
        raise LocalProtocolError(f"expected ListenOptions, got {type(options).__name__}")
    problem = _listen_problem(options)
    if problem is None and options.utterance_end_ms is not None and not options.interim_results:
        problem = "utterance_end_ms needs interim_results=True"
    if problem is not None:
        raise LocalProtocolError(problem)
    return join_query(base_url, _listen_pairs(options))


def split_query(query: str | bytes, *, close_code: int = CLOSE_POLICY_VIOLATION) -> list[tuple[str, str]]:
    """Shared: the decoded ``(name, value)`` pairs of a query string, a path or a whole URL."""
    try:
        text = query.decode("ascii") if isinstance(query, bytes | bytearray) else query
        if not isinstance(text, str):
            raise LocalProtocolError(f"expected a query string, got {type(query).__name__}")
        if text.startswith("/") or "://" in text:
            text = urlsplit(text).query
        elif text.startswith("?"):
            text = text[1:]
        return parse_qsl(
            text, keep_blank_values=True, errors="strict", max_num_fields=_MAX_QUERY_FIELDS
        )
    except ValueError as exc:  # bad percent-encoding, non-ASCII bytes, too many fields
        raise RemoteProtocolError(f"malformed query string: {exc}", close_code=close_code) from None


def parse_bool(name: str, value: str) -> bool:
    """Shared: a query flag, exactly ``true`` or ``false`` (the SDK once sent ``True``: a bug)."""
    if value == "true":
        return True
    if value == "false":
        return False
    raise RemoteProtocolError(f"{name} must be true or false, got {value[:20]!r}")


def parse_uint(name: str, value: str) -> int:
    """Shared: a query integer of plain digits (``int()`` alone would take ``+8_000``)."""
    if _DIGITS.fullmatch(value) is None:
        raise RemoteProtocolError(f"{name} must be a whole number, got {value[:20]!r}")
    return int(value)


def collect_params(
    pairs: Sequence[tuple[str, str]], known: frozenset[str], repeatable: frozenset[str]
) -> tuple[dict[str, str], dict[str, list[str]], dict[str, str]]:
    """Shared: split pairs into known single-valued, known repeatable and unknown parameters.

    A known parameter given twice is refused (a client bug worth a 400); for an unknown one the
    last value wins, since it is only carried along.
    """
    single: dict[str, str] = {}
    multi: dict[str, list[str]] = {name: [] for name in repeatable}
    unknown: dict[str, str] = {}
    for name, value in pairs:
        if name in repeatable:
            multi[name].append(value)
        elif name in known:
            if name in single:
                raise RemoteProtocolError(f"parameter {name!r} given more than once")
            single[name] = value
        elif name:
            unknown[name] = value
    return single, multi, unknown


def parse_listen_query(
    query: str | bytes,
    *,
    require_model: bool = True,
    require_interim_for_utterance_end: bool = True,
    min_utterance_end_ms: int = 0,
) -> ListenOptions:
    """The emulator's inverse of :func:`build_listen_url`: what did the client ask for?

    Accepts a bare query string, one starting with ``?``, a request path or a whole URL. Parameter
    order does not matter; parameters left out take :data:`LISTEN_SERVER_DEFAULTS`; unknown ones
    are kept in ``extra`` (never refused). ``parse_listen_query(build_listen_url(u, o)) == o`` for
    every valid ``o``.

    Deepgram's exact refusals are UNCONFIRMED, hence the switches: ``require_model`` refuses a
    missing ``model``; ``require_interim_for_utterance_end`` refuses ``utterance_end_ms`` without
    ``interim_results=true``; ``min_utterance_end_ms=1000`` refuses smaller values, as a support
    answer claimed Deepgram does.

    Raises:
        RemoteProtocolError: for anything the emulator should answer with HTTP 400; the reason
            says what.
    """
    single, multi, unknown = collect_params(
        split_query(query), _LISTEN_PARAMS - {"keyterm"}, frozenset({"keyterm"})
    )
    d = LISTEN_SERVER_DEFAULTS
    values: dict[str, Any] = {}
    for name, value in single.items():
        if name in ("model", "language", "encoding"):
            if not value:
                raise RemoteProtocolError(f"{name} must not be empty")
            values[name] = value
        elif name in ("sample_rate", "channels", "utterance_end_ms"):
            values[name] = parse_uint(name, value)
        elif name == "endpointing":
            values[name] = False if value == "false" else parse_uint(name, value)
        else:
            values[name] = parse_bool(name, value)
    options = attrs.evolve(d, keyterm=tuple(multi["keyterm"]), extra=unknown, **values)
    if require_model and options.model is None:
        raise RemoteProtocolError("model is required")
    problem = _listen_problem(options)
    if problem is not None:
        raise RemoteProtocolError(problem)
    if options.utterance_end_ms is not None:
        if require_interim_for_utterance_end and not options.interim_results:
            raise RemoteProtocolError("utterance_end_ms needs interim_results=true")
        if options.utterance_end_ms < min_utterance_end_ms:
            raise RemoteProtocolError(f"utterance_end_ms must be at least {min_utterance_end_ms}")
    return options


# == authentication =================================================================================

AuthScheme: TypeAlias = Literal["token", "bearer"]
_SCHEMES: Final[Mapping[str, AuthScheme]] = {"token": "token", "bearer": "bearer"}
_CREDENTIAL = re.compile(r"[\x21-\x7e]+")  # visible ASCII, no spaces: a key or a JWT


def auth_header(api_key: str, *, scheme: Literal["Token", "Bearer"] = "Token") -> tuple[bytes, bytes]:
    """``(b"Authorization", b"Token <key>")`` for trio-websocket's ``extra_headers``.

    Use ``scheme="Bearer"`` for a temporary JWT. Raises LocalProtocolError for an empty key or one
    holding spaces or control characters (they would break or inject header lines).
    """
    if scheme not in ("Token", "Bearer"):
        raise LocalProtocolError("scheme must be 'Token' or 'Bearer'")
    if not isinstance(api_key, str) or _CREDENTIAL.fullmatch(api_key) is None:
        raise LocalProtocolError("API key must be non-empty visible ASCII without spaces")
    return b"Authorization", f"{scheme} {api_key}".encode("ascii")


@attrs.frozen
class Credential:
    """What a client presented. ``subprotocol`` is the one the server must select (browser style)."""

    scheme: AuthScheme
    secret: str = attrs.field(repr=False)
    subprotocol: str | None = None


def parse_auth(
    authorization: str | bytes | None = None, subprotocols: Sequence[str] = ()
) -> Credential:
    """The emulator's reading of a handshake's credentials (it answers failures with HTTP 401).

    Accepts an ``Authorization`` header ``Token <key>`` or ``Bearer <jwt>`` (scheme in any case: the
    SDK writes ``bearer``), else the subprotocol pair ``["token", <key>]`` (``["bearer", <jwt>]``
    is accepted too, though UNCONFIRMED). The header wins when both are present. Reasons never
    contain the secret.
    """
    if authorization is not None:
        try:
            text = (
                authorization.decode("ascii")
                if isinstance(authorization, bytes | bytearray)
                else authorization
            )
            if not isinstance(text, str):
                raise TypeError
        except (UnicodeDecodeError, TypeError):
            raise RemoteProtocolError(
                "Authorization header is not ASCII text", close_code=CLOSE_POLICY_VIOLATION
            ) from None
        scheme_text, _, secret = text.strip().partition(" ")
        scheme = _SCHEMES.get(scheme_text.lower())
        secret = secret.strip()
        if scheme is None:
            raise RemoteProtocolError(
                "Authorization scheme must be Token or Bearer", close_code=CLOSE_POLICY_VIOLATION
            )
        if _CREDENTIAL.fullmatch(secret) is None:
            raise RemoteProtocolError(
                "Authorization credential is empty or malformed", close_code=CLOSE_POLICY_VIOLATION
            )
        return Credential(scheme=scheme, secret=secret)
    offered = [p for p in subprotocols if isinstance(p, str)]
    for index, name in enumerate(offered):
        scheme = _SCHEMES.get(name.lower())
        if scheme is None:
            continue
        if index + 1 < len(offered) and _CREDENTIAL.fullmatch(offered[index + 1]):
            return Credential(scheme=scheme, secret=offered[index + 1], subprotocol=name)
        break
    raise RemoteProtocolError("no credentials presented", close_code=CLOSE_POLICY_VIOLATION)


# == server → client messages =======================================================================

@attrs.frozen
class Word:
    """One recognised word. Times are seconds of audio since the connection's stream start."""

    word: str
    start: float
    end: float
    confidence: float = 0.0
    punctuated_word: str | None = None
    speaker: int | None = None
    language: str | None = None


@attrs.frozen
class Alternative:
    transcript: str
    confidence: float = 0.0
    words: tuple[Word, ...] = ()
    languages: tuple[str, ...] | None = None


@attrs.frozen
class Channel:
    alternatives: tuple[Alternative, ...] = ()


@attrs.frozen
class ModelInfo:
    name: str = ""
    version: str = ""
    arch: str = ""


@attrs.frozen
class ResultsMetadata:
    """Per-result metadata; defaults only so a reply lacking it is not fatal (the spec requires it)."""

    request_id: str = ""
    model_info: ModelInfo = ModelInfo()
    model_uuid: str = ""


@attrs.frozen(kw_only=True)
class Results:
    """A transcript for ``start .. start+duration``: interim (``is_final`` false) or final.

    ``speech_final`` marks a final followed by ``endpointing`` ms of silence; ``from_finalize`` a
    final produced by a Finalize (absent in older servers: False). ``channel_index`` is
    ``(index, total)``.
    """

    channel_index: tuple[int, ...] = (0, 1)
    start: float
    duration: float
    is_final: bool = False
    speech_final: bool = False
    from_finalize: bool = False
    channel: Channel
    metadata: ResultsMetadata = ResultsMetadata()

    @property
    def transcript(self) -> str:
        """The first alternative's transcript ("" when there is none)."""
        alternatives = self.channel.alternatives
        return alternatives[0].transcript if alternatives else ""

    @property
    def end(self) -> float:
        return self.start + self.duration

    def shifted(self, offset_s: float) -> Results:
        """The same result with ``start`` and every word's ``start``/``end`` moved by ``offset_s``.

        A new connection counts audio time from 0 again, so the link adds the call time at which
        the connection began.
        """
        alternatives = tuple(
            attrs.evolve(
                alt,
                words=tuple(
                    attrs.evolve(w, start=w.start + offset_s, end=w.end + offset_s)
                    for w in alt.words
                ),
            )
            for alt in self.channel.alternatives
        )
        return attrs.evolve(
            self, start=self.start + offset_s, channel=Channel(alternatives=alternatives)
        )


@attrs.frozen(kw_only=True)
class Metadata:
    """The session summary sent after the last Results when the stream ends (CloseStream).

    The optional fields are only modelled by older SDKs; all are tolerated when absent.
    """

    transaction_key: str = "deprecated"
    request_id: str
    sha256: str = ""
    created: str = ""
    duration: float = 0.0
    channels: int = 0
    models: tuple[str, ...] | None = None
    model_info: Mapping[str, ModelInfo] | None = attrs.field(default=None, hash=False)
    extra: Mapping[str, Any] | None = attrs.field(default=None, hash=False)


@attrs.frozen
class UtteranceEnd:
    """No new word for ``utterance_end_ms``; ``last_word_end`` is the last final word's end (s)."""

    channel: tuple[int, ...] = (0, 1)
    last_word_end: float = 0.0

    def shifted(self, offset_s: float) -> UtteranceEnd:
        return attrs.evolve(self, last_word_end=self.last_word_end + offset_s)


@attrs.frozen
class SpeechStarted:
    """The server's VAD heard speech begin at ``timestamp`` (s); needs ``vad_events=true``."""

    channel: tuple[int, ...] = (0, 1)
    timestamp: float = 0.0

    def shifted(self, offset_s: float) -> SpeechStarted:
        return attrs.evolve(self, timestamp=self.timestamp + offset_s)


@attrs.frozen
class ErrorMessage:
    """The ``Error`` text message. ``variant`` is e.g. ``SchemaError`` (a client text frame could not
    be parsed; ``message`` echoes it) or ``Closing`` (sent before a fatal close; UNCONFIRMED).
    ``code`` is deprecated upstream. A fatal close may come with or without one of these.
    """

    variant: str | None = None
    description: str | None = None
    message: str | None = None
    code: str | None = None


_KnownServerMessage: TypeAlias = Results | Metadata | UtteranceEnd | SpeechStarted | ErrorMessage
ServerMessage: TypeAlias = (
    Results | Metadata | UtteranceEnd | SpeechStarted | ErrorMessage | UnknownMessage
)

_SERVER_TAGS: Final[Mapping[type, str]] = {
    Results: "Results",
    Metadata: "Metadata",
    UtteranceEnd: "UtteranceEnd",
    SpeechStarted: "SpeechStarted",
    ErrorMessage: "Error",
}


# == client → server control messages ===============================================================

@attrs.frozen
class KeepAlive:
    """Keeps the connection open while no audio flows (send every 3-5 s; no reply)."""


@attrs.frozen
class Finalize:
    """Flush buffered audio into a final result (``from_finalize``); the reply is not guaranteed."""

    channel: int | None = None


@attrs.frozen
class CloseStream:
    """Graceful end: remaining Results, then Metadata, then close 1000. Keep reading until then."""


ClientControl: TypeAlias = KeepAlive | Finalize | CloseStream

_CLIENT_TAGS: Final[Mapping[type, str]] = {
    KeepAlive: "KeepAlive",
    Finalize: "Finalize",
    CloseStream: "CloseStream",
}


# == the converter ==================================================================================

def _build_converter() -> OrjsonConverter:
    converter = make_strict_converter()
    omit_none_fields(converter, Word, "punctuated_word", "speaker", "language")
    omit_none_fields(converter, Alternative, "languages")
    omit_none_fields(converter, Metadata, "models", "model_info", "extra")
    omit_none_fields(converter, ErrorMessage, "variant", "description", "message", "code")
    omit_none_fields(converter, Finalize, "channel")
    converter.register_structure_hook(UnknownMessage, structure_unknown)
    configure_tagged_union(
        _KnownServerMessage, converter, tag_generator=_SERVER_TAGS.__getitem__,
        tag_name="type", default=UnknownMessage,
    )
    configure_tagged_union(
        ClientControl, converter, tag_generator=_CLIENT_TAGS.__getitem__, tag_name="type"
    )
    return converter


#: The one converter for this module's messages (orjson preconf, strict primitives).
CONVERTER: Final = _build_converter()


def decode_server(text: str | bytes) -> ServerMessage:
    """One server text frame → a message; an unknown ``type`` gives :class:`UnknownMessage`.

    Raises:
        RemoteProtocolError: invalid JSON, not an object, no string ``type``, or a known message
            with missing or wrongly typed fields.
    """
    obj = load_object(text, what="Deepgram listen message", close_code=CLOSE_POLICY_VIOLATION)
    tag = message_tag(obj, what="Deepgram listen message", close_code=CLOSE_POLICY_VIOLATION)
    result: ServerMessage = structure_or_raise(
        CONVERTER, obj, _KnownServerMessage, what=f"Deepgram {tag} message",
        close_code=CLOSE_POLICY_VIOLATION,
    )
    return result


def encode_server(msg: ServerMessage) -> str:
    """A server message as the text frame Deepgram would send (``type`` first, full shape)."""
    if isinstance(msg, UnknownMessage):
        return encode_unknown(msg)
    tag = _SERVER_TAGS.get(type(msg))
    if tag is None:
        raise LocalProtocolError(f"not a Deepgram listen server message: {type(msg).__name__}")
    return dump_tagged(CONVERTER, msg, tag)


def encode_client(msg: ClientControl) -> str:
    """A control message as the text frame to send (never as binary: that would be audio)."""
    tag = _CLIENT_TAGS.get(type(msg))
    if tag is None:
        raise LocalProtocolError(f"not a Deepgram listen control message: {type(msg).__name__}")
    if isinstance(msg, Finalize) and msg.channel is not None:
        if not (_is_int(msg.channel) and msg.channel >= 0):
            raise LocalProtocolError("Finalize.channel must be a non-negative integer")
    return dump_tagged(CONVERTER, msg, tag)


#: ``{"type":"KeepAlive"}``, pre-encoded for the keep-alive loop.
KEEPALIVE_TEXT: Final = encode_client(KeepAlive())


def decode_client_text(text: str | bytes) -> ClientControl:
    """The emulator's reading of a client text frame.

    Raises:
        RemoteProtocolError: bad JSON, no ``type``, an unknown ``type`` (e.g. ``Configure``, not
            supported here) or bad fields. Deepgram answers these with an ``Error`` of variant
            ``SchemaError`` (see :func:`schema_error`) and keeps the stream open (UNCONFIRMED);
            ``close_code`` is 1008 for an emulator configured to close instead.
    """
    what = "Deepgram listen control message"
    obj = load_object(text, what=what, close_code=CLOSE_POLICY_VIOLATION)
    tag = message_tag(obj, what=what, close_code=CLOSE_POLICY_VIOLATION)
    if tag not in _CLIENT_TAGS.values():
        raise RemoteProtocolError(
            f"{what}: unknown type {tag[:40]!r}", close_code=CLOSE_POLICY_VIOLATION
        )
    result: ClientControl = structure_or_raise(
        CONVERTER, obj, ClientControl, what=f"Deepgram {tag} message",
        close_code=CLOSE_POLICY_VIOLATION,
    )
    if isinstance(result, Finalize) and result.channel is not None and result.channel < 0:
        raise RemoteProtocolError(
            "Deepgram Finalize message: channel must be >= 0", close_code=CLOSE_POLICY_VIOLATION
        )
    return result


_ECHO_LIMIT_CHARS: Final = 1000


def schema_error(error: RemoteProtocolError, text: str | bytes) -> ErrorMessage:
    """The ``Error`` a server answers an unparseable client text frame with (``message`` echoes it)."""
    echoed = text.decode("utf-8", "replace") if isinstance(text, bytes | bytearray) else str(text)
    return ErrorMessage(
        variant="SchemaError", description=error.reason, message=echoed[:_ECHO_LIMIT_CHARS]
    )


def shifted(msg: ServerMessage, offset_s: float) -> ServerMessage:
    """``msg`` with its audio times moved by ``offset_s`` (messages without times come back as is)."""
    if isinstance(msg, Results | UtteranceEnd | SpeechStarted):
        return msg.shifted(offset_s)
    return msg


# == what a close means for the link ================================================================

class Recovery(enum.Enum):
    """What the link should do after a connection ends."""

    FINISHED = "finished"  # normal close; expected after our CloseStream
    RECONNECT = "reconnect"  # transient: reconnect now, replay buffered audio
    BACKOFF = "backoff"  # reconnect after an increasing delay (rate limit, overload)
    FATAL = "fatal"  # reconnecting cannot help: credentials, parameters, audio format


@attrs.frozen
class CloseVerdict:
    recovery: Recovery
    #: Deepgram's error code when the reason names one (``NET-0001``, ``NET-0000``, ``DATA-0000``).
    error_code: str | None
    explanation: str

    @property
    def retryable(self) -> bool:
        return self.recovery in (Recovery.RECONNECT, Recovery.BACKOFF)


_ERROR_CODE = re.compile(r"\b(NET|DATA)-?(\d{4})\b", re.IGNORECASE)


def close_error_code(reason: str | bytes | None) -> str | None:
    """``NET-0001``-style code named in a close reason (also found in ``dpgr.am/net0001`` links)."""
    if isinstance(reason, bytes | bytearray):
        reason = reason.decode("utf-8", "replace")
    if not isinstance(reason, str):
        return None
    match = _ERROR_CODE.search(reason)
    return f"{match.group(1).upper()}-{match.group(2)}" if match else None


def classify_close(code: int | None, reason: str | bytes | None = "") -> CloseVerdict:
    """Classify a WebSocket close from Deepgram (``code`` None = no close frame, as 1006).

    1000 is FINISHED (the link knows whether it sent CloseStream; an unasked-for 1000 mid-call is
    worth a reconnect). 1011 (NET-0001 idle timeout, NET-0000, internal errors), 1006 and 1001 are
    RECONNECT. 1012/1013 and unknown codes (4xxx included, none are documented) are BACKOFF.
    DATA-0000 (by its reason, whatever the code: 1008 or 1002 by source) and 1002/1003/1007/1009
    are FATAL: the same audio or frames would fail again.
    """
    error_code = close_error_code(reason)
    if code is None:
        code = CLOSE_ABNORMAL
    if error_code is not None and error_code.startswith("DATA-"):
        return CloseVerdict(Recovery.FATAL, error_code, "server could not decode our audio")
    if code == CLOSE_NORMAL:
        return CloseVerdict(Recovery.FINISHED, error_code, "normal close")
    if code == CLOSE_INTERNAL_ERROR:
        explanation = {
            "NET-0001": "no audio or text reached the server for 10 s",
            "NET-0000": "server sent nothing within its window",
        }.get(error_code or "", "server internal error")
        return CloseVerdict(Recovery.RECONNECT, error_code, explanation)
    if code in (CLOSE_ABNORMAL, CLOSE_GOING_AWAY):
        return CloseVerdict(Recovery.RECONNECT, error_code, "connection lost")
    if code in (1002, 1003, 1007, CLOSE_POLICY_VIOLATION, 1009):
        return CloseVerdict(Recovery.FATAL, error_code, f"server refused our frames ({code})")
    return CloseVerdict(Recovery.BACKOFF, error_code, f"close code {code}")


def classify_handshake(status_code: int) -> CloseVerdict:
    """Classify a refused upgrade: 400 (parameters), 401/402/403 (credentials, credit), 404 are
    FATAL; 408 is RECONNECT; 429 (too many streams) and 5xx are BACKOFF; other 4xx FATAL."""
    if status_code in (400, 401, 402, 403, 404):
        explanation = {
            400: "bad request parameters",
            401: "invalid credentials",
            402: "insufficient credit",
            403: "forbidden",
            404: "wrong URL",
        }[status_code]
        return CloseVerdict(Recovery.FATAL, None, explanation)
    if status_code == 408:
        return CloseVerdict(Recovery.RECONNECT, None, "request timeout")
    if status_code == 429 or status_code >= 500:
        return CloseVerdict(Recovery.BACKOFF, None, f"HTTP {status_code}")
    return CloseVerdict(Recovery.FATAL, None, f"HTTP {status_code}")
