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
"""

from __future__ import annotations

import json
import logging
import secrets
import sys
import time
import wave
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any, Final, TextIO

import attrs
import numpy as np
import trio
from trio_websocket import ConnectionClosed

from actors.scripted_llm import DialogueScript, normalise_words
from bench.emulators.caller_audio import encode, espeak_audio
from bench.emulators.telnyx_caller import CallerRecord, TelnyxCaller
from bench.emulators.ws_client import open_ws_client
from centralita import logs
from centralita.demo_view import DemoView
from centralita.settings import Engine, Secret, Settings, SettingsError
from protocols.audio import AudioFormat, Codec

__all__ = ["DemoOptions", "DemoResult", "DemoUnavailable", "Engines", "Turn", "demo_settings",
           "main", "run_demo"]

log = logging.getLogger(__name__)

LANGUAGES: Final = ("en", "es")
#: What the caller says, in order; the last line says goodbye. ``--turns N`` keeps the first
#: N - 1 and the goodbye. Each line matches one intent of the language's demo script.
CALLER_LINES: Final[Mapping[str, tuple[str, ...]]] = {
    "en": ("I want to check my balance", "what are your opening hours", "talk to an agent",
           "thank you goodbye"),
    "es": ("quiero saber mi saldo", "a qué hora abren", "quiero hablar con una persona",
           "no gracias adiós"),
}
CALLER_VOICES: Final[Mapping[str, str]] = {"en": "en-us", "es": "es"}
DEFAULT_OUT_ROOT: Final = Path("demo-out")

SAMPLE_RATE_HZ: Final = 8000
FRAME_S: Final = 0.02
CODEC: Final = Codec.PCMU
#: The caller writes a line this many frames ahead of the one being sent (40 ms of margin).
SPLICE_LEAD_FRAMES: Final = 2
#: Trim espeak's own leading/trailing silence so a line's end is the end of its last word.
SPEECH_FLOOR: Final = 200  # |sample| above this is sound (about -44 dBFS)
#: The caller's call lasts until we hang up; this only bounds a runaway.
MAX_CALL_S: Final = 600.0

CALL_START_TIMEOUT_S: Final = 10.0
GREETING_TIMEOUT_S: Final = 20.0  # the greeting's reply event comes once it has been played
FINAL_TIMEOUT_S: Final = 6.0  # after the end of the caller's line
REPLY_TIMEOUT_S: Final = 30.0  # after the final: generation and the whole playout
PLAYOUT_IDLE_TIMEOUT_S: Final = 3.0
CALL_ENDED_TIMEOUT_S: Final = 5.0
SERVER_STOP_TIMEOUT_S: Final = 20.0
SUBSCRIBER_READY_TIMEOUT_S: Final = 5.0


class DemoFailed(Exception):
    """A step of the call did not happen; the message says which and what was expected."""


class DemoUnavailable(Exception):
    """The demo cannot run with this configuration (e.g. Spanish without a Spanish recogniser)."""


@attrs.frozen
class DemoOptions:
    """What ``centralita demo`` was asked for.

    ``fast``: the caller answers sooner and speaks faster (the clock still runs at real time,
    so every latency shown is real); ``turns``: how many lines the caller says, goodbye last.
    """

    language: str | None = None  # None: what the engines speak (en locally, es with Deepgram)
    fast: bool = False
    turns: int = len(CALLER_LINES["en"])
    out_dir: Path | None = None

    @property
    def pause_s(self) -> float:
        """How long the caller waits after the bot's audio stops before it speaks."""
        return 0.25 if self.fast else 0.7

    @property
    def words_per_minute(self) -> int:
        return 200 if self.fast else 160


@attrs.frozen
class Engines:
    """What the service will run, as the composition root chooses it (mirrored here so the
    demo can refuse early; :func:`run_demo` checks the built service agrees)."""

    stt: Engine
    tts: Engine
    llm: Engine
    language: str = "en"
    anthropic_model: str = ""

    @property
    def script(self) -> str:
        return f"demo_{self.language}"

    def describe(self) -> list[str]:
        def where(engine: Engine, key: str) -> str:
            return f"(cloud: {key} is set)" if engine is Engine.CLOUD else "(local)"

        stt = "Deepgram live" if self.stt is Engine.CLOUD else "pocketsphinx"
        tts = "Deepgram Aura" if self.tts is Engine.CLOUD else "espeak-ng"
        llm = (f"Claude {self.anthropic_model}" if self.llm is Engine.CLOUD
               else f"scripted IVR {self.script}")
        return [f"STT  {stt} {where(self.stt, 'DEEPGRAM_API_KEY')}",
                f"TTS  {tts} {where(self.tts, 'DEEPGRAM_API_KEY')}",
                f"LLM  {llm} {where(self.llm, 'ANTHROPIC_API_KEY')}"]


