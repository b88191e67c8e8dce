"""What ``centralita demo`` is asked for and what it runs on: options, engines, the service's settings.

The demo mirrors the composition root's choice of engines (:func:`demo_settings`) so it can refuse
early, with a reason, what cannot run; :func:`centralita.demo.run_demo` checks the built service
agrees. The call's audio format and the caller's lines per language live here too.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Final

import attrs

from centralita.settings import Engine, Secret, Settings
from protocols.audio import Codec

__all__ = ["CALLER_LINES", "CALLER_VOICES", "CODEC", "DEFAULT_OUT_ROOT", "FRAME_S", "LANGUAGES",
           "SAMPLE_RATE_HZ", "DemoOptions", "DemoUnavailable", "Engines", "demo_settings"]

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

