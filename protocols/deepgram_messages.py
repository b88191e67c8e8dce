"""Deepgram ``/v1/listen`` text frames: server messages, client control messages, the converter.

One union per direction and one cattrs converter (orjson preconf, strict types: see
:mod:`protocols.jsonwire`) built at import with a tagged union keyed on the wire's own ``type``
field. Decoding is strict about types and tolerant about presence; an unknown server ``type``
becomes :class:`~protocols.jsonwire.UnknownMessage`, which a client must skip. Encoders always
write the full documented shape, so the emulator speaks like Deepgram. Re-exported by
:mod:`protocols.deepgram_listen`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final, TypeAlias

import attrs
from cattrs.preconf.orjson import OrjsonConverter

from protocols.errors import CLOSE_POLICY_VIOLATION, LocalProtocolError, RemoteProtocolError
from protocols.jsonwire import (
    UnknownMessage,
    configure_type_union,
    decode_tagged,
    encode_tagged,
    encode_unknown,
    make_strict_converter,
    omit_none_fields,
)

__all__ = [
    "CONVERTER",
    "IDLE_TIMEOUT_S",
    "KEEPALIVE_INTERVAL_S",
    "KEEPALIVE_TEXT",
    "Alternative",
    "Channel",
    "ClientControl",
    "CloseStream",
    "ErrorMessage",
    "Finalize",
    "KeepAlive",
    "Metadata",
    "ModelInfo",
    "Results",
    "ResultsMetadata",
    "ServerMessage",
    "SpeechStarted",
    "UnknownMessage",
    "UtteranceEnd",
    "Word",
    "decode_client_text",
    "decode_server",
    "encode_client",
    "encode_server",
    "schema_error",
    "shifted",
]

#: The server closes with 1011/NET-0001 after this long without any frame from the client.
IDLE_TIMEOUT_S: Final = 10.0
#: Deepgram recommends a KeepAlive every 3-5 s while no audio flows.
KEEPALIVE_INTERVAL_S: Final = 4.0


# -- server → client messages ----------------------------------------------------------------------

@attrs.frozen
class Word:
    """One recognised word. Times are seconds of audio since the connection's stream start."""

    word: str
    start: float
    end: float
    confidence: float = 0.0
    punctuated_word: str | None = None
    speaker: int | None = None
    language: str | None = None


@attrs.frozen
class Alternative:
    transcript: str
    confidence: float = 0.0
    words: tuple[Word, ...] = ()
    languages: tuple[str, ...] | None = None


@attrs.frozen
class Channel:
    alternatives: tuple[Alternative, ...] = ()


@attrs.frozen
class ModelInfo:
    name: str = ""
    version: str = ""
    arch: str = ""


@attrs.frozen
class ResultsMetadata:
    """Per-result metadata; defaults only so a reply lacking it is not fatal (the spec requires it)."""

    request_id: str = ""
    model_info: ModelInfo = ModelInfo()
    model_uuid: str = ""


@attrs.frozen(kw_only=True)
class Results:
    """A transcript for ``start .. start+duration``: interim (``is_final`` false) or final.

    ``speech_final`` marks a final followed by ``endpointing`` ms of silence; ``from_finalize`` a
    final produced by a Finalize (absent in older servers: False). ``channel_index`` is
    ``(index, total)``.
    """

    channel_index: tuple[int, ...] = (0, 1)
    start: float
    duration: float
    is_final: bool = False
    speech_final: bool = False
    from_finalize: bool = False
    channel: Channel
    metadata: ResultsMetadata = ResultsMetadata()

    @property
    def transcript(self) -> str:
        """The first alternative's transcript ("" when there is none)."""
        alternatives = self.channel.alternatives
        return alternatives[0].transcript if alternatives else ""

    @property
    def end(self) -> float:
        return self.start + self.duration

    def shifted(self, offset_s: float) -> Results:
        """The same result with ``start`` and every word's ``start``/``end`` moved by ``offset_s``.

        A new connection counts audio time from 0 again, so the link adds the call time at which
        the connection began.
        """
        alternatives = tuple(
            attrs.evolve(
                alt,
                words=tuple(
                    attrs.evolve(w, start=w.start + offset_s, end=w.end + offset_s)
                    for w in alt.words
                ),
            )
            for alt in self.channel.alternatives
        )
        return attrs.evolve(
            self, start=self.start + offset_s, channel=Channel(alternatives=alternatives)
        )


@attrs.frozen(kw_only=True)
class Metadata:
    """The session summary sent after the last Results when the stream ends (CloseStream).

    The optional fields are only modelled by older SDKs; all are tolerated when absent.
    """

    transaction_key: str = "deprecated"
    request_id: str
    sha256: str = ""
    created: str = ""
    duration: float = 0.0
    channels: int = 0
    models: tuple[str, ...] | None = None
    model_info: Mapping[str, ModelInfo] | None = attrs.field(default=None, hash=False)
    extra: Mapping[str, Any] | None = attrs.field(default=None, hash=False)


@attrs.frozen
class UtteranceEnd:
    """No new word for ``utterance_end_ms``; ``last_word_end`` is the last final word's end (s)."""

    channel: tuple[int, ...] = (0, 1)
    last_word_end: float = 0.0

    def shifted(self, offset_s: float) -> UtteranceEnd:
        return attrs.evolve(self, last_word_end=self.last_word_end + offset_s)


@attrs.frozen
class SpeechStarted:
    """The server's VAD heard speech begin at ``timestamp`` (s); needs ``vad_events=true``."""

    channel: tuple[int, ...] = (0, 1)
    timestamp: float = 0.0

    def shifted(self, offset_s: float) -> SpeechStarted:
        return attrs.evolve(self, timestamp=self.timestamp + offset_s)


