"""TelnyxTranscription: Telnyx's ``call.transcription`` results become the STT messages the Brain
takes, and ``call.hangup`` ends the (webhook-mode) call with its cause. No sockets: trio time."""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager

import trio

from actors.messages import CallEnded, CallInfo, CallStarted, TranscriptFinal, TranscriptPartial
from actors.telnyx_call_events import CallHungUp, TranscriptionHeard
from actors.telnyx_transcription import TelnyxTranscription
from protocols.audio import PCMU_8K
from tests.actors.harness import ActorUnderTest, assert_actor_contract, open_actor

CALL = CallInfo(call_id="call-1", call_control_id="v3:call", stream_id="", audio_format=PCMU_8K)


def heard(text: str, at: float, final: bool = True) -> TranscriptionHeard:
    return TranscriptionHeard(text=text, is_final=final, confidence=0.9, call_time_s=at)


async def test_results_become_turns_and_the_hangup_ends_the_call(
        autojump_clock: trio.testing.MockClock) -> None:
    ears = TelnyxTranscription(call=CALL)
    async with open_actor(ears.run, outputs=("transcripts_out", "relay_out")) as actor:
        await actor.feed([heard("quiero", 1.0, final=False), heard("quiero saber mi saldo", 1.5),
                          heard("  ", 2.0), heard("gracias", 4.0),
                          CallHungUp("normal_clearing", "hangup: normal_clearing")])
        await actor.wait_done()
    assert actor.returned
    assert actor.received["transcripts_out"] == [
        TranscriptPartial("tx-1", "quiero", 1.0, 1.0),
        TranscriptFinal("tx-1", "quiero saber mi saldo", 1.0, 1.5, speech_final=True,
                        received_at_s=1.5),
        TranscriptFinal("tx-2", "gracias", 4.0, 4.0, speech_final=True, received_at_s=4.0),
    ]
    relay = actor.received["relay_out"]
    assert relay[0] == CallStarted(CALL)
    assert relay[1:-1] == actor.received["transcripts_out"]
    assert relay[-1] == CallEnded(CALL, "hangup: normal_clearing")


async def test_stopped_by_the_service_says_so(autojump_clock: trio.testing.MockClock) -> None:
    async with open_actor(TelnyxTranscription(call=CALL).run,
                          outputs=("transcripts_out", "relay_out")) as actor:
        actor.end_input()
        await actor.wait_done()
    assert actor.received["relay_out"][-1] == CallEnded(CALL, "call stopped by the service")


async def test_actor_contract(autojump_clock: trio.testing.MockClock) -> None:
    def start() -> AbstractAsyncContextManager[ActorUnderTest]:
        return open_actor(TelnyxTranscription(call=CALL).run,
                          outputs=("transcripts_out", "relay_out"))

    async def provoke(actor: ActorUnderTest) -> None:
        await actor.feed([heard("hola", 1.0)])
        await trio.sleep(0.1)

    await assert_actor_contract(start, provoke=provoke)
