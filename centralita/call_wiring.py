"""Wiring one call: its mailboxes (capacity and overflow policy each) and its actors' child specs.

The bot call (DESIGN.md's graph)::

 Telnyx ─▶ TelnyxRx ──audio (50, drop_oldest)──▶ STT (DeepgramLink or LocalStt) ──transcripts──▶ Brain
              │  ├─dtmf──────────────────────────────────────────────────────────────────────▲  │
              │  └─marks──▶ Speaker ◀──Speak / ClearPlayback (64, block)─────────────────────┘  │
              │              └──reports (what was heard) ──▶ Brain inbox (128, block)           │
              └─call started/ended, transcripts, replies, latency ──▶ RelayFanout (64, drop_oldest)

With call control on, the Brain's ``Hangup`` (goodbye said) goes to a CallHangup actor (4, block)
that sends Telnyx ``hangup``; the ``call.hangup`` webhook then stops the call like any hangup.

Start order is sinks first (RelayFanout, Speaker, Brain, STT, TelnyxRx), so shutdown — reverse
order — stops the source first and lets the last transcripts and replies flow down before
RelayFanout publishes ``call ended``. TelnyxRx is significant: its end ends the call.

The webhook-mode call (``USE_MEDIA_STREAMS=false``, :func:`webhook_call`) has no socket: Telnyx
transcribes and plays, and its webhooks reach the call through a :class:`WebhookCallFeed`::

 webhook route ─call.transcription, call.hangup (32, fail: never blocks the route)─▶ TelnyxTranscription
   │                                          transcripts ──▶ Brain inbox (128, block) ◀── reports ─┐
   └─call.speak.* / call.playback.* ──▶ TelnyxPlayback inbox (64, block) ◀── Speak / ClearPlayback ─┘
                                            │ speak, or TTS → S3 → playback_start; playback_stop
 every actor ──call started/ended, partial, final, reply, latency──▶ RelayFanout (64, drop_oldest)

Same Brain, RelayFanout and CallHangup; TelnyxTranscription is the significant child (``call.hangup``
ends it, with the cause as the ``call ended`` reason).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Final, Protocol

import attrs
import trio

from actors.brain import Brain
from actors.call_control_link import CallHangup
from actors.deepgram_link import RESTART_BACKOFF, DeepgramLink
from actors.local_stt import LocalStt
from actors.messages import (AudioFrame, BrainInput, CallInfo, Hangup, RelayInput,
                             SpeakerInput, TurnLatency)
from actors.ports import EventPublisher, MediaSocket
from actors.relay_fanout import RELAY_INBOX_EVENTS, RelayFanout
from actors.speaker import Speaker
from actors.pocketsphinx_decoder import SphinxOptions
from actors.telnyx_call_events import (CallHungUp, PlaybackEvent, TranscriptionEvent,
                                       TranscriptionHeard)
from actors.telnyx_playback import PlaybackInput, TelnyxPlayback
from actors.telnyx_rx import TelnyxRx
from actors.telnyx_transcription import TelnyxTranscription
from supervisor import (AutoShutdown, ChildSpec, MailboxReceiver, MailboxSender, Overflow,
                        Restart, Strategy, SupervisorSpec, open_mailbox)

AUDIO_INBOX_FRAMES: Final = 50  # 1 s of 20 ms frames; older audio is worthless to STT
BRAIN_INBOX_EVENTS: Final = 128
SPEAKER_INBOX_EVENTS: Final = 64
CONTROL_INBOX_EVENTS: Final = 4  # the Brain's Hangup: one is enough, a few never block it
CALL_MAX_RESTARTS: Final = 5
CALL_RESTART_PERIOD_S: Final = 30.0
RELAY_FANOUT_SHUTDOWN_S: Final = 3.0
BRAIN_SHUTDOWN_S: Final = 2.0
SPEAKER_SHUTDOWN_S: Final = 3.0
TRANSCRIPTION_INBOX_EVENTS: Final = 32  # webhooks: a few a second at most
PLAYBACK_INBOX_EVENTS: Final = 64

log = logging.getLogger(__name__)


class SttFactory(Protocol):
    """Builds the call's STT actor (DeepgramLink or LocalStt) and its child spec."""

    def __call__(self, info: CallInfo, *, inbox: MailboxReceiver[AudioFrame],
                 transcripts_out: MailboxSender[BrainInput] | None,
                 relay_out: MailboxSender[RelayInput]) -> ChildSpec: ...


def deepgram_stt(listen_url: str, api_key: str, batch_frames: int = 1) -> SttFactory:
    def build(info: CallInfo, *, inbox: MailboxReceiver[AudioFrame],
              transcripts_out: MailboxSender[BrainInput] | None,
              relay_out: MailboxSender[RelayInput]) -> ChildSpec:
        link = DeepgramLink(call=info, listen_url=listen_url, api_key=api_key,
                            options=DeepgramLink.options_for(info, extra={"tag": info.call_id}),
                            batch_frames=batch_frames)
        return link.child_spec(inbox=inbox, transcripts_out=transcripts_out, relay_out=relay_out)
    return build


