"""TelnyxRx against a scripted MediaSocket (the port), with real mailboxes and MockClock."""

from __future__ import annotations

import base64
import json

import attrs
import pytest
import trio

from actors.messages import (AudioFrame, CallEnded, CallInfo, CallStarted, DtmfPressed,
                             MarkPlayed)
from actors.telnyx_rx import TelnyxRx
from protocols.audio import PCMU_8K
from supervisor import Overflow, open_mailbox

CALL = CallInfo(call_id="c1", call_control_id="v3:abc", stream_id="s1", audio_format=PCMU_8K)


@attrs.define(eq=False)
class ScriptedSocket:
    """Yields the given frames, then None (closed) — or blocks forever if ``hold_open``."""

    frames: list[str]
    hold_open: bool = False
    sent: list[str] = attrs.field(factory=list)

    async def receive(self) -> str | bytes | None:
        if self.frames:
            await trio.sleep(0)
            return self.frames.pop(0)
        if self.hold_open:
            await trio.sleep_forever()
        return None

    async def send(self, text: str) -> None:
        self.sent.append(text)

    async def close(self, code: int, reason: str = "") -> None:
        pass


def media(seq: int, payload: bytes = b"\xff" * 160, track: str = "inbound") -> str:
    return json.dumps({"event": "media", "sequence_number": str(seq), "stream_id": "s1",
                       "media": {"track": track, "chunk": str(seq), "timestamp": str(seq * 20),
                                 "payload": base64.b64encode(payload).decode()}})


def stop(seq: int) -> str:
    return json.dumps({"event": "stop", "sequence_number": str(seq), "stream_id": "s1",
                       "stop": {}})


async def run_rx(frames: list[str], **kwargs: object) -> tuple[TelnyxRx, list[object],
                                                                 list[object], list[object]]:
    audio_tx, audio_rx = open_mailbox[AudioFrame](1000, Overflow.DROP_OLDEST, name="audio")
    dtmf_tx, dtmf_rx = open_mailbox[object](100, Overflow.DROP_OLDEST, name="dtmf")
    marks_tx, marks_rx = open_mailbox[object](100, Overflow.DROP_OLDEST, name="marks")
    relay_tx, relay_rx = open_mailbox[object](100, Overflow.DROP_OLDEST, name="relay")
    rx = TelnyxRx(socket=ScriptedSocket(frames), call=CALL, first_sequence_number=1, **kwargs)  # type: ignore[arg-type]
    async with trio.open_nursery() as nursery:
        await nursery.start(lambda task_status: rx.run(audio_out=audio_tx, dtmf_out=dtmf_tx, marks_out=marks_tx,
                                                      relay_out=relay_tx, task_status=task_status))
    audio = [m async for m in audio_rx]
    control = [m async for m in dtmf_rx] + [m async for m in marks_rx]
    relay = [m async for m in relay_rx]
    return rx, audio, control, relay


async def test_audio_in_order_with_call_time_then_stop_ends_the_call(autojump_clock: object) -> None:
    frames = [media(n, bytes([n]) * 160) for n in range(2, 7)] + [stop(7)]
    rx, audio, _, relay = await run_rx(frames)
    assert [a.payload[0] for a in audio] == [2, 3, 4, 5, 6]  # type: ignore[attr-defined]
    assert [a.call_time_s for a in audio] == pytest.approx([0.0, 0.02, 0.04, 0.06, 0.08])  # type: ignore[attr-defined]
    assert rx.end_reason == "telnyx stop"
    assert relay == [CallStarted(CALL), CallEnded(CALL, "telnyx stop")]


async def test_out_of_order_frames_are_reordered(autojump_clock: object) -> None:
    frames = [media(3, b"\x03" * 160), media(2, b"\x02" * 160), media(5, b"\x05" * 160),
              media(4, b"\x04" * 160), stop(6)]
    _, audio, _, _ = await run_rx(frames)
    assert [a.payload[0] for a in audio] == [2, 3, 4, 5]  # type: ignore[attr-defined]


async def test_malformed_and_unknown_frames_are_counted_not_fatal(autojump_clock: object) -> None:
    frames = [media(2), "{not json", json.dumps({"event": "media", "sequence_number": "3"}),
              json.dumps({"event": "brand_new_event", "sequence_number": "3"}),
              media(3), stop(4)]
    rx, audio, _, _ = await run_rx(frames)
    assert len(audio) == 2
    stats = rx.statistics()
    assert stats.malformed == 2 and stats.unknown_events == 1 and rx.end_reason == "telnyx stop"


async def test_outbound_track_never_reaches_stt(autojump_clock: object) -> None:
    rx, audio, _, _ = await run_rx([media(2, track="outbound"), media(3), stop(4)])
    assert len(audio) == 1 and rx.statistics().outbound_track_frames == 1


async def test_dtmf_and_marks_are_routed_to_control(autojump_clock: object) -> None:
    frames = [media(2),
              json.dumps({"event": "dtmf", "sequence_number": "3", "stream_id": "s1",
                          "dtmf": {"digit": "5"}}),
              json.dumps({"event": "mark", "sequence_number": "4", "stream_id": "s1",
                          "mark": {"name": "reply-1"}}),
              stop(5)]
    _, _, control, _ = await run_rx(frames)
    assert control == [DtmfPressed("5", 0.02), MarkPlayed("reply-1", 0.02)]


async def test_socket_closing_without_stop_ends_the_call(autojump_clock: object) -> None:
    rx, audio, _, relay = await run_rx([media(2), media(3)])
    assert len(audio) == 2 and rx.end_reason == "telnyx socket closed"
    assert relay[-1] == CallEnded(CALL, "telnyx socket closed")


async def test_cancelled_rx_still_reports_the_end_and_closes_outputs(autojump_clock: object) -> None:
    audio_tx, audio_rx = open_mailbox[AudioFrame](10, Overflow.DROP_OLDEST, name="audio")
    relay_tx, relay_rx = open_mailbox[object](10, Overflow.DROP_OLDEST, name="relay")
    rx = TelnyxRx(socket=ScriptedSocket([media(2)], hold_open=True), call=CALL,
                  first_sequence_number=1)
    async with trio.open_nursery() as nursery:
        await nursery.start(lambda task_status: rx.run(audio_out=audio_tx, relay_out=relay_tx,
                                                      task_status=task_status))
        await trio.sleep(1)
        nursery.cancel_scope.cancel()
    assert len([m async for m in audio_rx]) == 1  # outputs closed: iteration ends
    relay = [m async for m in relay_rx]
    assert relay[-1] == CallEnded(CALL, "call stopped by the service")


async def test_slow_consumer_never_blocks_the_reader(autojump_clock: object) -> None:
    audio_tx, audio_rx = open_mailbox[AudioFrame](5, Overflow.DROP_OLDEST, name="audio")
    frames = [media(n, bytes([n]) * 160) for n in range(2, 52)] + [stop(52)]
    rx = TelnyxRx(socket=ScriptedSocket(frames), call=CALL, first_sequence_number=1)
    with trio.fail_after(1):
        await rx.run(audio_out=audio_tx)
    kept = [a.payload[0] async for a in audio_rx]
    assert kept == list(range(47, 52))  # the newest five survive
    assert audio_rx.statistics().dropped == 45
