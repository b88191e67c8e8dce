"""A booked call's life after the dial: watchdogs, going live, ending it, background work.

The half of call control that is not a route: :class:`CallLifecycle` holds the call book, the
call registry and the Telnyx client, and owns the background nursery (a lifespan service) where
slow webhook work runs — answering, hanging up, the media-stream watchdog (streaming mode) and
starting a call's actors (webhook mode). :class:`centralita.routes_calls.CallControl` adds the
routes on top.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, Final

import attrs
import trio

from actors.telnyx_control import TelnyxControl, TelnyxError
from centralita.call_book import BookedCall, CallBook, CallState
from centralita.calls import CallRegistry
from centralita.routes_media import StreamTokens
from centralita.webhook_calls import WebhookCalls

log = logging.getLogger("centralita.routes_calls")

__all__ = ["STREAM_CONNECT_TIMEOUT_S", "CallLifecycle"]

STREAM_CONNECT_TIMEOUT_S: Final = 10.0  # after call.answered, the media stream must be up by then


@attrs.define(eq=False, kw_only=True)
class CallLifecycle:
    """Ends, watches and starts booked calls; runs call control's background work."""

    book: CallBook
    registry: CallRegistry
    tokens: StreamTokens
    telnyx: TelnyxControl | None = None
    stream_connect_timeout_s: float = STREAM_CONNECT_TIMEOUT_S
    use_media_streams: bool = True
    webhook_calls: WebhookCalls | None = None  # webhook mode: set by the composition root
    _nursery: trio.Nursery | None = attrs.field(default=None, init=False)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Lifespan service: the nursery where slow webhook work and stream watchdogs run."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            try:
                task_status.started()
                await trio.sleep_forever()
            finally:
                self._nursery = None

    async def _watch_stream(self, call_id: str) -> None:
        """After ``call.answered``: no media stream within the timeout → hang up."""
        await trio.sleep(self.stream_connect_timeout_s)
        call = self.book.get(call_id)
        if call is None or call.ended or call.state is CallState.STREAMING:
            return
        if call_id in self.registry.calls:  # the stream is up; its webhook is late or lost
            return
        log.warning("media stream never connected: hanging up",
                    extra={"call_id": call_id, "timeout_s": self.stream_connect_timeout_s})
        self._abort(call, "stream never connected")

    async def _go_live(self, call_id: str) -> None:
        """Webhook mode, after ``call.answered``: the call's actors, then Telnyx transcription."""
        call = self.book.get(call_id)
        if call is None or call.ended or self.webhook_calls is None or self.telnyx is None:
            return
        problem, handle = await self.webhook_calls.start(call, self.telnyx)
        if handle is not None:
            self._spawn(self.webhook_calls.forget_when_done, handle)
        if problem is not None:
            log.error("webhook-mode call cannot go on: hanging up",
                      extra={"call_id": call_id, "reason": problem})
            self._abort(call, problem)
        elif not call.ended:
            self.book.advance(call, CallState.STREAMING)  # live: its actors hear and speak

    def _abort(self, call: BookedCall, reason: str) -> None:
        """End a call from our side: the book first (the hangup webhook only adds the cause)."""
        self._ended(call, hangup_cause=None, reason=reason)
        if call.call_control_id is not None:
            self._spawn(self._hangup_quietly, call.call_control_id, call.call_id)

    def _ended(self, call: BookedCall, *, hangup_cause: str | None, reason: str) -> None:
        first = self.book.end(call, hangup_cause=hangup_cause, reason=reason)
        self.tokens.issued.pop(call.stream_token, None)
        if self.webhook_calls is not None:  # its significant actor ends it, with the reason
            self.webhook_calls.hang_up(call.call_id, call.hangup_cause,
                                       call.end_reason or reason)
        handle = self.registry.calls.get(call.call_id)
        if handle is not None:  # the call's actors shut down gracefully, publishing 'ended'
            handle.stop(call.end_reason or reason)
        if first:
            log.info("call ended", extra={"call_id": call.call_id, "reason": call.end_reason,
                                          "hangup_cause": call.hangup_cause})

    async def _hangup_quietly(self, call_control_id: str, call_id: str | None) -> None:
        if self.telnyx is None:
            return
        try:
            await self.telnyx.hangup(call_control_id)
        except TelnyxError as exc:
            log.error("hangup failed", extra={"call_id": call_id, "error": str(exc)})

    def _spawn(self, fn: Callable[..., Awaitable[object]], *args: Any) -> None:
        if self._nursery is None:
            log.warning("call control not running: background work dropped",
                        extra={"work": getattr(fn, "__name__", repr(fn))})
            return
        self._nursery.start_soon(self._guarded, fn, *args)

    @staticmethod
    async def _guarded(fn: Callable[..., Awaitable[object]], *args: Any) -> None:
        """One call's background work failing (a bug) is logged; it never ends the service."""
        try:
            await fn(*args)
        except Exception:
            log.exception("call control background work failed",
                          extra={"work": getattr(fn, "__name__", repr(fn))})
