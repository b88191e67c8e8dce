"""One accepted connection of the Deepgram listen emulator: reader, delayed outbox, idle watchdog.

The reader feeds audio and control messages to the connection's `ListenTranscriber`; what it
produces goes through a FIFO outbox that delays every message by ``first_result_delay_s`` without
ever stalling the reader. The session ends as the first `Ending` decided says: CloseStream, idle
timeout, an injected fault, or the client closing or dropping.
"""

from __future__ import annotations

import datetime
import hashlib
from collections.abc import Sequence
from typing import Final, Literal

import attrs
import trio
from trio_websocket import ConnectionClosed, WebSocketConnection

from bench.emulators.deepgram_listen.records import EndedBy, ListenConnectionRecord, SentMessage
from bench.emulators.deepgram_listen.transcriber import EPS_S, ListenTranscriber, rounded_s
from bench.emulators.deepgram_server import record_client_close
from protocols.deepgram_listen import (
    CLOSE_AFTER_CLOSE_STREAM,
    CLOSE_NET_0001,
    CloseStream,
    ErrorMessage,
    Finalize,
    KeepAlive,
    Metadata,
    ServerClose,
    ServerMessage,
    decode_client_text,
    encode_server,
    schema_error,
)
from protocols.errors import RemoteProtocolError

__all__ = ["CLOSE_TIMEOUT_S", "OUTBOX_MESSAGES", "CloseFault", "Ending", "ListenSession"]

#: Messages waiting in a connection's outbox (only fills when first_result_delay_s is large).
OUTBOX_MESSAGES: Final = 256
#: Bound on every closing handshake the emulator waits for.
CLOSE_TIMEOUT_S: Final = 2.0


@attrs.frozen
class CloseFault:
    """An injected fault: close with ``close`` once ``after_audio_s`` of audio was received."""

    close: ServerClose
    after_audio_s: float


@attrs.frozen
class Ending:
    """How a session ends: a close frame (``close``) or a dropped TCP connection."""

    kind: Literal["close", "drop"]
    ended_by: EndedBy
    close: ServerClose | None = None



