"""A Deepgram Aura streaming text-to-speech server (``/v1/speak``) for tests, the demo and the bench.

Speaks the wire protocol of ``/work/shared/protocols/deepgram.md`` §5.2 through the pure codecs in
:mod:`protocols.deepgram_speak`, over a real trio-websocket server on loopback::

    emulator = DeepgramSpeakEmulator(ttfa_s=0.1, speed_factor=10.0)
    url = await nursery.start(emulator.serve)        # "ws://127.0.0.1:PORT/v1/speak"
    ...                                              # a client connects with model/encoding/...
    emulator.connections[0].flushes                  # what was synthesised, when, how much

What it does (§5.2 and the §8 checklist):

- Handshake: ``Authorization: Token|Bearer <key>`` or subprotocols ``["token", key]``, else HTTP
  401 with ``dg-error``/``dg-request-id``; the query goes through
  :func:`~protocols.deepgram_speak.parse_speak_query` (400 when invalid); a wrong path gets 404.
- On connect: ``Metadata``. ``Speak`` appends its text to the buffer; ``Flush`` takes the buffer
  and, ``ttfa_s`` later (time to first audio), streams *real audio* for it: a speech-like signal
  (:func:`bench.emulators.caller_audio.speech_like`) of ``ms_per_char`` per character, encoded in
  the requested encoding and rate, as binary frames of ``frame_ms``, produced at ``speed_factor``
  x real time; then ``Flushed{sequence_id}`` (flushes counted from 0 on each connection). Flushes
  queue behind each other in order. An empty buffer gives just ``Flushed``.
- ``Clear``: stop the audio at once, drop queued flushes and the buffer, answer
  ``Cleared{sequence_id}`` (the last flush's id); no audio of anything before it follows.
- More than ``flush_limit`` Flush in ``flush_window_s``: a ``Warning`` (code
  ``FLUSH_LIMIT_EXCEEDED``, UNCONFIRMED) and the Flush is ignored (its text stays buffered).
- Unknown type, bad JSON or a binary frame from the client: close 1008. ``Close``: close 1000 at
  once, or after the queued audio with ``close_flushes_first`` (upstream is UNCONFIRMED).

Fault injection: :meth:`reject_next_with` (HTTP status for the next handshake), :meth:`drop_all`
(TCP closed without a close frame), :meth:`close_all` (a close frame, e.g. 1011 or an idle 1000).

Recording: :attr:`connections` holds one :class:`SpeakConnectionRecord` per handshake (refused
ones included): texts, flushes (with the audio produced), clears, warnings, how it ended.
"""

from __future__ import annotations

import hmac
import uuid
from collections import deque
from typing import Final, Literal

import attrs
import numpy as np
import orjson
import trio
from trio_websocket import ConnectionClosed, WebSocketConnection, WebSocketRequest, serve_websocket

from bench.emulators.caller_audio import encode_for_deepgram, speech_like
from protocols.deepgram_options import parse_auth
from protocols.deepgram_speak import (
    CLOSE_NORMAL, CLOSE_UNKNOWN_CONTROL, FLUSH_LIMIT_PER_WINDOW, FLUSH_WINDOW_S, Clear, Cleared,
    Close, Flush, Flushed, Metadata, ServerMessage, Speak, SpeakOptions, WarningMessage,
    decode_client_text, encode_server, parse_speak_query,
)
from protocols.errors import RemoteProtocolError

__all__ = ["DeepgramSpeakEmulator", "FlushRecord", "SpeakConnectionRecord"]

#: Bytes per sample of each encoding the emulator produces.
_SAMPLE_BYTES: Final = {"mulaw": 1, "alaw": 1, "linear16": 2}
_MODEL_UUID: Final = "7d3c1e52-8a4b-4f0e-b6d2-5c9a1e3f7b80"
_MODEL_VERSION: Final = "2025-01-01.0"
FLUSH_WARNING_CODE: Final = "FLUSH_LIMIT_EXCEEDED"
CLOSE_TIMEOUT_S: Final = 2.0
SHUTDOWN_CLOSE_WAIT_S: Final = 0.05

EndedBy = Literal["rejected", "client_close", "client_closed", "client_dropped", "policy_close",
                  "fault_close", "dropped", "server_shutdown"]


@attrs.define(eq=False)
class FlushRecord:
    """One Flush: when it came, its text, and the audio produced for it (so far)."""

    at: float
    sequence_id: int
    text: str
    first_audio_at: float | None = None
    audio_bytes: int = 0
    finished: bool = False  # Flushed was sent (False: cleared, closed or still producing)


