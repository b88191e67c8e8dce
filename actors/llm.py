"""The Brain's LLM port, `LlmEngine`, and its Anthropic Messages implementation, `AnthropicLlm`.

The port is deliberately small: a streamed reply as text deltas, or one typed failure,
`LlmUnavailable`, whose ``kind`` tells the Brain whether a retry can help. Tests of the Brain
plug a scripted engine in here (the only seam they fake); `AnthropicLlm` is tested with the real
SDK against ``bench/emulators/anthropic_messages.py``.

SDK notes (``/work/shared/protocols/anthropic-trio-aws.md``): the ``AsyncAnthropic`` client is
created and closed by the composition root, once per process, with ``max_retries=0`` (the Brain
retries within its own budget; the SDK would honour any ``retry-after`` with no cap); sampling
parameters are not sent (SDK 1.0 removed ``temperature``); every request is bounded by trio
deadlines; an ``event: error`` mid-stream surfaces as ``APIStatusError`` with status 200 and the
real error type in its body.
"""

from __future__ import annotations

import logging
import math
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from typing import TYPE_CHECKING, Any, Final, Literal, Protocol, cast

import anthropic
import attrs
import httpx2
import trio

if TYPE_CHECKING:
    from anthropic.types import MessageParam, RawMessageStreamEvent

__all__ = [
    "DEFAULT_MODEL", "AnthropicLlm", "ChatMessage", "LlmEngine", "LlmUnavailable",
    "UnavailableKind",
]

log = logging.getLogger(__name__)

DEFAULT_MODEL: Final = "claude-haiku-4-5"
MAX_TOKENS: Final = 300  # a phone reply is a sentence or two
FIRST_TOKEN_TIMEOUT_S: Final = 2.5
TOTAL_TIMEOUT_S: Final = 15.0

UnavailableKind = Literal[
    "rate_limited", "overloaded", "timeout", "connection", "server", "refused"]

#: The API's ``error.type`` (in an HTTP error body or a mid-stream ``event: error``) -> our kind.
_KIND_OF_ERROR_TYPE: Final[Mapping[str, UnavailableKind]] = {
    "rate_limit_error": "rate_limited",
    "overloaded_error": "overloaded",
    "api_error": "server",
    "timeout_error": "timeout",
    "authentication_error": "refused",
    "permission_error": "refused",
    "billing_error": "refused",
    "invalid_request_error": "refused",
    "not_found_error": "refused",
    "request_too_large": "refused",
}


@attrs.frozen
class ChatMessage:
    """One turn of the conversation as the LLM sees it."""

    role: Literal["user", "assistant"]
    content: str


class LlmUnavailable(Exception):
    """No (more) reply from the LLM. ``refused`` will not get better by retrying (credentials,
    a bad request); the other kinds may (``retry_after_s``: what the server asked for, if it did).
    """

    def __init__(self, kind: UnavailableKind, retry_after_s: float | None = None,
                 detail: str = "") -> None:
        super().__init__(f"LLM unavailable: {kind}" + (f" ({detail})" if detail else ""))
        self.kind: UnavailableKind = kind
        self.retry_after_s = retry_after_s


class LlmEngine(Protocol):
    """Streams a reply: ``async with llm.stream_reply(...) as deltas: async for t in deltas``.

    Opening the context or iterating may raise `LlmUnavailable`; nothing else is expected.
    Cancelling the caller cancels the request (the connection is released on exit).
    """

    def stream_reply(self, *, system: str, messages: Sequence[ChatMessage]
                     ) -> AbstractAsyncContextManager[AsyncIterator[str]]: ...


