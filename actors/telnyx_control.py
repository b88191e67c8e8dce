"""Telnyx Call Control v2 over HTTP: the REST client every call-control route and actor shares.

The requests are built and the answers decoded by :mod:`protocols.telnyx_call_control`; this
module only sends them, over one pooled ``httpx.AsyncClient`` that the composition root creates
and closes (one per process). Every request carries ``Authorization: Bearer`` and a
``command_id`` (a fresh uuid unless the caller gives one), so a resend is idempotent.

Resending follows Telnyx's command-retry guidance (telnyx.md §3.1), at most once per request:

* a 5xx answer: resend at once, same body, same ``command_id``;
* a call command (``/calls/{id}/actions/...``) with no answer within ``resend_after_s`` (500 ms):
  give up on that attempt and resend; Telnyx ignores a ``command_id`` repeated on the same call
  within 60 s, so a slow first attempt that did land is harmless;
* a connection that could not be opened: resend (nothing reached Telnyx).

A **dial** is not resent for slowness or for a broken read: its dedupe is keyed on a call that
does not exist yet (UNCONFIRMED that Telnyx dedupes ``POST /calls`` on ``command_id``), and a
duplicate dial rings a person twice. It is resent on a 5xx or a refused connection only.

Outcomes: the decoded result (:class:`DialResult`, :class:`CommandResult`), or one of
:class:`TelnyxApiError` (Telnyx answered with an error envelope: ``errors`` holds the
:class:`TelnyxApiErrors` value), :class:`TelnyxUnreachable` (no answer: connection refused, timed
out), :class:`TelnyxBadResponse` (a 2xx we cannot read). A hangup answered ``90018`` ("call has
already ended") is a success: ``CommandResult(ALREADY_ENDED)``.

The API key is never logged: log lines carry the method, path, status and error codes only.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from typing import Any, Final, TypeVar

import attrs
import httpx
import orjson
import trio

from protocols import telnyx_call_control as cc
from protocols.errors import RemoteProtocolError

log = logging.getLogger(__name__)

__all__ = [
    "ALREADY_ENDED",
    "RESEND_AFTER_S",
    "TELNYX_HTTP_TIMEOUT_S",
    "TelnyxApiError",
    "TelnyxBadResponse",
    "TelnyxControl",
    "TelnyxControlStatistics",
    "TelnyxError",
    "TelnyxUnreachable",
]

TELNYX_HTTP_TIMEOUT_S: Final = 2.0
RESEND_AFTER_S: Final = 0.5  # Telnyx: no HTTP answer within ~500 ms -> resend the same command
#: ``CommandResult.result`` of a hangup sent to a call that had already ended (``90018``).
ALREADY_ENDED: Final = "already_ended"

R = TypeVar("R")


class TelnyxError(Exception):
    """Base of what a :class:`TelnyxControl` request raises; the message is safe to log."""


class TelnyxApiError(TelnyxError):
    """Telnyx answered with an error envelope (4xx, or a 5xx that persisted after one resend)."""

    def __init__(self, what: str, errors: cc.TelnyxApiErrors) -> None:
        super().__init__(f"{what}: {errors.describe()}")
        self.errors = errors

    @property
    def status(self) -> int:
        return self.errors.status

    @property
    def code(self) -> str | None:
        """The first error's code (``"90018"``, ``"10009"``...), or None without details."""
        return self.errors.errors[0].code if self.errors.errors else None

    @property
    def detail(self) -> str:
        """The first error's detail (or title), else the HTTP status in words."""
        for error in self.errors.errors:
            if error.detail or error.title:
                return str(error.detail or error.title)
        return f"HTTP {self.errors.status}"


class TelnyxUnreachable(TelnyxError):
    """No answer from Telnyx: connection refused, reset or timed out (after the one resend)."""


class TelnyxBadResponse(TelnyxError):
    """A 2xx whose body breaks the documented shape."""


@attrs.frozen
class TelnyxControlStatistics:
    requests: int
    resends: int
    api_errors: int
    unreachable: int


def _with_command_id(fields: dict[str, Any]) -> dict[str, Any]:
    if fields.get("command_id") is None:
        fields["command_id"] = uuid.uuid4()
    return fields


