"""TelnyxApiEmulator over loopback: REST through httpx and the pure request builders, webhooks into
a small hypercorn receiver that checks every signature with the emulator's public key, and the
media leg into a small trio-websocket server standing in for our ``/stream/media`` endpoint.

Fixtures each own their nursery, so teardown runs in order: the test's client, then the
emulator (which closes its webhook client), then the receiver and the media server.
"""

from __future__ import annotations

import io
import logging
import time
import uuid
import wave
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from functools import partial
from typing import Any, cast

import attrs
import httpx
import numpy as np
import pytest
import trio
from hypercorn.config import Config
from hypercorn.trio.run import worker_serve
from hypercorn.utils import wrap_app
from trio_websocket import ConnectionClosed, WebSocketRequest, serve_websocket

from bench.emulators.caller_audio import encode, speech_like
from bench.emulators.telnyx_api import CalleeScript, ScriptedTranscript, TelnyxApiEmulator
from protocols.audio import Codec
from protocols.telnyx_call_control import (
    CALL_HAS_ENDED,
    ApiRequest,
    CallHangup,
    CallInitiated,
    CallPlaybackEnded,
    CallTranscription,
    DialResult,
    StreamingFailed,
    WebhookEvent,
    answer,
    decode_api_errors,
    decode_dial_response,
    decode_webhook,
    dial,
    hangup,
    playback_start,
    playback_stop,
    speak,
    transcription_start,
)
from protocols.telnyx_media import AUTH_TOKEN_HEADER, Connected, Media, Start, Stop, TelnyxInbound, decode
from protocols.telnyx_signature import WebhookSignatureError, verify_webhook

KEY = "KEY-test"
TOKEN = "stream-s3cret"
OURS = "+34910000001"
CALLEE = "+34910000002"
STATE = b'{"campaign":"demo","n":1}'

_Scope = Mapping[str, Any]
_Receive = Callable[[], Awaitable[dict[str, Any]]]
_Send = Callable[[dict[str, Any]], Awaitable[None]]


