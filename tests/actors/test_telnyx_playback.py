"""TelnyxPlayback: webhook mode's voice (Telnyx speak, or our TTS → S3 → playback_start).

First against a recording fake of the three Call Control commands, on trio's ``autojump_clock``
(what is sent when, what is reported to the Brain); then over real sockets: moto's S3 server on
loopback and the Telnyx API emulator, which fetches the presigned URL like Telnyx would.
"""

from __future__ import annotations

import io
import logging
import wave
from collections.abc import AsyncGenerator, AsyncIterator, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any
from urllib.parse import parse_qs, urlsplit

import attrs
import httpx
import numpy as np
import pytest
import trio

from actors.messages import (CallInfo, ChunkPlayed, ClearPlayback, PlaybackCleared,
                             ReplyAudioStarted, ReplyFinished, Speak)
from actors.s3_audio import AudioStoreError, S3AudioStore
from actors.telnyx_call_events import PlaybackEnded, PlaybackStarted
from actors.telnyx_control import TelnyxApiError, TelnyxControl
from actors.telnyx_playback import TelnyxPlayback
from bench.emulators.telnyx_api import CalleeScript, EmulatedCall, TelnyxApiEmulator
from protocols import telnyx_call_control as cc
from protocols.audio import PCMU_8K, Codec
from tests.actors.harness import ActorUnderTest, assert_actor_contract, open_actor
from tests.s3_server import BUCKET, CREDENTIALS, MotoS3, running_moto

CALL = CallInfo(call_id="call-1", call_control_id="v3:call", stream_id="",
                audio_format=PCMU_8K)
VOICE, LANGUAGE = "AWS.Polly.Lupe-Neural", "es-US"


def speak(reply: str, chunk: int, text: str, last: bool = False) -> Speak:
    return Speak(reply, "t-1", chunk, text, last)


@attrs.define
class FakeCommands:
    """Records commands; ``refuse`` makes the named verb fail like Telnyx would."""

    sent: list[tuple[str, dict[str, Any]]] = attrs.field(factory=list)
    refuse: dict[str, cc.TelnyxApiErrors] = attrs.field(factory=dict)
    changed: trio.Event = attrs.field(factory=trio.Event)

    async def _record(self, verb: str, fields: dict[str, Any]) -> object:
        await trio.sleep(0.01)  # a request takes time
        self.sent.append((verb, fields))
        self.changed.set()
        self.changed = trio.Event()
        if verb in self.refuse:
            raise TelnyxApiError(verb, self.refuse[verb])
        return cc.CommandResult("ok")

    async def speak(self, call_control_id: str, **fields: Any) -> object:
        return await self._record("speak", fields)

    async def playback_start(self, call_control_id: str, **fields: Any) -> object:
        return await self._record("playback_start", fields)

    async def playback_stop(self, call_control_id: str, **fields: Any) -> object:
        return await self._record("playback_stop", fields)

    async def wait_sent(self, count: int) -> None:
        with trio.fail_after(5):
            while len(self.sent) < count:
                await self.changed.wait()


CALL_ENDED = cc.TelnyxApiErrors(status=422, errors=(cc.ApiError(
    code=cc.CALL_HAS_ENDED, title="Call has already ended", detail="gone"),))


def playback(commands: FakeCommands, **kwargs: Any) -> TelnyxPlayback:
    return TelnyxPlayback(call=CALL, commands=commands, voice=VOICE, language=LANGUAGE, **kwargs)


async def test_speak_plays_chunk_zero_alone_then_merges_and_reports_what_was_heard(
        autojump_clock: trio.testing.MockClock) -> None:
    commands = FakeCommands()
    async with open_actor(playback(commands).run, outputs=("reports_out",)) as actor:
        await actor.feed([speak("r1", 0, "Hola, Ana.")])
        await commands.wait_sent(1)
        await actor.feed([speak("r1", 1, "¿En qué puedo"), speak("r1", 2, "ayudarle?", last=True)])
        await trio.sleep(0.5)
        assert commands.sent == [("speak", {"payload": "Hola, Ana.", "voice": VOICE,
                                            "language": LANGUAGE})]  # one play at a time
        await actor.feed([PlaybackStarted("speak", None, 1.0)])
        started = await actor.wait_for("reports_out")
        assert isinstance(started, ReplyAudioStarted) and started.reply_id == "r1"
        assert started.tts_first_audio_s < 0.1 and started.first_frame_sent_s == 1.0
        await actor.feed([PlaybackEnded("speak", None, "completed", 2.0)])
        await commands.wait_sent(2)
        assert commands.sent[1] == ("speak", {"payload": "¿En qué puedo ayudarle?",
                                              "voice": VOICE, "language": LANGUAGE})
        await actor.feed([PlaybackStarted("speak", None, 2.1),
                          PlaybackEnded("speak", None, "completed", 3.0)])
        await actor.wait_for("reports_out", lambda r: isinstance(r, ReplyFinished))
    reports = actor.received["reports_out"]
    assert [(r.chunk, r.text) for r in reports if isinstance(r, ChunkPlayed)] == [
        (0, "Hola, Ana."), (1, "¿En qué puedo"), (2, "ayudarle?")]
    assert isinstance(reports[-1], ReplyFinished)


