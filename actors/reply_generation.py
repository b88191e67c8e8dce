"""One reply of the Brain, from the LLM's text deltas (or a scripted phrase) to `Speak` chunks.

A reply runs as two tasks inside its own CancelScope (cancelling the scope is how the Brain drops
a missed speculation or cuts a reply on barge-in): a *producer* streams the LLM's reply through
`MarkerFilter` and `SpeakableChunker` into a small buffer, and a *deliverer* sends the buffered
chunks to the Speaker once the reply is *released* (at once for a committed reply; a speculative
one waits for the final transcript to confirm it). LLM failures are handled here: one retry
within the budget, else the fallback phrase, never silence.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Final

import attrs
import trio

from actors.llm import ChatMessage, LlmEngine, LlmUnavailable
from actors.messages import Speak
from actors.speakable import MarkerFilter, SpeakableChunker

__all__ = ["REPLY_CHUNKS", "STAGES", "Reply", "ReplyGeneration"]

log = logging.getLogger(__name__)

REPLY_CHUNKS: Final = 32  # chunks buffered between the LLM and the Speaker (speculation included)
#: The latency waterfall of a turn, in order; each stage is call time in seconds.
STAGES: Final = ("end_of_speech", "stt_final", "llm_request", "llm_first_token", "first_chunk",
                 "tts_first_audio", "first_frame_sent")

_Chunks = trio.MemorySendChannel[tuple[str, bool]]


@attrs.define(eq=False)
class Reply:
    """One reply: its generation (cancel ``scope``) and what the Speaker says about its playback."""

    reply_id: str
    turn_id: str
    text: str  # what it answers (normalised for speculation matching)
    scope: trio.CancelScope = attrs.Factory(trio.CancelScope)
    released: trio.Event = attrs.Factory(trio.Event)  # speculative replies wait to be spoken
    stages: dict[str, float] = attrs.Factory(dict)
    produced: int = 0  # chunks cut from the LLM's text
    sent: list[str] = attrs.Factory(list)  # chunk texts sent to the Speaker, in order
    played: dict[int, str] = attrs.Factory(dict)  # ChunkPlayed reports
    failed: bool = False  # a speculation whose LLM request failed: never to be released
    hangup_after: bool = False
    latency_sent: bool = False

    def played_text(self) -> str:
        """What the caller heard of it, by the Speaker's ChunkPlayed reports."""
        return " ".join(self.played[i] for i in sorted(self.played) if self.played[i])


@attrs.define(eq=False)
class ReplyGeneration:
    """Generates replies for one Brain run: `run` is started once per reply in the Brain's nursery.

    ``now`` gives call time (for the waterfall), ``count`` bumps one of the Brain's statistics and
    ``send`` hands a chunk to the Speaker (the Brain's output, with its back-pressure).
    """

    llm: LlmEngine
    call_id: str
    fallback_phrase: str
    hangup_marker: str | None
    turn_timeout_s: float
    llm_retry_budget_s: float
    now: Callable[[], float]
    count: Callable[[str], None]
    send: Callable[[Speak], Awaitable[None]]

    async def run(self, reply: Reply, what: list[ChatMessage] | str, system: str) -> None:
        """Generate ``what`` (the messages for the LLM, or a scripted text) as ``reply``."""
        send, receive = trio.open_memory_channel[tuple[str, bool]](REPLY_CHUNKS)
        with reply.scope:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._produce, reply, what, system, send)
                nursery.start_soon(self._deliver, reply, receive)

    async def _produce(self, reply: Reply, what: list[ChatMessage] | str, system: str,
                       chunks: _Chunks) -> None:
        async with chunks:
            if isinstance(what, str):
                chunker = SpeakableChunker()
                for chunk in chunker.feed(what):
                    await _put(reply, chunk, False, chunks)
                await _put(reply, chunker.flush() or "", True, chunks)
                return
            ok = False
            with trio.move_on_after(self.turn_timeout_s) as turn:
                ok = await self._ask_llm(reply, what, system, chunks)
            if turn.cancelled_caught:
                log.warning("no whole reply within %gs", self.turn_timeout_s,
                            extra={"call_id": self.call_id, "reply_id": reply.reply_id})
            reply.failed = not ok
            if not ok and reply.released.is_set():  # an unreleased speculation just fails
                self.count("fallbacks")
                await chunks.send((self.fallback_phrase, True))

    async def _ask_llm(self, reply: Reply, messages: list[ChatMessage], system: str,
                       chunks: _Chunks) -> bool:
        """Stream the reply into ``chunks``; False if the fallback phrase must follow."""
        budget_end = trio.current_time() + self.llm_retry_budget_s
        reply.stages["llm_request"] = self.now()
        for attempt in (1, 2):
            chunker, marker = SpeakableChunker(), MarkerFilter(self.hangup_marker)
            try:
                async with self.llm.stream_reply(system=system, messages=messages) as deltas:
                    async for delta in deltas:
                        if "llm_first_token" not in reply.stages:
                            reply.stages["llm_first_token"] = self.now()
                        for chunk in chunker.feed(marker.feed(delta)):
                            await _put(reply, chunk, False, chunks)
            except LlmUnavailable as exc:
                self.count("llm_failures")
                wait_s = exc.retry_after_s or 0.0
                retry = (exc.kind != "refused" and attempt == 1 and not reply.produced
                         and trio.current_time() + wait_s <= budget_end)
                log.log(logging.ERROR if exc.kind == "refused" else logging.WARNING,
                        "LLM unavailable (%s): %s", exc.kind, "retrying" if retry else "giving up",
                        extra={"call_id": self.call_id, "reply_id": reply.reply_id})
                if not retry:
                    return False
                self.count("llm_retries")
                await trio.sleep(wait_s)
                continue
            for chunk in chunker.feed(marker.flush()):
                await _put(reply, chunk, False, chunks)
            reply.hangup_after = marker.found
            rest = chunker.flush()
            if rest is None and not reply.produced:
                return False  # an empty reply: better the fallback phrase than silence
            await _put(reply, rest or "", True, chunks)
            return True
        return False

    async def _deliver(self, reply: Reply,
                       chunks: trio.MemoryReceiveChannel[tuple[str, bool]]) -> None:
        async with chunks:
            await reply.released.wait()
            async for text, last in chunks:
                if not text and not last:
                    continue
                await self.send(Speak(reply.reply_id, reply.turn_id, len(reply.sent), text, last))
                reply.sent.append(text)
                if "first_chunk" not in reply.stages:
                    reply.stages["first_chunk"] = self.now()


async def _put(reply: Reply, text: str, last: bool, chunks: _Chunks) -> None:
    reply.produced += 1
    await chunks.send((text, last))
