"""The shared strict-JSON plumbing: no coercion, and every failure is one of our two errors."""

from __future__ import annotations

import math
from typing import Any

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocols.errors import CLOSE_INVALID_PAYLOAD, LocalProtocolError, RemoteProtocolError
from protocols.jsonwire import (
    InvalidValue,
    b64decode,
    b64encode,
    json_kind,
    load_object,
    make_strict_converter,
    message_tag,
    strict_bool,
    strict_float,
    strict_int,
    strict_number,
    strict_object,
    strict_str,
    structure_or_raise,
)


@pytest.mark.parametrize(
    ("hook", "value"),
    [
        (strict_str, 5), (strict_str, None), (strict_int, True), (strict_int, 1.0),
        (strict_int, "7"), (strict_bool, "false"), (strict_bool, 0), (strict_float, "1.5"),
        (strict_float, True), (strict_float, math.inf), (strict_number, math.nan),
        (strict_number, False), (strict_object, []), (strict_object, "x"),
    ],
)  # fmt: skip
def test_strict_hooks_never_coerce(hook: Any, value: object) -> None:
    with pytest.raises(InvalidValue):
        hook(value, None)


def test_strict_hooks_pass_the_right_types() -> None:
    assert strict_float(3, float) == 3.0 and type(strict_float(3, float)) is float
    assert strict_number(1640995200000, float) == 1640995200000
    assert type(strict_number(1640995200000, float)) is int
    assert strict_bool(False, bool) is False and strict_int(0, int) == 0


def test_json_kind_speaks_json() -> None:
    kinds = [json_kind(v) for v in (None, True, 1, 1.5, "s", [1], {"a": 1})]
    assert kinds == ["null", "boolean", "number", "number", "string", "array", "object"]


@pytest.mark.parametrize(
    ("text", "reason"),
    [("", "is not valid JSON"), ("{", "is not valid JSON"), ("[]", "must be a JSON object, got array")],
)
def test_load_object_refusals(text: str, reason: str) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        load_object(text, what="frame")
    assert info.value.reason.startswith("frame ") and reason in info.value.reason


def test_load_object_close_codes_and_local_misuse() -> None:
    with pytest.raises(RemoteProtocolError) as info:
        load_object(b'{"a":"\xff"}', what="frame", utf8_close_code=CLOSE_INVALID_PAYLOAD)
    assert info.value.close_code == CLOSE_INVALID_PAYLOAD
    with pytest.raises(LocalProtocolError):
        load_object(5, what="frame")  # type: ignore[arg-type]
    with pytest.raises(RemoteProtocolError, match="has no 'event'"):
        message_tag({}, what="frame", close_code=1002, key="event")


@attrs.frozen
class _Point:
    x: int
    tags: tuple[str, ...] = ()


def test_structure_or_raise_names_the_json_path() -> None:
    converter = make_strict_converter()
    assert structure_or_raise(converter, {"x": 1, "tags": ["a"]}, _Point, what="p", close_code=1008) \
        == _Point(1, ("a",))
    for bad, needle in (({"x": "1"}, "$.x"), ({"x": 1, "tags": "ab"}, "$.tags"), ([], "expected an object")):
        with pytest.raises(RemoteProtocolError) as info:
            structure_or_raise(converter, bad, _Point, what="p", close_code=1008)
        assert info.value.close_code == 1008 and needle in info.value.reason


@given(st.binary(max_size=64))
def test_base64_round_trip(data: bytes) -> None:
    assert b64decode(b64encode(data)) == data


@pytest.mark.parametrize("text", ["AAE", "AA EC", "AA-_", "ÀÀÀÀ", "AAE=\n"])
def test_base64_is_strict(text: str) -> None:
    with pytest.raises(ValueError):
        b64decode(text)
