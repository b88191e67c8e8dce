"""Call control routes: place, list and hang up calls; receive Telnyx's signed webhooks.

=============================  ===============================================================
``POST /api/call/initiate``    ``{"nombre", "telefono"}`` → dial with a media stream → 202
``POST /api/call/{id}/hangup`` hang up via Telnyx (404 unknown id; 200 if already ended)
``GET /api/calls``             live and recently ended calls with their state
``POST /webhooks/telnyx``      Ed25519-verified, deduped call events → state, answers, hangups
=============================  ===============================================================

Media-streams mode (``USE_MEDIA_STREAMS=true``): every call we dial or answer streams its audio
to ``WS /stream/media`` (``stream_url`` is ``WEBHOOK_BASE_URL`` with ``http``→``ws``), inbound
track only, bidirectional ``rtp``, PCMU both ways, authenticated by a fresh per-call token that is
registered in ``StreamTokens.issued`` *before* the dial (Telnyx may connect before the dial's
answer reaches us) and revoked when the dial fails or the call ends. ``client_state`` is our call
id, so every webhook names the call even before we know its ``call_control_id``.

Webhooks: the raw body is verified first (a missing, stale or forged signature → 401 with the
reason, nothing changed), then decoded and deduped on ``data.id``. State updates are synchronous
and done before the 200; anything slow (answering an inbound call, hanging up) runs in the
background nursery of :meth:`CallControl.run`, a lifespan service, never in the response path.

Webhook mode (``USE_MEDIA_STREAMS=false``, :mod:`centralita.webhook_calls`): the dial and the
answer ask for no stream (:meth:`CallControl._stream_fields`) and no stream token is issued;
``call.answered`` starts the call's actors and Telnyx transcription, and :meth:`CallControl._apply`
routes ``call.transcription``, ``call.speak.*``, ``call.playback.*`` and ``call.hangup`` to them.
Request helpers (URLs, body checks, error bodies) live in :mod:`centralita.call_requests`.
"""

from __future__ import annotations

import logging
import secrets
import time
import uuid
from collections.abc import Callable
from typing import Any, Final

import attrs
import orjson
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from actors.telnyx_control import ALREADY_ENDED, TelnyxError
from centralita.app import App
from centralita.asgi import BodyTooLarge, ClientGone, Receive, Scope, Send, read_body, respond_json
from centralita.call_book import BookedCall, CallBook, CallState
from centralita.call_requests import (NOMBRE_MAX_CHARS, WEBHOOK_PATH, headers_of,
                                      method_not_allowed, mount_disabled, stream_url_for,
                                      telnyx_error_body, validate_initiate, webhook_url_for)
from centralita.call_lifecycle import STREAM_CONNECT_TIMEOUT_S, CallLifecycle
from centralita.calls import CallRegistry
from centralita.routes_media import StreamTokens
from centralita.settings import Settings
from protocols import telnyx_call_control as cc
from protocols.errors import LocalProtocolError, RemoteProtocolError
from protocols.telnyx_signature import WebhookSignatureError, load_public_key, verify_webhook

log = logging.getLogger(__name__)

__all__ = [
    "NOMBRE_MAX_CHARS",
    "STREAM_CONNECT_TIMEOUT_S",
    "CallControl",
    "mount_disabled",
    "stream_url_for",
    "validate_initiate",
    "webhook_url_for",
]

INITIATE_MAX_BODY_BYTES: Final = 16_384
WEBHOOK_MAX_BODY_BYTES: Final = 262_144  # Telnyx events are a few KB; a transcript burst fits
STREAM_TOKEN_BYTES: Final = 24  # secrets.token_urlsafe: 32 characters
STREAM_CODEC: Final = "PCMU"


