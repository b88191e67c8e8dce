"""DeepgramLink over real loopback sockets: a tiny scripted server for the wire details, the
Deepgram emulator in ``bench/`` for utterances, drops and supervised restarts.

Real sockets need real time, so nothing here uses ``autojump_clock``; every test is bounded and
short (the link's timeouts are shrunk where a test waits for one).
"""

from __future__ import annotations

import logging
from functools import partial
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, Final

import attrs
import numpy as np
import pytest
import trio
from trio_websocket import (
    ConnectionClosed, WebSocketConnection, WebSocketRequest, serve_websocket,
)

from actors.deepgram_link import (
    COALESCE_MAX_FRAMES, RESTART_BACKOFF, DeepgramDropped, DeepgramLink, DeepgramLinkError,
    DeepgramRejected,
)
from actors.messages import (
    AudioFrame, CallerStartedSpeaking, CallInfo, TranscriptFinal, TranscriptPartial, UtteranceEnded,
)
from bench.emulators.caller_audio import script_audio, script_spans
from bench.emulators.deepgram_listen import DeepgramListenEmulator
from protocols.audio import L16_16K, PCMA_8K, PCMU_8K, AudioFormat, Codec
from protocols.deepgram_listen import (
    NET_0000_REASON, Alternative, Channel, ErrorMessage, Metadata, Recovery, Results, ServerMessage,
    SpeechStarted, UtteranceEnd, Word, decode_client_text, encode_server, parse_listen_query,
)
from supervisor import Backoff, Overflow, Supervisor, SupervisorGaveUp, SupervisorSpec, open_mailbox

from .harness import (
    ActorUnderTest, assert_actor_contract, check_exits_promptly_when_cancelled, open_actor,
)

KEY: Final = "test-key"
OUTPUTS: Final = ("transcripts_out", "relay_out")
SILENCE: Final = b"\xff" * 160  # 20 ms of mu-law silence
CALL: Final = CallInfo("call-1", "cc-1", "stream-1", PCMU_8K)


def frames(count: int, *, start_s: float = 0.0, payload: bytes = SILENCE) -> list[AudioFrame]:
    return [AudioFrame(round(start_s + i * 0.02, 6), payload) for i in range(count)]


def caller_frames(audio: bytes, *, start_s: float = 0.0) -> list[AudioFrame]:
    return [AudioFrame(round(start_s + i / 8000, 6), audio[i:i + 160]) for i in range(0, len(audio), 160)]


def results(text: str, start: float, duration: float, *, final: bool = False,
            speech_final: bool = False) -> Results:
    words = tuple(Word(w, start, start + duration) for w in text.split())
    return Results(start=start, duration=duration, is_final=final, speech_final=speech_final,
                   channel=Channel((Alternative(text, 0.9, words),)))


def rounded(events: Sequence[Any]) -> list[Any]:
    """Events with their times rounded to the microsecond (shifting adds float noise)."""
    return [attrs.evolve(e, **{f.name: round(getattr(e, f.name), 6) for f in attrs.fields(type(e))
                               if isinstance(getattr(e, f.name), float)}) for e in events]


def link_for(url: str, **kwargs: Any) -> DeepgramLink:
    kwargs.setdefault("close_timeout_s", 1.0)
    return DeepgramLink(CALL, url, KEY, DeepgramLink.options_for(CALL), **kwargs)


def starter(link: DeepgramLink) -> Callable[[], AbstractAsyncContextManager[ActorUnderTest]]:
    return lambda: open_actor(link.run, outputs=OUTPUTS)


# == a tiny scripted /v1/listen ====================================================================

@attrs.define(eq=False)
class FakeSession:
    """One connection to `FakeDeepgram`: what the client sent, and a handle to answer it."""

    path: str
    headers: dict[bytes, bytes]
    ws: WebSocketConnection | None = None
    received: list[tuple[float, str | bytes]] = attrs.Factory(list)
    close_code: int | None = None
    closed: trio.Event = attrs.Factory(trio.Event)
    _changed: trio.Event = attrs.Factory(trio.Event)

    @property
    def audio(self) -> list[bytes]:
        return [m for _, m in self.received if isinstance(m, bytes)]

    @property
    def audio_s(self) -> float:
        return sum(len(m) for m in self.audio) / 8000

    @property
    def controls(self) -> list[str]:
        return [type(decode_client_text(m)).__name__ for _, m in self.received if isinstance(m, str)]

    async def wait_audio(self, seconds: float) -> None:
        while self.audio_s < seconds - 1e-9:
            self._changed = trio.Event()
            await self._changed.wait()

    async def send(self, *messages: ServerMessage) -> None:
        assert self.ws is not None
        for message in messages:
            await self.ws.send_message(encode_server(message))