@attrs.define(eq=False)
class TelnyxControl:
    """Sends Call Control commands; see the module docstring for resends and outcomes.

    Args:
        client: the process's shared ``httpx.AsyncClient`` (owned by the composition root).
        api_key: the Telnyx API key (``TELNYX_API_KEY``); kept out of repr and logs.
        api_base: ``TELNYX_API_BASE``, e.g. ``https://api.telnyx.com/v2`` or an emulator's.
    """

    client: httpx.AsyncClient
    api_key: str = attrs.field(repr=False)
    api_base: str = "https://api.telnyx.com/v2"
    timeout_s: float = TELNYX_HTTP_TIMEOUT_S
    resend_after_s: float = RESEND_AFTER_S
    _requests: int = attrs.field(default=0, init=False)
    _resends: int = attrs.field(default=0, init=False)
    _api_errors: int = attrs.field(default=0, init=False)
    _unreachable: int = attrs.field(default=0, init=False)

    def statistics(self) -> TelnyxControlStatistics:
        return TelnyxControlStatistics(requests=self._requests, resends=self._resends,
                                       api_errors=self._api_errors, unreachable=self._unreachable)

    # -- commands -------------------------------------------------------------------------------

    async def dial(self, **fields: Any) -> cc.DialResult:
        """``POST /calls`` with :func:`protocols.telnyx_call_control.dial`'s keyword arguments."""
        request = cc.dial(**_with_command_id(fields))
        return await self._call(request, cc.decode_dial_response, "dial", resend_when_slow=False)

    async def answer(self, call_control_id: str, **fields: Any) -> cc.CommandResult:
        return await self._command(cc.answer(call_control_id, **_with_command_id(fields)), "answer")

    async def hangup(self, call_control_id: str, **fields: Any) -> cc.CommandResult:
        """Hang up; a call that had already ended gives ``CommandResult(ALREADY_ENDED)``."""
        try:
            return await self._command(cc.hangup(call_control_id, **_with_command_id(fields)),
                                       "hangup")
        except TelnyxApiError as exc:
            if exc.errors.call_has_ended:
                return cc.CommandResult(ALREADY_ENDED)
            raise

    async def streaming_start(self, call_control_id: str, **fields: Any) -> cc.CommandResult:
        return await self._command(cc.streaming_start(call_control_id, **_with_command_id(fields)),
                                   "streaming_start")

    async def streaming_stop(self, call_control_id: str, **fields: Any) -> cc.CommandResult:
        return await self._command(cc.streaming_stop(call_control_id, **_with_command_id(fields)),
                                   "streaming_stop")

    async def speak(self, call_control_id: str, **fields: Any) -> cc.CommandResult:
        return await self._command(cc.speak(call_control_id, **_with_command_id(fields)), "speak")

    async def playback_start(self, call_control_id: str, **fields: Any) -> cc.CommandResult:
        return await self._command(cc.playback_start(call_control_id, **_with_command_id(fields)),
                                   "playback_start")

    async def playback_stop(self, call_control_id: str, **fields: Any) -> cc.CommandResult:
        """Stop playback and speak (Telnyx's default ``stop="all"``)."""
        return await self._command(cc.playback_stop(call_control_id, **_with_command_id(fields)),
                                   "playback_stop")

    async def transcription_start(self, call_control_id: str, **fields: Any) -> cc.CommandResult:
        """Telnyx transcribes the call: ``call.transcription`` webhooks follow."""
        return await self._command(
            cc.transcription_start(call_control_id, **_with_command_id(fields)),
            "transcription_start")

    async def transcription_stop(self, call_control_id: str, **fields: Any) -> cc.CommandResult:
        return await self._command(
            cc.transcription_stop(call_control_id, **_with_command_id(fields)),
            "transcription_stop")

    # -- sending --------------------------------------------------------------------------------

    async def _command(self, request: cc.ApiRequest, what: str) -> cc.CommandResult:
        return await self._call(request, cc.decode_command_response, what, resend_when_slow=True)

    async def _call(self, request: cc.ApiRequest,
                    decode: Callable[[int, bytes], R | cc.TelnyxApiErrors], what: str, *,
                    resend_when_slow: bool) -> R:
        status, body = await self._send(request, what, resend_when_slow=resend_when_slow)
        try:
            result = decode(status, body)
        except RemoteProtocolError as exc:
            raise TelnyxBadResponse(f"{what}: unreadable answer ({exc.reason})") from None
        if isinstance(result, cc.TelnyxApiErrors):
            self._api_errors += 1
            level = logging.INFO if result.call_has_ended else logging.WARNING
            log.log(level, "telnyx refused a command", extra={"command": what,
                                                             "path": request.path,
                                                             "error": result.describe()})
            raise TelnyxApiError(what, result)
        return result

    async def _send(self, request: cc.ApiRequest, what: str, *,
                    resend_when_slow: bool) -> tuple[int, bytes]:
        """One attempt, and at most one identical resend; returns (status, body)."""
        first: httpx.Response | Exception | None = None
        if resend_when_slow:
            with trio.move_on_after(self.resend_after_s):
                first = await self._attempt(request)
            if first is None:
                log.info("telnyx slow, resending", extra={"command": what, "path": request.path})
        else:
            first = await self._attempt(request)
        if isinstance(first, httpx.Response) and first.status_code < 500:
            return first.status_code, first.content
        if isinstance(first, Exception) and not self._may_resend(first, resend_when_slow):
            self._unreachable += 1
            raise TelnyxUnreachable(f"{what}: {_describe(first)}") from None
        self._resends += 1
        second = await self._attempt(request)
        if isinstance(second, httpx.Response):
            return second.status_code, second.content
        self._unreachable += 1
        raise TelnyxUnreachable(f"{what}: {_describe(second)}") from None

    @staticmethod
    def _may_resend(error: Exception, resend_when_slow: bool) -> bool:
        if isinstance(error, (httpx.ConnectError, httpx.ConnectTimeout)):
            return True  # nothing reached Telnyx
        return resend_when_slow  # a call command is deduped on its command_id

    async def _attempt(self, request: cc.ApiRequest) -> httpx.Response | Exception:
        self._requests += 1
        url = self.api_base.rstrip("/") + request.path
        headers = {"authorization": f"Bearer {self.api_key}", "accept": "application/json"}
        content = None
        if request.json is not None:
            headers["content-type"] = "application/json"
            content = orjson.dumps(request.json)
        try:
            response = await self.client.request(request.method, url, content=content,
                                                 headers=headers, timeout=self.timeout_s)
        except httpx.TransportError as exc:
            log.warning("telnyx unreachable", extra={"path": request.path,
                                                     "error": _describe(exc)})
            return exc
        if response.status_code >= 500:
            log.warning("telnyx server error", extra={"path": request.path,
                                                      "status": response.status_code})
        return response


def _describe(error: Exception | None) -> str:
    if error is None:
        return "no answer"
    if isinstance(error, httpx.TimeoutException):
        return f"no answer in time ({type(error).__name__})"
    return f"unreachable ({type(error).__name__})"