@attrs.frozen
class ErrorMessage:
    """The ``Error`` text message. ``variant`` is e.g. ``SchemaError`` (a client text frame could not
    be parsed; ``message`` echoes it) or ``Closing`` (sent before a fatal close; UNCONFIRMED).
    ``code`` is deprecated upstream. A fatal close may come with or without one of these.
    """

    variant: str | None = None
    description: str | None = None
    message: str | None = None
    code: str | None = None


_KnownServerMessage: TypeAlias = Results | Metadata | UtteranceEnd | SpeechStarted | ErrorMessage
ServerMessage: TypeAlias = (
    Results | Metadata | UtteranceEnd | SpeechStarted | ErrorMessage | UnknownMessage
)

_SERVER_TAGS: Final[Mapping[type, str]] = {
    Results: "Results",
    Metadata: "Metadata",
    UtteranceEnd: "UtteranceEnd",
    SpeechStarted: "SpeechStarted",
    ErrorMessage: "Error",
}


# -- client → server control messages --------------------------------------------------------------

@attrs.frozen
class KeepAlive:
    """Keeps the connection open while no audio flows (send every 3-5 s; no reply)."""


@attrs.frozen
class Finalize:
    """Flush buffered audio into a final result (``from_finalize``); the reply is not guaranteed."""

    channel: int | None = None


@attrs.frozen
class CloseStream:
    """Graceful end: remaining Results, then Metadata, then close 1000. Keep reading until then."""


ClientControl: TypeAlias = KeepAlive | Finalize | CloseStream

_CLIENT_TAGS: Final[Mapping[type, str]] = {
    KeepAlive: "KeepAlive",
    Finalize: "Finalize",
    CloseStream: "CloseStream",
}


# -- the converter ---------------------------------------------------------------------------------

def _build_converter() -> OrjsonConverter:
    converter = make_strict_converter()
    omit_none_fields(converter, Word, "punctuated_word", "speaker", "language")
    omit_none_fields(converter, Alternative, "languages")
    omit_none_fields(converter, Metadata, "models", "model_info", "extra")
    omit_none_fields(converter, ErrorMessage, "variant", "description", "message", "code")
    omit_none_fields(converter, Finalize, "channel")
    configure_type_union(converter, _KnownServerMessage, _SERVER_TAGS, unknown=True)
    configure_type_union(converter, ClientControl, _CLIENT_TAGS)
    return converter


#: The one converter for this module's messages (orjson preconf, strict primitives).
CONVERTER: Final = _build_converter()


def decode_server(text: str | bytes) -> ServerMessage:
    """One server text frame → a message; an unknown ``type`` gives :class:`UnknownMessage`.

    Raises:
        RemoteProtocolError: invalid JSON, not an object, no string ``type``, or a known message
            with missing or wrongly typed fields.
    """
    result: ServerMessage = decode_tagged(
        CONVERTER, text, _KnownServerMessage, what="Deepgram listen message", label="Deepgram",
        close_code=CLOSE_POLICY_VIOLATION,
    )
    return result


def encode_server(msg: ServerMessage) -> str:
    """A server message as the text frame Deepgram would send (``type`` first, full shape)."""
    if isinstance(msg, UnknownMessage):
        return encode_unknown(msg)
    return encode_tagged(CONVERTER, msg, _SERVER_TAGS, kind="Deepgram listen server message")


def encode_client(msg: ClientControl) -> str:
    """A control message as the text frame to send (never as binary: that would be audio)."""
    if type(msg) is Finalize and msg.channel is not None:
        if not (type(msg.channel) is int and msg.channel >= 0):
            raise LocalProtocolError("Finalize.channel must be a non-negative integer")
    return encode_tagged(CONVERTER, msg, _CLIENT_TAGS, kind="Deepgram listen control message")


#: ``{"type":"KeepAlive"}``, pre-encoded for the keep-alive loop.
KEEPALIVE_TEXT: Final = encode_client(KeepAlive())


def decode_client_text(text: str | bytes) -> ClientControl:
    """The emulator's reading of a client text frame.

    Raises:
        RemoteProtocolError: bad JSON, no ``type``, an unknown ``type`` (e.g. ``Configure``, not
            supported here) or bad fields. Deepgram answers these with an ``Error`` of variant
            ``SchemaError`` (see :func:`schema_error`) and keeps the stream open (UNCONFIRMED);
            ``close_code`` is 1008 for an emulator configured to close instead.
    """
    result: ClientControl = decode_tagged(
        CONVERTER, text, ClientControl, what="Deepgram listen control message", label="Deepgram",
        close_code=CLOSE_POLICY_VIOLATION, known_tags=_CLIENT_TAGS.values(),
    )
    if isinstance(result, Finalize) and result.channel is not None and result.channel < 0:
        raise RemoteProtocolError(
            "Deepgram Finalize message: channel must be >= 0", close_code=CLOSE_POLICY_VIOLATION
        )
    return result


_ECHO_LIMIT_CHARS: Final = 1000


def schema_error(error: RemoteProtocolError, text: str | bytes) -> ErrorMessage:
    """The ``Error`` a server answers an unparseable client text frame with (``message`` echoes it)."""
    echoed = text.decode("utf-8", "replace") if isinstance(text, bytes | bytearray) else str(text)
    return ErrorMessage(
        variant="SchemaError", description=error.reason, message=echoed[:_ECHO_LIMIT_CHARS]
    )


def shifted(msg: ServerMessage, offset_s: float) -> ServerMessage:
    """``msg`` with its audio times moved by ``offset_s`` (messages without times come back as is)."""
    if isinstance(msg, Results | UtteranceEnd | SpeechStarted):
        return msg.shifted(offset_s)
    return msg

