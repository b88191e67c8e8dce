"""The Deepgram listen emulator's server: handshakes, scripts, fault injection, live sessions.

See :mod:`bench.emulators.deepgram_listen` for what it does, in the fact sheet's terms.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence

import attrs
import trio
from trio_websocket import WebSocketConnection, WebSocketRequest

from bench.emulators.deepgram_listen.records import ListenConnectionRecord
from bench.emulators.deepgram_listen.session import CloseFault, Ending, ListenSession
from bench.emulators.deepgram_listen.transcriber import (EMULATED_ENCODINGS, WORDS_PER_S,
                                                         ListenTranscriber)
from bench.emulators.deepgram_server import (authenticate, close_at_shutdown, reject,
                                             serve_loopback)
from protocols.deepgram_listen import (CLOSE_NET_0001, IDLE_TIMEOUT_S, ListenOptions, ServerClose,
                                     parse_listen_query)
from protocols.errors import RemoteProtocolError

__all__ = ["DeepgramListenEmulator", "default_script_key"]


def default_script_key(options: ListenOptions) -> str:
    """The script cursor of a connection: its ``tag`` query parameter, "" without one."""
    return options.extra.get("tag", "")



@attrs.define(eq=False)
class _ScriptCursor:
    """A connection's place in its script, shared by every connection with the same key."""

    lines: Sequence[str]
    key: str
    positions: dict[str, int]

    def peek(self) -> str:
        index = self.positions.get(self.key, 0)
        return self.lines[index] if index < len(self.lines) else ""

    def advance(self, _text: str) -> None:
        self.positions[self.key] = self.positions.get(self.key, 0) + 1