@attrs.define
class Turn:
    """One line of the caller and what became of it. Times are call time in seconds."""

    index: int
    line: str
    expected: str  # the script intent the line asks for
    spoken_from_s: float = 0.0
    spoken_to_s: float = 0.0
    turn_id: str | None = None
    heard: str = ""
    reply: str | None = None
    interrupted: bool = False
    stages: dict[str, float] = attrs.field(factory=dict)
    understood: bool = False
    bot_audio_s: float = 0.0  # of the answer, as played to the caller
    heard_after_ms: float | None = None  # end of the line -> the bot's first sound, at the caller

    @property
    def first_audio_ms(self) -> float | None:
        if "end_of_speech" in self.stages and "first_frame_sent" in self.stages:
            return (self.stages["first_frame_sent"] - self.stages["end_of_speech"]) * 1000
        return None


@attrs.define
class DemoResult:
    engines: Engines
    turns: list[Turn]
    greeting: str | None = None
    events: list[dict[str, Any]] = attrs.field(factory=list)
    failure: str | None = None
    call_s: float = 0.0
    out_dir: Path | None = None
    wav_path: Path | None = None
    events_path: Path | None = None
    log_path: Path | None = None

    @property
    def ok(self) -> bool:
        return self.failure is None


# -- settings -----------------------------------------------------------------------------------

def demo_settings(env: Mapping[str, str], language: str | None = None
                  ) -> tuple[Settings, Engines]:
    """The service's settings for the demo: the environment's, on loopback, with fresh tokens.

    ``language`` None: the one the engines speak (the service is English on the local
    recogniser, Spanish on Deepgram).

    Raises:
        SettingsError: a bad environment value.
        DemoUnavailable: an engine that cannot run (cloud without its key), or a language the
            chosen engines do not speak.
    """
    if language is not None and language not in LANGUAGES:
        raise DemoUnavailable(f"no demo in {language!r} (there is {', '.join(LANGUAGES)})")
    base = Settings.from_env(env)
    deepgram, anthropic = base.deepgram_api_key is not None, base.anthropic_api_key is not None

    def chosen(asked: Engine | None, has_key: bool, name: str, key: str) -> Engine:
        engine = asked if asked is not None else (Engine.CLOUD if has_key else Engine.LOCAL)
        if engine is Engine.CLOUD and not has_key:
            raise DemoUnavailable(f"{name}=cloud needs {key}")
        return engine

    stt = chosen(base.stt_engine, deepgram, "STT_ENGINE", "DEEPGRAM_API_KEY")
    spoken = "en" if stt is Engine.LOCAL else "es"  # as centralita.composition decides
    if language == "es" and spoken == "en":
        raise DemoUnavailable(
            "--language es needs DEEPGRAM_API_KEY: the only local recogniser (pocketsphinx) "
            "knows English only; try --language en")
    if language == "en" and spoken == "es":
        raise DemoUnavailable(
            "with DEEPGRAM_API_KEY set the service speaks Spanish: use --language es (or leave "
            "it out), or STT_ENGINE=local TTS_ENGINE=local for the English demo")
    engines = Engines(stt=stt,
                      tts=chosen(base.tts_engine, deepgram, "TTS_ENGINE", "DEEPGRAM_API_KEY"),
                      llm=chosen(base.llm_engine, anthropic, "LLM_ENGINE", "ANTHROPIC_API_KEY"),
                      language=spoken, anthropic_model=base.anthropic_model)
    settings = attrs.evolve(
        base, host="127.0.0.1", port=0, telnyx_stream_token=Secret(secrets.token_urlsafe(24)),
        relay_token=Secret(secrets.token_urlsafe(24)), relay_url=None, redis_url=None,
        # The caller is simulated: no Telnyx call control, so nothing ever reaches Telnyx's API.
        telnyx_api_key=None, telnyx_connection_id=None,
        stt_engine=engines.stt, tts_engine=engines.tts, llm_engine=engines.llm)
    return settings, engines


