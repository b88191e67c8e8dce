"""Webhook mode (``USE_MEDIA_STREAMS=false``): calls without a media stream.

The seed's rollback switch. A call is dialled (or answered) with no ``stream_url``; once Telnyx
says ``call.answered`` the call's actors start in the call registry exactly like a streaming
call's (same Brain, same RelayFanout, same hangup link), then ``transcription_start`` makes Telnyx
transcribe the caller. From then on the webhook route hands this module the call's
``call.transcription``, ``call.speak.*``, ``call.playback.*`` and ``call.hangup`` events, and
:class:`WebhookCalls` passes them to the call's actors through its
:class:`~centralita.call_wiring.WebhookCallFeed` — synchronously, with non-blocking sends, so the
webhook's 200 never waits on a call. Replies go out through :class:`actors.telnyx_playback.
TelnyxPlayback` (Telnyx ``speak``, or our TTS → S3 → ``playback_start``).

Only ``inbound`` transcription results are the caller's words (we ask for the inbound track; an
``outbound`` result, if Telnyx sent one, would be the bot hearing itself).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any, Final

import attrs
import trio

from actors.messages import CallInfo
from actors.telnyx_call_events import PlaybackEnded, PlaybackStarted, TranscriptionHeard
from actors.telnyx_control import TelnyxApiError, TelnyxControl, TelnyxError
from centralita.call_book import BookedCall
from centralita.call_wiring import WebhookCallFeed
from centralita.calls import CallHandle, CallRegistry, CallsUnavailable
from protocols import telnyx_call_control as cc
from protocols.audio import AudioFormat, Codec
from supervisor import ChildStartFailed, SupervisorSpec

log = logging.getLogger(__name__)

__all__ = ["WEBHOOK_AUDIO_FORMAT", "BuildWebhookCall", "WebhookCalls", "transcription_fields"]

#: What our TTS renders for S3 (then written as 16-bit PCM WAV at 8 kHz).
WEBHOOK_AUDIO_FORMAT: Final = AudioFormat(Codec.PCMU, 8000)

BuildWebhookCall = Callable[[CallInfo], tuple[SupervisorSpec, WebhookCallFeed]]


def transcription_fields(engine: str, model: str | None, language: str) -> dict[str, Any]:
    """``transcription_start``'s body: the caller's track, the engine, its model and language."""
    config: dict[str, Any] = {"transcription_engine": engine, "language": language}
    if model:
        config["transcription_model"] = model
    return {"transcription_engine": engine, "transcription_tracks": "inbound",
            "transcription_engine_config": config}


@attrs.define(eq=False)
class _Live:
    info: CallInfo
    feed: WebhookCallFeed


@attrs.define(eq=False)
class WebhookCalls:
    """Starts webhook-mode calls and routes their webhooks to their actors."""

    registry: CallRegistry
    build: BuildWebhookCall
    transcription: Mapping[str, Any] = attrs.field(factory=dict)
    _live: dict[str, _Live] = attrs.field(factory=dict, init=False)

    def live_feed(self, call_id: str) -> WebhookCallFeed | None:
        live = self._live.get(call_id)
        return None if live is None else live.feed

    async def start(self, call: BookedCall, telnyx: TelnyxControl
                    ) -> tuple[str | None, CallHandle | None]:
        """Start the call's actors, then Telnyx's transcription. Returns a problem (the call
        must be hung up) or None once the call is live, and the call's handle if it started;
        the caller waits on the handle with :meth:`forget_when_done`."""
        assert call.call_control_id is not None
        info = CallInfo(call_id=call.call_id, call_control_id=call.call_control_id,
                        stream_id="", audio_format=WEBHOOK_AUDIO_FORMAT,
                        started_at=trio.current_time(), callee_name=call.nombre)

        def build() -> SupervisorSpec:
            spec, feed = self.build(info)
            self._live[info.call_id] = _Live(info, feed)
            return spec

        extra = {"call_id": call.call_id}
        try:
            handle = await self.registry.start_call(info, build)
        except CallsUnavailable:
            self._forget(call.call_id)
            return "the service is shutting down", None
        except ChildStartFailed as exc:
            self._forget(call.call_id)
            log.error("webhook-mode call failed to start", extra={**extra, "error": str(exc)})
            return f"call could not start: {exc}", None
        if call.ended:  # hung up while the actors were starting
            self.hang_up(call.call_id, call.hangup_cause, call.end_reason or "ended")
            handle.stop(call.end_reason or "ended")
            return None, handle
        try:
            await telnyx.transcription_start(call.call_control_id, client_state=call.call_id,
                                             **self.transcription)
        except TelnyxError as exc:
            if isinstance(exc, TelnyxApiError) and exc.errors.call_has_ended:
                return None, handle  # call.hangup is on its way and ends the call
            log.error("transcription_start failed: the bot cannot hear the caller",
                      extra={**extra, "error": str(exc)})
            return f"transcription could not start: {exc}", handle
        log.info("webhook-mode call live", extra={**extra,
                                                   "call_control_id": call.call_control_id})
        return None, handle

    async def forget_when_done(self, handle: CallHandle) -> None:
        """The feed goes when the call's supervisor ends, whoever ended it."""
        await handle.done.wait()
        self._forget(handle.info.call_id)

    def route(self, call: BookedCall, payload: cc.WebhookPayload, event_id: str) -> None:
        """Hand one of the call's events to its actors (never blocks)."""
        live = self._live.get(call.call_id)
        if live is None:
            log.info("webhook-mode event for a call that is not live", extra={
                "call_id": call.call_id, "webhook_id": event_id,
                "event": type(payload).__name__})
            return
        now = trio.current_time() - live.info.started_at
        match payload:
            case cc.CallTranscription(transcription_data=data):
                if data.transcription_track not in (None, "inbound"):
                    return
                live.feed.offer_transcription(TranscriptionHeard(
                    text=data.transcript, is_final=data.is_final, confidence=data.confidence,
                    call_time_s=now))
            case cc.CallSpeakStarted():
                live.feed.offer_playback(PlaybackStarted("speak", None, now))
            case cc.CallSpeakEnded(status=status):
                live.feed.offer_playback(PlaybackEnded("speak", None, status, now))
            case cc.CallPlaybackStarted(media_url=url):
                live.feed.offer_playback(PlaybackStarted("playback", url, now))
            case cc.CallPlaybackEnded(media_url=url, status=status):
                live.feed.offer_playback(PlaybackEnded("playback", url, status, now))
            case _:
                pass

    def hang_up(self, call_id: str, cause: str | None, reason: str) -> bool:
        """The call is over (``call.hangup``, or ended from our side): its significant actor
        ends it with ``reason`` as the relay's end reason (True if it was told)."""
        live = self._live.get(call_id)
        return live is not None and live.feed.hang_up(cause, reason)

    def _forget(self, call_id: str) -> None:
        live = self._live.pop(call_id, None)
        if live is not None:
            live.feed.close()
