"""LocalStt: the call's speech-to-text on the box (pocketsphinx), for calls with no Deepgram key.

Same contract as `actors.deepgram_link.DeepgramLink`: the same ``run`` signature, the same four
events, the same turn ids and call-time clock, so the Brain and RelayFanout cannot tell which
engine ran; the composition root picks one. The recognition itself is
`actors.pocketsphinx_decoder.SphinxStream` (blocking); this module moves it off the trio loop.

English only (the pocketsphinx wheel ships en-us models, nothing else is packaged). Accuracy on
8 kHz telephony is poor with the free language model (about a third of the words wrong on read
human speech); constrain it to the phrases the script expects (``SphinxOptions(phrases=...)``)
wherever the script knows them. Figures: ``python -m bench.bench_local_stt``.
"""

from __future__ import annotations

import logging
import math
from contextlib import nullcontext
from typing import Any, Final

import attrs
import trio

from actors.messages import FRAME_S, AudioFrame, CallInfo, RelayInput, Transcript
from actors.pocketsphinx_decoder import SphinxOptions, SphinxStream, default_thread_tokens
from supervisor import ChildSpec, CloneableChannel, MailboxReceiver, Restart

__all__ = ["LocalStt", "LocalSttStatistics", "SphinxOptions", "decoder_limiter"]

logger = logging.getLogger(__name__)

#: Frames decoded per trip to the worker thread: 60 ms, so a final waits at most 40 ms for its
#: batch; a backlog (the decoder fell behind) is taken whole, up to `MAX_BATCH_FRAMES`.
BATCH_FRAMES: Final = 3
MAX_BATCH_FRAMES: Final = 50
#: A polite stop may take the last ``end_utt()`` plus a backlog of a second of audio.
SHUTDOWN_S: Final = 3.0

_LIMITER: Final = trio.lowlevel.RunVar[trio.CapacityLimiter]("local_stt_limiter")


def decoder_limiter() -> trio.CapacityLimiter:
    """The process's limit on decoders running at once (one per core), shared by every call."""
    try:
        return _LIMITER.get()
    except LookupError:
        limiter = trio.CapacityLimiter(default_thread_tokens())
        _LIMITER.set(limiter)
        return limiter


@attrs.frozen
class LocalSttStatistics:
    """A snapshot of one call's recogniser (``turn_id`` is the turn in progress)."""

    frames: int = 0
    batches: int = 0
    audio_s: float = 0.0
    decode_cpu_s: float = 0.0  # worker-thread CPU spent decoding
    worst_call_ms: float = 0.0  # the longest single pocketsphinx call (the GIL is held through it)
    utterances: int = 0
    partials: int = 0
    finals: int = 0
    utterance_ends: int = 0
    speech_started: int = 0
    turn_id: str = "t-1"


