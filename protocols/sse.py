"""Server-Sent Events (``text/event-stream``), sans-I/O, after the WHATWG HTML "event stream" rules.

Reading takes h11's shape: feed bytes with :meth:`SSEReader.receive_data` (``b""`` means the peer
closed), then call :meth:`SSEReader.next_event` until it answers :data:`NEED_DATA` or :data:`EOF`.
Writing is one function, :func:`encode_sse`.

The reader follows the interpretation rules of the HTML standard (§9.2.6 "Interpreting an event
stream"), checked by the tests byte by byte:

- lines end with CRLF, LF or CR, and a CR that ends one chunk still pairs with an LF that starts the
  next one, so any split of the stream yields the same events;
- one U+FEFF BOM at the very start of the stream is dropped;
- lines starting with ``:`` are comments; ``field: value`` loses exactly one space after the colon;
  a line without a colon is a field with an empty value; unknown fields are ignored;
- ``data`` lines are joined with LF; a blank line dispatches the event, unless it had no ``data``
  line at all; the event name defaults to ``message``; ``id`` (ignored if it holds NUL) persists
  to later events, as the browser's ``lastEventId`` does; ``retry`` counts only if all ASCII digits;
- at EOF an event without its closing blank line is discarded, never dispatched;
- bytes that are not UTF-8 decode to U+FFFD (the standard's "UTF-8 decode"), they are no error.

The one thing the standard leaves open is memory: the reader refuses (``RemoteProtocolError`` with
close code 1009) an event, or a line, that holds more than ``max_buffer_bytes`` undelivered bytes.
"""

from __future__ import annotations

import re
from typing import Final

import attrs

from protocols.errors import CLOSE_MESSAGE_TOO_BIG, LocalProtocolError, RemoteProtocolError

__all__ = [
    "EOF",
    "MAX_BUFFER_BYTES",
    "NEED_DATA",
    "SSEEvent",
    "SSEReader",
    "encode_sse",
]

#: Default bound on what one pending event (its data so far plus an unterminated line) may hold.
MAX_BUFFER_BYTES: Final = 1 << 20
#: A ``retry`` value longer than this is ignored (it would be centuries, and ``int()`` of a huge
#: digit string is itself a ValueError since Python 3.11's integer-string limit).
_MAX_RETRY_DIGITS: Final = 15

_BOM: Final = b"\xef\xbb\xbf"
_LINE_END: Final = re.compile(rb"\r\n?|\n")
_NEWLINE: Final = re.compile(r"\r\n?|\n")
_CR: Final = 0x0D
_LF: Final = 0x0A


class _Sentinel(type):
    def __repr__(cls) -> str:
        return cls.__name__


class NEED_DATA(metaclass=_Sentinel):  # noqa: N801 - h11's spelling for its sentinels
    """``next_event()`` answer: no complete event buffered; feed more bytes."""


class EOF(metaclass=_Sentinel):  # noqa: N801
    """``next_event()`` answer: the stream ended (``receive_data(b"")``); no event will follow."""


@attrs.frozen
class SSEEvent:
    """One dispatched event.

    Attributes:
        event: the ``event:`` field, ``"message"`` when absent or empty.
        data: the ``data:`` lines joined with LF (no trailing LF).
        id: the stream's last event ID at dispatch (``None`` if no ``id:`` line was seen yet).
        retry: the ``retry:`` value in milliseconds if this event's block set one, else ``None``.
    """

    event: str = "message"
    data: str = ""
    id: str | None = None
    retry: int | None = None


