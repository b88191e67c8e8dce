"""Call control end to end: ``POST /api/call/initiate`` → the Telnyx API emulator dials a scripted
callee → signed webhooks back to us → the callee's media stream reaches ``/stream/media`` with the
per-call token → a turn (transcripts, and with the bot a spoken reply) → hangup → ``GET
/api/calls``. Everything over loopback; Telnyx, Deepgram, Anthropic and Aura are the emulators in
``bench/emulators``; nothing of ours is patched (a timeout is shortened where a test says so).
"""

from __future__ import annotations

import base64
import socket
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

import attrs
import httpx
import pytest
import trio

from bench.emulators.anthropic_messages import AnthropicEmulator
from bench.emulators.caller_audio import encode, script_audio
from bench.emulators.deepgram_listen import DeepgramListenEmulator
from bench.emulators.deepgram_speak import DeepgramSpeakEmulator
from bench.emulators.telnyx_api import CalleeScript, EmulatedCall, TelnyxApiEmulator
from bench.emulators.telnyx_caller import CallRejected, TelnyxCaller
from centralita.composition import build_service_app
from centralita.routes_calls import CallControl
from centralita.server import serve_until
from centralita.settings import Secret, Settings
from protocols.telnyx_media import MediaOut
from tests.e2e.conftest import Stack, Subscriber, subscribe_all

TELNYX_KEY = "telnyx-test-key"
FROM_NUMBER = "+15550001111"
CALLEE = "+573001234567"
SCRIPT = ("quiero saber mi saldo", "no gracias eso es todo")
SPEED = 4.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def callee_script(durations: Sequence[float] = (1.0,), gaps: float | Sequence[float] = 1.0,
                  lead_in_s: float = 0.5, **kwargs: Any) -> CalleeScript:
    pcm = script_audio(durations, gaps, lead_in_s=lead_in_s)
    kwargs.setdefault("answer_after_s", 0.2)
    return CalleeScript(audio=encode(pcm), **kwargs)


@attrs.define(eq=False)
class CallStack:
    """The service with call control on, and the Telnyx API emulator pointed at it."""

    stack: Stack
    telnyx: TelnyxApiEmulator
    http: httpx.AsyncClient

    @property
    def base_url(self) -> str:
        return self.stack.base_url

    @property
    def control(self) -> CallControl:
        control = self.stack.service.call_control
        assert control is not None
        return control

    @property
    def issued(self) -> dict[str, str]:
        return self.stack.service.media.tokens.issued

    async def subscribe(self) -> Subscriber:
        sub: Subscriber = await self.stack.nursery.start(subscribe_all, self.stack)
        return sub

    async def initiate(self, nombre: Any = "Ana", telefono: Any = CALLEE, **extra: Any
                       ) -> httpx.Response:
        body = {"nombre": nombre, "telefono": telefono, **extra}
        return await self.http.post(f"{self.base_url}/api/call/initiate", json=body)

    async def hangup(self, call_id: str) -> httpx.Response:
        return await self.http.post(f"{self.base_url}/api/call/{call_id}/hangup")

    async def calls(self) -> list[dict[str, Any]]:
        response = await self.http.get(f"{self.base_url}/api/calls")
        assert response.status_code == 200
        calls: list[dict[str, Any]] = response.json()["calls"]
        return calls

    async def call(self, call_id: str) -> dict[str, Any]:
        (found,) = [c for c in await self.calls() if c["callId"] == call_id]
        return found

    async def wait_state(self, call_id: str, state: str, timeout: float = 15.0) -> dict[str, Any]:
        with trio.fail_after(timeout):
            while (call := await self.call(call_id))["state"] != state:
                await trio.sleep(0.02)
        return call

    def emulated(self, call_control_id: str) -> EmulatedCall:
        return self.telnyx.calls[call_control_id]