def local_stt(options: SphinxOptions) -> SttFactory:
    def build(info: CallInfo, *, inbox: MailboxReceiver[AudioFrame],
              transcripts_out: MailboxSender[BrainInput] | None,
              relay_out: MailboxSender[RelayInput]) -> ChildSpec:
        stt = LocalStt(call=info, options=options)
        return stt.child_spec(inbox=inbox, transcripts_out=transcripts_out, relay_out=relay_out)
    return build


BrainFactory = Callable[[CallInfo], Brain]
SpeakerFactory = Callable[[CallInfo, MediaSocket], Speaker]
# Call control's link for the Brain's Hangup; None when call control is off.
HangupFactory = Callable[[CallInfo], CallHangup | None]


def _call_spec(info: CallInfo, children: tuple[ChildSpec, ...]) -> SupervisorSpec:
    return SupervisorSpec(name=info.call_id, children=children, strategy=Strategy.ONE_FOR_ONE,
                          max_restarts=CALL_MAX_RESTARTS, period_s=CALL_RESTART_PERIOD_S,
                          backoff=RESTART_BACKOFF, auto_shutdown=AutoShutdown.ANY_SIGNIFICANT)


def _relay_fanout(info: CallInfo, publisher: EventPublisher,
                  on_latency: Callable[[TurnLatency], None] | None
                  ) -> tuple[MailboxSender[RelayInput], ChildSpec]:
    """Every call's RelayFanout: its drop-oldest mailbox (the sender) and its child spec."""
    relay_tx, relay_rx = open_mailbox[RelayInput](RELAY_INBOX_EVENTS, Overflow.DROP_OLDEST,
                                                  name=f"{info.call_id}/relay")
    fanout = RelayFanout(call=info, publisher=publisher, on_latency=on_latency)
    return relay_tx, ChildSpec(name="relay_fanout", run=fanout.run, channels={"inbox": relay_rx},
                               restart=Restart.TRANSIENT, shutdown_s=RELAY_FANOUT_SHUTDOWN_S)


def _control_lane(info: CallInfo, hangup: HangupFactory | None
                  ) -> tuple[tuple[ChildSpec, ...], dict[str, MailboxSender[Hangup]]]:
    """The Brain's hangup lane when ``hangup`` gives a :class:`CallHangup`: the link's child spec
    and the Brain's ``control_out`` channel; else nothing (the Brain has no control lane)."""
    link = hangup(info) if hangup is not None else None
    if link is None:
        return (), {}
    control_tx, control_rx = open_mailbox[Hangup](CONTROL_INBOX_EVENTS, Overflow.BLOCK,
                                                  name=f"{info.call_id}/control")
    return (link.child_spec(inbox=control_rx),), {"control_out": control_tx}


def listening_call(info: CallInfo, socket: MediaSocket, start_sequence_number: int, *,
                   stt: SttFactory, publisher: EventPublisher,
                   on_latency: Callable[[TurnLatency], None] | None = None) -> SupervisorSpec:
    """A call that only listens: transcripts out to the relay (coach dashboards)."""
    cid = info.call_id
    audio_tx, audio_rx = open_mailbox[AudioFrame](AUDIO_INBOX_FRAMES, Overflow.DROP_OLDEST,
                                                  name=f"{cid}/audio")
    relay_tx, relay_child = _relay_fanout(info, publisher, on_latency)
    rx = TelnyxRx(socket=socket, call=info, first_sequence_number=start_sequence_number)
    return _call_spec(info, (
        relay_child,
        stt(info, inbox=audio_rx, transcripts_out=None, relay_out=relay_tx.clone()),
        ChildSpec(name="telnyx_rx", run=rx.run,
                  channels={"audio_out": audio_tx, "relay_out": relay_tx},
                  restart=Restart.TRANSIENT, significant=True, shutdown_s=0.0),
    ))


