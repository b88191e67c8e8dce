"""The Telnyx API emulator's far end: a call's life, its media streams, speak, playback and
transcription, each emitting the webhooks Telnyx would (telnyx.md §4, §6)."""

from __future__ import annotations

import math
import uuid
from collections.abc import Awaitable, Callable, Mapping
from functools import partial
from typing import Any

import httpx
import trio
from trio_websocket import HandshakeError

from bench.emulators.telnyx_api.checks import _audio_duration_s, _stream_format
from bench.emulators.telnyx_api.records import (
    _FAILED_OUTCOMES,
    _QUALITY_STATS,
    CALLER_MAX_CALL_S,
    MEDIA_NAME_DURATION_S,
    PLAYBACK_FETCH_TIMEOUT_S,
    SPEAK_CHARS_PER_S,
    TEARDOWN_TIMEOUT_S,
    EmulatedCall,
    EmulatedStream,
    PlaybackFetch,
    _Activity,
    _now_iso,
    _StreamingCaller,
    log,
)
from bench.emulators.telnyx_api.webhooks import WebhookSender
from bench.emulators.telnyx_caller import CallerRecord
from protocols.jsonwire import b64decode
from protocols.telnyx_call_control import (
    CallAnswered,
    CallHangup,
    CallInitiated,
    CallPlaybackEnded,
    CallPlaybackStarted,
    CallSpeakEnded,
    CallSpeakStarted,
    CallTranscription,
    StreamingFailed,
    StreamingStarted,
    StreamingStopped,
    StreamParams,
    TranscriptionData,
    WebhookEvent,
    WebhookPayload,
)


