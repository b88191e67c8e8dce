"""DeepgramSpeakEmulator over real loopback sockets, driven by a raw WebSocket client."""

from __future__ import annotations

import orjson
import pytest
import trio
from trio_websocket import ConnectionClosed, ConnectionRejected, WebSocketConnection

from bench.emulators.deepgram_speak import FLUSH_WARNING_CODE, DeepgramSpeakEmulator
from bench.emulators.ws_client import open_ws_client
from protocols.audio import ulaw_decode, frame_rms_dbfs

AUTH = [(b"Authorization", b"Token test-key")]
QUERY = "?model=aura-2-celeste-es&encoding=mulaw&sample_rate=8000"


async def start(nursery: trio.Nursery, **kwargs: object) -> tuple[DeepgramSpeakEmulator, str]:
    emulator = DeepgramSpeakEmulator(**kwargs)  # type: ignore[arg-type]
    url = await nursery.start(emulator.serve)
    return emulator, url


async def collect_until(ws: WebSocketConnection, kind: str) -> tuple[bytes, list[dict]]:
    """Audio and control messages up to and including the first message of type ``kind``."""
    audio, controls = bytearray(), []
    with trio.fail_after(5):
        while True:
            frame = await ws.get_message()
            if isinstance(frame, bytes):
                audio += frame
                continue
            message = orjson.loads(frame)
            controls.append(message)
            if message["type"] == kind:
                return bytes(audio), controls


async def test_flush_streams_audio_sized_by_the_text_then_flushed(nursery: trio.Nursery) -> None:
    emulator, url = await start(nursery, ttfa_s=0.05, speed_factor=20.0)
    text = "Buenos días, le llamo de la clínica."
    async with open_ws_client(url + QUERY, extra_headers=AUTH) as ws:
        _, first = await collect_until(ws, "Metadata")
        assert first[0]["model_name"] == "aura-2-celeste-es"
        began = trio.current_time()
        await ws.send_message('{"type":"Speak","text":"Buenos días, "}')
        await ws.send_message('{"type":"Speak","text":"le llamo de la clínica."}')
        await ws.send_message('{"type":"Flush"}')
        audio, controls = await collect_until(ws, "Flushed")
        took = trio.current_time() - began
    assert controls[-1] == {"type": "Flushed", "sequence_id": 0}
    assert len(audio) == round(len(text) * 0.065 * 8000)
    assert frame_rms_dbfs(ulaw_decode(audio)) > -30  # real signal, not silence
    assert 0.05 <= took < 0.05 + len(text) * 0.065 / 20 + 0.3
    record = emulator.connections[0]
    assert record.texts == ["Buenos días, ", "le llamo de la clínica."]
    assert record.flushes[0].text == text and record.flushes[0].finished
    first_audio_at = record.flushes[0].first_audio_at
    assert first_audio_at is not None and first_audio_at - record.flushes[0].at >= 0.05


async def test_clear_stops_audio_and_answers_cleared(nursery: trio.Nursery) -> None:
    emulator, url = await start(nursery, ttfa_s=0.0, speed_factor=2.0)
    async with open_ws_client(url + QUERY, extra_headers=AUTH) as ws:
        await collect_until(ws, "Metadata")
        await ws.send_message('{"type":"Speak","text":"' + "hola " * 40 + '"}')
        await ws.send_message('{"type":"Flush"}')
        assert isinstance(await ws.get_message(), bytes)
        await ws.send_message('{"type":"Clear"}')
        _, controls = await collect_until(ws, "Cleared")
        assert [c["type"] for c in controls] == ["Cleared"]
        with trio.move_on_after(0.3):  # nothing of the cleared text after Cleared
            frame = await ws.get_message()
            pytest.fail(f"got {frame!r} after Cleared")
    record = emulator.connections[0]
    assert len(record.clears) == 1 and not record.flushes[0].finished
    assert record.flushes[0].audio_bytes < 200 * 0.065 * 8000 / 4


async def test_flush_limit_warns_and_ignores(nursery: trio.Nursery) -> None:
    emulator, url = await start(nursery, flush_limit=2, flush_window_s=60.0)
    async with open_ws_client(url + QUERY, extra_headers=AUTH) as ws:
        await collect_until(ws, "Metadata")
        for _ in range(3):
            await ws.send_message('{"type":"Speak","text":"sí"}')
            await ws.send_message('{"type":"Flush"}')
        _, controls = await collect_until(ws, "Warning")
        assert controls[-1]["code"] == FLUSH_WARNING_CODE
    record = emulator.connections[0]
    assert len(record.flushes) == 2 and record.ignored_flushes == 1 and record.warnings == 1


@pytest.mark.parametrize(("frame", "code"), [('{"type":"Shout"}', 1008), ("not json", 1008),
                                             ('{"type":"Close"}', 1000)])
async def test_unknown_type_closes_1008_and_close_closes_1000(
        nursery: trio.Nursery, frame: str, code: int) -> None:
    emulator, url = await start(nursery)
    async with open_ws_client(url + QUERY, extra_headers=AUTH) as ws:
        await collect_until(ws, "Metadata")
        await ws.send_message(frame)
        with trio.fail_after(2), pytest.raises(ConnectionClosed) as closed:
            while True:
                await ws.get_message()
    assert closed.value.reason is not None and closed.value.reason.code == code
    assert emulator.connections[0].close_code == code


@pytest.mark.parametrize(("query", "headers", "status"), [
    (QUERY, [], 401),
    (QUERY, [(b"Authorization", b"Token wrong")], 401),
    ("?model=aura-2-celeste-es&encoding=mp3&sample_rate=8000", AUTH, 400),
    ("?encoding=mulaw&sample_rate=44100", AUTH, 400),
])
async def test_handshake_refusals(nursery: trio.Nursery, query: str,
                                  headers: list[tuple[bytes, bytes]], status: int) -> None:
    emulator, url = await start(nursery)
    with pytest.raises(ConnectionRejected) as refused:
        async with open_ws_client(url + query, extra_headers=headers):
            pass
    assert refused.value.status_code == status
    assert emulator.connections[0].rejected_status == status


async def test_drop_all_closes_tcp_without_close_frame(nursery: trio.Nursery) -> None:
    emulator, url = await start(nursery)
    async with open_ws_client(url + QUERY, extra_headers=AUTH) as ws:
        await collect_until(ws, "Metadata")
        assert emulator.drop_all() == 1
        with trio.fail_after(2), pytest.raises(ConnectionClosed) as closed:
            await ws.get_message()
    assert closed.value.reason is not None and closed.value.reason.code == 1006
    assert emulator.connections[0].ended_by == "dropped"
