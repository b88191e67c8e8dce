"""AuraTts against the Deepgram speak emulator, over real loopback sockets."""

from __future__ import annotations

from contextlib import aclosing

import pytest
import trio

from actors.aura_tts import AuraSession, AuraTts, AuraTtsError
from bench.emulators.deepgram_speak import DeepgramSpeakEmulator
from protocols.audio import L16_16K, PCMA_8K, PCMU_8K

MS_PER_CHAR = 0.065


async def start(nursery: trio.Nursery, **kwargs: object) -> tuple[DeepgramSpeakEmulator, AuraTts]:
    emulator = DeepgramSpeakEmulator(**kwargs)  # type: ignore[arg-type]
    url = await nursery.start(emulator.serve)
    return emulator, AuraTts(api_key="test-key", speak_url=url)


async def say(session: AuraSession, text: str, *, stop_after: int | None = None) -> bytes:
    audio = bytearray()
    async with aclosing(session.synthesize(text)) as frames:
        async for data in frames:
            audio += data
            if stop_after is not None and len(audio) >= stop_after:
                break
    return bytes(audio)


async def test_auth_url_and_audio_of_a_chunk(nursery: trio.Nursery) -> None:
    emulator, tts = await start(nursery)
    async with tts.open_session(PCMU_8K) as session:
        audio = await say(session, "Hola, ¿qué tal?")
    assert len(audio) == round(len("Hola, ¿qué tal?") * MS_PER_CHAR * 8000)
    record = emulator.connections[0]
    assert (b"authorization", b"Token test-key") in record.headers
    assert record.options is not None
    assert (record.options.model, record.options.encoding, record.options.sample_rate) == (
        "aura-2-celeste-es", "mulaw", 8000)
    assert record.controls == ["Speak", "Flush", "Close"]  # graceful Close at the end
    with trio.fail_after(2):
        while record.ended_by is None:
            await trio.sleep(0.01)
    assert record.ended_by == "client_close" and record.close_code == 1000


async def test_alaw_and_l16_follow_the_call_codec(nursery: trio.Nursery) -> None:
    emulator, tts = await start(nursery)
    async with tts.open_session(PCMA_8K) as session:
        assert len(await say(session, "uno")) == round(3 * MS_PER_CHAR * 8000)
    async with tts.open_session(L16_16K) as session:
        audio = await say(session, "dos")
    assert len(audio) == round(3 * MS_PER_CHAR * 16000) * 2
    assert [(c.options.encoding, c.options.sample_rate) for c in emulator.connections
            if c.options is not None] == [
        ("alaw", 8000), ("linear16", 16000)]


async def test_cancel_clears_and_no_stale_audio_follows(nursery: trio.Nursery) -> None:
    emulator, tts = await start(nursery, speed_factor=2.0, ttfa_s=0.0)
    long_text, short_text = "a" * 200, "Vale."
    async with tts.open_session(PCMU_8K) as session:
        partial = await say(session, long_text, stop_after=320)
        await session.cancel()
        after = await say(session, short_text)
    record = emulator.connections[0]
    assert record.controls == ["Speak", "Flush", "Clear", "Speak", "Flush", "Close"]
    assert len(record.clears) == 1
    assert len(partial) < len(long_text) * MS_PER_CHAR * 8000 / 4
    # The next text gets exactly its own audio: nothing of the cleared one leaked in.
    assert len(after) == round(len(short_text) * MS_PER_CHAR * 8000) == record.flushes[1].audio_bytes
    assert session.statistics().clears == 1


async def test_cancel_without_synthesis_in_flight_sends_nothing(nursery: trio.Nursery) -> None:
    emulator, tts = await start(nursery)
    async with tts.open_session(PCMU_8K) as session:
        await say(session, "hola")
        await session.cancel()
    assert emulator.connections[0].controls == ["Speak", "Flush", "Close"]


async def test_cancelled_consumer_then_cancel(nursery: trio.Nursery) -> None:
    """What the Speaker does on barge-in: cancel the iterating task, then cancel()."""
    emulator, tts = await start(nursery, speed_factor=1.0, ttfa_s=0.0)
    async with tts.open_session(PCMU_8K) as session:
        with trio.move_on_after(0.1):
            await say(session, "b" * 100)
        await session.cancel()
        assert len(await say(session, "sí")) == round(2 * MS_PER_CHAR * 8000)
    assert emulator.connections[0].controls[:3] == ["Speak", "Flush", "Clear"]


@pytest.mark.parametrize("fault", ["drop", "close"])
async def test_reconnects_when_the_socket_went_away_between_chunks(
        nursery: trio.Nursery, fault: str) -> None:
    emulator, tts = await start(nursery)
    async with tts.open_session(PCMU_8K) as session:
        await say(session, "primero")
        if fault == "drop":
            emulator.drop_all()
        else:
            emulator.close_all(1000, "idle")
        await trio.sleep(0.05)
        audio = await say(session, "segundo")
    assert len(audio) == round(len("segundo") * MS_PER_CHAR * 8000)
    assert len(emulator.connections) == 2
    assert emulator.connections[1].texts == ["segundo"]
    assert session.statistics().connects == 2


async def test_drop_noticed_only_on_send_is_retried_once(nursery: trio.Nursery) -> None:
    emulator, tts = await start(nursery)
    async with tts.open_session(PCMU_8K) as session:
        await say(session, "primero")
        emulator.drop_all()  # no sleep: the client may not have seen the drop yet
        assert len(await say(session, "segundo")) == round(7 * MS_PER_CHAR * 8000)


async def test_wrong_key_fails_at_open(nursery: trio.Nursery) -> None:
    emulator, tts = await start(nursery, api_key="other")
    with pytest.raises(AuraTtsError, match="401"):
        async with tts.open_session(PCMU_8K):
            pytest.fail("opened with a wrong key")


async def test_drop_after_audio_raises(nursery: trio.Nursery) -> None:
    emulator, tts = await start(nursery, speed_factor=1.0, ttfa_s=0.0)
    with pytest.raises(AuraTtsError, match="mid-synthesis"):
        async with tts.open_session(PCMU_8K) as session:
            async with aclosing(session.synthesize("c" * 100)) as frames:
                async for _ in frames:
                    emulator.drop_all()


async def test_flush_limit_is_kept_by_waiting(nursery: trio.Nursery) -> None:
    emulator, tts = await start(nursery, flush_limit=2, flush_window_s=0.5)
    tts.flush_limit, tts.flush_window_s = 2, 0.5
    async with tts.open_session(PCMU_8K) as session:
        began = trio.current_time()
        for word in ("uno", "dos", "tres"):
            await say(session, word)
        took = trio.current_time() - began
        assert session.statistics().flush_waits == 1
    assert took >= 0.5
    assert emulator.connections[0].warnings == 0 and len(emulator.connections[0].flushes) == 3


async def test_close_is_bounded_when_cancelled(nursery: trio.Nursery) -> None:
    emulator, tts = await start(nursery, speed_factor=0.5)
    with trio.move_on_after(0.2):
        async with tts.open_session(PCMU_8K) as session:
            await say(session, "d" * 200)
    began = trio.current_time()
    with trio.fail_after(3):
        while emulator.connections[0].ended_by is None:
            await trio.sleep(0.01)
    assert emulator.connections[0].controls[-1] == "Close"
    assert trio.current_time() - began < 1.0
