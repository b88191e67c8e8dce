"""Putting sequence-numbered frames back in order: :class:`SequenceReorderer`.

Telnyx does not guarantee the order of media-stream frames; every frame of a stream carries a
``sequence_number`` from one counter. Pure bookkeeping, no clock. Re-exported by
:mod:`protocols.telnyx_media`.
"""

from __future__ import annotations

from typing import Final, Generic, Protocol, TypeVar

import attrs

from protocols.errors import LocalProtocolError

__all__ = ["ReorderStatistics", "SequenceReorderer"]


class _Sequenced(Protocol):
    @property
    def sequence_number(self) -> int | None: ...


_F = TypeVar("_F", bound=_Sequenced)


@attrs.frozen
class ReorderStatistics:
    """Counters of a :class:`SequenceReorderer` (all since creation)."""

    delivered: int
    lost: int
    duplicate: int
    late: int
    pending: int
    next_sequence_number: int | None


# Recent gaps remembered to tell a 'late' frame from a 'duplicate'; older ones count as duplicates.
_LOST_RANGES_KEPT: Final = 64


@attrs.define(eq=False)
class SequenceReorderer(Generic[_F]):
    """Puts frames back in ``sequence_number`` order (Telnyx does not guarantee order).

    ``push`` frames as they arrive, then ``pop`` until it returns None. A missing number is
    waited for until ``window`` later frames are buffered; then it is counted as lost and
    skipped (``window=0`` never waits: pass-through that still drops late frames). A frame
    whose number was already delivered or is buffered is a *duplicate*; one whose number was
    given up on is *late*; both are dropped and counted. :meth:`flush` releases the rest at
    end of stream.

    Telnyx numbers every frame of a stream (start, media, dtmf, mark, stop) in one sequence, so
    push every sequenced frame, not only media: otherwise each dtmf or mark leaves a gap that
    costs ``window`` frames of delay and counts as a loss. The first frame pushed sets the
    starting number unless ``first`` is given. A real loss delays what follows by up to
    ``window`` frames (3 frames of 20 ms: 60 ms), so keep the window small. Drained with ``pop``
    after each ``push``, the buffer holds fewer than ``window`` frames.
    """

    window: int = attrs.field()
    first: int | None = None
    _pending: dict[int, _F] = attrs.field(factory=dict, init=False)
    _expected: int | None = attrs.field(default=None, init=False)
    _lost_ranges: list[tuple[int, int]] = attrs.field(factory=list, init=False)
    _delivered: int = attrs.field(default=0, init=False)
    _lost: int = attrs.field(default=0, init=False)
    _duplicate: int = attrs.field(default=0, init=False)
    _late: int = attrs.field(default=0, init=False)

    @window.validator
    def _check_window(self, _: attrs.Attribute[int], value: int) -> None:
        if type(value) is not int or value < 0:
            raise LocalProtocolError(f"window must be an int >= 0, got {value!r}")

    def __attrs_post_init__(self) -> None:
        self._expected = self.first

    def push(self, frame: _F) -> None:
        """Add a frame; it becomes poppable once every earlier number is delivered or lost."""
        number = frame.sequence_number
        if type(number) is not int:
            raise LocalProtocolError("SequenceReorderer.push needs a frame with an int sequence_number")
        if self._expected is None:
            self._expected = number
        if number in self._pending:
            self._duplicate += 1
        elif number < self._expected:
            if any(low <= number < high for low, high in self._lost_ranges):
                self._late += 1
            else:
                self._duplicate += 1
        else:
            self._pending[number] = frame

    def pop(self) -> _F | None:
        """The next frame in order, or None if none is ready (waiting for a gap, or empty)."""
        pending = self._pending
        if not pending:
            return None
        expected = self._expected
        assert expected is not None
        frame = pending.pop(expected, None)
        if frame is None:
            if len(pending) < self.window:
                return None
            # 'window' later frames are here: give up on the gap.
            resume = min(pending)
            self._count_lost(expected, resume)
            expected = resume
            frame = pending.pop(resume)
        self._expected = expected + 1
        self._delivered += 1
        return frame

    def flush(self) -> list[_F]:
        """Release every buffered frame in order (end of stream), counting the gaps as lost."""
        out: list[_F] = []
        while self._pending:
            resume = min(self._pending)
            assert self._expected is not None
            self._count_lost(self._expected, resume)
            self._expected = resume
            while (frame := self._pending.pop(self._expected, None)) is not None:
                out.append(frame)
                self._expected += 1
                self._delivered += 1
        return out

    def _count_lost(self, low: int, high: int) -> None:
        if high > low:
            self._lost += high - low
            self._lost_ranges.append((low, high))
            del self._lost_ranges[:-_LOST_RANGES_KEPT]

    def statistics(self) -> ReorderStatistics:
        """A snapshot of the counters."""
        return ReorderStatistics(
            delivered=self._delivered,
            lost=self._lost,
            duplicate=self._duplicate,
            late=self._late,
            pending=len(self._pending),
            next_sequence_number=self._expected,
        )