@attrs.define(eq=False)
class SSEReader:
    """Incremental ``text/event-stream`` parser (h11's shape).

    Args:
        max_buffer_bytes: most bytes one pending event (data lines so far plus the unterminated
            line) may hold before :meth:`next_event` raises ``RemoteProtocolError``.
    """

    max_buffer_bytes: int = MAX_BUFFER_BYTES
    _buf: bytearray = attrs.field(factory=bytearray, init=False)
    _eof: bool = attrs.field(default=False, init=False)
    _bom_checked: bool = attrs.field(default=False, init=False)
    # The last line ended with a CR at the end of the buffer: an LF arriving next belongs to it.
    _skip_lf: bool = attrs.field(default=False, init=False)
    _data: list[str] = attrs.field(factory=list, init=False)
    _data_bytes: int = attrs.field(default=0, init=False)
    _event_type: str = attrs.field(default="", init=False)
    _event_retry: int | None = attrs.field(default=None, init=False)
    _id_buffer: str | None = attrs.field(default=None, init=False)
    _last_event_id: str | None = attrs.field(default=None, init=False)
    _retry_ms: int | None = attrs.field(default=None, init=False)
    _failed: str | None = attrs.field(default=None, init=False)

    @property
    def last_event_id(self) -> str | None:
        """The ``id`` a reconnecting client sends as ``Last-Event-ID`` (``None``: never set).

        Like the browser's, it moves at each blank line, so an ``id`` in an event cut off by EOF
        does not count.
        """
        return self._last_event_id

    @property
    def retry_ms(self) -> int | None:
        """The latest valid ``retry:`` value (reconnection delay, milliseconds), if any."""
        return self._retry_ms

    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        """Buffer bytes from the peer; ``b""`` means the peer closed the stream.

        Raises:
            LocalProtocolError: data after EOF, or not bytes.
        """
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise LocalProtocolError(f"receive_data takes bytes, not {type(data).__name__}")
        if self._eof:
            raise LocalProtocolError("receive_data called after EOF")
        if len(data) == 0:
            self._eof = True
        else:
            self._buf += data

    def next_event(self) -> SSEEvent | type[NEED_DATA] | type[EOF]:
        """Parse buffered lines until one event is complete.

        Returns:
            The next :class:`SSEEvent`; :data:`NEED_DATA` if more bytes are needed; :data:`EOF`
            once the stream ended (an unterminated last event is dropped, as the standard says).

        Raises:
            RemoteProtocolError: a pending event or line outgrew ``max_buffer_bytes`` (and every
                later call, since the stream cannot be resynchronised).
        """
        if self._failed is not None:
            raise RemoteProtocolError(self._failed, close_code=CLOSE_MESSAGE_TOO_BIG)
        buf = self._buf
        if not self._bom_checked:
            if len(buf) < len(_BOM) and not self._eof and _BOM.startswith(buf):
                return NEED_DATA
            if buf.startswith(_BOM):
                del buf[: len(_BOM)]
            self._bom_checked = True
        pos = 0
        end = len(buf)
        try:
            while True:
                if self._skip_lf:
                    if pos == end:
                        break
                    if buf[pos] == _LF:
                        pos += 1
                    self._skip_lf = False
                match = _LINE_END.search(buf, pos)
                if match is None:
                    break
                line_end = match.start()
                line = buf[pos:line_end]
                pos = match.end()
                if pos == end and buf[line_end] == _CR and pos - line_end == 1:
                    self._skip_lf = True
                event = self._line(line)
                if event is not None:
                    return event
                if self._data_bytes > self.max_buffer_bytes:
                    self._fail()
        finally:
            del buf[:pos]
        if self._eof:
            # Whatever is left is an event without its blank line (or a line without its end).
            buf.clear()
            self._data.clear()
            self._data_bytes = 0
            return EOF
        if len(buf) + self._data_bytes > self.max_buffer_bytes:
            self._fail()
        return NEED_DATA

    def _fail(self) -> None:
        self._failed = (
            f"event stream: an event or line exceeds {self.max_buffer_bytes} bytes without ending"
        )
        raise RemoteProtocolError(self._failed, close_code=CLOSE_MESSAGE_TOO_BIG)

    def _line(self, line: bytearray) -> SSEEvent | None:
        if not line:
            return self._dispatch()
        colon = line.find(b":")
        if colon == 0:
            return None  # comment
        value: bytes | bytearray
        if colon < 0:
            name, value = line, b""
        else:
            name = line[:colon]
            value = line[colon + 1 :]
            if value[:1] == b" ":
                value = value[1:]
        if name == b"data":
            self._data.append(value.decode("utf-8", "replace"))
            self._data_bytes += len(value) + 1
        elif name == b"event":
            self._event_type = value.decode("utf-8", "replace")
        elif name == b"id":
            if b"\x00" not in value:
                self._id_buffer = value.decode("utf-8", "replace")
        elif name == b"retry":
            if value.isdigit() and len(value) <= _MAX_RETRY_DIGITS:  # bytes.isdigit: ASCII only
                self._retry_ms = self._event_retry = int(value)
        return None

    def _dispatch(self) -> SSEEvent | None:
        retry, self._event_retry = self._event_retry, None
        event_type, self._event_type = self._event_type, ""
        self._last_event_id = self._id_buffer
        if not self._data:
            return None
        data = "\n".join(self._data)
        self._data.clear()
        self._data_bytes = 0
        return SSEEvent(event=event_type or "message", data=data, id=self._last_event_id,
                        retry=retry)


def encode_sse(event: str | None, data: str, *, id: str | None = None,  # noqa: A002
               retry: int | None = None) -> bytes:
    """One event in ``text/event-stream`` form, ending with its blank line.

    ``data`` may hold any line breaks (CRLF, CR or LF): each line becomes a ``data:`` line, and a
    reader gives back the text with LF breaks. ``event=None`` writes no ``event:`` line (the
    reader's default name, ``message``).

    Raises:
        LocalProtocolError: an empty event name, a line break in ``event`` or ``id``, NUL in
            ``id``, a negative or non-int ``retry``, or text that is not encodable as UTF-8.
    """
    parts: list[str] = []
    if event is not None:
        if not event or "\r" in event or "\n" in event:
            raise LocalProtocolError(f"SSE event name must be one non-empty line, got {event!r}")
        parts.append(f"event: {event}\n")
    if id is not None:
        if "\r" in id or "\n" in id or "\x00" in id:
            raise LocalProtocolError("SSE id must be one line without NUL")
        parts.append(f"id: {id}\n")
    if retry is not None:
        if type(retry) is not int or retry < 0:
            raise LocalProtocolError(f"SSE retry must be a non-negative int, got {retry!r}")
        parts.append(f"retry: {retry}\n")
    for line in _NEWLINE.split(data):
        parts.append(f"data: {line}\n")
    parts.append("\n")
    try:
        return "".join(parts).encode("utf-8")
    except UnicodeEncodeError as exc:
        raise LocalProtocolError(f"SSE text is not encodable as UTF-8: {exc.reason}") from None
