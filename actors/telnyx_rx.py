"""TelnyxRx: the read side of the call's Telnyx media WebSocket."""

from __future__ import annotations

import logging
from typing import Any, Final, Protocol, TypeVar

import attrs
import trio

from actors.messages import (AudioFrame, CallEnded, CallInfo, CallStarted, DtmfPressed, MarkPlayed,
                             RelayInput)
from actors.ports import MediaSocket
from protocols import telnyx_media as wire
from protocols.errors import RemoteProtocolError
from supervisor import cleanup_scope

log = logging.getLogger(__name__)

_T_contra = TypeVar("_T_contra", contravariant=True)


class NowaitSender(Protocol[_T_contra]):
    """What TelnyxRx needs of an output: a send that never waits (a mailbox or memory channel)."""

    def send_nowait(self, value: _T_contra, /) -> None: ...

    async def aclose(self) -> None: ...

    async def __aenter__(self) -> Any: ...

    async def __aexit__(self, *args: object) -> Any: ...

REORDER_WINDOW_FRAMES: Final = 3  # wait at most 60 ms of later audio for a missing frame
LOG_EVERY_MALFORMED: Final = 100  # after the first, log one malformed frame in this many


@attrs.frozen
class TelnyxRxStatistics:
    frames: int
    audio_frames: int
    audio_bytes: int
    malformed: int
    unknown_events: int
    outbound_track_frames: int
    reorder_lost: int
    reorder_late: int
    reorder_duplicate: int


