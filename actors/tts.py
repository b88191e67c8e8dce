"""The text-to-speech port: what the Speaker needs of a TTS engine, and nothing more.

A port is a ``typing.Protocol`` (see :mod:`actors.ports`): Deepgram Aura (:mod:`actors.aura_tts`)
implements it today; Amazon Polly or a local engine can follow without touching the Speaker, and
tests plug a fake in here and nowhere else.

The shape is one *engine* per service (configuration, credentials) and one *session* per call
(a connection, a model process, a resampler)::

    async with engine.open_session(call.audio_format) as session:
        async with aclosing(session.synthesize("Hola, ¿en qué puedo ayudarle?")) as audio:
            async for data in audio:      # the call's codec and rate, as it is produced
                ...
        await session.cancel()            # barge-in: drop whatever is still pending

Contract for implementers:

* Audio comes out in the call's encoding and rate (``audio_format``: mu-law or A-law 8 kHz, or
  big-endian L16), in pieces of any size (the Speaker re-frames them), as early as possible:
  time to first audio is the latency the caller hears. An engine that produces another rate
  resamples inside the session (a streaming resampler that :meth:`TtsSession.cancel` resets).
* ``synthesize`` calls never overlap: the Speaker awaits (or cancels) one before the next. The
  audio of one text never leaks into another's iterator, also after a cancellation.
* ``cancel`` is called after the iterating task was cancelled (so it never races an iterator):
  stop producing, drop pending audio and any state that would carry over (resampler tails), and
  leave the session usable for the next ``synthesize``.
* Errors are exceptions: a failing engine makes the Speaker fail, and the supervisor restarts it
  with a fresh session. Transient transport problems between texts (a dropped socket) are the
  session's to cure silently.
* Leaving ``open_session`` releases everything, bounded and shielded when cancelled (the call may
  be ending because of a deadline).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from contextlib import AbstractAsyncContextManager
from typing import Protocol

from protocols.audio import AudioFormat

__all__ = ["TtsEngine", "TtsSession"]


class TtsSession(Protocol):
    """One call's synthesis stream (see the module docstring for the contract)."""

    def synthesize(self, text: str) -> AsyncGenerator[bytes, None]:
        """The audio of ``text`` in the call's format, as it is produced; ends when all of it
        has been delivered. An ``async def`` generator; the Speaker iterates it inside
        ``contextlib.aclosing`` so a cancelled consumer closes it at once."""
        ...

    async def cancel(self) -> None:
        """Barge-in: stop producing, drop pending audio; the session stays usable."""
        ...


class TtsEngine(Protocol):
    """A configured TTS service; sessions are opened per call."""

    def open_session(self, audio_format: AudioFormat) -> AbstractAsyncContextManager[TtsSession]:
        """A session producing audio in ``audio_format`` (ready when the block is entered)."""
        ...
