"""Telnyx media-stream messages: what Telnyx sends us, what we send back, and their ``event`` names.

Frozen attrs classes, flat (the wire nests each event's body under its own key; the converter in
:mod:`protocols.telnyx_media_converter` does the nesting). Re-exported by
:mod:`protocols.telnyx_media`, whose docstring has the reading rules.
"""

from __future__ import annotations

from typing import Final, TypeAlias, Union

import attrs

from protocols.errors import CLOSE_UNSUPPORTED_DATA, LocalProtocolError, RemoteProtocolError
from protocols.telnyx_fields import Track, b64_field

__all__ = [
    "AUTH_TOKEN_HEADER",
    "EVENT_OF",
    "INBOUND_EVENTS",
    "OUTBOUND_EVENTS",
    "SUPPORTED_ENCODINGS",
    "Clear",
    "Connected",
    "Dtmf",
    "Error",
    "Mark",
    "MarkOut",
    "Media",
    "MediaFormat",
    "MediaOut",
    "Start",
    "Stop",
    "TelnyxInbound",
    "TelnyxOutbound",
    "UnknownEventError",
    "normalise_encoding",
]

#: Upgrade header (and key inside the ``connected`` frame) carrying ``stream_auth_token``.
AUTH_TOKEN_HEADER: Final = "x-telnyx-streaming-auth-token"
#: Encodings our audio path can decode; others (G722, OPUS, AMR-WB ...) parse but are flagged.
SUPPORTED_ENCODINGS: Final = frozenset({"PCMU", "PCMA", "L16"})


class UnknownEventError(RemoteProtocolError):
    """A well-formed frame whose ``event`` we do not know. Callers may choose to log and skip it."""

    def __init__(self, event: str) -> None:
        super().__init__(
            f"unknown Telnyx media-stream event {event[:40]!r}", close_code=CLOSE_UNSUPPORTED_DATA
        )
        self.event = event


# Spellings seen in Telnyx docs and third-party code, compared case-insensitively after
# dropping an ``audio/`` prefix and ``;parameters`` (telnyx.md §1.3: 'audio/x-mulaw' UNCONFIRMED).
_ENCODING_ALIASES: Final = {
    "pcmu": "PCMU", "mulaw": "PCMU", "x-mulaw": "PCMU", "ulaw": "PCMU", "x-ulaw": "PCMU",
    "g711u": "PCMU", "g711_ulaw": "PCMU", "g711-ulaw": "PCMU",
    "pcma": "PCMA", "alaw": "PCMA", "x-alaw": "PCMA", "g711a": "PCMA", "g711_alaw": "PCMA",
    "g711-alaw": "PCMA",
    "l16": "L16", "linear16": "L16",
}  # fmt: skip


def normalise_encoding(name: str) -> str:
    """Map a ``media_format.encoding`` spelling to ``PCMU``/``PCMA``/``L16``, else upper-case it.

    ``"audio/x-mulaw"`` and ``"pcmu"`` give ``"PCMU"``; ``"opus"`` gives ``"OPUS"`` (parsed, not
    supported: see :attr:`MediaFormat.supported`).
    """
    if not isinstance(name, str):
        raise LocalProtocolError(f"encoding must be a str, not {type(name).__name__}")
    key = name.split(";", 1)[0].strip().lower()
    key = key.removeprefix("audio/")
    return _ENCODING_ALIASES.get(key, key.upper())


@attrs.frozen
class MediaFormat:
    """The audio Telnyx sends us (``start.media_format``). ``encoding`` is normalised on creation."""

    encoding: str = attrs.field(converter=normalise_encoding)
    sample_rate: int
    channels: int = 1

    @property
    def supported(self) -> bool:
        """True for PCMU, PCMA and L16, the encodings the audio path can decode."""
        return self.encoding in SUPPORTED_ENCODINGS


@attrs.frozen(kw_only=True)
class Connected:
    """First frame. ``auth_token`` is the ``stream_auth_token`` if Telnyx repeated it in-band.

    The header of the same name is the primary check (telnyx.md §1.1); the in-frame copy, whose
    exact JSON is UNCONFIRMED, is read from ``connected[...]`` or the top level as a fallback.
    """

    version: str | None = None
    auth_token: str | None = attrs.field(default=None, repr=False)


