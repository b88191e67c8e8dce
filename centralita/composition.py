"""The composition root: settings in, an ASGI app with its routes, services and engines out.

Engines are chosen here and nowhere else (DESIGN.md): the cloud engine when its key is set (or it
is asked for by ``STT_ENGINE`` / ``TTS_ENGINE`` / ``LLM_ENGINE``), else the local one. Until the
local engines exist (issue #8), a service without an LLM or TTS key answers no calls: it listens,
and publishes the transcripts — and says so at start-up.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import partial
from typing import Final

import anthropic
import attrs
import httpx2
import trio

from actors.aura_tts import AuraTts
from actors.brain import Brain
from actors.llm import AnthropicLlm
from actors.messages import CallInfo
from actors.ports import MediaSocket
from actors.relay_publishers import InProcessPublisher
from actors.speaker import Speaker
from centralita.app import App
from centralita.call_wiring import bot_call, deepgram_stt, listening_call
from centralita.calls import CallRegistry
from centralita.metrics import TurnLatencyMetrics, metrics_route, new_registry
from centralita.relay_hub import RelayHub
from centralita.routes_media import BuildCall, MediaRoutes, StreamTokens
from centralita.routes_relay import RelayRoutes
from centralita.settings import Engine, Settings
from supervisor import SupervisorSpec

log = logging.getLogger(__name__)

ANTHROPIC_KEEPALIVE_S: Final = 120.0  # turn gaps exceed httpx's 5 s default: keep the TLS warm
ANTHROPIC_MAX_RETRIES: Final = 0  # the Brain retries once itself, within its own budget


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
        stt_engine = _chosen(s.stt_engine, s.deepgram_api_key is not None)
        tts_engine = _chosen(s.tts_engine, s.deepgram_api_key is not None)
        llm_engine = _chosen(s.llm_engine, s.anthropic_api_key is not None)
        log.info("engines chosen", extra={"stt": stt_engine.value, "tts": tts_engine.value,
                                          "llm": llm_engine.value})
        publisher = InProcessPublisher(self.relay.hub.publish)
        if stt_engine is not Engine.CLOUD:
            log.warning("no STT engine: DEEPGRAM_API_KEY is not set and the local STT engine "
                        "arrives with issue #8; calls will fail to start")
        stt = deepgram_stt(s.deepgram_listen_url,
                           s.deepgram_api_key.value if s.deepgram_api_key else "")
        if tts_engine is Engine.CLOUD and llm_engine is Engine.CLOUD:
            return partial(bot_call, stt=stt, brain=self._brain, speaker=self._speaker,
                           publisher=publisher, on_latency=self.relay.metrics.observe)
        log.warning("calls only listen: the bot needs ANTHROPIC_API_KEY and DEEPGRAM_API_KEY "
                    "(local LLM and TTS engines arrive with issue #8)")
        return partial(listening_call, stt=stt, publisher=publisher,
                       on_latency=self.relay.metrics.observe)

    def _brain(self, info: CallInfo) -> Brain:
        if self.llm_client is None:
            raise RuntimeError("the Anthropic client is not open (lifespan not started)")
        llm = AnthropicLlm(client=self.llm_client, model=self.settings.anthropic_model)
        return Brain(call=info, llm=llm)

    def _speaker(self, info: CallInfo, socket: MediaSocket) -> Speaker:
        key = self.settings.deepgram_api_key
        tts = AuraTts(api_key=key.value if key else "", speak_url=self.settings.deepgram_speak_url)
        return Speaker(call=info, tts=tts, socket=socket)

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


def _refuse(info: CallInfo, socket: MediaSocket, start_sequence_number: int) -> SupervisorSpec:
    raise RuntimeError("service not composed")  # replaced in Service.from_settings


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
    app.services.append(service.registry.run)
    app.websocket_routes["/stream/media"] = service.media.stream
    # Drain order matters: calls stop first (their last events reach the hub), then the relay.
    app.drain_hooks.append(service.registry.stop_all)
    service.relay.mount(app)
    return app, service


AppBuilder = Callable[[Settings], tuple[App, object]]