@attrs.define(eq=False)
class LocalStt:
    """Recognises the caller's audio with pocketsphinx in a worker thread; no network, no key.

    Receives: `AudioFrame` (the call's codec, in call-time order) on ``inbox``.
    Sends: `CallerStartedSpeaking` at each onset the endpointer finds, `TranscriptPartial` every
      ``options.partial_interval_s`` while the words change, a ``speech_final`` `TranscriptFinal`
      at each endpoint (about 0.5 s after the caller stops, with the default 0.3 s endpointer window),
      which ends the turn (``t-1``,
      ``t-2``, ...), and `UtteranceEnded` for that turn after ``options.utterance_end_s`` more
      silence (DeepgramLink drops that one; the Brain ignores an UtteranceEnded for a turn already
      ended, and ``utterance_end_s=None`` gives DeepgramLink's stream exactly).
      Each event goes to ``relay_out`` then ``transcripts_out`` (the Brain: may block, which is
      the back-pressure); either may be None or close early, and once every given output is gone
      it returns quietly. Times are call time, from the frames.
    On end of input: decodes what is queued, closes the utterance in progress (its final is not
      ``speech_final``), sends it and returns, which closes its outputs.
    On failure: a pocketsphinx error propagates; ``permanent`` (see `child_spec`): the
      supervisor runs the same object again, which keeps its decoder (models load once per call)
      and turn counter and drops the utterance in flight.
    Cancelled: waits for the batch in the worker thread (tens of ms), then goes.

    Decoding runs in ``trio.to_thread.run_sync`` under `decoder_limiter` (one decoder per core
    at once, per process), ``batch_frames`` frames per trip. One decoder per call, built at the
    first ``run`` (about 0.2-0.5 s, before ``task_status.started()``) and about 90 MB RSS.
    """

    call: CallInfo
    options: SphinxOptions = attrs.Factory(SphinxOptions)
    batch_frames: int = attrs.field(default=BATCH_FRAMES, validator=attrs.validators.ge(1))
    limiter: trio.CapacityLimiter | None = None  # None: the process-wide `decoder_limiter()`
    # Survives restarts (the supervisor calls run() again on this object):
    _stream: SphinxStream | None = attrs.field(default=None, init=False)
    _runs: int = attrs.field(default=0, init=False)
    _frames: int = attrs.field(default=0, init=False)
    _batches: int = attrs.field(default=0, init=False)
    _sent: dict[str, int] = attrs.field(factory=dict, init=False)

    def child_spec(self, *, inbox: MailboxReceiver[AudioFrame],
                   transcripts_out: CloneableChannel | None = None,
                   relay_out: CloneableChannel | None = None,
                   name: str = "local_stt") -> ChildSpec:
        """The recommended `ChildSpec`: permanent, with time for the last batch and end_utt."""
        channels = {"inbox": inbox, "transcripts_out": transcripts_out, "relay_out": relay_out}
        return ChildSpec(name, self.run, {k: v for k, v in channels.items() if v is not None},
                         restart=Restart.PERMANENT, shutdown_s=SHUTDOWN_S)

    def statistics(self) -> LocalSttStatistics:
        stream = self._stream
        sent = {k: v for k, v in self._sent.items()}
        return LocalSttStatistics(
            frames=self._frames, batches=self._batches,
            audio_s=stream.audio_s if stream else 0.0, decode_cpu_s=stream.cpu_s if stream else 0.0,
            worst_call_ms=stream.worst_call_ms if stream else 0.0,
            utterances=stream.utterances if stream else 0, partials=sent.get("TranscriptPartial", 0),
            finals=sent.get("TranscriptFinal", 0), utterance_ends=sent.get("UtteranceEnded", 0),
            speech_started=sent.get("CallerStartedSpeaking", 0),
            turn_id=stream.turn_id if stream else "t-1",
        )

    async def run(self, inbox: MailboxReceiver[AudioFrame], *,
                  transcripts_out: trio.abc.SendChannel[Transcript] | None = None,
                  relay_out: trio.abc.SendChannel[RelayInput] | None = None,
                  task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Load the models (first run only), then decode until the inbox ends."""
        outputs: list[trio.abc.SendChannel[Any]] = [c for c in (relay_out, transcripts_out)
                                                    if c is not None]
        given = bool(outputs)
        async with inbox, relay_out or nullcontext(), transcripts_out or nullcontext():
            self._runs += 1
            if self._stream is None:
                stream = SphinxStream(self.call.audio_format, self.options)
                await self._in_thread(stream.open)
                self._stream = stream
            elif self._runs > 1:
                await self._in_thread(self._stream.reset)  # a restart: drop the audio in flight
            task_status.started()
            batch: list[AudioFrame] = []
            batch_due = math.inf  # a partial batch waits at most one batch's worth of audio
            while True:
                frame: AudioFrame | None = None
                with trio.move_on_at(batch_due):
                    try:
                        frame = await inbox.receive()
                    except trio.EndOfChannel:
                        break
                if frame is not None:
                    if not batch:
                        batch_due = trio.current_time() + self.batch_frames * FRAME_S
                    batch.append(frame)
                    if len(batch) < self.batch_frames:
                        continue
                    batch.extend(_take_queued(inbox, MAX_BATCH_FRAMES - len(batch)))
                if batch:
                    events = await self._in_thread(self._stream.feed, batch)
                    self._count(batch)
                    batch, batch_due = [], math.inf
                    if not await self._send(events, outputs) and given:
                        self._log(logging.INFO, "every output is closed; stopping")
                        return
            events = await self._in_thread(self._stream.finish, batch)
            self._count(batch)
            await self._send(events, outputs)

    async def _in_thread(self, fn: Any, *args: Any) -> Any:
        # Not abandon_on_cancel: the decoder must never run in two threads at once (a restarted
        # run would share it), and a batch is short, so a cancel waits for it.
        return await trio.to_thread.run_sync(fn, *args, limiter=self.limiter or decoder_limiter())

    def _count(self, batch: list[AudioFrame]) -> None:
        self._frames += len(batch)
        self._batches += 1

    async def _send(self, events: list[Transcript], outputs: list[trio.abc.SendChannel[Any]]) -> bool:
        """Send ``events`` to every open output; False once none is left."""
        for event in events:
            kind = type(event).__name__
            self._sent[kind] = self._sent.get(kind, 0) + 1
            for channel in list(outputs):
                try:
                    await channel.send(event)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    outputs.remove(channel)  # the others keep going
            if not outputs:
                return False
        return bool(outputs)

    def _log(self, level: int, message: str, *args: object) -> None:
        logger.log(level, message, *args, extra={"call_id": self.call.call_id})


def _take_queued(inbox: MailboxReceiver[AudioFrame], limit: int) -> list[AudioFrame]:
    """Frames already waiting (a backlog), without blocking; the end of input is left for later."""
    taken: list[AudioFrame] = []
    while len(taken) < limit:
        try:
            taken.append(inbox.receive_nowait())
        except (trio.WouldBlock, trio.EndOfChannel):
            break
    return taken
