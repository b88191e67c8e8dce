"""Events of the relay hub (``POST /event`` in, ``WS /ws?callId=`` out): the seed's and ours.

The seed relay (``shared/seeds/003_…``) forwards any JSON object with a non-empty string ``callId``
to that call's subscribers; it documents three types, which we check when they appear:

=========  =========================================================================================
partial    ``callId``, ``speaker`` (customer|agent|mix), ``text``; optional ``turnId`` (string),
final      ``tsStart``, ``tsEnd`` (numbers; the seed's examples are epoch milliseconds). The seed's
           own STT client sends partials without turnId/tsStart/tsEnd, hence optional.
coach      ``callId``, ``mode`` (tip|alert), ``severity`` (low|med|high), ``text``; optional
           ``turnRef`` (string).
=========  =========================================================================================

Ours, published by Centralita itself:

=========  =========================================================================================
reply      ``callId``, ``turnId``, ``text`` (what the bot said, as spoken), ``interrupted`` (bool);
           optional ``tsStart``, ``tsEnd`` (same unit as partial/final).
latency    ``callId``, ``turnId``, ``stages``: object of stage name → seconds (number), one turn's
           waterfall on the call clock (see :data:`LATENCY_STAGES` for the usual names; others pass).
call       ``callId``, ``state`` (started|ended); optional ``callControlId``, ``streamId``,
           ``reason`` (why it ended).
gap        ``callId``, ``fromSeq``, ``toSeq`` (ints, inclusive): events this subscriber missed that
           already left the backlog. Written by the hub only: a publisher may not POST it.
=========  =========================================================================================

Rules for everything else: ``type``, when present, must be a string; unknown types pass untouched
with every field; on a known type, optional fields may be ``null`` (read as absent) and unknown
extra fields are kept by the hub (the typed models below drop them).

Delivered frames (hub → subscriber) are the publisher's object, with every field it sent, plus two
fields the hub owns and overwrites if a publisher sent them: ``seq`` (int, per call, 1, 2, 3 ... in
publish order) and ``ts`` (int, server time in epoch **milliseconds**, like JavaScript's
``Date.now()`` and the seed's ``tsStart``). A ``gap`` frame carries neither ``seq`` (it is not an
event of the call) nor, unless asked, ``ts``.

Hot path: :func:`parse_event_body` and :func:`encode_delivery` run once per POST (the frame is
encoded once for all subscribers) and are plain orjson plus hand-written checks: 1.3 µs and 0.6 µs
for a 211-byte partial on the 2-core dev box (``tests/protocols/test_relay.py::test_hot_path_cost``
guards against a blunder; stdlib ``json`` would take 5 µs). The typed models go through the cattrs
converter (``from_wire`` ~5 µs, ``to_wire`` ~1 µs), for our own publishers and subscribers.
"""

from __future__ import annotations

import math
import typing
from collections.abc import Callable, Mapping
from typing import Any, Literal, Union

import attrs
import cattrs
import orjson
from cattrs.errors import BaseValidationError
from cattrs.gen import make_dict_structure_fn, make_dict_unstructure_fn, override

from protocols.errors import (CLOSE_INVALID_PAYLOAD, CLOSE_MESSAGE_TOO_BIG, LocalProtocolError,
                              RemoteProtocolError)

__all__ = [
    "CALL_STATES",
    "COACH_MODES",
    "COACH_SEVERITIES",
    "HUB_FIELDS",
    "LATENCY_STAGES",
    "MAX_EVENT_BODY_BYTES",
    "RESERVED_TYPES",
    "SPEAKERS",
    "CallEvent",
    "Coach",
    "Delivered",
    "Final",
    "Gap",
    "Latency",
    "OtherEvent",
    "Partial",
    "RelayEvent",
    "Reply",
    "decode_delivery",
    "encode_delivery",
    "encode_gap",
    "encode_publish",
    "from_wire",
    "parse_event_body",
    "to_wire",
]

#: The seed's ``express.json({limit: '1mb'})``.
MAX_EVENT_BODY_BYTES: typing.Final = 1_048_576
SPEAKERS: typing.Final = ("customer", "agent", "mix")
COACH_MODES: typing.Final = ("tip", "alert")
COACH_SEVERITIES: typing.Final = ("low", "med", "high")
CALL_STATES: typing.Final = ("started", "ended")
#: The usual stages of a turn's waterfall, in order (``latency.stages`` may hold others).
LATENCY_STAGES: typing.Final = ("end_of_speech", "stt_final", "llm_request", "llm_first_token",
                                "first_chunk", "tts_first_audio", "first_frame_sent")