@attrs.define(eq=False)
class TelnyxRx:
    """Reads the caller's side of the call and routes it.

    Receives: text frames from the call's :class:`MediaSocket` (after the route consumed
    ``connected`` and ``start``).
    Sends: ``AudioFrame`` (inbound track, in ``sequence_number`` order) to ``audio_out`` — a
    DROP_OLDEST mailbox, so the socket reader never blocks on a slow consumer; ``DtmfPressed`` to
    ``dtmf_out`` (the Brain), ``MarkPlayed`` to ``marks_out`` (the Speaker); ``CallStarted`` then
    ``CallEnded(reason)`` to ``relay_out``. Every send is ``send_nowait``.
    On end of input: a ``stop`` frame or the socket closing ends the call: it returns normally,
    and as the call's *significant* child that shuts the call down.
    On failure: malformed frames are counted and logged, never fatal. Cancelled (service shutdown),
    it still reports ``CallEnded`` in a bounded shielded scope. Transient, significant.
    """

    socket: MediaSocket
    call: CallInfo
    first_sequence_number: int | None = None
    reorder_window: int = REORDER_WINDOW_FRAMES
    end_reason: str | None = None
    _frames: int = 0
    _audio_frames: int = 0
    _audio_bytes: int = 0
    _malformed: int = 0
    _unknown: int = 0
    _outbound: int = 0
    _reorderer: wire.SequenceReorderer[Any] | None = None

    async def run(self, *, audio_out: NowaitSender[AudioFrame],
                  dtmf_out: NowaitSender[DtmfPressed] | None = None,
                  marks_out: NowaitSender[MarkPlayed] | None = None,
                  relay_out: NowaitSender[RelayInput] | None = None,
                  task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        first = None if self.first_sequence_number is None else self.first_sequence_number + 1
        self._reorderer = wire.SequenceReorderer(window=self.reorder_window, first=first)
        async with audio_out:
            try:
                self._offer(relay_out, CallStarted(self.call))
                task_status.started()
                self.end_reason = await self._read(audio_out, dtmf_out, marks_out)
            finally:
                reason = self.end_reason or "call stopped by the service"
                with cleanup_scope(1.0):
                    self._offer(relay_out, CallEnded(self.call, reason))
                    for out in (dtmf_out, marks_out, relay_out):
                        if out is not None:
                            await out.aclose()
                log.info("telnyx stream ended", extra={"call_id": self.call.call_id,
                                                       "reason": reason,
                                                       **attrs.asdict(self.statistics())})

    async def _read(self, audio_out: NowaitSender[AudioFrame],
                    dtmf_out: NowaitSender[DtmfPressed] | None,
                    marks_out: NowaitSender[MarkPlayed] | None) -> str:
        assert self._reorderer is not None
        while True:
            text = await self.socket.receive()
            if text is None:
                self._drain_reorderer(audio_out, dtmf_out, marks_out)
                return "telnyx socket closed"
            self._frames += 1
            try:
                msg = wire.decode(text)
            except wire.UnknownEventError as exc:
                self._unknown += 1
                log.info("unknown telnyx event skipped", extra={"call_id": self.call.call_id,
                                                                "event": exc.event[:40]})
                continue
            except RemoteProtocolError as exc:
                self._malformed += 1
                if self._malformed % LOG_EVERY_MALFORMED == 1:
                    log.warning("malformed telnyx frame", extra={"call_id": self.call.call_id,
                                                                 "reason": exc.reason,
                                                                 "malformed": self._malformed})
                continue
            seq = getattr(msg, "sequence_number", None)
            if seq is None:
                done = self._route(msg, audio_out, dtmf_out, marks_out)
            else:
                self._reorderer.push(msg)
                done = None
                while (ready := self._reorderer.pop()) is not None and done is None:
                    done = self._route(ready, audio_out, dtmf_out, marks_out)
            if done is not None:
                return done

    def _drain_reorderer(self, audio_out: NowaitSender[AudioFrame],
                         dtmf_out: NowaitSender[DtmfPressed] | None,
                         marks_out: NowaitSender[MarkPlayed] | None) -> None:
        assert self._reorderer is not None
        for msg in self._reorderer.flush():
            self._route(msg, audio_out, dtmf_out, marks_out)

    def _route(self, msg: wire.TelnyxInbound, audio_out: NowaitSender[AudioFrame],
               dtmf_out: NowaitSender[DtmfPressed] | None,
               marks_out: NowaitSender[MarkPlayed] | None) -> str | None:
        """Deliver one in-order frame; returns the end reason when the stream is over."""
        if isinstance(msg, wire.Media):
            if msg.track != "inbound":
                self._outbound += 1  # our own audio echoed with both_tracks: never to STT
                return None
            frame = AudioFrame(call_time_s=self._call_time_s(), payload=msg.payload)
            self._audio_frames += 1
            self._audio_bytes += len(msg.payload)
            self._offer(audio_out, frame)
        elif isinstance(msg, wire.Dtmf):
            self._offer(dtmf_out, DtmfPressed(msg.digit, self._call_time_s()))
        elif isinstance(msg, wire.Mark):
            self._offer(marks_out, MarkPlayed(msg.name, self._call_time_s()))
        elif isinstance(msg, wire.Stop):
            return "telnyx stop"
        elif isinstance(msg, wire.Error):
            log.warning("telnyx error frame", extra={"call_id": self.call.call_id,
                                                     "code": msg.code, "title": msg.title})
        return None

    def _call_time_s(self) -> float:
        return self._audio_bytes / (self.call.audio_format.bytes_per_20ms * 50)

    def _offer(self, channel: NowaitSender[Any] | None, msg: object) -> None:
        """Hand a message over without ever blocking the socket reader.

        Mailboxes with DROP_OLDEST never raise WouldBlock (they drop and count); for any other
        channel a full queue drops this message, counted by the channel's owner's statistics.
        A consumer that is gone is simply no longer fed.
        """
        if channel is None:
            return
        try:
            channel.send_nowait(msg)
        except (trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError):
            pass

    def statistics(self) -> TelnyxRxStatistics:
        r = self._reorderer.statistics() if self._reorderer is not None else None
        return TelnyxRxStatistics(
            frames=self._frames, audio_frames=self._audio_frames, audio_bytes=self._audio_bytes,
            malformed=self._malformed, unknown_events=self._unknown,
            outbound_track_frames=self._outbound,
            reorder_lost=r.lost if r else 0, reorder_late=r.late if r else 0,
            reorder_duplicate=r.duplicate if r else 0)
