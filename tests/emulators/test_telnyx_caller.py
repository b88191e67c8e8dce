"""TelnyxCaller against a small trio-websocket server standing in for our media endpoint."""

from __future__ import annotations

import statistics
from collections.abc import Awaitable, Callable

import attrs
import numpy as np
import pytest
import trio
from trio_websocket import ConnectionClosed, WebSocketConnection, WebSocketRequest, serve_websocket

from bench.emulators.caller_audio import encode, script_audio, speech_like
from bench.emulators.telnyx_caller import CallRejected, TelnyxCaller
from protocols.audio import Codec
from protocols.telnyx_media import (
    AUTH_TOKEN_HEADER,
    Clear,
    Connected,
    Dtmf,
    Error,
    Mark,
    MarkOut,
    Media,
    MediaOut,
    Start,
    Stop,
    TelnyxInbound,
    decode,
    encode as encode_outbound,
)

TOKEN = "s3cret"
Script = Callable[[WebSocketConnection, "FakeService"], Awaitable[None]]


@attrs.define(eq=False)
class FakeService:
    """Records what the caller sends; ``script`` may talk back. Always closes its TCP stream."""

    script: Script | None = None
    reject_status: int | None = None
    frames: list[tuple[float, TelnyxInbound]] = attrs.field(factory=list)
    token_header: bytes | None = None
    close_code: int | None = None
    started: trio.Event = attrs.field(factory=trio.Event)
    url: str = ""

    async def handler(self, request: WebSocketRequest) -> None:
        stream = request._connection._stream  # noqa: SLF001 - trio-websocket leaks it otherwise
        try:
            self.token_header = dict(request.headers).get(AUTH_TOKEN_HEADER.encode())
            if self.reject_status is not None:
                await request.reject(self.reject_status, body=b"no")
                return
            ws = await request.accept()
            async with trio.open_nursery() as nursery:
                if self.script is not None:
                    nursery.start_soon(self.script, ws, self)
                try:
                    while True:
                        frame = decode(await ws.get_message())
                        self.frames.append((trio.current_time(), frame))
                        if isinstance(frame, Start):
                            self.started.set()
                except ConnectionClosed as exc:
                    self.close_code = exc.reason.code if exc.reason else None
                nursery.cancel_scope.cancel()
        finally:
            await trio.aclose_forcefully(stream)

    def of_type(self, cls: type) -> list:
        return [f for _, f in self.frames if isinstance(f, cls)]


async def start_service(nursery: trio.Nursery, service: FakeService) -> FakeService:
    server = await nursery.start(serve_websocket, service.handler, "127.0.0.1", 0, None)
    service.url = f"ws://127.0.0.1:{server.port}/telnyx/media"
    return service


def speech_bytes(duration_s: float) -> bytes:
    return encode(speech_like(duration_s, np.random.default_rng(1)), Codec.PCMU)


async def test_connected_start_media_stop_in_order_with_auth_and_real_time_pacing(
    nursery: trio.Nursery,
) -> None:
    service = await start_service(nursery, FakeService())
    audio = speech_bytes(1.0)
    caller = TelnyxCaller(service.url, token=TOKEN, audio=audio, dtmf=[(0.5, "7")])
    record = await caller.run()

    assert service.token_header == TOKEN.encode()
    events = [type(f) for _, f in service.frames]
    assert events[:2] == [Connected, Start] and events[-1] is Stop
    assert events.count(Media) == 50 and events.count(Dtmf) == 1
    connected, start = service.frames[0][1], service.frames[1][1]
    assert isinstance(connected, Connected) and connected.auth_token == TOKEN
    assert isinstance(start, Start)
    assert start.media_format.encoding == "PCMU" and start.media_format.sample_rate == 8000
    assert start.call_control_id == caller.call_control_id and start.stream_id == caller.stream_id
    assert start.client_state_bytes is not None and start.from_ and start.to
    numbered = [getattr(f, "sequence_number", None) for _, f in service.frames[1:]]
    assert numbered == list(range(1, len(numbered) + 1))  # start, media, dtmf, stop: one counter
    media = service.of_type(Media)
    assert [m.chunk for m in media] == list(range(1, 51))
    assert [m.timestamp for m in media][:3] == [0, 20, 40]
    assert all(m.track == "inbound" and len(m.payload) == 160 for m in media)
    assert b"".join(m.payload for m in media) == audio
    dtmf_index = events.index(Dtmf)
    assert events[dtmf_index - 1] is Media and dtmf_index == 2 + 25  # after 25 frames = 0.5 s

    arrivals = [at for at, f in service.frames if isinstance(f, Media)]
    mean_gap = (arrivals[-1] - arrivals[0]) / (len(arrivals) - 1)
    assert 0.018 <= mean_gap <= 0.023
    sent_gaps = np.diff(record.media_sent_at)
    assert statistics.median(sent_gaps) == pytest.approx(0.02, abs=0.004)
    assert record.ended_by == "stop" and service.close_code == 1000


