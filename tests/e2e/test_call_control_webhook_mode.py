"""Webhook mode end to end (``USE_MEDIA_STREAMS=false``): no media stream at all.

``POST /api/call/initiate`` → the Telnyx API emulator dials without a stream → ``call.answered``
→ our ``transcription_start`` → the emulator's scripted ``call.transcription`` webhooks → the
same Brain (the local scripted dialogue) → replies with Telnyx ``speak``, or our TTS uploaded to a
real S3-protocol server (moto in server mode on loopback) and ``playback_start`` on its presigned
URL, which the emulator fetches → the bot says goodbye and hangs up → ``call.hangup`` → teardown.
Everything over real sockets; nothing of ours is patched.
"""

from __future__ import annotations

import io
import time
import uuid
import wave
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import trio

from bench.emulators.telnyx_api import CalleeScript, EmulatedCall, ScriptedTranscript
from protocols import telnyx_call_control as cc
from protocols.telnyx_signature import new_keypair, sign_webhook
from tests.e2e.test_call_control import CALLEE, SCRIPT, CallStack, hangups, open_call_stack
from tests.s3_server import BUCKET, CREDENTIALS, MotoS3, running_moto

WEBHOOK_MODE: dict[str, Any] = {"use_media_streams": False}
SPEED = 4.0


def transcribing_callee(*transcripts: ScriptedTranscript) -> CalleeScript:
    return CalleeScript(answer_after_s=0.2, transcripts=transcripts or (
        ScriptedTranscript(14.0, SCRIPT[0]), ScriptedTranscript(30.0, SCRIPT[1])))


def commands(call: EmulatedCall, verb: str) -> list[Any]:
    return [c for c in call.commands if c.verb == verb]


async def wait_gone(cs: CallStack, call_id: str) -> None:
    with trio.fail_after(10):
        while call_id in cs.stack.service.registry.calls:
            await trio.sleep(0.02)
    webhook_calls = cs.control.webhook_calls
    assert webhook_calls is not None
    with trio.fail_after(5):
        while webhook_calls.live_feed(call_id) is not None:
            await trio.sleep(0.02)


@pytest.fixture
def moto(monkeypatch: pytest.MonkeyPatch) -> Iterator[MotoS3]:
    # The service finds its credentials the standard AWS way (here: the environment).
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", CREDENTIALS[0])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", CREDENTIALS[1])
    with running_moto() as s3:
        yield s3


async def test_a_whole_call_with_telnyx_speak() -> None:
    async with open_call_stack(callee=transcribing_callee(), speed=SPEED,
                               overrides=WEBHOOK_MODE) as cs:
        cs.telnyx.duplicate_webhooks = True  # every webhook twice: each turn is still heard once
        sub = await cs.subscribe()
        response = await cs.initiate("Ana", CALLEE)
        assert response.status_code == 202, response.text
        call_id, control_id = response.json()["callId"], response.json()["callControlId"]
        emulated = cs.emulated(control_id)
        body = emulated.dial_body
        assert body is not None
        assert not [k for k in body if k.startswith("stream_")] and cs.issued == {}
        assert body["webhook_url"] == f"{cs.base_url}/webhooks/telnyx"

        call = await cs.wait_state(call_id, "ended", timeout=30)
        events = await sub.wait_ended(call_id)

        (start,) = commands(emulated, "transcription_start")
        assert start.status == 200 and start.body["transcription_tracks"] == "inbound"
        assert start.body["transcription_engine"] == "Deepgram"
        assert start.body["transcription_engine_config"] == {
            "transcription_engine": "Deepgram", "transcription_model": "deepgram/nova-3",
            "language": "es"}
        said = [c.body for c in commands(emulated, "speak")]
        assert "Ana" in said[0]["payload"]
        assert {(b["voice"], b["language"]) for b in said} == {("AWS.Polly.Lupe-Neural", "es-US")}
        assert commands(emulated, "playback_start") == []
        assert [e["text"] for e in events if e["type"] == "final"] == list(SCRIPT)
        replies = [e for e in events if e["type"] == "reply"]
        assert "Ana" in replies[0]["text"] and "saldo" in replies[1]["text"]
        assert replies[-1]["text"].endswith("Adiós.") and not any(r["interrupted"] for r in replies)
        assert [e["type"] for e in events if e["type"] == "latency"]  # the waterfall is there
        # The bot hung up after its goodbye; the relay's end carries Telnyx's cause.
        (hangup,) = hangups(emulated)
        assert hangup.status == 200 and emulated.hangup_source == "caller"
        assert call["hangupCause"] == "normal_clearing"
        assert call["endReason"] == "hangup: normal_clearing"
        assert events[0]["type"] == "call" and events[0]["state"] == "started"
        ended = events[-1]
        assert (ended["type"], ended["state"], ended["reason"], ended["hangupCause"]) == (
            "call", "ended", "hangup: normal_clearing", "normal_clearing")
        assert "streamId" not in ended
        assert [d for d in emulated.deliveries if d.duplicate]
        await wait_gone(cs, call_id)


