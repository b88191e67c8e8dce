"""The Deepgram /v1/listen emulator over real loopback sockets, driven by a plain trio-websocket client.

Audio is pushed faster than real time: the emulator's clock is the byte count.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import numpy as np
import orjson
import pytest
import trio
from trio_websocket import ConnectionClosed, ConnectionRejected, WebSocketConnection

from bench.emulators.caller_audio import encode_for_deepgram, script_audio, script_spans, silence
from bench.emulators.deepgram_listen import DeepgramListenEmulator, ListenTranscriber
from bench.emulators.ws_client import open_ws_client as open_ws
from protocols.deepgram_listen import (
    KEEPALIVE_TEXT,
    NET_0000_REASON,
    NET_0001_REASON,
    CloseStream,
    ErrorMessage,
    Finalize,
    ListenOptions,
    Metadata,
    Results,
    ServerMessage,
    SpeechStarted,
    UtteranceEnd,
    auth_header,
    build_listen_url,
    decode_server,
    encode_client,
)

KEY = "test-key"
SCRIPT = ["hola quiero pedir una cita para el martes", "a las diez por favor"]
OPTIONS = ListenOptions(endpointing=300, utterance_end_ms=1000, extra={"tag": "call-1"})
CHUNK = 160 * 5  # 100 ms of mu-law per binary frame


def two_utterances() -> bytes:
    pcm = script_audio([2.0, 1.2], 1.5, lead_in_s=0.4, rng=np.random.default_rng(7))
    return encode_for_deepgram(pcm)


@pytest.fixture
async def emulator(nursery: trio.Nursery) -> AsyncIterator[DeepgramListenEmulator]:
    emu = DeepgramListenEmulator(api_key=KEY, script=SCRIPT, idle_timeout_s=2.0)
    await nursery.start(emu.serve)
    yield emu


def url_for(emu: DeepgramListenEmulator, options: ListenOptions = OPTIONS) -> str:
    assert emu.url is not None
    return build_listen_url(emu.url, options)


async def send_audio(ws: WebSocketConnection, audio: bytes, chunk: int = CHUNK) -> None:
    for offset in range(0, len(audio), chunk):
        await ws.send_message(audio[offset : offset + chunk])


async def read_until_closed(ws: WebSocketConnection, limit_s: float = 5.0) -> tuple[list[ServerMessage], int | None, str | None]:
    messages: list[ServerMessage] = []
    with trio.fail_after(limit_s):
        while True:
            try:
                messages.append(decode_server(await ws.get_message()))
            except ConnectionClosed as exc:
                reason = exc.reason
                return messages, reason.code if reason else None, reason.reason if reason else None


async def test_wrong_key_is_refused_with_401_and_dg_headers(emulator: DeepgramListenEmulator) -> None:
    with pytest.raises(ConnectionRejected) as caught:
        async with open_ws(url_for(emulator), extra_headers=[auth_header("wrong")]):
            pass  # pragma: no cover
    assert caught.value.status_code == 401
    headers = dict(caught.value.headers or ())
    assert b"dg-error" in headers and b"dg-request-id" in headers
    assert orjson.loads(caught.value.body or b"{}")["err_code"] == "INVALID_AUTH"
    with pytest.raises(ConnectionRejected) as caught:
        async with open_ws(url_for(emulator)):  # no credentials at all
            pass  # pragma: no cover
    assert caught.value.status_code == 401
    assert [c.rejected_status for c in emulator.connections] == [401, 401]


async def test_bad_query_is_refused_with_400(emulator: DeepgramListenEmulator) -> None:
    assert emulator.url is not None
    for query in ("?encoding=mulaw&sample_rate=8000", "?model=nova-3&encoding=mulaw",
                  "?model=nova-3&encoding=opus&sample_rate=48000", "?model=nova-3&interim_results=True"):
        with pytest.raises(ConnectionRejected) as caught:
            async with open_ws(emulator.url + query, extra_headers=[auth_header(KEY)]):
                pass  # pragma: no cover
        assert caught.value.status_code == 400, query
        assert dict(caught.value.headers or ())[b"dg-error"]


async def test_two_utterances_interims_finals_utterance_end_then_metadata(
    emulator: DeepgramListenEmulator,
) -> None:
    audio = two_utterances()
    spans = script_spans([2.0, 1.2], 1.5, lead_in_s=0.4)
    async with open_ws(url_for(emulator), subprotocols=["token", KEY]) as ws:
        assert ws.subprotocol == "token"
        await send_audio(ws, audio)
        await ws.send_message(encode_client(CloseStream()))
        messages, code, _ = await read_until_closed(ws)
    assert code == 1000
    assert isinstance(messages[-1], Metadata)
    assert messages[-1].duration == pytest.approx(len(audio) / 8000, abs=1e-3)
    assert messages[-1].channels == 1

    starts = [m for m in messages if isinstance(m, SpeechStarted)]
    assert [s.timestamp for s in starts] == pytest.approx([s for s, _ in spans], abs=0.03)
    finals = [m for m in messages if isinstance(m, Results) and m.is_final]
    assert [f.transcript for f in finals] == SCRIPT
    assert all(f.speech_final and not f.from_finalize for f in finals)
    for final, (start, end) in zip(finals, spans, strict=True):
        words = final.channel.alternatives[0].words
        assert words[0].start == pytest.approx(start, abs=0.03)
        assert words[-1].end == pytest.approx(end, abs=0.03)
        assert final.end == pytest.approx(end + 0.3, abs=0.03)  # endpointing=300
    # Contiguous windows: each Results starts where the previous final ended.
    assert finals[1].start == pytest.approx(finals[0].end)

    first = messages[: messages.index(finals[0])]
    interims = [m.transcript for m in first if isinstance(m, Results)]
    assert len(interims) >= 3
    assert all(SCRIPT[0].startswith(t) for t in interims)
    assert [len(t) for t in interims] == sorted(len(t) for t in interims)
    assert len(interims[0]) < len(SCRIPT[0])

    ends = [m for m in messages if isinstance(m, UtteranceEnd)]
    assert [e.last_word_end for e in ends] == pytest.approx([end for _, end in spans], abs=0.03)
    for number, utterance_end in enumerate(ends):  # each after its own final
        assert messages.index(utterance_end) > messages.index(finals[number])
    order = [type(m).__name__ for m in messages]
    assert order.index("UtteranceEnd") > order.index("Results")

    record = emulator.connections[0]
    assert record.auth_scheme == "token" and record.auth_subprotocol == "token"
    assert record.options == OPTIONS
    assert record.audio_bytes == len(audio) and bytes(record.audio) == audio
    assert record.controls == ["CloseStream"]
    assert record.ended_by == "close_stream" and record.close_code == 1000
    assert record.utterances == SCRIPT
    assert emulator.utterances_detected == 2
    assert emulator.script_position("call-1") == 2


async def test_keepalive_keeps_it_open_past_the_idle_timeout(nursery: trio.Nursery) -> None:
    emu = DeepgramListenEmulator(api_key=KEY, idle_timeout_s=0.5)
    await nursery.start(emu.serve)
    async with open_ws(url_for(emu), extra_headers=[auth_header(KEY)]) as ws:
        for _ in range(6):  # 1.2 s of wall time, a KeepAlive every 0.2 s
            await trio.sleep(0.2)
            await ws.send_message(KEEPALIVE_TEXT)
        await ws.send_message(encode_client(CloseStream()))
        messages, code, _ = await read_until_closed(ws)
    assert code == 1000 and [type(m) for m in messages] == [Metadata]
    assert emu.connections[0].controls == ["KeepAlive"] * 6 + ["CloseStream"]


async def test_without_frames_it_closes_1011_net0001(nursery: trio.Nursery) -> None:
    emu = DeepgramListenEmulator(api_key=KEY, idle_timeout_s=0.5, error_before_close=True)
    await nursery.start(emu.serve)
    async with open_ws(url_for(emu), extra_headers=[auth_header(KEY)]) as ws:
        await ws.send_message(encode_for_deepgram(silence(0.2)))
        opened = trio.current_time()
        messages, code, reason = await read_until_closed(ws)
        waited = trio.current_time() - opened
    assert code == 1011 and reason == NET_0001_REASON
    assert 0.45 <= waited < 1.5
    assert messages == [ErrorMessage(variant="Closing", code="NET-0001", description=NET_0001_REASON)]
    assert emu.connections[0].ended_by == "idle_timeout"


async def test_finalize_flushes_the_pending_utterance(emulator: DeepgramListenEmulator) -> None:
    speech = script_audio([1.5], [0.1], lead_in_s=0.2)  # 100 ms of silence: below endpointing
    async with open_ws(url_for(emulator), extra_headers=[auth_header(KEY)]) as ws:
        await send_audio(ws, encode_for_deepgram(speech))
        await ws.send_message(encode_client(Finalize()))
        await ws.send_message(encode_client(Finalize()))  # nothing pending: an empty final
        await ws.send_message("{not json")
        await ws.send_message('{"type": "Configure"}')
        await ws.send_message(encode_client(CloseStream()))
        messages, code, _ = await read_until_closed(ws)
    assert code == 1000
    finals = [m for m in messages if isinstance(m, Results) and m.is_final]
    assert [(f.transcript, f.from_finalize, f.speech_final) for f in finals] == [
        (SCRIPT[0], True, False), ("", True, False),
    ]
    errors = [m for m in messages if isinstance(m, ErrorMessage)]
    assert [(e.variant, e.message) for e in errors] == [
        ("SchemaError", "{not json"), ("SchemaError", '{"type": "Configure"}'),
    ]
    assert emulator.connections[0].controls == [
        "Finalize", "Finalize", "Invalid", "Invalid", "CloseStream",
    ]


async def test_close_stream_finalises_speech_in_progress(emulator: DeepgramListenEmulator) -> None:
    speech = encode_for_deepgram(script_audio([1.0], [0.0], lead_in_s=0.2))
    async with open_ws(url_for(emulator), extra_headers=[auth_header(KEY)]) as ws:
        await send_audio(ws, speech)
        await ws.send_message(b"")  # an empty binary frame is CloseStream
        messages, code, _ = await read_until_closed(ws)
    assert code == 1000
    final = [m for m in messages if isinstance(m, Results) and m.is_final]
    assert [(f.transcript, f.speech_final) for f in final] == [(SCRIPT[0], False)]
    assert isinstance(messages[-1], Metadata)


async def test_drop_mid_utterance_then_reconnect_with_replay_gets_the_same_text(
    emulator: DeepgramListenEmulator,
) -> None:
    pcm = script_audio([1.5, 1.0], 1.0, lead_in_s=0.3, rng=np.random.default_rng(3))
    audio = encode_for_deepgram(pcm)
    first_end = int((0.3 + 1.5 + 1.0) * 8000)  # the first utterance and its gap
    emulator.drop_after_audio_s = first_end / 8000 + 0.5
    async with open_ws(url_for(emulator), extra_headers=[auth_header(KEY)]) as ws:
        with pytest.raises(ConnectionClosed) as closed:
            await send_audio(ws, audio)
            with trio.fail_after(2):
                while True:
                    await ws.get_message()
    assert closed.value.reason is not None and closed.value.reason.code == 1006
    dropped = emulator.connections[0]
    assert dropped.ended_by == "dropped" and dropped.dropped
    assert dropped.utterances == [SCRIPT[0]]
    assert emulator.utterances_detected == 2  # the second one was heard, never finalised

    # The link reconnects and replays the audio since the last final (the second utterance).
    async with open_ws(url_for(emulator), extra_headers=[auth_header(KEY)]) as ws:
        await send_audio(ws, audio[first_end - 800 :])
        await ws.send_message(encode_client(CloseStream()))
        messages, code, _ = await read_until_closed(ws)
    assert code == 1000
    finals = [m.transcript for m in messages if isinstance(m, Results) and m.is_final]
    assert finals == [SCRIPT[1]]
    assert emulator.script_position("call-1") == 2


async def test_one_shot_faults(emulator: DeepgramListenEmulator) -> None:
    emulator.reject_next_with(429)
    with pytest.raises(ConnectionRejected) as caught:
        async with open_ws(url_for(emulator), extra_headers=[auth_header(KEY)]):
            pass  # pragma: no cover
    assert caught.value.status_code == 429
    emulator.close_with(1011, NET_0000_REASON, after_audio_s=0.5)
    async with open_ws(url_for(emulator), extra_headers=[auth_header(KEY)]) as ws:
        with pytest.raises(ConnectionClosed):
            await send_audio(ws, encode_for_deepgram(silence(1.0)))
        _, code, reason = await read_until_closed(ws)
    assert (code, reason) == (1011, NET_0000_REASON)
    async with open_ws(url_for(emulator), extra_headers=[auth_header(KEY)]) as ws:  # healthy again
        await send_audio(ws, encode_for_deepgram(silence(1.0)))
        await ws.send_message(encode_client(CloseStream()))
        _, code, _ = await read_until_closed(ws)
    assert code == 1000
    assert [c.ended_by for c in emulator.connections] == ["rejected", "fault_close", "close_stream"]


async def test_server_latency_and_shutdown(nursery: trio.Nursery) -> None:
    emu = DeepgramListenEmulator(api_key=KEY, script=SCRIPT, first_result_delay_s=0.3)
    shutdown = trio.CancelScope()

    async def serve(task_status: trio.TaskStatus[str]) -> None:
        with shutdown:
            await emu.serve(task_status=task_status)

    await nursery.start(serve)
    async with open_ws(url_for(emu), extra_headers=[auth_header(KEY)]) as ws:
        sent_at = trio.current_time()
        await send_audio(ws, encode_for_deepgram(script_audio([0.6], [0.0], lead_in_s=0.1)))
        first = decode_server(await ws.get_message())
        assert isinstance(first, SpeechStarted)
        assert trio.current_time() - sent_at >= 0.29
        shutdown.cancel()  # the emulator goes away: 1001
        _, code, _ = await read_until_closed(ws)
    assert code == 1001
    assert emu.connections[0].ended_by == "server_shutdown"


def test_transcriber_handles_linear16_stereo_and_punctuation() -> None:
    finalized: list[str] = []
    options = ListenOptions(encoding="linear16", sample_rate=16000, channels=2, punctuate=True,
                            interim_results=False, utterance_end_ms=None, vad_events=False)
    transcriber = ListenTranscriber(
        options=options, next_text=lambda: "Hola, ¿qué tal?", utterance_finalized=finalized.append,
        request_id="r",
    )
    mono = script_audio([0.8], [0.5], lead_in_s=0.2, sample_rate=16000)
    stereo = np.repeat(mono, 2)
    messages = transcriber.feed(encode_for_deepgram(stereo, "linear16"))
    assert transcriber.audio_s == pytest.approx(1.5)
    (final,) = messages
    assert isinstance(final, Results) and final.speech_final
    assert final.transcript == "Hola, ¿qué tal?"
    assert [w.word for w in final.channel.alternatives[0].words] == ["hola", "qué", "tal"]
    assert final.channel_index == (0, 2)
    assert finalized == ["Hola, ¿qué tal?"]
