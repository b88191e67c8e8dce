"""The SSE reader against the WHATWG rules, fed at every split point; the writer round-trips."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocols.errors import CLOSE_MESSAGE_TOO_BIG, LocalProtocolError, RemoteProtocolError
from protocols.sse import EOF, MAX_BUFFER_BYTES, NEED_DATA, SSEEvent, SSEReader, encode_sse

FIXTURES = Path(__file__).parent / "fixtures" / "anthropic"
HELLO = (FIXTURES / "stream_hello.sse").read_bytes()


def read_all(chunks: list[bytes], **kwargs: int) -> list[SSEEvent]:
    """Feed chunks one by one (draining after each), then EOF; every event in order."""
    reader = SSEReader(**kwargs)
    events: list[SSEEvent] = []

    def drain() -> object:
        while True:
            item = reader.next_event()
            if isinstance(item, SSEEvent):
                events.append(item)
            else:
                return item

    for chunk in chunks:
        if chunk:  # b"" would mean EOF
            reader.receive_data(chunk)
            assert drain() is NEED_DATA
    reader.receive_data(b"")
    assert drain() is EOF
    assert reader.next_event() is EOF  # and stays there
    return events


def every_split(data: bytes) -> list[list[bytes]]:
    return [[data[:i], data[i:]] for i in range(len(data) + 1)]


# -- the documented stream ----------------------------------------------------------------------
HELLO_NAMES = ["message_start", "content_block_start", "ping", "content_block_delta",
               "content_block_delta", "content_block_stop", "message_delta", "message_stop"]


def test_documented_stream_in_one_piece() -> None:
    events = read_all([HELLO])
    assert [e.event for e in events] == HELLO_NAMES
    assert events[2] == SSEEvent(event="ping", data='{"type": "ping"}')
    assert all(e.data.startswith('{"type": "') and e.id is None and e.retry is None
               for e in events)


@pytest.mark.parametrize("ending", [b"\n", b"\r\n", b"\r"], ids=["LF", "CRLF", "CR"])
def test_documented_stream_at_every_split_point(ending: bytes) -> None:
    data = HELLO.replace(b"\n", ending)
    expected = read_all([HELLO])
    for chunks in every_split(data):
        assert read_all(chunks) == expected, chunks


@pytest.mark.parametrize("ending", [b"\n", b"\r\n", b"\r"], ids=["LF", "CRLF", "CR"])
def test_documented_stream_byte_by_byte(ending: bytes) -> None:
    data = HELLO.replace(b"\n", ending)
    assert read_all([data[i:i + 1] for i in range(len(data))]) == read_all([HELLO])


def test_mixed_line_endings_in_one_stream() -> None:
    data = b"event: a\rdata: 1\r\ndata: 2\n\r\nevent: b\ndata: 3\r\r"
    expected = [SSEEvent("a", "1\n2"), SSEEvent("b", "3")]
    for chunks in every_split(data):
        assert read_all(chunks) == expected


def test_cr_then_lf_across_chunks_is_one_line_end() -> None:
    # A CR ending a chunk must not turn a following LF into an extra blank line (an early dispatch).
    assert read_all([b"data: a\r", b"\ndata: b\r", b"\n\r", b"\n"]) == [SSEEvent(data="a\nb")]


# -- field rules (the HTML standard's own examples first) ---------------------------------------
def test_standard_example_stock_ticker() -> None:
    assert read_all([b"data: YHOO\ndata: +2\ndata: 10\n\n"]) == [SSEEvent(data="YHOO\n+2\n10")]


def test_standard_example_empty_data_and_unterminated_last_event() -> None:
    # "data\n\ndata\ndata\n\ndata:" -> "" then "\n"; the last block has no blank line: dropped.
    assert read_all([b"data\n\ndata\ndata\n\ndata:"]) == [SSEEvent(data=""), SSEEvent(data="\n")]


def test_standard_example_one_optional_space() -> None:
    assert read_all([b"data:test\n\ndata: test\n\ndata:  test\n\n"]) == [
        SSEEvent(data="test"), SSEEvent(data="test"), SSEEvent(data=" test")]


def test_comments_are_ignored() -> None:
    data = b": hello\n:\nevent: x\n: in the middle\ndata: 1\n:data: 2\n\n: trailing\n"
    assert read_all([data]) == [SSEEvent("x", "1")]


def test_comment_only_stream_gives_no_event() -> None:
    assert read_all([b": keepalive\n\n: keepalive\n\n"]) == []


def test_block_without_data_dispatches_nothing_and_resets_the_name() -> None:
    assert read_all([b"event: lonely\n\ndata: x\n\n"]) == [SSEEvent("message", "x")]


def test_empty_event_name_means_message() -> None:
    assert read_all([b"event:\ndata: x\n\n"]) == [SSEEvent("message", "x")]


def test_unknown_fields_and_field_without_colon() -> None:
    data = b"foo: bar\nevent\ndata: x\nweird\n\n"
    # "event" alone sets an empty name (-> message); "weird" is an unknown field.
    assert read_all([data]) == [SSEEvent("message", "x")]


def test_last_field_wins_for_event_name() -> None:
    assert read_all([b"event: a\nevent: b\ndata: x\n\n"]) == [SSEEvent("b", "x")]


def test_id_persists_and_nul_is_ignored() -> None:
    data = b"id: 1\ndata: a\n\ndata: b\n\nid: 2\x003\ndata: c\n\nid\ndata: d\n\n"
    assert [e.id for e in read_all([data])] == ["1", "1", "1", ""]


def test_last_event_id_moves_only_at_a_blank_line() -> None:
    reader = SSEReader()
    reader.receive_data(b"id: 1\ndata: a\n\nid: 2\ndata: b\n")
    assert reader.next_event() == SSEEvent(data="a", id="1")
    assert reader.next_event() is NEED_DATA
    assert reader.last_event_id == "1"
    reader.receive_data(b"")
    assert reader.next_event() is EOF
    assert reader.last_event_id == "1"  # the id of the dropped event never counted


def test_retry_needs_ascii_digits() -> None:
    data = (b"retry: 3000\ndata: a\n\nretry: 1.5\ndata: b\n\nretry: \xd9\xa3\ndata: c\n\n"
            b"retry: " + b"9" * 5000 + b"\ndata: d\n\n")
    events = read_all([data])
    assert [e.retry for e in events] == [3000, None, None, None]


def test_retry_alone_sets_the_reader_delay() -> None:
    reader = SSEReader()
    reader.receive_data(b"retry: 2500\n\n")
    assert reader.next_event() is NEED_DATA
    assert reader.retry_ms == 2500


def test_bom_only_at_the_start_and_split_anywhere() -> None:
    data = b"\xef\xbb\xbfdata: x\n\n"
    for chunks in every_split(data):
        assert read_all(chunks) == [SSEEvent(data="x")]
    # A second BOM is part of the first field's name, which then is no "data".
    assert read_all([b"\xef\xbb\xbf\xef\xbb\xbfdata: x\n\ndata: y\n\n"]) == [SSEEvent(data="y")]
    assert read_all([b"data: \xef\xbb\xbfx\n\n"]) == [SSEEvent(data="\ufeffx")]


def test_bom_prefix_then_eof() -> None:
    assert read_all([b"\xef\xbb"]) == []


def test_invalid_utf8_becomes_replacement_characters() -> None:
    assert read_all([b"data: \xff\xfeok\xc3\n\n"]) == [SSEEvent(data="\ufffd\ufffdok\ufffd")]


def test_utf8_split_across_chunks() -> None:
    data = "data: ¿qué tal? 👋\n\n".encode()
    for chunks in every_split(data):
        assert read_all(chunks) == [SSEEvent(data="¿qué tal? 👋")]


def test_unterminated_event_at_eof_is_discarded() -> None:
    assert read_all([b"data: a\n\ndata: b\n"]) == [SSEEvent(data="a")]
    assert read_all([b"data: a\n\ndata: b"]) == [SSEEvent(data="a")]


def test_final_line_ended_by_cr_at_eof_still_dispatches() -> None:
    assert read_all([b"data: a\r\r"]) == [SSEEvent(data="a")]


def test_next_event_before_any_data_needs_data() -> None:
    assert SSEReader().next_event() is NEED_DATA


def test_receive_after_eof_is_our_bug() -> None:
    reader = SSEReader()
    reader.receive_data(b"")
    with pytest.raises(LocalProtocolError):
        reader.receive_data(b"data: x\n\n")


def test_receive_data_wants_bytes() -> None:
    with pytest.raises(LocalProtocolError):
        SSEReader().receive_data("data: x\n\n")  # type: ignore[arg-type]


# -- the memory bound ---------------------------------------------------------------------------
def test_default_bound_is_one_mebibyte() -> None:
    assert MAX_BUFFER_BYTES == SSEReader().max_buffer_bytes == 1 << 20


def test_endless_line_is_refused() -> None:
    reader = SSEReader(max_buffer_bytes=100)
    reader.receive_data(b"data: " + b"x" * 94)
    assert reader.next_event() is NEED_DATA  # exactly at the bound: still fine
    reader.receive_data(b"x")
    with pytest.raises(RemoteProtocolError) as info:
        reader.next_event()
    assert info.value.close_code == CLOSE_MESSAGE_TOO_BIG
    with pytest.raises(RemoteProtocolError):  # no resynchronising after that
        reader.next_event()


def test_endless_event_is_refused_even_in_short_lines() -> None:
    reader = SSEReader(max_buffer_bytes=1000)
    reader.receive_data(b"data: 0123456789\n" * 200)
    with pytest.raises(RemoteProtocolError):
        reader.next_event()


def test_many_small_events_are_fine() -> None:
    data = b"data: 0123456789\n\n" * 1000
    events = read_all([data], max_buffer_bytes=100)
    assert len(events) == 1000


def test_endless_comment_is_refused_too() -> None:
    reader = SSEReader(max_buffer_bytes=64)
    reader.receive_data(b":" + b"z" * 100)
    with pytest.raises(RemoteProtocolError):
        reader.next_event()


# -- the writer ---------------------------------------------------------------------------------
def test_encode_layout() -> None:
    assert encode_sse("ping", '{"type": "ping"}') == b'event: ping\ndata: {"type": "ping"}\n\n'
    assert encode_sse(None, "a\r\nb\rc\nd", id="7", retry=1000) == (
        b"id: 7\nretry: 1000\ndata: a\ndata: b\ndata: c\ndata: d\n\n")
    assert encode_sse(None, "") == b"data: \n\n"


@pytest.mark.parametrize(("args", "kwargs"), [
    (("", "x"), {}), (("a\nb", "x"), {}), (("a\rb", "x"), {}),
    (("a", "x"), {"id": "1\n2"}), (("a", "x"), {"id": "\x00"}),
    (("a", "x"), {"retry": -1}), (("a", "x"), {"retry": True}),
    (("a", "\ud800"), {}),
])
def test_encode_refuses_what_cannot_be_written(args: tuple[str, str], kwargs: dict) -> None:
    with pytest.raises(LocalProtocolError):
        encode_sse(*args, **kwargs)


event_names = st.text(min_size=1).filter(lambda s: "\r" not in s and "\n" not in s)
ids = st.none() | st.text().filter(lambda s: not set(s) & {"\r", "\n", "\x00"})


@given(st.lists(st.tuples(event_names, st.text(), ids, st.none() | st.integers(0, 10**9)),
                max_size=5), st.data())
@settings(max_examples=300)
def test_decode_of_encode_is_identity(events: list, data: st.DataObject) -> None:
    stream = b"".join(encode_sse(name, text, id=i, retry=r) for name, text, i, r in events)
    cut = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=4)))
    chunks = [stream[a:b] for a, b in zip([0, *cut], [*cut, len(stream)])]
    decoded = read_all(chunks)
    last_id = None
    expected = []
    for name, text, i, r in events:
        last_id = i if i is not None else last_id
        expected.append(SSEEvent(name, text.replace("\r\n", "\n").replace("\r", "\n"), last_id, r))
    assert decoded == expected


@given(st.lists(st.binary(min_size=1, max_size=64), max_size=8))
@settings(max_examples=500)
def test_garbage_only_ever_raises_remote_protocol_error(chunks: list[bytes]) -> None:
    reader = SSEReader(max_buffer_bytes=48)
    try:
        for chunk in [*chunks, b""]:
            reader.receive_data(chunk)
            while isinstance(reader.next_event(), SSEEvent):
                pass
    except RemoteProtocolError:
        pass
