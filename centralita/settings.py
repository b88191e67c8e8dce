"""One typed settings object, built once from the environment at start-up and passed down.

Nothing below ``centralita`` reads ``os.environ``: actors and routes get the values they need from
here. Secrets are held as :class:`Secret` so that a settings object can be logged or repr'd safely.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Mapping
from typing import Final

import attrs

log = logging.getLogger(__name__)

DEFAULT_PORT: Final = 8000
DEFAULT_RELAY_PORT: Final = 7070
DEFAULT_BACKLOG_TTL_S: Final = 3600.0
# Webhook mode (USE_MEDIA_STREAMS=false). The seed speaks Spanish and sends its webhook-mode
# audio through Deepgram; the Telnyx-side voice is Polly's Latin-American Spanish neural voice.
DEFAULT_SPEAK_VOICE: Final = "AWS.Polly.Lupe-Neural"
DEFAULT_SPEAK_LANGUAGE: Final = "es-US"
DEFAULT_TRANSCRIPTION_ENGINE: Final = "Deepgram"
DEFAULT_TRANSCRIPTION_MODEL: Final = "deepgram/nova-3"
DEFAULT_TRANSCRIPTION_LANGUAGE: Final = "es"
DEFAULT_S3_PREFIX: Final = "centralita/replies/"
DEFAULT_S3_PRESIGN_EXPIRY_S: Final = 900  # a reply is fetched within seconds; SigV4 allows 7 days
S3_PRESIGN_MAX_EXPIRY_S: Final = 7 * 24 * 3600


class SettingsError(ValueError):
    """An environment variable has a value we cannot use; the message names it."""


@attrs.frozen(repr=False)
class Secret:
    """A credential: compares and hashes like its value, never prints it."""

    value: str

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __bool__(self) -> bool:
        return bool(self.value)


class Engine(enum.Enum):
    CLOUD = "cloud"
    LOCAL = "local"


def _bool(name: str, raw: str | None, default: bool) -> bool:
    if raw is None or raw.strip() == "":
        return default
    value = raw.strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off"}:
        return False
    raise SettingsError(f"{name}={raw!r}: expected true or false")


def _int(name: str, raw: str | None, default: int) -> int:
    if raw is None or raw.strip() == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r}: expected a whole number") from None


def _float(name: str, raw: str | None, default: float) -> float:
    if raw is None or raw.strip() == "":
        return default
    try:
        return float(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r}: expected a number") from None


def _whole_frames_ms(name: str, raw: str | None, default: int) -> int:
    """Milliseconds of audio in whole 20 ms frames, 20 ms to 1 s (Telnyx takes 20 ms to 30 s)."""
    value = _int(name, raw, default)
    if value % 20 or not 20 <= value <= 1000:
        raise SettingsError(f"{name}={raw!r}: expected a multiple of 20 from 20 to 1000")
    return value


CALL_MODES: Final = ("bot", "listen")


def _call_mode(raw: str | None) -> str:
    mode = (raw or "bot").strip().lower()
    if mode not in CALL_MODES:
        raise SettingsError(f"CALL_MODE={raw!r}: expected one of {', '.join(CALL_MODES)}"
                            " (coach mode is a later issue)")
    return mode


def _transcription_model(raw: str | None) -> str | None:
    # Unset: the default model; "none" (or "-"): let Telnyx pick the engine's default.
    if raw is None or raw.strip() == "":
        return DEFAULT_TRANSCRIPTION_MODEL
    return None if raw.strip().lower() in {"none", "-"} else raw.strip()


def _s3_prefix(raw: str | None) -> str:
    if raw is None:
        return DEFAULT_S3_PREFIX
    prefix = raw.strip().lstrip("/")
    return prefix if not prefix or prefix.endswith("/") else prefix + "/"


def _presign_expiry(raw: str | None) -> int:
    value = _int("S3_PRESIGN_EXPIRY", raw, DEFAULT_S3_PRESIGN_EXPIRY_S)
    if not 1 <= value <= S3_PRESIGN_MAX_EXPIRY_S:
        raise SettingsError(f"S3_PRESIGN_EXPIRY={raw!r}: expected 1 to {S3_PRESIGN_MAX_EXPIRY_S} "
                            "seconds (SigV4 presigned URLs live at most 7 days)")
    return value


def _secret(raw: str | None) -> Secret | None:
    return Secret(raw) if raw else None


def _str(raw: str | None) -> str | None:
    return raw if raw else None


@attrs.frozen
class Settings:
    """Every knob of the service (see DESIGN.md's settings table and the README)."""

    port: int = DEFAULT_PORT
    host: str = "0.0.0.0"
    # Telnyx
    telnyx_api_key: Secret | None = None
    telnyx_api_base: str = "https://api.telnyx.com/v2"
    telnyx_connection_id: str | None = None
    telnyx_from_number: str | None = None
    telnyx_public_key: str | None = None
    telnyx_stream_token: Secret | None = None
    webhook_base_url: str | None = None
    use_media_streams: bool = True
    inbound_calls: bool = True
    # Deepgram
    deepgram_api_key: Secret | None = None
    deepgram_listen_url: str = "wss://api.deepgram.com/v1/listen"
    deepgram_speak_url: str = "wss://api.deepgram.com/v1/speak"
    # Anthropic
    anthropic_api_key: Secret | None = None
    anthropic_base_url: str | None = None
    anthropic_model: str = "claude-haiku-4-5"
    # Engine choice (None = cloud if its key is set, else local)
    stt_engine: Engine | None = None
    tts_engine: Engine | None = None
    llm_engine: Engine | None = None
    # Webhook mode (USE_MEDIA_STREAMS=false): Telnyx transcribes; replies by speak or S3 playback
    telnyx_speak_voice: str = DEFAULT_SPEAK_VOICE
    telnyx_speak_language: str = DEFAULT_SPEAK_LANGUAGE
    telnyx_transcription_engine: str = DEFAULT_TRANSCRIPTION_ENGINE
    telnyx_transcription_model: str | None = DEFAULT_TRANSCRIPTION_MODEL
    telnyx_transcription_language: str = DEFAULT_TRANSCRIPTION_LANGUAGE
    # S3 (webhook-mode playback; credentials come from the standard AWS variables via boto3)
    aws_endpoint_url: str | None = None
    aws_region: str | None = None
    s3_bucket: str | None = None
    s3_prefix: str = DEFAULT_S3_PREFIX
    s3_presign_expiry_s: int = DEFAULT_S3_PRESIGN_EXPIRY_S
    # Relay
    relay_url: str | None = None
    relay_token: Secret | None = None
    relay_backlog_ttl_s: float = DEFAULT_BACKLOG_TTL_S
    redis_url: str | None = None
    call_mode: str = "bot"  # bot: the bot answers; listen: transcripts to the relay only
    deepgram_batch_frames: int = 1  # 20 ms frames per Deepgram message (2 = 40 ms: -22 % CPU)
    speaker_message_ms: int = 100  # audio per outbound Telnyx media message (20 ms frames)
    preemptive_generation: bool = True  # the Brain asks the LLM on a stable interim transcript

    @classmethod
    def from_env(cls, env: Mapping[str, str], *, default_port: int = DEFAULT_PORT) -> Settings:
        """Build settings from an environment mapping; raises :class:`SettingsError` on bad values."""

        def engine(name: str) -> Engine | None:
            raw = env.get(name, "").strip().lower()
            if not raw:
                return None
            aliases = {"local": Engine.LOCAL, "deepgram": Engine.CLOUD, "anthropic": Engine.CLOUD,
                       "cloud": Engine.CLOUD}
            if raw not in aliases:
                raise SettingsError(f"{name}={raw!r}: expected one of {sorted(aliases)}")
            return aliases[raw]

        return cls(
            port=_int("PORT", env.get("PORT"), default_port),
            host=env.get("HOST", "0.0.0.0") or "0.0.0.0",
            telnyx_api_key=_secret(env.get("TELNYX_API_KEY")),
            telnyx_api_base=env.get("TELNYX_API_BASE") or "https://api.telnyx.com/v2",
            telnyx_connection_id=_str(env.get("TELNYX_CONNECTION_ID")),
            telnyx_from_number=_str(env.get("TELNYX_FROM_NUMBER")),
            telnyx_public_key=_str(env.get("TELNYX_PUBLIC_KEY")),
            telnyx_stream_token=_secret(env.get("TELNYX_STREAM_TOKEN")),
            webhook_base_url=_str(env.get("WEBHOOK_BASE_URL")),
            use_media_streams=_bool("USE_MEDIA_STREAMS", env.get("USE_MEDIA_STREAMS"), True),
            inbound_calls=_bool("INBOUND_CALLS", env.get("INBOUND_CALLS"), True),
            deepgram_api_key=_secret(env.get("DEEPGRAM_API_KEY")),
            deepgram_listen_url=env.get("DEEPGRAM_LISTEN_URL") or "wss://api.deepgram.com/v1/listen",
            deepgram_speak_url=env.get("DEEPGRAM_SPEAK_URL") or "wss://api.deepgram.com/v1/speak",
            anthropic_api_key=_secret(env.get("ANTHROPIC_API_KEY")),
            anthropic_base_url=_str(env.get("ANTHROPIC_BASE_URL")),
            anthropic_model=env.get("ANTHROPIC_MODEL") or "claude-haiku-4-5",
            stt_engine=engine("STT_ENGINE"),
            tts_engine=engine("TTS_ENGINE"),
            llm_engine=engine("LLM_ENGINE"),
            telnyx_speak_voice=env.get("TELNYX_SPEAK_VOICE") or DEFAULT_SPEAK_VOICE,
            telnyx_speak_language=env.get("TELNYX_SPEAK_LANGUAGE") or DEFAULT_SPEAK_LANGUAGE,
            telnyx_transcription_engine=(env.get("TELNYX_TRANSCRIPTION_ENGINE")
                                         or DEFAULT_TRANSCRIPTION_ENGINE),
            telnyx_transcription_model=_transcription_model(env.get("TELNYX_TRANSCRIPTION_MODEL")),
            telnyx_transcription_language=(env.get("TELNYX_TRANSCRIPTION_LANGUAGE")
                                           or DEFAULT_TRANSCRIPTION_LANGUAGE),
            aws_endpoint_url=_str(env.get("AWS_ENDPOINT_URL")),
            aws_region=_str(env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION")),
            s3_bucket=_str(env.get("S3_BUCKET")),
            s3_prefix=_s3_prefix(env.get("S3_PREFIX")),
            s3_presign_expiry_s=_presign_expiry(env.get("S3_PRESIGN_EXPIRY")),
            relay_url=_str(env.get("RELAY_URL")),
            relay_token=_secret(env.get("RELAY_TOKEN")),
            relay_backlog_ttl_s=_float("RELAY_BACKLOG_TTL", env.get("RELAY_BACKLOG_TTL"),
                                       DEFAULT_BACKLOG_TTL_S),
            redis_url=_str(env.get("REDIS_URL")),
            call_mode=_call_mode(env.get("CALL_MODE")),
            deepgram_batch_frames=_int("DEEPGRAM_BATCH_FRAMES", env.get("DEEPGRAM_BATCH_FRAMES"), 1),
            speaker_message_ms=_whole_frames_ms("SPEAKER_MESSAGE_MS", env.get("SPEAKER_MESSAGE_MS"), 100),
            preemptive_generation=_bool("PREEMPTIVE_GENERATION", env.get("PREEMPTIVE_GENERATION"), True),
        )
