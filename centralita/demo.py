"""``centralita demo``: one whole phone call on this machine, with no keys (issue #8).

The real service runs in-process (:func:`~centralita.server.serve_until` on 127.0.0.1, a free
port, a stream token made up for the occasion). A simulated caller dials its ``/stream/media``
exactly as Telnyx does (:class:`~bench.emulators.telnyx_caller.TelnyxCaller`: the token header,
``connected``, ``start``, 20 ms G.711 frames in real time, playout of what comes back with mark
echoes). The caller's words are real speech synthesised with espeak-ng for the occasion, lines
that walk the demo script's intents (``actors/scripts/demo_<language>.toml``), and it talks like
a person: it waits for the greeting, says one line, waits until the bot's answer has finished
playing, pauses, says the next. A firehose relay subscriber (``WS /ws?callId=*``) sees what a
dashboard would see, and that is what the terminal shows (:mod:`centralita.demo_view`).

Engines: local (pocketsphinx, espeak-ng, the scripted IVR) unless keys are in the environment;
``DEEPGRAM_API_KEY`` brings Deepgram's STT and Aura, ``ANTHROPIC_API_KEY`` brings Claude, and the
header says which ran. ``STT_ENGINE``/``TTS_ENGINE``/``LLM_ENGINE`` are honoured as by ``serve``.
Telnyx keys are ignored: the caller is simulated, so call control stays off.

The caller's line is spliced into its stream as it goes: TelnyxCaller reads ``audio`` frame by
frame, so the demo writes each line just ahead of the frame being sent (``SPLICE_LEAD_FRAMES``)
and the call's timeline follows the bot instead of a script of fixed gaps. The caller hangs up
(closes its socket) once the last answer was heard.

Every run is checked, never a silent success: the call must start, each line must come back as a
final transcript, be answered with a reply that was played to the caller without interruption,
and (the script being known) be *understood* (its intent's reply, or with Claude its intent's
words heard). Anything else, or any exception, ends the demo with exit status 1 and a reason.
Saved under ``--out``: ``call.wav`` (left the caller, right the bot, aligned in call time),
``events.json`` (every relay event), ``service.log`` (the service's JSON log lines).

This module is the command and the wiring. Its parts: :mod:`centralita.demo_config` (options,
engines, settings), :mod:`centralita.demo_caller` (the caller's lines, voice and conversation),
:mod:`centralita.demo_events` (the relay subscriber), :mod:`centralita.demo_result` (the verdict
and the saved files), :mod:`centralita.demo_view` (the terminal).
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Mapping
from functools import partial
from pathlib import Path
from typing import Final, TextIO

import attrs
import trio

from actors.scripted_llm import DialogueScript
from bench.emulators.telnyx_caller import CallerRecord, TelnyxCaller
from centralita import logs
from centralita.demo_caller import (  # the timeouts and helpers re-exported: they lived here
    CALL_START_TIMEOUT_S, FINAL_TIMEOUT_S, GREETING_TIMEOUT_S, MAX_CALL_S, PLAYOUT_IDLE_TIMEOUT_S,
    REPLY_TIMEOUT_S, SPEECH_FLOOR, SPLICE_LEAD_FRAMES, CallerVoice, converse, plan_turns,
    synthesise,
)
from centralita.demo_config import (CALLER_LINES, CALLER_VOICES, CODEC, DEFAULT_OUT_ROOT, FRAME_S,
                                    LANGUAGES, SAMPLE_RATE_HZ, DemoOptions, DemoUnavailable,
                                    Engines, demo_settings)
from centralita.demo_events import SUBSCRIBER_READY_TIMEOUT_S, RelayEvents, of_type, subscribe
from centralita.demo_result import DemoFailed, DemoResult, Turn, judge, save
from centralita.demo_view import DemoView
from centralita.settings import Engine, Settings, SettingsError

__all__ = ["DemoOptions", "DemoResult", "DemoUnavailable", "Engines", "Turn", "demo_settings",
           "main", "run_demo"]

log = logging.getLogger(__name__)

CALL_ENDED_TIMEOUT_S: Final = 5.0
SERVER_STOP_TIMEOUT_S: Final = 20.0


async def run_demo(options: DemoOptions, settings: Settings, engines: Engines,
                   view: DemoView) -> DemoResult:
    """Place the demo call; returns what happened (``failure`` set if anything went wrong).

    Writes ``call.wav``, ``events.json`` (and the view) whether it succeeded or not.
    """
    from centralita.server import build_service_app, serve_until  # the service, as `serve` runs it

    script = DialogueScript.builtin(engines.script)
    turns = plan_turns(options, script, engines.language)
    result = DemoResult(engines=engines, turns=turns)
    voice_name = CALLER_VOICES[engines.language]
    view.header(engines.language, engines.describe(), _notes(engines))
    token = settings.telnyx_stream_token.value if settings.telnyx_stream_token else None
    relay_token = settings.relay_token.value if settings.relay_token else ""
    caller = TelnyxCaller("", token=token, codec=CODEC, hangup_after_s=MAX_CALL_S,
                          from_="+15550100001", to="+15550100002")
    record: CallerRecord | None = None
    events = RelayEvents(view=view, clock=lambda: trio.current_time() - (
        record.started_at if record is not None and record.started_at is not None
        else trio.current_time()))
    result.events = events.events
    try:
        spoken = await trio.to_thread.run_sync(partial(
            synthesise, [t.line for t in turns], voice_name, options.words_per_minute))
        app, service = build_service_app(settings)
        if service.language != engines.language or (
                service.scripted is not None and service.scripted.script != script):
            raise DemoFailed(f"the service speaks {service.language!r} (script "
                             f"{service.scripted.script if service.scripted else None!r}), the "
                             f"demo caller {engines.language!r} ({engines.script}): centralita."
                             "demo_config.demo_settings no longer mirrors the composition")
        async with trio.open_nursery() as nursery:
            stop, server_done = trio.Event(), trio.Event()

            async def serve(*, task_status: trio.TaskStatus[list[str]]) -> None:
                try:
                    await serve_until(app, settings, stop, task_status=task_status)
                finally:
                    server_done.set()

            base_url = (await nursery.start(serve))[0]
            ws_url = base_url.replace("http://", "ws://")
            caller.url = f"{ws_url}/stream/media"
            try:
                view.serving(base_url, f"a Telnyx media stream to {caller.url}, espeak-ng voice "
                             f"{voice_name}, {'fast' if options.fast else 'real-time'} turns")
                await nursery.start(partial(
                    subscribe, f"{ws_url}/ws?callId=*&token={relay_token}", events,
                    lambda: service.relay.hub.statistics().subscribers >= 1))
                async with trio.open_nursery() as call_nursery:
                    record = await call_nursery.start(caller.run)
                    try:
                        await converse(CallerVoice(caller, record), record, events, turns,
                                       spoken, options, result)
                    finally:
                        call_nursery.cancel_scope.cancel()  # the caller hangs up
                await events.wait_for(of_type("call", state="ended"), CALL_ENDED_TIMEOUT_S,
                                      "the service did not end the call after the caller hung up")
            finally:
                stop.set()
                with trio.move_on_after(SERVER_STOP_TIMEOUT_S) as stopping:
                    await server_done.wait()
                nursery.cancel_scope.cancel()  # the subscriber
                if stopping.cancelled_caught:
                    raise DemoFailed(
                        f"the service did not stop within {SERVER_STOP_TIMEOUT_S:.0f} s")
    except Exception as exc:  # noqa: BLE001 - every failure becomes the demo's reason
        result.failure = _reason(exc)
        log.error("demo failed", exc_info=exc)
    if record is not None and record.started_at is not None:
        result.call_s = (record.ended_at or trio.current_time()) - record.started_at
    judge(result, record, script, engines)
    save(result, options, caller, record)
    view.summary(result)
    return result


def _notes(engines: Engines) -> list[str]:
    if Engine.CLOUD not in (engines.stt, engines.tts, engines.llm):
        return ["no DEEPGRAM_API_KEY or ANTHROPIC_API_KEY in the environment: everything runs here"]
    return ["keys found in the environment: those engines are the real cloud services"]


def _reason(exc: BaseException) -> str:
    """The first leaf of an exception group, preferring a DemoFailed, as one line."""
    leaves: list[BaseException] = []

    def walk(e: BaseException) -> None:
        if isinstance(e, BaseExceptionGroup):
            for inner in e.exceptions:
                walk(inner)
        else:
            leaves.append(e)

    walk(exc)
    chosen = next((e for e in leaves if isinstance(e, DemoFailed)), leaves[0] if leaves else exc)
    if isinstance(chosen, DemoFailed):
        return str(chosen)
    return f"{type(chosen).__name__}: {chosen}" if str(chosen) else type(chosen).__name__


def _log_to(path: Path) -> None:
    """The service's JSON log lines go to a file: the terminal is for the call."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logs.JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    logging.getLogger("hypercorn.access").setLevel(logging.WARNING)


def main(options: DemoOptions, env: Mapping[str, str], out: TextIO = sys.stdout) -> int:
    """``centralita demo``: 0 when the call went as it should, 1 when not, 2 when it cannot run."""
    try:
        settings, engines = demo_settings(env, options.language)
        plan_turns(options, DialogueScript.builtin(engines.script), engines.language)
    except (SettingsError, DemoUnavailable) as exc:
        print(f"centralita demo: {exc}", file=sys.stderr)
        return 2
    if options.out_dir is None:
        options = attrs.evolve(options, out_dir=DEFAULT_OUT_ROOT / time.strftime("%Y%m%d-%H%M%S"))
    assert options.out_dir is not None
    _log_to(options.out_dir / "service.log")
    view = DemoView.for_stream(out, env)
    started = time.monotonic()
    try:
        result = trio.run(run_demo, options, settings, engines, view)
    except KeyboardInterrupt:
        print("\ncentralita demo: interrupted", file=sys.stderr)
        return 130
    out.write(f"  (the demo took {time.monotonic() - started:.1f} s in all)\n")
    return 0 if result.ok else 1
