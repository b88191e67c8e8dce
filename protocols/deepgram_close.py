"""What a Deepgram close means: the close codes and reasons the server sends, and the verdict.

Sans-I/O: :func:`classify_close` and :func:`classify_handshake` tell the link whether to finish,
reconnect, back off or give up; :class:`ServerClose` and the ``CLOSE_*`` constants are what the
Deepgram emulator in ``bench/`` puts on the wire (and what tests expect). Shared by ``/v1/listen``
(:mod:`protocols.deepgram_listen`) and ``/v1/speak`` (:mod:`protocols.deepgram_speak`).
"""

from __future__ import annotations

import enum
import re
from typing import Final

import attrs

from protocols.errors import CLOSE_POLICY_VIOLATION

__all__ = [
    "CLOSE_ABNORMAL",
    "CLOSE_AFTER_CLOSE_STREAM",
    "CLOSE_DATA_0000",
    "CLOSE_GOING_AWAY",
    "CLOSE_INTERNAL_ERROR",
    "CLOSE_NET_0000",
    "CLOSE_NET_0001",
    "CLOSE_NORMAL",
    "CLOSE_SERVICE_RESTART",
    "CLOSE_TRY_AGAIN_LATER",
    "DATA_0000_REASON",
    "NET_0000_REASON",
    "NET_0001_REASON",
    "CloseVerdict",
    "Recovery",
    "ServerClose",
    "classify_close",
    "classify_handshake",
    "close_error_code",
]

CLOSE_NORMAL: Final = 1000
CLOSE_GOING_AWAY: Final = 1001
#: Never sent on the wire: what a WebSocket library reports when TCP dropped without a close frame.
CLOSE_ABNORMAL: Final = 1006
CLOSE_INTERNAL_ERROR: Final = 1011
CLOSE_SERVICE_RESTART: Final = 1012
CLOSE_TRY_AGAIN_LATER: Final = 1013

#: The reason text users have seen with close 1011 after 10 s without audio or text (NET-0001).
NET_0001_REASON: Final = (
    "Deepgram did not receive audio data or a text message within the timeout window. "
    "See https://dpgr.am/net0001"
)
#: UNCONFIRMED wording (only the code and its meaning are documented): the server sent no text frame
#: within its window. Written in the same style as NET-0001 so :func:`close_error_code` finds it.
NET_0000_REASON: Final = (
    "Deepgram did not provide a response message within the timeout window. "
    "See https://dpgr.am/net0000"
)
#: UNCONFIRMED wording: the payload could not be decoded as audio in the declared format.
DATA_0000_REASON: Final = (
    "Deepgram could not decode the audio: it is not audio data or not in the declared encoding. "
    "See https://dpgr.am/data0000"
)


@attrs.frozen
class ServerClose:
    """A close frame Deepgram sends: what the emulator puts on the wire, and what tests expect."""

    code: int
    reason: str = ""


#: After CloseStream: remaining Results, then Metadata, then this.
CLOSE_AFTER_CLOSE_STREAM: Final = ServerClose(CLOSE_NORMAL, "")
CLOSE_NET_0001: Final = ServerClose(CLOSE_INTERNAL_ERROR, NET_0001_REASON)
CLOSE_NET_0000: Final = ServerClose(CLOSE_INTERNAL_ERROR, NET_0000_REASON)
#: 1008 per the prototype spec; a 2021 document says 1002 (UNCONFIRMED). :func:`classify_close`
#: recognises DATA-0000 by its reason, whatever the code.
CLOSE_DATA_0000: Final = ServerClose(CLOSE_POLICY_VIOLATION, DATA_0000_REASON)


class Recovery(enum.Enum):
    """What the link should do after a connection ends."""

    FINISHED = "finished"  # normal close; expected after our CloseStream
    RECONNECT = "reconnect"  # transient: reconnect now, replay buffered audio
    BACKOFF = "backoff"  # reconnect after an increasing delay (rate limit, overload)
    FATAL = "fatal"  # reconnecting cannot help: credentials, parameters, audio format


@attrs.frozen
class CloseVerdict:
    recovery: Recovery
    #: Deepgram's error code when the reason names one (``NET-0001``, ``NET-0000``, ``DATA-0000``).
    error_code: str | None
    explanation: str

    @property
    def retryable(self) -> bool:
        return self.recovery in (Recovery.RECONNECT, Recovery.BACKOFF)


_ERROR_CODE = re.compile(r"\b(NET|DATA)-?(\d{4})\b", re.IGNORECASE)


def close_error_code(reason: str | bytes | None) -> str | None:
    """``NET-0001``-style code named in a close reason (also found in ``dpgr.am/net0001`` links)."""
    if isinstance(reason, bytes | bytearray):
        reason = reason.decode("utf-8", "replace")
    if not isinstance(reason, str):
        return None
    match = _ERROR_CODE.search(reason)
    return f"{match.group(1).upper()}-{match.group(2)}" if match else None


def classify_close(code: int | None, reason: str | bytes | None = "") -> CloseVerdict:
    """Classify a WebSocket close from Deepgram (``code`` None = no close frame, as 1006).

    1000 is FINISHED (the link knows whether it sent CloseStream; an unasked-for 1000 mid-call is
    worth a reconnect). 1011 (NET-0001 idle timeout, NET-0000, internal errors), 1006 and 1001 are
    RECONNECT. 1012/1013 and unknown codes (4xxx included, none are documented) are BACKOFF.
    DATA-0000 (by its reason, whatever the code: 1008 or 1002 by source) and 1002/1003/1007/1009
    are FATAL: the same audio or frames would fail again.
    """
    error_code = close_error_code(reason)
    if code is None:
        code = CLOSE_ABNORMAL
    if error_code is not None and error_code.startswith("DATA-"):
        return CloseVerdict(Recovery.FATAL, error_code, "server could not decode our audio")
    if code == CLOSE_NORMAL:
        return CloseVerdict(Recovery.FINISHED, error_code, "normal close")
    if code == CLOSE_INTERNAL_ERROR:
        explanation = {
            "NET-0001": "no audio or text reached the server for 10 s",
            "NET-0000": "server sent nothing within its window",
        }.get(error_code or "", "server internal error")
        return CloseVerdict(Recovery.RECONNECT, error_code, explanation)
    if code in (CLOSE_ABNORMAL, CLOSE_GOING_AWAY):
        return CloseVerdict(Recovery.RECONNECT, error_code, "connection lost")
    if code in (1002, 1003, 1007, CLOSE_POLICY_VIOLATION, 1009):
        return CloseVerdict(Recovery.FATAL, error_code, f"server refused our frames ({code})")
    return CloseVerdict(Recovery.BACKOFF, error_code, f"close code {code}")


def classify_handshake(status_code: int) -> CloseVerdict:
    """Classify a refused upgrade: 400 (parameters), 401/402/403 (credentials, credit), 404 are
    FATAL; 408 is RECONNECT; 429 (too many streams) and 5xx are BACKOFF; other 4xx FATAL."""
    if status_code in (400, 401, 402, 403, 404):
        explanation = {
            400: "bad request parameters",
            401: "invalid credentials",
            402: "insufficient credit",
            403: "forbidden",
            404: "wrong URL",
        }[status_code]
        return CloseVerdict(Recovery.FATAL, None, explanation)
    if status_code == 408:
        return CloseVerdict(Recovery.RECONNECT, None, "request timeout")
    if status_code == 429 or status_code >= 500:
        return CloseVerdict(Recovery.BACKOFF, None, f"HTTP {status_code}")
    return CloseVerdict(Recovery.FATAL, None, f"HTTP {status_code}")