@attrs.define(eq=False)
class SpeakConnectionRecord:
    """Everything one connection did, for assertions. Mutated while the connection lives."""

    path: str
    request_id: str
    started_at: float
    headers: list[tuple[bytes, bytes]] = attrs.field(factory=list, repr=False)
    options: SpeakOptions | None = None
    auth_scheme: str | None = None
    rejected_status: int | None = None
    rejected_reason: str | None = None
    #: Client control types in order (``Speak``, ``Flush``, ``Clear``, ``Close``, ``Invalid``).
    controls: list[str] = attrs.field(factory=list)
    texts: list[str] = attrs.field(factory=list)
    flushes: list[FlushRecord] = attrs.field(factory=list)
    ignored_flushes: int = 0
    clears: list[float] = attrs.field(factory=list)
    warnings: int = 0
    #: Every message sent: (time, "audio" or the control type).
    sent: list[tuple[float, str]] = attrs.field(factory=list, repr=False)
    audio_bytes: int = 0
    ended_by: EndedBy | None = None
    close_code: int | None = None
    close_reason: str | None = None
    ended_at: float | None = None


@attrs.define(eq=False)
class DeepgramSpeakEmulator:
    """A ``/v1/speak`` server on ``host:port`` (0 = any free port). See the module docstring."""

    api_key: str | None = "test-key"  # None: any credential is accepted (but one is required)
    ttfa_s: float = 0.05
    speed_factor: float = 10.0
    ms_per_char: float = 65.0
    frame_ms: int = 40
    flush_limit: int = FLUSH_LIMIT_PER_WINDOW
    flush_window_s: float = FLUSH_WINDOW_S
    close_flushes_first: bool = False
    seed: int = 0
    host: str = "127.0.0.1"
    port: int = 0
    path: str = "/v1/speak"
    connections: list[SpeakConnectionRecord] = attrs.field(init=False, factory=list)
    url: str | None = attrs.field(init=False, default=None)
    _reject_fault: tuple[int, str] | None = attrs.field(init=False, default=None)
    _live: set[_SpeakSession] = attrs.field(init=False, factory=set)

    def __attrs_post_init__(self) -> None:
        if self.speed_factor <= 0 or self.frame_ms <= 0:
            raise ValueError("speed_factor and frame_ms must be positive")

    # -- control ------------------------------------------------------------------------------

    def reject_next_with(self, status: int, reason: str = "") -> None:
        """One-shot: refuse the next handshake with HTTP ``status`` (e.g. 429, 503)."""
        self._reject_fault = (status, reason or f"emulated rejection {status}")

    def drop_all(self) -> int:
        """Close every live connection's TCP stream now, without a close frame; returns how many."""
        sessions = list(self._live)
        for session in sessions:
            session.end("dropped", None, "")
        return len(sessions)

    def close_all(self, code: int = 1011, reason: str = "") -> int:
        """Send every live connection a close frame now; returns how many."""
        sessions = list(self._live)
        for session in sessions:
            session.end("fault_close", code, reason)
        return len(sessions)

    @property
    def live_connections(self) -> int:
        return len(self._live)

    # -- serving ------------------------------------------------------------------------------

    async def serve(self, *, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> None:
        """Listen, report ``ws://host:port/v1/speak`` through ``task_status``, serve until cancelled."""
        async with trio.open_nursery() as nursery:
            server = await nursery.start(serve_websocket, self._handle, self.host, self.port, None)
            self.url = f"ws://{self.host}:{server.port}{self.path}"
            task_status.started(self.url)

    async def _handle(self, request: WebSocketRequest) -> None:
        record = SpeakConnectionRecord(path=request.path, request_id=str(uuid.uuid4()),
                                       started_at=trio.current_time(), headers=list(request.headers))
        self.connections.append(record)
        stream = request._connection._stream  # noqa: SLF001 - trio-websocket leaks it otherwise
        session: _SpeakSession | None = None
        try:
            ws = await self._handshake(request, record)
            if ws is None:
                return
            session = _SpeakSession(self, ws, record, np.random.default_rng(
                self.seed + len(self.connections)))
            self._live.add(session)
            await session.run()
        finally:
            if session is not None:
                self._live.discard(session)
            with trio.CancelScope(shield=True):
                if session is not None and record.ended_by is None:
                    record.ended_by = "server_shutdown"
                    record.close_code = 1001
                    with trio.move_on_after(SHUTDOWN_CLOSE_WAIT_S):
                        await session.ws.aclose(1001, "emulator shutting down")
                record.ended_at = trio.current_time()
                await trio.aclose_forcefully(stream)

    async def _handshake(self, request: WebSocketRequest,
                         record: SpeakConnectionRecord) -> WebSocketConnection | None:
        path = request.path
        if path.split("?", 1)[0] != self.path:
            await self._reject(request, record, 404, "NOT_FOUND", f"no such endpoint: {path[:80]}")
            return None
        if self._reject_fault is not None:
            (status, reason), self._reject_fault = self._reject_fault, None
            await self._reject(request, record, status, "EMULATED", reason)
            return None
        authorization = next(
            (value for name, value in request.headers if name.lower() == b"authorization"), None)
        try:
            credential = parse_auth(authorization, request.proposed_subprotocols)
        except RemoteProtocolError as exc:
            await self._reject(request, record, 401, "INVALID_AUTH", f"Invalid credentials: {exc.reason}")
            return None
        if self.api_key is not None and not hmac.compare_digest(
                credential.secret.encode(), self.api_key.encode()):
            await self._reject(request, record, 401, "INVALID_AUTH", "Invalid credentials.")
            return None
        record.auth_scheme = credential.scheme
        try:
            record.options = parse_speak_query(path.split("?", 1)[1] if "?" in path else "")
        except RemoteProtocolError as exc:
            await self._reject(request, record, 400, "Bad Request", exc.reason)
            return None
        return await request.accept(subprotocol=credential.subprotocol,
                                    extra_headers=[(b"dg-request-id", record.request_id.encode())])

    async def _reject(self, request: WebSocketRequest, record: SpeakConnectionRecord, status: int,
                      err_code: str, message: str) -> None:
        record.rejected_status = status
        record.rejected_reason = message
        record.ended_by = "rejected"
        body = orjson.dumps({"err_code": err_code, "err_msg": message,
                             "request_id": record.request_id})
        await request.reject(status, extra_headers=[
            (b"dg-error", message.encode("ascii", "replace")),
            (b"dg-request-id", record.request_id.encode()),
            (b"content-type", b"application/json"),
        ], body=body)


@attrs.define(eq=False)
class _Job:
    flush: FlushRecord
    generation: int


@attrs.define(eq=False)
class _SpeakSession:
    """One accepted connection: a reader (controls) and a producer (audio, Flushed)."""

    emulator: DeepgramSpeakEmulator
    ws: WebSocketConnection
    record: SpeakConnectionRecord
    rng: np.random.Generator
    _buffer: list[str] = attrs.field(factory=list)
    _jobs: deque[_Job] = attrs.field(factory=deque)
    _jobs_changed: trio.Event = attrs.field(factory=trio.Event)
    _generation: int = 0  # bumped by Clear: audio of older jobs is never sent after it
    _send_lock: trio.Lock = attrs.field(factory=trio.Lock)
    _job_scope: trio.CancelScope | None = None
    _flush_times: deque[float] = attrs.field(factory=deque)
    _ending: tuple[EndedBy, int | None, str] | None = None
    _receive_scope: trio.CancelScope = attrs.field(factory=trio.CancelScope)
    _closing_after_jobs: bool = False

    def end(self, ended_by: EndedBy, code: int | None, reason: str) -> None:
        """Decide how the connection ends (first decision wins) and stop reading."""
        if self._ending is None:
            self._ending = (ended_by, code, reason)
        self._receive_scope.cancel()

    async def run(self) -> None:
        options = self.record.options
        assert options is not None
        await self._send_message(Metadata(
            request_id=self.record.request_id, model_name=options.model,
            model_version=_MODEL_VERSION, model_uuid=_MODEL_UUID))
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._produce)
            with self._receive_scope:
                await self._receive_loop()
            nursery.cancel_scope.cancel()
        await self._conclude()

    async def _send_message(self, message: ServerMessage) -> None:
        try:
            await self.ws.send_message(encode_server(message))
        except ConnectionClosed:
            return
        self.record.sent.append((trio.current_time(), type(message).__name__))

    async def _receive_loop(self) -> None:
        record = self.record
        while True:
            try:
                frame = await self.ws.get_message()
            except ConnectionClosed as exc:
                code = exc.reason.code if exc.reason is not None else 1006
                record.ended_by = "client_dropped" if code == 1006 else "client_closed"
                record.close_code = code
                record.close_reason = exc.reason.reason if exc.reason is not None else None
                return
            if isinstance(frame, bytes):
                record.controls.append("Invalid")
                self.end("policy_close", CLOSE_UNKNOWN_CONTROL, "binary frames are not accepted")
                return
            try:
                control = decode_client_text(frame)
            except RemoteProtocolError as exc:
                record.controls.append("Invalid")
                self.end("policy_close", exc.close_code or CLOSE_UNKNOWN_CONTROL, exc.reason[:120])
                return
            record.controls.append(type(control).__name__)
            if isinstance(control, Speak):
                record.texts.append(control.text)
                self._buffer.append(control.text)
            elif isinstance(control, Flush):
                await self._flush()
            elif isinstance(control, Clear):
                await self._clear()
            else:
                assert isinstance(control, Close)
                if self.emulator.close_flushes_first and (self._jobs or self._job_scope):
                    self._closing_after_jobs = True
                    self._jobs_changed.set()
                    continue
                self.end("client_close", CLOSE_NORMAL, "")
                return

    async def _flush(self) -> None:
        em, record = self.emulator, self.record
        now = trio.current_time()
        times = self._flush_times
        while times and times[0] <= now - em.flush_window_s:
            times.popleft()
        if len(times) >= em.flush_limit:
            record.ignored_flushes += 1
            record.warnings += 1
            await self._send_message(WarningMessage(
                description=f"Flush limit of {em.flush_limit} per {em.flush_window_s:g}s exceeded; "
                            "the flush was ignored", code=FLUSH_WARNING_CODE))
            return
        times.append(now)
        flush = FlushRecord(at=now, sequence_id=len(record.flushes), text="".join(self._buffer))
        self._buffer.clear()
        record.flushes.append(flush)
        self._jobs.append(_Job(flush, self._generation))
        self._jobs_changed.set()

    async def _clear(self) -> None:
        self.record.clears.append(trio.current_time())
        async with self._send_lock:  # no audio frame is half-way out while we switch generation
            self._generation += 1
            self._jobs.clear()
            self._buffer.clear()
            if self._job_scope is not None:
                self._job_scope.cancel()
            last = self.record.flushes[-1].sequence_id if self.record.flushes else 0
            await self._send_message(Cleared(sequence_id=last))

    async def _produce(self) -> None:
        while True:
            while not self._jobs:
                if self._closing_after_jobs:
                    self.end("client_close", CLOSE_NORMAL, "")
                    return
                self._jobs_changed = trio.Event()
                await self._jobs_changed.wait()
            job = self._jobs.popleft()
            with trio.CancelScope() as self._job_scope:
                await self._speak(job)
            self._job_scope = None

    async def _speak(self, job: _Job) -> None:
        em, options = self.emulator, self.record.options
        assert options is not None
        flush = job.flush
        text = flush.text
        if text.strip():
            rate = options.sample_rate
            pcm = speech_like(len(text) * em.ms_per_char / 1000, self.rng, sample_rate=rate)
            audio = encode_for_deepgram(pcm, options.encoding)
            frame_bytes = max(1, rate * em.frame_ms // 1000) * _SAMPLE_BYTES[options.encoding]
            start = trio.current_time() + em.ttfa_s
            period = em.frame_ms / 1000 / em.speed_factor
            for index, offset in enumerate(range(0, len(audio), frame_bytes)):
                await trio.sleep_until(start + index * period)
                chunk = audio[offset : offset + frame_bytes]
                async with self._send_lock:
                    if job.generation != self._generation:
                        return
                    with trio.CancelScope(shield=True):  # never cut a frame in half
                        try:
                            await self.ws.send_message(chunk)
                        except ConnectionClosed:
                            return
                if flush.first_audio_at is None:
                    flush.first_audio_at = trio.current_time()
                flush.audio_bytes += len(chunk)
                self.record.audio_bytes += len(chunk)
                self.record.sent.append((trio.current_time(), "audio"))
        async with self._send_lock:
            if job.generation != self._generation:
                return
            flush.finished = True
            await self._send_message(Flushed(sequence_id=flush.sequence_id))

    async def _conclude(self) -> None:
        if self._ending is None:  # the client closed or dropped; recorded by the reader
            return
        ended_by, code, reason = self._ending
        record = self.record
        record.ended_by = ended_by
        if ended_by == "dropped":
            record.close_code = 1006
            await trio.aclose_forcefully(self.ws._stream)  # noqa: SLF001 - no close frame, on purpose
            return
        record.close_code, record.close_reason = code, reason
        with trio.move_on_after(CLOSE_TIMEOUT_S):
            await self.ws.aclose(code or CLOSE_NORMAL, reason)
