from __future__ import annotations

import pytest

from centralita.settings import Engine, Secret, Settings, SettingsError


def test_defaults_follow_the_design_table() -> None:
    s = Settings.from_env({})
    assert s.port == 8000
    assert s.use_media_streams is True and s.inbound_calls is True
    assert s.relay_backlog_ttl_s == 3600.0
    assert s.deepgram_listen_url == "wss://api.deepgram.com/v1/listen"
    assert s.stt_engine is None and s.relay_token is None


def test_relay_default_port_is_passed_in() -> None:
    assert Settings.from_env({}, default_port=7070).port == 7070
    assert Settings.from_env({"PORT": "9000"}, default_port=7070).port == 9000


def test_secrets_never_print() -> None:
    s = Settings.from_env({"DEEPGRAM_API_KEY": "dg-very-secret", "RELAY_TOKEN": "tok"})
    assert s.deepgram_api_key == Secret("dg-very-secret")
    assert "dg-very-secret" not in repr(s) and "tok'" not in repr(s)


@pytest.mark.parametrize(
    ("env", "needle"),
    [({"PORT": "eighty"}, "PORT"), ({"USE_MEDIA_STREAMS": "maybe"}, "USE_MEDIA_STREAMS"),
     ({"STT_ENGINE": "whisper"}, "STT_ENGINE"), ({"RELAY_BACKLOG_TTL": "1h"}, "RELAY_BACKLOG_TTL"),
     ({"CALL_MODE": "coach"}, "CALL_MODE"), ({"DEEPGRAM_BATCH_FRAMES": "two"}, "DEEPGRAM_BATCH_FRAMES")],
)
def test_bad_values_name_the_variable(env: dict[str, str], needle: str) -> None:
    with pytest.raises(SettingsError, match=needle):
        Settings.from_env(env)


def test_engine_aliases() -> None:
    s = Settings.from_env({"STT_ENGINE": "deepgram", "LLM_ENGINE": "local"})
    assert s.stt_engine is Engine.CLOUD and s.llm_engine is Engine.LOCAL


@pytest.mark.parametrize("raw", ["30", "0", "1020", "100ms"])
def test_speaker_message_ms_is_whole_frames_up_to_a_second(raw: str) -> None:
    with pytest.raises(SettingsError, match="SPEAKER_MESSAGE_MS"):
        Settings.from_env({"SPEAKER_MESSAGE_MS": raw})


def test_speaker_message_and_preemption_settings() -> None:
    assert Settings.from_env({}).speaker_message_ms == 100
    assert Settings.from_env({"SPEAKER_MESSAGE_MS": "20"}).speaker_message_ms == 20
    assert Settings.from_env({}).preemptive_generation is True
    assert Settings.from_env({"PREEMPTIVE_GENERATION": "false"}).preemptive_generation is False