async def test_barge_in_stops_telnyx_and_reports_only_what_was_heard(
        autojump_clock: trio.testing.MockClock) -> None:
    commands = FakeCommands()
    async with open_actor(playback(commands).run, outputs=("reports_out",)) as actor:
        await actor.feed([speak("r1", 0, "Primera frase.")])
        await commands.wait_sent(1)
        await actor.feed([PlaybackEnded("speak", None, "completed", 1.0),
                          speak("r1", 1, "Segunda frase, muy larga.", last=True)])
        await commands.wait_sent(2)
        await actor.feed([ClearPlayback("caller speaking")])
        cleared = await actor.wait_for("reports_out", lambda r: isinstance(r, PlaybackCleared))
        assert cleared.played_text == "Primera frase."
        assert commands.sent[2] == ("playback_stop", {"stop": "all"})
        # The stopped speak's late ended is not the next reply's.
        await actor.feed([speak("r2", 0, "Dígame.", last=True)])
        await commands.wait_sent(4)
        await actor.feed([PlaybackEnded("speak", None, "cancelled", 5.0)])
        await trio.sleep(1)
        assert not any(isinstance(r, ReplyFinished) for r in actor.received["reports_out"])
        await actor.feed([PlaybackEnded("speak", None, "completed", 6.0)])
        finished = await actor.wait_for("reports_out", lambda r: isinstance(r, ReplyFinished))
        assert finished.reply_id == "r2"
        await actor.feed([speak("r1", 2, "a chunk of the cut reply")])  # ignored
        await trio.sleep(1)
    assert [verb for verb, _ in commands.sent] == ["speak", "speak", "playback_stop", "speak"]


async def test_a_call_that_has_ended_stops_playback_quietly(
        autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="actors.telnyx_playback")
    commands = FakeCommands(refuse={"speak": CALL_ENDED})
    async with open_actor(playback(commands).run, outputs=("reports_out",)) as actor:
        await actor.feed([speak("r1", 0, "Hola."), speak("r1", 1, "Adiós.", last=True)])
        cleared = await actor.wait_for("reports_out", lambda r: isinstance(r, PlaybackCleared))
        assert (cleared.reply_id, cleared.played_text) == ("r1", "")
        await actor.feed([speak("r2", 0, "Otra.", last=True)])
        await trio.sleep(1)
    assert [verb for verb, _ in commands.sent] == ["speak"]
    assert "call has ended at Telnyx" in caplog.text


async def test_a_marker_only_last_chunk_finishes_the_reply_without_a_command(
        autojump_clock: trio.testing.MockClock) -> None:
    commands = FakeCommands()
    async with open_actor(playback(commands).run, outputs=("reports_out",)) as actor:
        await actor.feed([speak("r1", 0, "Adiós.")])
        await commands.wait_sent(1)
        await actor.feed([PlaybackEnded("speak", None, "completed", 1.0), speak("r1", 1, "", True)])
        await actor.wait_for("reports_out", lambda r: isinstance(r, ReplyFinished))
    assert len(commands.sent) == 1


async def test_actor_contract(autojump_clock: trio.testing.MockClock) -> None:
    def start() -> AbstractAsyncContextManager[ActorUnderTest]:
        return open_actor(playback(FakeCommands()).run, outputs=("reports_out",))

    async def provoke(actor: ActorUnderTest) -> None:
        await actor.feed([speak("r1", 0, "Hola.", last=True)])
        await trio.sleep(0.1)  # the speak command is out
        await actor.feed([PlaybackEnded("speak", None, "completed", 1.0)])
        await trio.sleep(0.2)

    await assert_actor_contract(start, provoke=provoke)


# -- over real sockets: moto's S3 server and the Telnyx API emulator ---------------------------------

TONE_S = 0.5


