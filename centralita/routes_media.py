"""``WS /stream/media``: the Telnyx media-stream target.

Telnyx dials us; the upgrade must carry a stream token in ``x-telnyx-streaming-auth-token`` (a
per-call token issued by our call control, or the static ``TELNYX_STREAM_TOKEN``), else 401 at
the handshake and no call exists. We read ``connected`` and ``start``, then hand the socket to a
new call supervisor in the registry and wait for the call to end; the socket is closed here with
a code that says why (1000 stream over, 1001 service going away, 1011 the call failed).

The front door hands upgrades to :class:`MediaStreamRoute`, whose calls read and write the raw
socket (:mod:`centralita.media_socket`); :meth:`MediaRoutes.stream` is the same route through
hypercorn's ASGI, for upgrades that reach it anyway.
"""

from __future__ import annotations

import hmac
import logging
import uuid
from collections.abc import Callable
from typing import Final

import attrs
import trio

from actors.messages import CallInfo
from actors.ports import MediaSocket
from centralita.asgi import Receive, Scope, Send, header, refuse_websocket
from centralita.calls import CallOutcome, CallRegistry, CallsUnavailable
from centralita.front_door import WebSocketUpgrade
from centralita.media_socket import CLOSE_HANDSHAKE_TIMEOUT_S, MAX_MESSAGE_BYTES, RawMediaSocket
from protocols import telnyx_media as wire
from protocols.audio import AudioFormat
from protocols.errors import RemoteProtocolError
from supervisor import ChildStartFailed, SupervisorSpec, cleanup_scope

log = logging.getLogger(__name__)

START_TIMEOUT_S: Final = 5.0
CLOSE_NORMAL: Final = 1000
CLOSE_GOING_AWAY: Final = 1001
CLOSE_POLICY: Final = 1008
CLOSE_INTERNAL_ERROR: Final = 1011
CLOSE_TRY_LATER: Final = 1013
_TOKEN_HEADER: Final = wire.AUTH_TOKEN_HEADER.lower().encode()
TOKEN_REFUSAL: Final = f"missing or unknown {wire.AUTH_TOKEN_HEADER}"

BuildCall = Callable[[CallInfo, MediaSocket, int], SupervisorSpec]


@attrs.define(eq=False)
class AsgiMediaSocket:
    """hypercorn's ASGI WebSocket as the actors' :class:`MediaSocket` port."""

    receive_event: Receive
    send_event: Send
    closed: bool = False

    async def receive(self) -> str | bytes | None:
        if self.closed:
            return None
        message = await self.receive_event()
        if message["type"] == "websocket.disconnect":
            self.closed = True
            return None
        text = message.get("text")
        return text if text is not None else message.get("bytes", b"")

    async def send(self, text: str) -> None:
        if self.closed:
            raise trio.BrokenResourceError("telnyx socket closed")
        await self.send_event({"type": "websocket.send", "text": text})

    async def close(self, code: int, reason: str = "") -> None:
        if not self.closed:
            self.closed = True
            await self.send_event({"type": "websocket.close", "code": code, "reason": reason})


@attrs.define(eq=False)
class StreamTokens:
    """Tokens a stream may present: the static one from settings and per-call ones we issued."""

    static: str | None = None
    issued: dict[str, str] = attrs.field(factory=dict)  # token -> our call id
    # Call control's lookup of the name the call was placed for (the Brain greets by it).
    callee_name_for: Callable[[str], str | None] | None = None

    def call_id_for(self, token: str | None) -> str | None:
        """Our call id for a valid token (a fresh one for the static token); None if invalid."""
        if not token:
            return None
        for issued, call_id in self.issued.items():
            if hmac.compare_digest(issued.encode(), token.encode()):
                return call_id
        if self.static and hmac.compare_digest(self.static.encode(), token.encode()):
            return uuid.uuid4().hex
        return None


def close_code_for(outcome: CallOutcome | None) -> int:
    if outcome is None or outcome.failed:
        return CLOSE_INTERNAL_ERROR
    if "shutting down" in outcome.reason:
        return CLOSE_GOING_AWAY
    return CLOSE_NORMAL


