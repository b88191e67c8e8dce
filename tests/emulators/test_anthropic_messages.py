"""The Messages API emulator driven by the real ``anthropic.AsyncAnthropic`` under trio.

Each test opens its own client (``async with``: under trio an unclosed client never closes its
pool) against an emulator served on loopback by hypercorn's trio worker. What the SDK raises in
each fault case is asserted by exact class: that is the contract the Brain codes against.
"""

from __future__ import annotations

from typing import Any

import anthropic
import httpx2
import orjson
import pytest
import trio

from bench.emulators.anthropic_messages import (
    DEFAULT_REPLY,
    AnthropicEmulator,
    Fault,
    last_user_text,
    split_tokens,
)
from protocols.anthropic_stream import decode_event
from protocols.sse import NEED_DATA, SSEEvent, SSEReader

KEY = "test-key"
MODEL = "claude-haiku-4-5"
SYSTEM = "Eres la recepcionista de una clínica dental. Responde en una frase."
MESSAGES: list[Any] = [
    {"role": "user", "content": "Hola, quiero una cita."},
    {"role": "assistant", "content": "Claro, ¿para qué día?"},
    {"role": "user", "content": "El martes por la mañana."},
]


def echo(body: Any) -> str:
    return f"Entendido: {last_user_text(body)} ¿Algo más?"


EXPECTED = echo({"messages": MESSAGES})


@pytest.fixture
async def emulator(nursery: trio.Nursery) -> AnthropicEmulator:
    emu = AnthropicEmulator(api_key=KEY, reply_for=echo)
    await nursery.start(emu.serve)
    return emu


def open_client(emu: AnthropicEmulator, **kw: Any) -> anthropic.AsyncAnthropic:
    assert emu.url is not None
    kw.setdefault("api_key", KEY)
    kw.setdefault("max_retries", 0)
    return anthropic.AsyncAnthropic(base_url=emu.url, **kw)


async def stream_pieces(client: anthropic.AsyncAnthropic, into: list[str]) -> anthropic.types.Message:
    async with client.messages.stream(model=MODEL, max_tokens=256, system=SYSTEM,
                                      messages=MESSAGES) as stream:
        async for piece in stream.text_stream:
            into.append(piece)
        return await stream.get_final_message()


async def raw_post(emu: AnthropicEmulator, body: Any, headers: dict[str, str]) -> httpx2.Response:
    assert emu.url is not None
    async with httpx2.AsyncClient(base_url=emu.url) as http:
        content = body if isinstance(body, bytes) else orjson.dumps(body)
        return await http.post("/v1/messages", content=content, headers=headers)


# == the happy paths ================================================================================

def test_split_tokens_keeps_every_character() -> None:
    assert split_tokens("Hola, ¿qué tal?") == ["Hola", ",", " ¿", "qué", " tal", "?"]
    for text in (DEFAULT_REPLY, EXPECTED, "", "  dos  espacios ", "l'eau 3,5 €\n¡ya!"):
        assert "".join(split_tokens(text)) == text


async def test_stream_yields_the_pieces_and_a_final_message(emulator: AnthropicEmulator) -> None:
    pieces: list[str] = []
    async with open_client(emulator) as client:
        final = await stream_pieces(client, pieces)

    assert pieces == split_tokens(EXPECTED)
    assert final.stop_reason == "end_turn"
    assert final.model == MODEL
    assert final.content[0].type == "text" and final.content[0].text == EXPECTED
    assert final.usage.output_tokens == len(pieces)
    assert final.usage.input_tokens > 0
    assert final.id.startswith("msg_01")

    [record] = emulator.requests
    assert record.outcome == "completed" and record.status == 200
    assert record.pieces_sent == pieces
    assert (record.model, record.max_tokens, record.system, record.messages) == (
        MODEL, 256, SYSTEM, MESSAGES)
    assert record.stream is True
    assert "temperature" not in record.body and record.temperature is None
    assert record.api_key == KEY and record.headers["authorization"] == f"Bearer {KEY}"
    assert record.anthropic_version  # whatever this SDK release sends; never checked
    assert record.headers["x-stainless-async"] == "async:trio"
    assert record.retry_count == 0
    times = (record.received_at, record.body_at, record.first_byte_at, record.first_token_at,
             record.done_at)
    assert None not in times and list(times) == sorted(times)  # type: ignore[type-var]