@asynccontextmanager
async def open_call_stack(*, claude: bool = False, callee: CalleeScript | None = None,
                          script: Sequence[str] = SCRIPT, speed: float = SPEED,
                          public_key: bool = True, inbound_calls: bool = True,
                          anthropic: AnthropicEmulator | None = None,
                          speak: DeepgramSpeakEmulator | None = None,
                          callee_for: Callable[[str], CalleeScript] | None = None,
                          overrides: dict[str, Any] | None = None,
                          ) -> AsyncIterator[CallStack]:
    """The service (call control on) on a free loopback port, and its emulators.

    Deepgram listen and speak are always the emulators; the Brain is Claude (the Anthropic
    emulator) with ``claude``, else the local scripted dialogue (``demo_es``: it answers "saldo"
    and says goodbye — then hangs up — on "no gracias eso es todo"). ``overrides`` change the
    service's (e.g. ``use_media_streams=False`` for webhook mode).
    """
    port = free_port()  # the webhook and stream URLs must be known before the server binds
    base_url = f"http://127.0.0.1:{port}"
    the_callee = callee or callee_script()
    async with trio.open_nursery() as nursery, httpx.AsyncClient(timeout=10) as http:
        deepgram = DeepgramListenEmulator(api_key="test-key", script_for=lambda options: script)
        speak = speak or DeepgramSpeakEmulator(api_key="test-key", ms_per_char=10.0)
        extra: dict[str, Any] = {"deepgram_listen_url": await nursery.start(deepgram.serve),
                                 "deepgram_speak_url": await nursery.start(speak.serve)}
        if claude:
            anthropic = anthropic or AnthropicEmulator(api_key="test-key")
            extra |= {"anthropic_api_key": Secret("test-key"),
                      "anthropic_base_url": await nursery.start(anthropic.serve)}
        telnyx = TelnyxApiEmulator(api_key=TELNYX_KEY, webhook_url=f"{base_url}/webhooks/telnyx",
                                   callee_for=callee_for or (lambda to: the_callee), speed=speed)
        telnyx_base = await nursery.start(telnyx.serve)
        settings = Settings(host="127.0.0.1", port=port, deepgram_api_key=Secret("test-key"),
                            telnyx_api_key=Secret(TELNYX_KEY), telnyx_api_base=telnyx_base,
                            telnyx_connection_id="conn-1", telnyx_from_number=FROM_NUMBER,
                            telnyx_public_key=telnyx.public_key_b64 if public_key else None,
                            webhook_base_url=base_url, inbound_calls=inbound_calls,
                            **{**extra, **(overrides or {})})
        app, service = build_service_app(settings)
        stop, server_done = trio.Event(), trio.Event()

        async def serve(*, task_status: trio.TaskStatus[list[str]]) -> None:
            try:
                await serve_until(app, settings, stop, task_status=task_status)
            finally:
                server_done.set()

        binds = await nursery.start(serve)
        assert binds[0] == base_url
        stack = Stack(app=app, service=service, deepgram=deepgram, base_url=base_url, stop=stop,
                      scripts={}, nursery=nursery, anthropic=anthropic if claude else None,
                      speak=speak)
        yield CallStack(stack=stack, telnyx=telnyx, http=http)
        # Telnyx hangs up what is still up, and its last webhooks land, before we stop: a webhook
        # cut off by our shutdown would leave httpx's request body half sent (a ResourceWarning).
        telnyx.api_down = None
        for call in list(telnyx.calls.values()):
            if call.alive:
                await http.post(f"{telnyx_base}/calls/{call.call_control_id}/actions/hangup",
                                headers={"authorization": f"Bearer {telnyx.api_key}"}, json={})
        with trio.move_on_after(10):
            for call in list(telnyx.calls.values()):
                await call.finished.wait()
        stop.set()
        with trio.fail_after(20):
            await server_done.wait()
        nursery.cancel_scope.cancel()


def hangups(call: EmulatedCall) -> list[Any]:
    return [c for c in call.commands if c.verb == "hangup"]


# -- the whole call ---------------------------------------------------------------------------------

