"""An Anthropic Messages API server (``POST /v1/messages``) for tests, the demo and the load harness.

Speaks the wire format of ``/work/shared/protocols/anthropic-trio-aws.md`` §2 through the pure
codecs in :mod:`protocols.anthropic_stream`, as an ASGI app on hypercorn's trio worker over real
loopback sockets, so the official ``anthropic`` SDK cannot tell it from the API::

    emulator = AnthropicEmulator(reply_for=lambda body: "Claro, " + last_user_text(body))
    url = await nursery.start(emulator.serve)        # "http://127.0.0.1:PORT" (the SDK adds /v1)
    async with anthropic.AsyncAnthropic(api_key="test-key", base_url=url) as client: ...
    emulator.requests[0].body["system"]              # every request, parsed, with timings

What it does:

- Auth: ``Authorization: Bearer <key>`` (what SDK 2.x sends) or ``x-api-key``, checked against
  ``api_key`` (``None`` accepts any key). Missing or wrong: 401 ``authentication_error``. Every
  response carries a ``request-id`` header, and error bodies its ``request_id`` too. The
  ``anthropic-version`` header is recorded, never checked (the SDK's value changes by release).
- Validation, as minimal as the fact sheet's list of required fields: a JSON object with a
  non-empty string ``model``, an int ``max_tokens`` >= 1, a non-empty list ``messages`` of
  ``{role: "user"|"assistant", content: str|list}``; ``system`` a string or list and ``stream`` a
  bool when present. Anything else: 400 ``invalid_request_error`` naming the field, pydantic
  style (``"max_tokens: Field required"``). Other fields (``temperature``, ``cache_control``,
  ``metadata``...) are accepted and recorded as sent. Unknown path: 404; other method: 405.
- ``stream: true``: 200 ``text/event-stream`` with the documented sequence from
  :func:`~protocols.anthropic_stream.script_reply` (``message_start``, ``content_block_start``,
  ``ping``, one ``text_delta`` per piece, ``content_block_stop``, ``message_delta`` with
  ``stop_reason`` and cumulative usage, ``message_stop``), each event its own body chunk.
  Without ``stream``: one JSON ``Message``. The reply is cut into token-like pieces by
  :func:`split_tokens`; more pieces than ``max_tokens`` are cut there with ``stop_reason``
  ``max_tokens``. Usage: ``input_tokens`` is the piece count of the system prompt and messages
  (a rough stand-in for the tokenizer), ``output_tokens`` the piece count of the reply.
- Pacing (wall clock, absolute deadlines so nothing drifts): the headers, ``message_start``,
  ``content_block_start`` and ``ping`` go out at once; text delta ``i`` (from 0) goes out at
  ``received_at + ttft_s + i / tokens_per_s``. A non-streamed reply comes whole when its last
  piece would have. Defaults are 0 and infinity: as fast as possible.
- Replies: the next of ``replies`` (a deque popped from the left) if any, else
  ``reply_for(body)``. A request that meets a fault does not pop ``replies``: the client's retry
  gets the line the failed attempt would have got.

Fault injection, one fault per request: :meth:`AnthropicEmulator.fail_next` queues one-shot
faults, claimed in order by the next requests that pass auth and validation;
``always_fail`` (a :class:`Fault` or ``None``) applies to every request while set, after the
queue is empty. Kinds (:data:`FaultKind`):

- ``rate_limit``: 429 ``rate_limit_error`` with ``retry-after: <retry_after_s>`` (default 1 s;
  non-integers are sent as written, which the SDK accepts) and ``retry-after-ms`` if set.
- ``overloaded``: 529 ``overloaded_error``; ``server_error``: 500 ``api_error`` (both take
  ``retry_after_s``/``retry_after_ms`` too, unset by default).
- ``mid_stream_error``: a 200 stream, then ``event: error`` (``overloaded_error``) after
  ``after_deltas`` text deltas (default 1), then the end of the body, as the API does.
- ``stall``: the 200 headers, then ``after_deltas`` deltas (default ``None``: not even
  ``message_start``), then no byte until the client goes away.
- ``drop``: the TCP connection closed after ``after_deltas`` deltas (default 1), the chunked
  body unfinished.

Without ``stream``, ``mid_stream_error`` becomes a 529 (the error comes before the response);
``stall`` sends the 200 headers of the JSON response and no body; ``drop`` closes after them.

Recording: :attr:`AnthropicEmulator.requests` holds one :class:`RecordedRequest` per HTTP
request (refused ones included), appended when it arrives and updated as it goes: headers,
parsed body, timings on ``trio.current_time()`` (``received_at``, ``first_byte_at``,
``first_token_at``, ``done_at``), status, fault and :data:`Outcome`.
"""