#: Types only the hub writes; ``parse_event_body`` refuses them from publishers.
RESERVED_TYPES: typing.Final = frozenset({"gap"})
#: Fields the hub adds to every delivered frame (and overwrites if a publisher sent them).
HUB_FIELDS: typing.Final = ("seq", "ts")
#: A ``now_s`` above this is surely milliseconds already (it is the year 5138 in seconds).
_MAX_EPOCH_S: typing.Final = 1e11


# -- field checks (the hot path: plain functions, no cattrs) ------------------------------------
def _kind(value: object) -> str:
    if value is None:
        return "null"
    if value is True or value is False:
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, (list, tuple)):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _is_number(value: object) -> bool:
    # bool is an int subclass, and JSON true is no number: compare exact types.
    t = type(value)
    return t is int or (t is float and math.isfinite(value))  # type: ignore[arg-type]


def _string(value: object) -> str | None:
    return None if type(value) is str else f"must be a string, got {_kind(value)}"


def _number(value: object) -> str | None:
    return None if _is_number(value) else f"must be a number, got {_kind(value)}"


def _boolean(value: object) -> str | None:
    return None if type(value) is bool else f"must be a boolean, got {_kind(value)}"


def _seq_number(value: object) -> str | None:
    if type(value) is int and value >= 0:
        return None
    return f"must be a non-negative integer, got {_kind(value)}"


def _one_of(*allowed: str) -> Callable[[object], str | None]:
    choices = frozenset(allowed)
    listing = ", ".join(repr(a) for a in allowed)

    def check(value: object) -> str | None:
        if type(value) is str and value in choices:
            return None
        shown = repr(value[:40]) if type(value) is str else _kind(value)
        return f"must be one of {listing}, got {shown}"

    return check


def _stages(value: object) -> str | None:
    if type(value) is not dict:
        return f"must be an object of stage name to seconds, got {_kind(value)}"
    for name, seconds in value.items():
        if type(name) is not str:
            return "keys must be strings"
        if not _is_number(seconds):
            return f"[{name[:40]!r}] must be a number of seconds, got {_kind(seconds)}"
    return None


_Check = Callable[[object], Union[str, None]]
_Spec = tuple[tuple[str, _Check, bool], ...]  # (wire key, check, required)

_TRANSCRIPT: typing.Final[_Spec] = (
    ("speaker", _one_of(*SPEAKERS), True), ("text", _string, True), ("turnId", _string, False),
    ("tsStart", _number, False), ("tsEnd", _number, False),
)
_SPECS: typing.Final[Mapping[str, _Spec]] = {
    "partial": _TRANSCRIPT,
    "final": _TRANSCRIPT,
    "coach": (("mode", _one_of(*COACH_MODES), True), ("severity", _one_of(*COACH_SEVERITIES), True),
              ("text", _string, True), ("turnRef", _string, False)),
    "reply": (("turnId", _string, True), ("text", _string, True), ("interrupted", _boolean, True),
              ("tsStart", _number, False), ("tsEnd", _number, False)),
    "latency": (("turnId", _string, True), ("stages", _stages, True)),
    "call": (("state", _one_of(*CALL_STATES), True), ("callControlId", _string, False),
             ("streamId", _string, False), ("reason", _string, False)),
    "gap": (("fromSeq", _seq_number, True), ("toSeq", _seq_number, True)),
}
_MISSING: typing.Final = object()


def _envelope(obj: dict[str, Any]) -> tuple[str, str | None]:
    """(callId, type) of a JSON object, or RemoteProtocolError saying which is wrong."""
    call_id = obj.get("callId", _MISSING)
    if type(call_id) is not str:
        if call_id is _MISSING:
            raise RemoteProtocolError("callId is required", close_code=CLOSE_INVALID_PAYLOAD)
        raise RemoteProtocolError(f"callId must be a string, got {_kind(call_id)}",
                                  close_code=CLOSE_INVALID_PAYLOAD)
    if not call_id:
        raise RemoteProtocolError("callId must not be empty", close_code=CLOSE_INVALID_PAYLOAD)
    event_type = obj.get("type", _MISSING)
    if event_type is _MISSING:
        return call_id, None
    if type(event_type) is not str:
        raise RemoteProtocolError(f"type must be a string, got {_kind(event_type)}",
                                  close_code=CLOSE_INVALID_PAYLOAD)
    return call_id, event_type