@attrs.define(eq=False, kw_only=True)
class CallControl(CallLifecycle):
    """The call-control routes and the webhook state machine over a :class:`CallBook`.

    ``telnyx`` is set by the composition root's lifespan service (which owns the HTTP client)
    before :meth:`run` starts; until then the routes answer 503.
    """

    connection_id: str
    from_number: str | None = None
    webhook_base_url: str | None = None
    public_key: Ed25519PublicKey | None = None
    public_key_problem: str | None = "TELNYX_PUBLIC_KEY is not set"
    inbound_calls: bool = True
    clock: Callable[[], float] = time.time  # for the webhook timestamp check

    @classmethod
    def from_settings(cls, settings: Settings, *, book: CallBook, registry: CallRegistry,
                      tokens: StreamTokens) -> CallControl:
        """Build from settings, logging at start-up what will not work and why."""
        assert settings.telnyx_connection_id is not None
        control = cls(book=book, registry=registry, tokens=tokens,
                      connection_id=settings.telnyx_connection_id,
                      from_number=settings.telnyx_from_number,
                      webhook_base_url=settings.webhook_base_url,
                      inbound_calls=settings.inbound_calls,
                      use_media_streams=settings.use_media_streams)
        if settings.telnyx_public_key is None:
            log.warning("TELNYX_PUBLIC_KEY is not set: every Telnyx webhook is refused (503), so "
                        "calls are placed but their progress is never seen")
        else:
            try:
                control.public_key = load_public_key(settings.telnyx_public_key)
                control.public_key_problem = None
            except WebhookSignatureError as exc:
                control.public_key_problem = f"TELNYX_PUBLIC_KEY is unusable: {exc.reason}"
                log.error("%s; every Telnyx webhook is refused (503)", control.public_key_problem)
        if control.webhook_base_url is None:
            log.warning("WEBHOOK_BASE_URL is not set: no stream_url to give Telnyx, so calls "
                        "can be neither placed nor answered")
        else:
            try:
                stream_url_for(control.webhook_base_url)
            except ValueError as exc:
                log.error("%s: calls can be neither placed nor answered", exc)
        if control.from_number is None:
            log.warning("TELNYX_FROM_NUMBER is not set: POST /api/call/initiate answers 503")
        return control

    def mount(self, app: App) -> None:
        app.http_routes["/api/call/initiate"] = self.initiate
        app.http_routes["/api/calls"] = self.list_calls
        app.http_prefix_routes.append(("/api/call/", self.call_action))
        app.http_routes[WEBHOOK_PATH] = self.webhook

    # -- POST /api/call/initiate ----------------------------------------------------------------

    async def initiate(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] != "POST":
            await method_not_allowed(send, "POST")
            return
        try:
            raw = await read_body(scope, receive, INITIATE_MAX_BODY_BYTES)
        except BodyTooLarge:
            await respond_json(send, 413, {"error": "body too large"})
            return
        except ClientGone:
            return
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            await respond_json(send, 400, {"error": "body is not JSON",
                                           "fields": {"body": "must be a JSON object"}})
            return
        errors, nombre, telefono = validate_initiate(body)
        if errors:
            await respond_json(send, 400, {"error": "invalid call request", "fields": errors})
            return
        unavailable = self._cannot_dial()
        if unavailable is not None:
            await respond_json(send, 503, {"error": unavailable})
            return
        assert self.telnyx is not None and self.webhook_base_url and self.from_number
        call_id = uuid.uuid4().hex
        token = secrets.token_urlsafe(STREAM_TOKEN_BYTES)
        # Token first: Telnyx may open the stream before its answer to the dial reaches us.
        call = self.book.open(call_id, direction="outbound", stream_token=token,
                              telefono=telefono, nombre=nombre)
        if self.use_media_streams:  # webhook mode: no stream, so no token opens one
            self.tokens.issued[token] = call_id
        status, failure = 0, dict[str, Any]()
        try:
            result = await self.telnyx.dial(
                connection_id=self.connection_id, to=telefono, from_=self.from_number,
                webhook_url=webhook_url_for(self.webhook_base_url),
                client_state=call_id, command_id=uuid.uuid4(), **self._stream_fields(token))
        except TelnyxError as exc:
            log.warning("dial failed", extra={"call_id": call_id, "error": str(exc)})
            status, failure = 502, telnyx_error_body(exc)
        except LocalProtocolError as exc:  # our configuration (from number, URLs) is wrong
            log.error("dial not sent: bad call control configuration",
                      extra={"call_id": call_id, "reason": exc.reason})
            status, failure = 500, {"error": "call control misconfigured", "detail": exc.reason}
        except BaseException:  # cancelled (shutting down): still no half-created call
            self._abandon_dial(call_id, token)
            raise
        if status:
            self._abandon_dial(call_id, token)  # before anyone hears of the failure
            await respond_json(send, status, failure)
            return
        if call.call_control_id is None:
            self.book.set_control_id(call, result.call_control_id)
        log.info("call dialled", extra={"call_id": call_id,
                                        "call_control_id": result.call_control_id})
        await respond_json(send, 202, {"callId": call_id,
                                       "callControlId": call.call_control_id,
                                       "state": call.state.value})

    def _abandon_dial(self, call_id: str, token: str) -> None:
        """No half-created call: the token and the entry go. A webhook naming this call id
        later (a dial that got through after all) finds it abandoned and hangs the call up."""
        self.tokens.issued.pop(token, None)
        self.book.abandon(call_id)

    def _cannot_dial(self) -> str | None:
        if self.telnyx is None:
            return "call control is not running (starting up or shutting down)"
        if self.from_number is None:
            return "TELNYX_FROM_NUMBER is not set"
        if self.webhook_base_url is None:
            return "WEBHOOK_BASE_URL is not set: no stream_url to give Telnyx"
        try:
            stream_url_for(self.webhook_base_url)
        except ValueError as exc:
            return str(exc)
        return None

    def _stream_fields(self, token: str) -> dict[str, Any]:
        """What a dial or an answer asks for: a media stream, or nothing in webhook mode."""
        if not self.use_media_streams:
            return {}
        assert self.webhook_base_url is not None
        return {"stream_url": stream_url_for(self.webhook_base_url),
                "stream_track": "inbound_track", "stream_codec": STREAM_CODEC,
                "stream_bidirectional_mode": "rtp",
                "stream_bidirectional_codec": STREAM_CODEC, "stream_auth_token": token}

    # -- POST /api/call/{id}/hangup -------------------------------------------------------------

    async def call_action(self, scope: Scope, receive: Receive, send: Send) -> None:
        call_id, _, verb = scope["path"][len("/api/call/"):].partition("/")
        if verb != "hangup" or not call_id:
            await respond_json(send, 404, {"error": f"no route {scope['path']}"})
            return
        if scope["method"] != "POST":
            await method_not_allowed(send, "POST")
            return
        call = self.book.get(call_id)
        if call is None:
            await respond_json(send, 404, {"error": f"no call {call_id}"})
            return
        if call.ended:
            await respond_json(send, 200, {"callId": call_id, "state": call.state.value,
                                           "hangup": "already ended"})
            return
        if call.call_control_id is None:
            await respond_json(send, 409, {"error": "the call is still being dialled"})
            return
        if self.telnyx is None:
            await respond_json(send, 503, {"error": "call control is not running"})
            return
        try:
            result = await self.telnyx.hangup(call.call_control_id)
        except TelnyxError as exc:
            await respond_json(send, 502, telnyx_error_body(exc))
            return
        outcome = "requested"  # the call.hangup webhook ends it in the book
        if result.result == ALREADY_ENDED:
            self._ended(call, hangup_cause=None, reason="already ended at Telnyx")
            outcome = "already ended"
        await respond_json(send, 200, {"callId": call_id, "state": call.state.value,
                                       "hangup": outcome})

    # -- GET /api/calls -------------------------------------------------------------------------

    async def list_calls(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] != "GET":
            await method_not_allowed(send, "GET")
            return
        live = self.registry.calls
        await respond_json(send, 200, {"calls": [
            c.to_json(streaming=not c.ended and c.call_id in live) for c in self.book.calls()]})

    # -- POST /webhooks/telnyx ------------------------------------------------------------------

    async def webhook(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] != "POST":
            await method_not_allowed(send, "POST")
            return
        if self.public_key is None:
            await respond_json(send, 503, {"error": self.public_key_problem})
            return
        try:
            raw = await read_body(scope, receive, WEBHOOK_MAX_BODY_BYTES)
        except BodyTooLarge:
            await respond_json(send, 413, {"error": "body too large"})
            return
        except ClientGone:
            return
        try:
            verify_webhook(self.public_key, headers_of(scope), raw, now=self.clock())
        except WebhookSignatureError as exc:
            log.warning("webhook refused", extra={"reason": exc.reason,
                                                  "client": str(scope.get("client"))})
            await respond_json(send, 401, {"error": "bad webhook signature", "reason": exc.reason})
            return
        try:
            event = cc.decode_webhook(raw)
        except RemoteProtocolError as exc:
            log.warning("signed webhook we cannot read", extra={"reason": exc.reason})
            await respond_json(send, 400, {"error": "malformed webhook", "reason": exc.reason})
            return
        if not self.book.first_sighting(event.id):
            log.debug("duplicate webhook ignored", extra={"webhook_id": event.id,
                                                          "event_type": event.event_type})
            await respond_json(send, 200, {"ok": True, "duplicate": True})
            return
        self._apply(event)
        await respond_json(send, 200, {"ok": True})

    def _find(self, payload: cc.WebhookPayload) -> tuple[BookedCall | None, str | None]:
        """The booked call an event is about: by ``client_state`` (our call id), else by leg."""
        call_id = None
        client_state = getattr(payload, "client_state", None)
        if isinstance(client_state, bytes):
            call_id = client_state.decode("ascii", "replace")
        call = self.book.get(call_id) if call_id else None
        if call is None:
            control_id = getattr(payload, "call_control_id", None)
            if isinstance(control_id, str):
                call = self.book.by_control_id(control_id)
        return call, call_id

    def _apply(self, event: cc.WebhookEvent) -> None:
        """Update the book for one (first-seen) event; schedule slow work. Synchronous."""
        payload = event.payload
        call, named = self._find(payload)
        extra = {"event_type": event.event_type, "webhook_id": event.id,
                 "call_id": call.call_id if call else named}
        if call is None:
            if isinstance(payload, cc.CallInitiated) and payload.direction == "incoming":
                self._incoming(payload)
            elif (named and isinstance(payload, (cc.CallInitiated, cc.CallAnswered))
                  and self.book.take_abandoned(named)):
                # A dial we reported as failed got through after all (e.g. it timed out here).
                log.warning("abandoned call got through: hanging it up", extra=extra)
                self._spawn(self._hangup_quietly, payload.call_control_id, named)
            else:
                log.info("webhook for a call we do not know", extra=extra)
            return
        control_id = getattr(payload, "call_control_id", None)
        if isinstance(control_id, str) and call.call_control_id is None:
            self.book.set_control_id(call, control_id)
        log.info("call event", extra=extra)
        if call.ended and not isinstance(payload, cc.CallHangup):
            return
        match payload:
            case cc.CallAnswered():
                if self.book.advance(call, CallState.ANSWERED):
                    if self.webhook_calls is not None:
                        self._spawn(self._go_live, call.call_id)
                    else:
                        self._spawn(self._watch_stream, call.call_id)
            case cc.StreamingStarted():
                self.book.advance(call, CallState.STREAMING)
            case cc.StreamingStopped():
                call.stream_stopped_at = self.book.clock()
            case cc.StreamingFailed():
                reason = f"stream failed: {payload.failure_reason or 'unknown reason'}"
                log.error("media stream failed: hanging up", extra={**extra, "reason": reason})
                self._abort(call, reason)
            case cc.CallHangup():
                cause = payload.hangup_cause or "unspecified"
                self._ended(call, hangup_cause=cause, reason=f"hangup: {cause}")
            case (cc.CallTranscription() | cc.CallSpeakStarted() | cc.CallSpeakEnded()
                  | cc.CallPlaybackStarted() | cc.CallPlaybackEnded()):
                if self.webhook_calls is not None:
                    self.webhook_calls.route(call, payload, event.id)
            case _:
                pass  # call.initiated (outgoing), dtmf: nothing to do

    def _incoming(self, payload: cc.CallInitiated) -> None:
        extra = {"call_control_id": payload.call_control_id, "from": payload.from_}
        if not self.inbound_calls:
            log.info("inbound call not answered: INBOUND_CALLS=false", extra=extra)
            return
        problem = self._cannot_answer()
        if problem is not None:
            log.error("inbound call not answered", extra={**extra, "reason": problem})
            return
        call_id = uuid.uuid4().hex
        token = secrets.token_urlsafe(STREAM_TOKEN_BYTES)
        call = self.book.open(call_id, direction="inbound", stream_token=token,
                              telefono=payload.from_, call_control_id=payload.call_control_id)
        if self.use_media_streams:
            self.tokens.issued[token] = call_id
        log.info("answering inbound call", extra={**extra, "call_id": call_id})
        self._spawn(self._answer, call)

    def _cannot_answer(self) -> str | None:
        if self.telnyx is None:
            return "call control is not running"
        if self.webhook_base_url is None:
            return "WEBHOOK_BASE_URL is not set"
        try:
            stream_url_for(self.webhook_base_url)
        except ValueError as exc:
            return str(exc)
        return None

    async def _answer(self, call: BookedCall) -> None:
        assert self.telnyx is not None and call.call_control_id and self.webhook_base_url
        try:
            await self.telnyx.answer(call.call_control_id, client_state=call.call_id,
                                     webhook_url=webhook_url_for(self.webhook_base_url),
                                     **self._stream_fields(call.stream_token))
        except TelnyxError as exc:
            log.error("answer failed", extra={"call_id": call.call_id, "error": str(exc)})
            self._ended(call, hangup_cause=None, reason=f"answer failed: {exc}")
