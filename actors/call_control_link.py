"""The Brain's "goodbye said" turned into a Telnyx hangup: the call's link to call control.

The Brain only decides; ending the call is call control's job. :class:`CallHangup` receives the
Brain's `Hangup` and sends the Call Control ``hangup`` command for the call's
``call_control_id`` (from the ``start`` frame). It does not stop the call itself: Telnyx answers
with a ``call.hangup`` webhook and closes the media stream, and the webhook route stops the
call's supervisor with the hangup cause — one way for a call to end, whoever hung up.
"""

from __future__ import annotations

import logging
from typing import Any, Final, Protocol

import attrs
import trio

from actors.messages import CallInfo, Hangup
from actors.telnyx_control import TelnyxError
from supervisor import ChildSpec, MailboxReceiver, Restart

log = logging.getLogger(__name__)

__all__ = ["CALL_HANGUP_SHUTDOWN_S", "CallHangup", "HangupCommand"]

# A hangup in flight may need a resend (0.5 s) and a full timeout (2 s): let it finish.
CALL_HANGUP_SHUTDOWN_S: Final = 3.0


class HangupCommand(Protocol):
    """What the link needs from call control (``TelnyxControl`` has it)."""

    async def hangup(self, call_control_id: str, **fields: Any) -> object: ...


@attrs.define(eq=False)
class CallHangup:
    """Receives `Hangup` (from the Brain's ``control_out``); sends Telnyx ``hangup`` for the call.

    Receives (``inbox``): `Hangup`. The first one sends the command (an already-ended call counts
      as done); later ones are ignored, unless the command failed, in which case the next one
      tries again.
    Sends: nothing on channels; one Call Control ``hangup`` over HTTP.
    On end of input: returns.
    On failure: a Telnyx error or outage is logged, never raised (the caller can still hang up,
      and the call still ends when its stream does). Transient: anything else is a bug, and a
      restart gets the same inbox.
    """

    call: CallInfo
    control: HangupCommand
    hung_up: bool = False

    def child_spec(self, *, inbox: MailboxReceiver[Hangup], name: str = "call_hangup"
                   ) -> ChildSpec:
        return ChildSpec(name=name, run=self.run, channels={"inbox": inbox},
                         restart=Restart.TRANSIENT, shutdown_s=CALL_HANGUP_SHUTDOWN_S)

    async def run(self, inbox: trio.abc.ReceiveChannel[Hangup], *,
                  task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with inbox:
            task_status.started()
            async for msg in inbox:
                if self.hung_up:
                    continue
                extra = {"call_id": self.call.call_id, "reason": msg.reason}
                try:
                    await self.control.hangup(self.call.call_control_id)
                except TelnyxError as exc:
                    log.error("hangup failed", extra={**extra, "error": str(exc)})
                    continue
                self.hung_up = True
                log.info("call hung up by the bot", extra=extra)