@attrs.define(eq=False)
class DeepgramListenEmulator:
    """A ``/v1/listen`` server on ``host:port`` (0 = any free port). See the module docstring.

    Serve it with ``url = await nursery.start(emulator.serve)``; it runs until cancelled and then
    closes its live connections with 1001.
    """

    api_key: str | None = "test-key"  # None: any credential is accepted (but one is required)
    script: Sequence[str] = ()
    interim_interval_s: float = 0.5
    vad_threshold_dbfs: float = -45.0
    speech_min_s: float = 0.1
    idle_timeout_s: float = IDLE_TIMEOUT_S
    first_result_delay_s: float = 0.0
    require_model: bool = True
    words_per_s: float = WORDS_PER_S
    script_for: Callable[[ListenOptions], Sequence[str]] | None = None
    script_key: Callable[[ListenOptions], str] = default_script_key
    answer_idle_finalize: bool = True
    error_before_close: bool = False
    #: One-shot: the next connection to open is dropped (no close frame) after this much audio.
    drop_after_audio_s: float | None = None
    #: Keep each connection's raw audio in its record (turn off for long load runs: 8 kB/s a call).
    keep_audio: bool = True
    host: str = "127.0.0.1"
    port: int = 0
    path: str = "/v1/listen"
    connections: list[ListenConnectionRecord] = attrs.field(init=False, factory=list)
    utterances_detected: int = attrs.field(init=False, default=0)
    url: str | None = attrs.field(init=False, default=None)
    _positions: dict[str, int] = attrs.field(init=False, factory=dict)
    _close_fault: CloseFault | None = attrs.field(init=False, default=None)
    _reject_fault: tuple[int, str] | None = attrs.field(init=False, default=None)
    _live: set[ListenSession] = attrs.field(init=False, factory=set)

    # -- control ------------------------------------------------------------------------------

    def close_with(self, code: int, reason: str = "", *, after_audio_s: float = 0.0) -> None:
        """One-shot: the next connection to open is closed with ``code``/``reason`` once it has
        received ``after_audio_s`` of audio (e.g. ``close_with(1011, NET_0000_REASON, after_audio_s=1)``)."""
        self._close_fault = CloseFault(ServerClose(code, reason), after_audio_s)

    def reject_next_with(self, status: int, reason: str = "") -> None:
        """One-shot: refuse the next handshake with HTTP ``status`` (e.g. 429, 402, 503)."""
        self._reject_fault = (status, reason or f"emulated rejection {status}")

    def close_all(self, code: int = CLOSE_NET_0001.code, reason: str = "") -> int:
        """Close every live connection now (pending messages are flushed first); returns how many."""
        sessions = list(self._live)
        for session in sessions:
            session.end(Ending("close", "fault_close", ServerClose(code, reason)))
        return len(sessions)

    def script_position(self, key: str = "") -> int:
        """How many utterances have been finalised under script key ``key`` (the next line's index)."""
        return self._positions.get(key, 0)

    # -- serving ------------------------------------------------------------------------------

    async def serve(self, *, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> None:
        """Listen, report ``ws://host:port/v1/listen`` through ``task_status``, serve until cancelled."""
        async with trio.open_nursery() as nursery:
            self.url = await nursery.start(serve_loopback, self._handle, self.host, self.port,
                                           self.path)
            task_status.started(self.url)

    async def _handle(self, request: WebSocketRequest) -> None:
        record = ListenConnectionRecord(
            path=request.path, request_id=str(uuid.uuid4()), started_at=trio.current_time()
        )
        self.connections.append(record)
        session: ListenSession | None = None
        try:
            ws = await self._handshake(request, record)
            if ws is None:
                return
            session = self._session(ws, record)
            self._live.add(session)
            await session.run()
        finally:
            if session is not None:
                self._live.discard(session)
            await close_at_shutdown(request, record, None if session is None else session.ws)

    def _session(self, ws: WebSocketConnection, record: ListenConnectionRecord) -> ListenSession:
        options = record.options
        assert options is not None
        lines = self.script_for(options) if self.script_for is not None else self.script
        cursor = _ScriptCursor(lines, self.script_key(options), self._positions)

        def detected(text: str) -> None:
            self.utterances_detected += 1

        def finalized(text: str) -> None:
            record.utterances.append(text)
            cursor.advance(text)

        transcriber = ListenTranscriber(
            options=options, next_text=cursor.peek, utterance_finalized=finalized,
            utterance_detected=detected, request_id=record.request_id,
            vad_threshold_dbfs=self.vad_threshold_dbfs, speech_min_s=self.speech_min_s,
            interim_interval_s=self.interim_interval_s, words_per_s=self.words_per_s,
            answer_idle_finalize=self.answer_idle_finalize,
        )
        drop_after, self.drop_after_audio_s = self.drop_after_audio_s, None
        close_fault, self._close_fault = self._close_fault, None
        return ListenSession(
            ws=ws, record=record, transcriber=transcriber, idle_timeout_s=self.idle_timeout_s,
            delay_s=self.first_result_delay_s, error_before_close=self.error_before_close,
            drop_after_audio_s=drop_after, close_fault=close_fault, keep_audio=self.keep_audio,
        )

    async def _handshake(
        self, request: WebSocketRequest, record: ListenConnectionRecord
    ) -> WebSocketConnection | None:
        path = request.path
        if path.split("?", 1)[0] != self.path:
            await reject(request, record, 404, "NOT_FOUND", f"no such endpoint: {path[:80]}")
            return None
        if self._reject_fault is not None:
            (status, reason), self._reject_fault = self._reject_fault, None
            await reject(request, record, status, "EMULATED", reason)
            return None
        credential = await authenticate(request, record, self.api_key)
        if credential is None:
            return None
        record.auth_scheme = credential.scheme
        record.auth_subprotocol = credential.subprotocol
        try:
            options = parse_listen_query(path, require_model=self.require_model)
        except RemoteProtocolError as exc:
            await reject(request, record, 400, "Bad Request", exc.reason)
            return None
        if options.encoding not in EMULATED_ENCODINGS:
            await reject(
                request, record, 400, "Bad Request",
                f"the emulator only decodes {sorted(EMULATED_ENCODINGS)}, not {options.encoding!r}",
            )
            return None
        record.options = options
        return await request.accept(
            subprotocol=credential.subprotocol,
            extra_headers=[(b"dg-request-id", record.request_id.encode())],
        )
