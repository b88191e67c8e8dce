"""Strict JSON on the wire: the plumbing every protocol module reads and writes JSON with.

A peer's JSON is read strictly about types and leniently about presence. cattrs' defaults coerce
(``bool("false") is True``, ``int("7")``, a string iterated as a list, ``[]`` read as an
all-defaults object); a protocol parser must not. So this module holds, once: :func:`json_kind`
for reasons a peer can read; :class:`InvalidValue`, what structure hooks raise (a ``TypeError``,
so cattrs' formatting and every safety net treat it as a type problem); the strict hooks and
:func:`make_strict_converter`; :func:`load_object` and :func:`message_tag` (bad JSON becomes a
RemoteProtocolError, a non-text argument a LocalProtocolError); :func:`validation_problems` and
:func:`structure_or_raise` (cattrs' exception groups as one reason naming JSON paths);
:func:`dumps`; unions tagged on ``type`` with an :class:`UnknownMessage` fallback
(:func:`configure_type_union`, :func:`decode_tagged`, :func:`encode_tagged`); strict base64.

Each protocol keeps its own wording where its tests and peers rely on it (a Telnyx reason says
``got int``, a relay or Anthropic one ``got number``); the checks themselves live here.
"""

from __future__ import annotations

import binascii
import math
import typing
from collections.abc import Callable, Collection, Mapping
from typing import Any, Final

import attrs
import cattrs
import orjson
from cattrs.errors import IterableValidationError, IterableValidationNote
from cattrs.gen import make_dict_structure_fn, make_dict_unstructure_fn, override
from cattrs.preconf.orjson import OrjsonConverter
from cattrs.preconf.orjson import make_converter as _make_orjson_converter
from cattrs.strategies import configure_tagged_union
from cattrs.v import format_exception, transform_error

from protocols.errors import CLOSE_PROTOCOL_ERROR, LocalProtocolError, RemoteProtocolError

__all__ = [
    "REASON_LIMIT_CHARS",
    "InvalidValue",
    "UnknownMessage",
    "b64decode",
    "b64encode",
    "configure_type_union",
    "decode_tagged",
    "dump_tagged",
    "dumps",
    "encode_tagged",
    "encode_unknown",
    "expected",
    "json_kind",
    "load_object",
    "make_strict_converter",
    "message_tag",
    "objects_only",
    "omit_none_fields",
    "strict_bool",
    "strict_float",
    "strict_int",
    "strict_number",
    "strict_object",
    "strict_str",
    "structure_or_raise",
    "structure_unknown",
    "validation_problems",
]

#: Characters of validation detail kept in an error's reason.
REASON_LIMIT_CHARS: Final = 300

#: What ``orjson.loads`` takes.
_TEXT_TYPES: Final = (str, bytes, bytearray, memoryview)


# -- describing values ---------------------------------------------------------------------------


def json_kind(value: object) -> str:
    """The JSON name of ``value``'s type: null, boolean, number, string, array or object."""
    if value is None:
        return "null"
    if value is True or value is False:
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, (list, tuple)):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


class InvalidValue(TypeError):
    """Raised inside structure hooks; its text is the whole description of what is wrong.

    ``expected`` (what a plain type check wanted, ``"a string"``) and ``value`` (what it got) let a
    module that words reasons its own way (Python type names, not JSON kinds) render them itself.
    """

    def __init__(self, reason: str, *, expected: str | None = None, value: object = None) -> None:
        super().__init__(reason)
        self.expected = expected
        self.value = value


def expected(what: str, value: object) -> InvalidValue:
    """``InvalidValue("expected <what>, got <json kind>")``, e.g. ``expected("a string", 5)``."""
    return InvalidValue(f"expected {what}, got {json_kind(value)}", expected=what, value=value)


# -- strict structure hooks ----------------------------------------------------------------------


def strict_str(value: object, _: object = None) -> str:
    if type(value) is str:
        return value
    raise expected("a string", value)


