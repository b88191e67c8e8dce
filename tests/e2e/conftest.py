"""The whole service on loopback: real hypercorn server, Deepgram emulator, Telnyx callers, relay
subscribers. Nothing of ours is patched; the cloud is replaced by the emulators in bench/."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import attrs
import pytest
import trio
from trio_websocket import ConnectionClosed

from bench.emulators.caller_audio import encode, script_audio, script_spans
from bench.emulators.anthropic_messages import AnthropicEmulator
from bench.emulators.deepgram_listen import DeepgramListenEmulator
from bench.emulators.deepgram_speak import DeepgramSpeakEmulator
from bench.emulators.telnyx_caller import CallerRecord, TelnyxCaller
from centralita.app import App
from centralita.server import Service, build_service_app, serve_until
from centralita.settings import Engine, Secret, Settings
from protocols.deepgram_listen import ListenOptions
from tests.wsclient import open_ws

STATIC_TOKEN = "static-stream-token"
SPEED = 4.0  # callers stream 4x real time: the pipeline does not care, the suite stays fast


@attrs.define(eq=False)
class Stack:
    app: App
    service: Service
    deepgram: DeepgramListenEmulator
    base_url: str
    stop: trio.Event
    scripts: dict[str, Sequence[str]]
    nursery: trio.Nursery
    anthropic: AnthropicEmulator | None = None
    speak: DeepgramSpeakEmulator | None = None

    @property
    def media_url(self) -> str:
        return self.base_url.replace("http://", "ws://") + "/stream/media"

    def issue_call(self, call_id: str, script: Sequence[str]) -> str:
        """What call control does before dialling: a per-call stream token (and here the
        emulator's script for that call's Deepgram connection)."""
        token = f"token-for-{call_id}"
        self.service.media.tokens.issued[token] = call_id
        self.scripts[call_id] = script
        return token

    def caller(self, token: str | None, durations: Sequence[float], gaps: float | Sequence[float] = 1.0,
               speed: float = SPEED, lead_in_s: float = 0.5, **kwargs: Any) -> TelnyxCaller:
        pcm = script_audio(durations, gaps, lead_in_s=lead_in_s)
        return TelnyxCaller(self.media_url, token=token, audio=encode(pcm), speed=speed,
                            **kwargs)


def spans(durations: Sequence[float], gaps: float = 1.0) -> list[tuple[float, float]]:
    return script_spans(durations, gaps, lead_in_s=0.5)


@attrs.define(eq=False)
class Subscriber:
    events: list[dict[str, Any]] = attrs.field(factory=list)
    ended: dict[str, trio.Event] = attrs.field(factory=dict)

    def for_call(self, call_id: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e.get("callId") == call_id]

    async def wait_ended(self, call_id: str, timeout: float = 15.0) -> list[dict[str, Any]]:
        with trio.fail_after(timeout):
            await self.ended.setdefault(call_id, trio.Event()).wait()
        return self.for_call(call_id)


async def subscribe_all(stack: Stack, *, task_status: trio.TaskStatus[Subscriber]) -> None:
    """A firehose subscriber (``callId=*``) recording every event until cancelled."""
    sub = Subscriber()
    url = stack.base_url.replace("http://", "ws://") + "/ws?callId=*"
    async with open_ws(url) as ws:
        with trio.fail_after(5):
            while stack.service.relay.hub.statistics().subscribers < 1:
                await trio.sleep(0.005)
        task_status.started(sub)
        while True:
            try:
                event = json.loads(await ws.get_message())
            except ConnectionClosed:
                return  # the service shut down (1001)
            sub.events.append(event)
            if event.get("type") == "call" and event.get("state") == "ended":
                sub.ended.setdefault(event["callId"], trio.Event()).set()


@asynccontextmanager
async def open_stack(*, bot: bool = False, anthropic: AnthropicEmulator | None = None,
                     speak: DeepgramSpeakEmulator | None = None,
                     **overrides: Any) -> AsyncIterator[Stack]:
    """The service and its emulators. ``bot``: Claude and Aura too (the speaking half)."""
    scripts: dict[str, Sequence[str]] = {}

    def script_for(options: ListenOptions) -> Sequence[str]:
        return scripts.get(options.extra.get("tag", ""), ())

    async with trio.open_nursery() as nursery:
        deepgram = DeepgramListenEmulator(api_key="test-key", script_for=script_for)
        listen_url = await nursery.start(deepgram.serve)
        # Without the cloud bot, calls run the keyless brain and voice (scripted + espeak-ng).
        extra: dict[str, Any] = {"tts_engine": Engine.LOCAL, "llm_engine": Engine.LOCAL}
        if bot:
            anthropic = anthropic or AnthropicEmulator(api_key="test-key")
            speak = speak or DeepgramSpeakEmulator(api_key="test-key")
            extra = {"tts_engine": None, "llm_engine": None,
                     "anthropic_api_key": Secret("test-key"),
                     "anthropic_base_url": await nursery.start(anthropic.serve),
                     "deepgram_speak_url": await nursery.start(speak.serve)}
        settings = Settings(host="127.0.0.1", port=0, deepgram_api_key=Secret("test-key"),
                            deepgram_listen_url=listen_url,
                            telnyx_stream_token=Secret(STATIC_TOKEN), **{**extra, **overrides})
        app, service = build_service_app(settings)
        stop = trio.Event()
        server_done = trio.Event()

        async def serve(*, task_status: trio.TaskStatus[list[str]]) -> None:
            try:
                await serve_until(app, settings, stop, task_status=task_status)
            finally:
                server_done.set()

        binds = await nursery.start(serve)
        yield Stack(app=app, service=service, deepgram=deepgram, base_url=binds[0], stop=stop,
                    scripts=scripts, nursery=nursery, anthropic=anthropic if bot else None,
                    speak=speak if bot else None)
        stop.set()
        with trio.fail_after(20):
            await server_done.wait()
        nursery.cancel_scope.cancel()  # the emulators and any subscriber still running


@pytest.fixture
async def stack() -> AsyncIterator[Stack]:
    async with open_stack() as s:
        yield s


async def run_caller(caller: TelnyxCaller) -> CallerRecord:
    with trio.fail_after(30):
        return await caller.run()