@attrs.define(eq=False)
class AnthropicLlm:
    """`LlmEngine` over the Messages API (``client.messages.create(stream=True)``), bounded by trio deadlines.

    ``first_token_timeout_s`` bounds the request up to its first text delta and
    ``total_timeout_s`` the whole reply, both from when the request is made; either expiring
    raises ``LlmUnavailable("timeout")``. The client is borrowed, never closed here.
    """

    client: anthropic.AsyncAnthropic = attrs.field(repr=False)  # holds the API key: never shown
    model: str = DEFAULT_MODEL
    max_tokens: int = MAX_TOKENS
    first_token_timeout_s: float = FIRST_TOKEN_TIMEOUT_S
    total_timeout_s: float = TOTAL_TIMEOUT_S

    @asynccontextmanager
    async def stream_reply(self, *, system: str, messages: Sequence[ChatMessage]
                           ) -> AsyncIterator[AsyncIterator[str]]:
        start = trio.current_time()
        first_by = start + min(self.first_token_timeout_s, self.total_timeout_s)
        done_by = start + self.total_timeout_s
        async with AsyncExitStack() as stack:
            with trio.move_on_at(first_by) as opening:
                try:
                    # The raw event stream, not ``messages.stream()``: that helper rebuilds a
                    # message snapshot on every event (~3 % of a bot call's CPU), and we only
                    # want the text deltas.
                    events = await stack.enter_async_context(await self.client.messages.create(
                        model=self.model, max_tokens=self.max_tokens, system=system,
                        messages=[cast("MessageParam", {"role": m.role, "content": m.content})
                                  for m in messages],
                        stream=True, timeout=self.total_timeout_s))
                except (anthropic.AnthropicError, httpx2.HTTPError) as exc:
                    raise _unavailable(exc) from exc
            if opening.cancelled_caught:
                raise LlmUnavailable("timeout", detail="no response headers in time")
            yield _Deltas(_TextDeltas(events.__aiter__()), first_by, done_by)


@attrs.define(eq=False)
class _TextDeltas:
    """The text of a raw Messages event stream: each ``content_block_delta``'s ``text_delta``."""

    events: AsyncIterator[RawMessageStreamEvent]

    def __aiter__(self) -> _TextDeltas:
        return self

    async def __anext__(self) -> str:
        async for event in self.events:  # ends (StopAsyncIteration) with the stream
            if event.type == "content_block_delta" and event.delta.type == "text_delta":
                return event.delta.text
        raise StopAsyncIteration


@attrs.define(eq=False)
class _Deltas:
    """The SDK's text stream with our deadlines and error mapping; empty deltas are skipped.

    A plain iterator rather than an async generator: nothing to finalise if the caller stops
    early, and no cancel scope is ever held across a ``yield``.
    """

    text: AsyncIterator[str]
    deadline: float  # the first token's, then the whole reply's
    done_by: float

    def __aiter__(self) -> _Deltas:
        return self

    async def __anext__(self) -> str:
        while True:
            piece: str | None = None
            with trio.move_on_at(self.deadline):
                try:
                    piece = await anext(self.text)
                except (anthropic.AnthropicError, httpx2.HTTPError) as exc:
                    raise _unavailable(exc) from exc
            if piece is None:
                what = "end of the reply" if self.deadline == self.done_by else "first token"
                raise LlmUnavailable("timeout", detail=f"no {what} in time")
            if piece:
                self.deadline = self.done_by
                return piece


def _unavailable(exc: BaseException) -> LlmUnavailable:
    """Map an SDK (or raw httpx2 transport) error onto a `LlmUnavailable` kind."""
    name = type(exc).__name__
    if isinstance(exc, (anthropic.APITimeoutError, httpx2.TimeoutException)):
        return LlmUnavailable("timeout", detail=name)
    if isinstance(exc, (anthropic.APIConnectionError, httpx2.TransportError)):
        return LlmUnavailable("connection", detail=name)
    if isinstance(exc, anthropic.APIStatusError):
        status, retry_after = exc.status_code, _retry_after_s(exc.response.headers)
        error_type = _error_type(exc.body)
        if status == 200:  # an ``event: error`` mid-stream; the body says what it was
            kind = _KIND_OF_ERROR_TYPE.get(error_type or "", "server")
        elif status == 429:
            kind = "rate_limited"
        elif status == 529 or error_type == "overloaded_error":
            kind = "overloaded"
        elif status in (408, 504):
            kind = "timeout"
        elif status >= 500:
            kind = "server"
        else:  # 400, 401, 402, 403, 404, 413, 422...: retrying sends the same mistake again
            kind = "refused"
        detail = f"{name} {status} {error_type or ''}".rstrip()
        return LlmUnavailable(kind, retry_after, detail=detail)
    return LlmUnavailable("refused" if isinstance(exc, anthropic.AnthropicError) else "server",
                          detail=name)


def _error_type(body: Any) -> str | None:
    if isinstance(body, Mapping):
        error = body.get("error")
        if isinstance(error, Mapping) and isinstance(error.get("type"), str):
            return str(error["type"])
    return None


def _retry_after_s(headers: Mapping[str, str]) -> float | None:
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        try:
            value = float(headers.get(name, "")) * scale
        except ValueError:
            continue
        if math.isfinite(value) and value >= 0:
            return value
    return None
