"""The caller's side of a call as Telnyx Media Streaming presents it: a WebSocket client.

Telnyx dials our ``stream_url`` (telnyx.md §1): ``connected``, ``start``, then paced 20 ms
``media`` frames of the caller's voice (track ``inbound``), maybe ``dtmf``, finally ``stop`` and a
close. At the same time it plays what we send back (§2, §2.6): ``media`` goes into a playout
queue drained in real time, a ``mark`` is echoed when the audio queued before it has played (at
once when nothing is queued or playing), ``clear`` empties the queue and echoes the pending
marks at once. Malformed frames from us get an ``error`` frame with code 100003 (§1.8, §2.6).

Usage::

    caller = TelnyxCaller(url, token="secret", audio=encode(script_audio([1.2], 2.0)), speed=4.0)
    record = await caller.run()           # or: await nursery.start(caller.run) -> CallerRecord

Timing: frame ``k`` goes out at ``t0 + k * 20 ms / speed`` (absolute deadlines from
``trio.current_time()``, so there is no drift), where ``t0`` is when ``start`` was sent. "Call
time" (``dtmf`` times, ``hangup_after_s``) is audio time: wall time x ``speed``. After the audio
the caller keeps streaming codec silence until ``hangup_after_s`` (Telnyx streams as long as the
call is up). Playout drains at ``speed`` x real time too.

Sequence numbers count every frame Telnyx sends on the stream: ``start`` is 1, then media,
dtmf, mark echoes, error and stop share the counter. ``media.chunk`` counts media frames from 1
and ``media.timestamp`` is milliseconds of audio since the stream began (units UNCONFIRMED).

Fault injection: ``end_with="drop"`` (TCP closed without a close frame), ``"close"`` (close 1000
without ``stop``); ``jitter_s`` (a random extra delay per frame, later frames still keep their
deadlines, so a late frame makes a burst) and ``reorder_probability`` (a frame swaps places with
the next one).

A refused handshake raises :class:`CallRejected` (``status_code``, ``headers``, ``body``). If the
server closes the socket first, :meth:`TelnyxCaller.run` returns normally with
``ended_by="server_closed"`` and the close code. The socket is closed on every path.
"""

from __future__ import annotations

import base64
import collections
import random
import uuid
from collections.abc import Sequence
from typing import Final, Literal

import attrs
import trio
from trio_websocket import ConnectionClosed, ConnectionRejected, WebSocketConnection

from bench.emulators.caller_records import (CallerRecord, CallRejected, MarkEcho, PlayoutSegment,
                                            ReceivedFrame)
from bench.emulators.ws_client import open_ws_client
from protocols.audio import AudioFormat, Codec
from protocols.errors import RemoteProtocolError
from protocols.telnyx_media import (
    AUTH_TOKEN_HEADER,
    Clear,
    Connected,
    Dtmf,
    Error,
    Mark,
    MarkOut,
    Media,
    MediaFormat,
    MediaOut,
    Start,
    Stop,
    TelnyxInbound,
    decode_outbound,
    encode_inbound,
)

__all__ = [
    "FRAME_S",
    "CallRejected",
    "CallerRecord",
    "MarkEcho",
    "PlayoutSegment",
    "ReceivedFrame",
    "TelnyxCaller",
]

FRAME_S: Final = 0.02
#: Telnyx's malformed_frame error code (telnyx.md §1.8, second-hand).
MALFORMED_FRAME_CODE: Final = 100003
#: Frames we may send before the caller reads them (trio-websocket's queue between reader and us).
RECEIVE_QUEUE_FRAMES: Final = 64

EndWith = Literal["stop", "close", "drop"]


def _default_client_state() -> str:
    return base64.b64encode(b'{"app":"centralita","scenario":"emulated"}').decode()


