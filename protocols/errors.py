"""The two ways a wire conversation goes wrong, after h11/wsproto.

Every parser in ``protocols`` raises :class:`RemoteProtocolError` when the peer sent something we
cannot accept (bad JSON, unknown tag, wrong type, bad base64, a forged signature ...) and
:class:`LocalProtocolError` when *our* code asked a builder for something the protocol forbids.
Nothing else leaves this package: no ``KeyError``, ``binascii.Error`` or ``ExceptionGroup``.
"""

from __future__ import annotations

from typing import Final

#: WebSocket close codes (RFC 6455 §7.4.1) a server picks when a peer's frame is unacceptable.
CLOSE_PROTOCOL_ERROR: Final = 1002
CLOSE_UNSUPPORTED_DATA: Final = 1003
CLOSE_INVALID_PAYLOAD: Final = 1007
CLOSE_POLICY_VIOLATION: Final = 1008
CLOSE_MESSAGE_TOO_BIG: Final = 1009


class ProtocolError(Exception):
    """Base of every error raised by ``protocols``.

    Attributes:
        reason: a human-readable sentence saying what was wrong (safe to log: never holds secrets).
        close_code: the WebSocket close code a server would answer this with, if it closes.
    """

    def __init__(self, reason: str, *, close_code: int = CLOSE_PROTOCOL_ERROR) -> None:
        super().__init__(reason)
        self.reason = reason
        self.close_code = close_code

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.reason!r}, close_code={self.close_code})"


class RemoteProtocolError(ProtocolError):
    """The peer sent something that breaks the protocol (or our stricter reading of it)."""


class LocalProtocolError(ProtocolError):
    """We tried to build or send something the protocol does not allow: a bug on our side."""
