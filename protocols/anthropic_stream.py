"""Anthropic Messages API streaming events (``stream: true``), as frozen attrs messages.

The wire is SSE (:mod:`protocols.sse`): every event's ``event:`` name equals the ``type`` in its
JSON ``data:``. The documented order of one reply is ``message_start``; per content block
``content_block_start`` → ``content_block_delta``… → ``content_block_stop``; one or more
``message_delta`` (its ``usage`` is *cumulative*); ``message_stop``. ``ping`` may come anywhere,
``error`` replaces the rest of the stream (an in-stream ``overloaded_error`` is the streaming
twin of HTTP 529), and unknown event or delta types must be tolerated (versioning policy): they
decode to :class:`UnknownEvent` / :class:`UnknownDelta`, which keep the whole JSON object.

Sources: "Streaming Messages" (platform.claude.com/docs/en/build-with-claude/streaming) and the
notes in ``shared/protocols/anthropic-trio-aws.md`` §2, which also list the HTTP error types.

Two users: a client that wants typed events out of a byte stream (``SSEReader`` →
:func:`decode_event`), and the emulator in ``bench/`` that must be indistinguishable from the API
for the official SDK (:func:`script_reply` → :func:`encode_event`, :func:`error_body`).

Decoding keeps what the SDK reads and drops the rest: ``message_start`` keeps ``id``, ``model``,
``role`` and ``usage`` (``content`` is always ``[]`` there and the stop fields ``null``, so the
encoder writes them back as constants); unknown keys elsewhere are ignored, except in a
``content_block``, whose keys other than ``type``/``text`` (a tool block's ``id``, ``name``,
``input``; a thinking block's ``thinking``) are kept in :attr:`ContentBlock.extra`.

The event classes live in :mod:`protocols.anthropic_events` and are re-exported here; the strict
JSON plumbing is :mod:`protocols.jsonwire`.
"""

from __future__ import annotations

import secrets
import string
from collections.abc import Iterable, Mapping
from typing import Any, Final

import attrs
import cattrs
from cattrs.errors import BaseValidationError
from cattrs.gen import make_dict_structure_fn, make_dict_unstructure_fn
from cattrs.strategies import configure_tagged_union
from cattrs.v import format_exception

from protocols.anthropic_events import (
    DELTA_TAGS,
    ERROR_STATUS,
    EVENT_TAGS,
    AnthropicEvent,
    ContentBlock,
    ContentBlockDelta,
    ContentBlockStart,
    ContentBlockStop,
    Delta,
    DeltaUsage,
    InputJsonDelta,
    Message,
    MessageDelta,
    MessageDeltaBody,
    MessageStart,
    MessageStop,
    Ping,
    SignatureDelta,
    StreamError,
    TextDelta,
    ThinkingDelta,
    UnknownDelta,
    UnknownEvent,
    Usage,
)
from protocols.errors import CLOSE_INVALID_PAYLOAD, LocalProtocolError, RemoteProtocolError
from protocols.jsonwire import (
    InvalidValue,
    dumps,
    expected,
    json_kind,
    load_object,
    objects_only,
    strict_int,
    strict_object,
    strict_str,
    validation_problems,
)
from protocols.sse import SSEEvent

__all__ = [
    "ERROR_STATUS",
    "AnthropicEvent",
    "ContentBlock",
    "ContentBlockDelta",
    "ContentBlockStart",
    "ContentBlockStop",
    "Delta",
    "DeltaUsage",
    "InputJsonDelta",
    "Message",
    "MessageDelta",
    "MessageDeltaBody",
    "MessageStart",
    "MessageStop",
    "Ping",
    "SignatureDelta",
    "StreamError",
    "TextDelta",
    "ThinkingDelta",
    "UnknownDelta",
    "UnknownEvent",
    "Usage",
    "decode_event",
    "encode_event",
    "error_body",
    "script_reply",
]


# -- the converter -------------------------------------------------------------------------------
@attrs.frozen
class _ErrorDetail:  # the wire shape of an ``error`` event, flattened into StreamError
    type: str
    message: str


@attrs.frozen
class _ErrorWire:
    error: _ErrorDetail