from __future__ import annotations

import collections
import logging
import math
import re
import secrets
import string
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Any, Final, Literal, get_args

import attrs
import orjson
import trio

from bench.emulators.asgi_serving import Receive as _Receive
from bench.emulators.asgi_serving import Scope as _Scope
from bench.emulators.asgi_serving import Send as _Send
from bench.emulators.asgi_serving import answer_lifespan, serve_asgi
from protocols.anthropic_stream import (
    ERROR_STATUS,
    ContentBlockDelta,
    ContentBlockStop,
    StreamError,
    encode_event,
    error_body,
    script_reply,
)

__all__ = [
    "DEFAULT_REPLY",
    "FAULT_KINDS",
    "MAX_REQUEST_BYTES",
    "AnthropicEmulator",
    "Fault",
    "FaultKind",
    "Outcome",
    "RecordedRequest",
    "last_user_text",
    "split_tokens",
]

#: What the emulator says when no reply is scripted.
DEFAULT_REPLY: Final = "Claro, con mucho gusto. ¿En qué más le puedo ayudar?"
#: The Messages API's request size limit (32 MB); larger bodies get 413 ``request_too_large``.
MAX_REQUEST_BYTES: Final = 32_000_000

FaultKind = Literal["rate_limit", "overloaded", "server_error", "mid_stream_error", "stall", "drop"]
FAULT_KINDS: Final[frozenset[str]] = frozenset(get_args(FaultKind))

#: How a request ended. ``completed``: the whole reply was sent. ``error_response``: an HTTP error
#: (refused or injected; see ``status``). ``stream_error``: an ``event: error`` ended the stream.
#: ``dropped``: we closed the connection mid-body. ``client_closed``: the client went away first
#: (a stalled request ends so). ``server_shutdown``: the emulator was cancelled mid-request.
Outcome = Literal[
    "completed", "error_response", "stream_error", "dropped", "client_closed", "server_shutdown",
]

_ERROR_OF_FAULT: Final[Mapping[str, tuple[str, str]]] = {
    "rate_limit": ("rate_limit_error",
                   "Number of requests has exceeded your rate limit. Please try again later."),
    "overloaded": ("overloaded_error", "Overloaded"),
    "server_error": ("api_error", "Internal server error"),
    "mid_stream_error": ("overloaded_error", "Overloaded"),
}
_TOKEN: Final = re.compile(r"\s*(?:\w+|[^\w\s])|\s+$")
_ID_ALPHABET: Final = string.ascii_letters + string.digits
_ROLES: Final = ("user", "assistant")

log = logging.getLogger(__name__)



# == text helpers ===================================================================================

def split_tokens(text: str) -> list[str]:
    """Token-like pieces of ``text``: words with their leading whitespace, punctuation apart.

    ``"Hola, ¿qué tal?"`` → ``["Hola", ",", " ¿", "qué", " tal", "?"]``; the pieces join back to
    ``text`` exactly.
    """
    return _TOKEN.findall(text)