@attrs.define(eq=False)
class MediaRoutes:
    """The call's side of ``/stream/media``, whichever way the socket arrived.

    :class:`MediaStreamRoute` serves upgrades the front door hands over (the normal path); the ASGI
    handler :meth:`stream` serves those that reach hypercorn anyway (an upgrade on a reused
    keep-alive connection, or the app served without the front door). Both check the token the same
    way and then run :meth:`serve_call`.
    """

    registry: CallRegistry
    build_call: BuildCall
    tokens: StreamTokens
    start_timeout_s: float = START_TIMEOUT_S

    def check_token(self, scope: Scope) -> str | None:
        """Our call id for the upgrade's stream token; None (logged) for a stranger."""
        raw = header(scope, _TOKEN_HEADER)
        call_id = self.tokens.call_id_for(raw.decode("latin-1") if raw else None)
        if call_id is None:
            log.warning("media stream refused: bad or missing stream token",
                        extra={"client": str(scope.get("client"))})
        return call_id

    async def stream(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The ASGI handler (see the class docstring)."""
        first = await receive()
        if first["type"] != "websocket.connect":
            return
        call_id = self.check_token(scope)
        if call_id is None:
            await refuse_websocket(send, 401, TOKEN_REFUSAL)
            return
        await send({"type": "websocket.accept"})
        await self.serve_call(AsgiMediaSocket(receive, send), call_id)

    async def serve_call(self, socket: MediaSocket, call_id: str) -> None:
        """Read ``start``, run the call in the registry until it ends, close with a fitting code."""
        start = await self._await_start(socket, call_id)
        if start is None:
            return
        try:
            audio_format = AudioFormat.from_wire(start.media_format.encoding,
                                                 start.media_format.sample_rate)
        except RemoteProtocolError as exc:
            log.warning("unsupported media format", extra={"call_id": call_id,
                                                           "reason": exc.reason})
            await socket.close(CLOSE_POLICY, "unsupported media_format")
            return
        info = CallInfo(call_id=call_id, call_control_id=start.call_control_id,
                        stream_id=start.stream_id, audio_format=audio_format,
                        client_state=start.client_state, started_at=trio.current_time(),
                        callee_name=(self.tokens.callee_name_for(call_id)
                                     if self.tokens.callee_name_for else None))
        try:
            handle = await self.registry.start_call(
                info, lambda: self.build_call(info, socket, start.sequence_number))
        except CallsUnavailable:
            await socket.close(CLOSE_GOING_AWAY, "service shutting down")
            return
        except ChildStartFailed as exc:
            log.error("call failed to start", extra={"call_id": call_id, "error": str(exc)})
            await socket.close(CLOSE_TRY_LATER, "call could not start")
            return
        await handle.done.wait()
        await socket.close(close_code_for(handle.outcome), "call ended")

    async def _await_start(self, socket: MediaSocket, call_id: str) -> wire.Start | None:
        """Read ``connected`` (optional) and ``start``; close politely on anything else."""
        with trio.move_on_after(self.start_timeout_s):
            while True:
                text = await socket.receive()
                if text is None:
                    return None
                try:
                    msg = wire.decode(text)
                except RemoteProtocolError as exc:
                    log.warning("bad frame before start", extra={"call_id": call_id,
                                                                 "reason": exc.reason})
                    continue
                if isinstance(msg, wire.Start):
                    return msg
                if isinstance(msg, wire.Stop):
                    await socket.close(CLOSE_NORMAL)
                    return None
        log.warning("no start frame in time", extra={"call_id": call_id})
        await socket.close(CLOSE_POLICY, "no start frame")
        return None


@attrs.define(eq=False)
class MediaStreamRoute:
    """``/stream/media`` as a :class:`~centralita.front_door.SocketRoute`: the raw-socket path.

    The front door hands it upgrades; the socket becomes a :class:`RawMediaSocket` the call's
    actors read and write directly (see :mod:`centralita.media_socket` for why). Called as an ASGI
    app (an upgrade that reached hypercorn), it is :meth:`MediaRoutes.stream`.
    """

    routes: MediaRoutes
    max_message_bytes: int = MAX_MESSAGE_BYTES

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()  # nothing route-wide: each call owns its socket

    async def serve_upgrade(self, upgrade: WebSocketUpgrade) -> None:
        call_id = self.routes.check_token(upgrade.scope)
        if call_id is None:
            await upgrade.refuse(401, TOKEN_REFUSAL)
            return
        await upgrade.accept()
        socket = RawMediaSocket(upgrade.sock, upgrade.received,
                                max_message_bytes=self.max_message_bytes)
        try:
            await self.routes.serve_call(socket, call_id)
        finally:  # cancelled (the server's graceful timeout ran out) or done: close properly
            with cleanup_scope(CLOSE_HANDSHAKE_TIMEOUT_S):
                await socket.close(CLOSE_GOING_AWAY, "service shutting down")  # if not yet
            await socket.finish()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.routes.stream(scope, receive, send)