async def test_speed_hangup_padding_drop_and_reorder(nursery: trio.Nursery) -> None:
    service = await start_service(nursery, FakeService())
    caller = TelnyxCaller(
        service.url, audio=speech_bytes(0.2), speed=4.0, hangup_after_s=1.0, end_with="drop",
        reorder_probability=0.3, seed=5, codec=Codec.PCMA,
    )
    started = trio.current_time()
    record = await caller.run()
    assert 0.24 <= trio.current_time() - started < 0.6  # 1 s of call time at 4x
    with trio.fail_after(2):
        while service.close_code is None:
            await trio.sleep(0.01)
    assert service.close_code == 1006 and record.ended_by == "drop"
    assert service.token_header is None
    media = service.of_type(Media)
    assert len(media) == 50
    assert sorted(m.chunk for m in media) == list(range(1, 51))
    assert [m.chunk for m in media] != sorted(m.chunk for m in media)  # some swapped
    silence_byte = Codec.PCMA.silence_sample
    by_chunk = sorted(media, key=lambda m: m.chunk or 0)
    assert all(m.payload == silence_byte * 160 for m in by_chunk[10:])  # padded after the audio


async def test_playout_marks_and_clear(nursery: trio.Nursery) -> None:
    timeline: dict[str, float] = {}

    async def talk_back(ws: WebSocketConnection, service: FakeService) -> None:
        await service.started.wait()
        # 400 ms of audio at speed 2 plays in 200 ms; the mark comes back after it.
        timeline["sent_a"] = trio.current_time()
        await ws.send_message(encode_outbound(MediaOut(b"\x01" * 3200)))
        await ws.send_message(encode_outbound(MarkOut("a")))
        await trio.sleep(0.4)
        timeline["sent_b"] = trio.current_time()
        await ws.send_message(encode_outbound(MarkOut("b")))  # idle: echoed at once
        await trio.sleep(0.1)
        await ws.send_message(encode_outbound(MediaOut(b"\x02" * 8000)))  # 1 s of audio
        await ws.send_message(encode_outbound(MarkOut("c")))
        await ws.send_message(encode_outbound(MediaOut(b"\x03" * 800)))
        await ws.send_message(encode_outbound(MarkOut("d")))
        await trio.sleep(0.1)
        timeline["sent_clear"] = trio.current_time()
        await ws.send_message(encode_outbound(Clear()))
        await ws.send_message("not json")
        await trio.sleep(0.1)
        await ws.aclose(1000)  # the service hangs up first

    service = await start_service(nursery, FakeService(script=talk_back))
    caller = TelnyxCaller(service.url, speed=2.0, hangup_after_s=30.0)
    record = await caller.run()

    assert record.ended_by == "server_closed" and record.close_code == 1000
    echoes = {m.name: m for m in record.marks}
    assert [m.name for m in record.marks] == ["a", "b", "c", "d"]
    assert echoes["a"].played and echoes["a"].at - timeline["sent_a"] == pytest.approx(0.2, abs=0.05)
    assert echoes["b"].played and echoes["b"].at - timeline["sent_b"] < 0.05
    assert not echoes["c"].played and not echoes["d"].played
    assert echoes["c"].at - timeline["sent_clear"] < 0.05
    assert record.played.startswith(b"\x01" * 3200 + b"\x02")
    assert b"\x03" not in record.played
    assert 3200 + 160 <= len(record.played) < 3200 + 8000
    assert len(record.segments) == 2 and record.segments[1].cleared
    assert record.gaps_s[0] == pytest.approx(0.3, abs=0.06)
    assert len(record.clears) == 1 and len(record.errors_sent) == 1
    errors = service.of_type(Error)
    assert [e.code for e in errors] == [100003]
    echoed = service.of_type(Mark)
    assert [m.name for m in echoed] == ["a", "b", "c", "d"]


async def test_refused_handshake_raises_call_rejected(nursery: trio.Nursery) -> None:
    service = await start_service(nursery, FakeService(reject_status=403))
    with pytest.raises(CallRejected) as caught:
        await TelnyxCaller(service.url, token="wrong", audio=speech_bytes(0.1)).run()
    assert caught.value.status_code == 403 and caught.value.body == b"no"


async def test_script_audio_drives_the_caller(nursery: trio.Nursery) -> None:
    service = await start_service(nursery, FakeService())
    pcm = script_audio([0.3], 0.1, lead_in_s=0.1)
    record = await nursery.start(TelnyxCaller(service.url, audio=encode(pcm), speed=8.0).run)
    assert record.started_at is not None
    with trio.fail_after(2):
        while service.close_code is None:
            await trio.sleep(0.01)
    assert len(service.of_type(Media)) == 25 and service.of_type(Stop)