def _structure_content_block(value: Any, _: type) -> ContentBlock:
    obj = strict_object(value)
    if "type" not in obj:
        raise InvalidValue("type is required")
    block_type = obj["type"]
    if type(block_type) is not str:
        raise InvalidValue(f"type: expected a string, got {json_kind(block_type)}")
    text = obj.get("text")
    if text is not None and type(text) is not str:
        raise InvalidValue(f"text: expected a string, got {json_kind(text)}")
    extra = {k: v for k, v in obj.items() if k != "type" and k != "text"}
    return ContentBlock(type=block_type, text=text, extra=extra)


def _unstructure_content_block(block: ContentBlock) -> dict[str, Any]:
    out: dict[str, Any] = {"type": block.type}
    if block.text is not None:
        out["text"] = block.text
    if block.extra:
        if "type" in block.extra or "text" in block.extra:
            raise LocalProtocolError("ContentBlock.extra must not hold 'type' or 'text'")
        out.update(block.extra)
    return out


def _structure_unknown_delta(value: Any, _: type) -> UnknownDelta:
    obj = strict_object(value)
    delta_type = obj.get("type")
    if type(delta_type) is not str:
        raise InvalidValue(f"type: expected a string, got {json_kind(delta_type)}")
    return UnknownDelta(type=delta_type, raw=obj)


def _unstructure_unknown_delta(delta: UnknownDelta) -> dict[str, Any]:
    if delta.raw.get("type") != delta.type:
        raise LocalProtocolError("UnknownDelta.raw['type'] must equal UnknownDelta.type")
    return dict(delta.raw)


def _unstructure_message(message: Message) -> dict[str, Any]:
    # Key order and constants as the API sends them; the SDK builds its snapshot from this.
    out: dict[str, Any] = {
        "id": message.id, "type": "message", "role": message.role, "content": [],
        "model": message.model, "stop_reason": None, "stop_sequence": None,
    }
    if message.usage is not None:
        out["usage"] = _converter.unstructure(message.usage)
    return out


def _structure_stream_error(value: Any, _: type) -> StreamError:
    wire = _converter.structure(value, _ErrorWire)
    return StreamError(error_type=wire.error.type, message=wire.error.message)


def _unstructure_stream_error(event: StreamError) -> dict[str, Any]:
    return {"error": {"type": event.error_type, "message": event.message}}


def _structure_unknown_event(value: Any, _: type) -> UnknownEvent:
    obj = strict_object(value)
    return UnknownEvent(type=obj["type"], raw=obj)  # decode_event checked ``type`` is a string


def _tagged_only(hook: Any) -> Any:
    """Wrap a tagged union's hook: an object with a string ``type``, or a precise complaint."""

    def structure(value: Any, cl: Any) -> Any:
        if type(value) is not dict:
            raise expected("an object", value)
        if "type" not in value:
            raise InvalidValue("type is required")
        if type(value["type"]) is not str:
            raise InvalidValue(f"type: expected a string, got {json_kind(value['type'])}")
        return hook(value, cl)

    return structure


