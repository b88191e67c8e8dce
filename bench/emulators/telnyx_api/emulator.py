"""The Telnyx API emulator itself: listening, the REST routes, dial and the call commands."""

from __future__ import annotations

import random
import re
import uuid
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any, Final, cast

import attrs
import httpx
import orjson
import trio

from bench.emulators.asgi_serving import Receive as _Receive
from bench.emulators.asgi_serving import Scope as _Scope
from bench.emulators.asgi_serving import Send as _Send
from bench.emulators.asgi_serving import answer_lifespan, serve_asgi
from bench.emulators.telnyx_api.checks import (
    _action_errors,
    _ApiFailure,
    _dial_errors,
    _error,
    _is_text,
    _json_object,
)
from bench.emulators.telnyx_api.far_end import FarEnd
from bench.emulators.telnyx_api.records import (
    COMMAND_ID_WINDOW_S,
    GRACEFUL_SHUTDOWN_S,
    MAX_REQUEST_BYTES,
    SHUFFLE_WINDOW_S,
    VERBS,
    WEBHOOK_ATTEMPTS,
    WEBHOOK_BACKOFF_S,
    WEBHOOK_TIMEOUT_S,
    ApiDown,
    CalleeScript,
    Delivery,
    EmulatedCall,
    RecordedCommand,
    _Activity,
    _new_call_control_id,
    _now_iso,
    log,
)
from protocols.telnyx_call_control import (
    CALL_HAS_ENDED,
    DialResult,
    TelnyxApiErrors,
    encode_api_errors,
    encode_command_result,
    encode_dial_response,
)
from protocols.telnyx_signature import WebhookKeypair, new_keypair

_ACTION_PATH: Final = re.compile(r"/v2/calls/([^/]+)/actions/([^/]+)")
_CALL_PATH: Final = re.compile(r"/v2/calls/([^/]+)")


def _api_down_changed(instance: TelnyxApiEmulator, _: attrs.Attribute[Any], value: Any) -> Any:
    if value not in (None, "503", "refuse"):
        raise ValueError(f"api_down must be None, '503' or 'refuse', got {value!r}")
    instance._api_changed.set()  # noqa: SLF001 - the emulator's own hook
    instance._api_changed = trio.Event()  # noqa: SLF001
    return value


def _default_callee(to: str) -> CalleeScript:
    return CalleeScript()


# --------------------------------------------------------------------------- the emulator