# -- the caller's lines -------------------------------------------------------------------------

def plan_turns(options: DemoOptions, script: DialogueScript, language: str) -> list[Turn]:
    """The caller's lines for ``options.turns`` turns (goodbye last), each with its intent."""
    lines = CALLER_LINES[language]
    if not 1 <= options.turns <= len(lines):
        raise DemoUnavailable(f"--turns must be 1 to {len(lines)}, not {options.turns}")
    chosen = [*lines[: options.turns - 1], lines[-1]]
    turns = []
    for index, line in enumerate(chosen, start=1):
        intent = script.match(line)
        if intent is None:  # a line the script does not know would make the demo lie
            raise RuntimeError(f"the demo line {line!r} matches no intent of {script!r}")
        turns.append(Turn(index=index, line=line, expected=intent.name))
    return turns


def synthesise(lines: Sequence[str], voice: str, words_per_minute: int) -> list[np.ndarray]:
    """Each line spoken by espeak-ng at 8 kHz, its own leading and trailing silence trimmed."""
    spoken = []
    for line in lines:
        pcm = espeak_audio(line, voice, sample_rate=SAMPLE_RATE_HZ,
                           words_per_minute=words_per_minute)
        loud = np.flatnonzero(np.abs(pcm.astype(np.int32)) > SPEECH_FLOOR)
        spoken.append(pcm[loud[0]: loud[-1] + 1] if loud.size else pcm)
    return spoken