@attrs.define(eq=False)
class TelnyxCaller:
    """One emulated call's media stream towards ``url``. See the module docstring."""

    url: str
    token: str | None = None
    codec: Codec = Codec.PCMU
    sample_rate_hz: int = 8000
    #: The caller's voice, encoded in ``codec`` (L16: big-endian). Padded with silence to 20 ms.
    audio: bytes = b""
    speed: float = 1.0
    #: (call time in s, digit) key presses.
    dtmf: Sequence[tuple[float, str]] = ()
    #: Call time of the hangup; None: when the audio ends.
    hangup_after_s: float | None = None
    end_with: EndWith = "stop"
    jitter_s: float = 0.0
    reorder_probability: float = 0.0
    seed: int = 0
    from_: str = "+34910000001"
    to: str = "+34910000002"
    client_state: str | None = attrs.field(factory=_default_client_state)
    custom_parameters: dict[str, str] = attrs.field(factory=dict)
    send_in_band_token: bool = True
    stream_id: str = attrs.field(factory=lambda: str(uuid.uuid4()))
    call_control_id: str = attrs.field(factory=lambda: "v3:" + uuid.uuid4().hex)
    call_session_id: str = attrs.field(factory=lambda: str(uuid.uuid4()))
    user_id: str = attrs.field(factory=lambda: str(uuid.uuid4()))
    _format: AudioFormat = attrs.field(init=False)
    _sequence: int = attrs.field(init=False, default=0)
    _queue: collections.deque[bytes | str] = attrs.field(init=False, factory=collections.deque)
    _queue_changed: trio.Event = attrs.field(init=False, factory=trio.Event)
    _playing: bool = attrs.field(init=False, default=False)
    _rng: random.Random = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self._format = AudioFormat(self.codec, self.sample_rate_hz)
        self._rng = random.Random(self.seed)
        if self.speed <= 0:
            raise ValueError("speed must be positive")

    # -- public -------------------------------------------------------------------------------

    async def run(
        self, *, task_status: trio.TaskStatus[CallerRecord] = trio.TASK_STATUS_IGNORED
    ) -> CallerRecord:
        """Place the call: stream until hangup, then end as ``end_with`` says; returns the record.

        ``task_status.started(record)`` once ``start`` has been sent.

        Raises:
            CallRejected: the handshake was refused (HTTP status).
            OSError, trio_websocket.HandshakeError: nothing listens / no handshake.
        """
        record = CallerRecord(stream_id=self.stream_id, call_control_id=self.call_control_id)
        headers = [] if self.token is None else [(AUTH_TOKEN_HEADER.encode(), self.token.encode())]
        try:
            async with open_ws_client(
                self.url, extra_headers=headers, message_queue_size=RECEIVE_QUEUE_FRAMES
            ) as ws:
                await self._call(ws, record, task_status)
        except ConnectionRejected as exc:
            raise CallRejected(exc.status_code, exc.headers or (), exc.body or b"") from exc
        record.ended_at = trio.current_time()
        return record

    # -- the call -----------------------------------------------------------------------------

    async def _call(
        self, ws: WebSocketConnection, record: CallerRecord, task_status: trio.TaskStatus[CallerRecord]
    ) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._read_loop, ws, record, nursery.cancel_scope)
            nursery.start_soon(self._playout_loop, ws, record)
            try:
                await self._send(ws, record, "connected", Connected(
                    version="1.0.0",
                    auth_token=self.token if self.send_in_band_token else None,
                ))
                record.connected_at = trio.current_time()
                await self._send(ws, record, "start", self._start_frame())
                record.started_at = trio.current_time()
                task_status.started(record)
                await self._stream_media(ws, record)
                await self._hang_up(ws, record)
            except ConnectionClosed as exc:
                self._server_closed(record, exc)
            nursery.cancel_scope.cancel()

    def _next_sequence(self) -> int:
        self._sequence += 1
        return self._sequence

    def _start_frame(self) -> Start:
        return Start(
            stream_id=self.stream_id,
            sequence_number=self._next_sequence(),
            call_control_id=self.call_control_id,
            call_session_id=self.call_session_id,
            user_id=self.user_id,
            from_=self.from_,
            to=self.to,
            client_state=self.client_state,
            custom_parameters=dict(self.custom_parameters),
            media_format=MediaFormat(
                encoding=self.codec.value, sample_rate=self.sample_rate_hz, channels=1
            ),
        )

    async def _send(
        self, ws: WebSocketConnection, record: CallerRecord, event: str, msg: TelnyxInbound
    ) -> None:
        await ws.send_message(encode_inbound(msg))
        record.sent.append((trio.current_time(), event, getattr(msg, "sequence_number", None)))

    async def _stream_media(self, ws: WebSocketConnection, record: CallerRecord) -> None:
        frame_bytes = self._format.bytes_per_20ms
        audio_frames = -(-len(self.audio) // frame_bytes)
        total_s = self.hangup_after_s if self.hangup_after_s is not None else audio_frames * FRAME_S
        total_frames = max(0, round(total_s / FRAME_S))
        silence = self._format.silence_frame()
        dtmf = sorted(self.dtmf)
        t0 = trio.current_time()
        period = FRAME_S / self.speed
        held: Media | None = None
        for index in range(total_frames):
            call_s = index * FRAME_S
            while dtmf and dtmf[0][0] <= call_s:
                _, digit = dtmf.pop(0)
                await self._send(ws, record, "dtmf", Dtmf(
                    digit=digit, stream_id=self.stream_id, sequence_number=self._next_sequence(),
                ))
                record.dtmf_sent.append((trio.current_time(), digit))
            deadline = t0 + index * period
            if self.jitter_s:
                deadline += self._rng.uniform(0, self.jitter_s)
            await trio.sleep_until(deadline)
            payload = self.audio[index * frame_bytes : (index + 1) * frame_bytes] or silence
            payload += silence[len(payload) :]
            frame = Media(
                stream_id=self.stream_id, sequence_number=self._next_sequence(), track="inbound",
                payload=payload, chunk=index + 1, timestamp=round(call_s * 1000),
            )
            if held is None and self.reorder_probability and self._rng.random() < self.reorder_probability:
                held = frame  # goes out after the next frame
                continue
            await self._send_media(ws, record, frame)
            if held is not None:
                await self._send_media(ws, record, held)
                held = None
        if held is not None:
            await self._send_media(ws, record, held)
        await trio.sleep_until(t0 + total_frames * period)
        for _, digit in dtmf:  # key presses scheduled at or after the hangup time
            await self._send(ws, record, "dtmf", Dtmf(
                digit=digit, stream_id=self.stream_id, sequence_number=self._next_sequence(),
            ))
            record.dtmf_sent.append((trio.current_time(), digit))

    async def _send_media(self, ws: WebSocketConnection, record: CallerRecord, frame: Media) -> None:
        await self._send(ws, record, "media", frame)
        record.media_sent_at.append(trio.current_time())
        record.media_frames += 1

    async def _hang_up(self, ws: WebSocketConnection, record: CallerRecord) -> None:
        if self.end_with == "drop":
            record.ended_by = "drop"
            record.close_code = 1006
            await trio.aclose_forcefully(ws._stream)  # noqa: SLF001 - an abrupt TCP close, on purpose
            return
        if self.end_with == "stop":
            await self._send(ws, record, "stop", Stop(
                stream_id=self.stream_id, sequence_number=self._next_sequence(),
                call_control_id=self.call_control_id, user_id=self.user_id,
            ))
        record.ended_by = self.end_with
        record.close_code = 1000
        await ws.aclose(1000)

    def _server_closed(self, record: CallerRecord, exc: ConnectionClosed) -> None:
        if record.ended_by is None:
            record.ended_by = "server_closed"
            record.close_code = exc.reason.code if exc.reason is not None else 1006
            record.close_reason = exc.reason.reason if exc.reason is not None else None

    # -- what the service sends back ------------------------------------------------------------

    async def _read_loop(
        self, ws: WebSocketConnection, record: CallerRecord, call_scope: trio.CancelScope
    ) -> None:
        while True:
            try:
                raw = await ws.get_message()
            except ConnectionClosed as exc:
                self._server_closed(record, exc)
                call_scope.cancel()  # the service hung up on us: stop streaming
                return
            at = trio.current_time()
            if isinstance(raw, bytes):
                record.received.append(ReceivedFrame(at, raw, None, "binary frame"))
                await self._send_error(ws, record, "binary frames are not supported")
                continue
            try:
                msg = decode_outbound(raw)
            except RemoteProtocolError as exc:
                record.received.append(ReceivedFrame(at, raw, None, exc.reason))
                await self._send_error(ws, record, exc.reason)
                continue
            record.received.append(ReceivedFrame(at, raw, msg))
            if isinstance(msg, MediaOut):
                self._queue.append(msg.payload)
                self._wake_playout()
            elif isinstance(msg, MarkOut):
                if self._queue or self._playing:
                    self._queue.append(msg.name)
                    self._wake_playout()
                else:
                    await self._echo_mark(ws, record, msg.name, played=True)
            else:
                assert isinstance(msg, Clear)
                record.clears.append(at)
                pending = [item for item in self._queue if isinstance(item, str)]
                self._queue.clear()
                if record.segments and record.segments[-1].ended_at is None:
                    record.segments[-1].cleared = True
                for name in pending:
                    await self._echo_mark(ws, record, name, played=False)

    async def _send_error(self, ws: WebSocketConnection, record: CallerRecord, detail: str) -> None:
        record.errors_sent.append(detail)
        try:
            await self._send(ws, record, "error", Error(
                code=MALFORMED_FRAME_CODE, title="malformed_frame", detail=detail[:200],
                stream_id=self.stream_id, sequence_number=self._next_sequence(),
            ))
        except ConnectionClosed:
            pass

    async def _echo_mark(
        self, ws: WebSocketConnection, record: CallerRecord, name: str, *, played: bool
    ) -> None:
        try:
            await self._send(ws, record, "mark", Mark(
                name=name, stream_id=self.stream_id, sequence_number=self._next_sequence(),
            ))
        except ConnectionClosed:
            return
        record.marks.append(MarkEcho(trio.current_time(), name, played))

    def _wake_playout(self) -> None:
        self._queue_changed.set()

    async def _playout_loop(self, ws: WebSocketConnection, record: CallerRecord) -> None:
        frame_bytes = self._format.bytes_per_20ms
        bytes_per_s = self._format.sample_rate_hz * self._format.codec.bytes_per_sample * self.speed
        while True:
            while not self._queue:
                self._queue_changed = trio.Event()
                await self._queue_changed.wait()
            segment = PlayoutSegment(started_at=trio.current_time())
            record.segments.append(segment)
            self._playing = True
            tick = segment.started_at
            while self._queue:
                head = self._queue.popleft()
                if isinstance(head, str):
                    await self._echo_mark(ws, record, head, played=True)
                    continue
                chunk = head[:frame_bytes]
                if len(head) > frame_bytes:
                    self._queue.appendleft(head[frame_bytes:])
                record.played += chunk
                segment.bytes_played += len(chunk)
                tick += len(chunk) / bytes_per_s
                await trio.sleep_until(tick)  # this chunk has now finished playing
            self._playing = False
            segment.ended_at = trio.current_time()
