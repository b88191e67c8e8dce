"""Anthropic Messages API streaming events as frozen attrs classes, and their ``type`` tags.

The wire format, the converter and the codecs are in :mod:`protocols.anthropic_stream`, which
re-exports everything here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final, Union

import attrs

__all__ = [
    "DELTA_TAGS",
    "ERROR_STATUS",
    "EVENT_TAGS",
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
]

#: HTTP status of each API error type (the ``error.type`` of an error body).
ERROR_STATUS: Final[Mapping[str, int]] = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "overloaded_error": 529,
}


@attrs.frozen
class Usage:
    """Token counts in ``message_start``; the cache fields appear when prompt caching is on."""

    input_tokens: int
    output_tokens: int
    cache_creation_input_tokens: int | None = None
    cache_read_input_tokens: int | None = None


@attrs.frozen
class Message:
    """The empty message snapshot ``message_start`` carries (``usage`` is absent in some docs)."""

    id: str
    model: str
    role: str = "assistant"
    usage: Usage | None = None


@attrs.frozen
class ContentBlock:
    """A block as ``content_block_start`` opens it: ``{"type": "text", "text": ""}`` and kin.

    Attributes:
        type: ``text``, ``tool_use``, ``thinking`` ... (any string: new kinds pass through).
        text: the ``text`` key, if present.
        extra: every other key as sent (must not hold ``type`` or ``text``).
    """

    type: str
    text: str | None = None
    extra: Mapping[str, Any] = attrs.field(factory=dict)


@attrs.frozen
class TextDelta:
    text: str


@attrs.frozen
class InputJsonDelta:
    """A piece of a tool block's ``input`` as *partial* JSON text (parse after the block stops)."""

    partial_json: str


@attrs.frozen
class ThinkingDelta:
    thinking: str


@attrs.frozen
class SignatureDelta:
    signature: str


@attrs.frozen
class UnknownDelta:
    """A delta type this module does not know (``citations_delta`` ...): the JSON object as sent."""

    type: str
    raw: Mapping[str, Any]


Delta = Union[TextDelta, InputJsonDelta, ThinkingDelta, SignatureDelta, UnknownDelta]


@attrs.frozen
class MessageDeltaBody:
    stop_reason: str | None = None
    stop_sequence: str | None = None


@attrs.frozen
class DeltaUsage:
    """``message_delta`` usage: cumulative ``output_tokens``; newer APIs repeat the input counts."""

    output_tokens: int
    input_tokens: int | None = None
    cache_creation_input_tokens: int | None = None
    cache_read_input_tokens: int | None = None


@attrs.frozen
class MessageStart:
    message: Message


@attrs.frozen
class ContentBlockStart:
    index: int
    content_block: ContentBlock


@attrs.frozen
class ContentBlockDelta:
    index: int
    delta: Delta


@attrs.frozen
class ContentBlockStop:
    index: int


@attrs.frozen
class MessageDelta:
    delta: MessageDeltaBody
    usage: DeltaUsage | None = None


@attrs.frozen
class MessageStop:
    pass


@attrs.frozen
class Ping:
    pass


@attrs.frozen
class StreamError:
    """An ``error`` event: ``{"type": "error", "error": {"type": ..., "message": ...}}``."""

    error_type: str
    message: str


@attrs.frozen
class UnknownEvent:
    """An event type this module does not know: its name and the whole JSON object as sent."""

    type: str
    raw: Mapping[str, Any]


AnthropicEvent = Union[
    MessageStart, ContentBlockStart, ContentBlockDelta, ContentBlockStop, MessageDelta,
    MessageStop, Ping, StreamError, UnknownEvent,
]

EVENT_TAGS: Final[Mapping[type, str]] = {
    MessageStart: "message_start",
    ContentBlockStart: "content_block_start",
    ContentBlockDelta: "content_block_delta",
    ContentBlockStop: "content_block_stop",
    MessageDelta: "message_delta",
    MessageStop: "message_stop",
    Ping: "ping",
    StreamError: "error",
}
DELTA_TAGS: Final[Mapping[type, str]] = {
    TextDelta: "text_delta",
    InputJsonDelta: "input_json_delta",
    ThinkingDelta: "thinking_delta",
    SignatureDelta: "signature_delta",
}