def _check_fields(obj: dict[str, Any], event_type: str, spec: _Spec) -> None:
    problems: list[str] | None = None  # every problem, so one 400 tells the publisher all of it
    for key, check, required in spec:
        value = obj.get(key, _MISSING)
        if value is _MISSING or (value is None and not required):
            if required:
                problems = problems or []
                problems.append(f"{event_type}.{key} is required")
            continue
        problem = check(value)
        if problem is not None:
            sep = "" if problem.startswith("[") else " "  # "latency.stages['x'] must be ..."
            problems = problems or []
            problems.append(f"{event_type}.{key}{sep}{problem}")
    if problems:
        raise RemoteProtocolError("; ".join(problems), close_code=CLOSE_INVALID_PAYLOAD)


def _loads(data: bytes | bytearray | memoryview | str, what: str) -> dict[str, Any]:
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise RemoteProtocolError(f"{what} is not valid JSON: {exc}",
                                  close_code=CLOSE_INVALID_PAYLOAD) from None
    if type(obj) is not dict:
        raise RemoteProtocolError(f"{what} must be a JSON object, got {_kind(obj)}",
                                  close_code=CLOSE_INVALID_PAYLOAD)
    return obj


# -- the hub's API ------------------------------------------------------------------------------
def parse_event_body(body: bytes | bytearray | memoryview | str) -> tuple[str, dict[str, Any]]:
    """Check one ``POST /event`` body; return ``(callId, the object as sent)``.

    Unknown types (and objects without ``type``) come back untouched; known types are checked
    field by field. Answer a ``RemoteProtocolError`` with HTTP 400 and its ``reason``.

    Raises:
        RemoteProtocolError: over :data:`MAX_EVENT_BODY_BYTES` (close code 1009: answer 413);
            not JSON; not an object; ``callId`` missing, empty or not a string; ``type`` present
            but not a string, or reserved (``gap``); a known type with a field missing, mistyped
            or outside its enum (the reason names ``<type>.<field>``).
    """
    if len(body) > MAX_EVENT_BODY_BYTES:
        raise RemoteProtocolError(
            f"body is {len(body)} bytes, over the {MAX_EVENT_BODY_BYTES}-byte limit",
            close_code=CLOSE_MESSAGE_TOO_BIG)
    obj = _loads(body, "body")
    call_id, event_type = _envelope(obj)
    if event_type is not None:
        spec = _SPECS.get(event_type)
        if spec is not None:
            if event_type in RESERVED_TYPES:
                raise RemoteProtocolError(f"type {event_type!r} is reserved for the relay hub",
                                          close_code=CLOSE_INVALID_PAYLOAD)
            _check_fields(obj, event_type, spec)
    return call_id, obj


def _epoch_ms(now_s: float) -> int:
    if not _is_number(now_s) or not 0 <= now_s < _MAX_EPOCH_S:
        raise LocalProtocolError(
            f"now_s must be epoch seconds (time.time()), got {now_s!r}")
    return round(now_s * 1000)  # round, not floor: 1.001 * 1000 is 1000.9999999999999


def encode_delivery(event: Mapping[str, Any], seq: int, now_s: float) -> str:
    """The text frame subscribers receive: ``event`` with ``seq`` and ``ts`` set.

    Encode once per published event and send the same ``str`` to every subscriber, as a
    WebSocket *text* frame (browsers hand binary frames to ``onmessage`` as Blobs).

    Args:
        event: the object :func:`parse_event_body` returned (or :func:`to_wire` built); every
            field is kept, except that the hub's ``seq``/``ts`` replace a publisher's.
        seq: the event's number within its call (1, 2, 3 ...).
        now_s: server time in epoch *seconds* (``time.time()``); written as ``ts``, integer
            epoch milliseconds.

    Raises:
        LocalProtocolError: ``seq`` not a non-negative int, ``now_s`` not plausible epoch
            seconds (e.g. milliseconds passed by mistake), or ``event`` not JSON-encodable.
    """
    if type(seq) is not int or seq < 0:
        raise LocalProtocolError(f"seq must be a non-negative int, got {seq!r}")
    out = dict(event)
    out["seq"] = seq
    out["ts"] = _epoch_ms(now_s)
    try:
        return orjson.dumps(out).decode()
    except orjson.JSONEncodeError as exc:
        raise LocalProtocolError(f"event cannot be JSON: {exc}") from None


# -- typed models -------------------------------------------------------------------------------
Speaker = Literal["customer", "agent", "mix"]
CoachMode = Literal["tip", "alert"]
Severity = Literal["low", "med", "high"]
CallState = Literal["started", "ended"]