@attrs.define
class ToneTts:
    """A TTS engine making a 440 Hz tone (``TONE_S`` long) in the call's format: real audio."""

    fail: bool = False

    @asynccontextmanager
    async def open_session(self, audio_format: Any) -> AsyncIterator[ToneTts]:
        yield self

    async def synthesize(self, text: str) -> AsyncGenerator[bytes, None]:
        if self.fail:
            raise RuntimeError("tts down")
        t = np.arange(int(8000 * TONE_S)) / 8000
        pcm = (8000 * np.sin(2 * np.pi * 440 * t)).astype(np.int16)
        yield Codec.PCMU.encode(pcm)

    async def cancel(self) -> None:
        pass


@pytest.fixture
def moto() -> Iterator[MotoS3]:
    with running_moto() as s3:
        yield s3


@attrs.define(eq=False)
class Line:
    """A live emulated call, its control client, and a webhook forwarder into the actor."""

    telnyx: TelnyxApiEmulator
    control: TelnyxControl
    call: EmulatedCall
    info: CallInfo


@asynccontextmanager
async def open_line() -> AsyncIterator[Line]:
    telnyx = TelnyxApiEmulator(api_key="KEY", speed=4.0, playback_duration_s=0.4,
                               callee_for=lambda to: CalleeScript(answer_after_s=0.05))
    async with trio.open_nursery() as nursery, httpx.AsyncClient() as http:
        base = await nursery.start(telnyx.serve)
        control = TelnyxControl(client=http, api_key="KEY", api_base=base)
        dialled = await control.dial(connection_id="c", to="+573001234567", from_="+15550001111")
        call = telnyx.calls[dialled.call_control_id]
        with trio.fail_after(5):
            await call.wait_for_event("call.answered")
        info = attrs.evolve(CALL, call_control_id=call.call_control_id,
                            started_at=trio.current_time())
        yield Line(telnyx, control, call, info)
        nursery.cancel_scope.cancel()


async def forward(line: Line, actor: ActorUnderTest) -> None:
    """What call control does: the call's speak/playback webhooks into the actor's inbox."""
    seen = 0
    while True:
        for event in line.call.webhooks[seen:]:
            now = trio.current_time() - line.info.started_at
            match event.payload:
                case cc.CallSpeakStarted():
                    actor.inbox.send_nowait(PlaybackStarted("speak", None, now))
                case cc.CallSpeakEnded(status=status):
                    actor.inbox.send_nowait(PlaybackEnded("speak", None, status, now))
                case cc.CallPlaybackStarted(media_url=url):
                    actor.inbox.send_nowait(PlaybackStarted("playback", url, now))
                case cc.CallPlaybackEnded(media_url=url, status=status):
                    actor.inbox.send_nowait(PlaybackEnded("playback", url, status, now))
        seen = len(line.call.webhooks)
        await trio.sleep(0.01)


def store_for(moto: MotoS3, **kwargs: Any) -> S3AudioStore:
    return S3AudioStore.from_settings(bucket=BUCKET, region="us-east-1",
                                      endpoint_url=moto.endpoint_url, prefix="replies/",
                                      expiry_s=600, credentials=CREDENTIALS, **kwargs)


def commands_of(call: EmulatedCall, verb: str) -> list[Any]:
    return [c for c in call.commands if c.verb == verb]


async def test_s3_playback_uploads_a_wav_presigns_it_and_telnyx_fetches_it(moto: MotoS3) -> None:
    store = store_for(moto, max_pool_connections=4)
    assert store.limiter.total_tokens == 4  # the limiter matches botocore's pool
    async with open_line() as line:
        player = TelnyxPlayback(call=line.info, commands=line.control, voice=VOICE,
                                language=LANGUAGE, tts=ToneTts(), store=store)
        async with open_actor(player.run, outputs=("reports_out",)) as actor, \
                trio.open_nursery() as nursery:
            nursery.start_soon(forward, line, actor)
            await actor.feed([speak("r1", 0, "Hola, Ana.", last=True)])
            await actor.wait_for("reports_out", lambda r: isinstance(r, ReplyFinished))
            nursery.cancel_scope.cancel()
    (start,) = commands_of(line.call, "playback_start")
    assert start.status == 200 and start.body["audio_type"] == "wav"
    url = start.body["audio_url"]
    query = parse_qs(urlsplit(url).query)
    assert query["X-Amz-Algorithm"] == ["AWS4-HMAC-SHA256"] and query["X-Amz-Expires"] == ["600"]
    assert "X-Amz-Signature" in query and "X-Amz-Credential" in query
    assert urlsplit(url).path.startswith(f"/{BUCKET}/replies/{CALL.call_id}/r1-0-")
    (fetch,) = line.call.playback_fetches
    assert fetch.url == url and fetch.status == 200
    with wave.open(io.BytesIO(fetch.content)) as wav:
        assert (wav.getnchannels(), wav.getsampwidth(), wav.getframerate()) == (1, 2, 8000)
        samples = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2")
    assert len(samples) == int(8000 * TONE_S) and np.abs(samples).max() > 4000  # the tone
    assert [o["Key"] for o in moto.objects("replies/")] == [urlsplit(url).path.split("/", 2)[2]]
    assert commands_of(line.call, "speak") == []
    assert store.statistics().uploads == 1
    reports = actor.received["reports_out"]
    assert isinstance(reports[0], ReplyAudioStarted) and isinstance(reports[1], ChunkPlayed)


