"""protocols.deepgram_listen: fixtures both ways, round trips, garbage → only RemoteProtocolError.

Fixture shapes follow the fact sheet (/work/shared/protocols/deepgram.md §2-3); ids and numbers
are invented where the sources give placeholders.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import attrs
import orjson
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from protocols import deepgram_listen as dl
from protocols.deepgram_listen import (
    Alternative,
    Channel,
    CloseStream,
    ErrorMessage,
    Finalize,
    KeepAlive,
    ListenOptions,
    Metadata,
    ModelInfo,
    Recovery,
    Results,
    ResultsMetadata,
    SpeechStarted,
    UnknownMessage,
    UtteranceEnd,
    Word,
)
from protocols.deepgram_options import _LISTEN_PARAMS
from protocols.errors import LocalProtocolError, RemoteProtocolError

FIXTURES = Path(__file__).parent / "fixtures" / "deepgram"
PROPERTY = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])

_NOVA3 = ResultsMetadata(
    request_id="5d3c2a1e-8f4b-4c6d-9e0a-1b2c3d4e5f60",
    model_info=ModelInfo(name="general-nova-3", version="2025-04-17.21547", arch="nova-3"),
    model_uuid="40bd3654-e622-47c4-a111-63a61b23bfe0",
)


def _fixture_text(name: str) -> str:
    return (FIXTURES / name).read_text(encoding="utf-8")


def _fixture_obj(name: str) -> Any:
    return json.loads(_fixture_text(name))


def _one_alt(transcript: str, confidence: float, *words: Word, **extra: Any) -> Channel:
    return Channel(alternatives=(Alternative(transcript, confidence, tuple(words), **extra),))


SERVER_FIXTURES: list[tuple[str, dl.ServerMessage, bool]] = [
    # (file, expected message, canonical: encode(expected) reproduces the file exactly)
    (
        "listen_results_interim.json",
        Results(
            start=90.32, duration=1.08,
            channel=_one_alt("Yeah.", 0.996, Word("yeah", 90.96, 91.4, 0.996, punctuated_word="Yeah.")),
            metadata=_NOVA3,
        ),
        True,
    ),
    (
        "listen_results_final_speech_final.json",
        Results(
            start=0.0, duration=2.3, is_final=True, speech_final=True,
            channel=_one_alt(
                "hola quería pedir una cita", 0.9871,
                Word("hola", 0.48, 0.8, 0.9912), Word("quería", 0.8, 1.12, 0.9734),
                Word("pedir", 1.12, 1.44, 0.9968), Word("una", 1.44, 1.6, 0.9991),
                Word("cita", 1.6, 2.0, 0.9855),
            ),
            metadata=_NOVA3,
        ),
        True,
    ),
    (
        "listen_results_from_finalize.json",
        Results(
            start=2.3, duration=0.62, is_final=True, from_finalize=True,
            channel=_one_alt("gracias", 0.95, Word("gracias", 2.4, 2.84, 0.95)),
            metadata=_NOVA3,
        ),
        True,
    ),
    (
        "listen_results_empty_final.json",
        Results(start=2.92, duration=1.5, is_final=True, channel=_one_alt("", 0.0), metadata=_NOVA3),
        True,
    ),
    (
        "listen_results_without_from_finalize.json",
        Results(
            start=4.42, duration=1.2, is_final=True, speech_final=True,
            channel=_one_alt(
                "buenos días", 0.981,
                Word("buenos", 4.5, 4.9, 0.99), Word("días", 4.9, 5.3, 0.972),
            ),
            metadata=ResultsMetadata(
                request_id="0c9e6f3a-1d2b-4e5f-8a7b-6c5d4e3f2a10",
                model_info=ModelInfo("general-nova-2", "2024-01-09.29447", "nova-2"),
                model_uuid="4d892fb6-7e25-4f4a-9c1b-0e4a5c6d7e8f",
            ),
        ),
        False,  # from_finalize absent on the wire, written as false
    ),
    (
        "listen_results_with_entities.json",
        Results(
            start=6.0, duration=1.0, is_final=True,
            channel=_one_alt("600 123 456", 0.9, Word("600", 6.1, 6.5, 0.9, punctuated_word="600")),
            metadata=ResultsMetadata(
                request_id="0c9e6f3a-1d2b-4e5f-8a7b-6c5d4e3f2a10",
                model_info=_NOVA3.model_info, model_uuid=_NOVA3.model_uuid,
            ),
        ),
        False,  # entities, speaker_confidence, diarize_info are ignored
    ),
    (
        "listen_results_multilingual_diarized.json",
        Results(
            start=7.0, duration=1.4, is_final=True, speech_final=True,
            channel=_one_alt(
                "sí, okay", 0.93,
                Word("sí", 7.1, 7.4, 0.96, punctuated_word="Sí,", speaker=0, language="es"),
                Word("okay", 7.5, 8.0, 0.9, punctuated_word="okay.", speaker=0, language="en"),
                languages=("es", "en"),
            ),
            metadata=_NOVA3,
        ),
        True,
    ),
    (
        "listen_metadata_close_stream.json",
        Metadata(
            request_id="8c8ebea9-dbec-45fa-a035-e4632cb05b5f",
            sha256="e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            created="2024-08-29T22:37:55.202Z", duration=0.0, channels=0,
        ),
        True,
    ),
    (
        "listen_metadata_with_extras.json",
        Metadata(
            request_id="8c8ebea9-dbec-45fa-a035-e4632cb05b5f",
            sha256="9f2c1b7a0e3d4c5b6a79881726354453627180f9e8d7c6b5a4f3e2d1c0b9a887",
            created="2025-11-21T10:15:02.118Z", duration=93.46, channels=1,
            models=("40bd3654-e622-47c4-a111-63a61b23bfe0",),
            model_info={"40bd3654-e622-47c4-a111-63a61b23bfe0": _NOVA3.model_info},
            extra={"call_id": "v3:abc123"},
        ),
        True,
    ),
    ("listen_utterance_end.json", UtteranceEnd((0, 1), 1.2), True),
    ("listen_speech_started.json", SpeechStarted((0, 1), 91.2), True),
    (
        "listen_error_schema_error.json",
        ErrorMessage(
            variant="SchemaError",
            description="Failed to deserialize the client message: unknown variant `KeepAlivee`",
            message='{"type":"KeepAlivee"}',
        ),
        True,
    ),
    (
        "listen_error_closing.json",
        ErrorMessage(variant="Closing", description=dl.NET_0001_REASON, code="NET-0001"),
        True,
    ),
    (
        "listen_unknown_type.json",
        UnknownMessage(
            "ConfigureSuccess",
            {"type": "ConfigureSuccess", "request_id": "8c8ebea9-dbec-45fa-a035-e4632cb05b5f",
             "keyterms": ["cita", "consulta"]},
        ),
        True,
    ),
]

CLIENT_FIXTURES: list[tuple[str, dl.ClientControl]] = [
    ("listen_client_keepalive.json", KeepAlive()),
    ("listen_client_finalize.json", Finalize()),
    ("listen_client_finalize_channel.json", Finalize(channel=0)),
    ("listen_client_close_stream.json", CloseStream()),
]

_IDS = [row[0] for row in SERVER_FIXTURES]


# -- fixtures both ways ------------------------------------------------------------------------------

@pytest.mark.parametrize(("name", "expected", "canonical"), SERVER_FIXTURES, ids=_IDS)
def test_server_fixture_decodes(name: str, expected: dl.ServerMessage, canonical: bool) -> None:
    assert dl.decode_server(_fixture_text(name)) == expected
    assert dl.decode_server(_fixture_text(name).encode()) == expected


@pytest.mark.parametrize(("name", "expected", "canonical"), SERVER_FIXTURES, ids=_IDS)
def test_server_fixture_encodes(name: str, expected: dl.ServerMessage, canonical: bool) -> None:
    encoded = dl.encode_server(expected)
    assert encoded.startswith('{"type":')
    wire = orjson.loads(encoded)
    if canonical:
        assert wire == _fixture_obj(name)
    assert dl.decode_server(encoded) == expected


@pytest.mark.parametrize(("name", "expected"), CLIENT_FIXTURES, ids=[r[0] for r in CLIENT_FIXTURES])
def test_client_fixture_both_ways(name: str, expected: dl.ClientControl) -> None:
    assert dl.decode_client_text(_fixture_text(name)) == expected
    assert orjson.loads(dl.encode_client(expected)) == _fixture_obj(name)


def test_results_always_carry_the_documented_shape() -> None:
    # The emulator must write every field the fact sheet's checklist names, defaults included.
    minimal = Results(start=0.0, duration=1.0, channel=_one_alt("hola", 0.5))
    wire = orjson.loads(dl.encode_server(minimal))
    assert wire["type"] == "Results"
    assert wire["channel_index"] == [0, 1]
    for key in ("start", "duration", "is_final", "speech_final", "from_finalize"):
        assert key in wire
    assert set(wire["channel"]["alternatives"][0]) == {"transcript", "confidence", "words"}
    assert set(wire["metadata"]) == {"request_id", "model_info", "model_uuid"}
    assert set(wire["metadata"]["model_info"]) == {"name", "version", "arch"}


def test_keepalive_text_is_precomputed() -> None:
    assert dl.KEEPALIVE_TEXT == '{"type":"KeepAlive"}'


def test_tolerant_presence() -> None:
    # Optional flags default to false; Results metadata may be missing; ints are numbers.
    msg = dl.decode_server(
        '{"type":"Results","channel_index":[0,1],"start":1,"duration":2,'
        '"channel":{"alternatives":[{"transcript":"x"}]}}'
    )
    assert isinstance(msg, Results)
    assert (msg.start, msg.duration, msg.is_final, msg.speech_final, msg.from_finalize) == (
        1.0, 2.0, False, False, False
    )
    assert msg.metadata == ResultsMetadata()
    assert msg.channel.alternatives[0].words == ()
    metadata = dl.decode_server('{"type":"Metadata","request_id":"r"}')
    assert metadata == Metadata(request_id="r")


def test_results_conveniences() -> None:
    final = SERVER_FIXTURES[1][1]
    assert isinstance(final, Results)
    assert final.transcript == "hola quería pedir una cita"
    assert final.end == pytest.approx(2.3)
    assert Results(start=1.0, duration=0.5, channel=Channel()).transcript == ""


# -- strictness: the peer's garbage is a RemoteProtocolError -----------------------------------------

_RESULTS = _fixture_obj("listen_results_final_speech_final.json")


def _with(path: tuple[Any, ...], value: Any, base: Any = None) -> str:
    obj = json.loads(json.dumps(_RESULTS if base is None else base))
    target = obj
    for key in path[:-1]:
        target = target[key]
    if value is _DELETE:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return json.dumps(obj)


_DELETE = object()
_WORD0 = ("channel", "alternatives", 0, "words", 0)

BAD_SERVER_TEXTS = {
    "is_final as string": _with(("is_final",), "false"),
    "start as numeric string": _with(("start",), "1.5"),
    "start as bool": _with(("start",), True),
    "start missing": _with(("start",), _DELETE),
    "channel missing": _with(("channel",), _DELETE),
    "channel_index as string": _with(("channel_index",), "01"),
    "channel_index of bools": _with(("channel_index",), [True, 1]),
    "channel_index as object": _with(("channel_index",), {"0": 1}),
    "alternatives as object": _with(("channel", "alternatives"), {"transcript": "x"}),
    "transcript null": _with(("channel", "alternatives", 0, "transcript"), None),
    "word start as string": _with((*_WORD0, "start"), "0.48"),
    "speaker as float": _with((*_WORD0, "speaker"), 1.5),
    "words as string": _with(("channel", "alternatives", 0, "words"), "hola"),
    "metadata as list": _with(("metadata",), []),
    "huge float": '{"type":"UtteranceEnd","channel":[0,1],"last_word_end":1e400}',
    "huge int in channel": '{"type":"UtteranceEnd","channel":[123456789012345678901234567890,1],"last_word_end":1}',
    "huge int channels": '{"type":"Metadata","request_id":"r","channels":123456789012345678901234567890}',
    "NaN literal": '{"type":"SpeechStarted","channel":[0,1],"timestamp":NaN}',
    "Infinity literal": '{"type":"SpeechStarted","channel":[0,1],"timestamp":Infinity}',
    "error variant as number": '{"type":"Error","variant":3}',
    "type missing": '{"channel":[0,1],"timestamp":1.0}',
    "type null": '{"type":null}',
    "type number": '{"type":5}',
    "type list": '{"type":["Results"]}',
    "type object": '{"type":{"a":1}}',
    "type bool": '{"type":true}',
    "array": "[1,2,3]",
    "string": '"Results"',
    "number": "42",
    "null": "null",
    "empty": "",
    "whitespace": "   ",
    "not json": "Results",
    "trailing garbage": '{"type":"KeepAlive"} x',
    "deep nesting": "[" * 100_000 + "]" * 100_000,
    "unpaired surrogate escape": '{"type":"Error","variant":"\\ud800"}',
}


@pytest.mark.parametrize("text", list(BAD_SERVER_TEXTS.values()), ids=list(BAD_SERVER_TEXTS))
def test_bad_server_text_is_a_remote_error(text: str) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        dl.decode_server(text)
    assert info.value.reason
    assert len(info.value.reason) < 400


def test_invalid_utf8_bytes_are_a_remote_error() -> None:
    with pytest.raises(RemoteProtocolError):
        dl.decode_server(b'{"type":"Results","x":"\xff"}')


def test_reason_names_the_json_path() -> None:
    with pytest.raises(RemoteProtocolError) as info:
        dl.decode_server(BAD_SERVER_TEXTS["word start as string"])
    assert "$.channel.alternatives[0].words[0].start" in info.value.reason
    assert "Results" in info.value.reason


@pytest.mark.parametrize(("name", "expected", "canonical"), SERVER_FIXTURES, ids=_IDS)
def test_every_truncation_is_a_remote_error(name: str, expected: object, canonical: bool) -> None:
    compact = orjson.dumps(_fixture_obj(name))
    for cut in range(len(compact)):
        with pytest.raises(RemoteProtocolError):
            dl.decode_server(compact[:cut])


def _decodes_or_remote_error(decode: Any, data: Any) -> None:
    try:
        decode(data)
    except RemoteProtocolError:
        pass


@PROPERTY
@given(st.binary(max_size=300))
@example(b"\x00")
@example(b'{"type":"Results"}')
def test_random_bytes_only_remote_errors(data: bytes) -> None:
    _decodes_or_remote_error(dl.decode_server, data)
    _decodes_or_remote_error(dl.decode_client_text, data)


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3),
    max_leaves=8,
)


def _paths(obj: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix] if prefix else []
    if isinstance(obj, dict):
        for key, value in obj.items():
            found += _paths(value, (*prefix, key))
    elif isinstance(obj, list):
        for index, value in enumerate(obj):
            found += _paths(value, (*prefix, index))
    return found


_SERVER_OBJS = [_fixture_obj(row[0]) for row in SERVER_FIXTURES]


@PROPERTY
@given(st.sampled_from(_SERVER_OBJS), st.data(), _json_values)
def test_mutated_fixtures_decode_or_raise_remote_error(base: Any, data: st.DataObject, value: Any) -> None:
    # Replace one node anywhere in a real message by any JSON value (incl. huge ints, NaN, wrong
    # types, wrong tags): the decoder either accepts it or raises RemoteProtocolError, nothing else.
    path = data.draw(st.sampled_from(_paths(base)))
    text = _with(path, value, base)  # stdlib dumps: NaN/Infinity/huge ints reach the parser
    _decodes_or_remote_error(dl.decode_server, text)
    _decodes_or_remote_error(dl.decode_server, text.encode())


@PROPERTY
@given(st.one_of(st.none(), st.integers(), st.floats(), st.booleans(), st.lists(st.text(max_size=3), max_size=2),
                 st.dictionaries(st.text(max_size=3), st.integers(), max_size=2)))
def test_non_string_type_tag_is_a_remote_error(tag: Any) -> None:
    text = json.dumps({"type": tag, "channel": [0, 1], "timestamp": 1.0})
    with pytest.raises(RemoteProtocolError):
        dl.decode_server(text)
    with pytest.raises(RemoteProtocolError):
        dl.decode_client_text(text)


@PROPERTY
@given(st.text(min_size=1, max_size=20).filter(lambda t: t not in {"Results", "Metadata", "UtteranceEnd", "SpeechStarted", "Error"}))
def test_unknown_type_is_skippable_never_an_error(tag: str) -> None:
    msg = dl.decode_server(json.dumps({"type": tag, "whatever": [1, {"a": None}]}))
    assert msg == UnknownMessage(tag, {"type": tag, "whatever": [1, {"a": None}]})


# -- round trips ---------------------------------------------------------------------------------------

_floats = st.floats(min_value=-1e9, max_value=1e9, allow_nan=False, allow_infinity=False)
_times = st.floats(min_value=0, max_value=86_400, allow_nan=False)
_text = st.text(max_size=12)
_ints = st.integers(min_value=-(2**31), max_value=2**31)
_ids = st.tuples(st.integers(0, 8), st.integers(1, 8))

words = st.builds(
    Word, word=_text, start=_times, end=_times, confidence=_floats,
    punctuated_word=st.none() | _text, speaker=st.none() | st.integers(0, 10), language=st.none() | _text,
)
alternatives = st.builds(
    Alternative, transcript=_text, confidence=_floats,
    words=st.lists(words, max_size=4).map(tuple),
    languages=st.none() | st.lists(_text, max_size=3).map(tuple),
)
model_infos = st.builds(ModelInfo, name=_text, version=_text, arch=_text)
results = st.builds(
    Results,
    channel_index=_ids.map(tuple), start=_times, duration=_times, is_final=st.booleans(),
    speech_final=st.booleans(), from_finalize=st.booleans(),
    channel=st.builds(Channel, alternatives=st.lists(alternatives, max_size=2).map(tuple)),
    metadata=st.builds(ResultsMetadata, request_id=_text, model_info=model_infos, model_uuid=_text),
)
metadatas = st.builds(
    Metadata, transaction_key=_text, request_id=_text, sha256=_text, created=_text,
    duration=_floats, channels=_ints,
    models=st.none() | st.lists(_text, max_size=2).map(tuple),
    model_info=st.none() | st.dictionaries(_text, model_infos, max_size=2),
    extra=st.none() | st.dictionaries(_text, st.none() | _ints | _text | st.booleans(), max_size=2),
)
utterance_ends = st.builds(UtteranceEnd, channel=_ids, last_word_end=_times)
speech_starts = st.builds(SpeechStarted, channel=_ids, timestamp=_times)
errors = st.builds(
    ErrorMessage, variant=st.none() | _text, description=st.none() | _text,
    message=st.none() | _text, code=st.none() | _text,
)
_KNOWN = {"Results", "Metadata", "UtteranceEnd", "SpeechStarted", "Error"}
unknowns = st.builds(
    lambda tag, body: UnknownMessage(tag, {**body, "type": tag}),
    st.text(min_size=1, max_size=12).filter(lambda t: t not in _KNOWN),
    st.dictionaries(_text, st.none() | _ints | _text | st.lists(_ints, max_size=2), max_size=3),
)
server_messages = st.one_of(results, metadatas, utterance_ends, speech_starts, errors, unknowns)
client_controls = st.one_of(
    st.just(KeepAlive()), st.just(CloseStream()), st.builds(Finalize, st.none() | st.integers(0, 64))
)


@PROPERTY
@given(server_messages)
def test_server_round_trip(msg: dl.ServerMessage) -> None:
    assert dl.decode_server(dl.encode_server(msg)) == msg


@PROPERTY
@given(client_controls)
def test_client_round_trip(msg: dl.ClientControl) -> None:
    assert dl.decode_client_text(dl.encode_client(msg)) == msg


# -- client controls -----------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "text",
    [
        '{"type":"KeepAlivee"}',
        '{"type":"Configure","keyterms":["cita"]}',
        '{"type":"Finalize","channel":"0"}',
        '{"type":"Finalize","channel":-1}',
        '{"type":"Finalize","channel":true}',
        '{"Type":"KeepAlive"}',
        "KeepAlive",
        '["KeepAlive"]',
        "",
    ],
)
def test_bad_client_text_is_a_remote_error(text: str) -> None:
    with pytest.raises(RemoteProtocolError):
        dl.decode_client_text(text)


def test_schema_error_reply_for_the_emulator() -> None:
    text = '{"type":"Bogus"}'
    with pytest.raises(RemoteProtocolError) as info:
        dl.decode_client_text(text)
    reply = dl.schema_error(info.value, text)
    assert reply.variant == "SchemaError"
    assert reply.message == text
    assert dl.decode_server(dl.encode_server(reply)) == reply
    long_reply = dl.schema_error(info.value, b"x" * 5000)
    assert long_reply.message is not None and len(long_reply.message) == 1000


def test_encoders_refuse_what_is_not_theirs() -> None:
    with pytest.raises(LocalProtocolError):
        dl.encode_server(KeepAlive())  # type: ignore[arg-type]
    with pytest.raises(LocalProtocolError):
        dl.encode_client(UtteranceEnd())  # type: ignore[arg-type]
    with pytest.raises(LocalProtocolError):
        dl.encode_client(Finalize(channel=-1))
    with pytest.raises(LocalProtocolError):
        dl.encode_server(UnknownMessage("X", {"n": 2**80}))
    with pytest.raises(LocalProtocolError):
        dl.decode_server(12)  # type: ignore[arg-type]


# -- shifted -------------------------------------------------------------------------------------------

@PROPERTY
@given(results, st.floats(min_value=-1e5, max_value=1e5, allow_nan=False))
def test_results_shifted_moves_every_time(msg: Results, offset: float) -> None:
    moved = msg.shifted(offset)
    assert moved.start == msg.start + offset
    assert moved.duration == msg.duration
    assert moved.transcript == msg.transcript
    assert attrs.evolve(moved, start=msg.start, channel=msg.channel) == msg
    for alt, moved_alt in zip(msg.channel.alternatives, moved.channel.alternatives, strict=True):
        assert (moved_alt.transcript, moved_alt.confidence, moved_alt.languages) == (
            alt.transcript, alt.confidence, alt.languages
        )
        for word, moved_word in zip(alt.words, moved_alt.words, strict=True):
            assert moved_word.start == word.start + offset
            assert moved_word.end == word.end + offset
            assert attrs.evolve(moved_word, start=word.start, end=word.end) == word
    back = moved.shifted(-offset)
    assert math.isclose(back.start, msg.start, abs_tol=1e-6)


def test_shifted_puts_a_reconnection_into_call_time() -> None:
    # A second connection opened 120 s into the call restarts its clock at 0.
    final = dl.decode_server(_fixture_text("listen_results_final_speech_final.json"))
    assert isinstance(final, Results)
    in_call = dl.shifted(final, 120.0)
    assert isinstance(in_call, Results)
    assert in_call.start == 120.0
    assert in_call.end == pytest.approx(122.3)
    assert [(w.start, w.end) for w in in_call.channel.alternatives[0].words][0] == (120.48, 120.8)
    assert final.shifted(0.0) == final
    assert dl.shifted(UtteranceEnd((0, 1), 1.2), 10.0) == UtteranceEnd((0, 1), 11.2)
    assert dl.shifted(SpeechStarted((0, 1), 91.2), -90.0) == SpeechStarted((0, 1), 91.2).shifted(-90.0)
    assert SpeechStarted((0, 1), 91.2).shifted(-90.0).timestamp == pytest.approx(1.2)
    metadata = Metadata(request_id="r")
    assert dl.shifted(metadata, 5.0) is metadata
    unknown = UnknownMessage("X", {"type": "X"})
    assert dl.shifted(unknown, 5.0) is unknown


# -- URL -----------------------------------------------------------------------------------------------

def test_default_url() -> None:
    assert dl.build_listen_url(dl.LISTEN_URL, ListenOptions()) == (
        "wss://api.deepgram.com/v1/listen?model=nova-3&language=es&encoding=mulaw&sample_rate=8000"
        "&channels=1&interim_results=true&endpointing=200&utterance_end_ms=1000&vad_events=true"
        "&smart_format=false&punctuate=false"
    )


def test_url_options() -> None:
    options = ListenOptions(
        endpointing=False, no_delay=True, keyterm=("cita previa", "Ñandú"),
        extra={"multichannel": "false", "language_hint": "es"},
    )
    url = dl.build_listen_url("ws://127.0.0.1:8765/v1/listen", options)
    assert "endpointing=false" in url
    assert "no_delay=true" in url
    assert "keyterm=cita%20previa&keyterm=%C3%91and%C3%BA" in url
    assert url.endswith("&multichannel=false&language_hint=es")
    assert dl.parse_listen_query(url) == options
    assert dl.build_listen_url("ws://h/v1/listen?tag=x", ListenOptions()).startswith(
        "ws://h/v1/listen?tag=x&model=nova-3&"
    )


@pytest.mark.parametrize(
    "options",
    [
        ListenOptions(sample_rate=None),
        ListenOptions(interim_results=False),  # utterance_end_ms needs interim results
        ListenOptions(encoding="mp3"),
        ListenOptions(model=""),
        ListenOptions(language=""),
        ListenOptions(channels=0),
        ListenOptions(sample_rate=-8000),
        ListenOptions(sample_rate=8000.0),  # type: ignore[arg-type]
        ListenOptions(endpointing=True),
        ListenOptions(endpointing=-1),
        ListenOptions(utterance_end_ms=0),
        ListenOptions(vad_events="true"),  # type: ignore[arg-type]
        ListenOptions(keyterm=("",)),
        ListenOptions(extra={"model": "nova-2"}),
        ListenOptions(extra={"diarize": True}),
    ],
)
def test_builder_refuses_misuse(options: ListenOptions) -> None:
    with pytest.raises(LocalProtocolError):
        dl.build_listen_url(dl.LISTEN_URL, options)


def test_builder_and_options_refuse_misuse_early() -> None:
    with pytest.raises(LocalProtocolError):
        ListenOptions(keyterm="hola")
    with pytest.raises(LocalProtocolError):
        ListenOptions(extra=5)
    with pytest.raises(LocalProtocolError):
        dl.build_listen_url("", ListenOptions())
    with pytest.raises(LocalProtocolError):
        dl.build_listen_url(dl.LISTEN_URL, object())  # type: ignore[arg-type]
    # No encoding: the container is sniffed and no sample_rate is needed.
    url = dl.build_listen_url(dl.LISTEN_URL, ListenOptions(encoding=None, sample_rate=None, utterance_end_ms=None))
    assert "encoding" not in url and "sample_rate" not in url and "utterance_end_ms" not in url


def test_missing_parameters_take_the_server_defaults() -> None:
    assert dl.parse_listen_query("model=nova-3") == attrs.evolve(dl.LISTEN_SERVER_DEFAULTS, model="nova-3")
    assert dl.parse_listen_query("", require_model=False) == dl.LISTEN_SERVER_DEFAULTS
    assert dl.LISTEN_SERVER_DEFAULTS.endpointing == 10
    assert dl.LISTEN_SERVER_DEFAULTS.interim_results is False


def test_parser_takes_paths_urls_and_bytes_and_keeps_unknown_params() -> None:
    expected = attrs.evolve(
        dl.LISTEN_SERVER_DEFAULTS, model="nova-3", encoding="mulaw", sample_rate=8000,
        extra={"diarize": "true", "tag": "a b"},
    )
    for query in (
        "sample_rate=8000&diarize=true&encoding=mulaw&model=nova-3&tag=a+b",
        "?model=nova-3&encoding=mulaw&sample_rate=8000&diarize=true&tag=a%20b",
        "/v1/listen?model=nova-3&encoding=mulaw&sample_rate=8000&diarize=true&tag=a%20b",
        "wss://api.deepgram.com/v1/listen?encoding=mulaw&model=nova-3&tag=a%20b&sample_rate=8000&diarize=true",
        b"model=nova-3&encoding=mulaw&sample_rate=8000&diarize=true&tag=a%20b",
    ):
        assert dl.parse_listen_query(query) == expected


@pytest.mark.parametrize(
    "query",
    [
        "",  # no model
        "model=",
        "model=nova-3&encoding=mp3&sample_rate=8000",
        "model=nova-3&encoding=mulaw",  # encoding without sample_rate
        "model=nova-3&interim_results=True",
        "model=nova-3&interim_results=1",
        "model=nova-3&encoding=mulaw&sample_rate=%2B8000",
        "model=nova-3&encoding=mulaw&sample_rate=8_000",
        "model=nova-3&encoding=mulaw&sample_rate=8000.0",
        "model=nova-3&encoding=mulaw&sample_rate=99999999999999999999",
        "model=nova-3&channels=0",
        "model=nova-3&endpointing=true",
        "model=nova-3&endpointing=-5",
        "model=nova-3&utterance_end_ms=1000",  # without interim_results
        "model=nova-3&model=nova-2",
        "model=nova-3&language=",
        "model=nova-3&tag=%FF",
        "model=nova-3&language=es&" + "&".join(f"k{i}=v" for i in range(300)),
    ],
)
def test_parser_refuses_what_deserves_a_400(query: str) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        dl.parse_listen_query(query)
    assert info.value.reason


def test_parser_switches_for_unconfirmed_rules() -> None:
    assert dl.parse_listen_query("language=es", require_model=False).model is None
    query = "model=nova-3&interim_results=true&utterance_end_ms=500"
    assert dl.parse_listen_query(query).utterance_end_ms == 500
    with pytest.raises(RemoteProtocolError):
        dl.parse_listen_query(query, min_utterance_end_ms=1000)
    lax = dl.parse_listen_query("model=nova-3&utterance_end_ms=1000", require_interim_for_utterance_end=False)
    assert lax.utterance_end_ms == 1000
    with pytest.raises(RemoteProtocolError):
        dl.parse_listen_query(b"model=nova-3&tag=\xc3\xa9")  # raw non-ASCII bytes


_param_text = st.text(st.characters(codec="utf-8"), min_size=1, max_size=10)
listen_options = st.builds(
    ListenOptions,
    model=st.none() | st.sampled_from(["nova-3", "nova-2-phonecall", "base"]),
    language=st.sampled_from(["es", "es-419", "multi", "en"]),
    encoding=st.none() | st.sampled_from(sorted(dl.LISTEN_ENCODINGS)),
    sample_rate=st.integers(1, 192_000),
    channels=st.integers(1, 8),
    interim_results=st.just(True),
    endpointing=st.just(False) | st.integers(0, 10_000),
    utterance_end_ms=st.none() | st.integers(1, 10_000),
    vad_events=st.booleans(), smart_format=st.booleans(), punctuate=st.booleans(), no_delay=st.booleans(),
    keyterm=st.lists(_param_text, max_size=3).map(tuple),
    extra=st.dictionaries(
        st.text("abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=8).filter(lambda k: k not in _LISTEN_PARAMS),
        _param_text, max_size=3,
    ),
)


@PROPERTY
@given(listen_options, st.randoms(use_true_random=False))
def test_url_round_trip_in_any_order(options: ListenOptions, rnd: Any) -> None:
    url = dl.build_listen_url(dl.LISTEN_URL, options)
    assert dl.parse_listen_query(url, require_model=False) == options
    base, query = url.split("?", 1)
    parts = query.split("&")
    rnd.shuffle(parts)
    # keyterm order is significant only among keyterms; keep their relative order.
    keyterms = iter([p for p in query.split("&") if p.startswith("keyterm=")])
    parts = [next(keyterms) if p.startswith("keyterm=") else p for p in parts]
    assert dl.parse_listen_query("&".join(parts), require_model=False) == options


@PROPERTY
@given(st.text(max_size=80) | st.binary(max_size=80))
def test_random_queries_only_remote_errors(query: str | bytes) -> None:
    _decodes_or_remote_error(dl.parse_listen_query, query)


# -- auth ----------------------------------------------------------------------------------------------

def test_auth_header() -> None:
    assert dl.auth_header("abc123") == (b"Authorization", b"Token abc123")
    assert dl.auth_header("eyJ.x.y", scheme="Bearer") == (b"Authorization", b"Bearer eyJ.x.y")
    for bad in ("", "a b", "a\r\nX-Evil: 1", "clave-ñ", None):
        with pytest.raises(LocalProtocolError):
            dl.auth_header(bad)  # type: ignore[arg-type]


def test_parse_auth_accepts_the_three_forms() -> None:
    assert dl.parse_auth(b"Token abc123") == dl.Credential("token", "abc123")
    assert dl.parse_auth("Bearer eyJ.x.y") == dl.Credential("bearer", "eyJ.x.y")
    assert dl.parse_auth("bearer eyJ.x.y").scheme == "bearer"  # the SDK writes lowercase
    assert dl.parse_auth(None, ["token", "abc123"]) == dl.Credential("token", "abc123", "token")
    assert dl.parse_auth(None, ["bearer", "eyJ.x.y"]).subprotocol == "bearer"
    assert dl.parse_auth("Token header-wins", ["token", "other"]).secret == "header-wins"
    assert dl.parse_auth(*dl.auth_header("k")[1:]).secret == "k"
    assert "abc123" not in repr(dl.parse_auth("Token abc123"))


@pytest.mark.parametrize(
    ("header", "subprotocols"),
    [
        (None, []),
        (None, ["token"]),
        (None, ["chat", "v2"]),
        ("", []),
        ("Token", []),
        ("Token ", []),
        ("Basic abc", []),
        ("Token a b", []),
        ("abc123", []),
        (b"Token \xff", []),
    ],
)
def test_parse_auth_refusals_never_leak(header: str | bytes | None, subprotocols: list[str]) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        dl.parse_auth(header, subprotocols)
    assert "abc" not in info.value.reason


# -- closes --------------------------------------------------------------------------------------------

def test_close_constants() -> None:
    assert dl.CLOSE_NET_0001 == dl.ServerClose(1011, dl.NET_0001_REASON)
    assert dl.NET_0001_REASON == (
        "Deepgram did not receive audio data or a text message within the timeout window. "
        "See https://dpgr.am/net0001"
    )
    assert dl.CLOSE_NET_0000.code == 1011
    assert dl.CLOSE_DATA_0000.code == 1008
    assert dl.CLOSE_AFTER_CLOSE_STREAM == dl.ServerClose(1000, "")
    for close in (dl.CLOSE_NET_0001, dl.CLOSE_NET_0000, dl.CLOSE_DATA_0000):
        assert len(close.reason.encode()) <= 123  # RFC 6455 limit for a close reason
    assert [dl.close_error_code(c.reason) for c in (dl.CLOSE_NET_0001, dl.CLOSE_NET_0000, dl.CLOSE_DATA_0000)] == [
        "NET-0001", "NET-0000", "DATA-0000"
    ]


@pytest.mark.parametrize(
    ("code", "reason", "recovery", "error_code"),
    [
        (1000, "", Recovery.FINISHED, None),
        (1011, dl.NET_0001_REASON, Recovery.RECONNECT, "NET-0001"),
        (1011, "NET-0001", Recovery.RECONNECT, "NET-0001"),
        (1011, dl.NET_0000_REASON, Recovery.RECONNECT, "NET-0000"),
        (1011, "", Recovery.RECONNECT, None),
        (1006, "", Recovery.RECONNECT, None),
        (None, None, Recovery.RECONNECT, None),
        (1001, "going away", Recovery.RECONNECT, None),
        (1008, dl.DATA_0000_REASON, Recovery.FATAL, "DATA-0000"),
        (1002, "DATA-0000", Recovery.FATAL, "DATA-0000"),  # the 2021 document's code
        (1008, "", Recovery.FATAL, None),
        (1012, "", Recovery.BACKOFF, None),
        (1013, "", Recovery.BACKOFF, None),
        (4000, "", Recovery.BACKOFF, None),
        (1011, b"see dpgr.am/net0001", Recovery.RECONNECT, "NET-0001"),
    ],
)
def test_classify_close(code: int | None, reason: Any, recovery: Recovery, error_code: str | None) -> None:
    verdict = dl.classify_close(code, reason)
    assert (verdict.recovery, verdict.error_code) == (recovery, error_code)
    assert verdict.retryable == (recovery in (Recovery.RECONNECT, Recovery.BACKOFF))


@pytest.mark.parametrize(
    ("status", "recovery"),
    [(400, Recovery.FATAL), (401, Recovery.FATAL), (402, Recovery.FATAL), (403, Recovery.FATAL),
     (404, Recovery.FATAL), (408, Recovery.RECONNECT), (429, Recovery.BACKOFF), (500, Recovery.BACKOFF),
     (503, Recovery.BACKOFF), (418, Recovery.FATAL)],
)
def test_classify_handshake(status: int, recovery: Recovery) -> None:
    assert dl.classify_handshake(status).recovery is recovery


def test_public_surface_is_listed() -> None:
    for name in dl.__all__:
        assert hasattr(dl, name), name