@attrs.define(eq=False)
class TelnyxApiEmulator(FarEnd):
    """Telnyx Call Control v2 for tests: REST, the scripted far end, signed webhooks, faults.

    See the module docstring for the behaviour; every public attribute below the constructor
    arguments is a fault knob or a record.
    """

    api_key: str | None = "test-key"
    webhook_url: str | None = None
    callee_for: Callable[[str], CalleeScript] = _default_callee
    speed: float = 1.0
    host: str = "127.0.0.1"
    port: int = 0
    # -- fault knobs
    duplicate_webhooks: bool = False
    shuffle: bool = False
    shuffle_window_s: float = SHUFFLE_WINDOW_S
    bad_signature_next: int = 0
    stale_timestamp_next: int = 0
    missing_signature_next: int = 0
    api_down: ApiDown | None = attrs.field(default=None, on_setattr=_api_down_changed)
    stream_never_connects: bool = False
    # -- tuning
    webhook_attempts: int = WEBHOOK_ATTEMPTS
    webhook_backoff_s: float = WEBHOOK_BACKOFF_S
    playback_duration_s: float | None = None
    seed: int = 0
    keypair: WebhookKeypair = attrs.field(factory=new_keypair, repr=False)
    # -- records
    calls: dict[str, EmulatedCall] = attrs.field(factory=dict, init=False, repr=False)
    commands: list[RecordedCommand] = attrs.field(factory=list, init=False, repr=False)
    deliveries: list[Delivery] = attrs.field(factory=list, init=False, repr=False)
    base_url: str | None = attrs.field(default=None, init=False)
    _api_changed: trio.Event = attrs.field(factory=trio.Event, init=False, repr=False)
    _dedupe: dict[tuple[str, str], tuple[float, bytes]] = attrs.field(factory=dict, init=False, repr=False)
    _nursery: trio.Nursery | None = attrs.field(default=None, init=False, repr=False)
    _client: httpx.AsyncClient | None = attrs.field(default=None, init=False, repr=False)
    _rng: random.Random = attrs.field(init=False, repr=False)

    def __attrs_post_init__(self) -> None:
        self._rng = random.Random(self.seed)
        if self.speed <= 0:
            raise ValueError("speed must be positive")

    @property
    def public_key_b64(self) -> str:
        """The webhook verification key (base64 of the raw 32 bytes): the service's TELNYX_PUBLIC_KEY."""
        return self.keypair.public_key_b64

    # -- serving ------------------------------------------------------------------------------

    async def serve(self, *, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> None:
        """Listen, report the REST base ``http://host:port/v2``, serve until cancelled."""
        client = httpx.AsyncClient(timeout=WEBHOOK_TIMEOUT_S)
        try:
            async with trio.open_nursery() as nursery:
                self._client, self._nursery = client, nursery
                port, reported = self.port, False
                while True:
                    if self.api_down == "refuse":
                        await self._api_changed.wait()
                        continue
                    binds = await self._listen_until_refused(port, task_status if not reported else None)
                    port, reported = int(binds[0].rsplit(":", 1)[1]), True
        finally:
            with trio.CancelScope(shield=True):
                await client.aclose()

    async def _listen_until_refused(
        self, port: int, task_status: trio.TaskStatus[str] | None
    ) -> list[str]:
        async def refused() -> None:
            while self.api_down != "refuse":
                await self._api_changed.wait()

        async with trio.open_nursery() as server:
            binds: list[str] = await server.start(partial(
                serve_asgi, self.asgi, self.host, port, log=log, shutdown_trigger=refused,
                graceful_timeout_s=GRACEFUL_SHUTDOWN_S))
            if task_status is not None:
                self.base_url = binds[0] + "/v2"
                task_status.started(self.base_url)
        return binds

    async def place_inbound_call(
        self,
        to: str,
        from_: str,
        script: CalleeScript | None = None,
        *,
        connection_id: str = "emulated-connection",
    ) -> EmulatedCall:
        """Ring us: ``call.initiated`` (incoming, parked) goes to ``webhook_url``; returns the call."""
        if self._nursery is None:
            raise RuntimeError("serve() is not running")
        call = EmulatedCall(
            call_control_id=_new_call_control_id(), call_leg_id=str(uuid.uuid4()),
            call_session_id=str(uuid.uuid4()), connection_id=connection_id, direction="incoming",
            from_=from_, to=to, script=script or CalleeScript(), state="parked", client_state=None,
            webhook_url=self.webhook_url, start_time=_now_iso(),
        )  # fmt: skip
        self.calls[call.call_control_id] = call
        await self._nursery.start(self._run_call, call)
        return call

    # -- ASGI -----------------------------------------------------------------------------------

    async def asgi(self, scope: _Scope, receive: _Receive, send: _Send) -> None:
        """The ASGI application (lifespan and http)."""
        if scope["type"] == "lifespan":
            await answer_lifespan(receive, send)
        elif scope["type"] == "http":
            await self._http(scope, receive, send)

    async def _http(self, scope: _Scope, receive: _Receive, send: _Send) -> None:
        at = trio.current_time()
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        method, path = scope["method"], scope["path"]
        raw = b""
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            raw += message.get("body", b"")
            if len(raw) > MAX_REQUEST_BYTES or not message.get("more_body", False):
                break
        verb, call_control_id = self._route(method, path)
        duplicate = False
        try:
            status, body, duplicate, call_control_id = await self._handle(
                method, verb, call_control_id, headers, raw
            )
        except _ApiFailure as failure:
            status = failure.status
            body = encode_api_errors(TelnyxApiErrors(status=status, errors=failure.errors))
        try:
            parsed: Any = orjson.loads(raw) if raw.strip() else None
        except orjson.JSONDecodeError:
            parsed = raw
        command = RecordedCommand(
            at=at, method=method, path=path, verb=verb, call_control_id=call_control_id,
            headers=headers, body=parsed, status=status, duplicate=duplicate,
        )  # fmt: skip
        self.commands.append(command)
        call = self.calls.get(call_control_id or "")
        if call is not None:
            call.commands.append(command)
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json")]})  # fmt: skip
        await send({"type": "http.response.body", "body": body})

    @staticmethod
    def _route(method: str, path: str) -> tuple[str, str | None]:
        if path.rstrip("/") == "/v2/calls":
            return "dial", None
        if match := _ACTION_PATH.fullmatch(path):
            return match[2], match[1]
        if method == "GET" and (match := _CALL_PATH.fullmatch(path)):
            return "get", match[1]
        return "?", None

    async def _handle(
        self, method: str, verb: str, call_control_id: str | None, headers: Mapping[str, str], raw: bytes
    ) -> tuple[int, bytes, bool, str | None]:
        """(status, body, duplicate, call_control_id) of a request; raises _ApiFailure."""
        if self.api_down is not None:
            raise _ApiFailure(503, _error("10007", "Service unavailable",
                                          "The service is temporarily unavailable (emulated outage)."))
        if self.api_key is not None and headers.get("authorization") != f"Bearer {self.api_key}":
            raise _ApiFailure(401, _error(
                "10009", "Authentication failed",
                "The required authentication headers were either invalid or not included in the request."))
        expected_method = "GET" if verb == "get" else "POST"
        if verb == "?" or (verb not in VERBS and verb not in ("dial", "get")):
            raise _ApiFailure(404, _error("10005", "Resource not found",
                                          "The requested resource or URL could not be found."))
        if method != expected_method:
            raise _ApiFailure(405, _error("10015", "Bad Request", f"{method} is not allowed here."))
        if verb == "get":
            assert call_control_id is not None
            return 200, self._status_body(call_control_id), False, call_control_id
        body = _json_object(raw, allow_empty=verb != "dial")
        command_id = body.get("command_id")
        key = ("dial" if verb == "dial" else f"call:{call_control_id}", command_id)
        if _is_text(command_id) and (cached := self._remembered(key)) is not None:
            if verb == "dial":
                call_control_id = orjson.loads(cached)["data"]["call_control_id"]
            return 200, cached, True, call_control_id
        if verb == "dial":
            response, call_control_id = await self._dial(body)
        else:
            assert call_control_id is not None
            response = self._action(call_control_id, verb, body)
        if _is_text(command_id):
            self._dedupe[cast(tuple[str, str], key)] = (trio.current_time(), response)
        return 200, response, False, call_control_id

    def _remembered(self, key: tuple[str, Any]) -> bytes | None:
        entry = self._dedupe.get(key)
        if entry is None:
            return None
        if trio.current_time() - entry[0] > COMMAND_ID_WINDOW_S:
            del self._dedupe[key]
            return None
        return entry[1]

    def _status_body(self, call_control_id: str) -> bytes:
        call = self.calls.get(call_control_id)
        if call is None:
            raise _ApiFailure(404, _error("10005", "Resource not found", "No call with that id."))
        return orjson.dumps({"data": {
            "record_type": "call", "call_control_id": call.call_control_id,
            "call_leg_id": call.call_leg_id, "call_session_id": call.call_session_id,
            "is_alive": call.alive, "client_state": call.client_state, "start_time": call.start_time,
        }})  # fmt: skip

    async def _dial(self, body: dict[str, Any]) -> tuple[bytes, str]:
        errors = _dial_errors(body)
        if errors:
            raise _ApiFailure(422, *errors)
        to = body["to"][0] if type(body["to"]) is list else body["to"]
        call = EmulatedCall(
            call_control_id=_new_call_control_id(), call_leg_id=str(uuid.uuid4()),
            call_session_id=str(uuid.uuid4()), connection_id=body["connection_id"],
            direction="outgoing", from_=body["from"], to=to, script=self.callee_for(to),
            state="bridging", client_state=body.get("client_state"),
            webhook_url=body.get("webhook_url", self.webhook_url), start_time=_now_iso(),
            dial_body=body,
        )  # fmt: skip
        response = encode_dial_response(DialResult(
            call_control_id=call.call_control_id, call_leg_id=call.call_leg_id,
            call_session_id=call.call_session_id, is_alive=False, record_type="call",
            client_state=call._ids()["client_state"],  # noqa: SLF001
        ))  # fmt: skip
        self.calls[call.call_control_id] = call
        assert self._nursery is not None
        await self._nursery.start(self._run_call, call)
        return response, call.call_control_id

    def _action(self, call_control_id: str, verb: str, body: dict[str, Any]) -> bytes:
        call = self.calls.get(call_control_id)
        if call is None or not call.alive:
            raise _ApiFailure(422, _error(CALL_HAS_ENDED, "Call has already ended",
                                          "This call is no longer active and can't receive commands."))
        errors = _action_errors(verb, body)
        if errors:
            raise _ApiFailure(422, *errors)
        if "client_state" in body:
            call.client_state = body["client_state"]
        nursery = call._nursery  # noqa: SLF001
        assert nursery is not None
        if verb == "answer":
            if call.direction == "incoming" and call.state == "parked":
                call.state = "answered"
                call._answer_params = body  # noqa: SLF001
                call.webhook_url = body.get("webhook_url", call.webhook_url)
                call._answer_or_hangup.set()  # noqa: SLF001
        elif verb == "hangup":
            call.state = "hangup"
            call._hangup_requested.set()  # noqa: SLF001
            call._answer_or_hangup.set()  # noqa: SLF001
        elif verb in ("playback_start", "speak", "transcription_start"):
            kind = {"playback_start": "playback", "speak": "speak"}.get(verb, "transcription")
            activity = _Activity(cast(Any, kind))
            call._activities.append(activity)  # noqa: SLF001
            run = {"playback": self._playback, "speak": self._speak}.get(kind, self._transcribe)
            nursery.start_soon(self._activity, call, activity, run, body)
        elif verb in ("playback_stop", "transcription_stop"):
            kinds = ("playback", "speak") if verb == "playback_stop" else ("transcription",)
            targets = [a for a in call._activities if a.kind in kinds]  # noqa: SLF001
            if verb == "playback_stop" and body.get("stop") == "current":
                targets = targets[-1:]
            for activity in targets:
                activity.stop("cancelled")
        elif verb == "streaming_start":
            nursery.start_soon(self._stream, call, body)
        elif verb == "streaming_stop":
            for stream in call.streams:
                if body.get("stream_id") in (None, stream.stream_id) and not stream.done.is_set():
                    stream.hang_up()
        return encode_command_result()
