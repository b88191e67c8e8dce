"""The relay's typed events: frozen attrs models, their converter, and the subscriber's codec.

For our own publishers and subscribers (the hub itself passes JSON objects through untouched).
camelCase on the wire, snake_case in Python: the renames live on the converter. Every model is
checked by the same rules as ``POST /event`` (:mod:`protocols.relay_checks`). Re-exported by
:mod:`protocols.relay`.
"""

from __future__ import annotations

import typing
from collections.abc import Mapping
from typing import Any, Literal, Union

import attrs
import cattrs
from cattrs.errors import BaseValidationError
from cattrs.gen import make_dict_structure_fn, make_dict_unstructure_fn, override

from protocols.errors import CLOSE_INVALID_PAYLOAD, LocalProtocolError, RemoteProtocolError
from protocols.jsonwire import (dumps, json_kind, load_object, strict_bool, strict_int, strict_number,
                                strict_str)
from protocols.relay_checks import SPECS, check_fields, envelope, epoch_ms, is_number

__all__ = [
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
    "encode_gap",
    "encode_publish",
    "from_wire",
    "to_wire",
]

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


def _build_converter() -> cattrs.Converter:
    conv = cattrs.Converter(detailed_validation=True)
    # cattrs would coerce (str(5) == "5", int("7")): on the wire a wrong type is an error.
    conv.register_structure_hook(str, strict_str)
    conv.register_structure_hook(int, strict_int)
    conv.register_structure_hook(bool, strict_bool)
    conv.register_structure_hook(float, strict_number)  # keeps ints as ints (1640995200000)
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
        raise RemoteProtocolError(f"relay event must be a JSON object, got {json_kind(obj)}",
                                  close_code=CLOSE_INVALID_PAYLOAD)
    _, event_type = envelope(obj)
    spec = SPECS.get(event_type) if event_type is not None else None
    if spec is None:
        return OtherEvent(raw=obj)
    check_fields(obj, event_type, spec)  # type: ignore[arg-type]
    # Optional nulls mean "absent"; the checked object cannot fail the converter after that.
    clean = {k: v for k, v in obj.items() if v is not None}
    try:
        return _STRUCTURE[event_type](clean, _CLASSES[event_type])  # type: ignore[index]
    except (BaseValidationError, KeyError, TypeError, ValueError) as exc:  # hooks: TypeError
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
        _, event_type = envelope(out)
        spec = SPECS.get(event_type) if event_type is not None else None
        if spec is not None:
            check_fields(out, event_type, spec)  # type: ignore[arg-type]
    except RemoteProtocolError as exc:
        raise LocalProtocolError(f"would publish a bad event: {exc.reason}") from None
    return out


def encode_publish(event: RelayEvent) -> bytes:
    """The ``POST /event`` body for one of our events.

    Raises:
        LocalProtocolError: as :func:`to_wire`, or content JSON cannot hold.
    """
    return dumps(to_wire(event), "event")


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
        out["ts"] = epoch_ms(now_s)
    return dumps(out, "gap").decode()


def decode_delivery(frame: str | bytes | bytearray | memoryview) -> Delivered:
    """A subscriber's view of one frame: ``seq`` and ``ts`` taken off, the rest typed.

    Raises:
        RemoteProtocolError: not a JSON object, ``seq`` not a non-negative int or ``ts`` not a
            number (when present), or the event itself is bad (as :func:`from_wire`).
    """
    obj = load_object(frame, what="frame", close_code=CLOSE_INVALID_PAYLOAD)
    seq = obj.pop("seq", None)
    if seq is not None and (type(seq) is not int or seq < 0):
        raise RemoteProtocolError(f"seq must be a non-negative integer, got {json_kind(seq)}",
                                  close_code=CLOSE_INVALID_PAYLOAD)
    ts = obj.pop("ts", None)
    if ts is not None and not is_number(ts):
        raise RemoteProtocolError(f"ts must be a number, got {json_kind(ts)}",
                                  close_code=CLOSE_INVALID_PAYLOAD)
    return Delivered(seq=seq, ts=ts, event=from_wire(obj))
