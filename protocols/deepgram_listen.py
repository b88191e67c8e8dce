"""Deepgram live speech-to-text (``/v1/listen``) on the wire: messages, codecs, URL, auth, close codes.

Sans-I/O, after h11/wsproto: this package turns text frames into frozen attrs messages and back, builds
and parses the handshake's query string and ``Authorization`` header, and says what a close frame
means for the link. It opens nothing; ``actors/deepgram_link.py`` (client) and the Deepgram emulator in
``bench/`` (server) drive it. Audio travels as binary frames of raw bytes and is not parsed here; note
that an *empty* binary frame means CloseStream to the server, so a client must never send one.

One union per direction, one cattrs converter (orjson preconf) built at import with a tagged union keyed
on the wire's own ``type`` field. Decoding is strict about types (a string is not a number, ``"false"``
is not a boolean) and tolerant about presence: fields the fact sheet marks optional or UNCONFIRMED have
defaults, unknown fields are ignored, and an unknown ``type`` becomes :class:`UnknownMessage`, which a
client must skip. Encoders always write the full documented shape, so the emulator speaks like Deepgram.

Every error leaving this module is a :class:`~protocols.errors.RemoteProtocolError` (the peer sent
garbage) or a :class:`~protocols.errors.LocalProtocolError` (we misused a builder).

This module is the public face; the work is done in:

* :mod:`protocols.deepgram_options`: :class:`ListenOptions`, the URL and the credentials;
* :mod:`protocols.deepgram_messages`: server and client messages, the converter, the codecs;
* :mod:`protocols.deepgram_close`: close codes and what a close means for the link;
* :mod:`protocols.jsonwire` and :mod:`protocols.querystring`: the strict JSON and query-string
  plumbing (also used by :mod:`protocols.deepgram_speak`), re-exported here under their old names.
"""

from __future__ import annotations

from protocols.deepgram_close import (
    CLOSE_ABNORMAL,
    CLOSE_AFTER_CLOSE_STREAM,
    CLOSE_DATA_0000,
    CLOSE_GOING_AWAY,
    CLOSE_INTERNAL_ERROR,
    CLOSE_NET_0000,
    CLOSE_NET_0001,
    CLOSE_NORMAL,
    DATA_0000_REASON,
    NET_0000_REASON,
    NET_0001_REASON,
    CloseVerdict,
    Recovery,
    ServerClose,
    classify_close,
    classify_handshake,
    close_error_code,
)
from protocols.deepgram_close import CLOSE_SERVICE_RESTART as CLOSE_SERVICE_RESTART
from protocols.deepgram_close import CLOSE_TRY_AGAIN_LATER as CLOSE_TRY_AGAIN_LATER
from protocols.deepgram_messages import (
    CONVERTER,
    IDLE_TIMEOUT_S,
    KEEPALIVE_INTERVAL_S,
    KEEPALIVE_TEXT,
    Alternative,
    Channel,
    ClientControl,
    CloseStream,
    ErrorMessage,
    Finalize,
    KeepAlive,
    Metadata,
    ModelInfo,
    Results,
    ResultsMetadata,
    ServerMessage,
    SpeechStarted,
    UtteranceEnd,
    Word,
    decode_client_text,
    decode_server,
    encode_client,
    encode_server,
    schema_error,
    shifted,
)
from protocols.deepgram_options import (
    LISTEN_ENCODINGS,
    LISTEN_SERVER_DEFAULTS,
    LISTEN_URL,
    Credential,
    ListenOptions,
    auth_header,
    build_listen_url,
    parse_auth,
    parse_listen_query,
)
from protocols.deepgram_options import AuthScheme as AuthScheme
from protocols.jsonwire import UnknownMessage

# Also importable from here, as before the split, though not in __all__: the strict JSON and
# query-string helpers that deepgram_speak used to import from this module (``x as x`` marks a
# deliberate re-export).
from protocols.jsonwire import dump_tagged as dump_tagged
from protocols.jsonwire import encode_unknown as encode_unknown
from protocols.jsonwire import load_object as load_object
from protocols.jsonwire import make_strict_converter as make_strict_converter
from protocols.jsonwire import message_tag as message_tag
from protocols.jsonwire import omit_none_fields as omit_none_fields
from protocols.jsonwire import structure_or_raise as structure_or_raise
from protocols.jsonwire import structure_unknown as structure_unknown
from protocols.querystring import collect_params as collect_params
from protocols.querystring import extra_problem as extra_problem
from protocols.querystring import frozen_mapping as frozen_mapping
from protocols.querystring import join_query as join_query
from protocols.querystring import parse_bool as parse_bool
from protocols.querystring import parse_uint as parse_uint
from protocols.querystring import split_query as split_query
__all__ = [
    "CLOSE_ABNORMAL",
    "CLOSE_AFTER_CLOSE_STREAM",
    "CLOSE_DATA_0000",
    "CLOSE_GOING_AWAY",
    "CLOSE_INTERNAL_ERROR",
    "CLOSE_NET_0000",
    "CLOSE_NET_0001",
    "CLOSE_NORMAL",
    "CONVERTER",
    "DATA_0000_REASON",
    "IDLE_TIMEOUT_S",
    "KEEPALIVE_INTERVAL_S",
    "KEEPALIVE_TEXT",
    "LISTEN_ENCODINGS",
    "LISTEN_SERVER_DEFAULTS",
    "LISTEN_URL",
    "NET_0000_REASON",
    "NET_0001_REASON",
    "Alternative",
    "Channel",
    "ClientControl",
    "CloseStream",
    "CloseVerdict",
    "Credential",
    "ErrorMessage",
    "Finalize",
    "KeepAlive",
    "ListenOptions",
    "Metadata",
    "ModelInfo",
    "Recovery",
    "Results",
    "ResultsMetadata",
    "ServerClose",
    "ServerMessage",
    "SpeechStarted",
    "UnknownMessage",
    "UtteranceEnd",
    "Word",
    "auth_header",
    "build_listen_url",
    "classify_close",
    "classify_handshake",
    "close_error_code",
    "decode_client_text",
    "decode_server",
    "encode_client",
    "encode_server",
    "parse_auth",
    "parse_listen_query",
    "schema_error",
    "shifted",
]