async def test_initiate_dial_stream_a_turn_with_the_bot_then_hang_up() -> None:
    callee = callee_script((1.0,), 8.0, lead_in_s=2.5)  # lets the greeting finish first
    speak = DeepgramSpeakEmulator(api_key="test-key", ms_per_char=30.0)
    async with open_call_stack(claude=True, callee=callee, speed=1.0, speak=speak) as cs:
        sub = await cs.subscribe()
        response = await cs.initiate("Ana", CALLEE)
        assert response.status_code == 202, response.text
        placed = response.json()
        call_id, control_id = placed["callId"], placed["callControlId"]
        assert placed["state"] == "dialing" and control_id.startswith("v3:")

        # The dial: streaming to us with the per-call token, our call id as client_state.
        emulated = cs.emulated(control_id)
        body = emulated.dial_body
        assert body is not None
        token = body["stream_auth_token"]
        assert body["stream_url"] == cs.base_url.replace("http://", "ws://") + "/stream/media"
        assert (body["stream_track"], body["stream_bidirectional_mode"],
                body["stream_bidirectional_codec"], body["stream_codec"]) == (
            "inbound_track", "rtp", "PCMU", "PCMU")
        assert cs.issued[token] == call_id and len(token) >= 32
        assert base64.b64decode(body["client_state"]).decode() == call_id
        assert body["command_id"] and body["to"] == CALLEE and body["from"] == FROM_NUMBER
        assert body["connection_id"] == "conn-1"
        assert body["webhook_url"] == f"{cs.base_url}/webhooks/telnyx"
        dial = [c for c in cs.telnyx.commands if c.verb == "dial"][0]
        assert dial.headers["authorization"] == f"Bearer {TELNYX_KEY}"

        call = await cs.wait_state(call_id, "streaming")
        assert call["answeredAt"] and call["nombre"] == "Ana" and call["telefono"] == CALLEE

        # A turn: the greeting names the callee, the caller's words reach the relay, the bot
        # answers and the caller hears it.
        with trio.fail_after(25):
            while len([e for e in sub.for_call(call_id) if e["type"] == "reply"]) < 2:
                await trio.sleep(0.05)
        events = sub.for_call(call_id)
        replies = [e for e in events if e["type"] == "reply"]
        assert "Ana" in replies[0]["text"]
        finals = [e for e in events if e["type"] == "final"]
        assert finals and finals[0]["text"] == SCRIPT[0]
        record = emulated.caller_record
        assert record is not None and record.call_control_id == control_id
        assert any(isinstance(f.message, MediaOut) for f in record.received)
        assert len(record.played) > 8000  # over a second of the bot's voice, played out

        # Hang up through our API: Telnyx's hangup → call.hangup webhook → the call ends.
        response = await cs.hangup(call_id)
        assert response.status_code == 200 and response.json()["hangup"] == "requested"
        (command,) = hangups(emulated)
        assert command.status == 200 and command.body["command_id"]
        ended = await sub.wait_ended(call_id)
        assert ended[-1]["type"] == "call" and ended[-1]["state"] == "ended"
        call = await cs.wait_state(call_id, "ended")
        assert call["hangupCause"] == "normal_clearing"
        assert call["endReason"] == "hangup: normal_clearing" and call["endedAt"]
        assert emulated.hangup_source == "caller"
        with trio.fail_after(5):
            while cs.stack.service.registry.calls:
                await trio.sleep(0.02)
        assert token not in cs.issued  # a stale token opens nothing


async def test_the_bot_says_goodbye_and_hangs_up() -> None:
    """The scripted dialogue ends the call: the Brain's Hangup → CallHangup → Telnyx hangup →
    call.hangup webhook → the call ends, with nobody calling our hangup route."""
    callee = callee_script((1.0, 1.0), [3.0, 8.0], lead_in_s=1.5)  # never hangs up itself
    async with open_call_stack(callee=callee, speed=2.0) as cs:
        sub = await cs.subscribe()
        call_id = (await cs.initiate()).json()["callId"]
        call = await cs.wait_state(call_id, "ended", timeout=30)
        emulated = cs.emulated(call["callControlId"])
        (command,) = hangups(emulated)
        assert command.status == 200 and emulated.hangup_source == "caller"
        assert call["hangupCause"] == "normal_clearing"
        events = await sub.wait_ended(call_id)
        assert [e["text"] for e in events if e["type"] == "final"] == list(SCRIPT)
        replies = [e for e in events if e["type"] == "reply"]
        assert "Ana" in replies[0]["text"]  # the greeting, by name
        assert replies[-1]["text"].endswith("Adiós.") and not replies[-1]["interrupted"]


async def test_a_hangup_webhook_stops_the_calls_supervisor() -> None:
    """The callee hangs up: Telnyx stops the stream and sends call.hangup; the call ends with its
    cause even though nobody here asked for it."""
    async with open_call_stack(callee=callee_script((1.0,), 1.0, hangup_after_s=3.0)) as cs:
        sub = await cs.subscribe()
        call_id = (await cs.initiate()).json()["callId"]
        events = await sub.wait_ended(call_id)
        assert [e["text"] for e in events if e["type"] == "final"] == [SCRIPT[0]]
        call = await cs.wait_state(call_id, "ended")
        assert call["hangupCause"] == "normal_clearing"
        assert hangups(cs.emulated(call["callControlId"])) == []  # the callee hung up
        # The stream stops before call.hangup lands; the relay's end still carries the cause.
        assert events[-1]["type"] == "call" and events[-1]["state"] == "ended"
        assert events[-1]["hangupCause"] == "normal_clearing"
        assert events[-1]["streamId"]


