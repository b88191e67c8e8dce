"""AuraTts: the TTS port (:mod:`actors.tts`) over Deepgram Aura's streaming ``/v1/speak`` socket.

The wire format is :mod:`protocols.deepgram_speak`; the behaviour follows
``/work/shared/protocols/deepgram.md`` §5.2. One WebSocket per call session, opened when the
session opens (so the first reply does not pay for DNS, TCP and TLS), and:

* ``synthesize(text)`` sends ``Speak`` + ``Flush`` and yields the binary audio frames as they
  arrive, until ``Flushed``.
* ``cancel()`` (barge-in) sends ``Clear`` and discards audio until ``Cleared``: frames in flight
  before the Clear never reach the next text. Without a synthesis in flight it costs nothing.
* A socket that dropped (or that Deepgram closed while idle) between texts is replaced before
  the next ``Speak``; a drop before the first audio of a text is retried once on a new socket. A
  drop after audio was delivered, a stall, a refused handshake or a policy close (1008) raise
  :class:`AuraTtsError`: the Speaker fails and its supervisor restarts it with a new session.
* The flush limit (20 per 60 s, more are ignored with a ``Warning``) is kept on our side: one
  ``Flush`` per ``synthesize``; when the window is full the next one waits for a slot. Waiting
  lets the Brain's later chunks queue up in the Speaker, which *merges the chunks already waiting*
  into one text (one Flush); so under pressure the flush rate falls by itself.
* Leaving the session sends ``Close`` and waits (bounded, shielded when cancelled) for the server
  to close.

trio-websocket's connection context must be entered and left by one task, but reconnects happen
in whichever task calls ``synthesize``; so a small *keeper* task in the session's nursery owns
the connection contexts and dials on request, while any task sends and receives on the open one.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import asynccontextmanager
from typing import Final

import attrs
import trio
from trio_websocket import (
    ConnectionClosed, ConnectionRejected, ConnectionTimeout, HandshakeError, WebSocketConnection,
)

from actors.ws_client import abort_ws, is_cancellation, open_ws_client, sole_error
from protocols.audio import AudioFormat, Codec, l16be_encode, pcm16le_decode
from protocols.deepgram_options import auth_header
from protocols.deepgram_speak import (
    FLUSH_LIMIT_PER_WINDOW, FLUSH_WINDOW_S, SPEAK_URL, Clear, Cleared, Close, Flush, Flushed,
    Metadata, Speak, SpeakOptions, WarningMessage, build_speak_url, decode_server, encode_client,
)
from protocols.errors import RemoteProtocolError
from supervisor import cleanup_scope

__all__ = ["AuraSession", "AuraSessionStatistics", "AuraTts", "AuraTtsError"]

logger = logging.getLogger(__name__)

DEFAULT_MODEL: Final = "aura-2-celeste-es"
CONNECT_TIMEOUT_S: Final = 3.0
CLOSE_TIMEOUT_S: Final = 2.0
SEND_TIMEOUT_S: Final = 2.0
#: Longest silence from Deepgram while a Flush (or a Clear) is owed before we call it stalled.
REPLY_TIMEOUT_S: Final = 10.0
#: After a cancellation, how long the Close frame gets before the socket is closed.
CLOSE_GRACE_AFTER_CANCEL_S: Final = 0.1
#: Messages trio-websocket may buffer between its reader and us (audio frames are ~20-100 ms).
WS_QUEUE_MESSAGES: Final = 32

_ENCODINGS: Final = {Codec.PCMU: "mulaw", Codec.PCMA: "alaw", Codec.L16: "linear16"}
_FLUSH: Final = encode_client(Flush())
_CLEAR: Final = encode_client(Clear())
_CLOSE: Final = encode_client(Close())


class AuraTtsError(Exception):
    """Aura failed: refused handshake, policy close, drop mid-audio, stall. The Speaker fails."""


class _Dropped(Exception):
    """The socket closed under us (internal: retried or turned into AuraTtsError)."""


@attrs.frozen
class AuraSessionStatistics:
    connects: int
    flushes: int
    clears: int
    warnings: int
    audio_bytes: int
    flush_waits: int  # times the flush limit made a synthesize wait


@attrs.define(eq=False)
class AuraTts:
    """A configured Aura voice; :meth:`open_session` opens one call's socket (a `TtsEngine`)."""

    api_key: str = attrs.field(repr=False)
    speak_url: str = SPEAK_URL
    model: str = DEFAULT_MODEL
    speed: float | None = None
    connect_timeout_s: float = CONNECT_TIMEOUT_S
    close_timeout_s: float = CLOSE_TIMEOUT_S
    send_timeout_s: float = SEND_TIMEOUT_S
    reply_timeout_s: float = REPLY_TIMEOUT_S
    flush_limit: int = FLUSH_LIMIT_PER_WINDOW
    flush_window_s: float = FLUSH_WINDOW_S

    def options_for(self, audio_format: AudioFormat) -> SpeakOptions:
        """mu-law/A-law at 8 kHz for G.711 calls; linear16 at the call's rate for L16 (swapped to
        big-endian by the session, as Telnyx wants it)."""
        return SpeakOptions(model=self.model, encoding=_ENCODINGS[audio_format.codec],
                            sample_rate=audio_format.sample_rate_hz, speed=self.speed)

    @asynccontextmanager
    async def open_session(self, audio_format: AudioFormat) -> AsyncIterator[AuraSession]:
        """Connect (raises :class:`AuraTtsError` if Deepgram refuses) and yield the session."""
        url = build_speak_url(self.speak_url, self.options_for(audio_format))
        dials_in, dials_out = trio.open_memory_channel[_Dial](1)
        session = AuraSession(self, url, dials_in, swap_l16=audio_format.codec is Codec.L16)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(session._keep_connections, dials_out)
                cancelled = False
                try:
                    await session._connection()
                    yield session
                except BaseException as exc:
                    cancelled = is_cancellation(exc)
                    raise
                finally:
                    with cleanup_scope(self.close_timeout_s + self.send_timeout_s):
                        await session._close(cancelled=cancelled)
                    session._ended = True
                    if session._keeper_scope is not None:
                        session._keeper_scope.shield = False
                    nursery.cancel_scope.cancel()
        except BaseExceptionGroup as group:
            raise sole_error(group) from None