@attrs.frozen(kw_only=True)
class Start:
    """Sent once before media. ``client_state`` stays raw base64 (validated); see the helpers."""

    stream_id: str
    sequence_number: int
    call_control_id: str
    media_format: MediaFormat
    call_session_id: str | None = None
    user_id: str | None = None
    from_: str | None = None
    to: str | None = None
    client_state: str | None = None
    custom_parameters: dict[str, str] = attrs.field(factory=dict, hash=False)
    tags: tuple[str, ...] = ()

    @property
    def client_state_bytes(self) -> bytes | None:
        """The decoded ``client_state`` (what we passed to dial/answer), or None."""
        if self.client_state is None:
            return None
        return b64_field(self.client_state, "start.client_state", LocalProtocolError)

    @property
    def client_state_text(self) -> str | None:
        """``client_state`` decoded as UTF-8 text. Raises RemoteProtocolError if it is not."""
        raw = self.client_state_bytes
        if raw is None:
            return None
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise RemoteProtocolError("start.client_state is not UTF-8 text") from None


@attrs.frozen(kw_only=True)
class Media:
    """One chunk of audio: raw codec bytes (no RTP header), already base64-decoded.

    ``chunk``/``timestamp`` are optional because nothing here depends on them (timestamp units
    are UNCONFIRMED); order by ``sequence_number`` with :class:`SequenceReorderer`.
    """

    stream_id: str
    sequence_number: int
    track: Track
    payload: bytes
    chunk: int | None = None
    timestamp: int | None = None


@attrs.frozen(kw_only=True)
class Dtmf:
    """A key press on the call (``dtmf.digit``, confirmed by pipecat; other keys UNCONFIRMED)."""

    digit: str
    stream_id: str | None = None
    sequence_number: int | None = None
    occurred_at: str | None = None


@attrs.frozen(kw_only=True)
class Mark:
    """Telnyx echoing a mark we sent: the audio queued before it finished *or was cleared*."""

    name: str
    stream_id: str | None = None
    sequence_number: int | None = None


def _normalise_code(code: int | str | None) -> int | str | None:
    # Telnyx documents numeric codes (100003) but the wire type is UNCONFIRMED: "100003" -> 100003.
    if isinstance(code, str) and 0 < len(code) <= 18 and code.isascii() and code.isdigit():
        return int(code)
    return code


@attrs.frozen(kw_only=True)
class Error:
    """An error frame (e.g. 100003 malformed_frame, 100005 rate_limit_reached). Shape UNCONFIRMED.

    ``code`` is an int when it is numeric (wire int or digit string), else the string as sent.
    """

    code: int | str | None = attrs.field(default=None, converter=_normalise_code)
    title: str | None = None
    detail: str | None = None
    stream_id: str | None = None
    sequence_number: int | None = None


@attrs.frozen(kw_only=True)
class Stop:
    """Streaming ended (hangup or streaming_stop); Telnyx closes the socket next."""

    stream_id: str | None = None
    sequence_number: int | None = None
    call_control_id: str | None = None
    user_id: str | None = None


@attrs.frozen
class MediaOut:
    """Audio for Telnyx to play: raw bytes in the bidirectional codec (rtp mode), >= 20 ms.

    ``stream_id`` is omitted from the frame unless set (adding it is believed harmless, UNCONFIRMED).
    """

    payload: bytes
    stream_id: str | None = None


@attrs.frozen
class MarkOut:
    """Ask Telnyx to echo ``name`` once the audio sent before it has been played (or cleared)."""

    name: str
    stream_id: str | None = None


@attrs.frozen
class Clear:
    """Stop what is playing and drop queued audio; Telnyx echoes every queued mark at once."""

    stream_id: str | None = None


TelnyxInbound: TypeAlias = Union[Connected, Start, Media, Dtmf, Mark, Error, Stop]
TelnyxOutbound: TypeAlias = Union[MediaOut, MarkOut, Clear]

INBOUND_EVENTS: Final[dict[str, type]] = {
    "connected": Connected, "start": Start, "media": Media, "dtmf": Dtmf, "mark": Mark,
    "error": Error, "stop": Stop,
}  # fmt: skip
OUTBOUND_EVENTS: Final[dict[str, type]] = {"media": MediaOut, "mark": MarkOut, "clear": Clear}
EVENT_OF: Final = {cls: event for event, cls in (*INBOUND_EVENTS.items(), *OUTBOUND_EVENTS.items())}
