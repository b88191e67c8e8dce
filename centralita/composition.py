"""The composition root: settings in, an ASGI app with its routes, services and engines out.

Engines are chosen here and nowhere else (DESIGN.md): the cloud engine when its key is set (or it
is asked for by ``STT_ENGINE`` / ``TTS_ENGINE`` / ``LLM_ENGINE``), else the local one — so with no
keys at all the service still answers calls: pocketsphinx (English) hears, a scripted dialogue
(``actors/scripts/*.toml``) answers, espeak-ng speaks. The choice is logged at start-up.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from functools import partial
from typing import Any, Final

import anthropic
import attrs
import httpx
import httpx2
import trio

from actors.aura_tts import AuraTts
from actors.brain import Brain
from actors.call_control_link import CallHangup
from actors.espeak_tts import EspeakTts
from actors.llm import AnthropicLlm
from actors.pocketsphinx_decoder import SphinxOptions
from actors.scripted_llm import ScriptedLlm
from actors.tts import TtsEngine
from actors.messages import FRAME_S, CallInfo
from actors.ports import MediaSocket
from actors.ports import EventPublisher
from actors.relay_publishers import HttpRelayPublisher, InProcessPublisher
from actors.s3_audio import AudioStore, S3AudioStore
from actors.speaker import Speaker
from actors.telnyx_control import TelnyxControl
from actors.telnyx_playback import TelnyxPlayback
from centralita.app import App
from centralita.call_book import CallBook
from centralita.call_wiring import (SttFactory, bot_call, deepgram_stt, listening_call, local_stt,
                                    webhook_call)
from centralita.calls import CallRegistry
from centralita.hangup_causes import HangupCausePublisher
from centralita.metrics import TurnLatencyMetrics, metrics_route, new_registry
from centralita.relay_hub import RelayHub
from centralita.routes_calls import CallControl, mount_disabled
from centralita.routes_media import BuildCall, MediaRoutes, MediaStreamRoute, StreamTokens
from centralita.routes_relay import RelayRoutes
from centralita.settings import Engine, Settings
from centralita.webhook_calls import WebhookCalls, transcription_fields
from supervisor import SupervisorSpec

log = logging.getLogger(__name__)

ANTHROPIC_KEEPALIVE_S: Final = 120.0  # turn gaps exceed httpx's 5 s default: keep the TLS warm
ANTHROPIC_MAX_RETRIES: Final = 0  # the Brain retries once itself, within its own budget
HANGUP_MARKER: Final = "[FIN]"  # a scripted reply ending with it makes the Brain hang up after it
SCRIPTED_PIECE_DELAY_S: Final = 0.0  # the local brain streams word by word, adding no delay
TELNYX_MAX_CONNECTIONS: Final = 50  # Call Control commands are short; dials and hangups burst


@attrs.define(eq=False)
class Relay:
    """The relay hub and its routes, shared by ``centralita relay`` and ``centralita serve``."""

    hub: RelayHub
    routes: RelayRoutes
    metrics: TurnLatencyMetrics
    registry: object

    @classmethod
    def from_settings(cls, settings: Settings) -> Relay:
        hub = RelayHub(backlog_ttl_s=settings.relay_backlog_ttl_s)
        token = settings.relay_token.value if settings.relay_token else None
        if token is None:
            log.warning("relay is open: RELAY_TOKEN is not set, anyone who can reach this port "
                        "may publish and subscribe")
        registry = new_registry(hub)
        return cls(hub=hub, routes=RelayRoutes(hub=hub, token=token),
                   metrics=TurnLatencyMetrics(registry), registry=registry)

    def mount(self, app: App) -> None:
        app.http_routes["/health"] = self.routes.health
        app.http_routes["/event"] = self.routes.event
        app.websocket_routes["/ws"] = self.routes.subscribe
        app.http_routes["/metrics"] = metrics_route(self.registry)  # type: ignore[arg-type]
        app.services.append(self.hub.run)
        app.drain_hooks.append(self.hub.close_all)


def _describe(engine: Engine, cloud: str, local: str) -> str:
    return cloud if engine is Engine.CLOUD else local


def _chosen(asked: Engine | None, has_key: bool) -> Engine:
    if asked is not None:
        return asked
    return Engine.CLOUD if has_key else Engine.LOCAL


@attrs.define(eq=False)
class Service:
    """Everything ``centralita serve`` runs: relay, call registry, the Telnyx stream target."""

    settings: Settings
    relay: Relay
    registry: CallRegistry
    media: MediaRoutes
    llm_client: anthropic.AsyncAnthropic | None = None
    scripted: ScriptedLlm | None = None
    relay_client: httpx.AsyncClient | None = None
    tts: TtsEngine | None = None
    language: str = "es"
    call_control: CallControl | None = None  # set by mount_call_control when Telnyx is configured
    audio_store: AudioStore | None = None  # webhook mode with S3_BUCKET: replies played from S3

    @classmethod
    def from_settings(cls, settings: Settings) -> Service:
        relay = Relay.from_settings(settings)
        registry = CallRegistry()
        static = settings.telnyx_stream_token.value if settings.telnyx_stream_token else None
        if static is None:
            log.warning("TELNYX_STREAM_TOKEN is not set: only streams with per-call tokens "
                        "issued by our call control are accepted")
        service = cls(settings=settings, relay=relay, registry=registry,
                      media=MediaRoutes(registry=registry, tokens=StreamTokens(static=static),
                                        build_call=_refuse))
        service.media.build_call = service._build_call_factory()
        return service

    def _build_call_factory(self) -> BuildCall:
        s = self.settings
        dg_key = s.deepgram_api_key.value if s.deepgram_api_key else None
        stt_engine = _chosen(s.stt_engine, dg_key is not None)
        tts_engine = _chosen(s.tts_engine, dg_key is not None)
        llm_engine = _chosen(s.llm_engine, s.anthropic_api_key is not None)
        self.scripted = None
        if llm_engine is Engine.LOCAL:
            # The local STT understands English only; with Deepgram the Spanish script fits.
            script = "demo_en" if stt_engine is Engine.LOCAL else "demo_es"
            self.scripted = ScriptedLlm.builtin(script, hangup_marker=HANGUP_MARKER,
                                                delay_s=SCRIPTED_PIECE_DELAY_S)
        self.language = "en" if stt_engine is Engine.LOCAL else "es"
        log.info("engines chosen", extra={"stt": _describe(stt_engine, "deepgram", "pocketsphinx"),
                                          "tts": _describe(tts_engine, "aura", "espeak-ng"),
                                          "llm": _describe(llm_engine, "anthropic", "scripted")})
        stt: SttFactory
        if stt_engine is Engine.CLOUD:
            stt = deepgram_stt(s.deepgram_listen_url, dg_key or "", s.deepgram_batch_frames)
        else:  # constrained to what the script expects, when the script is ours (an IVR grammar)
            phrases = self.scripted.expected_phrases() if self.scripted is not None else ()
            stt = local_stt(SphinxOptions(phrases=phrases))  # type: ignore[arg-type]  # attrs converter=tuple
        self.tts = (AuraTts(api_key=dg_key or "", speak_url=s.deepgram_speak_url)
                    if tts_engine is Engine.CLOUD else EspeakTts.for_language(self.language))
        if s.call_mode == "listen":
            log.info("CALL_MODE=listen: calls are transcribed to the relay, nobody answers")
            return partial(listening_call, stt=stt,
                           publisher=self._publisher())
        return partial(bot_call, stt=stt, brain=self._brain, speaker=self._speaker,
                       publisher=self._publisher(),
                       on_latency=self.relay.metrics.observe, hangup=self._call_hangup)

    def _brain(self, info: CallInfo) -> Brain:
        if self.scripted is not None:
            return Brain(call=info, llm=self.scripted, greeting=self.scripted.greeting_template,
                         hangup_marker=HANGUP_MARKER,
                         preemptive=self.settings.preemptive_generation)
        if self.llm_client is None:
            raise RuntimeError("the Anthropic client is not open (lifespan not started)")
        llm = AnthropicLlm(client=self.llm_client, model=self.settings.anthropic_model)
        return Brain(call=info, llm=llm, preemptive=self.settings.preemptive_generation)

    def _speaker(self, info: CallInfo, socket: MediaSocket) -> Speaker:
        assert self.tts is not None  # set with the call factory
        frames = self.settings.speaker_message_ms // round(FRAME_S * 1000)
        return Speaker(call=info, tts=self.tts, socket=socket, frames_per_message=frames)

    def _publisher(self) -> EventPublisher:
        """Relay events go to this process's hub, or to an external relay (``RELAY_URL``);
        ``call ended`` events get Telnyx's hangup cause when call control knows it."""
        inner: EventPublisher
        if self.settings.relay_url is None:
            inner = InProcessPublisher(self.relay.hub.publish)
        else:
            token = self.settings.relay_token.value if self.settings.relay_token else None
            inner = _LazyHttpPublisher(self, self.settings.relay_url, token)
        return HangupCausePublisher(inner, book=self._call_book)

    def _call_book(self) -> CallBook | None:
        return self.call_control.book if self.call_control is not None else None

    def _playback(self, info: CallInfo) -> TelnyxPlayback:
        """Webhook mode's voice: Telnyx speak, or our TTS through S3 when a bucket is set."""
        control = self.call_control.telnyx if self.call_control is not None else None
        if control is None:
            raise RuntimeError("call control is not running (lifespan not started)")
        s = self.settings
        return TelnyxPlayback(call=info, commands=control, voice=s.telnyx_speak_voice,
                              language=s.telnyx_speak_language,
                              tts=self.tts if self.audio_store is not None else None,
                              store=self.audio_store)

    def _use_webhook_mode(self) -> None:
        """Engines for webhook mode: Telnyx hears in ``TELNYX_TRANSCRIPTION_LANGUAGE``, so the
        local script and voice follow that language, not the local STT's (English only)."""
        s = self.settings
        self.language = "es" if s.telnyx_transcription_language.lower().startswith("es") else "en"
        if self.scripted is not None:
            self.scripted = ScriptedLlm.builtin(f"demo_{self.language}",
                                                hangup_marker=HANGUP_MARKER,
                                                delay_s=SCRIPTED_PIECE_DELAY_S)
        if isinstance(self.tts, EspeakTts):
            self.tts = EspeakTts.for_language(self.language)
        if s.s3_bucket is not None:
            self.audio_store = S3AudioStore.from_settings(
                bucket=s.s3_bucket, region=s.aws_region, endpoint_url=s.aws_endpoint_url,
                prefix=s.s3_prefix, expiry_s=s.s3_presign_expiry_s)
        log.info("webhook mode: Telnyx transcribes; replies by %s",
                 "our TTS via S3 playback" if self.audio_store else "Telnyx speak",
                 extra={"s3_bucket": s.s3_bucket, "aws_endpoint_url": s.aws_endpoint_url,
                        "voice": s.telnyx_speak_voice,
                        "transcription_engine": s.telnyx_transcription_engine})

    async def run_relay_client(
            self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Lifespan service: the pooled HTTP client for an external relay (``RELAY_URL``)."""
        if self.settings.relay_url is None:
            task_status.started()
            return
        limits = httpx.Limits(max_connections=100, max_keepalive_connections=20,
                              keepalive_expiry=60.0)
        async with httpx.AsyncClient(limits=limits) as client:
            self.relay_client = client
            try:
                task_status.started()
                await trio.sleep_forever()
            finally:
                self.relay_client = None

    async def run_clients(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                          ) -> None:
        """Lifespan service: one Anthropic client per process, opened and closed here."""
        key = self.settings.anthropic_api_key
        if key is None:
            task_status.started()
            return
        http_client = anthropic.DefaultAsyncHttpxClient(
            limits=httpx2.Limits(max_connections=200, max_keepalive_connections=50,
                                 keepalive_expiry=ANTHROPIC_KEEPALIVE_S))
        async with anthropic.AsyncAnthropic(api_key=key.value,
                                            base_url=self.settings.anthropic_base_url,
                                            max_retries=ANTHROPIC_MAX_RETRIES,
                                            http_client=http_client) as client:
            self.llm_client = client
            try:
                task_status.started()
                await trio.sleep_forever()
            finally:
                self.llm_client = None

    def _call_hangup(self, info: CallInfo) -> CallHangup | None:
        """The Brain's Hangup → Telnyx hangup, when call control is running."""
        control = self.call_control.telnyx if self.call_control is not None else None
        return CallHangup(call=info, control=control) if control is not None else None

    async def run_call_control(
            self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Lifespan service: one Telnyx HTTP client per process, and call control's background
        work (mounted only when call control is configured)."""
        control, key = self.call_control, self.settings.telnyx_api_key
        assert control is not None and key is not None
        limits = httpx.Limits(max_connections=TELNYX_MAX_CONNECTIONS,
                              max_keepalive_connections=TELNYX_MAX_CONNECTIONS)
        async with httpx.AsyncClient(limits=limits) as client:
            control.telnyx = TelnyxControl(client=client, api_key=key.value,
                                           api_base=self.settings.telnyx_api_base)
            try:
                await control.run(task_status=task_status)
            finally:
                control.telnyx = None


def mount_call_control(app: App, service: Service) -> None:
    """``/api/call*``, ``/api/calls`` and ``/webhooks/telnyx``; 503 with a reason when Telnyx is
    not configured (``TELNYX_API_KEY`` and ``TELNYX_CONNECTION_ID``).

    ``USE_MEDIA_STREAMS=false`` (webhook mode) places and answers calls without a stream: Telnyx
    transcribes, and replies are spoken by Telnyx or played from S3 (``S3_BUCKET``)."""
    s = service.settings
    missing = [name for name, value in (("TELNYX_API_KEY", s.telnyx_api_key),
                                        ("TELNYX_CONNECTION_ID", s.telnyx_connection_id))
               if not value]
    if missing:
        reason = f"call control is off: {' and '.join(missing)} not set"
        log.warning(reason)
        mount_disabled(app, reason)
        return
    book = CallBook()
    service.call_control = CallControl.from_settings(s, book=book, registry=service.registry,
                                                     tokens=service.media.tokens)
    if not s.use_media_streams:
        service._use_webhook_mode()
        service.call_control.webhook_calls = WebhookCalls(
            registry=service.registry,
            build=partial(webhook_call, brain=service._brain, playback=service._playback,
                          publisher=service._publisher(), on_latency=service.relay.metrics.observe,
                          hangup=service._call_hangup),
            transcription=transcription_fields(s.telnyx_transcription_engine,
                                               s.telnyx_transcription_model,
                                               s.telnyx_transcription_language))
    service.media.tokens.callee_name_for = book.callee_name_for
    service.call_control.mount(app)
    app.services.append(service.run_call_control)


def _refuse(info: CallInfo, socket: MediaSocket, start_sequence_number: int) -> SupervisorSpec:
    raise RuntimeError("service not composed")  # replaced in Service.from_settings


@attrs.define(eq=False)
class _LazyHttpPublisher:
    """HttpRelayPublisher over the service's pooled client, which the lifespan opens later."""

    service: Service
    relay_url: str
    token: str | None

    async def publish(self, call_id: str, event: Mapping[str, Any]) -> None:
        client = self.service.relay_client
        if client is None:
            raise RuntimeError("the relay HTTP client is not open")
        await HttpRelayPublisher(client, self.relay_url, self.token).publish(call_id, event)


def build_relay_app(settings: Settings) -> tuple[App, Relay]:
    app = App()
    relay = Relay.from_settings(settings)
    relay.mount(app)
    return app, relay


def build_service_app(settings: Settings) -> tuple[App, Service]:
    """The full service: relay routes plus the Telnyx stream target and the call registry."""
    app = App()
    service = Service.from_settings(settings)
    app.services.append(service.run_clients)
    app.services.append(service.run_relay_client)
    app.services.append(service.registry.run)
    app.websocket_routes["/stream/media"] = MediaStreamRoute(service.media)
    mount_call_control(app, service)
    # Drain order matters: calls stop first (their last events reach the hub), then the relay.
    app.drain_hooks.append(service.registry.stop_all)
    service.relay.mount(app)
    return app, service

