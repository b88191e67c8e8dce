"""RelayFanout: a call's transcripts and lifecycle, published as relay events."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Final

import attrs
import trio

from actors.messages import (CallEnded, CallerStartedSpeaking, CallInfo, CallStarted, RelayInput,
                             ReplySpoken, TranscriptFinal, TranscriptPartial, TurnLatency,
                             UtteranceEnded)
from actors.ports import EventPublisher
from protocols import relay

log = logging.getLogger(__name__)

PUBLISH_TIMEOUT_S: Final = 2.0
RELAY_INBOX_EVENTS: Final = 64  # DROP_OLDEST: partials are superseded anyway


def _ms(seconds: float) -> int:
    return round(seconds * 1000)


@attrs.define(eq=False)
class RelayFanout:
    """Publishes what the call's actors report, for dashboards and the coach.

    Receives: ``TranscriptPartial``/``TranscriptFinal`` (published as the seed's ``partial``/
    ``final``, speaker ``customer``, times in call-time milliseconds), ``CallStarted`` and
    ``CallEnded`` (a ``call`` event each: ``started`` is published when RelayFanout itself starts,
    the first of the call's children, so it precedes every other event of the call), ``ReplySpoken`` (a ``reply``: what the bot said, as
    heard) and ``TurnLatency`` (a ``latency`` waterfall, also handed to ``on_latency`` — the
    service's Prometheus histograms).
    Sends: relay events through its :class:`EventPublisher` (the in-process hub, or an external
    relay's ``POST /event``).
    On end of input: publishes ``call`` ``ended`` — after every transcript that reached it, so a
    subscriber sees the last finals before the end — and returns.
    On failure: a publish that fails or takes longer than ``publish_timeout_s`` is logged and
    counted, never raised: a relay outage must not take a call down. Its inbox is DROP_OLDEST, so
    it never blocks the actors feeding it. Transient.
    """

    call: CallInfo
    publisher: EventPublisher
    publish_timeout_s: float = PUBLISH_TIMEOUT_S
    on_latency: Callable[[TurnLatency], None] | None = None
    published: int = 0
    failed: int = 0
    _ended: CallEnded | None = None
    _started_sent: bool = False

    async def run(self, inbox: trio.abc.ReceiveChannel[RelayInput], *,
                  task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with inbox:
            task_status.started()
            # Announce the call before anything else of it: the Brain greets (and publishes) as
            # soon as it starts, before TelnyxRx — the last child to start — could say so.
            await self._publish_started()
            async for msg in inbox:
                event = self._to_event(msg)
                if event is not None:
                    await self._publish(event)
        ended = self._ended or CallEnded(self.call, "call ended")
        await self._publish(relay.CallEvent(
            call_id=self.call.call_id, state="ended", call_control_id=self.call.call_control_id,
            stream_id=self.call.stream_id, reason=ended.reason))

    async def _publish_started(self) -> None:
        if self._started_sent:  # a restarted RelayFanout does not start the call twice
            return
        self._started_sent = True
        await self._publish(relay.CallEvent(call_id=self.call.call_id, state="started",
                                            call_control_id=self.call.call_control_id,
                                            stream_id=self.call.stream_id))

    def _to_event(self, msg: RelayInput) -> relay.RelayEvent | None:
        cid = self.call.call_id
        if isinstance(msg, TranscriptPartial):
            return relay.Partial(call_id=cid, speaker="customer", turn_id=msg.turn_id,
                                 text=msg.text, ts_start=_ms(msg.start_s), ts_end=_ms(msg.end_s))
        if isinstance(msg, TranscriptFinal):
            return relay.Final(call_id=cid, speaker="customer", turn_id=msg.turn_id,
                               text=msg.text, ts_start=_ms(msg.start_s), ts_end=_ms(msg.end_s))
        if isinstance(msg, CallStarted):
            return None  # announced when RelayFanout starts (first child of the call)
        if isinstance(msg, CallEnded):
            self._ended = msg  # published last, at end of input
            return None
        if isinstance(msg, ReplySpoken):
            return relay.Reply(call_id=cid, turn_id=msg.turn_id, text=msg.text,
                               interrupted=msg.interrupted)
        if isinstance(msg, TurnLatency):
            if self.on_latency is not None:
                self.on_latency(msg)
            return relay.Latency(call_id=cid, turn_id=msg.turn_id, stages=dict(msg.stages))
        if isinstance(msg, (CallerStartedSpeaking, UtteranceEnded)):
            return None  # turn-taking signals are for the Brain, not the dashboard
        return None

    async def _publish(self, event: relay.RelayEvent) -> None:
        try:
            with trio.fail_after(self.publish_timeout_s):
                await self.publisher.publish(self.call.call_id, relay.to_wire(event))
            self.published += 1
        except Exception as exc:  # noqa: BLE001 - a relay outage is logged, never fatal
            self.failed += 1
            log.warning("relay publish failed", extra={"call_id": self.call.call_id,
                                                       "error": type(exc).__name__})