async def test_hanging_up_an_ended_or_unknown_call() -> None:
    async with open_call_stack(callee=callee_script(hangup_after_s=1.0)) as cs:
        call_id = (await cs.initiate()).json()["callId"]
        await cs.wait_state(call_id, "ended")
        response = await cs.hangup(call_id)
        assert response.status_code == 200
        assert response.json() == {"callId": call_id, "state": "ended", "hangup": "already ended"}
        assert (await cs.hangup("no-such-call")).status_code == 404
        assert (await cs.http.get(f"{cs.base_url}/api/call/{call_id}/hangup")).status_code == 405
        assert (await cs.http.post(f"{cs.base_url}/api/call/{call_id}/mute")).status_code == 404


# -- failures on the way in -------------------------------------------------------------------------

@pytest.mark.parametrize("down", ["503", "refuse"])
async def test_telnyx_down_gives_502_and_leaves_nothing_behind(down: str) -> None:
    async with open_call_stack() as cs:
        cs.telnyx.api_down = down  # type: ignore[assignment]
        response = await cs.initiate()
        assert response.status_code == 502
        if down == "503":
            assert response.json() == {"error": "telnyx", "code": "10007", "detail":
                                       "The service is temporarily unavailable (emulated outage)."}
            assert len([c for c in cs.telnyx.commands if c.verb == "dial"]) == 2  # one resend
        else:
            assert response.json()["error"] == "telnyx_unreachable"
        assert cs.issued == {}
        assert await cs.calls() == []
        cs.telnyx.api_down = None
        response = await cs.initiate()  # and it recovers
        assert response.status_code == 202


async def test_a_dial_telnyx_refuses_gives_502_with_its_code() -> None:
    async with open_call_stack() as cs:
        cs.telnyx.api_key = "rotated-key"  # ours is no longer valid
        response = await cs.initiate()
        assert response.status_code == 502
        assert response.json()["error"] == "telnyx" and response.json()["code"] == "10009"
        assert len(cs.telnyx.commands) == 1  # a 4xx is not resent
        assert cs.issued == {} and await cs.calls() == []


async def test_bad_input_gives_400_with_a_message_per_field() -> None:
    async with open_call_stack() as cs:
        response = await cs.initiate(nombre="", telefono="3001234567")
        assert response.status_code == 400
        assert set(response.json()["fields"]) == {"nombre", "telefono"}
        response = await cs.initiate(nombre="x" * 101, telefono="+57300")
        assert set(response.json()["fields"]) == {"nombre", "telefono"}
        response = await cs.http.post(f"{cs.base_url}/api/call/initiate", content=b"{nope")
        assert response.status_code == 400 and response.json()["fields"] == {
            "body": "must be a JSON object"}
        response = await cs.http.post(f"{cs.base_url}/api/call/initiate", json=["Ana"])
        assert response.status_code == 400 and "body" in response.json()["fields"]
        assert cs.telnyx.commands == [] and cs.issued == {} and await cs.calls() == []


async def test_an_unknown_stream_token_is_refused() -> None:
    async with open_call_stack() as cs:
        url = cs.base_url.replace("http://", "ws://") + "/stream/media"
        for token in ("not-a-token", None):
            with pytest.raises(CallRejected) as info, trio.fail_after(10):
                await TelnyxCaller(url, token=token, audio=b"\xff" * 800).run()
            assert info.value.status_code == 401
        assert not cs.stack.service.registry.calls


# -- webhooks: signatures, duplicates ---------------------------------------------------------------

async def test_spoilt_signatures_are_refused_and_the_retries_go_through() -> None:
    async with open_call_stack(callee=callee_script(hangup_after_s=1.5)) as cs:
        cs.telnyx.bad_signature_next = 1
        cs.telnyx.stale_timestamp_next = 1
        cs.telnyx.missing_signature_next = 1
        call_id = (await cs.initiate()).json()["callId"]
        call = await cs.wait_state(call_id, "ended")
        assert call["hangupCause"] == "normal_clearing"
        spoilt = [d for d in cs.telnyx.deliveries if d.fault is not None]
        assert sorted(d.fault or "" for d in spoilt) == [
            "bad_signature", "missing_signature", "stale_timestamp"]
        assert {d.status for d in spoilt} == {401}


