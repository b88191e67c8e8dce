"""TelnyxTranscription: a webhook-mode call's ears, and the event that ends it.

With ``USE_MEDIA_STREAMS=false`` Telnyx transcribes the call itself (``transcription_start``) and
posts each result as a ``call.transcription`` webhook. The webhook route hands those to this actor
as :class:`~actors.telnyx_call_events.TranscriptionHeard`; it turns them into exactly the messages
an STT actor produces on a streaming call (``TranscriptPartial``, and ``TranscriptFinal`` with
``speech_final`` set: a Telnyx final closes the caller's turn), so the same Brain and RelayFanout
run unchanged. It plays the part TelnyxRx plays on a streaming call: it is the call's
*significant* child, and ``call.hangup`` (``CallHungUp``) ends it, so the call shuts down in
reverse start order with the hangup cause as the relay's ``call ended`` reason.
"""

from __future__ import annotations

import logging
from typing import Final

import attrs
import trio

from actors.messages import (BrainInput, CallEnded, CallInfo, CallStarted, RelayInput,
                             TranscriptFinal, TranscriptPartial)
from actors.telnyx_call_events import CallHungUp, TranscriptionEvent, TranscriptionHeard
from supervisor import ChildSpec, MailboxReceiver, MailboxSender, Restart, cleanup_scope

log = logging.getLogger(__name__)

__all__ = ["STOPPED_BY_SERVICE", "TelnyxTranscription", "hangup_reason"]

#: A drop-oldest mailbox (or a memory channel): sent to with ``send_nowait``, never waited on.
RelaySender = MailboxSender[RelayInput] | trio.MemorySendChannel[RelayInput]

STOPPED_BY_SERVICE: Final = "call stopped by the service"


def hangup_reason(cause: str | None) -> str:
    """The call's end reason for a ``call.hangup`` (the same words call control books)."""
    return f"hangup: {cause or 'unspecified'}"


@attrs.define(eq=False)
class TelnyxTranscription:
    """Receives Telnyx's transcription results and the call's hangup; feeds the Brain and relay.

    Receives (``inbox``, fed with ``send_nowait`` by the webhook route): `TranscriptionHeard`,
      `CallHungUp`. Empty transcripts are skipped.
    Sends: `TranscriptPartial` (interim results) and `TranscriptFinal` (``speech_final=True``) to
      ``transcripts_out`` (the Brain; awaited, its back-pressure) and to ``relay_out`` (drop-oldest,
      never awaited); `CallStarted` first and `CallEnded` last to ``relay_out``.
    On end of input or `CallHungUp`: returns (significant: the call ends), reporting
      ``CallEnded`` with ``hangup: <cause>`` — or "call stopped by the service" when stopped.
    On failure: nothing here talks to the network; anything raised is a bug. Transient.
    """

    call: CallInfo
    end_reason: str | None = None
    _turn: int = attrs.field(default=0, init=False)
    _turn_started_s: float | None = attrs.field(default=None, init=False)
    heard: int = attrs.field(default=0, init=False)

    def child_spec(self, *, inbox: MailboxReceiver[TranscriptionEvent],
                   transcripts_out: MailboxSender[BrainInput],
                   relay_out: MailboxSender[RelayInput],
                   name: str = "telnyx_transcription") -> ChildSpec:
        return ChildSpec(name=name, run=self.run,
                         channels={"inbox": inbox, "transcripts_out": transcripts_out,
                                   "relay_out": relay_out},
                         restart=Restart.TRANSIENT, significant=True, shutdown_s=1.0)

    async def run(self, inbox: trio.abc.ReceiveChannel[TranscriptionEvent], *,
                  transcripts_out: trio.abc.SendChannel[BrainInput],
                  relay_out: RelaySender,
                  task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with inbox:
            try:
                _offer(relay_out, CallStarted(self.call))
                task_status.started()
                async for msg in inbox:
                    if isinstance(msg, CallHungUp):
                        self.end_reason = msg.reason or hangup_reason(msg.cause)
                        return
                    if isinstance(msg, TranscriptionHeard):
                        await self._heard(msg, transcripts_out, relay_out)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                log.info("the Brain is gone; transcripts dropped",
                         extra={"call_id": self.call.call_id})
            finally:
                reason = self.end_reason or STOPPED_BY_SERVICE
                with cleanup_scope(1.0):
                    _offer(relay_out, CallEnded(self.call, reason))
                    await transcripts_out.aclose()
                    await relay_out.aclose()
                log.info("telnyx transcription ended", extra={"call_id": self.call.call_id,
                                                              "reason": reason,
                                                              "heard": self.heard})

    async def _heard(self, msg: TranscriptionHeard, transcripts_out: trio.abc.SendChannel[BrainInput],
                     relay_out: RelaySender) -> None:
        text = msg.text.strip()
        if not text:
            return
        self.heard += 1
        if self._turn_started_s is None:
            self._turn += 1
            self._turn_started_s = msg.call_time_s
        turn_id = f"tx-{self._turn}"
        start = self._turn_started_s
        transcript: TranscriptPartial | TranscriptFinal
        if msg.is_final:
            transcript = TranscriptFinal(turn_id=turn_id, text=text, start_s=start,
                                         end_s=msg.call_time_s, speech_final=True,
                                         received_at_s=msg.call_time_s)
            self._turn_started_s = None
        else:
            transcript = TranscriptPartial(turn_id=turn_id, text=text, start_s=start,
                                           end_s=msg.call_time_s)
        _offer(relay_out, transcript)
        await transcripts_out.send(transcript)


def _offer(channel: RelaySender, msg: RelayInput) -> None:
    """Relay events never block the call (the relay mailbox drops its oldest when full)."""
    try:
        channel.send_nowait(msg)
    except (trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError):
        pass