def bot_call(info: CallInfo, socket: MediaSocket, start_sequence_number: int, *,
             stt: SttFactory, brain: BrainFactory, speaker: SpeakerFactory,
             publisher: EventPublisher,
             on_latency: Callable[[TurnLatency], None] | None = None,
             hangup: HangupFactory | None = None) -> SupervisorSpec:
    """A call the bot answers: listens, thinks, speaks back over the same socket.

    ``hangup``: when it gives a :class:`CallHangup`, the Brain's ``control_out`` goes to it (a
    ``Hangup`` after the goodbye becomes a Telnyx hangup); else the Brain has no control lane.
    """
    cid = info.call_id
    audio_tx, audio_rx = open_mailbox[AudioFrame](AUDIO_INBOX_FRAMES, Overflow.DROP_OLDEST,
                                                  name=f"{cid}/audio")
    brain_tx, brain_rx = open_mailbox[BrainInput](BRAIN_INBOX_EVENTS, Overflow.BLOCK,
                                                  name=f"{cid}/brain")
    speaker_tx, speaker_rx = open_mailbox[SpeakerInput](SPEAKER_INBOX_EVENTS, Overflow.BLOCK,
                                                        name=f"{cid}/speaker")
    relay_tx, relay_child = _relay_fanout(info, publisher, on_latency)
    the_speaker = speaker(info, socket)
    the_brain = brain(info)
    rx = TelnyxRx(socket=socket, call=info, first_sequence_number=start_sequence_number)
    control, brain_control = _control_lane(info, hangup)
    return _call_spec(info, (
        relay_child,
        *control,
        ChildSpec(name="speaker", run=the_speaker.run,
                  channels={"inbox": speaker_rx, "reports_out": brain_tx.clone()},
                  restart=Restart.PERMANENT, shutdown_s=SPEAKER_SHUTDOWN_S),
        ChildSpec(name="brain", run=the_brain.run,
                  channels={"inbox": brain_rx, "speaker_out": speaker_tx.clone(),
                            "relay_out": relay_tx.clone(), **brain_control},
                  restart=Restart.PERMANENT, shutdown_s=BRAIN_SHUTDOWN_S),
        stt(info, inbox=audio_rx, transcripts_out=brain_tx.clone(), relay_out=relay_tx.clone()),
        ChildSpec(name="telnyx_rx", run=rx.run,
                  channels={"audio_out": audio_tx, "dtmf_out": brain_tx,
                            "marks_out": speaker_tx, "relay_out": relay_tx},
                  restart=Restart.TRANSIENT, significant=True, shutdown_s=0.0),
    ))


PlaybackFactory = Callable[[CallInfo], TelnyxPlayback]


@attrs.define(eq=False)
class WebhookCallFeed:
    """Call control's way into a webhook-mode call: Telnyx's events, handed over without waiting.

    Every ``offer_*`` is a ``send_nowait`` (the webhook route must answer Telnyx at once); a full
    or closed mailbox drops the event, counts it and says so with False.
    """

    call_id: str
    transcriptions: MailboxSender[TranscriptionEvent]
    playback: MailboxSender[PlaybackInput]
    dropped: int = 0

    def offer_transcription(self, msg: TranscriptionHeard) -> bool:
        return self._offer(self.transcriptions, msg)

    def offer_playback(self, msg: PlaybackEvent) -> bool:
        return self._offer(self.playback, msg)

    def hang_up(self, cause: str | None, reason: str) -> bool:
        """The call is over (its significant child returns with ``reason``)."""
        return self._offer(self.transcriptions, CallHungUp(cause, reason))

    def _offer(self, channel: MailboxSender[TranscriptionEvent] | MailboxSender[PlaybackInput],
               msg: TranscriptionEvent | PlaybackInput) -> bool:
        try:
            channel.send_nowait(msg)  # type: ignore[arg-type]
        except (trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError):
            self.dropped += 1
            log.warning("webhook event dropped: the call is not taking it",
                        extra={"call_id": self.call_id, "event": type(msg).__name__,
                               "dropped": self.dropped})
            return False
        return True

    def close(self) -> None:
        self.transcriptions.close()
        self.playback.close()


def webhook_call(info: CallInfo, *, brain: BrainFactory, playback: PlaybackFactory,
                 publisher: EventPublisher,
                 on_latency: Callable[[TurnLatency], None] | None = None,
                 hangup: HangupFactory | None = None) -> tuple[SupervisorSpec, WebhookCallFeed]:
    """A webhook-mode call the bot answers (see the module docstring); returns its spec and the
    feed call control routes the call's webhooks through."""
    cid = info.call_id
    brain_tx, brain_rx = open_mailbox[BrainInput](BRAIN_INBOX_EVENTS, Overflow.BLOCK,
                                                  name=f"{cid}/brain")
    play_tx, play_rx = open_mailbox[PlaybackInput](PLAYBACK_INBOX_EVENTS, Overflow.BLOCK,
                                                   name=f"{cid}/playback")
    heard_tx, heard_rx = open_mailbox[TranscriptionEvent](TRANSCRIPTION_INBOX_EVENTS, Overflow.FAIL,
                                                          name=f"{cid}/transcription")
    relay_tx, relay_child = _relay_fanout(info, publisher, on_latency)
    the_brain = brain(info)
    player = playback(info)
    ears = TelnyxTranscription(call=info)
    control, brain_control = _control_lane(info, hangup)
    feed = WebhookCallFeed(call_id=cid, transcriptions=heard_tx.clone(), playback=play_tx.clone())
    spec = _call_spec(info, (
        relay_child,
        *control,
        player.child_spec(inbox=play_rx, reports_out=brain_tx.clone()),
        ChildSpec(name="brain", run=the_brain.run,
                  channels={"inbox": brain_rx, "speaker_out": play_tx,
                            "relay_out": relay_tx.clone(), **brain_control},
                  restart=Restart.PERMANENT, shutdown_s=BRAIN_SHUTDOWN_S),
        ears.child_spec(inbox=heard_rx, transcripts_out=brain_tx, relay_out=relay_tx),
    ))
    heard_tx.close()
    return spec, feed
