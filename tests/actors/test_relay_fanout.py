"""RelayFanout: what reaches the relay, in what order, and that a relay outage never hurts."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs
import trio

from actors.messages import (CallEnded, CallInfo, CallStarted, CallerStartedSpeaking,
                             TranscriptFinal, TranscriptPartial)
from actors.relay_fanout import RelayFanout
from protocols import relay
from protocols.audio import PCMU_8K
from supervisor import Overflow, open_mailbox

CALL = CallInfo(call_id="c9", call_control_id="v3:x", stream_id="s9", audio_format=PCMU_8K)


@attrs.define(eq=False)
class RecordingPublisher:
    events: list[Mapping[str, Any]] = attrs.field(factory=list)
    fail: bool = False
    stall: bool = False

    async def publish(self, call_id: str, event: Mapping[str, Any]) -> None:
        if self.stall:
            await trio.sleep_forever()
        if self.fail:
            raise ConnectionError("relay down")
        assert call_id == event["callId"]
        self.events.append(event)


async def feed(fanout: RelayFanout, messages: list[object]) -> None:
    tx, rx = open_mailbox[object](64, Overflow.DROP_OLDEST, name="relay")
    async with trio.open_nursery() as nursery:
        await nursery.start(lambda task_status: fanout.run(rx, task_status=task_status))
        async with tx:
            for m in messages:
                await tx.send(m)


async def test_transcripts_become_seed_events_and_ended_comes_last(autojump_clock: object) -> None:
    pub = RecordingPublisher()
    await feed(RelayFanout(call=CALL, publisher=pub), [
        CallStarted(CALL),
        TranscriptPartial("t-1", "hola", 0.5, 0.9),
        CallerStartedSpeaking(0.4),
        CallEnded(CALL, "telnyx stop"),
        TranscriptFinal("t-1", "hola buenos días", 0.5, 1.6, True, 1.9),
    ])
    kinds = [(e["type"], e.get("state")) for e in pub.events]
    assert kinds == [("call", "started"), ("partial", None), ("final", None), ("call", "ended")]
    partial = pub.events[1]
    assert partial == {"type": "partial", "callId": "c9", "speaker": "customer", "turnId": "t-1",
                       "text": "hola", "tsStart": 500, "tsEnd": 900}
    assert pub.events[-1]["reason"] == "telnyx stop"
    assert pub.events[0]["callControlId"] == "v3:x" and pub.events[0]["streamId"] == "s9"
    for event in pub.events:  # everything we publish, the hub accepts
        relay.parse_event_body(relay.encode_publish(relay.from_wire(event)))


async def test_a_failing_relay_is_counted_and_never_raises(autojump_clock: object) -> None:
    fanout = RelayFanout(call=CALL, publisher=RecordingPublisher(fail=True))
    await feed(fanout, [CallStarted(CALL), TranscriptPartial("t-1", "x", 0, 1)])
    assert fanout.failed == 3 and fanout.published == 0  # started, partial, ended


async def test_a_stalled_relay_costs_at_most_the_publish_timeout(
        autojump_clock: object) -> None:
    fanout = RelayFanout(call=CALL, publisher=RecordingPublisher(stall=True),
                         publish_timeout_s=0.5)
    start = trio.current_time()
    await feed(fanout, [CallStarted(CALL)])
    assert fanout.failed == 2 and trio.current_time() - start == 1.0


async def test_the_call_is_announced_once_even_across_restarts(autojump_clock: object) -> None:
    pub = RecordingPublisher()
    fanout = RelayFanout(call=CALL, publisher=pub)
    await feed(fanout, [CallStarted(CALL), CallStarted(CALL)])
    await feed(fanout, [TranscriptPartial("t-1", "x", 0, 1)])  # a second incarnation
    assert [e.get("state") for e in pub.events] == ["started", "ended", None, "ended"]


async def test_replies_and_latency_become_relay_events(autojump_clock: object) -> None:
    from actors.messages import ReplySpoken, TurnLatency

    pub, observed = RecordingPublisher(), []
    stages = (("end_of_speech", 1.0), ("stt_final", 1.2), ("first_frame_sent", 1.5))
    await feed(RelayFanout(call=CALL, publisher=pub, on_latency=observed.append), [
        ReplySpoken("t-1", "r-1", "Claro.", interrupted=True),
        TurnLatency("t-1", stages),
    ])
    reply, latency = pub.events[1], pub.events[2]  # after "call started"
    assert reply == {"type": "reply", "callId": "c9", "turnId": "t-1", "text": "Claro.",
                     "interrupted": True}
    assert latency["type"] == "latency" and latency["stages"] == dict(stages)
    assert observed == [TurnLatency("t-1", stages)]