@attrs.define(eq=False)
class ListenSession:
    """One accepted connection: a reader (audio and controls), an outbox sender, an idle watchdog."""

    ws: WebSocketConnection
    record: ListenConnectionRecord
    transcriber: ListenTranscriber
    idle_timeout_s: float
    delay_s: float
    error_before_close: bool
    drop_after_audio_s: float | None
    close_fault: CloseFault | None
    keep_audio: bool = True
    _sha256: hashlib._Hash = attrs.field(init=False, factory=hashlib.sha256)
    _ending: Ending | None = attrs.field(init=False, default=None)
    _receive_scope: trio.CancelScope = attrs.field(init=False, factory=trio.CancelScope)
    _last_frame_at: float = attrs.field(init=False, factory=trio.current_time)
    _sender_done: trio.Event = attrs.field(init=False, factory=trio.Event)
    _client_gone: bool = attrs.field(init=False, default=False)
    _outbox: trio.MemorySendChannel[tuple[float, float, ServerMessage]] = attrs.field(init=False)
    _outbox_out: trio.MemoryReceiveChannel[tuple[float, float, ServerMessage]] = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self._outbox, self._outbox_out = trio.open_memory_channel[tuple[float, float, ServerMessage]](
            OUTBOX_MESSAGES
        )

    def end(self, ending: Ending) -> None:
        """Decide how the connection ends (first decision wins) and stop reading."""
        if self._ending is None:
            self._ending = ending
        self._receive_scope.cancel()

    async def run(self) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._send_loop)
            nursery.start_soon(self._watchdog)
            with self._receive_scope:
                await self._receive_loop()
            await self._conclude()
            nursery.cancel_scope.cancel()

    async def _enqueue(self, messages: Sequence[ServerMessage]) -> None:
        now = trio.current_time()
        for message in messages:
            await self._outbox.send((now + self.delay_s, self.transcriber.audio_s, message))

    async def _receive_loop(self) -> None:
        record = self.record
        while True:
            try:
                frame = await self.ws.get_message()
            except ConnectionClosed as exc:
                record_client_close(record, exc)
                self._client_gone = True
                return
            self._last_frame_at = trio.current_time()
            if isinstance(frame, bytes):
                if not frame:
                    record.controls.append("CloseStream")
                    await self._close_stream()
                    return
                record.audio_bytes += len(frame)
                self._sha256.update(frame)
                if self.keep_audio:
                    record.audio += frame
                await self._enqueue(self.transcriber.feed(frame))
                record.audio_s = self.transcriber.audio_s
                if self._fault_due():
                    return
                continue
            try:
                control = decode_client_text(frame)
            except RemoteProtocolError as exc:
                record.controls.append("Invalid")
                await self._enqueue([schema_error(exc, frame)])
                continue
            record.controls.append(type(control).__name__)
            if isinstance(control, Finalize):
                await self._enqueue(self.transcriber.finalize())
            elif isinstance(control, CloseStream):
                await self._close_stream()
                return
            else:
                assert isinstance(control, KeepAlive)  # resets the idle timer, like every frame

    def _fault_due(self) -> bool:
        audio_s = self.transcriber.audio_s
        if self.drop_after_audio_s is not None and audio_s + EPS_S >= self.drop_after_audio_s:
            self.end(Ending("drop", "dropped"))
            return True
        fault = self.close_fault
        if fault is not None and audio_s + EPS_S >= fault.after_audio_s:
            self.end(Ending("close", "fault_close", fault.close))
            return True
        return False

    async def _close_stream(self) -> None:
        messages = self.transcriber.close()
        record = self.record
        metadata = Metadata(
            request_id=record.request_id,
            sha256=self._sha256.hexdigest(),
            created=datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            duration=rounded_s(self.transcriber.audio_s),
            channels=self.transcriber.options.channels,
        )
        await self._enqueue([*messages, metadata])
        self.end(Ending("close", "close_stream", CLOSE_AFTER_CLOSE_STREAM))

    async def _watchdog(self) -> None:
        while True:
            await trio.sleep_until(self._last_frame_at + self.idle_timeout_s)
            if trio.current_time() >= self._last_frame_at + self.idle_timeout_s:
                self.end(Ending("close", "idle_timeout", CLOSE_NET_0001))
                return

    async def _send_loop(self) -> None:
        try:
            async for due, audio_s, message in self._outbox_out:
                await trio.sleep_until(due)
                if self._client_gone:
                    continue
                try:
                    await self.ws.send_message(encode_server(message))
                except ConnectionClosed:
                    self._client_gone = True
                    continue
                self.record.sent.append(SentMessage(trio.current_time(), audio_s, message))
        finally:
            self._sender_done.set()

    async def _conclude(self) -> None:
        ending = self._ending
        record = self.record
        if ending is None:  # the client closed or dropped; recorded by the reader
            return
        if ending.kind == "drop":
            record.ended_by = ending.ended_by
            record.close_code = 1006
            await trio.aclose_forcefully(self.ws._stream)  # noqa: SLF001 - no close frame, on purpose
            return
        assert ending.close is not None
        if ending.ended_by == "idle_timeout" and self.error_before_close:
            await self._enqueue([ErrorMessage(
                variant="Closing", code="NET-0001", description=ending.close.reason,
            )])
        self._outbox.close()
        with trio.move_on_after(self.delay_s + CLOSE_TIMEOUT_S):
            await self._sender_done.wait()
        record.ended_by = ending.ended_by
        record.close_code = ending.close.code
        record.close_reason = ending.close.reason
        with trio.move_on_after(CLOSE_TIMEOUT_S):
            await self.ws.aclose(ending.close.code, ending.close.reason)
