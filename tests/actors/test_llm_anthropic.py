"""AnthropicLlm with the real SDK against the Messages emulator over loopback (real time, short)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anthropic
import pytest
import trio

from actors.llm import AnthropicLlm, ChatMessage, LlmUnavailable
from bench.emulators.anthropic_messages import AnthropicEmulator

MESSAGES = [ChatMessage("user", "Hola"), ChatMessage("assistant", "Dígame."),
            ChatMessage("user", "¿Qué hora es?")]


@asynccontextmanager
async def open_llm(emulator: AnthropicEmulator, *, api_key: str = "test-key",
                   **kw: Any) -> AsyncIterator[AnthropicLlm]:
    async with trio.open_nursery() as nursery:
        url = await nursery.start(emulator.serve)
        async with anthropic.AsyncAnthropic(api_key=api_key, base_url=url, max_retries=0) as client:
            yield AnthropicLlm(client, **kw)
        nursery.cancel_scope.cancel()


async def reply(llm: AnthropicLlm, messages: list[ChatMessage] = MESSAGES) -> list[str]:
    async with llm.stream_reply(system="Eres breve.", messages=messages) as deltas:
        return [piece async for piece in deltas]


async def test_streams_the_reply_and_sends_what_it_should() -> None:
    emulator = AnthropicEmulator(reply_for=lambda _body: "Son las diez, ¿algo más?")
    async with open_llm(emulator, model="claude-test", max_tokens=77) as llm:
        pieces = await reply(llm)
    assert "".join(pieces) == "Son las diez, ¿algo más?" and len(pieces) > 1
    [request] = emulator.requests
    assert request.model == "claude-test" and request.max_tokens == 77 and request.stream
    assert request.system == "Eres breve."
    assert request.messages == [{"role": "user", "content": "Hola"},
                                {"role": "assistant", "content": "Dígame."},
                                {"role": "user", "content": "¿Qué hora es?"}]
    assert "temperature" not in request.body and "top_p" not in request.body


def test_the_api_key_never_shows_in_the_repr() -> None:
    client = anthropic.AsyncAnthropic(api_key="sk-secret-123", base_url="http://127.0.0.1:9")
    assert "sk-secret" not in repr(AnthropicLlm(client))


@pytest.mark.parametrize(("fault", "kw", "kind", "retry_after_s"), [
    ("overloaded", {}, "overloaded", None),
    ("rate_limit", {"retry_after_s": 0.5}, "rate_limited", 0.5),
    ("rate_limit", {"retry_after_ms": 250}, "rate_limited", 0.25),
    ("server_error", {}, "server", None),
    ("mid_stream_error", {"after_deltas": 1}, "overloaded", None),
    ("drop", {"after_deltas": 1}, "connection", None),
])
async def test_failures_map_to_llm_unavailable(fault: str, kw: dict[str, Any], kind: str,
                                              retry_after_s: float | None) -> None:
    emulator = AnthropicEmulator(reply_for=lambda _body: "Uno dos tres cuatro.")
    emulator.fail_next(fault, **kw)  # type: ignore[arg-type]
    async with open_llm(emulator) as llm:
        with pytest.raises(LlmUnavailable) as caught:
            await reply(llm)
        assert caught.value.kind == kind
        assert caught.value.retry_after_s == retry_after_s
        assert "".join(await reply(llm)) == "Uno dos tres cuatro."  # the next request is fine
    assert len(emulator.requests) == 2  # max_retries=0: the SDK did not retry behind our back


async def test_a_wrong_key_is_refused() -> None:
    async with open_llm(AnthropicEmulator(), api_key="wrong") as llm:
        with pytest.raises(LlmUnavailable) as caught:
            await reply(llm)
    assert caught.value.kind == "refused"


@pytest.mark.parametrize(("after_deltas", "bound_s"), [(None, 0.3), (2, 0.6)])
async def test_a_stall_times_out_within_the_deadline(after_deltas: int | None,
                                                     bound_s: float) -> None:
    emulator = AnthropicEmulator()
    emulator.fail_next("stall", after_deltas=after_deltas)
    async with open_llm(emulator, first_token_timeout_s=0.3, total_timeout_s=0.6) as llm:
        begun = trio.current_time()
        with pytest.raises(LlmUnavailable) as caught:
            await reply(llm)
        took = trio.current_time() - begun
    assert caught.value.kind == "timeout"
    assert bound_s <= took < bound_s + 0.4


async def test_cancelling_the_caller_ends_the_request() -> None:
    emulator = AnthropicEmulator(reply_for=lambda _body: "Una respuesta larga de verdad.",
                                 tokens_per_s=20)
    async with open_llm(emulator) as llm:
        with trio.move_on_after(0.15):
            await reply(llm)
        with trio.fail_after(2):
            while emulator.requests[0].outcome is None:
                await trio.sleep(0.01)
    assert emulator.requests[0].outcome == "client_closed"
