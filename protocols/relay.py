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

This module holds the hub's two hot-path functions and is the public face; the field checks are in
:mod:`protocols.relay_checks` and the typed models in :mod:`protocols.relay_models`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from protocols.errors import (CLOSE_INVALID_PAYLOAD, CLOSE_MESSAGE_TOO_BIG, LocalProtocolError,
                              RemoteProtocolError)
from protocols.jsonwire import dumps, load_object
from protocols.relay_checks import (CALL_STATES, COACH_MODES, COACH_SEVERITIES, HUB_FIELDS,
                                    LATENCY_STAGES, MAX_EVENT_BODY_BYTES, RESERVED_TYPES, SPEAKERS,
                                    SPECS, check_fields, envelope, epoch_ms)
from protocols.relay_models import (CallEvent, Coach, Delivered, Final, Gap, Latency, OtherEvent,
                                    Partial, RelayEvent, Reply, decode_delivery, encode_gap,
                                    encode_publish, from_wire, to_wire)
from protocols.relay_models import CallState as CallState  # importable from here as before
from protocols.relay_models import CoachMode as CoachMode
from protocols.relay_models import Severity as Severity
from protocols.relay_models import Speaker as Speaker

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
    obj = load_object(body, what="body", close_code=CLOSE_INVALID_PAYLOAD)
    call_id, event_type = envelope(obj)
    if event_type is not None:
        spec = SPECS.get(event_type)
        if spec is not None:
            if event_type in RESERVED_TYPES:
                raise RemoteProtocolError(f"type {event_type!r} is reserved for the relay hub",
                                          close_code=CLOSE_INVALID_PAYLOAD)
            check_fields(obj, event_type, spec)
    return call_id, obj


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
    out["ts"] = epoch_ms(now_s)
    return dumps(out, "event").decode()