async def test_the_wire_has_the_documented_sequence_with_ping(emulator: AnthropicEmulator) -> None:
    # The SDK drops ping, so read the bytes ourselves; pacing keeps events in separate chunks.
    emulator.tokens_per_s = 200.0
    assert emulator.url is not None
    reader = SSEReader()
    events: list[SSEEvent] = []
    chunks = 0
    async with httpx2.AsyncClient(base_url=emulator.url) as http:
        body = {"model": MODEL, "max_tokens": 64, "messages": MESSAGES[:1], "stream": True}
        async with http.stream("POST", "/v1/messages", json=body,
                               headers={"x-api-key": KEY}) as response:
            assert response.status_code == 200
            assert response.headers["content-type"] == "text/event-stream"
            assert response.headers["request-id"].startswith("req_01")
            async for chunk in response.aiter_raw():
                chunks += 1
                reader.receive_data(chunk)
                while (event := reader.next_event()) is not NEED_DATA:
                    assert isinstance(event, SSEEvent)
                    events.append(event)
    n = len(split_tokens(echo({"messages": MESSAGES[:1]})))
    names = [e.event for e in events]
    assert names == ["message_start", "content_block_start", "ping",
                     *["content_block_delta"] * n, "content_block_stop", "message_delta",
                     "message_stop"]
    assert chunks >= n  # each paced delta is its own chunk at least
    delta = decode_event(events[-2])
    assert delta.delta.stop_reason == "end_turn" and delta.usage.output_tokens == n  # type: ignore[union-attr]


async def test_non_streamed_create_returns_one_message(emulator: AnthropicEmulator) -> None:
    async with open_client(emulator) as client:
        message = await client.messages.create(model=MODEL, max_tokens=256, system=SYSTEM,
                                               messages=MESSAGES)
        short = await client.messages.create(model=MODEL, max_tokens=2, messages=MESSAGES)
    assert message.content[0].text == EXPECTED  # type: ignore[union-attr]
    assert message.stop_reason == "end_turn"
    assert message.usage.output_tokens == len(split_tokens(EXPECTED))
    assert short.stop_reason == "max_tokens" and short.usage.output_tokens == 2
    assert short.content[0].text == "".join(split_tokens(EXPECTED)[:2])  # type: ignore[union-attr]
    assert [r.stream for r in emulator.requests] == [False, False]


async def test_replies_are_scripted_in_order_then_reply_for(emulator: AnthropicEmulator) -> None:
    emulator.replies.extend(["Primera.", "Segunda."])
    emulator.fail_next("overloaded", retry_after_ms=10)  # a failed attempt does not use up a line
    async with open_client(emulator, max_retries=1) as client:
        texts = []
        for _ in range(3):
            message = await client.messages.create(model=MODEL, max_tokens=64, messages=MESSAGES)
            texts.append(message.content[0].text)  # type: ignore[union-attr]
    assert texts == ["Primera.", "Segunda.", EXPECTED]
    assert [r.status for r in emulator.requests] == [529, 200, 200, 200]


async def test_ttft_and_tokens_per_s_are_honoured(emulator: AnthropicEmulator) -> None:
    emulator.ttft_s, emulator.tokens_per_s = 0.3, 20.0
    emulator.replies.append("uno dos tres cuatro cinco seis")  # 6 pieces: 0.3 s + 5 x 50 ms
    arrivals: list[float] = []
    async with open_client(emulator) as client:
        start = trio.current_time()
        async with client.messages.stream(model=MODEL, max_tokens=64,
                                          messages=MESSAGES) as stream:
            async for _ in stream.text_stream:
                arrivals.append(trio.current_time() - start)
    assert len(arrivals) == 6
    assert 0.3 <= arrivals[0] < 0.5
    assert 0.55 <= arrivals[-1] < 0.9
    gaps = [b - a for a, b in zip(arrivals, arrivals[1:])]
    assert min(gaps) > 0.02
    record = emulator.requests[0]
    assert record.body_at is not None and record.first_token_at is not None
    assert record.first_token_at - record.body_at == pytest.approx(0.3, abs=0.05)


