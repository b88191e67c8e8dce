"""Speaker: pacing under MockClock with a recording socket, then end to end over loopback.

Fakes only at the ports: the TTS engine (`actors.tts`) and, for the clocked tests, the
MediaSocket. The end-to-end tests run the Speaker against the TelnyxCaller emulator (which plays
our audio with Telnyx's playout/mark/clear semantics) over a real WebSocket, with the real
TelnyxRx feeding mark echoes back into the Speaker's inbox, as the call wires it.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager

import attrs
import numpy as np
import pytest
import trio
from trio_websocket import ConnectionClosed, WebSocketConnection, WebSocketRequest, serve_websocket

from actors.aura_tts import AuraTts
from actors.messages import (
    CallInfo, ChunkPlayed, ClearPlayback, MarkPlayed, PlaybackCleared, ReplyAudioStarted,
    ReplyFinished, Speak,
)
from actors.speaker import Speaker
from bench.emulators.caller_audio import speech_like
from bench.emulators.deepgram_speak import DeepgramSpeakEmulator
from bench.emulators.telnyx_caller import CallerRecord, TelnyxCaller
from protocols.audio import PCMU_8K, AudioFormat
from protocols.telnyx_media import Mark, MarkOut, MediaOut, Start, decode, decode_outbound
from supervisor import MailboxSender
from tests.actors.harness import ActorUnderTest, assert_actor_contract, open_actor

CALL = CallInfo(call_id="c1", call_control_id="v3:c1", stream_id="s1", audio_format=PCMU_8K)
MS_PER_CHAR = 0.065
FRAME = 160


# -- fakes at the ports -----------------------------------------------------------------------------

@attrs.define(eq=False)
class FakeTts:
    """A TtsEngine: speech-like audio of 65 ms per character, in odd-sized pieces (so the Speaker
    must re-frame), after ``ttfa_s``, at ``speed_factor`` x real time."""

    ttfa_s: float = 0.02
    speed_factor: float = 10.0
    piece_s: float = 0.037
    fail_on: str | None = None
    texts: list[str] = attrs.field(factory=list)
    produced: list[bytearray] = attrs.field(factory=list)
    cancels: int = 0
    sessions_closed: int = 0

    @asynccontextmanager
    async def open_session(self, audio_format: AudioFormat) -> AsyncIterator[FakeTtsSession]:
        try:
            yield FakeTtsSession(self, audio_format)
        finally:
            self.sessions_closed += 1


@attrs.define(eq=False)
class FakeTtsSession:
    engine: FakeTts
    audio_format: AudioFormat
    rng: np.random.Generator = attrs.field(factory=lambda: np.random.default_rng(7))

    async def synthesize(self, text: str) -> AsyncGenerator[bytes, None]:
        engine = self.engine
        engine.texts.append(text)
        if engine.fail_on is not None and engine.fail_on in text:
            raise RuntimeError("tts engine down")
        audio = self.audio_format.encode(speech_like(len(text) * MS_PER_CHAR, self.rng))
        produced = bytearray()
        engine.produced.append(produced)
        await trio.sleep(engine.ttfa_s)
        piece = round(8000 * engine.piece_s)
        for offset in range(0, len(audio), piece):
            data = audio[offset : offset + piece]
            produced += data
            yield data
            await trio.sleep(engine.piece_s / engine.speed_factor)

    async def cancel(self) -> None:
        self.engine.cancels += 1


@attrs.define(eq=False)
class RecordingSocket:
    """A MediaSocket that records (trio time, decoded frame); echoes nothing."""

    sent: list[tuple[float, object]] = attrs.field(factory=list)
    broken: bool = False

    async def receive(self) -> str | bytes | None:
        await trio.sleep_forever()

    async def send(self, text: str) -> None:
        if self.broken:
            raise trio.BrokenResourceError
        self.sent.append((trio.current_time(), decode_outbound(text)))

    async def close(self, code: int, reason: str = "") -> None:
        pass

    def media(self) -> list[tuple[float, bytes]]:
        return [(t, m.payload) for t, m in self.sent if isinstance(m, MediaOut)]


def speak(reply: str, *texts: str) -> list[Speak]:
    return [Speak(reply, "t-1", index, text, last=index == len(texts) - 1)
            for index, text in enumerate(texts)]


def padded(audio: bytes) -> bytes:
    return audio + b"\xff" * (-len(audio) % FRAME)


# -- pacing, under MockClock ------------------------------------------------------------------------

@pytest.mark.parametrize("per_message", [1, 2, 5, 10])
async def test_pacing_follows_absolute_deadlines(autojump_clock: trio.testing.MockClock,
                                                 per_message: int) -> None:
    socket, tts = RecordingSocket(), FakeTts(ttfa_s=0.05, speed_factor=50.0)
    speaker = Speaker(CALL, tts, socket, frames_per_message=per_message, merge_max_chars=1)
    async with open_actor(speaker.run, outputs=("reports_out",)) as actor:
        await actor.feed(speak("r1", "Hola, buenos días.", "Le llamo de la clínica."))
        await actor.wait_for("reports_out", lambda r: isinstance(r, ReplyAudioStarted))
        await trio.sleep(5)
        media = socket.media()
        anchor = media[0][0]
        frames_before = 0
        for at, payload in media:
            deadline = anchor + frames_before * 0.02 - 0.16
            assert at >= deadline - 1e-9  # never early
            if frames_before >= 20:  # TTS is far ahead by now: exactly on the deadline
                assert at == pytest.approx(deadline, abs=1e-6)
                # Audio queued at Telnyx (the caller side): never below the lead, at most one
                # message above it.
                queued_before = frames_before * 0.02 - (at - anchor)
                queued_after = queued_before + len(payload) // FRAME * 0.02
                assert queued_before >= 0.16 - 1e-6
                assert queued_after <= 0.16 + per_message * 0.02 + 1e-6
            frames_before += len(payload) // FRAME
        sizes = {len(p) for _, p in media}
        assert max(sizes) == FRAME * per_message
        # Two chunks, one mark each, right after their own audio; one playout (never ran dry).
        kinds = [type(m).__name__ for _, m in socket.sent]
        assert kinds.count("MarkOut") == 2 and kinds[-1] == "MarkOut"
        assert speaker.statistics().playouts == 1
        expected = b"".join(padded(bytes(p)) for p in tts.produced)
        assert b"".join(p for _, p in media) == expected


@pytest.mark.parametrize("per_message", [1, 5, 10])
async def test_clear_goes_out_at_once_whatever_the_message_size(
        autojump_clock: trio.testing.MockClock, per_message: int) -> None:
    socket, tts = RecordingSocket(), FakeTts(ttfa_s=0.05, speed_factor=50.0)
    speaker = Speaker(CALL, tts, socket, frames_per_message=per_message)
    async with open_actor(speaker.run, outputs=("reports_out",)) as actor:
        await actor.feed(speak("r1", "Tiene hora el martes a las diez de la mañana, o el jueves."))
        await actor.wait_for("reports_out", lambda r: isinstance(r, ReplyAudioStarted))
        await trio.sleep(0.53)  # mid-message, whatever its size
        asked = trio.current_time()
        await actor.feed([ClearPlayback("caller spoke")])
        await actor.wait_for("reports_out", lambda r: isinstance(r, PlaybackCleared))
        await trio.sleep(1.0)
    (cleared_at,) = [t for t, m in socket.sent if type(m).__name__ == "Clear"]
    assert cleared_at - asked < speaker.pacing_lead_s
    assert cleared_at == pytest.approx(asked, abs=1e-6)  # no wait at all on a quiet socket
    after = [m for t, m in socket.sent if t >= cleared_at and not type(m).__name__ == "Clear"]
    assert after == []  # nothing of the cut reply follows the clear
    assert speaker.statistics().media_messages * per_message >= speaker.statistics().frames_sent


async def test_slow_tts_reanchors_instead_of_drifting(autojump_clock: trio.testing.MockClock) -> None:
    socket, tts = RecordingSocket(), FakeTts(ttfa_s=0.0, speed_factor=0.5)  # half real time
    speaker = Speaker(CALL, tts, socket)
    async with open_actor(speaker.run, outputs=("reports_out",)) as actor:
        await actor.feed(speak("r1", "Un momento, por favor."))
        await trio.sleep(5)
    assert speaker.statistics().playouts > 1  # the line ran dry: each new stretch re-anchors


async def test_mark_echoes_become_reports() -> None:
    socket, tts = RecordingSocket(), FakeTts()
    speaker = Speaker(CALL, tts, socket, merge_max_chars=1)
    async with open_actor(speaker.run, outputs=("reports_out",)) as actor:
        await actor.feed(speak("r1", "Hola.", "Adiós."))
        with trio.fail_after(3):
            while sum(isinstance(m, MarkOut) for _, m in socket.sent) < 2:
                await trio.sleep(0.01)
        await actor.feed([MarkPlayed("r1:0", 1.0), MarkPlayed("bogus", 1.1), MarkPlayed("r1:1", 2.0)])
        await actor.wait_for("reports_out", lambda r: isinstance(r, ReplyFinished))
        reports = actor.received["reports_out"]
    assert reports[1:] == [ChunkPlayed("r1", 0, "Hola.", 1.0), ChunkPlayed("r1", 1, "Adiós.", 2.0),
                           ReplyFinished("r1", 2.0)]
    started = reports[0]
    assert isinstance(started, ReplyAudioStarted)
    assert 0 < started.tts_first_audio_s <= started.first_frame_sent_s


async def test_waiting_chunks_are_merged_into_one_request(autojump_clock: trio.testing.MockClock) -> None:
    socket, tts = RecordingSocket(), FakeTts()
    speaker = Speaker(CALL, tts, socket)
    async with open_actor(speaker.run, outputs=("reports_out",)) as actor:
        chunks = speak("r1", "Uno.", "Dos.", "Tres.")
        await actor.feed(chunks[:1])
        await trio.sleep(0.01)  # chunk 0 is being synthesised; 1 and 2 arrive meanwhile
        await actor.feed(chunks[1:])
        await trio.sleep(2)
        marks = [m.name for _, m in socket.sent if isinstance(m, MarkOut)]
        await actor.feed([MarkPlayed(name, 1.0) for name in marks])
        await actor.wait_for("reports_out", lambda r: isinstance(r, ReplyFinished))
        played = [r.chunk for r in actor.received["reports_out"] if isinstance(r, ChunkPlayed)]
    assert tts.texts == ["Uno.", "Dos. Tres."] and marks == ["r1:0", "r1:2"]
    assert played == [0, 1, 2]


async def test_tts_failure_raises(autojump_clock: trio.testing.MockClock) -> None:
    speaker = Speaker(CALL, FakeTts(fail_on="boom"), RecordingSocket())
    with pytest.raises(RuntimeError, match="tts engine down"):
        async with open_actor(speaker.run, outputs=("reports_out",)) as actor:
            await actor.feed(speak("r1", "boom"))
            await actor.wait_done()
            if actor.error is not None:
                raise actor.error


async def test_socket_gone_returns_quietly(autojump_clock: trio.testing.MockClock) -> None:
    tts = FakeTts()
    speaker = Speaker(CALL, tts, RecordingSocket(broken=True))
    async with open_actor(speaker.run, outputs=("reports_out",)) as actor:
        await actor.feed(speak("r1", "Hola."))
        await actor.wait_done()
    assert actor.returned and actor.error is None and tts.sessions_closed == 1


async def test_actor_contract(autojump_clock: trio.testing.MockClock) -> None:
    def start() -> AbstractAsyncContextManager[ActorUnderTest]:
        return open_actor(Speaker(CALL, FakeTts(), RecordingSocket()).run, outputs=("reports_out",))

    async def provoke(actor: ActorUnderTest) -> None:
        await actor.feed(speak("r1", "Hola, ¿qué tal?"))
        await trio.sleep(0.2)

    await assert_actor_contract(start, provoke=provoke)


# -- end to end: TelnyxCaller <-> loopback WebSocket <-> TelnyxRx + Speaker ------------------------

@attrs.define(eq=False)
class WsMediaSocket:
    """The MediaSocket port over a trio-websocket server connection (what the route adapts)."""

    ws: WebSocketConnection

    async def receive(self) -> str | bytes | None:
        try:
            return await self.ws.get_message()
        except ConnectionClosed:
            return None

    async def send(self, text: str) -> None:
        try:
            await self.ws.send_message(text)
        except ConnectionClosed as exc:
            raise trio.BrokenResourceError("telnyx socket closed") from exc

    async def close(self, code: int, reason: str = "") -> None:
        await self.ws.aclose(code, reason)


@attrs.define(eq=False)
class MediaRoute:
    """Stands in for the media route: accepts the stream, consumes connected/start, hands over."""

    calls: list[tuple[WsMediaSocket, CallInfo]] = attrs.field(factory=list)
    ready: trio.Event = attrs.field(factory=trio.Event)

    async def handler(self, request: WebSocketRequest) -> None:
        stream = request._connection._stream  # noqa: SLF001 - trio-websocket leaks it otherwise
        try:
            ws = await request.accept()
            await ws.get_message()  # connected
            start = decode(await ws.get_message())
            assert isinstance(start, Start)
            call = CallInfo(call_id="c1", call_control_id=start.call_control_id,
                            stream_id=start.stream_id, audio_format=PCMU_8K,
                            started_at=trio.current_time())
            self.calls.append((WsMediaSocket(ws), call))
            self.ready.set()
            await trio.sleep_forever()
        finally:
            with trio.CancelScope(shield=True):
                await trio.aclose_forcefully(stream)


async def forward_marks(socket: WsMediaSocket, info: CallInfo,
                        inbox: MailboxSender[object]) -> None:
    """TelnyxRx's part in this test: mark echoes into the Speaker's inbox, without blocking.

    (A stand-in rather than TelnyxRx itself, whose output signature is being reworked.)"""
    with inbox:
        while (text := await socket.receive()) is not None:
            frame = decode(text)
            if isinstance(frame, Mark):
                try:
                    inbox.send_nowait(MarkPlayed(frame.name, trio.current_time() - info.started_at))
                except (trio.WouldBlock, trio.BrokenResourceError):
                    pass


@attrs.define(eq=False)
class Call:
    actor: ActorUnderTest
    record: CallerRecord
    info: CallInfo
    speaker: Speaker


@asynccontextmanager
async def open_call(tts: object, **speaker_kwargs: object) -> AsyncIterator[Call]:
    async with trio.open_nursery() as nursery:
        route = MediaRoute()
        server = await nursery.start(serve_websocket, route.handler, "127.0.0.1", 0, None)
        caller = TelnyxCaller(f"ws://127.0.0.1:{server.port}/stream/media", hangup_after_s=30.0)
        record = await nursery.start(caller.run)
        with trio.fail_after(2):
            await route.ready.wait()
        socket, info = route.calls[0]
        speaker = Speaker(info, tts, socket, **speaker_kwargs)  # type: ignore[arg-type]
        async with open_actor(speaker.run, outputs=("reports_out",)) as actor:
            nursery.start_soon(forward_marks, socket, info, actor.inbox.clone())
            yield Call(actor, record, info, speaker)
        with trio.move_on_after(1):  # hang up from our side, as the route does at the end
            await socket.close(1000, "test over")
        nursery.cancel_scope.cancel()


def media_arrivals(record: CallerRecord) -> list[tuple[float, int]]:
    return [(f.at, len(f.message.payload)) for f in record.received if isinstance(f.message, MediaOut)]


@pytest.mark.slow
@pytest.mark.parametrize("per_message", [1, 5])
async def test_reply_plays_without_gaps_and_marks_follow_their_audio(per_message: int) -> None:
    tts = FakeTts()
    texts = ("Hola, buenos días.", "Dígame.")  # 25 chars: about 1.6 s of audio
    async with open_call(tts, merge_max_chars=1, frames_per_message=per_message) as call:
        requested = trio.current_time() - call.info.started_at
        await call.actor.feed(speak("r1", *texts))
        finished = await call.actor.wait_for("reports_out", lambda r: isinstance(r, ReplyFinished))
        reports = list(call.actor.received["reports_out"])
        record = call.record
    arrivals = media_arrivals(record)
    # Each message arrives less than 20 ms after the audio sent before it would have played (one
    # frame per message: no gap of 40 ms), after the initial burst that builds the 160 ms lead.
    gaps = np.diff([at for at, _ in arrivals])
    durations = np.array([size / 8000 for _, size in arrivals[:-1]])
    frames_before = np.cumsum([size // FRAME for _, size in arrivals[:-1]])
    steady = (gaps - durations)[frames_before > 10]
    assert steady.size > 40 / per_message and steady.max() < 0.020, steady.max()
    assert len(record.segments) == 1  # played as one continuous stretch: never ran dry
    expected = b"".join(padded(bytes(p)) for p in tts.produced)
    assert bytes(record.played) == expected
    # Each mark echoes once the audio before it has played (8000 bytes a second).
    first_arrival = arrivals[0][0]
    before = 0
    for echo, produced in zip(record.marks, tts.produced, strict=True):
        before += len(padded(bytes(produced)))
        assert echo.played
        assert echo.at >= first_arrival + before / 8000 - 0.03
    started = reports[0]
    assert isinstance(started, ReplyAudioStarted)
    assert requested < started.tts_first_audio_s <= started.first_frame_sent_s < requested + 0.2
    assert [type(r) for r in reports] == [ReplyAudioStarted, ChunkPlayed, ChunkPlayed, ReplyFinished]
    assert [r.text for r in reports if isinstance(r, ChunkPlayed)] == list(texts)
    assert finished.call_time_s > started.first_frame_sent_s + len("".join(texts)) * MS_PER_CHAR - 0.1
    print(f"\nsteady overshoot: max {steady.max() * 1000:.1f} ms, mean {steady.mean() * 1000:.1f} ms")


async def barge_in(call: Call, texts: tuple[str, ...], heard_chunks: int) -> tuple[float, PlaybackCleared]:
    await call.actor.feed(speak("r1", *texts))
    await call.actor.wait_for("reports_out", lambda r: isinstance(r, ChunkPlayed)
                              and r.chunk == heard_chunks - 1)
    await trio.sleep(0.1)  # well into the next chunk
    sent_at = trio.current_time()
    await call.actor.feed([ClearPlayback("caller spoke")])
    cleared = await call.actor.wait_for("reports_out", lambda r: isinstance(r, PlaybackCleared))
    await trio.sleep(0.3)  # anything still coming would arrive now
    return sent_at, cleared


@pytest.mark.slow
@pytest.mark.parametrize("per_message", [1, 5])
async def test_barge_in_clears_within_one_lead(per_message: int) -> None:
    tts = FakeTts()
    # Chunk 1 lasts 195 ms: 100 ms into it its mark has been sent (lead 160 ms) but not echoed.
    texts = ("Hola.", "Sí.", "Tiene hora el martes a las diez de la mañana.")
    async with open_call(tts, merge_max_chars=1, frames_per_message=per_message) as call:
        sent_at, cleared = await barge_in(call, texts, heard_chunks=1)
        reports = list(call.actor.received["reports_out"])
        record = call.record
        played_at_clear = len(record.played)
        await trio.sleep(0.2)
        assert len(record.played) == played_at_clear  # playback stopped
    assert len(record.clears) == 1
    latency = record.clears[0] - sent_at
    assert latency < call.speaker.pacing_lead_s, f"clear took {latency * 1000:.1f} ms"
    assert cleared == PlaybackCleared("r1", "Hola.", cleared.call_time_s)
    assert [r.chunk for r in reports if isinstance(r, ChunkPlayed)] == [0]
    assert not any(isinstance(r, ReplyFinished) for r in reports)
    assert all(at < record.clears[0] for at, _ in media_arrivals(record))  # nothing after the clear
    released = [m for m in record.marks if not m.played]
    assert [m.name for m in released] == ["r1:1"]  # echoed by the clear: not heard, not reported
    sizes = {size for _, size in media_arrivals(record)}
    assert max(sizes) == FRAME * per_message
    assert tts.cancels == 1
    heard_s = len(record.played) / 8000
    assert heard_s < (len("Hola.") + len(texts[1])) * MS_PER_CHAR
    print(f"\nframes_per_message={per_message}: clear {latency * 1000:.2f} ms after ClearPlayback")


@pytest.mark.slow
async def test_next_reply_after_barge_in_plays_cleanly() -> None:
    tts = FakeTts()
    async with open_call(tts, merge_max_chars=1) as call:
        await barge_in(call, ("Hola.", "Esto se va a cortar enseguida, seguro."), heard_chunks=1)
        await call.actor.feed(speak("r2", "Dígame."))
        await call.actor.wait_for("reports_out", lambda r: isinstance(r, ReplyFinished))
        await call.actor.feed(speak("r1", "tarde"))  # a late chunk of the cut reply: ignored
        await trio.sleep(0.3)
        record = call.record
    after_clear = [f for f in record.received if f.at > record.clears[0]]
    payload = b"".join(f.message.payload for f in after_clear if isinstance(f.message, MediaOut))
    assert payload == padded(bytes(tts.produced[-1]))  # exactly r2's audio: nothing stale leaked
    assert tts.texts[-1] == "Dígame."
    assert [m.name for m in record.marks if m.played][-1] == "r2:0"


@pytest.mark.slow
async def test_with_aura_over_the_speak_emulator() -> None:
    async with trio.open_nursery() as nursery:
        emulator = DeepgramSpeakEmulator(ttfa_s=0.05, speed_factor=10.0)
        url = await nursery.start(emulator.serve)
        tts = AuraTts(api_key="test-key", speak_url=url)
        async with open_call(tts, merge_max_chars=1) as call:
            await call.actor.feed(speak("r1", "Buenos días.", "¿En qué puedo ayudarle?"))
            await call.actor.wait_for("reports_out", lambda r: isinstance(r, ReplyFinished))
            record = call.record
        nursery.cancel_scope.cancel()
    flushes = emulator.connections[0].flushes
    assert [f.text for f in flushes] == ["Buenos días.", "¿En qué puedo ayudarle?"]
    assert len(record.played) == sum(f.audio_bytes + (-f.audio_bytes % FRAME) for f in flushes)
    assert len(record.segments) == 1
    assert emulator.connections[0].controls[-1] == "Close"
