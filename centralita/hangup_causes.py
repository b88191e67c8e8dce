"""The relay's ``call ended`` event carries Telnyx's hangup cause, in both modes.

RelayFanout publishes ``{"type": "call", "state": "ended", "reason": …}`` when a call's actors
stop. Telnyx's ``call.hangup`` webhook says *why* the call ended (``hangup_cause``:
normal_clearing, user_busy, timeout …), but on a streaming call it races the media stream: Telnyx
sends ``stop`` and closes the socket, and the webhook may land just after the call's actors have
finished (the emulator always does it in that order; real Telnyx's order is UNCONFIRMED). So this
publisher, wrapped around the service's real one, adds ``hangupCause`` from the call book to that
one event, waiting up to :data:`HANGUP_CAUSE_WAIT_S` for the webhook when the stream ended on
Telnyx's side and the book has no end yet (well within RelayFanout's 2 s publish bound). Calls
stopped by the service (shutdown) or unknown to call control are published at once, unchanged.

Webhook-mode calls have no media stream: their empty ``streamId`` is left out.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Final

import attrs
import trio

from actors.ports import EventPublisher
from centralita.call_book import CallBook

__all__ = ["HANGUP_CAUSE_WAIT_S", "HangupCausePublisher"]

HANGUP_CAUSE_WAIT_S: Final = 1.0
#: TelnyxRx's end reasons when Telnyx ended the stream (a hangup webhook is on its way).
_ENDED_BY_TELNYX: Final = frozenset({"telnyx stop", "telnyx socket closed"})


@attrs.define(eq=False)
class HangupCausePublisher:
    """An :class:`EventPublisher` that completes ``call ended`` events from the call book."""

    inner: EventPublisher
    book: Callable[[], CallBook | None]
    wait_s: float = HANGUP_CAUSE_WAIT_S

    async def publish(self, call_id: str, event: Mapping[str, Any]) -> None:
        if event.get("type") == "call" and event.get("state") == "ended":
            event = await self._completed(call_id, dict(event))
        await self.inner.publish(call_id, event)

    async def _completed(self, call_id: str, event: dict[str, Any]) -> dict[str, Any]:
        if event.get("streamId") == "":
            del event["streamId"]
        book = self.book()
        call = book.get(call_id) if book is not None else None
        if call is None:
            return event
        if not call.ended and event.get("reason") in _ENDED_BY_TELNYX:
            with trio.move_on_after(self.wait_s):
                await call.ended_signal.wait()
        if call.hangup_cause is not None:
            event["hangupCause"] = call.hangup_cause
        return event