def strict_int(value: object, _: object = None) -> int:
    # bool is an int in Python but not a number on the wire; orjson turns integers beyond 64 bits
    # into floats, which land here and are refused.
    if type(value) is int:
        return value
    raise expected("an integer", value)


def strict_bool(value: object, _: object = None) -> bool:
    if type(value) is bool:
        return value
    raise expected("true or false", value)


def strict_float(value: object, _: object = None) -> float:
    """A JSON number as a finite float (an integer is converted)."""
    if type(value) is float:
        result = value
    elif type(value) is int:
        result = float(value)  # may raise OverflowError for huge ints from the stdlib parser
    else:
        raise expected("a number", value)
    if not math.isfinite(result):
        raise InvalidValue("expected a finite number")
    return result


def strict_number(value: object, _: object = None) -> int | float:
    """A JSON number as sent: an int stays an int (``1640995200000`` is not ``1.6e12``)."""
    if type(value) is int or (type(value) is float and math.isfinite(value)):
        return value
    raise expected("a number", value)


def strict_object(value: object, _: object = None) -> dict[str, Any]:
    """``value`` if it is a JSON object, else :class:`InvalidValue` (also a structure hook)."""
    if type(value) is dict:
        return value
    raise expected("an object", value)


def objects_only(hook: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
    """Wrap a structure hook so a non-object says so (not "expected a string" for each field).

    Without it a class whose fields all have defaults would accept ``[]`` or ``"x"``.
    """

    def structure(value: Any, cl: Any) -> Any:
        if type(value) is not dict:
            raise expected("an object", value)
        return hook(value, cl)

    return structure


def _is_homogeneous_tuple(tp: Any) -> bool:
    args = typing.get_args(tp)
    return typing.get_origin(tp) is tuple and len(args) == 2 and args[1] is Ellipsis


def _homogeneous_tuple_hook(tp: Any, converter: cattrs.Converter) -> Callable[[Any, Any], tuple[Any, ...]]:
    item_type = typing.get_args(tp)[0]
    item_hook = converter.get_structure_hook(item_type)

    def structure(value: Any, _: Any) -> tuple[Any, ...]:
        # Without this check cattrs would happily iterate a string or an object's keys.
        if type(value) is not list:
            raise expected("an array", value)
        items: list[Any] = []
        errors: list[Exception] = []
        for index, item in enumerate(value):
            try:
                items.append(item_hook(item, item_type))
            except Exception as exc:  # collected into cattrs' group, as its own hooks do
                note = IterableValidationNote(f"Structuring {tp} @ index {index}", index, item_type)
                exc.add_note(note)
                errors.append(exc)
        if errors:
            raise IterableValidationError(f"While structuring {tp!r}", errors, tp)
        return tuple(items)

    return structure


def _object_hook(cl: type, converter: cattrs.Converter) -> Callable[[Any, Any], Any]:
    return objects_only(make_dict_structure_fn(cl, converter))


def make_strict_converter() -> OrjsonConverter:
    """An orjson-preconf converter that refuses JSON values of the wrong type.

    Primitives, homogeneous tuples (a JSON array, nothing else) and attrs classes (a JSON object,
    nothing else) get strict hooks. Detailed validation stays on: its error groups carry the JSON
    path of every problem, which :func:`structure_or_raise` turns into a one-line reason.
    """
    converter = _make_orjson_converter(detailed_validation=True, forbid_extra_keys=False)
    converter.register_structure_hook(str, strict_str)
    converter.register_structure_hook(bool, strict_bool)
    converter.register_structure_hook(int, strict_int)
    converter.register_structure_hook(float, strict_float)
    converter.register_structure_hook_factory(_is_homogeneous_tuple, _homogeneous_tuple_hook)
    converter.register_structure_hook_factory(attrs.has, _object_hook)
    return converter


def omit_none_fields(converter: cattrs.Converter, cls: type, *names: str) -> None:
    """Unstructure ``cls`` leaving out the named optional fields while they are ``None``."""
    overrides: dict[str, Any] = {name: override(omit_if_default=True) for name in names}
    converter.register_unstructure_hook(cls, make_dict_unstructure_fn(cls, converter, **overrides))


# -- text -> object ------------------------------------------------------------------------------


def load_object(
    text: str | bytes | bytearray | memoryview,
    *,
    what: str,
    close_code: int = CLOSE_PROTOCOL_ERROR,
    utf8_close_code: int | None = None,
    invalid: str = "is not valid JSON",
) -> dict[str, Any]:
    """Parse one JSON text that must hold an object.

    Args:
        what: names the text in reasons (``"frame"``, ``"webhook"``): ``"<what> is not valid
            JSON (...)"``, ``"<what> must be a JSON object, got array"``.
        close_code: carried by the RemoteProtocolError.
        utf8_close_code: the close code when the text is not UTF-8 (default: ``close_code``).
        invalid: the words after ``what`` for text that is not JSON.

    Raises:
        RemoteProtocolError: not JSON (or not UTF-8), or JSON that is not an object.
        LocalProtocolError: ``text`` is not str or bytes (our bug, not the peer's).
    """
    if not isinstance(text, _TEXT_TYPES):
        raise LocalProtocolError(f"{what}: expected str or bytes, got {type(text).__name__}")
    try:
        obj = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        detail = str(exc)
        code = close_code
        if utf8_close_code is not None and ("UTF-8" in detail or "surrogate" in detail):
            code = utf8_close_code
        raise RemoteProtocolError(f"{what} {invalid} ({detail[:80]})", close_code=code) from None
    if type(obj) is not dict:
        raise RemoteProtocolError(
            f"{what} must be a JSON object, got {json_kind(obj)}", close_code=close_code
        )
    return obj


def message_tag(obj: Mapping[str, Any], *, what: str, close_code: int, key: str = "type") -> str:
    """The tag field (``type``, Telnyx's ``event``) of a decoded object, which must be a string."""
    tag = obj.get(key)
    if type(tag) is not str:
        if tag is None:
            raise RemoteProtocolError(f"{what} has no '{key}'", close_code=close_code)
        raise RemoteProtocolError(
            f"{what}: {key}: expected a string, got {json_kind(tag)}", close_code=close_code
        )
    return tag


# -- cattrs errors -> one reason -----------------------------------------------------------------


def validation_problems(
    exc: BaseException,
    *,
    path: str = "$",
    describe: Callable[[BaseException, type | None], str] = format_exception,
) -> list[tuple[str, str]]:
    """Every problem in a cattrs exception group as ``(json path, description)`` pairs.

    ``describe`` words one exception (cattrs' default: ``"invalid value for type, expected
    int"``); the caller joins the pairs in its protocol's style.
    """
    split = (problem.rpartition(" @ ") for problem in transform_error(exc, path, describe))
    return [(where, what) for what, _, where in split]


def structure_or_raise(
    converter: cattrs.Converter, obj: Any, cl: Any, *, what: str, close_code: int
) -> Any:
    """``converter.structure`` with every failure turned into one RemoteProtocolError.

    The reason is ``"<what>: <problem> @ <json path>; ..."``, cut to :data:`REASON_LIMIT_CHARS`.
    """
    try:
        return converter.structure(obj, cl)
    except cattrs.BaseValidationError as exc:
        detail = "; ".join(f"{problem} @ {where}" for where, problem in validation_problems(exc))
    except (KeyError, TypeError, ValueError, AttributeError, OverflowError, RecursionError) as exc:
        detail = f"{type(exc).__name__}: {exc}"
    if len(detail) > REASON_LIMIT_CHARS:
        detail = detail[: REASON_LIMIT_CHARS - 3] + "..."
    raise RemoteProtocolError(f"{what}: {detail}", close_code=close_code)


# -- object -> text ------------------------------------------------------------------------------


def dumps(value: Any, what: str) -> bytes:
    """``orjson.dumps`` with a failure (a lone surrogate, a foreign object) as LocalProtocolError."""
    try:
        return orjson.dumps(value)
    except (TypeError, orjson.JSONEncodeError) as exc:  # JSONEncodeError is a TypeError
        raise LocalProtocolError(f"cannot encode {what}: {exc}") from None


def dump_tagged(converter: cattrs.Converter, msg: Any, tag: str) -> str:
    """``{"type": tag, ...fields}`` as compact JSON text."""
    try:
        body = converter.unstructure(msg, type(msg))
        return orjson.dumps({"type": tag, **body}).decode()
    except (TypeError, ValueError) as exc:  # orjson.JSONEncodeError is a TypeError
        raise LocalProtocolError(f"cannot encode {type(msg).__name__}: {exc}") from None


# -- the fallback of a union tagged on ``type`` --------------------------------------------------


@attrs.frozen
class UnknownMessage:
    """A server message whose ``type`` this module does not know. Clients must skip it, never fail.

    ``raw`` is the whole decoded object, ``type`` included.
    """

    type: str
    raw: Mapping[str, Any] = attrs.field(hash=False)


def structure_unknown(obj: Mapping[str, Any], _: Any) -> UnknownMessage:
    """The tagged union's fallback hook (the tag was checked by :func:`message_tag`)."""
    return UnknownMessage(type=obj["type"], raw=obj)


def encode_unknown(msg: UnknownMessage) -> str:
    """Put an :class:`UnknownMessage` back on the wire, ``type`` first."""
    body = {key: value for key, value in msg.raw.items() if key != "type"}
    return dumps({"type": msg.type, **body}, "UnknownMessage").decode()


def configure_type_union(
    converter: cattrs.Converter, union: Any, tags: Mapping[type, str], *, unknown: bool = False
) -> None:
    """Make ``union`` a tagged union on the wire's ``type`` field, with ``tags`` naming each class.

    With ``unknown``, an object whose ``type`` is not in ``tags`` becomes an
    :class:`UnknownMessage` (a server's new message must not break a client); without, it is an
    error.
    """
    if unknown:
        converter.register_structure_hook(UnknownMessage, structure_unknown)
    default = UnknownMessage if unknown else attrs.NOTHING
    configure_tagged_union(union, converter, tag_generator=tags.__getitem__, tag_name="type", default=default)


def decode_tagged(
    converter: cattrs.Converter,
    text: str | bytes,
    union: Any,
    *,
    what: str,
    label: str,
    close_code: int,
    known_tags: Collection[str] | None = None,
) -> Any:
    """One text frame of a union tagged on ``type``: parse, check the tag, structure.

    Args:
        what: names the frame in reasons about its JSON or tag (``"Deepgram listen message"``).
        label: names the message in reasons about its fields: ``"<label> <type> message: ..."``.
        known_tags: if given, any other ``type`` is refused (else the union's fallback takes it).
    """
    obj = load_object(text, what=what, close_code=close_code)
    tag = message_tag(obj, what=what, close_code=close_code)
    if known_tags is not None and tag not in known_tags:
        raise RemoteProtocolError(f"{what}: unknown type {tag[:40]!r}", close_code=close_code)
    return structure_or_raise(converter, obj, union, what=f"{label} {tag} message", close_code=close_code)


def encode_tagged(converter: cattrs.Converter, msg: Any, tags: Mapping[type, str], *, kind: str) -> str:
    """``msg`` as ``{"type": <its tag>, ...}`` text; LocalProtocolError ``not a <kind>`` if untagged.

    An :class:`UnknownMessage` has no tag here: a caller that may write one back uses
    :func:`encode_unknown` first.
    """
    tag = tags.get(type(msg))
    if tag is None:
        raise LocalProtocolError(f"not a {kind}: {type(msg).__name__}")
    return dump_tagged(converter, msg, tag)


# -- base64 --------------------------------------------------------------------------------------


def b64decode(text: str) -> bytes:
    """Strict standard base64: padding required, no whitespace, no url-safe alphabet.

    Raises:
        ValueError: anything else (``binascii.Error`` is one; so is a non-ASCII str).
    """
    return binascii.a2b_base64(text, strict_mode=True)


def b64encode(data: bytes) -> str:
    """Standard base64 with padding, as text."""
    return binascii.b2a_base64(data, newline=False).decode("ascii")
