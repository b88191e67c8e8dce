"""TelnyxControl (the Call Control REST client) and CallHangup (the Brain's hangup link).

Telnyx is replaced at httpx's transport seam (``httpx.MockTransport``): these tests are about
what goes on the wire and when a command is resent; the e2e tests run it against the Telnyx API
emulator over loopback. Timing runs on trio's ``autojump_clock``.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import attrs
import httpx
import orjson
import pytest
import trio

from actors.call_control_link import CallHangup
from actors.messages import CallInfo, Hangup
from actors.telnyx_control import (ALREADY_ENDED, TelnyxApiError, TelnyxBadResponse,
                                   TelnyxControl, TelnyxError, TelnyxUnreachable)
from protocols import telnyx_call_control as cc
from protocols.audio import PCMU_8K
from tests.actors.harness import (check_closes_outputs_when_input_ends,
                                  check_exits_promptly_when_cancelled, open_actor)

API_KEY = "KEY-super-secret-0123456789"
BASE = "https://telnyx.test/v2"
DIAL_OK = cc.encode_dial_response(cc.DialResult(call_control_id="v3:abc", call_leg_id="leg"))
COMMAND_OK = cc.encode_command_result()

Reply = Callable[[httpx.Request, int], Awaitable[httpx.Response]]


@attrs.define
class Seen:
    method: str
    url: str
    headers: dict[str, str]
    body: dict[str, Any] | None
    at: float


@asynccontextmanager
async def telnyx(reply: Reply) -> AsyncIterator[tuple[TelnyxControl, list[Seen]]]:
    seen: list[Seen] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        content = request.content
        seen.append(Seen(request.method, str(request.url), dict(request.headers),
                         orjson.loads(content) if content else None, trio.current_time()))
        return await reply(request, len(seen))

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        yield TelnyxControl(client=client, api_key=API_KEY, api_base=BASE), seen


def answers(*responses: tuple[int, bytes] | type[httpx.TransportError] | float) -> Reply:
    """One scripted answer per attempt: (status, body), an httpx exception to raise, or a float:
    sleep that long and then answer OK."""

    async def reply(request: httpx.Request, attempt: int) -> httpx.Response:
        what = responses[min(attempt, len(responses)) - 1]
        if isinstance(what, float):
            await trio.sleep(what)
            ok = DIAL_OK if request.url.path.endswith("/calls") else COMMAND_OK
            return httpx.Response(200, content=ok)
        if isinstance(what, type):
            raise what("scripted", request=request)
        status, body = what
        return httpx.Response(status, content=body)

    return reply


def errors(status: int, code: str, detail: str = "") -> tuple[int, bytes]:
    return status, cc.encode_api_errors(cc.TelnyxApiErrors(
        status=status, errors=(cc.ApiError(code=code, title="t", detail=detail or None),)))


def dial_fields() -> dict[str, Any]:
    return {"connection_id": "conn-1", "to": "+573001234567", "from_": "+15550001111",
            "stream_url": "wss://example.com/stream/media", "stream_auth_token": "tok",
            "client_state": "call-1"}


async def test_dial_sends_bearer_json_and_a_command_id_and_decodes_the_answer() -> None:
    async with telnyx(answers((200, DIAL_OK))) as (control, seen):
        result = await control.dial(**dial_fields())
    assert result.call_control_id == "v3:abc"
    (request,) = seen
    assert (request.method, request.url) == ("POST", f"{BASE}/calls")
    assert request.headers["authorization"] == f"Bearer {API_KEY}"
    assert request.headers["content-type"] == "application/json"
    assert request.body is not None
    assert request.body["stream_url"] == "wss://example.com/stream/media"
    assert request.body["stream_bidirectional_mode"] == "rtp"
    assert request.body["client_state"] == "Y2FsbC0x"  # base64("call-1")
    assert len(request.body["command_id"]) == 36


async def test_a_given_command_id_is_kept() -> None:
    async with telnyx(answers((200, COMMAND_OK))) as (control, seen):
        await control.hangup("v3:abc", command_id="my-id")
    assert seen[0].url == f"{BASE}/calls/v3:abc/actions/hangup"
    assert seen[0].body == {"command_id": "my-id"}


async def test_a_5xx_is_resent_once_with_the_same_command_id() -> None:
    async with telnyx(answers(errors(503, "10000"), (200, COMMAND_OK))) as (control, seen):
        result = await control.answer("v3:abc", stream_url="wss://x.test/stream/media")
    assert result.ok
    assert len(seen) == 2 and seen[0].body == seen[1].body
    assert control.statistics().resends == 1


async def test_a_5xx_twice_is_an_api_error() -> None:
    async with telnyx(answers(errors(502, "10000", "upstream"))) as (control, seen):
        with pytest.raises(TelnyxApiError) as caught:
            await control.dial(**dial_fields())
    assert len(seen) == 2 and seen[0].body == seen[1].body
    assert (caught.value.status, caught.value.code, caught.value.detail) == (502, "10000",
                                                                              "upstream")


async def test_a_slow_command_is_resent_after_500_ms(autojump_clock: trio.abc.Clock) -> None:
    async with telnyx(answers(5.0, (200, COMMAND_OK))) as (control, seen):
        begun = trio.current_time()
        result = await control.streaming_start("v3:abc", stream_url="wss://x.test/s")
        took = trio.current_time() - begun
    assert result.ok
    assert len(seen) == 2 and seen[0].body == seen[1].body
    assert seen[1].at - seen[0].at == pytest.approx(0.5)
    assert took == pytest.approx(0.5)


async def test_a_slow_dial_is_not_resent(autojump_clock: trio.abc.Clock) -> None:
    async with telnyx(answers(1.5)) as (control, seen):
        result = await control.dial(**dial_fields())
    assert result.call_control_id == "v3:abc" and len(seen) == 1


async def test_a_dial_whose_answer_was_lost_is_not_resent() -> None:
    async with telnyx(answers(httpx.ReadTimeout)) as (control, seen):
        with pytest.raises(TelnyxUnreachable, match="no answer in time"):
            await control.dial(**dial_fields())
    assert len(seen) == 1


async def test_a_refused_connection_is_retried_once_even_for_a_dial() -> None:
    async with telnyx(answers(httpx.ConnectError, (200, DIAL_OK))) as (control, seen):
        assert (await control.dial(**dial_fields())).call_control_id == "v3:abc"
    assert len(seen) == 2 and seen[0].body == seen[1].body


async def test_unreachable_after_the_resend() -> None:
    async with telnyx(answers(httpx.ConnectError)) as (control, seen):
        with pytest.raises(TelnyxUnreachable, match="ConnectError"):
            await control.speak("v3:abc", payload="hola", voice="Telnyx.KokoroTTS.af")
    assert len(seen) == 2
    assert control.statistics().unreachable == 1


async def test_hangup_of_an_ended_call_is_a_success() -> None:
    async with telnyx(answers(errors(422, cc.CALL_HAS_ENDED))) as (control, seen):
        result = await control.hangup("v3:abc")
    assert result.result == ALREADY_ENDED and len(seen) == 1


async def test_other_commands_on_an_ended_call_are_errors() -> None:
    async with telnyx(answers(errors(422, cc.CALL_HAS_ENDED, "Call has already ended"))) as (
            control, _):
        with pytest.raises(TelnyxApiError) as caught:
            await control.playback_start("v3:abc", audio_url="https://x.test/a.mp3")
    assert caught.value.errors.call_has_ended and caught.value.code == "90018"


async def test_a_4xx_is_not_resent() -> None:
    async with telnyx(answers(errors(403, "D13", "country not whitelisted"))) as (control, seen):
        with pytest.raises(TelnyxApiError, match="HTTP 403: D13"):
            await control.dial(**dial_fields())
    assert len(seen) == 1


async def test_a_garbled_2xx_is_a_bad_response() -> None:
    async with telnyx(answers((200, b"<html>ok</html>"))) as (control, _):
        with pytest.raises(TelnyxBadResponse):
            await control.streaming_stop("v3:abc")


async def test_the_key_is_never_logged_nor_in_repr(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    async with telnyx(answers(errors(500, "1"), httpx.ConnectError)) as (control, _):
        with pytest.raises(TelnyxError) as caught:
            await control.hangup("v3:abc")
        assert API_KEY not in repr(control)
    assert API_KEY not in str(caught.value)
    for record in caplog.records:
        assert API_KEY not in record.getMessage() and API_KEY not in str(record.__dict__)


# -- CallHangup ------------------------------------------------------------------------------------

CALL = CallInfo(call_id="c1", call_control_id="v3:c1", stream_id="s1", audio_format=PCMU_8K)


@attrs.define
class FakeControl:
    fail_first: int = 0
    hung_up: list[str] = attrs.Factory(list)

    async def hangup(self, call_control_id: str, **fields: Any) -> object:
        await trio.sleep(0.1)
        if self.fail_first:
            self.fail_first -= 1
            raise TelnyxUnreachable("hangup: unreachable (ConnectError)")
        self.hung_up.append(call_control_id)
        return cc.CommandResult()


async def test_call_hangup_hangs_up_once(autojump_clock: trio.abc.Clock) -> None:
    control = FakeControl()
    link = CallHangup(call=CALL, control=control)
    async with open_actor(link.run) as actor:
        await actor.feed([Hangup("goodbye said"), Hangup("goodbye said")])
        actor.end_input()
        await actor.wait_done()
    assert control.hung_up == ["v3:c1"] and actor.returned


async def test_call_hangup_logs_a_failure_and_tries_again_on_the_next_hangup(
        autojump_clock: trio.abc.Clock, caplog: pytest.LogCaptureFixture) -> None:
    control = FakeControl(fail_first=1)
    link = CallHangup(call=CALL, control=control)
    async with open_actor(link.run) as actor:
        await actor.feed([Hangup("goodbye said")])
        await trio.sleep(1)
        assert control.hung_up == [] and "hangup failed" in caplog.text
        await actor.feed([Hangup("goodbye said")])
        actor.end_input()
        await actor.wait_done()
    assert control.hung_up == ["v3:c1"] and actor.error is None


async def test_call_hangup_passes_the_actor_contract(autojump_clock: trio.abc.Clock) -> None:
    def start() -> Any:
        return open_actor(CallHangup(call=CALL, control=FakeControl()).run)

    async def provoke(actor: Any) -> None:
        await actor.feed([Hangup("goodbye said")])

    await check_closes_outputs_when_input_ends(start, provoke=provoke)
    await check_exits_promptly_when_cancelled(start, provoke=provoke)