async def serve_asgi(app: Any, *, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> None:
    config = Config()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = None
    config.errorlog = logging.getLogger(__name__)
    sockets = config.create_sockets()
    try:
        for sock in sockets.insecure_sockets:
            sock.listen(config.backlog)
        async with trio.open_nursery() as nursery:
            binds = await nursery.start(partial(
                worker_serve, wrap_app(app, config.wsgi_max_body_size, "asgi"), config, sockets=sockets))
            task_status.started(binds[0])
    finally:
        for sock in sockets.insecure_sockets:
            sock.close()


@attrs.define(eq=False)
class Received:
    headers: dict[str, str]
    body: bytes
    status: int
    event: WebhookEvent | None = None
    rejected: str | None = None


@attrs.define(eq=False)
class Receiver:
    """Our webhook endpoint (signature checked, 401 otherwise) and a file server for playback."""

    public_key: str = ""
    url: str = ""
    received: list[Received] = attrs.field(factory=list)
    files: dict[str, bytes] = attrs.field(factory=dict)
    gets: list[str] = attrs.field(factory=list)
    fail_next: int = 0
    changed: trio.Event = attrs.field(factory=trio.Event)

    async def app(self, scope: _Scope, receive: _Receive, send: _Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        status, content = self.handle(scope, body)
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": content})
        self.changed.set()
        self.changed = trio.Event()

    def handle(self, scope: _Scope, body: bytes) -> tuple[int, bytes]:
        if scope["method"] == "GET":
            self.gets.append(scope["path"])
            content = self.files.get(scope["path"])
            return (404, b"not found") if content is None else (200, content)
        headers = {k.decode(): v.decode() for k, v in scope["headers"]}
        try:
            verify_webhook(self.public_key, headers, body, time.time())
        except WebhookSignatureError as exc:
            self.received.append(Received(headers, body, 401, rejected=exc.reason))
            return 401, b""
        status = 200
        if self.fail_next:
            self.fail_next -= 1
            status = 500
        self.received.append(Received(headers, body, status, event=decode_webhook(body)))
        return status, b""

    def events(self, call_control_id: str | None = None) -> list[WebhookEvent]:
        """Accepted (2xx, verified) events, in arrival order, duplicates included."""
        return [
            r.event for r in self.received
            if r.event is not None and r.status == 200
            and call_control_id in (None, getattr(r.event.payload, "call_control_id", None))
        ]

    def types(self, call_control_id: str | None = None) -> list[str]:
        return [e.event_type for e in self.events(call_control_id)]

    async def wait_for(self, event_type: str, call_control_id: str | None = None, timeout_s: float = 5.0
                       ) -> WebhookEvent:
        with trio.fail_after(timeout_s):
            while True:
                for event in self.events(call_control_id):
                    if event.event_type == event_type:
                        return event
                await self.changed.wait()


@attrs.define(eq=False)
class MediaConnection:
    token: bytes | None
    frames: list[TelnyxInbound] = attrs.field(factory=list)
    close_code: int | None = None
    closed: trio.Event = attrs.field(factory=trio.Event)

    def of_type(self, cls: type) -> list[Any]:
        return [f for f in self.frames if isinstance(f, cls)]


@attrs.define(eq=False)
class MediaServer:
    """Stands in for our media endpoint: accepts (or rejects) and records every frame."""

    url: str = ""
    reject_status: int | None = None
    connections: list[MediaConnection] = attrs.field(factory=list)
    connected: trio.Event = attrs.field(factory=trio.Event)

    async def handler(self, request: WebSocketRequest) -> None:
        stream = request._connection._stream  # noqa: SLF001 - trio-websocket leaks it otherwise
        try:
            conn = MediaConnection(dict(request.headers).get(AUTH_TOKEN_HEADER.encode()))
            self.connections.append(conn)
            self.connected.set()
            if self.reject_status is not None:
                await request.reject(self.reject_status, body=b"bad token")
                return
            ws = await request.accept()
            try:
                while True:
                    conn.frames.append(decode(await ws.get_message()))
            except ConnectionClosed as exc:
                conn.close_code = exc.reason.code if exc.reason else None
            conn.closed.set()
        finally:
            await trio.aclose_forcefully(stream)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    rec = Receiver()
    async with trio.open_nursery() as nursery:
        rec.url = await nursery.start(serve_asgi, rec.app)
        yield rec
        nursery.cancel_scope.cancel()


@pytest.fixture
async def media() -> AsyncIterator[MediaServer]:
    server = MediaServer()
    async with trio.open_nursery() as nursery:
        ws_server = await nursery.start(serve_websocket, server.handler, "127.0.0.1", 0, None)
        server.url = f"ws://127.0.0.1:{ws_server.port}/stream/media"
        yield server
        nursery.cancel_scope.cancel()


@pytest.fixture
async def em(receiver: Receiver) -> AsyncIterator[TelnyxApiEmulator]:
    emulator = TelnyxApiEmulator(api_key=KEY, webhook_url=receiver.url + "/telnyx/events")
    receiver.public_key = emulator.public_key_b64
    async with trio.open_nursery() as nursery:
        await nursery.start(emulator.serve)
        yield emulator
        nursery.cancel_scope.cancel()


@pytest.fixture
async def api(em: TelnyxApiEmulator) -> AsyncIterator[httpx.AsyncClient]:
    assert em.base_url is not None
    async with httpx.AsyncClient(base_url=em.base_url, headers={"Authorization": f"Bearer {KEY}"}) as client:
        yield client


async def send(api: httpx.AsyncClient, request: ApiRequest) -> httpx.Response:
    return await api.request(request.method, request.path, json=request.json)


def dial_request(media: MediaServer | None = None, **kw: Any) -> ApiRequest:
    kw.setdefault("client_state", STATE)
    if media is not None:
        kw.setdefault("stream_url", media.url)
        kw.setdefault("stream_auth_token", TOKEN)
        kw.setdefault("stream_bidirectional_codec", "PCMU")
    return dial(connection_id="conn-1", to=CALLEE, from_=OURS, **kw)


async def place(api: httpx.AsyncClient, request: ApiRequest) -> str:
    response = await send(api, request)
    assert response.status_code == 200, response.text
    return cast(str, response.json()["data"]["call_control_id"])


def pcmu(duration_s: float) -> bytes:
    return encode(speech_like(duration_s, np.random.default_rng(3)), Codec.PCMU)


# --------------------------------------------------------------------------- REST


async def test_dial_returns_the_documented_shape_and_records_the_command(
    em: TelnyxApiEmulator, api: httpx.AsyncClient
) -> None:
    request = dial_request(command_id="cmd-1")
    response = await send(api, request)
    assert response.status_code == 200
    data = response.json()["data"]
    assert data["call_control_id"].startswith("v3:") and len(data["call_control_id"]) > 20
    assert data["is_alive"] is False and data["record_type"] == "call"
    assert data["client_state"] == request.json["client_state"]  # type: ignore[index]
    uuid.UUID(data["call_leg_id"]), uuid.UUID(data["call_session_id"])
    result = decode_dial_response(200, response.content)
    assert isinstance(result, DialResult) and result.client_state == STATE
    call = em.calls[data["call_control_id"]]
    assert call.dial_body == request.json and call.direction == "outgoing"
    (command,) = em.commands
    assert command.verb == "dial" and command.status == 200 and command.body == request.json
    assert command.headers["authorization"] == f"Bearer {KEY}" and call.commands == [command]


async def test_missing_or_wrong_key_gets_401_10009(em: TelnyxApiEmulator) -> None:
    assert em.base_url is not None
    async with httpx.AsyncClient(base_url=em.base_url) as client:
        for headers in ({}, {"Authorization": "Bearer nope"}):
            response = await client.post("/calls", json=dial_request().json, headers=headers)
            errors = decode_api_errors(response.status_code, response.content)
            assert (errors.status, errors.codes) == (401, ("10009",))
            assert errors.errors[0].title == "Authentication failed"
    assert em.calls == {} and [c.status for c in em.commands] == [401, 401]


GOOD_DIAL: dict[str, Any] = {"connection_id": "c1", "to": CALLEE, "from": OURS}


@pytest.mark.parametrize(("change", "status", "expected"), [
    ({"to": "910000002"}, 422, [("10016", "/to")]),
    ({"to": "+34 91 000"}, 422, [("10016", "/to")]),
    ({"from": "sip:bot@example.com"}, 422, [("10016", "/from")]),
    ({"to": "12", "from": "34"}, 422, [("10016", "/to"), ("10016", "/from")]),
    ({"connection_id": None}, 422, [("10004", "/connection_id")]),
    ({"client_state": "not base64!"}, 422, [("10015", "/client_state")]),
    ({"stream_url": "https://example.com/media"}, 422, [("10003", "/stream_url")]),
    ({"stream_url": "wss://x.example/m", "stream_bidirectional_mode": "mp3",
      "stream_bidirectional_codec": "PCMU"}, 422, [("10015", "/stream_bidirectional_codec")]),
    ({"stream_url": "wss://x.example/m", "stream_codec": "MP3"}, 422, [("10015", "/stream_codec")]),
    ({"stream_auth_token": TOKEN}, 422, [("10015", "/stream_auth_token")]),
    ({"timeout_secs": 2}, 422, [("10015", "/timeout_secs")]),
])  # fmt: skip
async def test_bad_dials_get_422_with_pointers_and_place_no_call(
    em: TelnyxApiEmulator, api: httpx.AsyncClient, change: dict[str, Any], status: int,
    expected: list[tuple[str, str]],
) -> None:
    body = {k: v for k, v in {**GOOD_DIAL, **change}.items() if v is not None}
    response = await api.post("/calls", json=body)
    errors = decode_api_errors(response.status_code, response.content)
    assert errors.status == status
    assert [(e.code, (e.source or {}).get("pointer")) for e in errors.errors] == expected
    assert em.calls == {}


async def test_sip_uri_and_a_list_of_numbers_are_accepted_and_garbage_is_400(
    em: TelnyxApiEmulator, api: httpx.AsyncClient
) -> None:
    for to in ("sip:reception@pbx.example.com", [CALLEE, "+34910000003"]):
        response = await api.post("/calls", json={**GOOD_DIAL, "to": to})
        assert response.status_code == 200, response.text
    response = await api.post("/calls", content=b"[1,2]")
    assert decode_api_errors(response.status_code, response.content).codes == ("10015",)
    assert response.status_code == 400 and len(em.calls) == 2


async def test_command_id_dedupes_dials_and_actions_then_ended_calls_get_90018(
    em: TelnyxApiEmulator, api: httpx.AsyncClient
) -> None:
    first = await send(api, dial_request(command_id="dial-1"))
    again = await send(api, dial_request(command_id="dial-1"))
    assert again.status_code == 200 and again.content == first.content
    assert len(em.calls) == 1 and [c.duplicate for c in em.commands] == [False, True]
    other = await send(api, dial_request(command_id="dial-2"))
    assert other.json()["data"]["call_control_id"] != first.json()["data"]["call_control_id"]

    ccid = first.json()["data"]["call_control_id"]
    for _ in range(2):  # a retried hangup (same command_id) is answered like the first
        response = await send(api, hangup(ccid, command_id="bye-1"))
        assert response.json() == {"data": {"result": "ok"}}
    call = em.calls[ccid]
    assert [(c.verb, c.duplicate) for c in call.commands] == [("dial", False), ("dial", True),
                                                               ("hangup", False), ("hangup", True)]
    for request in (hangup(ccid, command_id="bye-2"), speak(ccid, payload="hola", voice="Telnyx.x"),
                    hangup("v3:no-such-call")):
        response = await send(api, request)
        errors = decode_api_errors(response.status_code, response.content)
        assert errors.status == 422 and errors.call_has_ended and errors.codes == (CALL_HAS_ENDED,)
        assert errors.errors[0].title == "Call has already ended"


async def test_api_down_503_then_refused_then_back_on_the_same_port(
    em: TelnyxApiEmulator, api: httpx.AsyncClient
) -> None:
    ccid = await place(api, dial_request())
    em.api_down = "503"
    for request in (dial_request(), hangup(ccid)):
        response = await send(api, request)
        errors = decode_api_errors(response.status_code, response.content)
        assert errors.status == 503 and errors.retryable
    em.api_down = "refuse"
    with trio.fail_after(5):
        while True:  # the listener closes once hypercorn has shut down
            try:
                await send(api, dial_request())
            except httpx.ConnectError:
                break
            await trio.sleep(0.05)
    em.api_down = None
    with trio.fail_after(5):
        while True:
            try:
                response = await send(api, hangup(ccid))
                break
            except httpx.ConnectError:
                await trio.sleep(0.05)
    assert response.status_code == 200 and len(em.calls) == 1


# --------------------------------------------------------------------------- calls and webhooks


async def test_outbound_call_webhooks_in_order_signed_and_the_caller_streams_with_the_token(
    em: TelnyxApiEmulator, api: httpx.AsyncClient, receiver: Receiver, media: MediaServer
) -> None:
    audio = pcmu(0.2)
    em.callee_for = lambda to: CalleeScript(answer_after_s=0.05, audio=audio, hangup_after_s=0.5)
    request = dial_request(media)
    ccid = await place(api, request)
    call = em.calls[ccid]
    with trio.fail_after(5):
        await call.finished.wait()

    assert receiver.types(ccid) == [
        "call.initiated", "call.answered", "streaming.started", "call.hangup", "streaming.stopped",
    ]
    events = receiver.events(ccid)
    initiated, hangup_event = events[0].payload, events[3].payload
    assert isinstance(initiated, CallInitiated)
    assert (initiated.direction, initiated.state, initiated.from_, initiated.to) == (
        "outgoing", "bridging", OURS, CALLEE)
    assert isinstance(hangup_event, CallHangup)
    assert (hangup_event.hangup_cause, hangup_event.hangup_source) == ("normal_clearing", "callee")
    state_b64 = cast(dict[str, Any], request.json)["client_state"]
    for received in receiver.received:  # every one verified by the receiver; client_state verbatim
        assert received.rejected is None and received.status == 200
        assert received.event is not None and received.event.meta is not None
        assert received.event.meta.attempt == 1
        assert f'"client_state":"{state_b64}"'.encode() in received.body
    assert len({e.id for e in events}) == 5
    assert [(d.event_type, d.status, d.attempt) for d in call.deliveries] == [
        (t, 200, 1) for t in receiver.types(ccid)]

    (conn,) = media.connections
    assert conn.token == TOKEN.encode()
    connected, start = conn.frames[0], conn.frames[1]
    assert isinstance(connected, Connected) and isinstance(start, Start)
    assert start.call_control_id == ccid and start.client_state_bytes == STATE
    assert (start.media_format.encoding, start.media_format.sample_rate) == ("PCMU", 8000)
    assert isinstance(conn.frames[-1], Stop) and conn.close_code == 1000
    assert b"".join(m.payload for m in conn.of_type(Media)).startswith(audio)
    assert call.caller_record is not None and call.caller_record.ended_by == "stop"
    assert call.streams[0].started_at is not None and not call.alive


async def test_hangup_action_ends_the_call_caller_sends_stop_and_later_actions_get_90018(
    em: TelnyxApiEmulator, api: httpx.AsyncClient, receiver: Receiver, media: MediaServer
) -> None:
    ccid = await place(api, dial_request(media))
    await receiver.wait_for("streaming.started", ccid)
    await trio.sleep(0.1)  # some media flows
    response = await send(api, hangup(ccid, client_state=b"bye"))
    assert response.status_code == 200
    event = await receiver.wait_for("call.hangup", ccid)
    assert isinstance(event.payload, CallHangup)
    assert (event.payload.hangup_cause, event.payload.hangup_source) == ("normal_clearing", "caller")
    assert event.payload.client_state == b"bye"  # the latest command's client_state
    await receiver.wait_for("streaming.stopped", ccid)
    (conn,) = media.connections
    with trio.fail_after(2):
        await conn.closed.wait()
    assert isinstance(conn.frames[-1], Stop) and conn.close_code == 1000
    assert len(conn.of_type(Media)) >= 3
    response = await send(api, speak(ccid, payload="¿Sigue ahí?", voice="Telnyx.KokoroTTS.af"))
    assert decode_api_errors(response.status_code, response.content).codes == (CALL_HAS_ENDED,)


@pytest.mark.parametrize(("outcome", "cause"), [
    ("busy", "user_busy"), ("reject", "call_rejected"), ("no_answer", "timeout"),
])  # fmt: skip
async def test_callee_that_does_not_answer(
    em: TelnyxApiEmulator, api: httpx.AsyncClient, receiver: Receiver, outcome: Any, cause: str
) -> None:
    em.callee_for = lambda to: CalleeScript(outcome=outcome, answer_after_s=0.05)
    ccid = await place(api, dial_request())
    event = await receiver.wait_for("call.hangup", ccid)
    assert isinstance(event.payload, CallHangup) and event.payload.hangup_cause == cause
    assert receiver.types(ccid) == ["call.initiated", "call.hangup"]


async def test_dial_timeout_secs_and_time_limit_secs_end_the_call(
    em: TelnyxApiEmulator, api: httpx.AsyncClient, receiver: Receiver
) -> None:
    em.speed = 50.0  # 5 s of ring and 6 s of call take 0.1 s and 0.12 s
    em.callee_for = lambda to: CalleeScript(answer_after_s=40.0)
    rung_out = await place(api, dial_request(timeout_secs=5))
    em.callee_for = lambda to: CalleeScript(answer_after_s=0.0, hangup_after_s=60.0)
    limited = await place(api, dial_request(time_limit_secs=6))
    for ccid, cause in ((rung_out, "timeout"), (limited, "time_limit")):
        event = await receiver.wait_for("call.hangup", ccid)
        assert isinstance(event.payload, CallHangup) and event.payload.hangup_cause == cause
    assert receiver.types(rung_out) == ["call.initiated", "call.hangup"]


async def test_hangup_while_ringing_is_originator_cancel(
    em: TelnyxApiEmulator, api: httpx.AsyncClient, receiver: Receiver
) -> None:
    em.callee_for = lambda to: CalleeScript(answer_after_s=5.0)
    ccid = await place(api, dial_request())
    await send(api, hangup(ccid))
    event = await receiver.wait_for("call.hangup", ccid)
    assert isinstance(event.payload, CallHangup) and event.payload.hangup_cause == "originator_cancel"
    assert receiver.types(ccid) == ["call.initiated", "call.hangup"]


async def test_refused_stream_is_streaming_failed_and_never_connects_sends_nothing(
    em: TelnyxApiEmulator, api: httpx.AsyncClient, receiver: Receiver, media: MediaServer
) -> None:
    media.reject_status = 403
    ccid = await place(api, dial_request(media))
    event = await receiver.wait_for("streaming.failed", ccid)
    assert isinstance(event.payload, StreamingFailed)
    assert event.payload.failure_reason == "connection_failed"
    assert event.payload.stream_params is not None and event.payload.stream_params.stream_url == media.url
    assert em.calls[ccid].streams[0].failure is not None

    media.reject_status = None
    em.stream_never_connects = True
    ccid2 = await place(api, dial_request(media))
    await receiver.wait_for("call.answered", ccid2)
    await trio.sleep(0.3)
    assert receiver.types(ccid2) == ["call.initiated", "call.answered"]
    assert len(media.connections) == 1  # only the refused one
    await send(api, hangup(ccid2))
    await receiver.wait_for("call.hangup", ccid2)
    assert "streaming.stopped" not in receiver.types(ccid2)


async def test_inbound_call_answered_with_a_stream_then_hung_up_by_us(
    em: TelnyxApiEmulator, api: httpx.AsyncClient, receiver: Receiver, media: MediaServer
) -> None:
    call = await em.place_inbound_call(OURS, CALLEE, CalleeScript(audio=pcmu(0.2)))
    event = await receiver.wait_for("call.initiated", call.call_control_id)
    assert isinstance(event.payload, CallInitiated)
    assert (event.payload.direction, event.payload.state) == ("incoming", "parked")
    assert event.payload.client_state is None and call.state == "parked"

    request = answer(call.call_control_id, stream_url=media.url, stream_auth_token=TOKEN,
                     stream_bidirectional_codec="L16", stream_bidirectional_sampling_rate=16000,
                     stream_codec="L16", client_state=b"inbound-1")
    assert (await send(api, request)).status_code == 200
    await receiver.wait_for("streaming.started", call.call_control_id)
    (conn,) = media.connections
    start = conn.frames[1]
    assert conn.token == TOKEN.encode() and isinstance(start, Start)
    assert (start.media_format.encoding, start.media_format.sample_rate) == ("L16", 16000)
    assert start.client_state_bytes == b"inbound-1"

    await send(api, hangup(call.call_control_id))
    with trio.fail_after(5):
        await call.finished.wait()
    assert receiver.types(call.call_control_id) == [
        "call.initiated", "call.answered", "streaming.started", "call.hangup", "streaming.stopped"]
    assert (call.hangup_cause, call.hangup_source) == ("normal_clearing", "callee")
    assert isinstance(conn.frames[-1], Stop)


# --------------------------------------------------------------------------- webhook faults


async def test_duplicate_webhooks_arrive_twice_with_the_same_id(
    em: TelnyxApiEmulator, api: httpx.AsyncClient, receiver: Receiver
) -> None:
    em.duplicate_webhooks = True
    em.callee_for = lambda to: CalleeScript(outcome="busy", answer_after_s=0.01)
    ccid = await place(api, dial_request())
    with trio.fail_after(5):
        await em.calls[ccid].finished.wait()
    ids = [e.id for e in receiver.events(ccid)]
    assert receiver.types(ccid) == ["call.initiated"] * 2 + ["call.hangup"] * 2
    assert ids[0] == ids[1] and ids[2] == ids[3] and ids[0] != ids[2]
    assert [d.duplicate for d in em.deliveries] == [False, True, False, True]


async def test_bad_signature_stale_timestamp_and_500_are_retried_until_accepted(
    em: TelnyxApiEmulator, api: httpx.AsyncClient, receiver: Receiver
) -> None:
    em.bad_signature_next, em.stale_timestamp_next = 1, 1
    em.callee_for = lambda to: CalleeScript(outcome="reject", answer_after_s=0.3)
    ccid = await place(api, dial_request())
    await receiver.wait_for("call.initiated", ccid)
    assert [(d.attempt, d.status, d.fault) for d in em.deliveries] == [
        (1, 401, "bad_signature"), (2, 401, "stale_timestamp"), (3, 200, None)]
    reasons = [r.rejected for r in receiver.received]
    assert "signature does not match" in (reasons[0] or "") and "stale" in (reasons[1] or "")

    receiver.fail_next = 1
    em.missing_signature_next = 1
    with trio.fail_after(5):
        await em.calls[ccid].finished.wait()
    hangups = [(d.attempt, d.status, d.fault) for d in em.deliveries if d.event_type == "call.hangup"]
    assert hangups == [(1, 401, "missing_signature"), (2, 500, None), (3, 200, None)]
    assert receiver.received[-1].event is not None and receiver.received[-1].event.meta is not None
    assert receiver.received[-1].event.meta.attempt == 3


async def test_shuffle_reorders_but_keeps_the_lifecycle_order(
    em: TelnyxApiEmulator, api: httpx.AsyncClient, receiver: Receiver, media: MediaServer
) -> None:
    em.shuffle, em.shuffle_window_s = True, 0.2
    em.callee_for = lambda to: CalleeScript(answer_after_s=0.0, hangup_after_s=0.5)
    ccid = await place(api, dial_request(media))
    call = em.calls[ccid]
    with trio.fail_after(5):
        await call.finished.wait()
    delivered = receiver.types(ccid)
    assert sorted(delivered) == sorted(call.event_types) and delivered != call.event_types
    assert delivered[0] == "call.initiated"
    assert delivered.index("call.answered") < delivered.index("call.hangup")


# --------------------------------------------------------------------------- webhook-mode media


def wav_bytes(duration_s: float) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(8000)
        wav.writeframes(b"\x00\x00" * int(8000 * duration_s))
    return buffer.getvalue()


async def test_playback_fetches_the_audio_url_speak_and_playback_stop(
    em: TelnyxApiEmulator, api: httpx.AsyncClient, receiver: Receiver
) -> None:
    receiver.files["/audio/hola.wav"] = hola = wav_bytes(0.3)
    ccid = await place(api, dial_request())
    await receiver.wait_for("call.answered", ccid)
    call = em.calls[ccid]

    started = trio.current_time()
    await send(api, playback_start(ccid, audio_url=receiver.url + "/audio/hola.wav"))
    ended = await receiver.wait_for("call.playback.ended", ccid)
    assert trio.current_time() - started >= 0.3  # the WAV's own duration
    assert isinstance(ended.payload, CallPlaybackEnded) and ended.payload.status == "completed"
    (fetch,) = call.playback_fetches
    assert (fetch.status, fetch.content) == (200, hola) and receiver.gets == ["/audio/hola.wav"]
    assert receiver.types(ccid)[-2:] == ["call.playback.started", "call.playback.ended"]

    await send(api, playback_start(ccid, audio_url=receiver.url + "/audio/missing.wav"))
    with trio.fail_after(5):
        while len([t for t in receiver.types(ccid) if t == "call.playback.ended"]) < 2:
            await receiver.changed.wait()
    last = receiver.events(ccid)[-1].payload
    assert isinstance(last, CallPlaybackEnded) and last.status == "file_not_found"
    assert call.playback_fetches[-1].status == 404
    assert receiver.types(ccid).count("call.playback.started") == 1

    text = "Hola, le llamo de la clínica para confirmar su cita."  # ~3.5 s at 15 chars/s
    await send(api, speak(ccid, payload=text, voice="Telnyx.KokoroTTS.af"))
    await receiver.wait_for("call.speak.started", ccid)
    await send(api, playback_stop(ccid))
    ended = await receiver.wait_for("call.speak.ended", ccid)
    assert ended.payload.status == "cancelled"  # type: ignore[union-attr]

    em.speed = 20.0  # speak ends on its own after len(text) / 15 s of call time
    await send(api, speak(ccid, payload=text, voice="Telnyx.KokoroTTS.af"))
    with trio.fail_after(3):
        while receiver.types(ccid).count("call.speak.ended") < 2:
            await receiver.changed.wait()
    assert receiver.events(ccid)[-1].payload.status == "completed"  # type: ignore[union-attr]


async def test_transcription_events_follow_the_script(
    em: TelnyxApiEmulator, api: httpx.AsyncClient, receiver: Receiver
) -> None:
    em.callee_for = lambda to: CalleeScript(transcripts=[
        ScriptedTranscript(0.05, "quiero", is_final=False, confidence=0.5),
        ScriptedTranscript(0.1, "quiero una cita", confidence=0.97),
    ])
    ccid = await place(api, dial_request())
    await receiver.wait_for("call.answered", ccid)
    await send(api, transcription_start(ccid, transcription_engine="Telnyx"))
    with trio.fail_after(3):
        while receiver.types(ccid).count("call.transcription") < 2:
            await receiver.changed.wait()
    data = [e.payload.transcription_data for e in receiver.events(ccid)
            if isinstance(e.payload, CallTranscription)]
    assert [(d.transcript, d.is_final, d.confidence) for d in data] == [
        ("quiero", False, 0.5), ("quiero una cita", True, 0.97)]
    assert data[0].transcription_track == "inbound"
