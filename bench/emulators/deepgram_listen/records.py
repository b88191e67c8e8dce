"""What the Deepgram listen emulator records of each connection, for assertions."""

from __future__ import annotations

from typing import Literal

import attrs

from protocols.deepgram_listen import ListenOptions, Results, ServerMessage

__all__ = ["EndedBy", "ListenConnectionRecord", "SentMessage"]


@attrs.frozen
class SentMessage:
    """One message the emulator sent: wall time of the send, audio clock when it was produced."""

    at: float
    audio_s: float
    message: ServerMessage


EndedBy = Literal[
    "rejected", "close_stream", "idle_timeout", "client_closed", "client_dropped", "dropped",
    "fault_close", "server_shutdown",
]


@attrs.define(eq=False)
class ListenConnectionRecord:
    """Everything one connection did, for assertions. Mutated while the connection lives."""

    path: str
    request_id: str
    started_at: float
    options: ListenOptions | None = None
    auth_scheme: str | None = None
    auth_subprotocol: str | None = None
    rejected_status: int | None = None
    rejected_reason: str | None = None
    audio_bytes: int = 0
    #: The raw audio received (empty when the emulator's ``keep_audio`` is off).
    audio: bytearray = attrs.field(factory=bytearray, repr=False)
    audio_s: float = 0.0
    #: Client text frames in order: ``KeepAlive``, ``Finalize``, ``CloseStream`` or ``Invalid``
    #: (an empty binary frame is recorded as ``CloseStream``).
    controls: list[str] = attrs.field(factory=list)
    sent: list[SentMessage] = attrs.field(factory=list, repr=False)
    #: Texts of the utterances finalised on this connection, in order.
    utterances: list[str] = attrs.field(factory=list)
    ended_by: EndedBy | None = None
    #: The close code on the wire (ours or the client's); 1006 when TCP dropped without one.
    close_code: int | None = None
    close_reason: str | None = None
    ended_at: float | None = None

    @property
    def messages(self) -> list[ServerMessage]:
        return [sent.message for sent in self.sent]

    @property
    def results(self) -> list[Results]:
        return [m for m in self.messages if isinstance(m, Results)]

    @property
    def finals(self) -> list[Results]:
        return [r for r in self.results if r.is_final]

    @property
    def dropped(self) -> bool:
        """True if the TCP connection ended without a close frame (either side)."""
        return self.ended_by in ("dropped", "client_dropped")