@attrs.define(eq=False)
class _Dial:
    """A request to the keeper for a fresh connection, and its answer."""

    done: trio.Event = attrs.field(factory=trio.Event)
    connection: _Connection | None = None
    error: Exception | None = None


@attrs.define(eq=False)
class _Connection:
    ws: WebSocketConnection
    released: trio.Event = attrs.field(factory=trio.Event)
    request_id: str = ""

    @property
    def usable(self) -> bool:
        return self.ws.closed is None and not self.released.is_set()


@attrs.define(eq=False)
class AuraSession:
    """One call's Aura socket (a `TtsSession`). Made by :meth:`AuraTts.open_session` only."""

    engine: AuraTts
    url: str
    _dials: trio.MemorySendChannel[_Dial]
    swap_l16: bool = False
    _conn: _Connection | None = None
    _dial: _Dial | None = None
    _ended: bool = False
    _keeper_scope: trio.CancelScope | None = None
    _owed: bool = False  # a Flush is unanswered (synthesis in flight or abandoned)
    _flush_times: deque[float] = attrs.field(factory=deque)
    _odd_byte: bytes = b""  # L16: half a sample carried to the next frame
    _counts: dict[str, int] = attrs.field(factory=lambda: dict.fromkeys(
        ("connects", "flushes", "clears", "warnings", "audio_bytes", "flush_waits"), 0))

    def statistics(self) -> AuraSessionStatistics:
        return AuraSessionStatistics(**self._counts)

    # -- the port -------------------------------------------------------------------------------

    async def synthesize(self, text: str) -> AsyncGenerator[bytes, None]:
        """Speak + Flush ``text``; yield its audio until Flushed (see the module docstring)."""
        if not text.strip():
            return
        if self._owed:  # the previous iterator was abandoned without cancel(): never leak it
            await self.cancel()
        await self._wait_for_flush_slot()
        for attempt in (1, 2):
            conn = await self._connection()
            yielded = False
            try:
                await self._send(conn, encode_client(Speak(text)))
                await self._send(conn, _FLUSH)
                self._owed = True
                self._flush_times.append(trio.current_time())
                self._counts["flushes"] += 1
                while True:
                    message = await self._receive(conn)
                    if isinstance(message, bytes):
                        audio = self._convert(message)
                        if audio:
                            self._counts["audio_bytes"] += len(audio)
                            yielded = True
                            yield audio
                    elif isinstance(message, Flushed):
                        self._owed = False
                        return
            except _Dropped as exc:
                self._owed = False
                self._odd_byte = b""
                if yielded or attempt == 2:
                    raise AuraTtsError(f"Aura socket dropped mid-synthesis: {exc}") from None
                logger.info("Aura socket dropped before audio; retrying on a new socket")

    async def cancel(self) -> None:
        """Barge-in: Clear, and drop audio until Cleared (nothing to do when nothing is owed)."""
        self._odd_byte = b""
        if not self._owed:
            return
        self._owed = False
        conn = self._conn
        if conn is None or not conn.usable:
            return  # the socket is gone, and with it everything Deepgram had pending
        self._counts["clears"] += 1
        try:
            await self._send(conn, _CLEAR)
            while not isinstance(await self._receive(conn), Cleared):
                pass  # audio (and a Flushed) of the cleared text
        except _Dropped:
            pass  # gone: nothing pending any more; the next synthesize reconnects

    # -- connection -----------------------------------------------------------------------------

    async def _connection(self) -> _Connection:
        conn = self._conn
        if conn is not None and conn.usable:
            return conn
        if conn is not None:
            conn.released.set()
            self._conn = None
        if self._dial is None:  # an earlier, cancelled caller may have left one in flight
            self._dial = _Dial()
            self._dials.send_nowait(self._dial)
        dial = self._dial
        await dial.done.wait()
        self._dial = None
        if dial.error is not None:
            raise AuraTtsError(f"cannot connect to Aura: {dial.error}") from dial.error
        assert dial.connection is not None
        self._conn = dial.connection
        self._counts["connects"] += 1
        return dial.connection

    async def _keep_connections(self, dials: trio.MemoryReceiveChannel[_Dial]) -> None:
        """Own each connection's context for as long as it is in use (see the module docstring)."""
        engine = self.engine
        async for dial in dials:
            try:
                async with open_ws_client(
                    self.url, extra_headers=[auth_header(engine.api_key)],
                    connect_timeout_s=engine.connect_timeout_s,
                    close_timeout_s=engine.close_timeout_s, message_queue_size=WS_QUEUE_MESSAGES,
                ) as ws:
                    conn = _Connection(ws)
                    dial.connection = conn
                    dial.done.set()
                    # Shielded: on cancellation the session still sends Close on this socket
                    # first; it releases every connection it was handed (see _close).
                    with trio.CancelScope(shield=not self._ended) as self._keeper_scope:
                        await conn.released.wait()
            except ConnectionRejected as exc:
                dial.error = AuraTtsError(f"handshake refused with HTTP {exc.status_code}")
            except (ConnectionTimeout, HandshakeError, OSError) as exc:
                dial.error = AuraTtsError(f"connect failed: {exc!r}")
            dial.done.set()

    async def _close(self, *, cancelled: bool) -> None:
        """Close politely: Close, then wait (bounded) for the server's close.

        When cancelled, trio-websocket's reader is cancelled with us and the server's close reply
        cannot be read: Close goes out, gets a moment, and the TCP stream is dropped (else the
        keeper's polite close would wait out its whole timeout).
        """
        reply_wait_s = CLOSE_GRACE_AFTER_CANCEL_S if cancelled else self.engine.close_timeout_s
        conn, self._conn = self._conn, None
        dial, self._dial = self._dial, None
        if dial is not None and dial.connection is not None:
            dial.connection.released.set()  # dialled for a caller that was cancelled meanwhile
        if conn is None:
            return
        try:
            if conn.usable:
                await self._send(conn, _CLOSE)
                with trio.move_on_after(reply_wait_s):
                    while True:
                        await conn.ws.get_message()  # anything still in flight is not wanted
        except (_Dropped, ConnectionClosed):
            pass
        finally:
            if cancelled and conn.ws.closed is None:
                await abort_ws(conn.ws)
            conn.released.set()

    # -- wire -----------------------------------------------------------------------------------

    async def _wait_for_flush_slot(self) -> None:
        window, times = self.engine.flush_window_s, self._flush_times
        while True:
            now = trio.current_time()
            while times and times[0] <= now - window:
                times.popleft()
            if len(times) < self.engine.flush_limit:
                return
            self._counts["flush_waits"] += 1
            logger.warning("Aura flush limit reached (%d per %.0fs); waiting %.1fs",
                           self.engine.flush_limit, window, times[0] + window - now)
            await trio.sleep_until(times[0] + window)

    async def _send(self, conn: _Connection, text: str) -> None:
        with trio.move_on_after(self.engine.send_timeout_s) as waited:
            try:
                await conn.ws.send_message(text)
            except ConnectionClosed as exc:
                raise _Dropped(_describe(exc)) from None
        if waited.cancelled_caught:  # a full socket buffer: the peer is gone in all but name
            await abort_ws(conn.ws)
            raise AuraTtsError(f"send to Aura stuck for {self.engine.send_timeout_s:g}s")

    async def _receive(self, conn: _Connection) -> bytes | Flushed | Cleared | object:
        """The next audio frame or meaningful control message (Metadata/Warning handled here)."""
        while True:
            with trio.move_on_after(self.engine.reply_timeout_s) as waited:
                try:
                    frame = await conn.ws.get_message()
                except ConnectionClosed as exc:
                    code = exc.reason.code if exc.reason is not None else None
                    if code in (1008, 1003, 1002):  # our protocol error: retrying cannot help
                        raise AuraTtsError(f"Aura closed the socket: {_describe(exc)}") from None
                    raise _Dropped(_describe(exc)) from None
            if waited.cancelled_caught:
                await abort_ws(conn.ws)
                raise AuraTtsError(f"no reply from Aura for {self.engine.reply_timeout_s:g}s")
            if isinstance(frame, bytes):
                return frame
            try:
                message = decode_server(frame)
            except RemoteProtocolError as exc:
                logger.warning("undecodable Aura message skipped: %s", exc.reason)
                continue
            if isinstance(message, Metadata):
                conn.request_id = message.request_id
            elif isinstance(message, WarningMessage):
                self._counts["warnings"] += 1
                logger.warning("Aura warning %s: %s", message.code, message.description)
            elif isinstance(message, Flushed | Cleared):
                return message
            # Unknown server types are tolerated (forward compatibility).

    def _convert(self, data: bytes) -> bytes:
        """Deepgram's linear16 is little-endian; Telnyx L16 is big-endian. G.711 passes as is."""
        if not self.swap_l16:
            return data
        data = self._odd_byte + data
        whole = len(data) - len(data) % 2
        self._odd_byte = data[whole:]
        return l16be_encode(pcm16le_decode(data[:whole])) if whole else b""


def _describe(exc: ConnectionClosed) -> str:
    reason = exc.reason
    if reason is None:
        return "closed"
    return f"close {reason.code} {reason.reason or ''}".strip()