class FarEnd(WebhookSender):
    """Mixin of :class:`~bench.emulators.telnyx_api.TelnyxApiEmulator`: runs each call's far end."""

    # Set by the emulator (attrs fields there).
    speed: float
    stream_never_connects: bool
    playback_duration_s: float | None


    async def _run_call(self, call: EmulatedCall, *, task_status: trio.TaskStatus[None]) -> None:
        outbox, inbox = trio.open_memory_channel[WebhookEvent](math.inf)
        call._outbox = outbox  # noqa: SLF001
        async with trio.open_nursery() as nursery:
            call._nursery = nursery  # noqa: SLF001
            nursery.start_soon(self._deliver_all, call, inbox)
            task_status.started()
            with outbox:
                await self._lifecycle(call)
        call.finished.set()
        call._touch()  # noqa: SLF001

    async def _wait(self, event: trio.Event, call_s: float | None) -> bool:
        """Wait ``call_s`` of call time (None: forever) or until ``event``; True if it was set."""
        with trio.move_on_after(math.inf if call_s is None else call_s / self.speed):
            await event.wait()
        return event.is_set()

    async def _lifecycle(self, call: EmulatedCall) -> None:
        script, outgoing = call.script, call.direction == "outgoing"
        self._emit(call, "call.initiated", CallInitiated(
            **call._ids(), direction=call.direction, state=call.state, from_=call.from_,  # noqa: SLF001
            to=call.to, start_time=call.start_time,
        ))  # fmt: skip
        dial_body = call.dial_body or {}
        if outgoing:
            ring_s, timeout_s = script.answer_after_s, dial_body.get("timeout_secs")
            timed_out = timeout_s is not None and ring_s > timeout_s
            if await self._wait(call._hangup_requested, timeout_s if timed_out else ring_s):  # noqa: SLF001
                await self._end(call, "originator_cancel", "caller", "487")
                return
            if timed_out or script.outcome in _FAILED_OUTCOMES:
                cause, sip = _FAILED_OUTCOMES["no_answer" if timed_out else script.outcome]
                await self._end(call, cause, "callee", sip)
                return
            call.state = "answered"
            params = call.dial_body or {}
        else:
            await self._wait(call._answer_or_hangup, script.give_up_after_s)  # noqa: SLF001
            if call._hangup_requested.is_set():  # noqa: SLF001 - we refused it unanswered
                await self._end(call, "normal_clearing", "callee", "unspecified")
                return
            if call.state != "answered":
                await self._end(call, "originator_cancel", "caller", "487")
                return
            params = call._answer_params or {}  # noqa: SLF001
        call.answered_at = trio.current_time()
        self._emit(call, "call.answered", CallAnswered(
            **call._ids(), state="answered", from_=call.from_, to=call.to,  # noqa: SLF001
            start_time=call.start_time, codec="PCMU", sampling_rate=8000,
        ))  # fmt: skip
        if params.get("stream_url") is not None:
            assert call._nursery is not None  # noqa: SLF001
            call._nursery.start_soon(self._stream, call, params)  # noqa: SLF001
        hangup_s, limit_s = script.hangup_after_s, dial_body.get("time_limit_secs")
        limited = limit_s is not None and (hangup_s is None or limit_s < hangup_s)
        if await self._wait(call._hangup_requested, limit_s if limited else hangup_s):  # noqa: SLF001
            await self._end(call, "normal_clearing", "caller" if outgoing else "callee", "unspecified")
        elif limited:
            await self._end(call, "time_limit", "unknown", "unspecified")
        else:
            await self._end(call, "normal_clearing", "callee" if outgoing else "caller", "unspecified")

    async def _end(self, call: EmulatedCall, cause: str, source: str, sip_cause: str) -> None:
        """Stop media (ended webhooks first), let the caller send ``stop``, then ``call.hangup``."""
        call.state = "hangup"
        call.hangup_cause, call.hangup_source = cause, source
        call.ended_at = trio.current_time()
        activities = list(call._activities)  # noqa: SLF001
        for activity in activities:
            activity.stop("call_hangup")
        for stream in call.streams:
            stream.hang_up()
        waitables: list[_Activity | EmulatedStream] = [*activities, *call.streams]
        with trio.move_on_after(TEARDOWN_TIMEOUT_S):
            for waitable in waitables:
                await waitable.done.wait()
        for stream in call.streams:
            stream._scope.cancel()  # noqa: SLF001 - a caller that did not close in time
        self._emit(call, "call.hangup", CallHangup(
            **call._ids(), hangup_cause=cause, hangup_source=source,  # noqa: SLF001
            sip_hangup_cause=sip_cause, state="hangup", from_=call.from_, to=call.to,
            start_time=call.start_time,
            call_quality_stats=dict(_QUALITY_STATS) if call.answered_at is not None else None,
        ))  # fmt: skip
        for stream in call.streams:
            self._report_stopped(call, stream)

    def _emit(self, call: EmulatedCall, event_type: str, payload: WebhookPayload) -> None:
        event = WebhookEvent(id=str(uuid.uuid4()), event_type=event_type, payload=payload,
                             occurred_at=_now_iso())  # fmt: skip
        call.webhooks.append(event)
        call._touch()  # noqa: SLF001
        try:
            assert call._outbox is not None  # noqa: SLF001
            call._outbox.send_nowait(event)  # noqa: SLF001
        except trio.ClosedResourceError:
            log.debug("call %s ended: %s not delivered", call.call_control_id, event_type)

    # -- media streams ------------------------------------------------------------------------

    async def _stream(self, call: EmulatedCall, params: Mapping[str, Any]) -> None:
        stream = EmulatedStream(stream_id=str(uuid.uuid4()), stream_url=params["stream_url"], params=params)
        call.streams.append(stream)
        try:
            with stream._scope:  # noqa: SLF001
                if self.stream_never_connects:
                    stream.failure = "stream_never_connects (fault)"
                    await trio.sleep_forever()
                try:
                    codec, rate = _stream_format(params)
                except ValueError:
                    codec_name = params.get("stream_codec") or params.get("stream_bidirectional_codec")
                    self._stream_failed(call, stream, f"emulator cannot stream {codec_name!r}")
                    return
                options: dict[str, Any] = {"hangup_after_s": CALLER_MAX_CALL_S, "speed": self.speed,
                                           **call.script.caller_options}  # fmt: skip
                custom = params.get("custom_parameters")
                if type(custom) is list:
                    options["custom_parameters"] = {
                        p["name"]: p["value"]
                        for p in custom
                        if type(p) is dict and {"name", "value"} <= p.keys()
                    }
                stream.caller = _StreamingCaller(
                    stream.stream_url, token=params.get("stream_auth_token"), codec=codec,
                    sample_rate_hz=rate, audio=call.script.audio, dtmf=call.script.dtmf,
                    from_=call.from_, to=call.to, client_state=call.client_state,
                    stream_id=stream.stream_id, call_control_id=call.call_control_id,
                    call_session_id=call.call_session_id,
                    on_streaming=partial(self._stream_started, call, stream), **options,
                )  # fmt: skip
                try:
                    stream.record = await stream.caller.run()
                except (OSError, HandshakeError, trio.BrokenResourceError, ValueError) as exc:
                    self._stream_failed(call, stream, f"{type(exc).__name__}: {exc}")
                    return
        finally:
            stream.ended_at = trio.current_time()
            stream.done.set()
        if call.alive:  # ended by streaming_stop or by the service: the call goes on
            self._report_stopped(call, stream)

    def _stream_started(self, call: EmulatedCall, stream: EmulatedStream, record: CallerRecord) -> None:
        stream.record, stream.started_at = record, trio.current_time()
        self._emit(call, "streaming.started", StreamingStarted(
            **call._ids(), stream_url=stream.stream_url, stream_id=stream.stream_id,  # noqa: SLF001
        ))  # fmt: skip

    def _stream_failed(self, call: EmulatedCall, stream: EmulatedStream, detail: str) -> None:
        stream.failure = f"connection_failed: {detail}"
        self._emit(call, "streaming.failed", StreamingFailed(
            **call._ids(), failure_reason="connection_failed", stream_id=stream.stream_id,  # noqa: SLF001
            stream_type="websocket",
            stream_params=StreamParams(stream_url=stream.stream_url, track=stream.params.get("stream_track")),
        ))  # fmt: skip

    def _report_stopped(self, call: EmulatedCall, stream: EmulatedStream) -> None:
        if stream.started_at is None or stream._stopped_reported:  # noqa: SLF001
            return
        stream._stopped_reported = True  # noqa: SLF001
        self._emit(call, "streaming.stopped", StreamingStopped(
            **call._ids(), stream_url=stream.stream_url, stream_id=stream.stream_id,  # noqa: SLF001
        ))  # fmt: skip

    # -- speak, playback, transcription ---------------------------------------------------------

    async def _activity(
        self,
        call: EmulatedCall,
        activity: _Activity,
        run: Callable[[EmulatedCall, _Activity, Mapping[str, Any]], Awaitable[None]],
        body: Mapping[str, Any],
    ) -> None:
        try:
            await run(call, activity, body)
        finally:
            call._activities.remove(activity)  # noqa: SLF001
            activity.done.set()

    async def _speak(self, call: EmulatedCall, activity: _Activity, body: Mapping[str, Any]) -> None:
        self._emit(call, "call.speak.started", CallSpeakStarted(**call._ids()))  # noqa: SLF001
        with activity.scope:
            await trio.sleep(len(body["payload"]) / SPEAK_CHARS_PER_S / self.speed)
            activity.finish("completed")
        self._emit(call, "call.speak.ended", CallSpeakEnded(
            **call._ids(), status=activity.end_status,  # noqa: SLF001
        ))  # fmt: skip

    async def _playback(self, call: EmulatedCall, activity: _Activity, body: Mapping[str, Any]) -> None:
        url, name, overlay = body.get("audio_url"), body.get("media_name"), body.get("overlay")
        overlay = overlay if type(overlay) is bool else None
        detail: str | None = None
        with activity.scope:
            if url is not None:
                fetch = await self._fetch(url)
                call.playback_fetches.append(fetch)
                call._touch()  # noqa: SLF001
                if not fetch.ok:
                    activity.finish("file_not_found")
                    detail = fetch.error or f"HTTP {fetch.status}"
                content = fetch.content
            elif name is not None:
                content = b""
            else:
                content = b64decode(body["playback_content"])
            if activity.end_status is None:
                self._emit(call, "call.playback.started", CallPlaybackStarted(
                    **call._ids(), media_url=url, media_name=name, overlay=overlay,  # noqa: SLF001
                ))  # fmt: skip
                duration = self.playback_duration_s
                if duration is None:
                    duration = MEDIA_NAME_DURATION_S if name is not None else _audio_duration_s(content)
                loop = body.get("loop", 1)
                if loop == "infinity":
                    await trio.sleep_forever()
                await trio.sleep(duration * (loop if type(loop) is int else 1) / self.speed)
                activity.finish("completed")
        self._emit(call, "call.playback.ended", CallPlaybackEnded(
            **call._ids(), media_url=url, media_name=name, overlay=overlay,  # noqa: SLF001
            status=activity.end_status, status_detail=detail,
        ))  # fmt: skip

    async def _fetch(self, url: str) -> PlaybackFetch:
        assert self._client is not None
        at = trio.current_time()
        try:
            response = await self._client.get(url, timeout=PLAYBACK_FETCH_TIMEOUT_S, follow_redirects=True)
        except httpx.HTTPError as exc:
            return PlaybackFetch(at, url, None, b"", f"{type(exc).__name__}: {exc}")
        return PlaybackFetch(at, url, response.status_code, response.content)

    async def _transcribe(self, call: EmulatedCall, activity: _Activity, body: Mapping[str, Any]) -> None:
        track = body.get("transcription_tracks") or "inbound"
        started = trio.current_time()
        with activity.scope:
            for item in sorted(call.script.transcripts, key=lambda t: t.at_s):
                await trio.sleep_until(started + item.at_s / self.speed)
                self._emit(call, "call.transcription", CallTranscription(
                    **call._ids(),  # noqa: SLF001
                    transcription_data=TranscriptionData(
                        transcript=item.transcript, is_final=item.is_final,
                        confidence=float(item.confidence), transcription_track=track,
                    ),
                ))  # fmt: skip
            activity.finish("completed")