def _text_of(content: Any) -> str:
    """The text of a message ``content`` or a ``system`` value: a string, or text blocks joined."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(block["text"] for block in content
                        if isinstance(block, dict) and isinstance(block.get("text"), str))
    return ""


def last_user_text(body: Mapping[str, Any]) -> str:
    """The text of the last ``user`` message of a request body ("" if none): for ``reply_for``."""
    for message in reversed(body.get("messages") or []):
        if isinstance(message, dict) and message.get("role") == "user":
            return _text_of(message.get("content"))
    return ""


def _random_id(prefix: str) -> str:
    return prefix + "".join(secrets.choice(_ID_ALPHABET) for _ in range(22))


# == faults and records =============================================================================

def _default_retry_after(fault: Fault) -> float | None:
    return 1.0 if fault.kind == "rate_limit" else None


def _default_after_deltas(fault: Fault) -> int | None:
    return None if fault.kind == "stall" else 1


def _check_kind(_: Any, __: Any, kind: str) -> None:
    if kind not in FAULT_KINDS:
        raise ValueError(f"unknown fault kind {kind!r}; expected one of {sorted(FAULT_KINDS)}")


@attrs.frozen
class Fault:
    """One injected failure (see the module docstring for what each kind does on the wire).

    Attributes:
        kind: what goes wrong.
        retry_after_s: ``retry-after`` header value in seconds (``rate_limit`` defaults to 1).
        retry_after_ms: ``retry-after-ms`` header (the SDK reads it before ``retry-after``).
        after_deltas: text deltas sent before a ``mid_stream_error``, ``stall`` or ``drop``;
            ``None`` (the ``stall`` default) stops right after the headers.
        message: the error message (``error.message``); a per-kind default when ``None``.
    """

    kind: FaultKind = attrs.field(validator=_check_kind)
    retry_after_s: float | None = attrs.field(
        default=attrs.Factory(_default_retry_after, takes_self=True))
    retry_after_ms: int | None = None
    after_deltas: int | None = attrs.field(
        default=attrs.Factory(_default_after_deltas, takes_self=True))
    message: str | None = None


@attrs.define(eq=False)
class RecordedRequest:
    """One HTTP request and what the emulator did with it. Mutated while the request runs.

    ``headers`` has lowercase names (repeated headers joined with ``", "``); ``body`` is the
    parsed JSON (``None`` if the body was not JSON). Times are ``trio.current_time()``.
    """

    request_id: str
    method: str
    path: str
    headers: Mapping[str, str]
    received_at: float
    body: Any = None
    #: When the body had been read (pacing starts here).
    body_at: float | None = None
    #: When the response headers went out (hypercorn writes them at once).
    first_byte_at: float | None = None
    #: When the first text delta went out (streams only).
    first_token_at: float | None = None
    done_at: float | None = None
    status: int | None = None
    error_type: str | None = None
    fault: Fault | None = None
    reply: str | None = None
    #: Text pieces sent as deltas (streams) or in the JSON body.
    pieces_sent: list[str] = attrs.field(factory=list)
    outcome: Outcome | None = None

    def _field(self, name: str) -> Any:
        return self.body.get(name) if isinstance(self.body, dict) else None

    @property
    def model(self) -> Any:
        return self._field("model")

    @property
    def max_tokens(self) -> Any:
        return self._field("max_tokens")

    @property
    def system(self) -> Any:
        return self._field("system")

    @property
    def messages(self) -> Any:
        return self._field("messages")

    @property
    def stream(self) -> bool:
        return self._field("stream") is True

    @property
    def temperature(self) -> Any:
        """``temperature`` as sent, ``None`` if absent (check ``"temperature" in body`` to tell)."""
        return self._field("temperature")

    @property
    def api_key(self) -> str | None:
        authorization = self.headers.get("authorization", "")
        if authorization[:7].lower() == "bearer ":
            return authorization[7:].strip()
        return self.headers.get("x-api-key")

    @property
    def anthropic_version(self) -> str | None:
        return self.headers.get("anthropic-version")

    @property
    def retry_count(self) -> int:
        """The SDK's ``x-stainless-retry-count`` (0 on a first attempt)."""
        return int(self.headers.get("x-stainless-retry-count", "0"))