@pytest.mark.parametrize("fault", ["s3_down", "tts_fails", "url_unreachable"])
async def test_playback_failures_fall_back_to_telnyx_speak(
        moto: MotoS3, fault: str, caplog: pytest.LogCaptureFixture) -> None:
    store: Any = store_for(moto, connect_timeout_s=0.5)
    tts = ToneTts(fail=fault == "tts_fails")
    if fault == "s3_down":
        moto.stop()
    if fault == "url_unreachable":  # stored, but the URL leads nowhere: Telnyx says file_not_found
        @attrs.define
        class Unreachable:
            async def publish(self, key: str, audio: bytes, *, content_type: str = "") -> str:
                return "http://127.0.0.1:9/nowhere.wav"
        store = Unreachable()
    async with open_line() as line:
        player = TelnyxPlayback(call=line.info, commands=line.control, voice=VOICE,
                                language=LANGUAGE, tts=tts, store=store)
        async with open_actor(player.run, outputs=("reports_out",)) as actor, \
                trio.open_nursery() as nursery:
            nursery.start_soon(forward, line, actor)
            await actor.feed([speak("r1", 0, "Hola, Ana.", last=True)])
            await actor.wait_for("reports_out", lambda r: isinstance(r, ReplyFinished),
                                 within_s=15)
            nursery.cancel_scope.cancel()
    (said,) = commands_of(line.call, "speak")
    assert said.body["payload"] == "Hola, Ana." and said.body["voice"] == VOICE
    assert said.status == 200 and player.statistics().fallbacks == 1
    expected = {"s3_down": "S3 playback unavailable", "tts_fails": "S3 playback unavailable",
                "url_unreachable": "Telnyx could not play our audio"}[fault]
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert any(expected in r.getMessage() and getattr(r, "call_id", None) == CALL.call_id
               for r in errors)
    if fault == "url_unreachable":
        (start,) = commands_of(line.call, "playback_start")
        assert line.call.playback_fetches[0].status is None
        assert "call.playback.ended" in line.call.event_types


async def test_playback_start_on_a_dead_call_is_refused_422_and_nothing_else_is_sent(
        moto: MotoS3) -> None:
    async with open_line() as line:
        await line.control.hangup(line.call.call_control_id)
        with trio.fail_after(5):
            await line.call.finished.wait()
        player = TelnyxPlayback(call=line.info, commands=line.control, voice=VOICE,
                                language=LANGUAGE, tts=ToneTts(), store=store_for(moto))
        async with open_actor(player.run, outputs=("reports_out",)) as actor:
            await actor.feed([speak("r1", 0, "Hola."), speak("r1", 1, "¿Sigue ahí?", last=True)])
            cleared = await actor.wait_for("reports_out", lambda r: isinstance(r, PlaybackCleared))
            assert cleared.played_text == ""
    (start,) = commands_of(line.call, "playback_start")
    assert start.status == 422
    assert commands_of(line.call, "speak") == []  # no fallback: nobody is there to hear it


async def test_store_errors_name_the_key_never_the_secret(moto: MotoS3) -> None:
    store = S3AudioStore.from_settings(bucket="no-such-bucket", region="us-east-1",
                                       endpoint_url=moto.endpoint_url,
                                       credentials=("AKIDSECRETID", "very-secret-key"))
    with pytest.raises(AudioStoreError) as caught:
        await store.publish("k.wav", b"RIFF")
    assert "NoSuchBucket" in str(caught.value) and "very-secret-key" not in str(caught.value)
    assert store.statistics().failures == 1
