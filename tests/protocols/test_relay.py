"""Relay events: the seed's examples, ours, bad bodies by field, delivery frames, round trips."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import attrs
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocols import relay
from protocols.relay_checks import SPECS
from protocols.errors import CLOSE_MESSAGE_TOO_BIG, LocalProtocolError, RemoteProtocolError
from protocols.relay import (CallEvent, Coach, Delivered, Gap, Latency, OtherEvent, Partial,
                             Reply, decode_delivery, encode_delivery, encode_gap, encode_publish,
                             from_wire, parse_event_body, to_wire)

FIXTURES = Path(__file__).parent / "fixtures" / "relay"


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


# -- the seed's examples (shared/seeds/003_…, verbatim) -----------------------------------------
def test_seed_final_example_is_accepted_untouched() -> None:
    call_id, event = parse_event_body(fixture("seed_final.json"))
    assert call_id == "abc123"
    assert event == orjson.loads(fixture("seed_final.json"))
    assert from_wire(event) == relay.Final(
        call_id="abc123", speaker="customer", turn_id="t-1",
        text="Hola, buenos días, me gustaría información sobre sus productos",
        ts_start=1640995200000, ts_end=1640995202000)


@pytest.mark.parametrize(("name", "field"), [("seed_partial.json", "partial.speaker"),
                                             ("seed_coach.json", "coach.mode")])
def test_seed_schema_examples_show_placeholders_not_values(name: str, field: str) -> None:
    # The README writes the enums as "customer|agent|mix" and "tip|alert": a schema, not a value.
    with pytest.raises(RemoteProtocolError) as info:
        parse_event_body(fixture(name))
    assert info.value.reason.startswith(field)


@pytest.mark.parametrize("speaker", relay.SPEAKERS)
def test_seed_partial_with_each_speaker(speaker: str) -> None:
    body = fixture("seed_partial.json").replace(b"customer|agent|mix", speaker.encode())
    call_id, event = parse_event_body(body)
    assert from_wire(event) == Partial(call_id="abc123", speaker=speaker,  # type: ignore[arg-type]
                                       turn_id="t-1", text="Hola, buenos días...",
                                       ts_start=1640995200000, ts_end=1640995201000)


@pytest.mark.parametrize("mode", relay.COACH_MODES)
@pytest.mark.parametrize("severity", relay.COACH_SEVERITIES)
def test_seed_coach_with_each_mode_and_severity(mode: str, severity: str) -> None:
    body = (fixture("seed_coach.json").replace(b"tip|alert", mode.encode())
            .replace(b"low|med|high", severity.encode()))
    _, event = parse_event_body(body)
    assert from_wire(event) == Coach(
        call_id="abc123", mode=mode, severity=severity, turn_ref="t-1",  # type: ignore[arg-type]
        text="Sugerencia: Pregunta sobre sus necesidades específicas")


def test_seed_stt_client_partial_has_no_turn_or_times() -> None:
    _, event = parse_event_body(fixture("seed_stt_client_partial.json"))
    assert from_wire(event) == Partial(call_id="abc123", speaker="customer", text="Hola...")


def test_seed_debug_curl_body_passes_as_unknown_type() -> None:
    body = fixture("seed_debug_curl.json")
    assert parse_event_body(body) == ("test", {"callId": "test", "type": "test", "text": "test"})
    assert from_wire(orjson.loads(body)) == OtherEvent({"callId": "test", "type": "test",
                                                        "text": "test"})


# -- ours, both ways ----------------------------------------------------------------------------
OURS = {
    "reply.json": Reply(call_id="v3:call-7f3a", turn_id="t-4", text="Claro, le paso con un agente",
                        interrupted=True, ts_start=1640995203000, ts_end=1640995204250),
    "latency.json": Latency(call_id="v3:call-7f3a", turn_id="t-4", stages={
        "end_of_speech": 12.48, "stt_final": 12.61, "llm_request": 12.62, "llm_first_token": 13.05,
        "first_chunk": 13.11, "tts_first_audio": 13.29, "first_frame_sent": 13.3}),
    "call_started.json": CallEvent(call_id="v3:call-7f3a", state="started",
                                   call_control_id="v3:call-7f3a",
                                   stream_id="32de0dea-53cb-4b21-89a4-9e8a35eb9d15"),
    "call_ended.json": CallEvent(call_id="v3:call-7f3a", state="ended", reason="caller hung up"),
    "unknown_with_extras.json": OtherEvent({"type": "sentiment", "callId": "abc123", "score": -0.4,
                                            "labels": ["impatient"],
                                            "nested": {"a": [1, 2, {"b": None}]}}),
}


@pytest.mark.parametrize("name", sorted(OURS))
def test_our_fixtures_decode_and_encode(name: str) -> None:
    body = fixture(name)
    call_id, event = parse_event_body(body)
    assert from_wire(event) == OURS[name]
    assert call_id == OURS[name].call_id
    assert to_wire(OURS[name]) == orjson.loads(body)
    assert list(to_wire(OURS[name])) == list(orjson.loads(body))  # key order too
    assert orjson.loads(encode_publish(OURS[name])) == orjson.loads(body)


def test_gap_is_written_by_the_hub_only() -> None:
    body = fixture("gap.json")
    with pytest.raises(RemoteProtocolError) as info:
        parse_event_body(body)
    assert "reserved" in info.value.reason
    gap = Gap(call_id="v3:call-7f3a", from_seq=3, to_seq=41)
    assert from_wire(orjson.loads(body)) == gap
    assert encode_gap(gap) == body.decode().strip()
    assert orjson.loads(encode_gap(gap, now_s=1.5))["ts"] == 1500
    assert decode_delivery(encode_gap(gap)) == Delivered(seq=None, ts=None, event=gap)


def test_encode_gap_refuses_a_backwards_range() -> None:
    with pytest.raises(LocalProtocolError):
        encode_gap(Gap(call_id="c", from_seq=5, to_seq=4))
    with pytest.raises(LocalProtocolError):
        encode_gap({"type": "gap"})  # type: ignore[arg-type]


def test_optional_nulls_read_as_absent() -> None:
    body = b'{"type":"partial","callId":"c","speaker":"agent","text":"x","turnId":null,' \
           b'"tsStart":null,"tsEnd":null}'
    _, event = parse_event_body(body)
    assert event["turnId"] is None  # the hub forwards what was sent
    assert from_wire(event) == Partial(call_id="c", speaker="agent", text="x")


def test_known_type_keeps_extra_fields_for_the_hub() -> None:
    body = b'{"type":"final","callId":"c","speaker":"mix","text":"x","confidence":0.93,"lang":"es"}'
    _, event = parse_event_body(body)
    assert event["confidence"] == 0.93 and event["lang"] == "es"
    assert orjson.loads(encode_delivery(event, 1, 0.0))["lang"] == "es"


def test_event_without_type_is_forwarded() -> None:
    assert parse_event_body(b'{"callId":"c","hello":1}') == ("c", {"callId": "c", "hello": 1})


# -- bad bodies: the reason names what is wrong -------------------------------------------------
BAD: list[tuple[bytes | str, str]] = [
    (b"", "not valid JSON"),
    (b"{", "not valid JSON"),
    (b"\xff{}", "not valid JSON"),
    (b'{"callId":"c","text":"\xed\xa0\x80"}', "not valid JSON"),  # encoded surrogate
    (b'{"callId":"c","x":NaN}', "not valid JSON"),
    (b"[]", "must be a JSON object, got array"),
    (b'"abc"', "must be a JSON object, got string"),
    (b"null", "must be a JSON object, got null"),
    (b"{}", "callId is required"),
    (b'{"callId":""}', "callId must not be empty"),
    (b'{"callId":7}', "callId must be a string, got number"),
    (b'{"callId":null}', "callId must be a string, got null"),
    (b'{"callId":["a"]}', "callId must be a string, got array"),
    (b'{"callId":"c","type":5}', "type must be a string, got number"),
    (b'{"callId":"c","type":null}', "type must be a string, got null"),
    (b'{"callId":"c","type":{"a":1}}', "type must be a string, got object"),
    (b'{"callId":"c","type":"partial","speaker":"agent"}', "partial.text is required"),
    (b'{"callId":"c","type":"partial","text":"x"}', "partial.speaker is required"),
    (b'{"callId":"c","type":"partial","speaker":"bot","text":"x"}', "partial.speaker must be one"),
    (b'{"callId":"c","type":"partial","speaker":1,"text":"x"}', "partial.speaker must be one"),
    (b'{"callId":"c","type":"final","speaker":"agent","text":5}',
     "final.text must be a string, got number"),
    (b'{"callId":"c","type":"final","speaker":"agent","text":null}',
     "final.text must be a string, got null"),
    (b'{"callId":"c","type":"final","speaker":"agent","text":"x","tsStart":"1"}',
     "final.tsStart must be a number, got string"),
    (b'{"callId":"c","type":"final","speaker":"agent","text":"x","tsEnd":true}',
     "final.tsEnd must be a number, got boolean"),
    (b'{"callId":"c","type":"final","speaker":"agent","text":"x","turnId":1}',
     "final.turnId must be a string, got number"),
    (b'{"callId":"c","type":"coach","mode":"tip","severity":"critical","text":"x"}',
     "coach.severity must be one of"),
    (b'{"callId":"c","type":"coach","mode":"tip","severity":"low"}', "coach.text is required"),
    (b'{"callId":"c","type":"coach","mode":"tip","severity":"low","text":"x","turnRef":[]}',
     "coach.turnRef must be a string, got array"),
    (b'{"callId":"c","type":"reply","turnId":"t","text":"x","interrupted":"no"}',
     "reply.interrupted must be a boolean, got string"),
    (b'{"callId":"c","type":"reply","turnId":"t","text":"x"}', "reply.interrupted is required"),
    (b'{"callId":"c","type":"reply","text":"x","interrupted":false}', "reply.turnId is required"),
    (b'{"callId":"c","type":"latency","turnId":"t"}', "latency.stages is required"),
    (b'{"callId":"c","type":"latency","turnId":"t","stages":[1]}',
     "latency.stages must be an object"),
    (b'{"callId":"c","type":"latency","turnId":"t","stages":{"stt_final":"0.3"}}',
     "latency.stages['stt_final'] must be a number of seconds, got string"),
    (b'{"callId":"c","type":"latency","turnId":"t","stages":{"stt_final":false}}',
     "latency.stages['stt_final'] must be a number of seconds, got boolean"),
    (b'{"callId":"c","type":"call","state":"ringing"}', "call.state must be one of"),
    (b'{"callId":"c","type":"call","state":"ended","reason":1}',
     "call.reason must be a string, got number"),
    (b'{"callId":"c","type":"gap","fromSeq":1,"toSeq":2}', "type 'gap' is reserved"),
]


@pytest.mark.parametrize(("body", "reason"), BAD, ids=[r for _, r in BAD])
def test_bad_bodies_say_what_is_wrong(body: bytes, reason: str) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        parse_event_body(body)
    assert reason in info.value.reason


def test_long_values_are_not_echoed_whole() -> None:
    body = orjson.dumps({"callId": "c", "type": "partial", "speaker": "x" * 10_000, "text": ""})
    with pytest.raises(RemoteProtocolError) as info:
        parse_event_body(body)
    assert len(info.value.reason) < 200


def test_body_over_one_megabyte_is_refused() -> None:
    padding = "x" * (relay.MAX_EVENT_BODY_BYTES - 40)
    ok = orjson.dumps({"callId": "c", "p": padding})
    assert len(ok) <= relay.MAX_EVENT_BODY_BYTES
    parse_event_body(ok)
    with pytest.raises(RemoteProtocolError) as info:
        parse_event_body(ok + b" " * (relay.MAX_EVENT_BODY_BYTES + 1 - len(ok)))
    assert info.value.close_code == CLOSE_MESSAGE_TOO_BIG


def test_from_wire_checks_the_same_things() -> None:
    for body, reason in BAD:
        try:
            obj = orjson.loads(body)
        except orjson.JSONDecodeError:
            continue
        if isinstance(obj, dict) and obj.get("type") == "gap":
            continue  # from_wire reads gaps (subscribers get them)
        with pytest.raises(RemoteProtocolError) as info:
            from_wire(obj)
        assert reason in info.value.reason or "JSON object" in info.value.reason


# -- delivery frames ----------------------------------------------------------------------------
def test_delivery_adds_seq_and_ts_and_keeps_everything_else() -> None:
    _, event = parse_event_body(fixture("unknown_with_extras.json"))
    frame = encode_delivery(event, 42, 1_700_000_000.1234)
    assert isinstance(frame, str)
    assert orjson.loads(frame) == {**orjson.loads(fixture("unknown_with_extras.json")),
                                   "seq": 42, "ts": 1_700_000_000_123}
    assert event == orjson.loads(fixture("unknown_with_extras.json"))  # not mutated


def test_hub_fields_overwrite_a_publishers() -> None:
    _, event = parse_event_body(b'{"callId":"c","seq":"forged","ts":-1}')
    assert orjson.loads(encode_delivery(event, 3, 2.0)) == {"callId": "c", "seq": 3, "ts": 2000}


@pytest.mark.parametrize(("seq", "now_s"), [(-1, 1.0), (True, 1.0), (1.5, 1.0), (1, -1.0),
                                            (1, 1_700_000_000_000.0), (1, float("nan")),
                                            (1, True), (1, "now")])
def test_delivery_refuses_our_mistakes(seq: Any, now_s: Any) -> None:
    with pytest.raises(LocalProtocolError):
        encode_delivery({"callId": "c"}, seq, now_s)


def test_delivery_refuses_unencodable_events() -> None:
    with pytest.raises(LocalProtocolError):
        encode_delivery({"callId": "c", "x": 2**70}, 1, 1.0)


def test_decode_delivery_splits_hub_fields_from_the_event() -> None:
    _, event = parse_event_body(fixture("reply.json"))
    frame = encode_delivery(event, 9, 1_700_000_000.0)
    assert decode_delivery(frame) == Delivered(seq=9, ts=1_700_000_000_000,
                                               event=OURS["reply.json"])
    unknown = decode_delivery(encode_delivery({"callId": "c", "type": "x"}, 1, 0.0))
    assert unknown.event == OtherEvent({"callId": "c", "type": "x"})


@pytest.mark.parametrize(("frame", "reason"), [
    ('{"callId":"c","seq":-1}', "seq"), ('{"callId":"c","seq":"1"}', "seq"),
    ('{"callId":"c","ts":"now"}', "ts"), ('{"callId":"c","seq":1,"ts":true}', "ts"),
    ('{"seq":1}', "callId"), ("[1]", "JSON object"), ("", "JSON"),
])
def test_decode_delivery_refuses_bad_frames(frame: str, reason: str) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        decode_delivery(frame)
    assert reason in info.value.reason


# -- typed models -------------------------------------------------------------------------------
def test_renames_live_on_the_converter() -> None:
    assert to_wire(CallEvent(call_id="c", state="started", call_control_id="cc", stream_id="s")) \
        == {"type": "call", "callId": "c", "state": "started", "callControlId": "cc",
            "streamId": "s"}
    assert [a.name for a in attrs.fields(CallEvent)][:3] == [
        "call_id", "state", "call_control_id"]


@pytest.mark.parametrize("event", [
    Partial(call_id="c", speaker="bot", text="x"),  # type: ignore[arg-type]
    Partial(call_id="", speaker="agent", text="x"),
    Partial(call_id="c", speaker="agent", text="x", ts_start=True),
    Reply(call_id="c", turn_id="t", text="x", interrupted=1),  # type: ignore[arg-type]
    Latency(call_id="c", turn_id="t", stages={"a": float("inf")}),
    Coach(call_id="c", mode="tip", severity="urgent", text="x"),  # type: ignore[arg-type]
    OtherEvent({"type": "x"}),
    OtherEvent({"callId": "c", "type": "partial"}),
])
def test_to_wire_refuses_what_the_hub_would(event: Any) -> None:
    with pytest.raises(LocalProtocolError):
        to_wire(event)


def test_to_wire_refuses_foreign_objects() -> None:
    with pytest.raises(LocalProtocolError):
        to_wire({"type": "partial"})  # type: ignore[arg-type]


call_ids = st.text(min_size=1)
opt_str = st.none() | st.text()
numbers = st.integers(-2**63, 2**63 - 1) | st.floats(allow_nan=False, allow_infinity=False)
opt_num = st.none() | numbers
json_leaf = st.none() | st.booleans() | numbers | st.text()
json_value = st.recursive(json_leaf, lambda inner: st.lists(inner, max_size=3)
                          | st.dictionaries(st.text(max_size=5), inner, max_size=3), max_leaves=8)
speakers = st.sampled_from(relay.SPEAKERS)

typed_events = st.one_of(
    st.builds(Partial, call_id=call_ids, speaker=speakers, text=st.text(), turn_id=opt_str,
              ts_start=opt_num, ts_end=opt_num),
    st.builds(relay.Final, call_id=call_ids, speaker=speakers, text=st.text(), turn_id=opt_str,
              ts_start=opt_num, ts_end=opt_num),
    st.builds(Coach, call_id=call_ids, mode=st.sampled_from(relay.COACH_MODES),
              severity=st.sampled_from(relay.COACH_SEVERITIES), text=st.text(),
              turn_ref=opt_str),
    st.builds(Reply, call_id=call_ids, turn_id=st.text(), text=st.text(),
              interrupted=st.booleans(), ts_start=opt_num, ts_end=opt_num),
    st.builds(Latency, call_id=call_ids, turn_id=st.text(),
              stages=st.dictionaries(st.sampled_from(relay.LATENCY_STAGES) | st.text(), numbers)),
    st.builds(CallEvent, call_id=call_ids, state=st.sampled_from(relay.CALL_STATES),
              call_control_id=opt_str, stream_id=opt_str, reason=opt_str),
    st.builds(Gap, call_id=call_ids, from_seq=st.integers(0, 2**53), to_seq=st.integers(0, 2**53)),
    st.builds(lambda cid, t, extra: OtherEvent({**extra, "callId": cid, **t}), call_ids,
              st.just({}) | st.text().filter(lambda t: t not in SPECS).map(
                  lambda t: {"type": t}),
              st.dictionaries(st.text(max_size=6).filter(lambda k: k not in ("callId", "type")),
                              json_value, max_size=4)),
)


@given(typed_events)
@settings(max_examples=500)
def test_from_wire_of_to_wire_is_identity(event: Any) -> None:
    assert from_wire(to_wire(event)) == event
    assert from_wire(orjson.loads(orjson.dumps(to_wire(event)))) == event


@given(typed_events.filter(lambda e: not isinstance(e, Gap)), st.integers(1, 2**40),
       st.floats(0, 4e9))
@settings(max_examples=300)
def test_publish_then_deliver_then_decode(event: Any, seq: int, now_s: float) -> None:
    call_id, obj = parse_event_body(encode_publish(event))
    assert call_id == event.call_id
    delivered = decode_delivery(encode_delivery(obj, seq, now_s))
    assert delivered == Delivered(seq=seq, ts=round(now_s * 1000), event=event)


# -- garbage ------------------------------------------------------------------------------------
@given(st.binary(max_size=300))
@settings(max_examples=1000)
def test_garbage_bytes_only_raise_remote_protocol_error(body: bytes) -> None:
    try:
        parse_event_body(body)
    except RemoteProtocolError:
        pass


@given(st.sampled_from([*SPECS, "other"]), st.dictionaries(
    st.sampled_from(["callId", "speaker", "text", "turnId", "tsStart", "tsEnd", "mode",
                     "severity", "turnRef", "interrupted", "stages", "state", "reason",
                     "fromSeq", "toSeq", "seq", "ts"]),
    json_value | st.sampled_from([*relay.SPEAKERS, *relay.COACH_MODES, "ended"])
    | st.dictionaries(st.text(max_size=4), json_value, max_size=3), max_size=8))
@settings(max_examples=600)
def test_wrong_shapes_only_raise_remote_protocol_error(event_type: str, fields: dict) -> None:
    obj = {**fields, "type": event_type}
    for attempt in (lambda: parse_event_body(orjson.dumps(obj)), lambda: from_wire(obj),
                    lambda: decode_delivery(orjson.dumps(obj))):
        try:
            attempt()
        except RemoteProtocolError:
            pass


@given(json_value)
def test_any_json_only_raises_remote_protocol_error(value: Any) -> None:
    for attempt in (lambda: parse_event_body(orjson.dumps(value)), lambda: from_wire(value)):
        try:
            attempt()
        except RemoteProtocolError:
            pass


# -- cost ---------------------------------------------------------------------------------------
PARTIAL_200B = ('{"type":"partial","callId":"v3:call-7f3a","speaker":"customer","turnId":"t-12",'
                '"text":"Hola, buenos días, me gustaría información sobre sus productos, por '
                'favor","tsStart":1640995200000,"tsEnd":1640995201000}').encode()


def test_hot_path_cost() -> None:
    """parse + encode of a ~200 B partial: about 2 µs here; the bound only catches a blunder."""
    assert 180 <= len(PARTIAL_200B) <= 220
    rounds = 5000
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        for seq in range(rounds):
            _, event = parse_event_body(PARTIAL_200B)
            encode_delivery(event, seq, 1_700_000_000.0)
        best = min(best, (time.perf_counter() - start) / rounds)
    assert best < 50e-6, f"{best * 1e6:.1f} µs per event"