@attrs.define(eq=False)
class _Voice:
    """The caller's mouth: splices a line into the stream just ahead of the frame being sent."""

    caller: TelnyxCaller
    record: CallerRecord
    frame_bytes: int = AudioFormat(CODEC, SAMPLE_RATE_HZ).bytes_per_20ms

    def say(self, pcm: np.ndarray) -> tuple[float, float]:
        """Queue ``pcm`` to start 40 ms from now; returns its (start, end) in call time."""
        at = self.record.media_frames + SPLICE_LEAD_FRAMES
        sent = self.caller.audio[: at * self.frame_bytes]
        missing = at * self.frame_bytes - len(sent)  # silence since the last line ended
        self.caller.audio = sent + CODEC.silence_sample * (missing // len(CODEC.silence_sample)) \
            + encode(pcm, CODEC)
        start_s = at * FRAME_S
        return start_s, start_s + len(pcm) / SAMPLE_RATE_HZ


# -- the relay subscriber -------------------------------------------------------------------------

@attrs.define(eq=False)
class _Events:
    """Every relay event in arrival order, shown on the view as it comes; waitable."""

    view: DemoView
    clock: Callable[[], float]  # call time now
    events: list[dict[str, Any]] = attrs.field(factory=list)
    _changed: trio.Event = attrs.field(factory=trio.Event)

    def add(self, event: dict[str, Any]) -> None:
        self.events.append(event)
        self._show(event)
        self._changed.set()
        self._changed = trio.Event()

    def _show(self, event: Mapping[str, Any]) -> None:
        now, kind = self.clock(), event.get("type")
        if kind == "call":
            reason = f" ({event['reason']})" if event.get("reason") else ""
            self.view.note(now, f"call {event.get('state')}{reason}")
        elif kind == "partial":
            self.view.partial(now, str(event.get("text", "")))
        elif kind == "final":
            self.view.final(now, str(event.get("text", "")))
        elif kind == "latency":
            self.view.bot_speaking(now)
        elif kind == "reply":
            self.view.reply(now, str(event.get("text", "")), bool(event.get("interrupted")))
            turn_id = event.get("turnId")
            stages = next((e.get("stages") for e in reversed(self.events)
                           if e.get("type") == "latency" and e.get("turnId") == turn_id), None)
            if isinstance(stages, dict):
                self.view.waterfall(stages)

    def find(self, predicate: Callable[[dict[str, Any]], bool]) -> dict[str, Any] | None:
        return next((e for e in self.events if predicate(e)), None)

    async def wait_for(self, predicate: Callable[[dict[str, Any]], bool], timeout_s: float,
                       failure: str) -> dict[str, Any]:
        with trio.move_on_after(timeout_s):
            while (found := self.find(predicate)) is None:
                await self._changed.wait()
            return found
        raise DemoFailed(failure)


async def _subscribe(url: str, events: _Events, ready: Callable[[], bool], *,
                     task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    async with open_ws_client(url) as ws:
        with trio.fail_after(SUBSCRIBER_READY_TIMEOUT_S):
            while not ready():  # the hub has registered us: no event of the call is missed
                await trio.sleep(0.005)
        task_status.started()
        while True:
            try:
                events.add(json.loads(await ws.get_message()))
            except ConnectionClosed:
                return  # the service shut down


# -- the call -------------------------------------------------------------------------------------

def _of_type(kind: str, **fields: Any) -> Callable[[dict[str, Any]], bool]:
    return lambda e: e.get("type") == kind and all(e.get(k) == v for k, v in fields.items())


async def _playout_idle(record: CallerRecord) -> None:
    """Until the caller's playout queue has drained (bounded: a stuck playout is not fatal)."""
    with trio.move_on_after(PLAYOUT_IDLE_TIMEOUT_S):
        while record.segments and record.segments[-1].ended_at is None:
            await trio.sleep(FRAME_S)


async def _converse(voice: _Voice, record: CallerRecord, events: _Events, turns: list[Turn],
                    spoken: list[np.ndarray], options: DemoOptions, result: DemoResult) -> None:
    await events.wait_for(_of_type("call", state="started"), CALL_START_TIMEOUT_S,
                          "the service never started the call (no 'call started' event)")
    greeting = await events.wait_for(
        _of_type("reply", turnId="greeting"), GREETING_TIMEOUT_S,
        f"the bot did not finish a greeting within {GREETING_TIMEOUT_S:.0f} s")
    result.greeting = str(greeting.get("text", ""))
    await _playout_idle(record)
    used: set[str] = set()
    for turn, pcm in zip(turns, spoken, strict=True):
        await trio.sleep(options.pause_s)
        turn.spoken_from_s, turn.spoken_to_s = voice.say(pcm)
        left_s = turn.spoken_to_s - (trio.current_time() - (record.started_at or 0.0))
        final = await events.wait_for(
            lambda e: e.get("type") == "final" and e.get("turnId") not in used,
            left_s + FINAL_TIMEOUT_S,
            f"turn {turn.index} ({turn.line!r}): no final transcript within "
            f"{FINAL_TIMEOUT_S:.0f} s of the end of the caller's words")
        turn.turn_id = str(final.get("turnId"))
        used.add(turn.turn_id)
        reply = await events.wait_for(
            _of_type("reply", turnId=turn.turn_id), REPLY_TIMEOUT_S,
            f"turn {turn.index} ({turn.line!r}): the bot did not answer (no reply within "
            f"{REPLY_TIMEOUT_S:.0f} s)")
        turn.reply, turn.interrupted = str(reply.get("text", "")), bool(reply.get("interrupted"))
        await _playout_idle(record)
    await trio.sleep(options.pause_s)


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
    events = _Events(view=view, clock=lambda: trio.current_time() - (
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
                             f"demo caller {engines.language!r} ({engines.script}): "
                             "centralita.demo.demo_settings no longer mirrors the composition")
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
                    _subscribe, f"{ws_url}/ws?callId=*&token={relay_token}", events,
                    lambda: service.relay.hub.statistics().subscribers >= 1))
                async with trio.open_nursery() as call_nursery:
                    record = await call_nursery.start(caller.run)
                    try:
                        await _converse(_Voice(caller, record), record, events, turns, spoken,
                                        options, result)
                    finally:
                        call_nursery.cancel_scope.cancel()  # the caller hangs up
                await events.wait_for(_of_type("call", state="ended"), CALL_ENDED_TIMEOUT_S,
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
    _judge(result, record, script, engines)
    _save(result, options, caller, record)
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


# -- after the call -------------------------------------------------------------------------------

def _bot_segments(record: CallerRecord) -> list[tuple[float, np.ndarray]]:
    """What the caller played, as (call time, samples) per playout segment."""
    assert record.started_at is not None
    out, offset = [], 0
    played = bytes(record.played)
    for segment in record.segments:
        chunk = played[offset: offset + segment.bytes_played]
        offset += segment.bytes_played
        out.append((segment.started_at - record.started_at, CODEC.decode(chunk)))
    return out


def _judge(result: DemoResult, record: CallerRecord | None, script: DialogueScript,
           engines: Engines) -> None:
    """Fill in each turn's outcome; set ``failure`` for the first thing that went wrong."""
    by_name = {intent.name: intent for intent in script.intents}
    segments = _bot_segments(record) if record is not None and record.started_at else []
    problems: list[str] = []
    for i, turn in enumerate(result.turns):
        if turn.turn_id is None:
            continue
        finals = [e for e in result.events
                  if e.get("type") == "final" and e.get("turnId") == turn.turn_id]
        turn.heard = " ".join(str(e.get("text", "")) for e in finals).strip()
        latency = next((e for e in result.events
                        if e.get("type") == "latency" and e.get("turnId") == turn.turn_id), None)
        if latency is not None and isinstance(latency.get("stages"), dict):
            turn.stages = {k: float(v) for k, v in latency["stages"].items()}
        heard_intent = script.match(turn.heard)
        if engines.llm is Engine.LOCAL:  # the scripted IVR: the reply names the intent it matched
            turn.understood = turn.reply is not None and normalise_words(turn.reply) == \
                normalise_words(by_name[turn.expected].reply)
        else:
            turn.understood = heard_intent is not None and heard_intent.name == turn.expected
        until = (result.turns[i + 1].spoken_from_s if i + 1 < len(result.turns)
                 and result.turns[i + 1].spoken_from_s else float("inf"))
        answer = [(at, pcm) for at, pcm in segments if turn.spoken_to_s <= at < until]
        turn.bot_audio_s = sum(len(pcm) for _, pcm in answer) / SAMPLE_RATE_HZ
        if answer:
            turn.heard_after_ms = (answer[0][0] - turn.spoken_to_s) * 1000
        if turn.reply is not None:
            if turn.interrupted:
                problems.append(f"turn {turn.index}: the bot's answer was interrupted")
            elif not turn.bot_audio_s:
                problems.append(f"turn {turn.index}: the answer's audio never reached the caller")
            elif not turn.understood:
                problems.append(f"turn {turn.index} was not understood: the caller said "
                                f"{turn.line!r}, the service heard {turn.heard!r} and answered "
                                f"{turn.reply!r} (expected the {turn.expected!r} intent)")
    if result.failure is None and record is not None and not record.played:
        problems.insert(0, "the bot never spoke: no audio reached the caller")
    if result.failure is None and problems:
        result.failure = problems[0]


def _save(result: DemoResult, options: DemoOptions, caller: TelnyxCaller,
          record: CallerRecord | None) -> None:
    out = options.out_dir or DEFAULT_OUT_ROOT / time.strftime("%Y%m%d-%H%M%S")
    out.mkdir(parents=True, exist_ok=True)
    result.out_dir = out
    result.events_path = out / "events.json"
    result.events_path.write_text(json.dumps(result.events, indent=1, ensure_ascii=False) + "\n",
                                  encoding="utf-8")
    log_path = out / "service.log"
    result.log_path = log_path if log_path.exists() else None
    if record is None or record.started_at is None:
        return
    caller_bytes = caller.audio[: record.media_frames * AudioFormat(CODEC, SAMPLE_RATE_HZ)
                                .bytes_per_20ms]
    left = CODEC.decode(caller_bytes) if caller_bytes else np.zeros(0, np.int16)
    bot = _bot_segments(record)
    length = max([len(left), record.media_frames * round(FRAME_S * SAMPLE_RATE_HZ)]
                 + [round(at * SAMPLE_RATE_HZ) + len(pcm) for at, pcm in bot])
    stereo = np.zeros((length, 2), dtype=np.int16)
    stereo[: len(left), 0] = left
    for at, pcm in bot:
        start = max(0, round(at * SAMPLE_RATE_HZ))
        stereo[start: start + len(pcm), 1] = pcm[: length - start]
    result.wav_path = out / "call.wav"
    with wave.open(str(result.wav_path), "wb") as wav:
        wav.setnchannels(2)
        wav.setsampwidth(2)
        wav.setframerate(SAMPLE_RATE_HZ)
        wav.writeframes(stereo.astype("<i2").tobytes())


# -- the command ----------------------------------------------------------------------------------

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
