"""Anthropic Messages stream events: the documented streams, every split, round trips, garbage."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocols.anthropic_stream import (ERROR_STATUS, AnthropicEvent, ContentBlock,
                                        ContentBlockDelta, ContentBlockStart, ContentBlockStop,
                                        DeltaUsage, InputJsonDelta, Message, MessageDelta,
                                        MessageDeltaBody, MessageStart, MessageStop, Ping,
                                        SignatureDelta, StreamError, TextDelta, ThinkingDelta,
                                        UnknownDelta, UnknownEvent, Usage, decode_event,
                                        encode_event, error_body, script_reply)
from protocols.errors import LocalProtocolError, RemoteProtocolError
from protocols.sse import EOF, NEED_DATA, SSEEvent, SSEReader

FIXTURES = Path(__file__).parent / "fixtures" / "anthropic"
# Verbatim from "Streaming Messages" (platform.claude.com/docs/en/build-with-claude/streaming),
# "Basic streaming request" response. The tool-use and thinking examples are verbatim too, plus
# the blank line that ends the last event (the docs' code blocks trim it; without it the
# reader rightly drops message_stop).
HELLO = (FIXTURES / "stream_hello.sse").read_bytes()
TOOL_USE = (FIXTURES / "stream_tool_use.sse").read_bytes()
THINKING = (FIXTURES / "stream_thinking.sse").read_bytes()

HELLO_EVENTS: list[AnthropicEvent] = [
    MessageStart(Message(id="msg_1nZdL29xx5MUA1yADyHTEsnR8uuvGzszyY",
                         model="claude-opus-4-1-20250805", role="assistant",
                         usage=Usage(input_tokens=25, output_tokens=1))),
    ContentBlockStart(index=0, content_block=ContentBlock(type="text", text="")),
    Ping(),
    ContentBlockDelta(index=0, delta=TextDelta(text="Hello")),
    ContentBlockDelta(index=0, delta=TextDelta(text="!")),
    ContentBlockStop(index=0),
    MessageDelta(delta=MessageDeltaBody(stop_reason="end_turn", stop_sequence=None),
                 usage=DeltaUsage(output_tokens=15)),
    MessageStop(),
]


def decode_stream(chunks: list[bytes]) -> list[AnthropicEvent]:
    reader = SSEReader()
    out: list[AnthropicEvent] = []
    for chunk in [*(c for c in chunks if c), b""]:
        reader.receive_data(chunk)
        while True:
            item = reader.next_event()
            if item is NEED_DATA or item is EOF:
                break
            assert isinstance(item, SSEEvent)
            out.append(decode_event(item))
    return out


# -- the documented streams ---------------------------------------------------------------------
def test_documented_stream_decodes_to_the_expected_events() -> None:
    assert decode_stream([HELLO]) == HELLO_EVENTS


@pytest.mark.parametrize("ending", [b"\n", b"\r\n"], ids=["LF", "CRLF"])
def test_documented_stream_at_every_split_point(ending: bytes) -> None:
    data = HELLO.replace(b"\n", ending)
    for i in range(len(data) + 1):
        assert decode_stream([data[:i], data[i:]]) == HELLO_EVENTS, i


def test_documented_stream_in_three_pieces_everywhere() -> None:
    step = 7  # every pair of split points would be ~500k parses; a coprime stride covers the mix
    for i in range(0, len(HELLO), step):
        for j in range(i, len(HELLO), step * 3):
            assert decode_stream([HELLO[:i], HELLO[i:j], HELLO[j:]]) == HELLO_EVENTS


def test_text_reassembles() -> None:
    text = "".join(e.delta.text for e in decode_stream([HELLO])
                   if isinstance(e, ContentBlockDelta) and isinstance(e.delta, TextDelta))
    assert text == "Hello!"


def test_tool_use_stream() -> None:
    events = decode_stream([TOOL_USE])
    assert len(events) == 30
    tool_start = events[17]
    assert tool_start == ContentBlockStart(index=1, content_block=ContentBlock(
        type="tool_use", extra={"id": "toolu_01T1x1fJ34qAmk2tNTrN7Up6", "name": "get_weather",
                                "input": {}}))
    partial = "".join(e.delta.partial_json for e in events
                      if isinstance(e, ContentBlockDelta) and isinstance(e.delta, InputJsonDelta))
    assert orjson.loads(partial) == {"location": "San Francisco, CA", "unit": "fahrenheit"}
    assert events[-2] == MessageDelta(MessageDeltaBody("tool_use", None), DeltaUsage(89))


def test_thinking_stream_without_usage() -> None:
    events = decode_stream([THINKING])
    assert events[0] == MessageStart(Message(id="msg_01...", model="claude-opus-4-1-20250805"))
    assert events[1].content_block == ContentBlock(type="thinking", extra={"thinking": ""})
    kinds = [type(e.delta) for e in events if isinstance(e, ContentBlockDelta)]
    assert kinds == [ThinkingDelta] * 6 + [SignatureDelta, TextDelta]
    assert events[-2] == MessageDelta(MessageDeltaBody("end_turn", None), usage=None)


@pytest.mark.parametrize("fixture", [HELLO, TOOL_USE, THINKING], ids=["hello", "tool", "think"])
def test_reencoded_documented_streams_decode_the_same(fixture: bytes) -> None:
    events = decode_stream([fixture])
    assert decode_stream([b"".join(encode_event(e) for e in events)]) == events


def test_wire_json_keeps_the_documented_shape() -> None:
    # The SDK builds its message snapshot from message_start: content [] and the nulls matter.
    data = encode_event(HELLO_EVENTS[0]).split(b"data: ", 1)[1]
    assert orjson.loads(data) == orjson.loads(HELLO.split(b"data: ", 1)[1].split(b"\n", 1)[0])
    assert encode_event(Ping()) == b'event: ping\ndata: {"type":"ping"}\n\n'


# -- the emulator's script ----------------------------------------------------------------------
def test_script_reply_reproduces_the_documented_stream() -> None:
    events = script_reply(["Hello", "!"], "claude-opus-4-1-20250805", 25,
                          message_id="msg_1nZdL29xx5MUA1yADyHTEsnR8uuvGzszyY", output_tokens=15,
                          cache_creation_input_tokens=None, cache_read_input_tokens=None)
    assert events == HELLO_EVENTS


def test_script_reply_defaults() -> None:
    events = script_reply(["Hola", ", ", "¿en qué puedo ayudarle?"], "claude-haiku-4-5", 40)
    start = events[0]
    assert isinstance(start, MessageStart)
    assert start.message.id.startswith("msg_01") and len(start.message.id) == 28
    assert start.message.usage == Usage(40, 1, 0, 0)
    assert [type(e) for e in events] == [MessageStart, ContentBlockStart, Ping, ContentBlockDelta,
                                         ContentBlockDelta, ContentBlockDelta, ContentBlockStop,
                                         MessageDelta, MessageStop]
    assert events[-2] == MessageDelta(MessageDeltaBody("end_turn", None), DeltaUsage(3))
    wire = b"".join(encode_event(e) for e in events)
    assert decode_stream([wire]) == events


@pytest.mark.parametrize(("pieces", "kwargs"), [
    ("Hello", {}), (["a", 1], {}), (["a"], {"output_tokens": -1}),
    (["a"], {"cache_read_input_tokens": True}), (["a"], {"input_tokens": None}),
])
def test_script_reply_refuses_bad_arguments(pieces: Any, kwargs: dict[str, Any]) -> None:
    args: dict[str, Any] = {"input_tokens": 1, **kwargs}
    with pytest.raises(LocalProtocolError):
        script_reply(pieces, "m", **args)


# -- errors -------------------------------------------------------------------------------------
def test_in_stream_error_event() -> None:
    # Verbatim from the docs' "Error events".
    data = b'event: error\ndata: {"type": "error", "error": {"type": "overloaded_error", ' \
           b'"message": "Overloaded"}}\n\n'
    assert decode_stream([data]) == [StreamError("overloaded_error", "Overloaded")]
    assert decode_stream([encode_event(StreamError("overloaded_error", "Overloaded"))]) == [
        StreamError("overloaded_error", "Overloaded")]


def test_error_body_and_statuses() -> None:
    assert orjson.loads(error_body("rate_limit_error", "slow down", "req_011")) == {
        "type": "error", "error": {"type": "rate_limit_error", "message": "slow down"},
        "request_id": "req_011"}
    assert "request_id" not in orjson.loads(error_body("api_error", "boom"))
    assert ERROR_STATUS == {
        "invalid_request_error": 400, "authentication_error": 401, "billing_error": 402,
        "permission_error": 403, "not_found_error": 404, "request_too_large": 413,
        "rate_limit_error": 429, "api_error": 500, "overloaded_error": 529}
    with pytest.raises(LocalProtocolError):
        error_body("teapot_error", "no")


# -- unknowns -----------------------------------------------------------------------------------
def test_unknown_event_and_delta_pass_through() -> None:
    new = SSEEvent("brand_new", '{"type":"brand_new","x":[1,{"y":null}]}')
    assert decode_event(new) == UnknownEvent("brand_new", {"type": "brand_new",
                                                           "x": [1, {"y": None}]})
    citation = SSEEvent("content_block_delta", '{"type":"content_block_delta","index":2,'
                        '"delta":{"type":"citations_delta","citation":{"cited_text":"x"}}}')
    event = decode_event(citation)
    assert event == ContentBlockDelta(2, UnknownDelta("citations_delta", {
        "type": "citations_delta", "citation": {"cited_text": "x"}}))
    assert encode_event(event).endswith(b'"delta":{"type":"citations_delta",'
                                        b'"citation":{"cited_text":"x"}}}\n\n')


def test_extra_keys_of_known_events_are_ignored() -> None:
    sse = SSEEvent("message_delta", '{"type":"message_delta","delta":{"stop_reason":"end_turn",'
                   '"stop_sequence":null},"usage":{"input_tokens":10682,'
                   '"cache_creation_input_tokens":0,"cache_read_input_tokens":0,'
                   '"output_tokens":510,"server_tool_use":{"web_search_requests":1}}}')
    assert decode_event(sse) == MessageDelta(MessageDeltaBody("end_turn"),
                                             DeltaUsage(510, 10682, 0, 0))


# -- bad input ----------------------------------------------------------------------------------
@pytest.mark.parametrize(("event", "data", "needle"), [
    ("ping", "{", "not JSON"),
    ("ping", "[]", "JSON object"),
    ("ping", '{"kind":"ping"}', "data.type"),
    ("ping", '{"type":"message_stop"}', "differs"),
    ("message_start", '{"type":"message_start"}', "$.message is required"),
    ("message_start", '{"type":"message_start","message":[]}', "$.message: expected an object"),
    ("message_start", '{"type":"message_start","message":{"id":"m","model":"x",'
                      '"usage":{"input_tokens":true,"output_tokens":1}}}',
     "$.message.usage.input_tokens: expected an integer, got boolean"),
    ("content_block_delta", '{"type":"content_block_delta","index":"0",'
                            '"delta":{"type":"text_delta","text":"a"}}', "$.index"),
    ("content_block_delta", '{"type":"content_block_delta","index":0,'
                            '"delta":{"type":"text_delta","text":null}}', "$.delta.text"),
    ("content_block_delta", '{"type":"content_block_delta","index":0,"delta":{"type":[1]}}',
     "$.delta: type: expected a string"),
    ("content_block_delta", '{"type":"content_block_delta","index":0,"delta":7}',
     "$.delta: expected an object"),
    ("content_block_delta", '{"type":"content_block_delta","index":0,"delta":{}}',
     "$.delta: type is required"),
    ("content_block_start", '{"type":"content_block_start","index":0,"content_block":{"text":1}}',
     "$.content_block: type is required"),
    ("error", '{"type":"error","error":{"type":"overloaded_error"}}', "$.error.message"),
    ("message_delta", '{"type":"message_delta","delta":{"stop_reason":1}}',
     "$.delta.stop_reason"),
])
def test_bad_events_say_what_is_wrong(event: str, data: str, needle: str) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        decode_event(SSEEvent(event, data))
    assert needle in info.value.reason


def test_encode_refuses_inconsistent_unknowns() -> None:
    with pytest.raises(LocalProtocolError):
        encode_event(UnknownEvent("a", {"type": "b"}))
    with pytest.raises(LocalProtocolError):
        encode_event(UnknownEvent("a\nb", {"type": "a\nb"}))
    with pytest.raises(LocalProtocolError):
        encode_event(ContentBlockDelta(0, UnknownDelta("x", {})))
    with pytest.raises(LocalProtocolError):
        encode_event(ContentBlockStart(0, ContentBlock("text", "", extra={"text": "dup"})))
    with pytest.raises(LocalProtocolError):
        encode_event(ContentBlockDelta(0, "not a delta"))  # type: ignore[arg-type]
    with pytest.raises(LocalProtocolError):
        encode_event("ping")  # type: ignore[arg-type]
    with pytest.raises(LocalProtocolError):
        encode_event(ContentBlockDelta(0, TextDelta("\ud800")))


# -- properties ---------------------------------------------------------------------------------
KNOWN_TYPES = ["message_start", "content_block_start", "content_block_delta",
               "content_block_stop", "message_delta", "message_stop", "ping", "error"]
KNOWN_DELTAS = ["text_delta", "input_json_delta", "thinking_delta", "signature_delta"]

counts = st.integers(0, 2**53)
opt_counts = st.none() | counts
opt_text = st.none() | st.text()
json_leaf = (st.none() | st.booleans() | st.integers(-2**63, 2**64 - 1)
             | st.floats(allow_nan=False, allow_infinity=False) | st.text())
json_value = st.recursive(json_leaf, lambda inner: st.lists(inner, max_size=3)
                          | st.dictionaries(st.text(max_size=5), inner, max_size=3), max_leaves=8)
tag = st.text(st.characters(codec="ascii", exclude_characters="\r\n"), min_size=1, max_size=12)


def raw_with_type(t: str) -> st.SearchStrategy[dict[str, Any]]:
    return st.dictionaries(st.text(max_size=8), json_value, max_size=4).map(
        lambda d: {**d, "type": t})


deltas = st.one_of(
    st.builds(TextDelta, st.text()),
    st.builds(InputJsonDelta, st.text()),
    st.builds(ThinkingDelta, st.text()),
    st.builds(SignatureDelta, st.text()),
    tag.filter(lambda t: t not in KNOWN_DELTAS).flatmap(
        lambda t: raw_with_type(t).map(lambda raw: UnknownDelta(t, raw))),
)
content_blocks = st.builds(
    ContentBlock, st.text(), opt_text,
    st.dictionaries(st.text(max_size=8).filter(lambda k: k not in ("type", "text")), json_value,
                    max_size=3))
events = st.one_of(
    st.builds(MessageStart, st.builds(Message, st.text(), st.text(), st.text(),
                                      st.none() | st.builds(Usage, counts, counts, opt_counts,
                                                            opt_counts))),
    st.builds(ContentBlockStart, counts, content_blocks),
    st.builds(ContentBlockDelta, counts, deltas),
    st.builds(ContentBlockStop, counts),
    st.builds(MessageDelta, st.builds(MessageDeltaBody, opt_text, opt_text),
              st.none() | st.builds(DeltaUsage, counts, opt_counts, opt_counts, opt_counts)),
    st.just(MessageStop()),
    st.just(Ping()),
    st.builds(StreamError, st.text(), st.text()),
    tag.filter(lambda t: t not in KNOWN_TYPES).flatmap(
        lambda t: raw_with_type(t).map(lambda raw: UnknownEvent(t, raw))),
)


@given(events)
@settings(max_examples=500)
def test_decode_of_encode_is_identity(event: AnthropicEvent) -> None:
    assert decode_stream([encode_event(event)]) == [event]


@given(st.sampled_from(KNOWN_TYPES), st.dictionaries(
    st.sampled_from(["message", "index", "content_block", "delta", "usage", "error", "x"]),
    json_value | st.fixed_dictionaries({}, optional={
        "type": st.sampled_from(KNOWN_DELTAS) | st.text(max_size=3) | json_value,
        "id": json_value, "model": json_value, "text": json_value,
        "usage": json_value, "output_tokens": json_value, "message": json_value}),
    max_size=4))
@settings(max_examples=600)
def test_wrong_shapes_only_raise_remote_protocol_error(event_type: str, fields: dict) -> None:
    sse = SSEEvent(event_type, orjson.dumps({**fields, "type": event_type}).decode())
    try:
        decode_event(sse)
    except RemoteProtocolError:
        pass


@given(st.text(max_size=10), st.binary(max_size=200))
@settings(max_examples=500)
def test_garbage_data_only_raises_remote_protocol_error(name: str, data: bytes) -> None:
    try:
        decode_event(SSEEvent(name, data.decode("utf-8", "replace")))
    except RemoteProtocolError:
        pass


@given(st.binary(max_size=300))
@settings(max_examples=300)
def test_garbage_streams_only_raise_remote_protocol_error(data: bytes) -> None:
    try:
        decode_stream([HELLO[:200], data, HELLO[200:]])
    except RemoteProtocolError:
        pass
