"""protocols.deepgram_speak: fixtures both ways, round trips, garbage → only RemoteProtocolError."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import attrs
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocols import deepgram_speak as ds
from protocols.deepgram_speak import (
    Clear,
    Cleared,
    Close,
    Flush,
    Flushed,
    Metadata,
    Speak,
    SpeakOptions,
    UnknownMessage,
    WarningMessage,
)
from protocols.errors import LocalProtocolError, RemoteProtocolError

FIXTURES = Path(__file__).parent / "fixtures" / "deepgram"
PROPERTY = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _text(name: str) -> str:
    return (FIXTURES / name).read_text(encoding="utf-8")


_META: dict[str, Any] = dict(
    request_id="b2f6e9c4-3a1d-4e8f-9b7c-5d4e3f2a1b0c", model_name="aura-2-celeste-es",
    model_version="2025-05-13.0", model_uuid="e1f5a6b7-c8d9-4e0f-a1b2-c3d4e5f6a7b8",
)

SERVER_FIXTURES: list[tuple[str, ds.ServerMessage]] = [
    ("speak_metadata.json", Metadata(**_META)),
    (
        "speak_metadata_additional_models.json",
        Metadata(**_META, additional_model_uuids=("0a1b2c3d-4e5f-6a7b-8c9d-0e1f2a3b4c5d",)),
    ),
    ("speak_flushed.json", Flushed(0)),
    ("speak_cleared.json", Cleared(1)),
    (
        "speak_warning.json",
        WarningMessage(
            "Flush rate limit exceeded: flushes are ignored until the window passes.",
            "FLUSH_RATE_LIMIT",
        ),
    ),
    (
        "speak_unknown_type.json",
        UnknownMessage("Connected", {"type": "Connected", "request_id": _META["request_id"]}),
    ),
]
CLIENT_FIXTURES: list[tuple[str, ds.ClientMessage]] = [
    ("speak_client_speak.json", Speak("Hola, soy la asistente de la clínica. ¿En qué puedo ayudarle?")),
    ("speak_client_flush.json", Flush()),
    ("speak_client_clear.json", Clear()),
    ("speak_client_close.json", Close()),
]


@pytest.mark.parametrize(("name", "expected"), SERVER_FIXTURES, ids=[r[0] for r in SERVER_FIXTURES])
def test_server_fixture_both_ways(name: str, expected: ds.ServerMessage) -> None:
    assert ds.decode_server(_text(name)) == expected
    encoded = ds.encode_server(expected)
    assert encoded.startswith('{"type":')
    assert orjson.loads(encoded) == json.loads(_text(name))


@pytest.mark.parametrize(("name", "expected"), CLIENT_FIXTURES, ids=[r[0] for r in CLIENT_FIXTURES])
def test_client_fixture_both_ways(name: str, expected: ds.ClientMessage) -> None:
    assert ds.decode_client_text(_text(name)) == expected
    assert ds.decode_client_text(_text(name).encode()) == expected
    assert orjson.loads(ds.encode_client(expected)) == json.loads(_text(name))


def test_tolerant_presence() -> None:
    assert ds.decode_server('{"type":"Flushed"}') == Flushed(None)
    assert ds.encode_server(Flushed(None)) == '{"type":"Flushed"}'
    assert ds.decode_server('{"type":"Warning"}') == WarningMessage()
    assert ds.decode_server('{"type":"Metadata","request_id":"r","extra_field":1}') == Metadata(request_id="r")


@pytest.mark.parametrize(
    "text",
    [
        '{"type":"Reset"}',  # the go-sdk#347 case: Deepgram closes with 1008
        '{"type":"speak","text":"hola"}',
        '{"type":"Speak"}',
        '{"type":"Speak","text":null}',
        '{"type":"Speak","text":["hola"]}',
        '{"text":"hola"}',
        '{"type":7}',
        "Flush",
        "[]",
        "",
        '{"type":"Flush"',
    ],
)
def test_bad_client_text_closes_1008(text: str) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        ds.decode_client_text(text)
    assert info.value.close_code == 1008 == ds.CLOSE_UNKNOWN_CONTROL


@pytest.mark.parametrize(
    "text",
    [
        '{"type":"Flushed","sequence_id":"0"}',
        '{"type":"Flushed","sequence_id":0.5}',
        '{"type":"Flushed","sequence_id":true}',
        '{"type":"Flushed","sequence_id":123456789012345678901234567890}',
        '{"type":"Cleared","sequence_id":1e400}',
        '{"type":"Metadata","request_id":5}',
        '{"type":"Metadata","additional_model_uuids":"abc"}',
        '{"type":"Warning","description":{"text":"x"}}',
        '{"type":null}',
        '{"type":["Flushed"]}',
        '{"sequence_id":0}',
        "[1]",
        "nope",
        "",
    ],
)
def test_bad_server_text_is_a_remote_error(text: str) -> None:
    with pytest.raises(RemoteProtocolError):
        ds.decode_server(text)


def test_every_truncation_is_a_remote_error() -> None:
    for name, _ in SERVER_FIXTURES:
        compact = orjson.dumps(json.loads(_text(name)))
        for cut in range(len(compact)):
            with pytest.raises(RemoteProtocolError):
                ds.decode_server(compact[:cut])
    for name, _ in CLIENT_FIXTURES:
        compact = orjson.dumps(json.loads(_text(name)))
        for cut in range(len(compact)):
            with pytest.raises(RemoteProtocolError):
                ds.decode_client_text(compact[:cut])


def _decodes_or_remote_error(decode: Any, data: Any) -> None:
    try:
        decode(data)
    except RemoteProtocolError:
        pass


@PROPERTY
@given(st.binary(max_size=200) | st.text(max_size=200))
def test_random_input_only_remote_errors(data: str | bytes) -> None:
    _decodes_or_remote_error(ds.decode_server, data)
    _decodes_or_remote_error(ds.decode_client_text, data)
    _decodes_or_remote_error(ds.parse_speak_query, data)


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats() | st.text(max_size=8),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3),
    max_leaves=6,
)


@PROPERTY
@given(
    st.sampled_from([json.loads(_text(n)) for n, _ in SERVER_FIXTURES + CLIENT_FIXTURES]),
    st.data(), _json_values,
)
def test_mutated_messages_decode_or_raise_remote_error(base: dict[str, Any], data: st.DataObject, value: Any) -> None:
    key = data.draw(st.sampled_from(sorted(base) + ["sequence_id", "text", "extra"]))
    text = json.dumps({**base, key: value})
    _decodes_or_remote_error(ds.decode_server, text)
    _decodes_or_remote_error(ds.decode_client_text, text)


_t = st.text(max_size=16)
server_messages = st.one_of(
    st.builds(
        Metadata, request_id=_t, model_name=_t, model_version=_t, model_uuid=_t,
        additional_model_uuids=st.none() | st.lists(_t, max_size=3).map(tuple),
    ),
    st.builds(Flushed, st.none() | st.integers(0, 2**40)),
    st.builds(Cleared, st.none() | st.integers(0, 2**40)),
    st.builds(WarningMessage, _t, _t),
    st.builds(
        lambda tag, body: UnknownMessage(tag, {**body, "type": tag}),
        st.text(min_size=1, max_size=10).filter(lambda t: t not in {"Metadata", "Flushed", "Cleared", "Warning"}),
        st.dictionaries(_t, st.none() | st.integers(-5, 5) | _t, max_size=3),
    ),
)
client_messages = st.one_of(st.builds(Speak, st.text(max_size=200)), st.sampled_from([Flush(), Clear(), Close()]))


@PROPERTY
@given(server_messages)
def test_server_round_trip(msg: ds.ServerMessage) -> None:
    assert ds.decode_server(ds.encode_server(msg)) == msg


@PROPERTY
@given(client_messages)
def test_client_round_trip(msg: ds.ClientMessage) -> None:
    assert ds.decode_client_text(ds.encode_client(msg)) == msg


def test_encoders_refuse_what_is_not_theirs() -> None:
    with pytest.raises(LocalProtocolError):
        ds.encode_server(Speak("x"))  # type: ignore[arg-type]
    with pytest.raises(LocalProtocolError):
        ds.encode_client(Flushed(0))  # type: ignore[arg-type]
    with pytest.raises(LocalProtocolError):
        ds.encode_client(Speak(b"bytes"))  # type: ignore[arg-type]


# -- URL -----------------------------------------------------------------------------------------------

def test_default_url() -> None:
    assert ds.build_speak_url(ds.SPEAK_URL, SpeakOptions()) == (
        "wss://api.deepgram.com/v1/speak?model=aura-2-celeste-es&encoding=mulaw&sample_rate=8000"
    )
    rest = ds.build_speak_url("https://api.deepgram.com/v1/speak", SpeakOptions(extra={"container": "none"}))
    assert rest.endswith("&container=none")


def test_parser_defaults_order_and_extras() -> None:
    assert ds.parse_speak_query("") == ds.SPEAK_SERVER_DEFAULTS
    assert ds.parse_speak_query("/v1/speak?sample_rate=8000&mip_opt_out=true&encoding=mulaw&model=aura-2-sirio-es") == (
        SpeakOptions(model="aura-2-sirio-es", extra={"mip_opt_out": "true"})
    )
    assert ds.parse_speak_query(b"speed=1.25&model=m&encoding=linear16&sample_rate=48000").speed == 1.25


@pytest.mark.parametrize(
    "options",
    [
        SpeakOptions(encoding="mp3"),
        SpeakOptions(sample_rate=22050),
        SpeakOptions(sample_rate=24000),  # mu-law only at 8000/16000
        SpeakOptions(model=""),
        SpeakOptions(speed=0.0),
        SpeakOptions(speed=float("nan")),
        SpeakOptions(extra={"container": "wav"}),
        SpeakOptions(extra={"model": "x"}),
    ],
)
def test_builder_refuses_misuse(options: SpeakOptions) -> None:
    with pytest.raises(LocalProtocolError):
        ds.build_speak_url(ds.SPEAK_URL, options)


@pytest.mark.parametrize(
    "query",
    [
        "encoding=mp3",
        "encoding=mulaw&sample_rate=24000",
        "sample_rate=44100",
        "sample_rate=8k",
        "model=",
        "speed=fast",
        "speed=-1",
        "speed=0",
        "container=wav",
        "model=a&model=b",
        "model=%FF",  # not UTF-8
    ],
)
def test_parser_refuses_what_deserves_a_400(query: str) -> None:
    with pytest.raises(RemoteProtocolError):
        ds.parse_speak_query(query)


speak_options = st.builds(
    SpeakOptions,
    model=st.sampled_from(["aura-2-celeste-es", "aura-2-javier-es", "aura-asteria-en"]),
    encoding=st.sampled_from(sorted(ds.SPEAK_ENCODINGS)),
    sample_rate=st.sampled_from([8000, 16000]),
    speed=st.none() | st.floats(min_value=0.5, max_value=2.0),
    extra=st.dictionaries(st.sampled_from(["mip_opt_out", "tag", "container"]), st.just("none"), max_size=2),
)


@PROPERTY
@given(speak_options, st.randoms(use_true_random=False))
def test_url_round_trip_in_any_order(options: SpeakOptions, rnd: Any) -> None:
    url = ds.build_speak_url(ds.SPEAK_URL, options)
    assert ds.parse_speak_query(url) == options
    parts = url.split("?", 1)[1].split("&")
    rnd.shuffle(parts)
    assert ds.parse_speak_query("&".join(parts)) == options


def test_linear16_allows_the_higher_rates() -> None:
    options = SpeakOptions(encoding="linear16", sample_rate=24000)
    assert ds.parse_speak_query(ds.build_speak_url(ds.SPEAK_URL, options)) == options
    assert attrs.evolve(options, sample_rate=48000).sample_rate == 48000


def test_flush_limits_and_surface() -> None:
    assert (ds.FLUSH_LIMIT_PER_WINDOW, ds.FLUSH_WINDOW_S) == (20, 60.0)
    for name in ds.__all__:
        assert hasattr(ds, name), name
