"""Call control's pieces: input checks, the call book, the App's prefix routes, and the routes
against the real server with the Telnyx API emulator — here the test itself plays Telnyx for the
webhooks that matter (signed with the emulator's key: forged, stale, duplicate, out of band).
The whole-call flows are in tests/e2e/test_call_control.py."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, MutableMapping
from contextlib import asynccontextmanager
from typing import Any

import httpx
import orjson
import pytest
import trio

from centralita.app import App
from centralita.asgi import Receive, Scope, Send, respond_json
from centralita.call_book import CallBook, CallState
from centralita.composition import build_service_app
from centralita.routes_calls import stream_url_for, validate_initiate, webhook_url_for
from centralita.server import serve_until
from centralita.settings import Secret, Settings
from protocols import telnyx_call_control as cc
from protocols.telnyx_signature import SIGNATURE_HEADER, TIMESTAMP_HEADER, sign_webhook
from tests.e2e.test_call_control import CALLEE, CallStack, callee_script, open_call_stack

# -- input ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("body", "fields"), [
    ({"nombre": "Ana", "telefono": "+573001234567"}, set()),
    ({"nombre": "  José Núñez ", "telefono": "+34910000001"}, set()),
    ({"nombre": "Ana", "telefono": "+12345678"}, set()),  # 8 digits
    ({"nombre": "Ana", "telefono": "+123456789012345"}, set()),  # 15 digits
    ({"nombre": "Ana", "telefono": "+1234567"}, {"telefono"}),
    ({"nombre": "Ana", "telefono": "+1234567890123456"}, {"telefono"}),
    ({"nombre": "Ana", "telefono": "573001234567"}, {"telefono"}),
    ({"nombre": "Ana", "telefono": "+57 300 123 4567"}, {"telefono"}),
    ({"nombre": "Ana", "telefono": 573001234567}, {"telefono"}),
    ({"nombre": "Ana"}, {"telefono"}),
    ({"telefono": "+573001234567"}, {"nombre"}),
    ({"nombre": "   ", "telefono": "+573001234567"}, {"nombre"}),
    ({"nombre": "x" * 101, "telefono": "+573001234567"}, {"nombre"}),
    ({"nombre": "x" * 100, "telefono": "+573001234567"}, set()),
    ({"nombre": "Ana\x00", "telefono": "+573001234567"}, {"nombre"}),
    ({"nombre": "Ana\nDROP", "telefono": "+573001234567"}, {"nombre"}),
    ({"nombre": ["Ana"], "telefono": None}, {"nombre", "telefono"}),
])
def test_validate_initiate(body: dict[str, Any], fields: set[str]) -> None:
    errors, nombre, telefono = validate_initiate(body)
    assert set(errors) == fields
    if not fields:
        assert nombre == body["nombre"].strip() and telefono == body["telefono"]
    assert all(isinstance(message, str) and message for message in errors.values())


def test_validate_initiate_wants_an_object() -> None:
    assert set(validate_initiate(["Ana"])[0]) == {"body"}


@pytest.mark.parametrize(("base", "stream", "hook"), [
    ("https://example.com", "wss://example.com/stream/media", "https://example.com/webhooks/telnyx"),
    ("https://example.com/", "wss://example.com/stream/media", "https://example.com/webhooks/telnyx"),
    ("http://127.0.0.1:8000", "ws://127.0.0.1:8000/stream/media",
     "http://127.0.0.1:8000/webhooks/telnyx"),
    ("https://x.test/pre/", "wss://x.test/pre/stream/media", "https://x.test/pre/webhooks/telnyx"),
])
def test_stream_and_webhook_urls(base: str, stream: str, hook: str) -> None:
    assert stream_url_for(base) == stream
    assert webhook_url_for(base) == hook


@pytest.mark.parametrize("base", ["example.com", "ftp://example.com", "https://"])
def test_stream_url_needs_an_http_url(base: str) -> None:
    with pytest.raises(ValueError, match="WEBHOOK_BASE_URL"):
        stream_url_for(base)


# -- the call book ----------------------------------------------------------------------------------

class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def test_book_state_only_moves_forward() -> None:
    book = CallBook(clock=Clock())
    call = book.open("c1", direction="outbound", stream_token="t", telefono="+573001234567",
                     nombre="Ana")
    assert call.state is CallState.DIALING and book.callee_name_for("c1") == "Ana"
    assert book.advance(call, CallState.STREAMING)  # streaming.started before call.answered
    assert call.answered_at is not None
    assert not book.advance(call, CallState.ANSWERED)  # the late one changes nothing
    assert call.state is CallState.STREAMING
    assert book.end(call, reason="stream never connected")
    assert not book.end(call, hangup_cause="normal_clearing", reason="hangup: normal_clearing")
    assert (call.end_reason, call.hangup_cause) == ("stream never connected", "normal_clearing")
    assert not book.advance(call, CallState.STREAMING)
    assert call.to_json()["state"] == "ended" and call.to_json()["hangupCause"] == "normal_clearing"


def test_book_indexes_by_control_id_and_forgets_ended_calls_after_a_while() -> None:
    clock = Clock()
    book = CallBook(clock=clock, keep_ended_s=600)
    call = book.open("c1", direction="outbound", stream_token="t", telefono="+1")
    book.set_control_id(call, "v3:a")
    assert book.by_control_id("v3:a") is call
    other = book.open("c2", direction="inbound", stream_token="u", telefono=None,
                      call_control_id="v3:b")
    assert other.state is CallState.INCOMING and book.by_control_id("v3:b") is other
    book.end(call, hangup_cause="normal_clearing")
    clock.now += 599
    assert [c.call_id for c in book.calls()] == ["c1", "c2"]
    clock.now += 2
    assert [c.call_id for c in book.calls()] == ["c2"]
    assert book.by_control_id("v3:a") is None and book.get("c1") is None


def test_book_keeps_at_most_max_ended() -> None:
    book = CallBook(clock=Clock(), max_ended=3)
    for i in range(5):
        book.end(book.open(f"c{i}", direction="outbound", stream_token=f"t{i}", telefono="+1"))
    assert [c.call_id for c in book.calls()] == ["c2", "c3", "c4"]


def test_book_dedupes_webhook_ids_for_a_while() -> None:
    clock = Clock()
    book = CallBook(clock=clock, webhook_ids_ttl_s=900, max_webhook_ids=3)
    assert book.first_sighting("a") and not book.first_sighting("a")
    clock.now += 901
    assert book.first_sighting("a")  # long forgotten: Telnyx stopped retrying long before
    for name in "bcd":
        assert book.first_sighting(name)
    assert book.first_sighting("a")  # pushed out by the bound


def test_book_remembers_abandoned_dials() -> None:
    clock = Clock()
    book = CallBook(clock=clock)
    call = book.open("c1", direction="outbound", stream_token="t", telefono="+1")
    book.set_control_id(call, "v3:a")
    book.abandon("c1")
    assert book.get("c1") is None and book.by_control_id("v3:a") is None
    assert book.is_abandoned("c1") and book.calls() == []
    assert book.take_abandoned("c1") and not book.take_abandoned("c1")  # hung up once
    book.abandon("c1")
    clock.now += book.webhook_ids_ttl_s + 1
    book.prune()
    assert not book.is_abandoned("c1")


def test_book_refuses_a_call_id_twice() -> None:
    book = CallBook()
    book.open("c1", direction="outbound", stream_token="t", telefono="+1")
    with pytest.raises(ValueError):
        book.open("c1", direction="outbound", stream_token="t", telefono="+1")


# -- App prefix routes ------------------------------------------------------------------------------

def handler(name: str) -> Any:
    async def handle(scope: Scope, receive: Receive, send: Send) -> None:
        await respond_json(send, 200, {"handler": name})
    return handle


async def call_app(app: App, path: str) -> tuple[int, Any]:
    sent: list[dict[str, Any]] = []

    async def receive() -> MutableMapping[str, Any]:
        return {"type": "http.request", "body": b""}

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(dict(message))

    await app({"type": "http", "method": "GET", "path": path, "headers": []}, receive, send)
    return sent[0]["status"], orjson.loads(sent[1]["body"])


async def test_app_tries_exact_routes_then_prefixes_in_order() -> None:
    app = App(http_routes={"/api/call/initiate": handler("exact")})
    app.http_prefix_routes += [("/api/call/", handler("call")), ("/api/", handler("api"))]
    assert await call_app(app, "/api/call/initiate") == (200, {"handler": "exact"})
    assert await call_app(app, "/api/call/abc/hangup") == (200, {"handler": "call"})
    assert await call_app(app, "/api/calls") == (200, {"handler": "api"})
    assert (await call_app(app, "/apix"))[0] == 404


# -- call control off -------------------------------------------------------------------------------

@asynccontextmanager
async def serving(settings: Settings) -> AsyncIterator[str]:
    app, _ = build_service_app(settings)
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(serve_until, app, settings, stop)
        yield binds[0]
        stop.set()


@pytest.mark.parametrize(("settings", "reason"), [
    ({}, "TELNYX_API_KEY and TELNYX_CONNECTION_ID not set"),
    ({"telnyx_api_key": Secret("k")}, "TELNYX_CONNECTION_ID not set"),
])
async def test_without_call_control_the_api_answers_503_with_the_reason(
        settings: dict[str, Any], reason: str, caplog: pytest.LogCaptureFixture) -> None:
    async with serving(Settings(host="127.0.0.1", port=0, **settings)) as base, \
            httpx.AsyncClient(timeout=10) as http:
        for method, path in [("POST", "/api/call/initiate"), ("GET", "/api/calls"),
                             ("POST", "/api/call/abc/hangup"), ("POST", "/webhooks/telnyx")]:
            response = await http.request(method, base + path)
            assert response.status_code == 503, path
            assert reason in response.json()["error"]
        assert (await http.get(base + "/health")).status_code == 200
    assert reason in caplog.text


# -- the routes, with Telnyx emulated ---------------------------------------------------------------

def signed(cs: CallStack, event_type: str, payload: cc.WebhookPayload, *,
           event_id: str | None = None, at: float | None = None) -> tuple[bytes, dict[str, str]]:
    event = cc.WebhookEvent(id=event_id or str(uuid.uuid4()), event_type=event_type,
                            payload=payload)
    body = cc.encode_webhook(event)
    headers = sign_webhook(cs.telnyx.keypair.private_key, body,
                           time.time() if at is None else at)
    return body, {"content-type": "application/json", **headers}


async def post_webhook(cs: CallStack, body: bytes, headers: dict[str, str]) -> httpx.Response:
    return await cs.http.post(f"{cs.base_url}/webhooks/telnyx", content=body, headers=headers)


@asynccontextmanager
async def streaming_call(cs: CallStack) -> AsyncIterator[tuple[str, str]]:
    response = await cs.initiate()
    assert response.status_code == 202
    call_id, control_id = response.json()["callId"], response.json()["callControlId"]
    with trio.fail_after(10):  # both the stream here and Telnyx's streaming.started webhook
        while (call_id not in cs.stack.service.registry.calls
               or (await cs.call(call_id))["streamingAt"] is None):
            await trio.sleep(0.02)
    yield call_id, control_id


async def test_forged_stale_and_unsigned_webhooks_are_refused_and_change_nothing() -> None:
    async with open_call_stack() as cs, streaming_call(cs) as (call_id, control_id):
        hangup = cc.CallHangup(call_control_id=control_id, client_state=call_id.encode(),
                               hangup_cause="normal_clearing")
        before = await cs.call(call_id)
        body, headers = signed(cs, "call.hangup", hangup)
        forged = body.replace(b"normal_clearing", b"call_rejected")
        response = await post_webhook(cs, forged, headers)
        assert response.status_code == 401 and "signature does not match" in response.json()[
            "reason"]
        body, headers = signed(cs, "call.hangup", hangup, at=time.time() - 600)
        response = await post_webhook(cs, body, headers)
        assert response.status_code == 401 and "stale" in response.json()["reason"]
        body, headers = signed(cs, "call.hangup", hangup)
        for missing in (SIGNATURE_HEADER, TIMESTAMP_HEADER):
            partial_headers = {k: v for k, v in headers.items() if k != missing}
            response = await post_webhook(cs, body, partial_headers)
            assert response.status_code == 401 and missing in response.json()["reason"]
        assert await cs.call(call_id) == before
        assert call_id in cs.stack.service.registry.calls
        # The same body, properly signed, is accepted (nothing was remembered from the refusals).
        response = await post_webhook(cs, body, headers)
        assert response.json() == {"ok": True}


async def test_a_duplicate_webhook_is_acknowledged_and_ignored() -> None:
    async with open_call_stack() as cs, streaming_call(cs) as (call_id, control_id):
        hangup = cc.CallHangup(call_control_id=control_id, client_state=call_id.encode(),
                               hangup_cause="user_busy")
        body, headers = signed(cs, "call.hangup", hangup, event_id="evt-1")
        assert (await post_webhook(cs, body, headers)).json() == {"ok": True}
        again = cc.CallHangup(call_control_id=control_id, client_state=call_id.encode(),
                              hangup_cause="call_rejected")
        body, headers = signed(cs, "call.hangup", again, event_id="evt-1")
        response = await post_webhook(cs, body, headers)
        assert response.status_code == 200 and response.json()["duplicate"] is True
        assert (await cs.call(call_id))["hangupCause"] == "user_busy"


async def test_call_hangup_stops_a_live_calls_supervisor_with_the_cause() -> None:
    async with open_call_stack() as cs, streaming_call(cs) as (call_id, control_id):
        handle = cs.stack.service.registry.calls[call_id]
        sub = await cs.subscribe()
        hangup = cc.CallHangup(call_control_id=control_id, client_state=call_id.encode(),
                               hangup_cause="time_limit")
        body, headers = signed(cs, "call.hangup", hangup)
        assert (await post_webhook(cs, body, headers)).status_code == 200
        with trio.fail_after(10):
            await handle.done.wait()
        assert handle.outcome is not None and handle.outcome.reason == "hangup: time_limit"
        assert not handle.outcome.failed
        events = await sub.wait_ended(call_id)
        # The relay's reason is TelnyxRx's ("call stopped by the service"): the supervisor's stop
        # reason does not reach it yet (TelnyxRx is cancelled, it has no inbox to end).
        assert events[-1]["state"] == "ended"
        call = await cs.call(call_id)
        assert (call["state"], call["hangupCause"]) == ("ended", "time_limit")
        record = cs.emulated(control_id).caller_record
        with trio.fail_after(5):
            while record is not None and record.ended_by is None:
                await trio.sleep(0.02)
        assert record is not None and (record.ended_by, record.close_code) == ("server_closed",
                                                                               1000)


async def test_streaming_failed_hangs_the_call_up() -> None:
    async with open_call_stack() as cs, streaming_call(cs) as (call_id, control_id):
        failed = cc.StreamingFailed(call_control_id=control_id, client_state=call_id.encode(),
                                    failure_reason="connection_failed")
        body, headers = signed(cs, "streaming.failed", failed)
        assert (await post_webhook(cs, body, headers)).status_code == 200
        call = await cs.call(call_id)
        assert (call["state"], call["endReason"]) == ("ended", "stream failed: connection_failed")
        emulated = cs.emulated(control_id)
        with trio.fail_after(10):
            await emulated.wait_for_event("call.hangup")
        assert [c.verb for c in emulated.commands] == ["dial", "hangup"]
        call = await cs.wait_state(call_id, "ended")
        with trio.fail_after(5):
            while (call := await cs.call(call_id))["hangupCause"] is None:
                await trio.sleep(0.02)
        assert call["hangupCause"] == "normal_clearing"


async def test_webhooks_for_unknown_calls_are_acknowledged() -> None:
    async with open_call_stack() as cs:
        answered = cc.CallAnswered(call_control_id="v3:someone-else")
        body, headers = signed(cs, "call.answered", answered)
        assert (await post_webhook(cs, body, headers)).json() == {"ok": True}
        body, headers = signed(cs, "call.cost", cc.GenericPayload({"total": "0.01"}))
        assert (await post_webhook(cs, body, headers)).json() == {"ok": True}
        assert await cs.calls() == []


async def test_a_signed_webhook_we_cannot_read_is_a_400_and_a_huge_one_a_413() -> None:
    async with open_call_stack() as cs:
        body = b'{"data": {"event_type": "call.answered"}}'
        headers = sign_webhook(cs.telnyx.keypair.private_key, body, time.time())
        response = await post_webhook(cs, body, headers)
        assert response.status_code == 400 and "data.id" in response.json()["reason"]
        # Refused on its declared length, before reading (a raw socket: the server stops reading).
        host, port = cs.base_url.removeprefix("http://").split(":")
        async with await trio.open_tcp_stream(host, int(port)) as stream:
            await stream.send_all(b"POST /webhooks/telnyx HTTP/1.1\r\nHost: x\r\n"
                                  b"Content-Length: 300000\r\n\r\n")
            answer = b""
            with trio.fail_after(10):
                while b"\r\n" not in answer:
                    answer += await stream.receive_some()
        assert answer.startswith(b"HTTP/1.1 413 ")


async def test_a_dial_that_got_through_after_all_is_hung_up() -> None:
    """We answered 502 (Telnyx timed out on us), yet the call rings: its webhooks name a call id
    we abandoned, so it is hung up rather than answered into silence."""
    async with open_call_stack() as cs:
        cs.telnyx.api_down = "503"
        assert (await cs.initiate()).status_code == 502
        cs.telnyx.api_down = None
        (abandoned,) = cs.control.book._abandoned  # noqa: SLF001 - the id we gave up on
        # Play Telnyx: the call exists after all (placed here through the emulator's own API).
        placed = await cs.control.telnyx.dial(  # type: ignore[union-attr]
            connection_id="conn-1", to=CALLEE, from_="+15550001111", client_state=abandoned,
            webhook_url=f"{cs.base_url}/webhooks/telnyx")
        emulated = cs.emulated(placed.call_control_id)
        with trio.fail_after(10):
            await emulated.finished.wait()
        assert [c.verb for c in emulated.commands] == ["dial", "hangup"]
        assert emulated.hangup_cause in ("originator_cancel", "normal_clearing")
        assert await cs.calls() == []


async def test_misconfigured_call_control_leaves_nothing_behind() -> None:
    async with open_call_stack() as cs:
        cs.control.from_number = "5550001111"  # not E.164: our builder refuses to send it
        response = await cs.initiate()
        assert response.status_code == 500 and "from_" in response.json()["detail"]
        cs.control.from_number = None
        response = await cs.initiate()
        assert response.status_code == 503
        assert response.json() == {"error": "TELNYX_FROM_NUMBER is not set"}
        assert cs.telnyx.commands == [] and cs.issued == {} and await cs.calls() == []


async def test_routes_refuse_the_wrong_method() -> None:
    async with open_call_stack(callee=callee_script()) as cs:
        for method, path in [("GET", "/api/call/initiate"), ("POST", "/api/calls"),
                             ("GET", "/webhooks/telnyx")]:
            response = await cs.http.request(method, cs.base_url + path)
            assert response.status_code == 405, path