@attrs.frozen(kw_only=True)
class Partial:
    """An interim transcript of the current turn (replaced by later partials and the final)."""

    call_id: str
    speaker: Speaker
    text: str
    turn_id: str | None = None
    ts_start: float | None = None
    ts_end: float | None = None


@attrs.frozen(kw_only=True)
class Final:
    """The settled transcript of one turn. (Import the module, ``relay.Final``: the bare name
    shadows ``typing.Final``.)"""

    call_id: str
    speaker: Speaker
    text: str
    turn_id: str | None = None
    ts_start: float | None = None
    ts_end: float | None = None


@attrs.frozen(kw_only=True)
class Coach:
    """Advice for the human agent (coach mode)."""

    call_id: str
    mode: CoachMode
    severity: Severity
    text: str
    turn_ref: str | None = None


@attrs.frozen(kw_only=True)
class Reply:
    """What the bot said in one turn, as far as it was spoken (``interrupted``: barge-in cut it)."""

    call_id: str
    turn_id: str
    text: str
    interrupted: bool
    ts_start: float | None = None
    ts_end: float | None = None


@attrs.frozen(kw_only=True)
class Latency:
    """One turn's waterfall: stage name → seconds on the call clock when the stage happened."""

    call_id: str
    turn_id: str
    stages: Mapping[str, float]


@attrs.frozen(kw_only=True)
class CallEvent:
    """A call began or ended (``reason`` says why it ended)."""

    call_id: str
    state: CallState
    call_control_id: str | None = None
    stream_id: str | None = None
    reason: str | None = None


@attrs.frozen(kw_only=True)
class Gap:
    """Events ``from_seq`` .. ``to_seq`` (inclusive) of the call that this subscriber missed."""

    call_id: str
    from_seq: int
    to_seq: int


@attrs.frozen
class OtherEvent:
    """Any other relay event (unknown type, or none): the JSON object as sent."""

    raw: Mapping[str, Any]

    @property
    def call_id(self) -> str:
        return str(self.raw["callId"])  # from_wire checked it is one


RelayEvent = Union[Partial, Final, Coach, Reply, Latency, CallEvent, Gap, OtherEvent]

_TAGS: typing.Final[Mapping[type, str]] = {
    Partial: "partial", Final: "final", Coach: "coach", Reply: "reply", Latency: "latency",
    CallEvent: "call", Gap: "gap",
}
_CLASSES: typing.Final[Mapping[str, type]] = {tag: cls for cls, tag in _TAGS.items()}


@attrs.frozen
class Delivered:
    """A frame as a subscriber receives it: the hub's ``seq``/``ts`` and the event.

    ``seq`` is ``None`` on a ``gap`` frame; ``ts`` (epoch ms) is ``None`` if the hub sent none.
    """

    seq: int | None
    ts: int | float | None
    event: RelayEvent


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


class _Invalid(Exception):
    pass


def _strict(*types: type) -> Callable[[Any, Any], Any]:
    # cattrs would coerce (str(5) == "5", int("7")): on the wire a wrong type is an error.
    def structure(value: Any, _: Any) -> Any:
        if type(value) in types:
            return value
        raise _Invalid(f"expected {'/'.join(t.__name__ for t in types)}, got {_kind(value)}")

    return structure


def _build_converter() -> cattrs.Converter:
    conv = cattrs.Converter(detailed_validation=True)
    conv.register_structure_hook(str, _strict(str))
    conv.register_structure_hook(int, _strict(int))
    conv.register_structure_hook(bool, _strict(bool))
    conv.register_structure_hook(float, _strict(float, int))  # keeps ints as ints (1640995200000)
    for cls in _TAGS:
        # camelCase on the wire, snake_case in Python: the renames live here, not on the models.
        renames: dict[str, Any] = {a.name: override(rename=_camel(a.name))
                                   for a in attrs.fields(cls) if _camel(a.name) != a.name}
        conv.register_structure_hook(cls, make_dict_structure_fn(cls, conv, **renames))
        conv.register_unstructure_hook(cls, make_dict_unstructure_fn(
            cls, conv, _cattrs_omit_if_default=True, **renames))
    return conv


_converter: typing.Final = _build_converter()
_STRUCTURE: typing.Final[Mapping[str, Any]] = {
    tag: _converter.get_structure_hook(cls) for cls, tag in _TAGS.items()
}
_UNSTRUCTURE: typing.Final[Mapping[type, Any]] = {
    cls: _converter.get_unstructure_hook(cls) for cls in _TAGS
}