async def test_a_whole_call_played_from_s3_with_a_barge_in(moto: MotoS3) -> None:
    callee = transcribing_callee(ScriptedTranscript(3.0, "quiero", is_final=False),
                                 ScriptedTranscript(4.0, SCRIPT[0]),
                                 ScriptedTranscript(40.0, SCRIPT[1]))
    settings = {**WEBHOOK_MODE, "s3_bucket": BUCKET, "aws_endpoint_url": moto.endpoint_url,
                "aws_region": "us-east-1", "s3_presign_expiry_s": 300}
    async with open_call_stack(callee=callee, speed=SPEED, overrides=settings) as cs:
        cs.telnyx.playback_duration_s = 12.0  # the greeting is still playing at 3 s
        sub = await cs.subscribe()
        call_id = (await cs.initiate("Ana", CALLEE)).json()["callId"]
        call = await cs.wait_state(call_id, "ended", timeout=40)
        events = await sub.wait_ended(call_id)
        emulated = cs.emulated(call["callControlId"])

        starts = commands(emulated, "playback_start")
        assert len(starts) >= 3 and commands(emulated, "speak") == []
        assert all("X-Amz-Signature=" in s.body["audio_url"] for s in starts)
        assert all("X-Amz-Expires=300" in s.body["audio_url"] for s in starts)
        assert len(emulated.playback_fetches) == len(starts)
        for fetch in emulated.playback_fetches:  # Telnyx could fetch every one: real audio
            assert fetch.status == 200
            with wave.open(io.BytesIO(fetch.content)) as wav:
                assert wav.getframerate() == 8000 and wav.getnframes() > 0
                pcm = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2")
            assert np.sqrt(np.mean(pcm.astype(np.float64) ** 2)) > 100  # not silence
        keys = [o["Key"] for o in moto.objects(f"centralita/replies/{call_id}/")]
        assert len(keys) == len(starts)

        # The caller spoke over the greeting: Telnyx was told to stop, the relay says it was cut.
        (stop,) = commands(emulated, "playback_stop")
        assert stop.status == 200
        ended_playbacks = [e.payload for e in emulated.webhooks
                           if e.event_type == "call.playback.ended"]
        assert any(isinstance(p, cc.CallPlaybackEnded) and p.status == "cancelled"
                   for p in ended_playbacks)
        replies = [e for e in events if e["type"] == "reply"]
        assert replies[0]["interrupted"] and not replies[1]["interrupted"]
        assert "saldo" in replies[1]["text"] and replies[-1]["text"].endswith("Adiós.")
        assert [e["text"] for e in events if e["type"] == "final"] == list(SCRIPT)
        assert events[-1]["hangupCause"] == "normal_clearing"
        await wait_gone(cs, call_id)


async def test_a_forged_transcription_is_refused_and_never_heard() -> None:
    callee = transcribing_callee(ScriptedTranscript(30.0, SCRIPT[1]))
    async with open_call_stack(callee=callee, speed=SPEED, overrides=WEBHOOK_MODE) as cs:
        sub = await cs.subscribe()
        call_id = (await cs.initiate()).json()["callId"]
        call = await cs.wait_state(call_id, "streaming")
        forged = cc.WebhookEvent(id=str(uuid.uuid4()), event_type="call.transcription",
                                 payload=cc.CallTranscription(
                                     call_control_id=call["callControlId"],
                                     client_state=call_id.encode(),
                                     transcription_data=cc.TranscriptionData(
                                         transcript="quiero hablar con un agente",
                                         is_final=True, transcription_track="inbound")))
        body = cc.encode_webhook(forged)
        headers = sign_webhook(new_keypair().private_key, body, time.time())  # not Telnyx's key
        response = await cs.http.post(f"{cs.base_url}/webhooks/telnyx", content=body,
                                      headers={"content-type": "application/json", **headers})
        assert response.status_code == 401
        events = await sub.wait_ended(call_id, timeout=30)
        assert [e["text"] for e in events if e["type"] == "final"] == [SCRIPT[1]]


@pytest.mark.parametrize("down", ["503", "refuse"])
async def test_telnyx_down_gives_502_and_leaves_nothing_behind(down: str) -> None:
    async with open_call_stack(overrides=WEBHOOK_MODE) as cs:
        cs.telnyx.api_down = down  # type: ignore[assignment]
        response = await cs.initiate()
        assert response.status_code == 502
        assert await cs.calls() == [] and cs.issued == {}
        assert not cs.stack.service.registry.calls


async def test_an_inbound_call_is_answered_without_a_stream_and_hears_the_caller() -> None:
    async with open_call_stack(overrides=WEBHOOK_MODE, speed=SPEED) as cs:
        sub = await cs.subscribe()
        script = CalleeScript(hangup_after_s=24.0,
                              transcripts=(ScriptedTranscript(14.0, SCRIPT[0]),))
        emulated = await cs.telnyx.place_inbound_call(to="+15550001111", from_="+34910000001",
                                                      script=script)
        with trio.fail_after(20):
            await emulated.finished.wait()
        (answer,) = commands(emulated, "answer")
        assert answer.status == 200 and not [k for k in answer.body if k.startswith("stream_")]
        assert len(commands(emulated, "transcription_start")) == 1 and cs.issued == {}
        (call,) = await cs.calls()
        events = await sub.wait_ended(call["callId"])
        assert [e["text"] for e in events if e["type"] == "final"] == [SCRIPT[0]]
        assert "saldo" in [e for e in events if e["type"] == "reply"][1]["text"]
        assert events[-1]["hangupCause"] == "normal_clearing"
        call = await cs.wait_state(call["callId"], "ended")
        assert call["direction"] == "inbound" and call["hangupCause"] == "normal_clearing"
