"""Bounded, shielded cleanup for actors that are being cancelled."""

from __future__ import annotations

import trio

__all__ = ["cleanup_scope"]


def cleanup_scope(timeout_s: float) -> trio.CancelScope:
    """Return a cancel scope for cleanup that must run even though the task is being cancelled.

    When the supervisor's polite stop times out it cancels the child; any ``await`` in the
    child's cleanup would then raise `trio.Cancelled` at once, so a socket could never be closed
    properly. Inside this scope the outer cancellation is shielded, and the scope's own deadline
    (``timeout_s`` from entering it) keeps a dead peer from hanging the shutdown: the supervisor
    waits for the child to exit, so cleanup must be bounded.

    Example::

        async def run(self, inbox, audio_out, *, task_status=trio.TASK_STATUS_IGNORED):
            ws = await connect()
            try:
                async with inbox, audio_out:
                    task_status.started()
                    async for frame in inbox:
                        await ws.send_message(frame)
            finally:
                with cleanup_scope(SOCKET_CLOSE_S):
                    await ws.aclose()

    Check ``scope.cancelled_caught`` afterwards to learn whether the cleanup ran out of time.
    """
    return trio.move_on_after(timeout_s, shield=True)