def from_wire(obj: Mapping[str, Any]) -> RelayEvent:
    """The typed event in a relay JSON object (a known type), else :class:`OtherEvent`.

    Checks exactly what :func:`parse_event_body` checks (and accepts ``gap``); extra fields of a
    known type are dropped, ``seq``/``ts`` included (see :func:`decode_delivery`).

    Raises:
        RemoteProtocolError: not an object, a bad ``callId``/``type``, or a bad field of a known
            type (the reason names ``<type>.<field>``).
    """
    if type(obj) is not dict:
        raise RemoteProtocolError(f"relay event must be a JSON object, got {_kind(obj)}",
                                  close_code=CLOSE_INVALID_PAYLOAD)
    _, event_type = _envelope(obj)
    spec = _SPECS.get(event_type) if event_type is not None else None
    if spec is None:
        return OtherEvent(raw=obj)
    _check_fields(obj, event_type, spec)  # type: ignore[arg-type]
    # Optional nulls mean "absent"; the checked object cannot fail the converter after that.
    clean = {k: v for k, v in obj.items() if v is not None}
    try:
        return _STRUCTURE[event_type](clean, _CLASSES[event_type])  # type: ignore[index]
    except (BaseValidationError, _Invalid, KeyError, TypeError, ValueError) as exc:
        raise RemoteProtocolError(f"{event_type}: {exc!r}",
                                  close_code=CLOSE_INVALID_PAYLOAD) from None


def to_wire(event: RelayEvent) -> dict[str, Any]:
    """The JSON object for a typed event (``type`` first, camelCase keys, unset options left out).

    Raises:
        LocalProtocolError: the event would not pass :func:`parse_event_body`/:func:`from_wire`
            (e.g. a speaker outside the enum, a bool as a timestamp, an empty ``call_id``).
    """
    if type(event) is OtherEvent:
        out = dict(event.raw)
    else:
        try:
            out = {"type": _TAGS[type(event)], **_UNSTRUCTURE[type(event)](event)}
        except KeyError:
            raise LocalProtocolError(f"not a relay event: {event!r}") from None
    try:
        _, event_type = _envelope(out)
        spec = _SPECS.get(event_type) if event_type is not None else None
        if spec is not None:
            _check_fields(out, event_type, spec)  # type: ignore[arg-type]
    except RemoteProtocolError as exc:
        raise LocalProtocolError(f"would publish a bad event: {exc.reason}") from None
    return out


def encode_publish(event: RelayEvent) -> bytes:
    """The ``POST /event`` body for one of our events.

    Raises:
        LocalProtocolError: as :func:`to_wire`, or content JSON cannot hold.
    """
    try:
        return orjson.dumps(to_wire(event))
    except orjson.JSONEncodeError as exc:
        raise LocalProtocolError(f"event cannot be JSON: {exc}") from None


def encode_gap(gap: Gap, now_s: float | None = None) -> str:
    """The ``gap`` text frame: ``{"type":"gap","callId":…,"fromSeq":…,"toSeq":…}``.

    No ``seq``: a gap is news for one subscriber, not an event of the call; a subscriber's
    position after it is ``toSeq``. With ``now_s`` (epoch seconds) it carries ``ts`` too.

    Raises:
        LocalProtocolError: ``from_seq`` > ``to_seq``, or fields of the wrong type.
    """
    if type(gap) is not Gap:
        raise LocalProtocolError(f"encode_gap takes a Gap, got {type(gap).__name__}")
    out = to_wire(gap)
    if gap.from_seq > gap.to_seq:
        raise LocalProtocolError(f"gap from_seq {gap.from_seq} is after to_seq {gap.to_seq}")
    if now_s is not None:
        out["ts"] = _epoch_ms(now_s)
    return orjson.dumps(out).decode()


def decode_delivery(frame: str | bytes | bytearray | memoryview) -> Delivered:
    """A subscriber's view of one frame: ``seq`` and ``ts`` taken off, the rest typed.

    Raises:
        RemoteProtocolError: not a JSON object, ``seq`` not a non-negative int or ``ts`` not a
            number (when present), or the event itself is bad (as :func:`from_wire`).
    """
    obj = _loads(frame, "frame")
    seq = obj.pop("seq", None)
    if seq is not None and (type(seq) is not int or seq < 0):
        raise RemoteProtocolError(f"seq must be a non-negative integer, got {_kind(seq)}",
                                  close_code=CLOSE_INVALID_PAYLOAD)
    ts = obj.pop("ts", None)
    if ts is not None and not _is_number(ts):
        raise RemoteProtocolError(f"ts must be a number, got {_kind(ts)}",
                                  close_code=CLOSE_INVALID_PAYLOAD)
    return Delivered(seq=seq, ts=ts, event=from_wire(obj))
