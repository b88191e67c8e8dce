"""How Telnyx Call Control JSON is read and written: REST response bodies and webhooks alike.

:func:`make_converter` builds the cattrs converter each of :mod:`protocols.telnyx_responses` and
:mod:`protocols.telnyx_webhooks` holds: strict primitives (no ``str(123)`` or ``int(4.7)``
coercion, see :mod:`protocols.jsonwire`), numbers as ints or decimal strings (as the media stream
reads them, :func:`protocols.telnyx_fields.wire_int`), a number as a string tolerated where a
float is expected, base64 ``bytes``, the ``from`` <-> ``from_`` rename, and optional fields left
out while they hold their default. :func:`structure` turns cattrs' exception groups into one
reason in Telnyx's wording (``expected a string, got int @ data.payload.call_control_id``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs
import cattrs
from cattrs import ClassValidationError, IterableValidationError
from cattrs.gen import make_dict_structure_fn, make_dict_unstructure_fn, override
from cattrs.preconf.orjson import OrjsonConverter
from cattrs.preconf.orjson import make_converter as _make_orjson_converter
from cattrs.v import format_exception

from protocols.errors import LocalProtocolError, ProtocolError, RemoteProtocolError
from protocols.jsonwire import (
    InvalidValue,
    b64decode,
    b64encode,
    dumps,
    expected,
    load_object,
    strict_bool,
    strict_object,
    strict_str,
    validation_problems,
)
from protocols.telnyx_fields import wire_int

__all__ = [
    "data_object",
    "dumps",
    "load_body",
    "make_converter",
    "normal_form",
    "structure",
    "unstructure",
]


def _wire_int(value: object, _: type) -> int:
    # Ints or decimal strings ("attempt": "1" would be plausible), never bool or float.
    try:
        return wire_int(value, "value")
    except RemoteProtocolError:
        raise expected("an integer", value) from None


def _tolerant_float(value: object, _: type) -> float:
    if type(value) in (int, float):
        return float(value)  # type: ignore[arg-type]
    if type(value) is str:  # confidence "0.97" tolerated; 'nan'/'inf' are not numbers here
        try:
            number = float(value)
        except ValueError:
            pass
        else:
            if number == number and abs(number) != float("inf"):
                return number
    raise expected("a number", value)


def _b64(value: object, _: type) -> bytes:
    if type(value) is not str:
        raise expected("a base64 string", value)
    try:
        return b64decode(value)
    except ValueError as exc:
        raise InvalidValue(f"invalid base64 ({exc})") from None


def _renames(cls: type) -> dict[str, Any]:
    return {"from_": override(rename="from")} if "from_" in attrs.fields_dict(cls) else {}


def make_converter() -> OrjsonConverter:
    """A converter for Telnyx REST and webhook classes (every attrs class gets generated hooks)."""
    converter = _make_orjson_converter(detailed_validation=True, forbid_extra_keys=False)
    converter.register_structure_hook(str, strict_str)
    converter.register_structure_hook(int, _wire_int)
    converter.register_structure_hook(bool, strict_bool)
    converter.register_structure_hook(float, _tolerant_float)
    converter.register_structure_hook_func(lambda t: t == dict[str, Any], strict_object)
    converter.register_structure_hook(bytes, _b64)
    converter.register_unstructure_hook(bytes, b64encode)
    converter.register_structure_hook_factory(
        attrs.has, lambda cls: make_dict_structure_fn(cls, converter, **_renames(cls))
    )
    converter.register_unstructure_hook_factory(
        attrs.has,
        lambda cls: make_dict_unstructure_fn(
            cls, converter, _cattrs_omit_if_default=True, **_renames(cls)
        ),
    )
    return converter


def _describe_exception(exc: BaseException, type_: type | None) -> str:
    if isinstance(exc, ProtocolError):
        return exc.reason
    if isinstance(exc, InvalidValue):
        if exc.expected is not None:  # Telnyx reasons name Python types: "got int"
            return f"expected {exc.expected}, got {type(exc.value).__name__}"
        return str(exc)
    if isinstance(exc, KeyError):
        return "required field missing"
    return format_exception(exc, type_)


def structure(converter: cattrs.Converter, value: Any, cls: type, where: str) -> Any:
    """Structure with ``converter``, turning cattrs' exception groups into one readable reason."""
    try:
        return converter.structure(value, cls)
    except (ClassValidationError, IterableValidationError) as exc:
        problems = validation_problems(exc, path=where, describe=_describe_exception)
        messages = [f"{problem} @ {path}" for path, problem in problems]
        reason = "; ".join(messages[:3]).replace(".from_", ".from")
        raise RemoteProtocolError(reason or f"invalid {where}") from None
    except ProtocolError as exc:
        raise RemoteProtocolError(f"{where}: {exc.reason}") from None
    except (TypeError, ValueError, KeyError, AttributeError) as exc:  # safety net
        raise RemoteProtocolError(f"invalid {where} ({type(exc).__name__})") from None


def load_body(body: bytes | str, what: str) -> dict[str, Any]:
    """A REST or webhook body that must be a JSON object."""
    return load_object(body, what=what)


def data_object(envelope: dict[str, Any], what: str) -> dict[str, Any]:
    """The envelope's ``data`` object."""
    data = envelope.get("data")
    if type(data) is not dict:
        raise RemoteProtocolError(f"{what}: 'data' must be an object, got {type(data).__name__}")
    return data


def normal_form(encoded: bytes, original: Any, decoder: Callable[[bytes], Any]) -> bytes:
    """Decode what we encoded: the emulator must only emit what our parser accepts, unchanged."""
    try:
        again = decoder(encoded)
    except RemoteProtocolError as exc:
        raise LocalProtocolError(f"cannot encode {type(original).__name__}: {exc.reason}") from None
    if again != original:
        raise LocalProtocolError(f"{type(original).__name__} is not in normal form (decodes as {again!r})")
    return encoded


def unstructure(converter: cattrs.Converter, value: Any, what: str) -> Any:
    """``converter.unstructure`` with a failure as LocalProtocolError."""
    try:
        return converter.unstructure(value)
    except (TypeError, ValueError, AttributeError) as exc:
        raise LocalProtocolError(f"cannot encode {what}: {exc}") from None