# == refusals =======================================================================================

async def test_wrong_key_is_an_authentication_error(emulator: AnthropicEmulator) -> None:
    async with open_client(emulator, api_key="wrong") as client:
        with pytest.raises(anthropic.AuthenticationError) as caught:
            await client.messages.create(model=MODEL, max_tokens=64, messages=MESSAGES)
    [record] = emulator.requests
    assert caught.value.status_code == 401
    assert caught.value.request_id == record.request_id
    assert caught.value.body == {
        "type": "error", "error": {"type": "authentication_error", "message": "invalid x-api-key"},
        "request_id": record.request_id}
    assert record.outcome == "error_response" and record.error_type == "authentication_error"


async def test_x_api_key_is_accepted_and_no_key_is_refused(emulator: AnthropicEmulator) -> None:
    body = {"model": MODEL, "max_tokens": 64, "messages": MESSAGES}
    ok = await raw_post(emulator, body, {"x-api-key": KEY})
    assert ok.status_code == 200 and ok.json()["content"][0]["text"] == EXPECTED
    missing = await raw_post(emulator, body, {})
    assert missing.status_code == 401
    assert missing.json()["error"] == {"type": "authentication_error",
                                       "message": "x-api-key header is required"}
    assert missing.headers["request-id"] == missing.json()["request_id"]


@pytest.mark.parametrize(("body", "message"), [
    (b"{not json", "Request body is not valid JSON"),
    ([1, 2], "Request body must be a JSON object"),
    ({"max_tokens": 5, "messages": MESSAGES}, "model: Field required"),
    ({"model": MODEL, "messages": MESSAGES}, "max_tokens: Field required"),
    ({"model": MODEL, "max_tokens": "5", "messages": MESSAGES},
     "max_tokens: Input should be a valid integer"),
    ({"model": MODEL, "max_tokens": 5, "messages": []},
     "messages: at least one message is required"),
    ({"model": MODEL, "max_tokens": 5, "messages": [{"role": "system", "content": "x"}]},
     "messages.0.role: Input should be 'user' or 'assistant'"),
    ({"model": MODEL, "max_tokens": 5, "messages": [{"role": "user"}]},
     "messages.0.content: Field required"),
])
async def test_invalid_bodies_are_refused_with_400(emulator: AnthropicEmulator, body: Any,
                                                   message: str) -> None:
    response = await raw_post(emulator, body, {"authorization": f"Bearer {KEY}"})
    assert response.status_code == 400
    assert response.json()["error"] == {"type": "invalid_request_error", "message": message}


async def test_the_sdk_maps_400_to_bad_request(emulator: AnthropicEmulator) -> None:
    async with open_client(emulator) as client:
        with pytest.raises(anthropic.BadRequestError) as caught:
            await client.messages.create(model=MODEL, max_tokens=64, messages=[])
    assert caught.value.status_code == 400


async def test_temperature_is_recorded_as_sent(emulator: AnthropicEmulator) -> None:
    async with open_client(emulator) as client:
        await client.messages.create(model=MODEL, max_tokens=64, messages=MESSAGES,
                                     extra_body={"temperature": 0.2})
    assert emulator.requests[0].temperature == 0.2


# == HTTP faults ====================================================================================