def _build_converter() -> cattrs.Converter:
    conv = cattrs.Converter(detailed_validation=True)
    conv.register_structure_hook(str, strict_str)
    conv.register_structure_hook(int, strict_int)
    conv.register_structure_hook(ContentBlock, _structure_content_block)
    conv.register_unstructure_hook(ContentBlock, _unstructure_content_block)
    conv.register_structure_hook(UnknownDelta, _structure_unknown_delta)
    conv.register_unstructure_hook(UnknownDelta, _unstructure_unknown_delta)
    conv.register_unstructure_hook(Message, _unstructure_message)
    conv.register_structure_hook(StreamError, _structure_stream_error)
    conv.register_unstructure_hook(StreamError, _unstructure_stream_error)
    conv.register_structure_hook(UnknownEvent, _structure_unknown_event)
    # Optional counters are left out when unset, as the API does; stop fields are always written.
    for cls in (Usage, DeltaUsage, MessageDelta):
        conv.register_unstructure_hook(cls, make_dict_unstructure_fn(
            cls, conv, _cattrs_omit_if_default=True))

    # Generated hooks capture their fields' hooks: build leaves first, then what holds them.
    def structure_with(*classes: type) -> None:
        for cls in classes:
            conv.register_structure_hook(cls, objects_only(make_dict_structure_fn(cls, conv)))

    def tagged(union: Any, tags: Mapping[type, str], default: type) -> None:
        configure_tagged_union(union, conv, tag_generator=lambda cl: tags.get(cl, ""),
                               tag_name="type", default=default)
        conv.register_structure_hook(union, _tagged_only(conv.get_structure_hook(union)))

    structure_with(Usage, DeltaUsage, Message, MessageDeltaBody, _ErrorDetail, _ErrorWire,
                   *DELTA_TAGS)
    tagged(Delta, DELTA_TAGS, UnknownDelta)
    # The strategy appends the tag last and would stamp UnknownDelta with its placeholder tag:
    # write the tag first, as the API does, and unknown deltas exactly as they came.
    delta_hooks = {cls: conv.get_unstructure_hook(cls) for cls in DELTA_TAGS}

    def unstructure_delta(delta: Any) -> dict[str, Any]:
        if type(delta) is UnknownDelta:
            return _unstructure_unknown_delta(delta)
        return {"type": DELTA_TAGS[type(delta)], **delta_hooks[type(delta)](delta)}

    conv.register_unstructure_hook(Delta, unstructure_delta)
    structure_with(*(cls for cls in EVENT_TAGS if cls is not StreamError))
    tagged(AnthropicEvent, EVENT_TAGS, UnknownEvent)
    return conv


_converter: Final = _build_converter()
_STRUCTURE_EVENT: Final = _converter.get_structure_hook(AnthropicEvent)
_UNSTRUCTURE: Final[Mapping[type, Any]] = {
    cls: _converter.get_unstructure_hook(cls) for cls in EVENT_TAGS
}


def _format(exc: BaseException, typ: type | None) -> str:
    if isinstance(exc, InvalidValue):
        return str(exc)
    if isinstance(exc, KeyError):
        return "is required"
    return format_exception(exc, typ)


def _problems(exc: BaseException) -> list[str]:
    # cattrs says "<what> @ <path>"; a reason reads better path first.
    return [
        f"{path} {what}" if what == "is required" else f"{path}: {what}"
        for path, what in validation_problems(exc, describe=_format)
    ]


# -- codecs --------------------------------------------------------------------------------------
def decode_event(sse: SSEEvent) -> AnthropicEvent:
    """The typed event in one SSE event of a Messages stream.

    Raises:
        RemoteProtocolError: data that is not a JSON object with a string ``type``, a ``type``
            that differs from the SSE event name, or a known event with missing or mistyped
            fields (the reason names the JSON path).
    """
    obj = load_object(sse.data, what=f"{sse.event!r} event: data", close_code=CLOSE_INVALID_PAYLOAD,
                      invalid="is not JSON")
    event_type = obj.get("type")
    if type(event_type) is not str:
        raise RemoteProtocolError(
            f"{sse.event!r} event: data.type must be a string, got {json_kind(event_type)}",
            close_code=CLOSE_INVALID_PAYLOAD)
    if event_type != sse.event:
        raise RemoteProtocolError(
            f"SSE event name {sse.event!r} differs from its data.type {event_type!r}",
            close_code=CLOSE_INVALID_PAYLOAD)
    try:
        return _STRUCTURE_EVENT(obj, AnthropicEvent)
    # InvalidValue, what the hooks raise, is a TypeError.
    except (BaseValidationError, KeyError, TypeError, ValueError, AttributeError) as exc:
        problems = "; ".join(_problems(exc))
        raise RemoteProtocolError(f"{event_type} event: {problems}",
                                  close_code=CLOSE_INVALID_PAYLOAD) from None


def encode_event(event: AnthropicEvent) -> bytes:
    """One event as the API writes it: ``event: <type>\\ndata: <json>\\n\\n``.

    Raises:
        LocalProtocolError: an :class:`UnknownEvent` whose ``raw["type"]`` is not its ``type`` (or
            is not one SSE line), or content that JSON cannot hold.
    """
    if type(event) is UnknownEvent:
        name = event.type
        if event.raw.get("type") != name or not name or "\n" in name or "\r" in name:
            raise LocalProtocolError(
                f"UnknownEvent type {name!r} must be one line equal to raw['type']")
        body: Mapping[str, Any] = event.raw
    else:
        try:
            name = EVENT_TAGS[type(event)]
        except KeyError:
            raise LocalProtocolError(f"not an Anthropic stream event: {event!r}") from None
        try:
            body = {"type": name, **_UNSTRUCTURE[type(event)](event)}
        except (KeyError, TypeError, AttributeError) as exc:  # e.g. a foreign object as delta
            raise LocalProtocolError(f"cannot encode {event!r}: {exc!r}") from None
    data = dumps(body, f"{name} event")
    return b"event: " + name.encode() + b"\ndata: " + data + b"\n\n"


