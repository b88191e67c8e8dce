"""protocols.telnyx_call_control: builders validate our inputs, responses and webhooks both ways.

Webhook fixtures follow the fact sheet (/work/shared/protocols/telnyx.md §4): the call.hangup
envelope is the sheet's example verbatim; the others put the documented payload fields in the
same envelope.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import attrs
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from protocols import telnyx_call_control as cc
from protocols.errors import LocalProtocolError, RemoteProtocolError
from protocols.telnyx_call_control import (
    ApiError,
    ApiRequest,
    CallAnswered,
    CallDtmfReceived,
    CallHangup,
    CallInitiated,
    CallPlaybackEnded,
    CallPlaybackStarted,
    CallSpeakEnded,
    CallSpeakStarted,
    CallTranscription,
    CommandResult,
    DialResult,
    GenericPayload,
    StreamingFailed,
    StreamingStarted,
    StreamingStopped,
    StreamParams,
    TelnyxApiErrors,
    TranscriptionData,
    WebhookEvent,
    WebhookMeta,
    decode_command_response,
    decode_dial_response,
    decode_webhook,
    encode_webhook,
)

FIXTURES = Path(__file__).parent / "fixtures" / "telnyx"
PROPERTY = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow], max_examples=300)

CCID = "v3:MdI91X4lWFEs7IgbBEOT9M4AigoY08M0WWZFISt1Yw2axZ_IiE4pqg"
LEG = "428c31b6-7af4-4bcb-b7f5-5013ef9657c1"
IDS: dict[str, Any] = dict(
    call_control_id=CCID,
    call_leg_id=LEG,
    call_session_id=LEG,
    connection_id="7267xxxxxxxxxxxxxx",
    client_state=b"have a nice day =]",
)
WHEN = "2018-02-02T22:25:27.521992Z"
META = WebhookMeta(attempt=1, delivered_to="https://example.com/telnyx/events")
URL = "wss://agent.example.com/telnyx/media/abc"


def _body(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def _event(event_type: str, suffix: str, payload: Any, meta: WebhookMeta | None = META) -> WebhookEvent:
    return WebhookEvent(
        id=f"5b1e8a2c-7a1f-4c1e-9a43-1d3f3bb9c{suffix}",
        event_type=event_type,
        payload=payload,
        occurred_at=WHEN,
        meta=meta,
    )


WEBHOOK_FIXTURES: list[tuple[str, WebhookEvent]] = [
    (
        "call_initiated.json",
        _event("call.initiated", "101", CallInitiated(
            **IDS, direction="outgoing", state="bridging", from_="+13122010094", to="+13122123456",
            caller_id_name="+13122010094", start_time="2018-02-02T22:20:27.521992Z",
        )),
    ),
    (
        "call_initiated_incoming.json",
        _event("call.initiated", "102", CallInitiated(
            **{**IDS, "client_state": None}, direction="incoming", state="parked",
            from_="+35319605860", to="+35319605861",
        ), meta=None),
    ),
    (
        "call_answered.json",
        _event("call.answered", "103", CallAnswered(
            **IDS, state="answered", from_="+13122010094", to="+13122123456",
            start_time="2018-02-02T22:20:27.521992Z", codec="PCMU", sampling_rate=8000,
        )),
    ),
    (
        "call_hangup.json",
        WebhookEvent(
            id="0ccc7b54-4df3-4bca-a65a-3da1ecc777f0",
            event_type="call.hangup",
            occurred_at=WHEN,
            record_type="event",
            meta=META,
            payload=CallHangup(
                **IDS, from_="+35319605860", to="+35319605860", start_time="2018-02-02T22:20:27.521992Z",
                state="hangup", hangup_cause="call_rejected", hangup_source="caller", sip_hangup_cause="603",
                call_quality_stats={
                    "inbound": {"jitter_max_variance": "2.74", "jitter_packet_count": "0", "mos": "4.50",
                                "packet_count": "591", "skip_packet_count": "9"},
                    "outbound": {"packet_count": "0", "skip_packet_count": "0"},
                },
            ),
        ),
    ),
    (
        "call_playback_started.json",
        _event("call.playback.started", "104", CallPlaybackStarted(
            **IDS, media_url="https://example.com/hold.mp3", overlay=False)),
    ),
    (
        "call_playback_ended.json",
        _event("call.playback.ended", "105", CallPlaybackEnded(
            **IDS, media_url="https://example.com/hold.mp3", overlay=False, status="cancelled",
            status_detail="playback_stop")),
    ),
    ("call_speak_started.json", _event("call.speak.started", "106", CallSpeakStarted(**IDS))),
    ("call_speak_ended.json", _event("call.speak.ended", "107", CallSpeakEnded(**IDS, status="completed"))),
    ("streaming_started.json", _event("streaming.started", "108", StreamingStarted(**IDS, stream_url=URL))),
    ("streaming_stopped.json", _event("streaming.stopped", "109", StreamingStopped(**IDS, stream_url=URL))),
    (
        "streaming_failed_docs.json",
        _event("streaming.failed", "110", StreamingFailed(
            **IDS, failure_reason="connection_failed", stream_id="1edb94f9-7ef0-4150-b502-e0ebadfd9491",
            stream_type="websocket", stream_params=StreamParams(stream_url=URL, track="inbound_track"))),
    ),
    (
        "streaming_failed_sdk.json",
        _event("streaming.failed", "111", StreamingFailed(
            **IDS, failure_reason="connection_failed", stream_id="1edb94f9-7ef0-4150-b502-e0ebadfd9491",
            stream_type="websocket", stream_params=StreamParams(stream_url=URL, track="both_tracks"))),
    ),
    (
        "call_transcription.json",
        _event("call.transcription", "112", CallTranscription(**IDS, transcription_data=TranscriptionData(
            transcript="I would like to book an appointment", is_final=True, confidence=0.977219,
            transcription_track="inbound"))),
    ),
    (
        "call_dtmf_received.json",
        _event("call.dtmf.received", "113", CallDtmfReceived(
            **IDS, digit="#", from_="+13122010094", to="+13122123456")),
    ),
    (
        "call_bridged_unknown.json",
        _event("call.bridged", "114", GenericPayload({
            **{**IDS, "client_state": "aGF2ZSBhIG5pY2UgZGF5ID1d"},
            "from": "+13122010094", "to": "+13122123456", "state": "bridged"})),
    ),
]  # fmt: skip


# =========================================================================== webhooks


@pytest.mark.parametrize(("name", "expected"), WEBHOOK_FIXTURES, ids=[n for n, _ in WEBHOOK_FIXTURES])
def test_webhook_fixture_decodes(name: str, expected: WebhookEvent) -> None:
    body = _body(f"webhooks/{name}")
    assert decode_webhook(body) == expected
    assert decode_webhook(body.decode()) == expected


@pytest.mark.parametrize(("name", "expected"), WEBHOOK_FIXTURES, ids=[n for n, _ in WEBHOOK_FIXTURES])
def test_webhook_fixture_round_trips(name: str, expected: WebhookEvent) -> None:
    body = encode_webhook(expected)
    assert decode_webhook(body) == expected
    produced, original = json.loads(body), json.loads(_body(f"webhooks/{name}"))
    # The emulator writes the envelope and every field we model exactly as the fixture has it.
    assert produced.keys() == original.keys()
    assert {k: v for k, v in produced["data"].items() if k != "payload"} == {
        k: v for k, v in original["data"].items() if k != "payload"
    }
    assert produced["data"]["payload"].items() <= original["data"]["payload"].items() or (
        name == "streaming_failed_docs.json"  # written back with the SDK's 'track' spelling
    )


def test_hangup_example_from_the_fact_sheet() -> None:
    event = decode_webhook(_body("webhooks/call_hangup.json"))
    assert isinstance(event.payload, CallHangup)
    assert (event.payload.hangup_cause, event.payload.hangup_source, event.payload.sip_hangup_cause) == (
        "call_rejected", "caller", "603",
    )  # fmt: skip
    assert event.payload.client_state == b"have a nice day =]"
    assert event.occurred_at_datetime is not None and event.occurred_at_datetime.year == 2018
    assert hash(event) == hash(decode_webhook(_body("webhooks/call_hangup.json")))


def _envelope(event_type: str, payload: Any, **data: Any) -> bytes:
    return json.dumps({"data": {"id": "e1", "event_type": event_type, "payload": payload, **data}}).encode()


def _call(event_type: str, **payload: Any) -> bytes:
    return _envelope(event_type, {"call_control_id": "c", **payload})


def test_unknown_event_types_are_generic_never_errors() -> None:
    for payload in (None, [1, 2], "text", {"x": {"y": 1}}, 3.5):
        event = decode_webhook(_envelope("call.machine.premium.detection.ended", payload))
        assert event.payload == GenericPayload(payload)
        assert decode_webhook(encode_webhook(event)) == event


def test_client_state_null_and_missing() -> None:
    for extra in ({"client_state": None}, {}):
        event = decode_webhook(_envelope("call.speak.started", {"call_control_id": "c", **extra}))
        assert event.payload == CallSpeakStarted(call_control_id="c")
        assert event.record_type == "event" and event.occurred_at is None and event.meta is None


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"", "not valid JSON"),
        (b"\xff", "not valid JSON"),
        (b"[]", "must be a JSON object"),
        (b"{}", "'data' must be an object"),
        (b'{"data": []}', "'data' must be an object"),
        (b'{"data": {"event_type": "call.hangup"}}', "data.id must be a non-empty string"),
        (b'{"data": {"id": "x"}}', "data.event_type must be a non-empty string"),
        (b'{"data": {"id": "x", "event_type": 7}}', "data.event_type must be a non-empty string"),
        (_envelope("call.hangup", None), "data.payload must be an object"),
        (_envelope("call.hangup", {}), "required field missing @ data.payload.call_control_id"),
        (_envelope("call.hangup", {"call_control_id": 5}), "got int @ data.payload.call_control_id"),
        (_envelope("call.hangup", {"call_control_id": "c", "client_state": "%%"}), "invalid base64"),
        (_envelope("call.hangup", {"call_control_id": "c", "client_state": "aGk"}), "invalid base64"),
        (_envelope("call.hangup", {"call_control_id": "c", "client_state": 12}), "expected a base64 string"),
        (_envelope("call.hangup", {"call_control_id": "c", "from": 1}), "@ data.payload.from"),
        (_call("call.initiated"), "required field missing @ data.payload.direction"),
        (_call("call.initiated", direction="sideways"), "data.payload.direction"),
        (_call("call.answered", sampling_rate=8000.5), "expected an integer"),
        (_call("call.playback.ended", overlay="false"), "expected true or false"),
        (_envelope("call.transcription", {"call_control_id": "c"}), "transcription_data"),
        (_call("call.transcription", transcription_data={"transcript": "x", "confidence": "hi"}), "a number"),
        (_envelope("call.dtmf.received", {"call_control_id": "c"}), "data.payload.digit"),
        (_call("streaming.failed", stream_params="wss://x"), "expected an object"),
        (_envelope("call.hangup", {"call_control_id": "c"}, occurred_at=5), "occurred_at must be a string"),
        (_envelope("call.hangup", {"call_control_id": "c"}, record_type=None), "record_type must be"),
        (_call("call.hangup")[:-1] + b', "meta": {"attempt": "one"}}', "@ meta.attempt"),
    ],
)
def test_bad_webhooks(body: bytes, reason: str) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        decode_webhook(body)
    assert reason in info.value.reason


def test_tolerated_webhook_variations() -> None:
    event = decode_webhook(_call("call.answered", sampling_rate="16000", new=[1]))
    assert event.payload == CallAnswered(call_control_id="c", sampling_rate=16000)
    data = {"transcript": "hi", "confidence": 1}
    event = decode_webhook(_call("call.transcription", transcription_data=data))
    assert isinstance(event.payload, CallTranscription)
    assert event.payload.transcription_data == TranscriptionData(transcript="hi", confidence=1.0)
    with pytest.raises(RemoteProtocolError, match="ISO 8601"):
        attrs.evolve(event, occurred_at="yesterday").occurred_at_datetime


def test_encode_webhook_checks_payload_matches_event_type() -> None:
    with pytest.raises(LocalProtocolError, match="carries CallHangup"):
        speak = CallSpeakStarted(call_control_id="c")
        encode_webhook(WebhookEvent(id="e", event_type="call.hangup", payload=speak))
    with pytest.raises(LocalProtocolError, match="carries GenericPayload"):
        encode_webhook(WebhookEvent(id="e", event_type="call.new", payload=CallAnswered(call_control_id="c")))
    with pytest.raises(LocalProtocolError):
        encode_webhook(WebhookEvent(id="", event_type="call.hangup", payload=CallHangup(call_control_id="c")))
    with pytest.raises(LocalProtocolError):
        bad_id: Any = 5
        hangup = CallHangup(call_control_id=bad_id)
        encode_webhook(WebhookEvent(id="e", event_type="call.hangup", payload=hangup))
    with pytest.raises(LocalProtocolError):
        encode_webhook("not an event")  # type: ignore[arg-type]


_text = st.text(max_size=30)
_opt_text = st.none() | _text
_ids_strategy = dict(
    call_control_id=st.text(min_size=1, max_size=30),
    call_leg_id=_opt_text,
    call_session_id=_opt_text,
    connection_id=_opt_text,
    client_state=st.none() | st.binary(max_size=40),
)
_payloads = st.one_of(
    st.builds(CallInitiated, direction=st.sampled_from(["incoming", "outgoing"]), state=_opt_text,
              from_=_opt_text, to=_opt_text, **_ids_strategy),
    st.builds(CallAnswered, sampling_rate=st.none() | st.integers(0, 10**6), codec=_opt_text,
              **_ids_strategy),
    st.builds(CallHangup, hangup_cause=_opt_text, sip_hangup_cause=_opt_text,
              call_quality_stats=st.none() | st.dictionaries(_text, _text, max_size=3), **_ids_strategy),
    st.builds(CallPlaybackEnded, overlay=st.none() | st.booleans(), status=_opt_text, **_ids_strategy),
    st.builds(CallSpeakEnded, status=_opt_text, **_ids_strategy),
    st.builds(StreamingFailed, failure_reason=_opt_text,
              stream_params=st.none() | st.builds(StreamParams, stream_url=_opt_text, track=_opt_text),
              **_ids_strategy),
    st.builds(CallTranscription, transcription_data=st.builds(
        TranscriptionData, transcript=_text, is_final=st.booleans(),
        confidence=st.none() | st.floats(allow_nan=False, allow_infinity=False)), **_ids_strategy),
    st.builds(CallDtmfReceived, digit=st.sampled_from("0123456789*#"), **_ids_strategy),
)  # fmt: skip


@PROPERTY
@given(
    _payloads,
    st.text(min_size=1, max_size=20),
    _opt_text,
    st.none() | st.builds(WebhookMeta, attempt=st.none() | st.integers(0, 9), delivered_to=_opt_text),
)
def test_webhook_round_trip(payload: Any, event_id: str, when: str | None, meta: WebhookMeta | None) -> None:
    event_type = next(k for k, v in cc.WEBHOOK_PAYLOADS.items() if v is type(payload))
    event = WebhookEvent(id=event_id, event_type=event_type, payload=payload, occurred_at=when, meta=meta)
    assert decode_webhook(encode_webhook(event)) == event


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)


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
@given(st.sampled_from([name for name, _ in WEBHOOK_FIXTURES]), st.data(), _json_values)
def test_mutated_webhooks_only_remote_errors(name: str, data: st.DataObject, value: Any) -> None:
    envelope = json.loads(_body(f"webhooks/{name}"))
    path = data.draw(st.sampled_from(_paths(envelope)))
    node = envelope
    for key in path[:-1]:
        node = node[key]
    if data.draw(st.booleans()):
        node[path[-1]] = value
    else:
        del node[path[-1]]
    try:
        decode_webhook(json.dumps(envelope).encode())
    except RemoteProtocolError:
        pass


@PROPERTY
@given(st.binary(max_size=300) | st.text(max_size=300))
@example(b'{"data":' * 3000)
@example(_call("call.answered", sampling_rate=1).replace(b": 1}", b": 1" + b"0" * 5000 + b"}"))
def test_random_bodies_only_remote_errors(body: bytes | str) -> None:
    for decoder in (
        decode_webhook,
        lambda b: decode_dial_response(200, b),
        lambda b: decode_command_response(201, b),
    ):
        try:
            decoder(body)
        except RemoteProtocolError:
            pass
    for status in (400, 422, 500):
        assert isinstance(decode_dial_response(status, body), TelnyxApiErrors)


def test_every_split_point_of_a_webhook() -> None:
    raw = _body("webhooks/call_dtmf_received.json").strip()
    for cut in range(len(raw)):
        with pytest.raises(RemoteProtocolError):
            decode_webhook(raw[:cut])


# =========================================================================== responses


def test_dial_response() -> None:
    result = decode_dial_response(200, _body("rest/dial_response.json"))
    assert result == DialResult(
        call_control_id=CCID,
        call_leg_id="2dc6fc34-f9e0-11ea-b68e-02420a0f7768",
        call_session_id="2dc1b3c8-f9e0-11ea-bc5a-02420a0f7768",
        is_alive=False,
        record_type="call",
        client_state=b"have a nice day =]",
    )
    assert decode_dial_response(200, cc.encode_dial_response(result)) == result


def test_command_result() -> None:
    result = decode_command_response(200, _body("rest/command_result.json"))
    assert result == CommandResult("ok") and result.ok
    assert json.loads(cc.encode_command_result()) == json.loads(_body("rest/command_result.json"))
    assert not decode_command_response(200, b'{"data":{"result":"queued"}}').ok  # type: ignore[union-attr]


def test_call_has_ended_error() -> None:
    errors = decode_command_response(422, _body("rest/error_call_ended.json"))
    assert isinstance(errors, TelnyxApiErrors)
    assert errors.call_has_ended and not errors.retryable
    assert errors.codes == ("90018",)
    assert errors.errors[0] == ApiError(
        code="90018",
        title="Call has already ended",
        detail="This call is no longer active and can't receive commands.",
        source={"pointer": "/call_control_id"},
        meta={"url": "https://developers.telnyx.com/docs/overview/errors/90018"},
    )
    assert errors.describe() == "HTTP 422: 90018 Call has already ended"
    assert cc.decode_api_errors(422, cc.encode_api_errors(errors)) == errors


def test_validation_errors_tolerate_a_numeric_code() -> None:
    errors = decode_dial_response(422, _body("rest/error_validation.json"))
    assert isinstance(errors, TelnyxApiErrors)
    assert errors.codes == ("10004", "10015")
    assert errors.errors[0].source == {"pointer": "/connection_id", "parameter": "connection_id"}


@pytest.mark.parametrize(
    ("status", "body", "codes", "retryable"),
    [
        (502, b"<html>Bad Gateway</html>", (), True),
        (503, b"", (), True),
        (429, b'{"errors": [{"code": "10011", "title": "Too many requests"}]}', ("10011",), True),
        (401, b'{"errors": "nope"}', (), False),
        (422, b'{"errors": [5, {"title": "no code"}, {"code": "10004"}]}', ("10004",), False),
    ],
)
def test_error_bodies_are_values_even_when_odd(
    status: int, body: bytes, codes: tuple[str, ...], retryable: bool
) -> None:
    errors = decode_command_response(status, body)
    assert isinstance(errors, TelnyxApiErrors)
    assert (errors.status, errors.codes, errors.retryable) == (status, codes, retryable)


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"not json", "dial response is not valid JSON"),
        (b'{"data": null}', "'data' must be an object"),
        (b'{"data": {"call_leg_id": "x"}}', "required field missing @ data.call_control_id"),
        (b'{"data": {"call_control_id": "x", "is_alive": "false"}}', "@ data.is_alive"),
        (b'{"data": {"call_control_id": "x", "client_state": "!"}}', "invalid base64"),
    ],
)
def test_bad_dial_responses(body: bytes, reason: str) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        decode_dial_response(200, body)
    assert reason in info.value.reason


def test_bad_command_responses() -> None:
    for body in (b"{}", b'{"data": {}}', b'{"data": {"result": 1}}', b"[]"):
        with pytest.raises(RemoteProtocolError):
            decode_command_response(200, body)
    with pytest.raises(LocalProtocolError):
        decode_command_response("200", b"{}")  # type: ignore[arg-type]


# =========================================================================== builders


def test_dial_for_an_ai_agent() -> None:
    request = cc.dial(
        connection_id="1684641123236054244",
        to="+13122123456",
        from_="+13122010094",
        stream_url="wss://agent.example.com/telnyx/media/call-1",
        stream_bidirectional_codec="PCMU",
        stream_auth_token="tok",
        client_state=b'{"call":"call-1"}',
        command_id="dial-call-1",
        webhook_url="https://agent.example.com/telnyx/events",
        timeout_secs=30,
    )
    assert request == ApiRequest(
        "POST",
        "/calls",
        {
            "connection_id": "1684641123236054244",
            "to": "+13122123456",
            "from": "+13122010094",
            "webhook_url": "https://agent.example.com/telnyx/events",
            "timeout_secs": 30,
            "stream_url": "wss://agent.example.com/telnyx/media/call-1",
            "stream_track": "inbound_track",
            "stream_bidirectional_mode": "rtp",
            "stream_bidirectional_codec": "PCMU",
            "stream_auth_token": "tok",
            "client_state": "eyJjYWxsIjoiY2FsbC0xIn0=",
            "command_id": "dial-call-1",
        },
    )
    json.dumps(request.json)  # plain JSON types only


def test_dial_l16_and_without_stream() -> None:
    body = cc.dial(
        connection_id="c", to="sip:agent@example.com", from_="+13122010094", stream_url="ws://127.0.0.1/m",
        stream_codec="L16", stream_bidirectional_codec="L16", stream_bidirectional_sampling_rate=16000,
        client_state="texto ñ",
    ).json  # fmt: skip
    assert body is not None
    assert body["stream_codec"] == body["stream_bidirectional_codec"] == "L16"
    assert body["stream_bidirectional_sampling_rate"] == 16000
    assert body["client_state"] == "dGV4dG8gw7E="
    plain = cc.dial(connection_id="c", to="+13122123456", from_="+13122010094").json
    assert plain == {"connection_id": "c", "to": "+13122123456", "from": "+13122010094"}


_GOOD_DIAL: dict[str, Any] = dict(
    connection_id="c", to="+13122123456", from_="+13122010094", stream_url="wss://x/y"
)


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (dict(from_="13122010094"), "from_ must be E.164"),
        (dict(from_="+1312"), "from_ must be E.164"),
        (dict(from_="+1234567890123456"), "from_ must be E.164"),
        (dict(from_="sip:a@b.c"), "from_ must be E.164"),
        (dict(to="+1 312 212 3456"), "to must be E.164"),
        (dict(to=None), "to must be E.164"),
        (dict(connection_id=""), "connection_id must be a non-empty string"),
        (dict(stream_url="https://x/y"), "stream_url must be a wss/ws:// URL"),
        (dict(stream_codec="pcmu"), "stream_codec must be one of"),
        (dict(stream_bidirectional_codec="ulaw"), "stream_bidirectional_codec must be one of"),
        (dict(stream_bidirectional_sampling_rate=12000), "stream_bidirectional_sampling_rate must be one of"),
        (dict(stream_bidirectional_mode="mp3", stream_bidirectional_codec="PCMU"), "mode='rtp'"),
        (dict(stream_bidirectional_mode="raw"), "stream_bidirectional_mode must be one of"),
        (dict(stream_track="inbound"), "stream_track must be one of"),
        (dict(stream_bidirectional_target_legs="all"), "stream_bidirectional_target_legs"),
        (dict(stream_auth_token="x" * 4001), "at most 4000"),
        (dict(client_state=b""), "client_state must be non-empty"),
        (dict(client_state=5), "client_state must be non-empty"),
        (dict(command_id=""), "command_id must be a non-empty string"),
        (dict(webhook_url="ftp://x"), "webhook_url must be a https/http:// URL"),
        (dict(timeout_secs=4), "timeout_secs must be an int in [5, 600]"),
        (dict(timeout_secs=True), "timeout_secs must be an int"),
        (dict(time_limit_secs=14401), "time_limit_secs"),
        (dict(stream_establish_before_call_originate="yes"), "stream_establish_before_call_originate"),
    ],
)
def test_dial_rejects_bad_inputs(change: dict[str, Any], reason: str) -> None:
    with pytest.raises(LocalProtocolError) as info:
        cc.dial(**{**_GOOD_DIAL, **change})
    assert reason in info.value.reason


def test_answer_hangup_and_paths() -> None:
    assert cc.answer("v3:abc") == ApiRequest("POST", "/calls/v3:abc/actions/answer", {})
    streamed = cc.answer("v3:abc", stream_url="wss://x/y", command_id="a1")
    assert streamed.json == {
        "stream_url": "wss://x/y", "stream_track": "inbound_track", "stream_bidirectional_mode": "rtp",
        "command_id": "a1",
    }  # fmt: skip
    assert cc.hangup("v3:a/b?c", client_state="bye").path == "/calls/v3:a%2Fb%3Fc/actions/hangup"
    assert cc.hangup("v3:abc", client_state="bye").json == {"client_state": "Ynll"}
    with pytest.raises(LocalProtocolError):
        cc.hangup("")


def test_playback_builders() -> None:
    request = cc.playback_start(
        "c", audio_url="https://x/a.mp3", loop="infinity", overlay=True, target_legs="self"
    )
    assert request == ApiRequest(
        "POST", "/calls/c/actions/playback_start",
        {"audio_url": "https://x/a.mp3", "loop": "infinity", "overlay": True, "target_legs": "self"},
    )  # fmt: skip
    content = cc.playback_start("c", playback_content=b"RIFF", audio_type="wav").json
    assert content == {"playback_content": "UklGRg==", "audio_type": "wav"}
    assert cc.playback_stop("c", stop="all").json == {"stop": "all"}
    for bad in (
        dict(),
        dict(audio_url="https://x", media_name="m"),
        dict(audio_url="file:///etc/passwd"),
        dict(media_name="m", loop=0),
        dict(media_name="m", loop=101),
        dict(media_name="m", audio_type="ogg"),
        dict(media_name="m", stop="some"),
        dict(media_name="m", overlay="yes"),
        dict(playback_content=b""),
    ):
        with pytest.raises(LocalProtocolError):
            cc.playback_start("c", **bad)
    with pytest.raises(LocalProtocolError):
        cc.playback_stop("c", stop="none")  # type: ignore[arg-type]


def test_speak_limits() -> None:
    request = cc.speak(
        "c", payload="Hola", voice="AWS.Polly.Lucia-Neural", language="es-ES", payload_type="text",
        service_level="premium",
    )  # fmt: skip
    assert request.json == {
        "payload": "Hola", "voice": "AWS.Polly.Lucia-Neural", "language": "es-ES", "payload_type": "text",
        "service_level": "premium",
    }  # fmt: skip
    assert cc.speak("c", payload="x" * 3000, voice="v").json["payload"] == "x" * 3000  # type: ignore[index]
    with pytest.raises(LocalProtocolError, match="3001 characters"):
        cc.speak("c", payload="x" * 3001, voice="v")
    for bad in (
        dict(payload="", voice="v"),
        dict(payload="p", voice=""),
        dict(payload="p", voice="v", payload_type="xml"),
        dict(payload="p", voice="v", service_level="gold"),
        dict(payload="p", voice="v", voice_settings=[1]),
    ):
        with pytest.raises(LocalProtocolError):
            cc.speak("c", **bad)


def test_streaming_and_transcription_builders() -> None:
    start = cc.streaming_start(
        "c", stream_url="wss://x/y", custom_parameters={"call": "1"}, stream_auth_token="t"
    )
    assert start.path == "/calls/c/actions/streaming_start"
    assert start.json == {
        "stream_url": "wss://x/y", "stream_track": "inbound_track", "stream_bidirectional_mode": "rtp",
        "stream_auth_token": "t", "custom_parameters": [{"name": "call", "value": "1"}],
    }  # fmt: skip
    assert cc.streaming_stop("c").json == {}
    assert cc.streaming_stop("c", stream_id="s").json == {"stream_id": "s"}
    transcription = cc.transcription_start(
        "c", transcription_engine="Deepgram", transcription_tracks="inbound"
    )
    assert transcription.json == {"transcription_engine": "Deepgram", "transcription_tracks": "inbound"}
    assert cc.transcription_stop("c").path == "/calls/c/actions/transcription_stop"
    with pytest.raises(LocalProtocolError):
        cc.streaming_start("c", stream_url="wss://x", custom_parameters={"a": 1})  # type: ignore[dict-item]
    with pytest.raises(LocalProtocolError):
        cc.streaming_start("c", stream_url=None)  # type: ignore[arg-type]
    with pytest.raises(LocalProtocolError):
        cc.transcription_start("c", transcription_tracks="left")  # type: ignore[arg-type]
    with pytest.raises(LocalProtocolError):
        cc.streaming_stop("c", stream_id="")


def test_stream_options_without_a_stream_url_are_refused() -> None:
    with pytest.raises(LocalProtocolError, match="without a stream_url"):
        cc.dial(connection_id="c", to="+13122123456", from_="+13122010094", stream_auth_token="t")
    with pytest.raises(LocalProtocolError, match="without a stream_url"):
        cc.answer("c", stream_bidirectional_codec="L16")


@PROPERTY
@given(
    st.text(max_size=20)
    | st.integers()
    | st.none()
    | st.binary(max_size=8)
    | st.lists(st.integers())
    | st.just("\ud800")
)
def test_builders_raise_only_local_errors(value: Any) -> None:
    for build in (
        lambda: cc.dial(connection_id="c", to=value, from_="+13122010094"),
        lambda: cc.dial(connection_id="c", to="+13122123456", from_=value),
        lambda: cc.dial(**_GOOD_DIAL, stream_bidirectional_codec=value),
        lambda: cc.hangup(value),
        lambda: cc.speak("c", payload=value, voice="v"),
        lambda: cc.playback_start("c", audio_url=value),
        lambda: cc.answer("c", stream_url=value),
        lambda: cc.hangup("c", client_state=value, command_id=value),
        lambda: cc.dial(**_GOOD_DIAL, stream_bidirectional_sampling_rate=value),
    ):
        try:
            request = build()
        except LocalProtocolError:
            continue
        json.dumps(request.json)