async def test_429_is_retried_after_retry_after(emulator: AnthropicEmulator) -> None:
    emulator.fail_next("rate_limit", retry_after_s=0.2)
    async with open_client(emulator, max_retries=1) as client:
        start = trio.current_time()
        message = await client.messages.create(model=MODEL, max_tokens=64, messages=MESSAGES)
        elapsed = trio.current_time() - start
    assert message.content[0].text == EXPECTED  # type: ignore[union-attr]
    assert 0.2 <= elapsed < 0.6
    first, second = emulator.requests
    assert (first.status, first.error_type, first.fault) == (
        429, "rate_limit_error", Fault("rate_limit", retry_after_s=0.2))
    assert (second.status, second.retry_count) == (200, 1)
    assert second.received_at - first.done_at >= 0.2  # type: ignore[operator]


async def test_429_without_retries_carries_retry_after_headers(emulator: AnthropicEmulator) -> None:
    emulator.fail_next("rate_limit", retry_after_s=3, retry_after_ms=150)
    async with open_client(emulator) as client:
        with pytest.raises(anthropic.RateLimitError) as caught:
            await client.messages.create(model=MODEL, max_tokens=64, messages=MESSAGES)
    headers = caught.value.response.headers
    assert (headers["retry-after"], headers["retry-after-ms"]) == ("3", "150")
    assert caught.value.body["error"]["type"] == "rate_limit_error"  # type: ignore[index]


@pytest.mark.parametrize(("kind", "error", "status", "error_type"), [
    ("overloaded", anthropic.OverloadedError, 529, "overloaded_error"),
    ("server_error", anthropic.InternalServerError, 500, "api_error"),
])
async def test_server_faults_raise_their_status_errors(
        emulator: AnthropicEmulator, kind: str, error: type[anthropic.APIStatusError], status: int,
        error_type: str) -> None:
    emulator.fail_next(kind)  # type: ignore[arg-type]
    async with open_client(emulator) as client:
        with pytest.raises(error) as caught:
            async with client.messages.stream(model=MODEL, max_tokens=64, messages=MESSAGES):
                pass  # pragma: no cover
    assert type(caught.value) is error and caught.value.status_code == status
    assert caught.value.body["error"]["type"] == error_type  # type: ignore[index]
    assert emulator.pending_faults == ()


async def test_always_fail_lasts_until_cleared(emulator: AnthropicEmulator) -> None:
    emulator.always_fail = Fault("overloaded")
    async with open_client(emulator, max_retries=0) as client:
        for _ in range(3):
            with pytest.raises(anthropic.OverloadedError):
                await client.messages.create(model=MODEL, max_tokens=64, messages=MESSAGES)
        emulator.always_fail = None
        message = await client.messages.create(model=MODEL, max_tokens=64, messages=MESSAGES)
    assert message.stop_reason == "end_turn"
    assert [r.status for r in emulator.requests] == [529, 529, 529, 200]


# == stream faults ==================================================================================

async def test_mid_stream_error_is_a_status_error_with_status_200(
        emulator: AnthropicEmulator) -> None:
    emulator.fail_next("mid_stream_error", after_deltas=2)
    pieces: list[str] = []
    async with open_client(emulator, max_retries=2) as client:
        with pytest.raises(anthropic.APIStatusError) as caught:
            await stream_pieces(client, pieces)
    assert type(caught.value) is anthropic.APIStatusError  # not OverloadedError, not retried
    assert caught.value.status_code == 200
    assert caught.value.body == {"type": "error",
                                 "error": {"type": "overloaded_error", "message": "Overloaded"}}
    assert pieces == split_tokens(EXPECTED)[:2]
    [record] = emulator.requests
    assert record.outcome == "stream_error" and record.pieces_sent == pieces


async def test_mid_stream_error_without_stream_is_a_529(emulator: AnthropicEmulator) -> None:
    emulator.fail_next("mid_stream_error")
    async with open_client(emulator) as client:
        with pytest.raises(anthropic.OverloadedError):
            await client.messages.create(model=MODEL, max_tokens=64, messages=MESSAGES)


