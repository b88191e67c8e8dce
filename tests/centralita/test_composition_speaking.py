"""The speaking half's settings reach the actors the composition root builds for each call."""

from __future__ import annotations

import pytest

from actors.messages import CallInfo
from centralita.composition import Service
from centralita.settings import Settings
from protocols.audio import PCMU_8K

CALL = CallInfo(call_id="c1", call_control_id="v3:c1", stream_id="s1", audio_format=PCMU_8K)


class _NoSocket:
    async def receive(self) -> str | bytes | None:
        return None

    async def send(self, text: str) -> None:
        raise AssertionError("not used")

    async def close(self, code: int, reason: str = "") -> None:
        pass


@pytest.mark.parametrize(("message_ms", "frames"), [(20, 1), (100, 5), (1000, 50)])
def test_speaker_message_ms_becomes_frames_per_message(message_ms: int, frames: int) -> None:
    service = Service.from_settings(Settings(speaker_message_ms=message_ms))
    assert service._speaker(CALL, _NoSocket()).frames_per_message == frames  # noqa: SLF001


@pytest.mark.parametrize("preemptive", [True, False])
def test_preemptive_generation_reaches_the_brain(preemptive: bool) -> None:
    service = Service.from_settings(Settings(preemptive_generation=preemptive))
    assert service._brain(CALL).preemptive is preemptive  # noqa: SLF001