async def test_duplicate_webhooks_are_ignored() -> None:
    async with open_call_stack(callee=callee_script(hangup_after_s=1.5)) as cs:
        cs.telnyx.duplicate_webhooks = True
        sub = await cs.subscribe()
        call_id = (await cs.initiate()).json()["callId"]
        call = await cs.wait_state(call_id, "ended")
        await sub.wait_ended(call_id)
        emulated = cs.emulated(call["callControlId"])
        assert [d.ok for d in emulated.deliveries if d.duplicate] and all(
            d.ok for d in emulated.deliveries)
        assert call["hangupCause"] == "normal_clearing"
        assert len([e for e in sub.for_call(call_id)
                    if e["type"] == "call" and e["state"] == "started"]) == 1


async def test_shuffled_webhooks_still_end_in_the_right_state() -> None:
    async with open_call_stack(callee=callee_script(hangup_after_s=1.5)) as cs:
        cs.telnyx.shuffle = True
        call_id = (await cs.initiate()).json()["callId"]
        call = await cs.wait_state(call_id, "ended")
        assert call["hangupCause"] == "normal_clearing" and call["answeredAt"]


async def test_without_a_public_key_every_webhook_is_refused() -> None:
    async with open_call_stack(public_key=False, callee=callee_script(hangup_after_s=0.5)) as cs:
        call_id = (await cs.initiate()).json()["callId"]
        with trio.fail_after(10):
            while not [d for d in cs.telnyx.deliveries if d.status == 503]:
                await trio.sleep(0.02)
        call = await cs.call(call_id)  # the book never hears of the answer or the hangup
        assert call["answeredAt"] is None and call["endedAt"] is None


# -- inbound calls and streams that never come ------------------------------------------------------

@pytest.mark.parametrize("inbound_calls", [True, False])
async def test_inbound_calls_are_answered_only_when_enabled(inbound_calls: bool) -> None:
    async with open_call_stack(inbound_calls=inbound_calls) as cs:
        sub = await cs.subscribe()
        script = callee_script((1.0,), 1.0, hangup_after_s=3.0, give_up_after_s=2.0)
        emulated = await cs.telnyx.place_inbound_call(to=FROM_NUMBER, from_="+34910000001",
                                                      script=script)
        with trio.fail_after(15):
            await emulated.finished.wait()
        answers = [c for c in emulated.commands if c.verb == "answer"]
        if not inbound_calls:
            assert answers == [] and emulated.hangup_cause == "originator_cancel"
            assert await cs.calls() == []
            return
        (answer,) = answers
        assert answer.status == 200
        token = answer.body["stream_auth_token"]
        assert answer.body["stream_bidirectional_mode"] == "rtp"
        assert answer.body["stream_url"].endswith("/stream/media")
        (call,) = await cs.calls()
        call_id = call["callId"]
        assert base64.b64decode(answer.body["client_state"]).decode() == call_id
        assert call["direction"] == "inbound" and call["telefono"] == "+34910000001"
        events = await sub.wait_ended(call_id)
        assert [e["text"] for e in events if e["type"] == "final"] == [SCRIPT[0]]
        call = await cs.wait_state(call_id, "ended")
        assert call["hangupCause"] == "normal_clearing" and token not in cs.issued


async def test_a_stream_that_never_connects_is_hung_up() -> None:
    async with open_call_stack() as cs:
        cs.telnyx.stream_never_connects = True
        cs.control.stream_connect_timeout_s = 1.0  # 10 s in service
        call_id = (await cs.initiate()).json()["callId"]
        await cs.wait_state(call_id, "answered")
        call = await cs.wait_state(call_id, "ended", timeout=10)
        assert call["endReason"] == "stream never connected"
        emulated = cs.emulated(call["callControlId"])
        with trio.fail_after(10):
            await emulated.finished.wait()
        assert len(hangups(emulated)) == 1
        with trio.fail_after(5):
            while (call := await cs.call(call_id))["hangupCause"] is None:
                await trio.sleep(0.02)
        assert call["hangupCause"] == "normal_clearing"  # filled in by the late call.hangup
