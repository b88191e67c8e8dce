"""Query strings of a WebSocket handshake, both ways: build a URL's, and read one strictly.

Used by the Deepgram ``/v1/listen`` and ``/v1/speak`` options (the client builds, the emulator
reads). Reading is strict: a flag is exactly ``true``/``false``, a number plain digits, a known
parameter given twice is refused; unknown parameters are carried along, never refused.
"""

from __future__ import annotations

import re
import types
from collections.abc import Mapping, Sequence
from typing import Any, Final
from urllib.parse import parse_qsl, quote, urlencode, urlsplit

from protocols.errors import CLOSE_POLICY_VIOLATION, LocalProtocolError, RemoteProtocolError

__all__ = [
    "collect_params",
    "extra_problem",
    "frozen_mapping",
    "join_query",
    "nonempty_str",
    "parse_bool",
    "parse_uint",
    "split_query",
]

_MAX_QUERY_FIELDS: Final = 200
_DIGITS = re.compile(r"[0-9]{1,9}")


def nonempty_str(value: object) -> bool:
    """A str other than ``""``."""
    return isinstance(value, str) and value != ""


def frozen_mapping(value: Any) -> Mapping[str, str]:
    """attrs converter giving an options class a read-only copy of a mapping."""
    try:
        return types.MappingProxyType(dict(value))
    except (TypeError, ValueError):
        raise LocalProtocolError(f"expected a mapping, got {type(value).__name__}") from None


def extra_problem(extra: Mapping[str, str], typed: frozenset[str]) -> str | None:
    """What is wrong with an options class's ``extra`` parameters, or None."""
    for key, value in extra.items():
        if not nonempty_str(key) or not isinstance(value, str):
            return "extra must map non-empty strings to strings"
        if key in typed:
            return f"extra repeats the typed parameter {key!r}"
    return None


def join_query(base_url: str, pairs: Sequence[tuple[str, str]]) -> str:
    """``base_url`` plus the encoded pairs (``%20`` for spaces, as httpx writes them)."""
    if not isinstance(base_url, str) or not base_url:
        raise LocalProtocolError("base_url must be a non-empty string")
    if "#" in base_url:
        raise LocalProtocolError("base_url must not contain a fragment")
    query = urlencode(pairs, quote_via=quote)
    if not query:
        return base_url
    if "?" not in base_url:
        return f"{base_url}?{query}"
    if base_url.endswith(("?", "&")):
        return base_url + query
    return f"{base_url}&{query}"


def split_query(query: str | bytes, *, close_code: int = CLOSE_POLICY_VIOLATION) -> list[tuple[str, str]]:
    """The decoded ``(name, value)`` pairs of a query string, a path or a whole URL."""
    try:
        text = query.decode("ascii") if isinstance(query, bytes | bytearray) else query
        if not isinstance(text, str):
            raise LocalProtocolError(f"expected a query string, got {type(query).__name__}")
        if text.startswith("/") or "://" in text:
            text = urlsplit(text).query
        elif text.startswith("?"):
            text = text[1:]
        return parse_qsl(
            text, keep_blank_values=True, errors="strict", max_num_fields=_MAX_QUERY_FIELDS
        )
    except ValueError as exc:  # bad percent-encoding, non-ASCII bytes, too many fields
        raise RemoteProtocolError(f"malformed query string: {exc}", close_code=close_code) from None


def parse_bool(name: str, value: str) -> bool:
    """A query flag, exactly ``true`` or ``false`` (the SDK once sent ``True``: a bug)."""
    if value == "true":
        return True
    if value == "false":
        return False
    raise RemoteProtocolError(f"{name} must be true or false, got {value[:20]!r}")


def parse_uint(name: str, value: str) -> int:
    """A query integer of plain digits (``int()`` alone would take ``+8_000``)."""
    if _DIGITS.fullmatch(value) is None:
        raise RemoteProtocolError(f"{name} must be a whole number, got {value[:20]!r}")
    return int(value)


def collect_params(
    pairs: Sequence[tuple[str, str]], known: frozenset[str], repeatable: frozenset[str]
) -> tuple[dict[str, str], dict[str, list[str]], dict[str, str]]:
    """Split pairs into known single-valued, known repeatable and unknown parameters.

    A known parameter given twice is refused (a client bug worth a 400); for an unknown one the
    last value wins, since it is only carried along.
    """
    single: dict[str, str] = {}
    multi: dict[str, list[str]] = {name: [] for name in repeatable}
    unknown: dict[str, str] = {}
    for name, value in pairs:
        if name in repeatable:
            multi[name].append(value)
        elif name in known:
            if name in single:
                raise RemoteProtocolError(f"parameter {name!r} given more than once")
            single[name] = value
        elif name:
            unknown[name] = value
    return single, multi, unknown