_ID_ALPHABET: Final = string.ascii_letters + string.digits


def _message_id() -> str:
    return "msg_01" + "".join(secrets.choice(_ID_ALPHABET) for _ in range(22))


def script_reply(
    text_pieces: Iterable[str],
    model: str,
    input_tokens: int,
    *,
    message_id: str | None = None,
    output_tokens: int | None = None,
    cache_creation_input_tokens: int | None = 0,
    cache_read_input_tokens: int | None = 0,
    stop_reason: str = "end_turn",
    stop_sequence: str | None = None,
) -> list[AnthropicEvent]:
    """The events of one streamed text reply, in the documented order.

    ``message_start`` (usage: ``input_tokens``, ``output_tokens`` 1 and the cache counters,
    which the current API always sends; ``None`` leaves one out, as the docs' example does),
    ``content_block_start`` (empty text block 0), ``ping``, one ``text_delta`` per piece,
    ``content_block_stop``, ``message_delta`` (``stop_reason``, cumulative ``output_tokens``:
    ``output_tokens`` or one per piece), ``message_stop``. Encode each with :func:`encode_event`.

    Args:
        text_pieces: the reply's text deltas, in order (not a bare string).
        message_id: defaults to a fresh API-shaped id (``msg_01`` + 22 letters and digits).

    Raises:
        LocalProtocolError: ``text_pieces`` is a string or holds a non-string, or a count is
            not a non-negative int.
    """
    if isinstance(text_pieces, str):
        raise LocalProtocolError("text_pieces must be an iterable of strings, not one string")
    pieces = list(text_pieces)
    if any(type(p) is not str for p in pieces):
        raise LocalProtocolError("every text piece must be a string")
    final_output = max(1, len(pieces)) if output_tokens is None else output_tokens
    cache_counts = (cache_creation_input_tokens, cache_read_input_tokens)
    if any(type(n) is not int or n < 0 for n in (input_tokens, final_output)) or any(
            n is not None and (type(n) is not int or n < 0) for n in cache_counts):
        raise LocalProtocolError("token counts must be non-negative ints")
    usage = Usage(input_tokens=input_tokens, output_tokens=1,
                  cache_creation_input_tokens=cache_creation_input_tokens,
                  cache_read_input_tokens=cache_read_input_tokens)
    message = Message(id=message_id or _message_id(), model=model, usage=usage)
    return [
        MessageStart(message=message),
        ContentBlockStart(index=0, content_block=ContentBlock(type="text", text="")),
        Ping(),
        *(ContentBlockDelta(index=0, delta=TextDelta(text=p)) for p in pieces),
        ContentBlockStop(index=0),
        MessageDelta(delta=MessageDeltaBody(stop_reason=stop_reason, stop_sequence=stop_sequence),
                     usage=DeltaUsage(output_tokens=final_output)),
        MessageStop(),
    ]


def error_body(error_type: str, message: str, request_id: str | None = None) -> bytes:
    """The JSON body of an HTTP error response; send it with ``ERROR_STATUS[error_type]``.

    ``{"type": "error", "error": {"type": ..., "message": ...}, "request_id": "req_..."}``; the
    SDK also reads the id from a ``request-id`` header, which the caller should send too.

    Raises:
        LocalProtocolError: an ``error_type`` not in :data:`ERROR_STATUS`.
    """
    if error_type not in ERROR_STATUS:
        raise LocalProtocolError(f"unknown API error type {error_type!r}")
    body: dict[str, Any] = {"type": "error", "error": {"type": error_type, "message": message}}
    if request_id is not None:
        body["request_id"] = request_id
    return dumps(body, "error body")