@attrs.define(eq=False)
class FakeDeepgram:
    """Accepts (or refuses with ``reject_with``), records every message, runs ``behaviour`` per
    connection beside the recorder, and answers CloseStream (if ``answer_close_stream``) with
    ``on_close_stream`` after ``reply_delay_s``, then Metadata, then close 1000."""

    behaviour: Callable[[FakeSession], Awaitable[None]] | None = None
    reject_with: int | None = None
    answer_close_stream: bool = True
    on_close_stream: Sequence[ServerMessage] = ()
    reply_delay_s: float = 0.0
    deaf: bool = False  # never reads: the client's sends back up once the buffers are full
    sessions: list[FakeSession] = attrs.Factory(list)

    async def serve(self, *, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            server = await nursery.start(serve_websocket, self._handle, "127.0.0.1", 0, None)
            task_status.started(f"ws://127.0.0.1:{server.port}/v1/listen")

    async def _handle(self, request: WebSocketRequest) -> None:
        session = FakeSession(request.path, {k.lower(): v for k, v in request.headers})
        self.sessions.append(session)
        stream = request._connection._stream  # noqa: SLF001 - trio-websocket leaves it open
        try:
            if self.reject_with is not None:
                await request.reject(self.reject_with, body=b'{"err_msg":"refused"}')
                return
            session.ws = await request.accept()
            async with trio.open_nursery() as nursery:
                if self.behaviour is not None:
                    nursery.start_soon(self.behaviour, session)
                if self.deaf:
                    await trio.sleep_forever()
                await self._record(session)
                nursery.cancel_scope.cancel()
        finally:
            session.closed.set()
            with trio.CancelScope(shield=True):
                await trio.aclose_forcefully(stream)

    async def _record(self, session: FakeSession) -> None:
        ws = session.ws
        assert ws is not None
        while True:
            try:
                message = await ws.get_message()
            except ConnectionClosed as exc:
                session.close_code = None if exc.reason is None else exc.reason.code
                return
            session.received.append((trio.current_time(), message))
            session._changed.set()
            if isinstance(message, str) and session.controls[-1] == "CloseStream" \
                    and self.answer_close_stream:
                await trio.sleep(self.reply_delay_s)
                try:
                    await session.send(*self.on_close_stream, Metadata(request_id="r-1"))
                except ConnectionClosed:  # the client closed right after its CloseStream
                    pass
                await ws.aclose(1000)
                session.close_code = ws.closed.code if ws.closed else None
                return


async def serving(nursery: trio.Nursery, fake: FakeDeepgram) -> str:
    url: str = await nursery.start(fake.serve)
    return url


# == options, pure ==================================================================================

@pytest.mark.parametrize(("fmt", "encoding", "rate"), [
    (PCMU_8K, "mulaw", 8000), (PCMA_8K, "alaw", 8000), (L16_16K, "linear16", 16000),
])
def test_options_follow_the_call_codec(fmt: AudioFormat, encoding: str, rate: int) -> None:
    options = DeepgramLink.options_for(attrs.evolve(CALL, audio_format=fmt))
    assert (options.encoding, options.sample_rate, options.channels) == (encoding, rate, 1)
    assert (options.model, options.language, options.endpointing) == ("nova-3", "es", 200)
    assert (options.interim_results, options.utterance_end_ms, options.vad_events) == (True, 1000, True)
    assert DeepgramLink.options_for(CALL, endpointing=300).endpointing == 300


def test_the_key_stays_out_of_the_repr() -> None:
    assert KEY not in repr(link_for("ws://127.0.0.1:1/v1/listen"))


# == the wire, against the tiny server ==============================================================

async def test_handshake_sends_the_token_and_the_listen_options() -> None:
    fake = FakeDeepgram()
    async with trio.open_nursery() as nursery:
        link = link_for(await serving(nursery, fake))
        async with open_actor(link.run, outputs=OUTPUTS):
            (session,) = fake.sessions  # started() only after the upgrade
            assert session.headers[b"authorization"] == b"Token test-key"
            assert parse_listen_query(session.path) == link.options
        nursery.cancel_scope.cancel()


async def test_keepalive_right_after_connect_and_on_silence() -> None:
    fake = FakeDeepgram()
    async with trio.open_nursery() as nursery:
        link = link_for(await serving(nursery, fake), keepalive_s=0.15)
        async with open_actor(link.run, outputs=OUTPUTS) as actor:
            begun = trio.current_time()
            await trio.sleep(0.5)
            (session,) = fake.sessions
            keepalives = [at - begun for at, m in session.received if m == '{"type":"KeepAlive"}']
            assert session.audio == [] and len(keepalives) == 4  # at ~0, 0.15, 0.3, 0.45
            assert keepalives[0] < 0.05
            # While audio flows no KeepAlive is due; it resumes once audio stops.
            await actor.feed(frames(20), interval_s=0.02)
            during = len(session.controls)
            await trio.sleep(0.25)
            assert during == 4 and session.controls.count("KeepAlive") == 5
        assert link.statistics().keepalives_sent == 5
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize("batch_frames", [1, 2])
async def test_audio_goes_out_in_order_never_as_an_empty_frame(batch_frames: int) -> None:
    fake = FakeDeepgram()
    sent = [AudioFrame(i * 0.02, bytes([i]) * 160 if i % 4 else b"") for i in range(1, 12)]
    async with trio.open_nursery() as nursery:
        link = link_for(await serving(nursery, fake), batch_frames=batch_frames)
        async with open_actor(link.run, outputs=OUTPUTS) as actor:
            await actor.feed(sent)
            actor.end_input()
            await actor.wait_done()
        (session,) = fake.sessions
        assert all(session.audio)
        assert b"".join(session.audio) == b"".join(f.payload for f in sent)
        # Fed as fast as the inbox takes them: frames found waiting may share a message.
        assert len(session.audio) <= (9 if batch_frames == 1 else 5)  # 4 pairs + a last single
        assert session.controls[-1] == "CloseStream"
        stats = link.statistics()
        assert (stats.frames_sent, stats.frames_skipped, stats.bytes_sent) == (9, 2, 9 * 160)
        nursery.cancel_scope.cancel()


async def test_frames_found_waiting_share_a_message_and_paced_frames_go_alone() -> None:
    fake = FakeDeepgram()
    async with trio.open_nursery() as nursery:
        link = link_for(await serving(nursery, fake))
        async with open_actor(link.run, outputs=OUTPUTS) as actor:
            backlog = frames(COALESCE_MAX_FRAMES + 2)
            for frame in backlog:  # all queued before the link can run: a backlog
                actor.inbox.send_nowait(frame)
            await trio.sleep(0.05)
            await actor.feed(frames(3, start_s=len(backlog) * 0.02), interval_s=0.05)
            await trio.sleep(0.05)
            (session,) = fake.sessions
            assert [len(m) // 160 for m in session.audio] == [COALESCE_MAX_FRAMES, 2, 1, 1, 1]
            assert b"".join(session.audio) == b"".join(f.payload for f in backlog) + SILENCE * 3
        assert link.statistics().frames_sent == COALESCE_MAX_FRAMES + 5
        nursery.cancel_scope.cancel()


async def test_a_partial_batch_goes_out_after_one_batch_of_time() -> None:
    fake = FakeDeepgram()
    async with trio.open_nursery() as nursery:
        link = link_for(await serving(nursery, fake), batch_frames=3, keepalive_s=10.0)
        async with open_actor(link.run, outputs=OUTPUTS) as actor:
            await actor.feed(frames(3))
            await trio.sleep(0.01)
            await actor.feed(frames(1, start_s=0.06))
            await trio.sleep(0.2)  # the fourth frame must not wait for a fifth, or a KeepAlive
            (session,) = fake.sessions
            assert [len(m) for m in session.audio] == [480, 160]
            assert session.controls == ["KeepAlive"]  # only the one right after connecting
        nursery.cancel_scope.cancel()


async def test_l16_is_sent_little_endian() -> None:
    fake = FakeDeepgram()
    call = attrs.evolve(CALL, audio_format=L16_16K)
    samples = np.arange(320, dtype=np.int16) * 3
    async with trio.open_nursery() as nursery:
        link = DeepgramLink(call, await serving(nursery, fake), KEY, DeepgramLink.options_for(call))
        async with open_actor(link.run, outputs=OUTPUTS) as actor:
            await actor.feed([AudioFrame(0.0, samples.astype(">i2").tobytes())])
            actor.end_input()
            await actor.wait_done()
        assert fake.sessions[0].audio == [samples.astype("<i2").tobytes()]
        assert "encoding=linear16&sample_rate=16000" in fake.sessions[0].path
        nursery.cancel_scope.cancel()


async def test_close_stream_then_the_last_results_are_still_delivered() -> None:
    """deepgram.md §3: CloseStream behind the audio, keep reading until the server closes."""
    fake = FakeDeepgram(reply_delay_s=0.2, on_close_stream=[
        results("hasta luego", 0.0, 0.4, final=True, speech_final=True)])
    async with trio.open_nursery() as nursery:
        link = link_for(await serving(nursery, fake))
        async with open_actor(link.run, outputs=OUTPUTS) as actor:
            await actor.feed(frames(20, start_s=7.0))
            actor.end_input()
            await actor.wait_done()
            assert actor.returned and actor.error is None
            assert all(ended.is_set() for ended in actor.output_ended.values())
        (session,) = fake.sessions
        assert session.controls == ["KeepAlive", "CloseStream"] and session.audio_s == pytest.approx(0.4)
        expected = TranscriptFinal("t-1", "hasta luego", 7.0, 7.4, True, received_at_s=7.4)
        assert rounded(actor.received["transcripts_out"]) == [expected]
        assert actor.received["relay_out"] == actor.received["transcripts_out"]
        assert session.close_code == 1000
        nursery.cancel_scope.cancel()


async def test_cancelled_it_sends_close_stream_and_closes_the_socket() -> None:
    fake = FakeDeepgram(answer_close_stream=False)
    async with trio.open_nursery() as nursery:
        link = link_for(await serving(nursery, fake))

        async def provoke(actor: ActorUnderTest) -> None:
            await actor.feed(frames(5))
            await fake.sessions[-1].wait_audio(0.1)

        await check_exits_promptly_when_cancelled(starter(link), provoke=provoke, within_s=0.5)
        (session,) = fake.sessions
        with trio.fail_after(1):
            await session.closed.wait()
        assert session.controls[-1] == "CloseStream" and session.close_code == 1000
        nursery.cancel_scope.cancel()


async def test_transcripts_are_in_call_time_and_grouped_in_turns() -> None:
    async def speak(session: FakeSession) -> None:
        await session.wait_audio(0.9)
        await session.send(
            SpeechStarted(timestamp=0.1),
            results("hola", 0.0, 0.3),
            results("hola mundo", 0.0, 0.5, final=True, speech_final=True),
            UtteranceEnd(last_word_end=0.5),  # follows the speech_final: same turn, dropped
            results("otra", 0.5, 0.2),
            UtteranceEnd(last_word_end=0.7),  # ends turn 2
            results("cosa", 0.7, 0.2, final=True),
        )

    fake = FakeDeepgram(behaviour=speak)
    async with trio.open_nursery() as nursery:
        link = link_for(await serving(nursery, fake))
        async with open_actor(link.run, outputs=OUTPUTS) as actor:
            await actor.feed(frames(50, start_s=10.0))
            await actor.wait_for("transcripts_out", lambda e: getattr(e, "text", "") == "cosa")
            events = rounded(actor.received["transcripts_out"])
        assert events[:5] == [
            CallerStartedSpeaking(10.1),
            TranscriptPartial("t-1", "hola", 10.0, 10.3),
            TranscriptFinal("t-1", "hola mundo", 10.0, 10.5, True, events[2].received_at_s),
            TranscriptPartial("t-2", "otra", 10.5, 10.7),
            UtteranceEnded("t-2", 10.7),
        ]
        assert events[5] == TranscriptFinal("t-3", "cosa", 10.7, 10.9, False, events[5].received_at_s)
        assert 10.9 <= events[2].received_at_s <= 11.0  # the audio clock when it arrived
        assert actor.received["relay_out"] == actor.received["transcripts_out"]
        stats = link.statistics()
        # Everything up to the last final (10.9) was dropped from the replay buffer.
        assert stats.replay_buffered_s == pytest.approx(0.1)
        assert (stats.partials, stats.finals, stats.utterance_ends, stats.turn_id) == (2, 2, 1, "t-3")
        nursery.cancel_scope.cancel()


async def test_a_gap_in_the_audio_does_not_skew_later_times() -> None:
    """Frames dropped upstream: Deepgram's clock skips the gap, call time does not."""
    async def speak(session: FakeSession) -> None:
        await session.wait_audio(0.4)
        await session.send(results("antes", 0.0, 0.2), results("después", 0.2, 0.2))

    fake = FakeDeepgram(behaviour=speak)
    async with trio.open_nursery() as nursery:
        link = link_for(await serving(nursery, fake))
        async with open_actor(link.run, outputs=OUTPUTS) as actor:
            await actor.feed(frames(10, start_s=10.0) + frames(10, start_s=20.0))
            await actor.wait_for("transcripts_out", lambda e: e.text == "después")
        assert rounded(actor.received["transcripts_out"]) == [
            TranscriptPartial("t-1", "antes", 10.0, 10.2),
            TranscriptPartial("t-1", "después", 20.0, 20.2),
        ]
        nursery.cancel_scope.cancel()


async def test_unknown_garbled_and_error_messages_are_skipped() -> None:
    async def babble(session: FakeSession) -> None:
        await session.wait_audio(0.1)
        assert session.ws is not None
        for text in ['{"type":"Warning","description":"x"}', "not json", '{"type":"Results"}']:
            await session.ws.send_message(text)
        await session.ws.send_message(b"\x00")
        await session.send(ErrorMessage(variant="SchemaError", description="bad"),
                           results("sigo aquí", 0.0, 0.1))

    fake = FakeDeepgram(behaviour=babble)
    async with trio.open_nursery() as nursery:
        link = link_for(await serving(nursery, fake))
        async with open_actor(link.run, outputs=OUTPUTS) as actor:
            await actor.feed(frames(10))
            await actor.wait_for("transcripts_out", lambda e: e.text == "sigo aquí")
            assert not actor.done.is_set()
        stats = link.statistics()
        assert (stats.undecodable, stats.server_errors, stats.partials) == (3, 1, 1)
        nursery.cancel_scope.cancel()


async def test_a_restart_replays_what_was_not_finalised_and_keeps_call_time() -> None:
    """Connection 1 finalises 10.0-10.2 and drops at 0.4 s; the same link, run again, replays
    10.2-10.4 first, and connection 2's time 0 is call time 10.2."""
    async def first(session: FakeSession) -> None:
        await session.wait_audio(0.4)
        await session.send(results("uno", 0.0, 0.2, final=True))
        await trio.sleep(0.05)
        assert session.ws is not None
        await session.ws.aclose(1011, NET_0000_REASON)

    async def second(session: FakeSession) -> None:
        await session.wait_audio(0.2)
        await session.send(results("dos", 0.0, 0.2, final=True, speech_final=True))

    fake = FakeDeepgram(behaviour=first)
    payloads = [bytes([i]) * 160 for i in range(30)]
    sent = [AudioFrame(10.0 + i * 0.02, p) for i, p in enumerate(payloads)]
    async with trio.open_nursery() as nursery:
        link = link_for(await serving(nursery, fake))
        async with open_actor(link.run, outputs=OUTPUTS) as actor:
            await actor.feed(sent[:20])
            await actor.wait_done()
        assert isinstance(actor.error, DeepgramDropped) and actor.error.close_code == 1011
        assert actor.error.verdict.recovery is Recovery.RECONNECT
        assert actor.received["transcripts_out"][0].text == "uno"
        fake.behaviour = second
        async with open_actor(link.run, outputs=OUTPUTS) as actor:
            await actor.feed(sent[20:])
            (final,) = rounded([await actor.wait_for("transcripts_out")])
        # 10.2-10.4 replayed first (in 200 ms messages), then what came next.
        heard = b"".join(fake.sessions[1].audio)
        assert len(heard) >= 1600 and b"".join(payloads[10:30]).startswith(heard)
        assert final == TranscriptFinal("t-1", "dos", 10.2, 10.4, True, final.received_at_s)
        stats = link.statistics()
        assert (stats.connects, stats.replayed_frames) == (2, 10)
        nursery.cancel_scope.cancel()


async def test_one_output_closing_does_not_stop_the_other() -> None:
    async def speak(session: FakeSession) -> None:
        await session.wait_audio(0.2)
        await session.send(results("uno", 0.0, 0.2), results("dos", 0.0, 0.2))

    fake = FakeDeepgram(behaviour=speak)
    async with trio.open_nursery() as nursery:
        link = link_for(await serving(nursery, fake))
        async with open_actor(link.run, outputs=OUTPUTS) as actor:
            actor.outputs["relay_out"].close()
            await actor.feed(frames(10))
            await actor.wait_for("transcripts_out", lambda e: e.text == "dos")
            assert not actor.done.is_set()
        nursery.cancel_scope.cancel()


# == failures =======================================================================================

@pytest.mark.parametrize(("status", "kind", "recovery"), [
    (401, DeepgramRejected, Recovery.FATAL),
    (402, DeepgramRejected, Recovery.FATAL),
    (400, DeepgramRejected, Recovery.FATAL),
    (429, DeepgramDropped, Recovery.BACKOFF),
    (503, DeepgramDropped, Recovery.BACKOFF),
])
async def test_a_refused_handshake_raises_a_typed_error(
        status: int, kind: type[DeepgramLinkError], recovery: Recovery,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    fake = FakeDeepgram(reject_with=status)
    async with trio.open_nursery() as nursery:
        link = link_for(await serving(nursery, fake))
        with pytest.raises(kind) as raised:
            async with open_actor(link.run, outputs=OUTPUTS):
                pass
        assert raised.value.status_code == status and raised.value.verdict.recovery is recovery
        if kind is DeepgramRejected:  # restarting cannot help: later runs do not even dial
            with pytest.raises(DeepgramRejected):
                async with open_actor(link.run, outputs=OUTPUTS):
                    pass
            assert len(fake.sessions) == 1
        nursery.cancel_scope.cancel()
    assert KEY not in caplog.text
    ours = [r for r in caplog.records if r.name == "actors.deepgram_link"]
    assert ours and all(getattr(r, "call_id", None) == "call-1" for r in ours)


async def _drop_abruptly(session: FakeSession) -> None:
    await session.wait_audio(0.1)
    assert session.ws is not None
    await trio.aclose_forcefully(session.ws._stream)  # noqa: SLF001 - TCP gone, no close frame


async def _close_1011(session: FakeSession) -> None:
    await session.wait_audio(0.1)
    assert session.ws is not None
    await session.ws.aclose(1011, NET_0000_REASON)


async def _close_1000_unasked(session: FakeSession) -> None:
    await session.wait_audio(0.1)
    assert session.ws is not None
    await session.ws.aclose(1000)


async def _data_0000(session: FakeSession) -> None:
    await session.wait_audio(0.1)
    assert session.ws is not None
    await session.ws.aclose(1008, "could not decode. See https://dpgr.am/data0000")


@pytest.mark.parametrize(("behaviour", "kind", "code"), [
    (_drop_abruptly, DeepgramDropped, 1006),
    (_close_1011, DeepgramDropped, 1011),
    (_close_1000_unasked, DeepgramDropped, 1000),
    (_data_0000, DeepgramRejected, 1008),
])
async def test_a_connection_ending_mid_call_raises_one_typed_error(
        behaviour: Callable[[FakeSession], Awaitable[None]], kind: type[DeepgramLinkError],
        code: int) -> None:
    fake = FakeDeepgram(behaviour=behaviour)
    async with trio.open_nursery() as nursery:
        link = link_for(await serving(nursery, fake))
        async with open_actor(link.run, outputs=OUTPUTS) as actor:
            await actor.feed(frames(10))
            await actor.wait_done(2.0)
        assert type(actor.error) is kind  # not an ExceptionGroup
        assert isinstance(actor.error, DeepgramLinkError) and actor.error.close_code == code
        assert all(ended.is_set() for ended in actor.output_ended.values())
        nursery.cancel_scope.cancel()


async def test_a_fatal_close_mid_call_escalates_without_redialling() -> None:
    """DATA-0000: the same audio would fail again. The supervisor restarts the permanent link,
    each later run fails at once without dialling, and the intensity limit ends the call."""
    fake = FakeDeepgram(behaviour=_data_0000)
    audio_in, audio_inbox = open_mailbox[AudioFrame](50, Overflow.BLOCK, name="audio")
    gave_up: list[SupervisorGaveUp] = []

    async def supervise(sup: Supervisor, *, task_status: trio.TaskStatus[Supervisor]) -> None:
        try:
            await sup.run(task_status=task_status)
        except SupervisorGaveUp as exc:
            gave_up.append(exc)

    async with trio.open_nursery() as nursery:
        link = link_for(await serving(nursery, fake))
        spec = link.child_spec(inbox=audio_inbox)
        sup = Supervisor(SupervisorSpec("call-1", [spec], backoff=Backoff(initial_s=0.01)))
        await nursery.start(supervise, sup)
        async with audio_in:  # input stays open: the call is mid-way, not ending
            for frame in frames(10):
                await audio_in.send(frame)
            with trio.fail_after(2):
                while not gave_up:
                    await trio.sleep(0.01)
        assert isinstance(gave_up[0].error, DeepgramRejected)
        assert gave_up[0].error.verdict.error_code == "DATA-0000"
        assert len(fake.sessions) == 1  # the restarts never dialled
        nursery.cancel_scope.cancel()


async def test_a_stalled_network_is_a_dropped_connection() -> None:
    fake = FakeDeepgram(deaf=True)
    eight_seconds = [AudioFrame(i * 8.0, b"\x7f" * 64_000) for i in range(500)]  # 32 MB
    async with trio.open_nursery() as nursery:
        link = link_for(await serving(nursery, fake), send_timeout_s=0.3)
        async with open_actor(link.run, outputs=OUTPUTS) as actor:
            with pytest.raises(trio.BrokenResourceError):  # the link stopped taking audio
                await actor.feed(eight_seconds)
            await actor.wait_done()
        assert isinstance(actor.error, DeepgramDropped), actor.error
        assert "longer than 0.3s" in str(actor.error)
        assert link.statistics().replay_buffered_s <= link.replay_limit_s
        nursery.cancel_scope.cancel()


async def test_a_server_that_never_answers_the_upgrade_times_out() -> None:
    async def mute(stream: trio.SocketStream) -> None:
        async with stream:
            await trio.sleep_forever()

    async with trio.open_nursery() as nursery:
        (listener,) = await nursery.start(partial(trio.serve_tcp, mute, 0, host="127.0.0.1"))
        port = listener.socket.getsockname()[1]
        link = link_for(f"ws://127.0.0.1:{port}/v1/listen", connect_timeout_s=0.3)
        begun = trio.current_time()
        with pytest.raises(DeepgramDropped, match="connect failed"):
            async with open_actor(link.run, outputs=OUTPUTS):
                pass
        assert trio.current_time() - begun < 0.6
        nursery.cancel_scope.cancel()


async def test_nothing_listening_is_a_dropped_connection() -> None:
    with trio.socket.socket() as sock:  # a free port, closed again: nothing listens there
        await sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(DeepgramDropped):
        async with open_actor(link_for(f"ws://127.0.0.1:{port}/v1/listen").run, outputs=OUTPUTS):
            pass


# == against the Deepgram emulator =================================================================

SCRIPT: Final = ["hola quiero una cita", "el martes por la tarde"]
SPANS_ARGS: Final = ([1.0, 0.8], 1.0)  # two utterances, 1 s apart, after 0.5 s of silence
CALL_START_S: Final = 100.0  # the call had been going for a while when this audio was spoken


def caller_audio() -> bytes:
    return Codec.PCMU.encode(script_audio(*SPANS_ARGS))


def assert_turns(events: Sequence[Any], spans: Sequence[tuple[float, float]]) -> None:
    """Per turn: SpeechStarted at the speech onset, partials, then one speech_final final with the
    whole scripted text, all in call time and in order."""
    for number, (text, (start_s, end_s)) in enumerate(zip(SCRIPT, spans, strict=True), 1):
        turn = f"t-{number}"
        mine = [e for e in events if getattr(e, "turn_id", None) == turn]
        kinds = [type(e).__name__ for e in mine]
        assert kinds[-1] == "TranscriptFinal" and set(kinds[:-1]) == {"TranscriptPartial"}, kinds
        final = mine[-1]
        assert final.text == text and final.speech_final
        assert end_s <= final.end_s <= end_s + 0.3  # endpointing is 200 ms
        assert final.received_at_s >= final.end_s
        assert all(p.end_s <= final.end_s and text.startswith(p.text) for p in mine[:-1])
    onsets = [e.call_time_s for e in events if isinstance(e, CallerStartedSpeaking)]
    assert onsets == pytest.approx([start for start, _ in spans], abs=0.03)


async def test_utterances_come_back_as_partials_then_finals_in_call_time() -> None:
    emulator = DeepgramListenEmulator(api_key=KEY, script=SCRIPT)
    async with trio.open_nursery() as nursery:
        url = await nursery.start(emulator.serve)
        link = link_for(url)
        async with open_actor(link.run, outputs=OUTPUTS) as actor:
            await actor.feed(caller_frames(caller_audio(), start_s=CALL_START_S))
            actor.end_input()
            await actor.wait_done()
        spans = [(CALL_START_S + a, CALL_START_S + b) for a, b in script_spans(*SPANS_ARGS)]
        assert_turns(actor.received["transcripts_out"], spans)
        assert actor.received["relay_out"] == actor.received["transcripts_out"]
        (record,) = emulator.connections
        assert record.ended_by == "close_stream" and record.controls[-1] == "CloseStream"
        assert record.audio == bytearray(caller_audio())
        nursery.cancel_scope.cancel()


async def test_a_drop_mid_utterance_is_healed_by_a_supervised_restart() -> None:
    """The socket drops in the middle of the second utterance; the supervisor restarts the link;
    the replay (audio since the first final) lets Deepgram hear the whole second utterance."""
    emulator = DeepgramListenEmulator(api_key=KEY, script=SCRIPT)
    spans = script_spans(*SPANS_ARGS)
    emulator.drop_after_audio_s = (spans[1][0] + spans[1][1]) / 2
    audio = caller_audio()
    audio_in, audio_inbox = open_mailbox[AudioFrame](50, Overflow.BLOCK, name="audio")
    transcripts_send, transcripts = trio.open_memory_channel[Any](100)
    async with trio.open_nursery() as nursery:
        link = link_for(await nursery.start(emulator.serve))
        spec = link.child_spec(inbox=audio_inbox, transcripts_out=transcripts_send)
        sup = Supervisor(SupervisorSpec("call-1", [spec], backoff=RESTART_BACKOFF))
        events = sup.subscribe()
        await nursery.start(sup.run)
        for frame in caller_frames(audio, start_s=CALL_START_S):
            await audio_in.send(frame)
        sup.stop("hangup")  # the polite stop: queued audio drains, then CloseStream
        audio_in.close()
        received = [event async for event in transcripts]  # ends when the link has finished
        assert_turns(received, [(CALL_START_S + a, CALL_START_S + b) for a, b in spans])
        kinds = [type(e).__name__ for e in [e async for e in events]]
        assert kinds.count("ChildRestarting") == 1
        first, second = emulator.connections
        assert first.dropped and second.ended_by == "close_stream"
        # The second connection heard everything from the first final's result window on
        # (the window ends after the last word by at most the endpointing silence), replay first.
        final_1 = next(e for e in received if isinstance(e, TranscriptFinal))
        replay_from = len(audio) - len(second.audio)
        assert bytes(second.audio) == audio[replay_from:]
        replay_from_s = CALL_START_S + replay_from / 8000
        assert final_1.end_s <= replay_from_s <= final_1.end_s + 0.35
        stats = link.statistics()
        assert stats.connects == 2 and stats.replayed_frames > 0
        nursery.cancel_scope.cancel()


async def test_deepgram_link_passes_the_actor_contract() -> None:
    emulator = DeepgramListenEmulator(api_key=KEY, script=SCRIPT)
    utterance = caller_frames(Codec.PCMU.encode(script_audio([0.6], 0.4)))

    async def provoke(actor: ActorUnderTest) -> None:
        await actor.feed(utterance)

    async with trio.open_nursery() as nursery:
        link = link_for(await nursery.start(emulator.serve))
        await assert_actor_contract(starter(link), provoke=provoke, cancelled_within_s=0.5)
        nursery.cancel_scope.cancel()
