"""Webhook mode's wire shapes (``USE_MEDIA_STREAMS=false``), as byte fixtures checked both ways.

Commands (``fixtures/telnyx/commands/*.json``): the exact JSON bodies webhook mode sends —
``transcription_start`` with Deepgram's engine config (telnyx.md §3.3; the config keys follow the
Telnyx SDKs' ``TranscriptionEngine*Config``: ``transcription_engine``, ``transcription_model``,
``language``), ``speak``, ``playback_start`` on a SigV4-presigned S3 URL, ``playback_stop``,
``transcription_stop``. Webhooks: an interim Spanish ``call.transcription`` and a
``call.playback.ended`` with ``file_not_found`` (what Telnyx says when it cannot fetch our URL).
No event loop anywhere.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from centralita.webhook_calls import transcription_fields
from protocols import telnyx_call_control as cc
from protocols.errors import LocalProtocolError

FIXTURES = Path(__file__).parent / "fixtures" / "telnyx"
CCID = "v3:MdI91X4lWFEs7IgbBEOT9M4AigoY08M0WWZFISt1Yw2axZ_IiE4pqg"
S3_URL = ("http://127.0.0.1:9000/replies/centralita/replies/c0ffee/r-1-0-1a2b3c4d.wav"
          "?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=testing%2F20250101%2Fus-east-1"
          "%2Fs3%2Faws4_request&X-Amz-Date=20250101T000000Z&X-Amz-Expires=900"
          "&X-Amz-SignedHeaders=host&X-Amz-Signature=0f1e2d3c")
COMMAND_ID = "891510ac-f3e4-11e8-af5b-de00688a490"


def command(name: str) -> dict[str, Any]:
    body: dict[str, Any] = orjson.loads((FIXTURES / "commands" / f"{name}.json").read_bytes())
    return body


COMMANDS = [
    ("transcription_start", "transcription_start", cc.transcription_start(
        CCID, client_state="c0ffee", command_id=COMMAND_ID + "1",
        **transcription_fields("Deepgram", "deepgram/nova-3", "es"))),
    ("speak", "speak", cc.speak(
        CCID, payload="Hola, Ana, le atiende el asistente de la centralita.",
        voice="AWS.Polly.Lupe-Neural", language="es-US", command_id=COMMAND_ID + "2")),
    ("playback_start_s3", "playback_start", cc.playback_start(
        CCID, audio_url=S3_URL, audio_type="wav", command_id=COMMAND_ID + "3")),
    ("playback_stop", "playback_stop", cc.playback_stop(CCID, stop="all",
                                                        command_id=COMMAND_ID + "4")),
    ("transcription_stop", "transcription_stop", cc.transcription_stop(
        CCID, command_id=COMMAND_ID + "5")),
]


@pytest.mark.parametrize(("fixture", "verb", "request_"), COMMANDS, ids=[c[0] for c in COMMANDS])
def test_command_bodies_match_their_fixtures(fixture: str, verb: str,
                                             request_: cc.ApiRequest) -> None:
    assert request_.method == "POST"
    assert request_.path == f"/calls/{CCID}/actions/{verb}"
    assert request_.json == command(fixture)
    # And the bytes we would send parse back to the same body.
    assert orjson.loads(orjson.dumps(request_.json)) == command(fixture)


def test_transcription_fields_without_a_model() -> None:
    assert transcription_fields("Google", None, "es") == {
        "transcription_engine": "Google", "transcription_tracks": "inbound",
        "transcription_engine_config": {"transcription_engine": "Google", "language": "es"}}


def test_a_presigned_url_is_a_valid_audio_url_but_not_a_websocket_one() -> None:
    assert cc.playback_start(CCID, audio_url=S3_URL).json == {"audio_url": S3_URL}
    with pytest.raises(LocalProtocolError):
        cc.playback_start(CCID, audio_url="s3://bucket/key.wav")


def test_interim_spanish_transcription_decodes_and_round_trips() -> None:
    raw = (FIXTURES / "webhooks" / "call_transcription_interim_es.json").read_bytes()
    event = cc.decode_webhook(raw)
    assert isinstance(event.payload, cc.CallTranscription)
    assert event.payload.transcription_data == cc.TranscriptionData(
        transcript="quiero saber", is_final=False, confidence=0.61,
        transcription_track="inbound")
    assert cc.decode_webhook(cc.encode_webhook(event)) == event
    # The emulator's copy leaves out what equals the default (``is_final: false``), nothing else.
    produced = orjson.loads(cc.encode_webhook(event))["data"]["payload"]["transcription_data"]
    original = orjson.loads(raw)["data"]["payload"]["transcription_data"]
    assert produced.items() <= original.items() and original.keys() - produced.keys() <= {
        "is_final"}


def test_playback_that_telnyx_could_not_fetch_decodes_and_round_trips() -> None:
    raw = (FIXTURES / "webhooks" / "call_playback_ended_file_not_found.json").read_bytes()
    event = cc.decode_webhook(raw)
    assert isinstance(event.payload, cc.CallPlaybackEnded)
    assert (event.payload.status, event.payload.status_detail) == ("file_not_found", "HTTP 403")
    assert event.payload.media_url is not None and "X-Amz-Signature" in event.payload.media_url
    assert orjson.loads(cc.encode_webhook(event)) == orjson.loads(raw)
