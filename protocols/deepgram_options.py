"""The handshake of a Deepgram ``/v1/listen`` connection: query options, URL and credentials.

The client builds the URL from :class:`ListenOptions` (:func:`build_listen_url`) and the
``Authorization`` header (:func:`auth_header`); the Deepgram emulator in ``bench/`` reads them
back (:func:`parse_listen_query`, :func:`parse_auth`) and answers what it refuses with HTTP 400
or 401. Re-exported by :mod:`protocols.deepgram_listen`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, Final, Literal, TypeAlias

import attrs

from protocols.errors import CLOSE_POLICY_VIOLATION, LocalProtocolError, RemoteProtocolError
from protocols.querystring import (
    collect_params,
    extra_problem,
    frozen_mapping,
    join_query,
    nonempty_str,
    parse_bool,
    parse_uint,
    split_query,
)

__all__ = [
    "LISTEN_ENCODINGS",
    "LISTEN_SERVER_DEFAULTS",
    "LISTEN_URL",
    "AuthScheme",
    "Credential",
    "ListenOptions",
    "auth_header",
    "build_listen_url",
    "parse_auth",
    "parse_listen_query",
]

LISTEN_URL: Final = "wss://api.deepgram.com/v1/listen"

#: Encodings ``/v1/listen`` accepts for raw audio (AsyncAPI spec). Telephony uses ``mulaw`` at 8 kHz.
LISTEN_ENCODINGS: Final = frozenset(
    {"linear16", "linear32", "flac", "alaw", "mulaw", "amr-nb", "amr-wb", "opus", "ogg-opus",
     "speex", "g729"}
)


def _to_str_tuple(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        raise LocalProtocolError("expected a sequence of strings, not one string")
    try:
        return tuple(value)
    except TypeError:
        raise LocalProtocolError(f"expected a sequence of strings, got {type(value).__name__}") from None


@attrs.frozen
class ListenOptions:
    """The query parameters of a ``/v1/listen`` connection; defaults are Centralita's choices.

    Every typed field is written to the URL explicitly (Deepgram's own defaults differ: see
    :data:`LISTEN_SERVER_DEFAULTS`), except ``model``/``encoding``/``sample_rate``/
    ``utterance_end_ms`` when ``None`` and ``no_delay`` when false (``no_delay`` is not in the
    published spec, so it goes out only when asked for). ``endpointing`` is milliseconds of
    silence before ``speech_final``, or ``False`` to disable it. ``extra`` carries any other raw
    parameter (``multichannel``, ``diarize``, ``language_hint`` ...); it may not repeat a typed one.
    """

    model: str | None = "nova-3"
    language: str = "es"
    encoding: str | None = "mulaw"
    sample_rate: int | None = 8000
    channels: int = 1
    interim_results: bool = True
    endpointing: int | Literal[False] = 200
    utterance_end_ms: int | None = 1000
    vad_events: bool = True
    smart_format: bool = False
    punctuate: bool = False
    no_delay: bool = False
    keyterm: tuple[str, ...] = attrs.field(default=(), converter=_to_str_tuple)
    extra: Mapping[str, str] = attrs.field(
        factory=dict, converter=frozen_mapping, hash=False
    )


#: What the server assumes for each parameter left out of the URL (AsyncAPI spec), as parsed by
#: :func:`parse_listen_query`. ``model`` has no documented default.
LISTEN_SERVER_DEFAULTS: Final = ListenOptions(
    model=None, language="en", encoding=None, sample_rate=None, channels=1,
    interim_results=False, endpointing=10, utterance_end_ms=None, vad_events=False,
    smart_format=False, punctuate=False, no_delay=False,
)

_LISTEN_PARAMS: Final = frozenset(
    f.name for f in attrs.fields(ListenOptions) if f.name != "extra"
)


def _is_int(value: object) -> bool:
    return type(value) is int


def _listen_problem(options: ListenOptions) -> str | None:
    """The first thing wrong with ``options`` as a request, or None. Shared by builder and parser."""
    o = options
    if o.model is not None and not nonempty_str(o.model):
        return "model must be a non-empty string"
    if not nonempty_str(o.language):
        return "language must be a non-empty string"
    if o.encoding is not None and o.encoding not in LISTEN_ENCODINGS:
        return f"unknown encoding {o.encoding!r}"
    if o.sample_rate is not None and not (_is_int(o.sample_rate) and o.sample_rate > 0):
        return "sample_rate must be a positive integer"
    if o.encoding is not None and o.sample_rate is None:
        return "sample_rate is required when encoding is given"
    if not (_is_int(o.channels) and o.channels >= 1):
        return "channels must be an integer >= 1"
    if o.endpointing is not False and not (_is_int(o.endpointing) and o.endpointing >= 0):
        return "endpointing must be a non-negative integer (ms) or False"
    if o.utterance_end_ms is not None:
        if not (_is_int(o.utterance_end_ms) and o.utterance_end_ms > 0):
            return "utterance_end_ms must be a positive integer"
    for name in ("interim_results", "vad_events", "smart_format", "punctuate", "no_delay"):
        if type(getattr(o, name)) is not bool:
            return f"{name} must be a bool"
    if not all(nonempty_str(term) for term in o.keyterm):
        return "every keyterm must be a non-empty string"
    return extra_problem(o.extra, _LISTEN_PARAMS)


def _bool_text(value: bool) -> str:
    return "true" if value else "false"


def _listen_pairs(o: ListenOptions) -> list[tuple[str, str]]:
    pairs: list[tuple[str, str]] = []
    if o.model is not None:
        pairs.append(("model", o.model))
    pairs.append(("language", o.language))
    if o.encoding is not None:
        pairs.append(("encoding", o.encoding))
    if o.sample_rate is not None:
        pairs.append(("sample_rate", str(o.sample_rate)))
    pairs.append(("channels", str(o.channels)))
    pairs.append(("interim_results", _bool_text(o.interim_results)))
    pairs.append(("endpointing", "false" if o.endpointing is False else str(o.endpointing)))
    if o.utterance_end_ms is not None:
        pairs.append(("utterance_end_ms", str(o.utterance_end_ms)))
    pairs.append(("vad_events", _bool_text(o.vad_events)))
    pairs.append(("smart_format", _bool_text(o.smart_format)))
    pairs.append(("punctuate", _bool_text(o.punctuate)))
    if o.no_delay:
        pairs.append(("no_delay", "true"))
    pairs.extend(("keyterm", term) for term in o.keyterm)
    pairs.extend(o.extra.items())
    return pairs


def build_listen_url(base_url: str, options: ListenOptions) -> str:
    """The WebSocket URL for ``options``, e.g. ``build_listen_url(LISTEN_URL, ListenOptions())``.

    Booleans are written lowercase ``true``/``false``. Raises LocalProtocolError for an invalid
    combination: ``encoding`` without ``sample_rate``, ``utterance_end_ms`` without
    ``interim_results``, an unknown encoding, a wrongly typed field, or ``extra`` repeating a
    typed parameter.
    """
    if not isinstance(options, ListenOptions):
        raise LocalProtocolError(f"expected ListenOptions, got {type(options).__name__}")
    problem = _listen_problem(options)
    if problem is None and options.utterance_end_ms is not None and not options.interim_results:
        problem = "utterance_end_ms needs interim_results=True"
    if problem is not None:
        raise LocalProtocolError(problem)
    return join_query(base_url, _listen_pairs(options))


def parse_listen_query(
    query: str | bytes,
    *,
    require_model: bool = True,
    require_interim_for_utterance_end: bool = True,
    min_utterance_end_ms: int = 0,
) -> ListenOptions:
    """The emulator's inverse of :func:`build_listen_url`: what did the client ask for?

    Accepts a bare query string, one starting with ``?``, a request path or a whole URL. Parameter
    order does not matter; parameters left out take :data:`LISTEN_SERVER_DEFAULTS`; unknown ones
    are kept in ``extra`` (never refused). ``parse_listen_query(build_listen_url(u, o)) == o`` for
    every valid ``o``.

    Deepgram's exact refusals are UNCONFIRMED, hence the switches: ``require_model`` refuses a
    missing ``model``; ``require_interim_for_utterance_end`` refuses ``utterance_end_ms`` without
    ``interim_results=true``; ``min_utterance_end_ms=1000`` refuses smaller values, as a support
    answer claimed Deepgram does.

    Raises:
        RemoteProtocolError: for anything the emulator should answer with HTTP 400; the reason
            says what.
    """
    single, multi, unknown = collect_params(
        split_query(query), _LISTEN_PARAMS - {"keyterm"}, frozenset({"keyterm"})
    )
    d = LISTEN_SERVER_DEFAULTS
    values: dict[str, Any] = {}
    for name, value in single.items():
        if name in ("model", "language", "encoding"):
            if not value:
                raise RemoteProtocolError(f"{name} must not be empty")
            values[name] = value
        elif name in ("sample_rate", "channels", "utterance_end_ms"):
            values[name] = parse_uint(name, value)
        elif name == "endpointing":
            values[name] = False if value == "false" else parse_uint(name, value)
        else:
            values[name] = parse_bool(name, value)
    options = attrs.evolve(d, keyterm=tuple(multi["keyterm"]), extra=unknown, **values)
    if require_model and options.model is None:
        raise RemoteProtocolError("model is required")
    problem = _listen_problem(options)
    if problem is not None:
        raise RemoteProtocolError(problem)
    if options.utterance_end_ms is not None:
        if require_interim_for_utterance_end and not options.interim_results:
            raise RemoteProtocolError("utterance_end_ms needs interim_results=true")
        if options.utterance_end_ms < min_utterance_end_ms:
            raise RemoteProtocolError(f"utterance_end_ms must be at least {min_utterance_end_ms}")
    return options


# -- authentication --------------------------------------------------------------------------------

AuthScheme: TypeAlias = Literal["token", "bearer"]
_SCHEMES: Final[Mapping[str, AuthScheme]] = {"token": "token", "bearer": "bearer"}
_CREDENTIAL = re.compile(r"[\x21-\x7e]+")  # visible ASCII, no spaces: a key or a JWT


def auth_header(api_key: str, *, scheme: Literal["Token", "Bearer"] = "Token") -> tuple[bytes, bytes]:
    """``(b"Authorization", b"Token <key>")`` for trio-websocket's ``extra_headers``.

    Use ``scheme="Bearer"`` for a temporary JWT. Raises LocalProtocolError for an empty key or one
    holding spaces or control characters (they would break or inject header lines).
    """
    if scheme not in ("Token", "Bearer"):
        raise LocalProtocolError("scheme must be 'Token' or 'Bearer'")
    if not isinstance(api_key, str) or _CREDENTIAL.fullmatch(api_key) is None:
        raise LocalProtocolError("API key must be non-empty visible ASCII without spaces")
    return b"Authorization", f"{scheme} {api_key}".encode("ascii")


@attrs.frozen
class Credential:
    """What a client presented. ``subprotocol`` is the one the server must select (browser style)."""

    scheme: AuthScheme
    secret: str = attrs.field(repr=False)
    subprotocol: str | None = None


def parse_auth(
    authorization: str | bytes | None = None, subprotocols: Sequence[str] = ()
) -> Credential:
    """The emulator's reading of a handshake's credentials (it answers failures with HTTP 401).

    Accepts an ``Authorization`` header ``Token <key>`` or ``Bearer <jwt>`` (scheme in any case: the
    SDK writes ``bearer``), else the subprotocol pair ``["token", <key>]`` (``["bearer", <jwt>]``
    is accepted too, though UNCONFIRMED). The header wins when both are present. Reasons never
    contain the secret.
    """
    if authorization is not None:
        try:
            text = (
                authorization.decode("ascii")
                if isinstance(authorization, bytes | bytearray)
                else authorization
            )
            if not isinstance(text, str):
                raise TypeError
        except (UnicodeDecodeError, TypeError):
            raise RemoteProtocolError(
                "Authorization header is not ASCII text", close_code=CLOSE_POLICY_VIOLATION
            ) from None
        scheme_text, _, secret = text.strip().partition(" ")
        scheme = _SCHEMES.get(scheme_text.lower())
        secret = secret.strip()
        if scheme is None:
            raise RemoteProtocolError(
                "Authorization scheme must be Token or Bearer", close_code=CLOSE_POLICY_VIOLATION
            )
        if _CREDENTIAL.fullmatch(secret) is None:
            raise RemoteProtocolError(
                "Authorization credential is empty or malformed", close_code=CLOSE_POLICY_VIOLATION
            )
        return Credential(scheme=scheme, secret=secret)
    offered = [p for p in subprotocols if isinstance(p, str)]
    for index, name in enumerate(offered):
        scheme = _SCHEMES.get(name.lower())
        if scheme is None:
            continue
        if index + 1 < len(offered) and _CREDENTIAL.fullmatch(offered[index + 1]):
            return Credential(scheme=scheme, secret=offered[index + 1], subprotocol=name)
        break
    raise RemoteProtocolError("no credentials presented", close_code=CLOSE_POLICY_VIOLATION)
