"""Webhook mode's pieces that need no sockets: its settings, and the relay's ``call ended``
event completed with Telnyx's hangup cause (``HangupCausePublisher``, on trio's MockClock)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs
import pytest
import trio

from centralita.call_book import CallBook
from centralita.hangup_causes import HANGUP_CAUSE_WAIT_S, HangupCausePublisher
from centralita.settings import Settings, SettingsError


def test_webhook_mode_defaults_follow_the_seed() -> None:
    s = Settings.from_env({"USE_MEDIA_STREAMS": "false"})
    assert s.use_media_streams is False
    assert (s.telnyx_speak_voice, s.telnyx_speak_language) == ("AWS.Polly.Lupe-Neural", "es-US")
    assert (s.telnyx_transcription_engine, s.telnyx_transcription_model,
            s.telnyx_transcription_language) == ("Deepgram", "deepgram/nova-3", "es")
    assert s.s3_bucket is None and s.aws_endpoint_url is None and s.aws_region is None
    assert (s.s3_prefix, s.s3_presign_expiry_s) == ("centralita/replies/", 900)


def test_s3_settings() -> None:
    s = Settings.from_env({"S3_BUCKET": "b", "AWS_ENDPOINT_URL": "http://127.0.0.1:9000",
                           "AWS_DEFAULT_REGION": "eu-west-1", "S3_PREFIX": "/calls",
                           "S3_PRESIGN_EXPIRY": "60", "TELNYX_TRANSCRIPTION_MODEL": "none"})
    assert (s.s3_bucket, s.aws_endpoint_url, s.aws_region) == ("b", "http://127.0.0.1:9000",
                                                              "eu-west-1")
    assert (s.s3_prefix, s.s3_presign_expiry_s, s.telnyx_transcription_model) == (
        "calls/", 60, None)
    assert Settings.from_env({"AWS_REGION": "us-east-2", "AWS_DEFAULT_REGION": "x"}
                             ).aws_region == "us-east-2"


@pytest.mark.parametrize("raw", ["0", "604801", "soon"])
def test_presign_expiry_is_bounded_by_sigv4(raw: str) -> None:
    with pytest.raises(SettingsError, match="S3_PRESIGN_EXPIRY"):
        Settings.from_env({"S3_PRESIGN_EXPIRY": raw})


@attrs.define
class Recorder:
    published: list[tuple[float, Mapping[str, Any]]] = attrs.field(factory=list)

    async def publish(self, call_id: str, event: Mapping[str, Any]) -> None:
        self.published.append((trio.current_time(), event))


def ended(reason: str, **extra: Any) -> dict[str, Any]:
    return {"type": "call", "callId": "c1", "state": "ended", "reason": reason, **extra}


async def test_a_late_hangup_webhook_still_gives_the_cause(
        autojump_clock: trio.testing.MockClock) -> None:
    book = CallBook()
    call = book.open("c1", direction="outbound", stream_token="t", telefono="+573001234567")
    recorder = Recorder()
    publisher = HangupCausePublisher(recorder, book=lambda: book)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(publisher.publish, "c1", ended("telnyx stop", streamId="s1"))
        await trio.sleep(0.3)
        assert recorder.published == []  # waiting for call.hangup
        book.end(call, hangup_cause="user_busy", reason="hangup: user_busy")
    ((at, event),) = recorder.published
    assert at == pytest.approx(0.3)
    assert event == ended("telnyx stop", streamId="s1", hangupCause="user_busy")


async def test_no_webhook_in_time_publishes_without_a_cause(
        autojump_clock: trio.testing.MockClock) -> None:
    book = CallBook()
    book.open("c1", direction="outbound", stream_token="t", telefono=None)
    recorder = Recorder()
    await HangupCausePublisher(recorder, book=lambda: book).publish("c1", ended("telnyx stop"))
    ((at, event),) = recorder.published
    assert at == pytest.approx(HANGUP_CAUSE_WAIT_S) and "hangupCause" not in event


async def test_other_events_and_service_stops_pass_at_once(
        autojump_clock: trio.testing.MockClock) -> None:
    book = CallBook()
    book.open("c1", direction="outbound", stream_token="t", telefono=None)
    recorder = Recorder()
    publisher = HangupCausePublisher(recorder, book=lambda: book)
    partial = {"type": "partial", "callId": "c1", "speaker": "customer", "text": "hola"}
    await publisher.publish("c1", partial)
    await publisher.publish("c1", ended("call stopped by the service", streamId=""))
    await publisher.publish("c2", ended("telnyx stop"))  # not a call control call
    await HangupCausePublisher(recorder, book=lambda: None).publish("c1", ended("telnyx stop"))
    assert [at for at, _ in recorder.published] == [0.0, 0.0, 0.0, 0.0]
    assert recorder.published[0][1] is partial
    assert recorder.published[1][1] == ended("call stopped by the service")  # no empty streamId