async def test_stall_hits_the_read_timeout_and_is_abandoned(emulator: AnthropicEmulator) -> None:
    # Headers come, then nothing: the SDK returns the stream (it has the headers) and the read
    # timeout fires while iterating, as the raw httpx2 error: the SDK only wraps errors raised
    # before the response is handed over.
    emulator.fail_next("stall")
    async with open_client(emulator, timeout=anthropic.Timeout(0.5, connect=1)) as client:
        start = trio.current_time()
        with pytest.raises(httpx2.ReadTimeout):
            await stream_pieces(client, [])
        assert 0.5 <= trio.current_time() - start < 1.0
    await wait_for_outcome(emulator, 0)
    assert emulator.requests[0].outcome == "client_closed"


async def test_stall_without_stream_is_an_api_timeout_error(emulator: AnthropicEmulator) -> None:
    emulator.fail_next("stall")
    async with open_client(emulator, timeout=anthropic.Timeout(0.3, connect=1)) as client:
        with pytest.raises(anthropic.APITimeoutError):
            await client.messages.create(model=MODEL, max_tokens=64, messages=MESSAGES)


async def test_stall_mid_stream_abandoned_by_an_outer_deadline(emulator: AnthropicEmulator) -> None:
    emulator.fail_next("stall", after_deltas=3)
    pieces: list[str] = []
    async with open_client(emulator) as client:  # default 600 s timeout: our deadline rules
        with trio.move_on_after(0.3) as scope:
            await stream_pieces(client, pieces)
        assert scope.cancelled_caught
        # The pool is still usable after the abandoned stream.
        message = await client.messages.create(model=MODEL, max_tokens=64, messages=MESSAGES)
    assert pieces == split_tokens(EXPECTED)[:3]
    assert message.stop_reason == "end_turn"
    await wait_for_outcome(emulator, 0)
    assert emulator.requests[0].outcome == "client_closed"


async def test_drop_mid_stream_is_a_raw_remote_protocol_error(emulator: AnthropicEmulator) -> None:
    emulator.fail_next("drop", after_deltas=2)
    pieces: list[str] = []
    async with open_client(emulator, max_retries=2) as client:
        with pytest.raises(httpx2.RemoteProtocolError, match="incomplete chunked read"):
            await stream_pieces(client, pieces)
    assert pieces == split_tokens(EXPECTED)[:2]
    assert len(emulator.requests) == 1  # not retried
    assert emulator.requests[0].outcome == "dropped"


async def test_drop_without_stream_is_an_api_connection_error(emulator: AnthropicEmulator) -> None:
    emulator.fail_next("drop")
    async with open_client(emulator) as client:
        with pytest.raises(anthropic.APIConnectionError) as caught:
            await client.messages.create(model=MODEL, max_tokens=64, messages=MESSAGES)
    assert type(caught.value) is anthropic.APIConnectionError
    assert isinstance(caught.value.__cause__, httpx2.RemoteProtocolError)


async def test_unknown_fault_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown fault kind"):
        Fault("explode")  # type: ignore[arg-type]


async def test_unknown_path_is_404(emulator: AnthropicEmulator) -> None:
    assert emulator.url is not None
    async with httpx2.AsyncClient(base_url=emulator.url) as http:
        response = await http.post("/v1/complete", headers={"x-api-key": KEY})
    assert response.status_code == 404
    assert response.json()["error"]["type"] == "not_found_error"


async def test_cancelling_the_emulator_ends_open_requests() -> None:
    emu = AnthropicEmulator(api_key=KEY)
    emu.fail_next("stall")
    async with trio.open_nursery() as server:
        await server.start(emu.serve)
        async with open_client(emu) as client:
            with pytest.raises(httpx2.RemoteProtocolError):
                async with client.messages.stream(model=MODEL, max_tokens=64,
                                                  messages=MESSAGES) as stream:
                    server.cancel_scope.cancel()
                    async for _ in stream.text_stream:
                        pass  # pragma: no cover
    assert emu.requests[0].outcome == "server_shutdown"


async def wait_for_outcome(emu: AnthropicEmulator, index: int) -> None:
    """The server hears of a client's hang-up a moment after the client's side returns."""
    with trio.fail_after(1):
        while emu.requests[index].outcome is None:
            await trio.sleep(0.01)

