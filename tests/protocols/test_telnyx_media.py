"""protocols.telnyx_media: fixtures both ways, fast path == slow path, garbage -> RemoteProtocolError.

Fixture frames follow the fact sheet (/work/shared/protocols/telnyx.md §1-2): the official
``start`` example (upper-case UUIDs), the old minimal ``start``, string and int numbers, ``stop``
with ``{}`` and with ids, and both guessed nestings of ``error``. Ids are the sheet's.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import attrs
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from protocols import telnyx_media as tm
from protocols.errors import LocalProtocolError, RemoteProtocolError
from protocols.telnyx_media_messages import INBOUND_EVENTS
from protocols.telnyx_media import (
    Clear,
    Connected,
    Dtmf,
    Error,
    Mark,
    MarkOut,
    Media,
    MediaFormat,
    MediaOut,
    SequenceReorderer,
    Start,
    Stop,
    UnknownEventError,
    decode,
    decode_outbound,
    encode,
    encode_inbound,
)

FIXTURES = Path(__file__).parent / "fixtures" / "telnyx"
PROPERTY = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow], max_examples=300)

SID = "32de0dea-53cb-4b21-89a4-9e1819c043bc"
CCID = "v2:T02llQxIyaRkhfRKxgAP8nY511EhFLizdvdUKJiSw8d6A9BborherQ"
PCMU_160 = bytes([0xFF] * 80 + [0x7F] * 80)
PCMU_8K = MediaFormat("PCMU", 8000, 1)
OPUS_48K = MediaFormat("OPUS", 48000, 1)
NOT_STRINGS: Any = (1,)
BARE_START = Start(stream_id=SID, sequence_number=1, call_control_id="c", media_format=PCMU_8K)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _text(name: str) -> str:
    return (FIXTURES / name).read_text(encoding="utf-8")


def _decode_start(text: str) -> Start:
    start = decode(text)
    assert isinstance(start, Start)
    return start


INBOUND_FIXTURES: list[tuple[str, tm.TelnyxInbound]] = [
    ("media/connected.json", Connected(version="1.0.0")),
    ("media/connected_with_token.json", Connected(version="1.0.0", auth_token="s3cr3t-token")),
    (
        "media/start.json",
        Start(
            stream_id="32DE0DEA-53CB-4B21-89A4-9E1819C043BC",
            sequence_number=1,
            call_control_id=CCID,
            media_format=PCMU_8K,
            call_session_id="ff55a038-6f5d-11ef-9692-02420aeffb1f",
            user_id="3E6F995F-85F7-4705-9741-53B116D28237",
            from_="+13122010094",
            to="+13122123456",
            client_state="aGF2ZSBhIG5pY2UgZGF5ID1d",
            custom_parameters={"customer_id": "customer_123"},
            tags=("TAG1", "TAG2"),
        ),
    ),
    (
        "media/start_minimal_old.json",
        Start(
            stream_id=SID,
            sequence_number=1,
            call_control_id=CCID,
            media_format=PCMU_8K,
            user_id="3e6f995f-85f7-4705-9741-53b116d28237",
            client_state="aGF2ZSBhIG5pY2UgZGF5ID1d",
        ),
    ),
    (
        "media/start_mulaw_spelling.json",
        Start(stream_id=SID, sequence_number=1, call_control_id="v3:abc", media_format=PCMU_8K),
    ),
    (
        "media/start_l16_16k.json",
        Start(
            stream_id="9f0c4c3e-1b7a-4a8e-bb56-0d8cb0f2e7a1",
            sequence_number=1,
            call_control_id="v3:l16call",
            media_format=MediaFormat("L16", 16000, 1),
        ),
    ),
    (
        "media/start_opus_unsupported.json",
        Start(stream_id="a1", sequence_number=1, call_control_id="v3:opus", media_format=OPUS_48K),
    ),
    (
        "media/media_string_numbers.json",
        Media(stream_id=SID, sequence_number=4, track="inbound", payload=PCMU_160, chunk=2, timestamp=5),
    ),
    (
        "media/media_int_numbers.json",
        Media(stream_id=SID, sequence_number=5, track="inbound", payload=PCMU_160, chunk=3, timestamp=25),
    ),
    (
        "media/media_outbound_track_suffix.json",
        Media(stream_id=SID, sequence_number=6, track="outbound", payload=b"\0\1\2\3", chunk=1, timestamp=0),
    ),
    ("media/stop_empty.json", Stop(stream_id=SID, sequence_number=750)),
    (
        "media/stop_with_ids.json",
        Stop(
            stream_id=SID,
            sequence_number=5,
            call_control_id=CCID,
            user_id="3e6f995f-85f7-4705-9741-53b116d28237",
        ),
    ),
    (
        "media/dtmf.json",
        Dtmf(digit="1", stream_id=SID, sequence_number=9, occurred_at="2024-09-10T12:00:03.123456Z"),
    ),
    ("media/mark.json", Mark(name="utt-17", stream_id=SID, sequence_number=12)),
    (
        "media/error_payload.json",
        Error(
            code=100003,
            title="malformed_frame",
            detail="The received frame is not valid JSON or its payload is not base64",
            stream_id=SID,
            sequence_number=13,
        ),
    ),
    (
        "media/error_error_nesting.json",
        Error(code=100005, title="rate_limit_reached", detail="Too many media frames", stream_id=SID),
    ),
]

OUTBOUND_FIXTURES: list[tuple[str, tm.TelnyxOutbound]] = [
    ("outbound/media.json", MediaOut(PCMU_160)),
    ("outbound/media_with_stream_id.json", MediaOut(b"\x00\x01\x02\x03", stream_id=SID)),
    ("outbound/mark.json", MarkOut("utt-17")),
    ("outbound/clear.json", Clear()),
]


# --------------------------------------------------------------------------- fixtures both ways


@pytest.mark.parametrize(("name", "expected"), INBOUND_FIXTURES, ids=[n for n, _ in INBOUND_FIXTURES])
def test_inbound_fixture_decodes(name: str, expected: tm.TelnyxInbound) -> None:
    text = _text(name)
    assert decode(text) == expected
    assert decode(text.encode()) == expected
    # The converter (slow path) agrees with whatever path decode() took.
    assert tm._structure_frame(text, tm.TelnyxInbound, INBOUND_EVENTS) == expected


@pytest.mark.parametrize(("name", "expected"), INBOUND_FIXTURES, ids=[n for n, _ in INBOUND_FIXTURES])
def test_inbound_fixture_round_trips(name: str, expected: tm.TelnyxInbound) -> None:
    text = encode_inbound(expected)
    assert decode(text) == expected
    frame = json.loads(text)
    assert next(iter(frame)) == "event"
    assert frame["event"] == json.loads(_text(name))["event"]


@pytest.mark.parametrize(("name", "expected"), OUTBOUND_FIXTURES, ids=[n for n, _ in OUTBOUND_FIXTURES])
def test_outbound_fixture_both_ways(name: str, expected: tm.TelnyxOutbound) -> None:
    text = _text(name)
    assert decode_outbound(text) == expected
    encoded = encode(expected)
    assert json.loads(encoded) == json.loads(text)  # canonical: we write exactly the documented shape
    assert decode_outbound(encoded) == expected


def test_media_out_is_the_documented_frame() -> None:
    assert encode(MediaOut(b"\x01\x02\x03")) == '{"event":"media","media":{"payload":"AQID"}}'
    assert encode(Clear()) == '{"event":"clear"}'
    assert encode(MarkOut('say "hi"\n')) == '{"event":"mark","mark":{"name":"say \\"hi\\"\\n"}}'


def test_inbound_encoder_writes_numbers_as_strings_like_telnyx() -> None:
    media = Media(stream_id=SID, sequence_number=4, track="inbound", payload=b"\xff", chunk=2, timestamp=5)
    frame = json.loads(encode_inbound(media))
    assert frame == {
        "event": "media",
        "sequence_number": "4",
        "stream_id": SID,
        "media": {"track": "inbound", "chunk": "2", "timestamp": "5", "payload": "/w=="},
    }


def test_connected_token_is_read_from_either_place_and_never_printed() -> None:
    top_level = decode('{"event":"connected","version":"1.0.0","x-telnyx-streaming-auth-token":"tok"}')
    assert top_level == Connected(version="1.0.0", auth_token="tok")
    assert "tok" not in repr(top_level)
    assert decode('{"event":"connected"}') == Connected()


# --------------------------------------------------------------------------- field semantics


@pytest.mark.parametrize(
    ("spelling", "normal", "supported"),
    [
        ("PCMU", "PCMU", True),
        ("pcmu", "PCMU", True),
        ("audio/x-mulaw", "PCMU", True),
        ("AUDIO/X-MULAW", "PCMU", True),
        ("audio/x-mulaw;rate=8000", "PCMU", True),
        ("ulaw", "PCMU", True),
        ("PCMA", "PCMA", True),
        ("audio/x-alaw", "PCMA", True),
        ("L16", "L16", True),
        ("audio/L16", "L16", True),
        ("G722", "G722", False),
        ("opus", "OPUS", False),
        ("AMR-WB", "AMR-WB", False),
    ],
)
def test_encoding_spellings(spelling: str, normal: str, supported: bool) -> None:
    fmt = MediaFormat(spelling, 8000)
    assert fmt == MediaFormat(normal, 8000, 1)
    assert fmt.supported is supported
    frame = json.loads(_text("media/start_minimal_old.json"))
    frame["start"]["media_format"]["encoding"] = spelling
    assert _decode_start(json.dumps(frame)).media_format.encoding == normal


def test_client_state_helpers() -> None:
    start = decode(_text("media/start.json"))
    assert isinstance(start, Start)
    assert start.client_state_bytes == b"have a nice day =]"
    assert start.client_state_text == "have a nice day =]"
    bare = attrs.evolve(start, client_state=None)
    assert bare.client_state_bytes is None and bare.client_state_text is None
    binary = attrs.evolve(start, client_state=base64.b64encode(b"\xff\xfe").decode())
    with pytest.raises(RemoteProtocolError, match="not UTF-8"):
        binary.client_state_text


def test_custom_parameters_list_shape_and_non_string_values() -> None:
    frame = json.loads(_text("media/start_minimal_old.json"))
    frame["start"]["custom_parameters"] = [{"name": "a", "value": "1"}, {"name": "b", "value": 2}]
    assert _decode_start(json.dumps(frame)).custom_parameters == {"a": "1", "b": "2"}
    frame["start"]["custom_parameters"] = {"n": None, "o": {"x": [1, True]}}
    assert _decode_start(json.dumps(frame)).custom_parameters == {"n": "null", "o": '{"x":[1,true]}'}


def test_start_is_hashable_despite_its_dict() -> None:
    start = decode(_text("media/start.json"))
    assert hash(start) == hash(decode(_text("media/start.json")))


def test_error_code_normalisation() -> None:
    assert Error(code="100003").code == 100003
    assert Error(code="E42").code == "E42"
    flat = decode('{"event":"error","code":"100002","title":"unknown error"}')
    assert flat == Error(code=100002, title="unknown error")


def test_dtmf_digit_may_be_a_number() -> None:
    assert decode('{"event":"dtmf","dtmf":{"digit":7}}') == Dtmf(digit="7")


def _media_frame(**changes: Any) -> dict[str, Any]:
    frame = json.loads(_text("media/media_string_numbers.json"))
    for path, value in changes.items():
        *parents, leaf = path.split("__")
        node = frame
        for parent in parents:
            node = node[parent]
        if value is _DELETE:
            del node[leaf]
        else:
            node[leaf] = value
    return frame


_DELETE = object()


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        ("", "not valid JSON"),
        ("{", "not valid JSON"),
        ('{"event":"media"} trailing', "not valid JSON"),
        (b"\xff\xfe", "not valid JSON"),
        ("[1, 2]", "must be a JSON object"),
        ('"media"', "must be a JSON object"),
        ("{}", "no 'event'"),
        ('{"event": 5}', "event: expected a string"),
        ('{"event": "hello"}', "unknown Telnyx media-stream event 'hello'"),
        (_media_frame(stream_id=_DELETE), "stream_id is missing"),
        (_media_frame(stream_id=""), "stream_id: expected a non-empty string"),
        (_media_frame(stream_id=7), "stream_id: expected a non-empty string, got int"),
        (_media_frame(media=_DELETE), "'media' object is missing"),
        (_media_frame(media="x"), "media: expected an object"),
        (_media_frame(media__payload=_DELETE), "media.payload: expected a base64 string"),
        (_media_frame(media__payload="not base64!"), "media.payload: invalid base64"),
        (_media_frame(media__payload="AAE"), "media.payload: invalid base64"),
        (_media_frame(media__payload="AA EC"), "media.payload: invalid base64"),
        (_media_frame(media__payload="AA-_"), "media.payload: invalid base64"),
        (_media_frame(media__payload="ÀÀÀÀ"), "media.payload: invalid base64"),
        (_media_frame(media__track="sideways"), "media.track: expected 'inbound' or 'outbound'"),
        (_media_frame(media__track=None), "media.track: expected a string"),
        (_media_frame(sequence_number=_DELETE), "sequence_number: expected a non-negative integer"),
        (_media_frame(sequence_number="4.0"), "sequence_number: expected"),
        (_media_frame(sequence_number=4.0), "got float"),
        (_media_frame(sequence_number=True), "got bool"),
        (_media_frame(sequence_number=-1), "got int -1"),
        (_media_frame(sequence_number=" 4"), "sequence_number: expected"),
        (_media_frame(sequence_number="٤"), "sequence_number: expected"),
        (_media_frame(sequence_number=2**63), "sequence_number: expected"),
        (_media_frame(sequence_number="9" * 19), "sequence_number: expected"),
        (_media_frame(sequence_number="9" * 5000), "sequence_number: expected"),
        (_media_frame(media__chunk="two"), "media.chunk: expected"),
        (_media_frame(media__timestamp=[5]), "media.timestamp: expected"),
    ],
)
def test_bad_inbound_frames(frame: str | bytes | dict[str, Any], reason: str) -> None:
    text = json.dumps(frame) if isinstance(frame, dict) else frame
    with pytest.raises(RemoteProtocolError) as info:
        decode(text)
    assert reason in info.value.reason
    # The fast path never decides an error differently from the converter.
    with pytest.raises(RemoteProtocolError) as slow:
        tm._structure_frame(text, tm.TelnyxInbound, INBOUND_EVENTS)
    assert slow.value.reason == info.value.reason


def test_close_codes() -> None:
    with pytest.raises(RemoteProtocolError) as info:
        decode(b'{"event":"\xff"}')
    assert info.value.close_code == 1007
    with pytest.raises(UnknownEventError) as unknown:
        decode('{"event":"ping"}')
    assert unknown.value.close_code == 1003 and unknown.value.event == "ping"
    with pytest.raises(RemoteProtocolError) as bad64:
        decode(json.dumps(_media_frame(media__payload="@@@@")))
    assert bad64.value.close_code == 1007


def _start(**changes: Any) -> dict[str, Any]:
    frame = json.loads(_text("media/start.json"))
    frame["start"].update(changes)
    return frame


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        (_start(call_control_id=None), "start.call_control_id is missing"),
        (_start(media_format=None), "start.media_format is missing"),
        (_start(media_format="PCMU"), "start.media_format: expected an object"),
        (_start(media_format={"sample_rate": 8000}), "start.media_format.encoding is missing"),
        (_start(media_format={"encoding": "PCMU"}), "start.media_format.sample_rate: expected"),
        (_start(media_format={"encoding": "PCMU", "sample_rate": 0}), "must be > 0"),
        (_start(media_format={"encoding": "PCMU", "sample_rate": 8000, "channels": 0}), "must be > 0"),
        (_start(client_state="%%%"), "start.client_state: invalid base64"),
        (_start(client_state=5), "start.client_state: expected a string"),
        (_start(tags="TAG1"), "start.tags: expected a list"),
        (_start(custom_parameters=[1]), "custom_parameters: list entries"),
        (_start(custom_parameters="x"), "custom_parameters: expected an object"),
        (_start(custom_parameters={"k": json.loads("[" * 300 + "]" * 300)}), "nested too deep"),
        (_start(**{"from": 13122010094}), "start.from: expected a string"),
        ({"event": "start", "stream_id": "s", "sequence_number": "1"}, "'start' object is missing"),
        ({"event": "mark", "mark": {}}, "mark.name is missing"),
        ({"event": "mark"}, "'mark' object is missing"),
        ({"event": "dtmf", "dtmf": {"digit": 11}}, "dtmf.digit: expected a non-empty string"),
        ({"event": "error", "payload": {"code": 1.5}}, "error.code: expected an int or string"),
        ({"event": "stop", "stop": []}, "stop: expected an object"),
        ({"event": "stop", "sequence_number": "x"}, "sequence_number: expected"),
        ({"event": "connected", "version": 1}, "version: expected a string"),
    ],
)
def test_bad_other_frames(frame: dict[str, Any], reason: str) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        decode(json.dumps(frame))
    assert reason in info.value.reason


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        ('{"event":"media","media":{"payload":""}}', "media.payload is empty"),
        ('{"event":"media","media":{"payload":"***"}}', "invalid base64"),
        ('{"event":"media"}', "'media' object is missing"),
        ('{"event":"mark","mark":{"name":""}}', "mark.name"),
        ('{"event":"start"}', "unknown Telnyx media-stream event 'start'"),
        ('{"event":"clear","stream_id":3}', "stream_id: expected a string"),
    ],
)
def test_bad_outbound_frames(frame: str, reason: str) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        decode_outbound(frame)
    assert reason in info.value.reason


# --------------------------------------------------------------------------- our own misuse


@pytest.mark.parametrize(
    "msg",
    [
        MediaOut(b""),
        MediaOut("AAAA"),  # type: ignore[arg-type]
        MediaOut(bytearray(b"x")),  # type: ignore[arg-type]
        MarkOut(""),
        MarkOut(7),  # type: ignore[arg-type]
        MediaOut(b"x", stream_id=""),
        Clear(stream_id=5),  # type: ignore[arg-type]
        Media(stream_id=SID, sequence_number=1, track="inbound", payload=b""),  # inbound, not outbound
        "media",
    ],
)
def test_encode_rejects_our_mistakes(msg: Any) -> None:
    with pytest.raises(LocalProtocolError):
        encode(msg)


@pytest.mark.parametrize(
    "msg",
    [
        Media(stream_id=SID, sequence_number=1, track="inbound_track", payload=b"x"),  # type: ignore
        Media(stream_id=SID, sequence_number=-1, track="inbound", payload=b"x"),
        Media(stream_id="", sequence_number=1, track="inbound", payload=b"x"),
        Media(stream_id=SID, sequence_number=1, track="inbound", payload="eA=="),  # type: ignore[arg-type]
        attrs.evolve(BARE_START, client_state="!!"),
        attrs.evolve(BARE_START, media_format=MediaFormat("PCMU", 0)),
        attrs.evolve(BARE_START, tags=NOT_STRINGS),
        Error(code=True),
        Mark(name=""),
        MediaOut(b"x"),
        object(),
    ],
)
def test_encode_inbound_rejects_messages_decode_would_not_return(msg: Any) -> None:
    with pytest.raises(LocalProtocolError):
        encode_inbound(msg)


def test_decode_rejects_non_text() -> None:
    with pytest.raises(LocalProtocolError):
        decode(123)  # type: ignore[arg-type]
    with pytest.raises(LocalProtocolError):
        normalise = tm.normalise_encoding
        normalise(None)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- properties

_ids = st.text(st.characters(codec="utf-8"), min_size=1, max_size=40)  # utf-8: no lone surrogates
_opt_ids = st.none() | _ids
_wire_ints = st.integers(0, tm.MAX_WIRE_INT)
_opt_ints = st.none() | _wire_ints

media_messages = st.builds(
    Media,
    stream_id=_ids,
    sequence_number=_wire_ints,
    track=st.sampled_from(["inbound", "outbound"]),
    payload=st.binary(max_size=700),
    chunk=_opt_ints,
    timestamp=_opt_ints,
)
inbound_messages = st.one_of(
    st.builds(Connected, version=_opt_ids, auth_token=_opt_ids),
    st.builds(
        Start,
        stream_id=_ids,
        sequence_number=_wire_ints,
        call_control_id=_ids,
        media_format=st.builds(
            MediaFormat,
            st.sampled_from(["PCMU", "PCMA", "L16", "G722", "OPUS", "AMR-WB"]),
            st.integers(1, 192_000),
            st.integers(1, 8),
        ),
        call_session_id=_opt_ids,
        user_id=_opt_ids,
        from_=_opt_ids,
        to=_opt_ids,
        client_state=st.none() | st.binary(min_size=1, max_size=64).map(_b64),
        custom_parameters=st.dictionaries(_ids, st.text(max_size=20), max_size=4),
        tags=st.lists(st.text(max_size=10), max_size=4).map(tuple),
    ),
    media_messages,
    st.builds(
        Dtmf,
        digit=st.sampled_from("0123456789*#ABCD"),
        stream_id=_opt_ids,
        sequence_number=_opt_ints,
        occurred_at=_opt_ids,
    ),
    st.builds(Mark, name=_ids, stream_id=_opt_ids, sequence_number=_opt_ints),
    st.builds(
        Error,
        code=st.none() | st.integers(0, 10**12) | st.text(max_size=10).filter(lambda s: not s.isdigit()),
        title=_opt_ids,
        detail=_opt_ids,
        stream_id=_opt_ids,
        sequence_number=_opt_ints,
    ),
    st.builds(
        Stop, stream_id=_opt_ids, sequence_number=_opt_ints, call_control_id=_opt_ids, user_id=_opt_ids
    ),
)
outbound_messages = st.one_of(
    st.builds(MediaOut, st.binary(min_size=1, max_size=2000), _opt_ids),
    st.builds(MarkOut, _ids, _opt_ids),
    st.builds(Clear, _opt_ids),
)


@PROPERTY
@given(inbound_messages)
def test_inbound_round_trip(msg: tm.TelnyxInbound) -> None:
    assert decode(encode_inbound(msg)) == msg


@PROPERTY
@given(outbound_messages)
def test_outbound_round_trip(msg: tm.TelnyxOutbound) -> None:
    assert decode_outbound(encode(msg)) == msg


_json_scalars = st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=30)
_json_values = st.recursive(
    _json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=10,
)
_number_like = (
    st.integers(-5, 2**64)
    | st.integers(0, 10**6).map(str)
    | st.sampled_from(["4.0", "1e3", "-4", " 4", "+4", "٤", "0x10", "", "04", "9" * 19, "9" * 30])
    | st.floats(allow_nan=False)
    | st.booleans()
    | st.none()
)
_payload_like = (
    st.binary(max_size=200).map(lambda b: base64.b64encode(b).decode())
    | st.text(alphabet="ABCDEFGHabcdefgh0123456789+/=-_ \n", max_size=40)
    | st.binary(max_size=20).map(lambda b: base64.b64encode(b).decode().rstrip("="))
    | _json_scalars
)


@PROPERTY
@given(
    stream_id=st.one_of(_ids, st.just(""), _json_scalars),
    sequence_number=_number_like,
    track=st.sampled_from(["inbound", "outbound", "INBOUND", "inbound_track", "Outbound_Track", "both", ""])
    | _json_scalars,
    chunk=_number_like,
    timestamp=_number_like,
    payload=_payload_like,
    drop=st.sets(st.sampled_from(["stream_id", "sequence_number", "track", "chunk", "timestamp", "payload"])),
    extra=st.dictionaries(st.text(max_size=8).filter(lambda k: k not in ("media", "event")), _json_values),
)
def test_fast_path_agrees_with_converter(drop: set[str], extra: dict[str, Any], **fields: Any) -> None:
    """decode() takes the msgspec path for media; it must accept and reject exactly like cattrs."""
    body = {k: v for k, v in fields.items() if k in ("track", "chunk", "timestamp", "payload")}
    body = {k: v for k, v in body.items() if k not in drop}
    frame = {"event": "media", **extra, "media": body}
    frame.update({k: fields[k] for k in ("stream_id", "sequence_number") if k not in drop})
    text = json.dumps(frame)
    try:
        slow: Any = tm._structure_frame(text, tm.TelnyxInbound, INBOUND_EVENTS)
    except RemoteProtocolError as exc:
        slow = exc.reason
    try:
        fast: Any = decode(text)
    except RemoteProtocolError as exc:
        fast = exc.reason
    assert fast == slow


def _only_remote_errors(fn: Any, data: Any) -> None:
    try:
        fn(data)
    except RemoteProtocolError:
        pass


@PROPERTY
@given(st.binary(max_size=400) | st.text(max_size=400))
@example(b'{"event":"media"' + b"[" * 5000)
@example("[" * 100_000)
@example('{"event":"media","sequence_number":1' + "0" * 5000 + "}")
@example('{"event":"media","stream_id":"\\ud800","sequence_number":1,"media":{"track":"inbound"}}')
def test_random_input_only_remote_errors(data: str | bytes) -> None:
    _only_remote_errors(decode, data)
    _only_remote_errors(decode_outbound, data)


@PROPERTY
@given(st.sampled_from(INBOUND_FIXTURES + OUTBOUND_FIXTURES), st.data())
def test_truncated_frames_only_remote_errors(fixture: tuple[str, Any], data: st.DataObject) -> None:
    raw = (FIXTURES / fixture[0]).read_bytes().strip()
    cut = data.draw(st.integers(0, len(raw) - 1))
    for decoder in (decode, decode_outbound):
        with pytest.raises(RemoteProtocolError):
            decoder(raw[:cut])


def test_every_split_point_of_a_media_frame() -> None:
    raw = _text("media/media_string_numbers.json").strip()
    for cut in range(len(raw)):
        with pytest.raises(RemoteProtocolError):
            decode(raw[:cut])
    assert decode(raw).sequence_number == 4  # type: ignore[union-attr]


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix] if prefix else []
    if isinstance(node, dict):
        for key, value in node.items():
            out += _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            out += _paths(value, (*prefix, index))
    return out


@PROPERTY
@given(
    st.sampled_from(INBOUND_FIXTURES + OUTBOUND_FIXTURES),
    st.data(),
    _json_values
    | st.integers(-(2**200), 2**200)
    | st.sampled_from(["", "connected", "start", "media", "MEDIA", "medi"]),
)
def test_mutated_fixtures_only_remote_errors(
    fixture: tuple[str, Any], data: st.DataObject, value: Any
) -> None:
    frame = json.loads(_text(fixture[0]))
    path = data.draw(st.sampled_from(_paths(frame)))
    node = frame
    for key in path[:-1]:
        node = node[key]
    if data.draw(st.booleans()):
        node[path[-1]] = value
    else:
        del node[path[-1]]
    text = json.dumps(frame, ensure_ascii=data.draw(st.booleans()))
    _only_remote_errors(decode, text)
    _only_remote_errors(decode_outbound, text)


# --------------------------------------------------------------------------- reordering


def _frames(*numbers: int) -> list[Mark]:
    return [Mark(name=f"m{n}", sequence_number=n) for n in numbers]


def _drain(reorderer: SequenceReorderer[Mark], frames: list[Mark]) -> list[int]:
    out: list[int] = []
    for frame in frames:
        reorderer.push(frame)
        while (ready := reorderer.pop()) is not None:
            out.append(ready.sequence_number)  # type: ignore[arg-type]
        # Drained after each push, the buffer never holds `window` frames (memory bound).
        assert reorderer.statistics().pending <= max(reorderer.window - 1, 0)
    return out


def test_reorderer_in_order_is_pass_through() -> None:
    reorderer: SequenceReorderer[Mark] = SequenceReorderer(3)
    assert _drain(reorderer, _frames(1, 2, 3, 4)) == [1, 2, 3, 4]
    assert reorderer.statistics() == tm.ReorderStatistics(4, 0, 0, 0, 0, 5)


def test_reorderer_swaps_back() -> None:
    reorderer: SequenceReorderer[Mark] = SequenceReorderer(3)
    assert _drain(reorderer, _frames(1, 3, 2, 5, 4, 6)) == [1, 2, 3, 4, 5, 6]
    stats = reorderer.statistics()
    assert (stats.delivered, stats.lost, stats.duplicate, stats.late) == (6, 0, 0, 0)


def test_reorderer_gives_up_after_window_later_frames() -> None:
    reorderer: SequenceReorderer[Mark] = SequenceReorderer(3)
    assert _drain(reorderer, _frames(1, 3, 4)) == [1]  # still waiting for 2
    assert reorderer.statistics().pending == 2
    assert _drain(reorderer, _frames(5)) == [3, 4, 5]  # three later frames: 2 is lost
    assert _drain(reorderer, _frames(2)) == []  # too late now
    stats = reorderer.statistics()
    assert (stats.delivered, stats.lost, stats.late, stats.duplicate) == (4, 1, 1, 0)


def test_reorderer_drops_duplicates() -> None:
    reorderer: SequenceReorderer[Mark] = SequenceReorderer(2)
    assert _drain(reorderer, _frames(1, 1, 3, 3, 2, 2)) == [1, 2, 3]
    assert reorderer.statistics().duplicate == 3


def test_reorderer_window_zero_never_waits() -> None:
    reorderer: SequenceReorderer[Mark] = SequenceReorderer(0)
    assert _drain(reorderer, _frames(1, 3, 2, 4, 7)) == [1, 3, 4, 7]
    stats = reorderer.statistics()
    assert (stats.lost, stats.late) == (3, 1)  # 2 skipped then late; 5 and 6 lost


def test_reorderer_first_and_flush() -> None:
    reorderer: SequenceReorderer[Mark] = SequenceReorderer(10, first=1)
    assert _drain(reorderer, _frames(3, 5, 4)) == []
    assert [f.sequence_number for f in reorderer.flush()] == [3, 4, 5]
    stats = reorderer.statistics()
    assert (stats.delivered, stats.lost, stats.pending, stats.next_sequence_number) == (3, 2, 0, 6)


def test_reorderer_misuse() -> None:
    with pytest.raises(LocalProtocolError):
        SequenceReorderer(-1)
    with pytest.raises(LocalProtocolError):
        SequenceReorderer[Mark](2).push(Mark(name="no number"))


@PROPERTY
@given(st.integers(0, 8), st.lists(st.integers(0, 60), max_size=120))
def test_reorderer_invariants(window: int, numbers: list[int]) -> None:
    reorderer: SequenceReorderer[Mark] = SequenceReorderer(window)
    out = _drain(reorderer, _frames(*numbers))
    out += [f.sequence_number for f in reorderer.flush()]  # type: ignore[misc]
    assert out == sorted(set(out)) and len(out) == len(set(out))
    stats = reorderer.statistics()
    assert stats.delivered == len(out) and stats.pending == 0
    assert stats.delivered + stats.duplicate + stats.late == len(numbers)
    if numbers:
        assert stats.next_sequence_number is not None
        assert stats.delivered + stats.lost == stats.next_sequence_number - numbers[0]


@PROPERTY
@given(st.integers(1, 6), st.integers(1, 80), st.randoms(use_true_random=False))
def test_reorderer_restores_bounded_jitter_without_loss(window: int, count: int, rnd: Any) -> None:
    # Displace each frame by fewer than `window` positions: nothing may be counted lost.
    order = sorted(range(1, count + 1), key=lambda n: n + rnd.random() * window)
    reorderer: SequenceReorderer[Mark] = SequenceReorderer(window, first=1)
    out = _drain(reorderer, _frames(*order)) + [f.sequence_number for f in reorderer.flush()]
    assert out == list(range(1, count + 1))
    assert reorderer.statistics().lost == 0
