"""The relay's field checks: what ``POST /event`` accepts, per event type (the hub's hot path).

Plain functions and a table of specs, no cattrs: :func:`check_fields` runs once per published
event. The typed models (:mod:`protocols.relay_models`) check exactly the same things, through
these. Re-exported (the constants) by :mod:`protocols.relay`, whose docstring lists the types.
"""

from __future__ import annotations

import math
import typing
from collections.abc import Callable, Mapping
from typing import Any, Union

from protocols.errors import CLOSE_INVALID_PAYLOAD, LocalProtocolError, RemoteProtocolError
from protocols.jsonwire import json_kind

__all__ = [
    "CALL_STATES",
    "COACH_MODES",
    "COACH_SEVERITIES",
    "HUB_FIELDS",
    "LATENCY_STAGES",
    "MAX_EVENT_BODY_BYTES",
    "RESERVED_TYPES",
    "SPEAKERS",
    "SPECS",
    "check_fields",
    "envelope",
    "epoch_ms",
    "is_number",
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


def is_number(value: object) -> bool:
    """An int or a finite float, never a bool."""
    # bool is an int subclass, and JSON true is no number: compare exact types.
    t = type(value)
    return t is int or (t is float and math.isfinite(value))  # type: ignore[arg-type]


def _string(value: object) -> str | None:
    return None if type(value) is str else f"must be a string, got {json_kind(value)}"


def _number(value: object) -> str | None:
    return None if is_number(value) else f"must be a number, got {json_kind(value)}"


def _boolean(value: object) -> str | None:
    return None if type(value) is bool else f"must be a boolean, got {json_kind(value)}"


def _seq_number(value: object) -> str | None:
    if type(value) is int and value >= 0:
        return None
    return f"must be a non-negative integer, got {json_kind(value)}"


def _one_of(*allowed: str) -> Callable[[object], str | None]:
    choices = frozenset(allowed)
    listing = ", ".join(repr(a) for a in allowed)

    def check(value: object) -> str | None:
        if type(value) is str and value in choices:
            return None
        shown = repr(value[:40]) if type(value) is str else json_kind(value)
        return f"must be one of {listing}, got {shown}"

    return check


def _stages(value: object) -> str | None:
    if type(value) is not dict:
        return f"must be an object of stage name to seconds, got {json_kind(value)}"
    for name, seconds in value.items():
        if type(name) is not str:
            return "keys must be strings"
        if not is_number(seconds):
            return f"[{name[:40]!r}] must be a number of seconds, got {json_kind(seconds)}"
    return None


_Check = Callable[[object], Union[str, None]]
_Spec = tuple[tuple[str, _Check, bool], ...]  # (wire key, check, required)

_TRANSCRIPT: typing.Final[_Spec] = (
    ("speaker", _one_of(*SPEAKERS), True), ("text", _string, True), ("turnId", _string, False),
    ("tsStart", _number, False), ("tsEnd", _number, False),
)
SPECS: typing.Final[Mapping[str, _Spec]] = {
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


def envelope(obj: dict[str, Any]) -> tuple[str, str | None]:
    """(callId, type) of a JSON object, or RemoteProtocolError saying which is wrong."""
    call_id = obj.get("callId", _MISSING)
    if type(call_id) is not str:
        if call_id is _MISSING:
            raise RemoteProtocolError("callId is required", close_code=CLOSE_INVALID_PAYLOAD)
        raise RemoteProtocolError(f"callId must be a string, got {json_kind(call_id)}",
                                  close_code=CLOSE_INVALID_PAYLOAD)
    if not call_id:
        raise RemoteProtocolError("callId must not be empty", close_code=CLOSE_INVALID_PAYLOAD)
    event_type = obj.get("type", _MISSING)
    if event_type is _MISSING:
        return call_id, None
    if type(event_type) is not str:
        raise RemoteProtocolError(f"type must be a string, got {json_kind(event_type)}",
                                  close_code=CLOSE_INVALID_PAYLOAD)
    return call_id, event_type


def check_fields(obj: dict[str, Any], event_type: str, spec: _Spec) -> None:
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


def epoch_ms(now_s: float) -> int:
    """``time.time()`` seconds as integer epoch milliseconds; LocalProtocolError if implausible."""
    if not is_number(now_s) or not 0 <= now_s < _MAX_EPOCH_S:
        raise LocalProtocolError(
            f"now_s must be epoch seconds (time.time()), got {now_s!r}")
    return round(now_s * 1000)  # round, not floor: 1.001 * 1000 is 1000.9999999999999