class _Refused(Exception):
    """An HTTP error answer decided before any response byte (auth, validation, size)."""

    def __init__(self, status: int, error_type: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.error_type = error_type
        self.message = message


def _validate(body: Any) -> None:
    def invalid(message: str) -> _Refused:
        return _Refused(400, "invalid_request_error", message)

    if not isinstance(body, dict):
        raise invalid("Request body must be a JSON object")
    for name in ("model", "max_tokens", "messages"):
        if name not in body:
            raise invalid(f"{name}: Field required")
    if not isinstance(body["model"], str) or not body["model"]:
        raise invalid("model: Input should be a non-empty string")
    max_tokens = body["max_tokens"]
    if type(max_tokens) is not int:
        raise invalid("max_tokens: Input should be a valid integer")
    if max_tokens < 1:
        raise invalid("max_tokens: Input should be greater than or equal to 1")
    messages = body["messages"]
    if not isinstance(messages, list):
        raise invalid("messages: Input should be a valid list")
    if not messages:
        raise invalid("messages: at least one message is required")
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise invalid(f"messages.{i}: Input should be a valid dictionary")
        for name in ("role", "content"):
            if name not in message:
                raise invalid(f"messages.{i}.{name}: Field required")
        if message["role"] not in _ROLES:
            raise invalid(f"messages.{i}.role: Input should be 'user' or 'assistant'")
        if not isinstance(message["content"], (str, list)):
            raise invalid(f"messages.{i}.content: Input should be a valid string or list")
    if "system" in body and not isinstance(body["system"], (str, list)):
        raise invalid("system: Input should be a valid string or list")
    if "stream" in body and type(body["stream"]) is not bool:
        raise invalid("stream: Input should be a valid boolean")


def _input_tokens(body: Mapping[str, Any]) -> int:
    text = _text_of(body.get("system"))
    count = len(split_tokens(text))
    for message in body["messages"]:
        count += len(split_tokens(_text_of(message["content"])))
    return max(1, count)


def _seconds(value: float) -> str:
    return f"{value:g}"


# == the emulator ===================================================================================

@attrs.define(eq=False)
class AnthropicEmulator:
    """The Messages API on loopback: ``serve()`` it, point ``AsyncAnthropic(base_url=url)`` at it.

    Attributes:
        api_key: the key clients must present (``None``: any key).
        reply_for: the reply to a request body when ``replies`` is empty.
        replies: scripted replies, used in order before ``reply_for``.
        ttft_s: seconds from the request body to the first text delta.
        tokens_per_s: text deltas per second after the first (``math.inf``: no pacing).
        always_fail: a fault applied to every request while set (after ``fail_next`` ones).
        requests: every request received, in arrival order.
        url: ``http://127.0.0.1:PORT`` once serving.
    """

    api_key: str | None = "test-key"
    reply_for: Callable[[Mapping[str, Any]], str] = lambda _body: DEFAULT_REPLY
    replies: collections.deque[str] = attrs.field(factory=collections.deque,
                                                  converter=collections.deque)
    ttft_s: float = 0.0
    tokens_per_s: float = math.inf
    always_fail: Fault | None = None
    host: str = "127.0.0.1"
    port: int = 0
    requests: list[RecordedRequest] = attrs.field(factory=list, init=False)
    url: str | None = attrs.field(default=None, init=False)
    _faults: collections.deque[Fault] = attrs.field(factory=collections.deque, init=False)

    def fail_next(self, kind: FaultKind, **kw: Any) -> Fault:
        """Queue a one-shot fault for the next valid request (faults queue up in order).

        Keyword arguments are :class:`Fault` fields (``retry_after_s``, ``retry_after_ms``,
        ``after_deltas``, ``message``). Returns the queued fault.
        """
        fault = Fault(kind, **kw)
        self._faults.append(fault)
        return fault

    @property
    def pending_faults(self) -> Sequence[Fault]:
        return tuple(self._faults)

    async def serve(self, *, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> None:
        """Listen, report ``http://host:port`` through ``task_status``, serve until cancelled."""
        async with trio.open_nursery() as nursery:
            binds = await nursery.start(partial(serve_asgi, self.asgi, self.host, self.port, log=log))
            self.url = binds[0]
            task_status.started(self.url)

    # -- ASGI ---------------------------------------------------------------------------------------
    async def asgi(self, scope: _Scope, receive: _Receive, send: _Send) -> None:
        """The ASGI application (lifespan and http)."""
        if scope["type"] == "lifespan":
            await answer_lifespan(receive, send)
        elif scope["type"] == "http":
            await self._http(scope, receive, send)

    async def _http(self, scope: _Scope, receive: _Receive, send: _Send) -> None:
        headers: dict[str, str] = {}
        for raw_name, raw_value in scope["headers"]:
            name, value = raw_name.decode("latin-1").lower(), raw_value.decode("latin-1")
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        record = RecordedRequest(
            request_id=_random_id("req_01"), method=scope["method"], path=scope["path"],
            headers=headers, received_at=trio.current_time())
        self.requests.append(record)
        try:
            await self._serve_request(record, receive, send)
        finally:
            if record.outcome is None:
                record.outcome = "server_shutdown"
            if record.done_at is None:
                record.done_at = trio.current_time()

    async def _serve_request(self, record: RecordedRequest, receive: _Receive, send: _Send) -> None:
        try:
            if record.path.rstrip("/") != "/v1/messages":
                raise _Refused(404, "not_found_error", f"Not found: {record.path}")
            if record.method != "POST":
                raise _Refused(405, "invalid_request_error", f"Method {record.method} not allowed")
            # Read the body even when refusing, so that the connection can be kept alive.
            raw = await self._read_body(receive)
            if raw is None:
                record.outcome = "client_closed"
                return
            record.body_at = trio.current_time()
            self._authenticate(record)
            try:
                record.body = orjson.loads(raw)
            except orjson.JSONDecodeError:
                raise _Refused(400, "invalid_request_error",
                               "Request body is not valid JSON") from None
            _validate(record.body)
        except _Refused as refused:
            await self._send_error(record, send, refused.status, refused.error_type,
                                   refused.message)
            return

        fault = self._faults.popleft() if self._faults else self.always_fail
        record.fault = fault
        if fault is not None and (fault.kind in ("rate_limit", "overloaded", "server_error") or
                                  (fault.kind == "mid_stream_error" and not record.stream)):
            error_type, default_message = _ERROR_OF_FAULT[fault.kind]
            await self._send_error(record, send, ERROR_STATUS[error_type], error_type,
                                   fault.message or default_message, fault)
            return

        if fault is None and self.replies:
            record.reply = self.replies.popleft()
        else:
            record.reply = self.replies[0] if self.replies else self.reply_for(record.body)
        # The client may leave at any time: stop the response then, as the API would.
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._watch_disconnect, record, receive, nursery.cancel_scope)
            if record.stream:
                await self._send_stream(record, send, fault)
            else:
                await self._send_message(record, send, fault)
            nursery.cancel_scope.cancel()

    def _authenticate(self, record: RecordedRequest) -> None:
        key = record.api_key
        if key is None:
            raise _Refused(401, "authentication_error", "x-api-key header is required")
        if self.api_key is not None and key != self.api_key:
            raise _Refused(401, "authentication_error", "invalid x-api-key")

    async def _read_body(self, receive: _Receive) -> bytes | None:
        """The whole request body, or ``None`` if the client left before sending it."""
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > MAX_REQUEST_BYTES:
                raise _Refused(413, "request_too_large", "Request exceeds the maximum size")
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    async def _watch_disconnect(self, record: RecordedRequest, receive: _Receive,
                                response_scope: trio.CancelScope) -> None:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                if record.outcome is None:
                    record.outcome = "client_closed"
                    record.done_at = trio.current_time()
                response_scope.cancel()
                return

    async def _start(self, record: RecordedRequest, send: _Send, status: int,
                     headers: list[tuple[bytes, bytes]]) -> None:
        record.status = status
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"request-id", record.request_id.encode()), *headers]})
        record.first_byte_at = trio.current_time()

    async def _send_error(self, record: RecordedRequest, send: _Send, status: int,
                          error_type: str, message: str, fault: Fault | None = None) -> None:
        headers = [(b"content-type", b"application/json")]
        if fault is not None and fault.retry_after_s is not None:
            headers.append((b"retry-after", _seconds(fault.retry_after_s).encode()))
        if fault is not None and fault.retry_after_ms is not None:
            headers.append((b"retry-after-ms", str(fault.retry_after_ms).encode()))
        record.error_type = error_type
        await self._start(record, send, status, headers)
        # Recorded before the last send: the client may act on the response before it returns.
        record.outcome = "error_response"
        record.done_at = trio.current_time()
        await send({"type": "http.response.body",
                    "body": error_body(error_type, message, record.request_id)})

    def _pieces(self, record: RecordedRequest) -> tuple[list[str], str]:
        assert record.reply is not None
        pieces = split_tokens(record.reply)
        if len(pieces) > record.body["max_tokens"]:
            return pieces[: record.body["max_tokens"]], "max_tokens"
        return pieces, "end_turn"

    def _piece_deadline(self, record: RecordedRequest, index: int) -> float:
        assert record.body_at is not None
        return record.body_at + self.ttft_s + index / self.tokens_per_s

    async def _send_stream(self, record: RecordedRequest, send: _Send, fault: Fault | None) -> None:
        pieces, stop_reason = self._pieces(record)
        events = script_reply(pieces, record.body["model"], _input_tokens(record.body),
                              stop_reason=stop_reason)
        await self._start(record, send, 200, [(b"content-type", b"text/event-stream"),
                                              (b"cache-control", b"no-cache")])
        cut = -1
        if fault is not None:
            if fault.after_deltas is None:  # strike before message_start
                await self._fail_stream(record, send, fault)
                return
            # A cut past the last delta strikes where the next delta would have gone: before
            # content_block_stop.
            cut = min(fault.after_deltas, len(pieces))
        deltas = 0
        for event in events:
            is_delta = isinstance(event, ContentBlockDelta)
            if is_delta or (isinstance(event, ContentBlockStop) and deltas == cut):
                await trio.sleep_until(self._piece_deadline(record, deltas))
                if fault is not None and deltas == cut:
                    await self._fail_stream(record, send, fault)
                    return
            await send({"type": "http.response.body", "body": encode_event(event),
                        "more_body": True})
            if is_delta:
                if deltas == 0:
                    record.first_token_at = trio.current_time()
                record.pieces_sent.append(pieces[deltas])
                deltas += 1
        # message_stop is out: the reply is whole even if the client leaves before the last chunk.
        record.outcome = "completed"
        record.done_at = trio.current_time()
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _fail_stream(self, record: RecordedRequest, send: _Send, fault: Fault) -> None:
        if fault.kind == "mid_stream_error":
            error_type, default_message = _ERROR_OF_FAULT[fault.kind]
            record.error_type = error_type
            event = StreamError(error_type=error_type, message=fault.message or default_message)
            # Decided before sending: the client hangs up as soon as it reads the error.
            record.outcome = "stream_error"
            await send({"type": "http.response.body", "body": encode_event(event),
                        "more_body": True})
            record.done_at = trio.current_time()
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        elif fault.kind == "stall":
            await trio.sleep_forever()
        else:  # drop: returning with the body unfinished makes hypercorn close the connection
            record.outcome = "dropped"
            record.done_at = trio.current_time()

    async def _send_message(self, record: RecordedRequest, send: _Send, fault: Fault | None) -> None:
        pieces, stop_reason = self._pieces(record)
        await trio.sleep_until(self._piece_deadline(record, max(0, len(pieces) - 1)))
        await self._start(record, send, 200, [(b"content-type", b"application/json")])
        if fault is not None and fault.kind == "stall":
            await trio.sleep_forever()
        if fault is not None and fault.kind == "drop":
            record.outcome = "dropped"
            record.done_at = trio.current_time()
            return
        body = {
            "id": _random_id("msg_01"), "type": "message", "role": "assistant",
            "model": record.body["model"],
            "content": [{"type": "text", "text": "".join(pieces)}],
            "stop_reason": stop_reason, "stop_sequence": None,
            "usage": {"input_tokens": _input_tokens(record.body),
                      "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0,
                      "output_tokens": len(pieces)},
        }
        record.pieces_sent.extend(pieces)
        record.outcome = "completed"
        record.done_at = trio.current_time()
        await send({"type": "http.response.body", "body": orjson.dumps(body)})
