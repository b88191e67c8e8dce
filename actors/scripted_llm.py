"""ScriptedLlm: the LLM port (:mod:`actors.llm`) as a small keyword dialogue, for keyless calls.

Deterministic and local: a :class:`DialogueScript`, read from a TOML file, says what to answer
to what. The Brain cannot tell it from a model: it streams each reply as word pieces (with an
optional ``delay_s`` between them, so the pipeline streams as it would with an LLM), and a reply
that ends the call ends with the Brain's ``hangup_marker``. The system prompt is not used.

The script format (two examples ship with the package: ``actors/scripts/demo_en.toml``, for the
local English recogniser, and ``demo_es.toml``, for Deepgram)::

    language = "en"                      # informative (which voice and recogniser it suits)
    greeting = "Hello{, nombre}. ..."    # the Brain's greeting template: {nombre}, {, nombre}
    fallback = "Sorry, I did not catch that. ..."   # when no intent matches
    max_fallbacks = 2                    # fallbacks in a row; the next miss gets the goodbye
    goodbye = "I am sorry I could not help. Goodbye."   # then the call ends
    fuzzy_ratio = 0.8                    # optional: how alike a misheard word must be (1 = exact)
    phrases = ["yes", "no"]              # optional: more phrases for the recogniser's grammar

    [[intents]]
    name = "balance"
    keywords = ["balance", "account", "how much money"]  # any one of them, as whole words
    phrases = ["what is my balance"]     # optional: what callers say (grammar; matched too)
    dtmf = "1"                           # optional: the key that asks for it ("[tecla 1]")
    reply = "Your balance is ..."
    end_call = false                     # optional: true hangs up once the reply was heard

Matching looks at the caller's last message only, lower-cased with accents and punctuation
dropped; a keyword matches as whole words. A keyword word of ``FUZZY_MIN_CHARS`` or more also
matches a heard word at least ``fuzzy_ratio`` alike (``difflib``: "balanse" is 0.86 like
"balance"), for recognition errors. The best match wins (exact beats fuzzy; ties go to the
intent written first). The engine keeps no state: the count of fallbacks in a row is read from
the history the Brain sends (which holds what the caller actually heard), so one engine serves
every call and survives a Brain restart.
"""

from __future__ import annotations

import difflib
import re
import tomllib
import unicodedata
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from importlib import resources
from pathlib import Path
from typing import Any, Final

import attrs
import trio

from actors.llm import ChatMessage

__all__ = ["BUILTIN_SCRIPTS", "DialogueScript", "Intent", "ScriptError", "ScriptedLlm",
           "normalise_words"]

BUILTIN_SCRIPTS: Final = ("demo_en", "demo_es")
FUZZY_RATIO: Final = 0.8
#: Shorter keyword words must be heard exactly: "hora" is 0.89 like "ahora", "open" 0.86 like "pen".
FUZZY_MIN_CHARS: Final = 5
MAX_FALLBACKS: Final = 2

_DTMF: Final = re.compile(r"\[tecla ([0-9*#])\]")  # how the Brain writes a key press
_SCRIPT_KEYS: Final = {"language", "greeting", "fallback", "max_fallbacks", "goodbye",
                       "fuzzy_ratio", "phrases", "intents"}
_INTENT_KEYS: Final = {"name", "keywords", "phrases", "dtmf", "reply", "end_call"}


class ScriptError(ValueError):
    """A dialogue script that cannot be used; the message names the file and the problem."""


def normalise_words(text: str) -> tuple[str, ...]:
    """Words for matching: lower case, accents and punctuation dropped ("¿Qué?" -> ("que",))."""
    decomposed = unicodedata.normalize("NFD", text.lower())
    kept = "".join(c if c.isalnum() else " " for c in decomposed if not unicodedata.combining(c))
    return tuple(kept.split())


@attrs.frozen
class Intent:
    """What the caller may ask for, and the answer."""

    name: str
    keywords: tuple[str, ...]
    reply: str
    end_call: bool = False
    phrases: tuple[str, ...] = ()
    dtmf: str | None = None


@attrs.frozen
class DialogueScript:
    """A parsed script (see the module docstring for the file format)."""

    greeting: str
    fallback: str
    goodbye: str
    intents: tuple[Intent, ...]
    max_fallbacks: int = MAX_FALLBACKS
    fuzzy_ratio: float = FUZZY_RATIO
    language: str = "en"
    phrases: tuple[str, ...] = ()

    @classmethod
    def from_toml(cls, text: str, *, source: str = "<script>") -> DialogueScript:
        """Parse and check a script; :class:`ScriptError` names ``source`` and what is wrong."""
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ScriptError(f"{source}: not valid TOML: {exc}") from None
        return _parse(data, source)

    @classmethod
    def load(cls, path: str | Path) -> DialogueScript:
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ScriptError(f"{path}: cannot read the script: {exc}") from None
        return cls.from_toml(text, source=str(path))

    @classmethod
    def builtin(cls, name: str) -> DialogueScript:
        """One of the scripts shipped in ``actors/scripts`` (`BUILTIN_SCRIPTS`)."""
        if name not in BUILTIN_SCRIPTS:
            raise ScriptError(
                f"no built-in script {name!r} (there are {', '.join(BUILTIN_SCRIPTS)})")
        resource = resources.files("actors") / "scripts" / f"{name}.toml"
        return cls.from_toml(resource.read_text(encoding="utf-8"), source=f"{name}.toml")

    def match(self, utterance: str) -> Intent | None:
        """The intent ``utterance`` asks for, or None (see the module docstring)."""
        if (pressed := _DTMF.search(utterance)) is not None:
            for intent in self.intents:
                if intent.dtmf == pressed.group(1):
                    return intent
        heard = normalise_words(utterance)
        best: tuple[float, Intent] | None = None
        for intent in self.intents:
            score = max(_keyword_score(normalise_words(k), heard, self.fuzzy_ratio)
                        for k in (*intent.keywords, *intent.phrases))
            if score and (best is None or score > best[0]):
                best = (score, intent)
        return None if best is None else best[1]

    def expected_phrases(self) -> tuple[str, ...]:
        """Every keyword and phrase of the script, in order, once each."""
        found = [*self.phrases]
        for intent in self.intents:
            found += [*intent.keywords, *intent.phrases]
        return tuple(dict.fromkeys(found))


def _keyword_score(keyword: tuple[str, ...], heard: tuple[str, ...], fuzzy_ratio: float) -> float:
    """1 if ``keyword`` occurs in ``heard`` as whole words; the worst word's likeness if it does
    only fuzzily; 0 if not at all."""
    best = 0.0
    for start in range(len(heard) - len(keyword) + 1):
        worst = 1.0
        for want, got in zip(keyword, heard[start : start + len(keyword)], strict=True):
            if want == got:
                continue
            ratio = 0.0
            if len(want) >= FUZZY_MIN_CHARS and fuzzy_ratio < 1.0:
                ratio = difflib.SequenceMatcher(None, want, got).ratio()
            if ratio < fuzzy_ratio:
                worst = 0.0
                break
            worst = min(worst, ratio)
        best = max(best, worst)
    return best


@attrs.define(eq=False)
class ScriptedLlm:
    """An `LlmEngine` answering from a :class:`DialogueScript`; no keys, no network, no state.

    Args:
      script: the dialogue (:meth:`DialogueScript.load` or :meth:`DialogueScript.builtin`).
      hangup_marker: the Brain's ``hangup_marker``; a reply with ``end_call`` ends with it, so
        the Brain hangs up once it has been heard. None: the call is never ended from here.
      delay_s: pause before each piece after the first (0: all at once).
    """

    script: DialogueScript
    hangup_marker: str | None = None
    delay_s: float = 0.0

    @classmethod
    def builtin(cls, name: str, **kwargs: Any) -> ScriptedLlm:
        return cls(DialogueScript.builtin(name), **kwargs)

    @classmethod
    def load(cls, path: str | Path, **kwargs: Any) -> ScriptedLlm:
        return cls(DialogueScript.load(path), **kwargs)

    @property
    def greeting_template(self) -> str:
        """For ``Brain(greeting=...)``, which fills ``{nombre}`` and ``{, nombre}`` itself."""
        return self.script.greeting

    def greeting(self, name: str | None = None) -> str:
        """The greeting with the callee's name (``{, nombre}`` -> ", Ana", or nothing)."""
        filled = self.script.greeting.replace("{, nombre}", f", {name}" if name else "")
        return " ".join(filled.replace("{nombre}", name or "").split())

    def expected_phrases(self) -> tuple[str, ...]:
        """What callers are expected to say: ``LocalStt``'s ``SphinxOptions(phrases=...)``."""
        return self.script.expected_phrases()

    def reply_to(self, messages: Sequence[ChatMessage]) -> str:
        """The whole reply to the conversation so far (marker included)."""
        script = self.script
        heard = next((m.content for m in reversed(messages) if m.role == "user"), "")
        intent = script.match(heard)
        if intent is not None:
            return self._ending(intent.reply, intent.end_call)
        if _fallbacks_in_a_row(messages, script.fallback) >= script.max_fallbacks:
            return self._ending(script.goodbye, True)
        return script.fallback

    @asynccontextmanager
    async def stream_reply(self, *, system: str, messages: Sequence[ChatMessage]
                           ) -> AsyncIterator[AsyncIterator[str]]:
        await trio.lowlevel.checkpoint()
        yield _Pieces(_word_pieces(self.reply_to(messages)), self.delay_s)

    def _ending(self, reply: str, end_call: bool) -> str:
        return f"{reply} {self.hangup_marker}" if end_call and self.hangup_marker else reply


def _fallbacks_in_a_row(messages: Sequence[ChatMessage], fallback: str) -> int:
    """How many of the last replies the caller heard were the fallback, counting back."""
    wanted, count = normalise_words(fallback), 0
    for message in reversed(messages):
        if message.role != "assistant":
            continue
        if normalise_words(message.content) != wanted:
            break
        count += 1
    return count


def _word_pieces(text: str) -> list[str]:
    """"Your balance is" -> ["Your", " balance", " is"], as a model streams words."""
    return re.findall(r"\s*\S+", text)


@attrs.define(eq=False)
class _Pieces:
    """The reply's pieces, ``delay_s`` apart (a plain async iterator: nothing to finalise)."""

    pieces: list[str]
    delay_s: float
    _sent: int = 0

    def __aiter__(self) -> _Pieces:
        return self

    async def __anext__(self) -> str:
        if self._sent >= len(self.pieces):
            raise StopAsyncIteration
        if self._sent and self.delay_s > 0:
            await trio.sleep(self.delay_s)
        else:
            await trio.lowlevel.checkpoint()
        self._sent += 1
        return self.pieces[self._sent - 1]


# -- parsing ---------------------------------------------------------------------------------------

def _parse(data: Mapping[str, Any], source: str) -> DialogueScript:
    def fail(problem: str) -> ScriptError:
        return ScriptError(f"{source}: {problem}")

    _no_unknown_keys(data, _SCRIPT_KEYS, "", fail)
    raw_intents = data.get("intents")
    if not isinstance(raw_intents, list) or not raw_intents:
        raise fail("needs at least one [[intents]] table")
    intents = tuple(_parse_intent(raw, i, fail) for i, raw in enumerate(raw_intents))
    names = [intent.name for intent in intents]
    if (twice := sorted({n for n in names if names.count(n) > 1})):
        raise fail(f"intent names must be unique: {', '.join(twice)}")
    keys = [intent.dtmf for intent in intents if intent.dtmf is not None]
    if (twice := sorted({k for k in keys if keys.count(k) > 1})):
        raise fail(f"a dtmf key may start one intent only: {', '.join(twice)}")
    max_fallbacks = data.get("max_fallbacks", MAX_FALLBACKS)
    if not isinstance(max_fallbacks, int) or isinstance(max_fallbacks, bool) or max_fallbacks < 0:
        raise fail(f"'max_fallbacks' must be a whole number >= 0, not {max_fallbacks!r}")
    ratio = data.get("fuzzy_ratio", FUZZY_RATIO)
    if not isinstance(ratio, int | float) or isinstance(ratio, bool) or not 0.5 <= ratio <= 1.0:
        raise fail(f"'fuzzy_ratio' must be a number from 0.5 to 1 (1: exact), not {ratio!r}")
    return DialogueScript(
        greeting=_text(data, "greeting", "", fail), fallback=_text(data, "fallback", "", fail),
        goodbye=_text(data, "goodbye", "", fail), intents=intents, max_fallbacks=max_fallbacks,
        fuzzy_ratio=float(ratio), language=_text(data, "language", "", fail, default="en"),
        phrases=_texts(data, "phrases", "", fail, required=False))


def _parse_intent(raw: object, index: int, fail: Any) -> Intent:
    if not isinstance(raw, dict):
        raise fail(f"intents[{index}] must be a table ([[intents]]), not {type(raw).__name__}")
    name = raw.get("name")
    where = f"intents[{index}]" + (f" ({name!r})" if isinstance(name, str) else "") + ": "
    _no_unknown_keys(raw, _INTENT_KEYS, where, fail)
    end_call = raw.get("end_call", False)
    if not isinstance(end_call, bool):
        raise fail(f"{where}'end_call' must be true or false, not {end_call!r}")
    dtmf = raw.get("dtmf")
    if dtmf is not None and (not isinstance(dtmf, str) or not re.fullmatch(r"[0-9*#]", dtmf)):
        raise fail(f"{where}'dtmf' must be one key of the phone pad as a string, not {dtmf!r}")
    return Intent(name=_text(raw, "name", where, fail),
                  keywords=_texts(raw, "keywords", where, fail),
                  reply=_text(raw, "reply", where, fail), end_call=end_call,
                  phrases=_texts(raw, "phrases", where, fail, required=False), dtmf=dtmf)


def _no_unknown_keys(table: Mapping[str, Any], known: set[str], where: str, fail: Any) -> None:
    if (unknown := sorted(set(table) - known)):
        raise fail(f"{where}unknown key {', '.join(map(repr, unknown))} "
                   f"(known: {', '.join(sorted(known))})")


def _text(table: Mapping[str, Any], key: str, where: str, fail: Any,
          default: str | None = None) -> str:
    value = table.get(key, default)
    if value is None:
        raise fail(f"{where}missing {key!r}")
    if not isinstance(value, str) or not value.strip():
        raise fail(f"{where}{key!r} must be a non-empty string, not {value!r}")
    return value.strip()


def _texts(table: Mapping[str, Any], key: str, where: str, fail: Any, *,
           required: bool = True) -> tuple[str, ...]:
    value = table.get(key)
    if value is None and not required:
        return ()
    if value is None:
        raise fail(f"{where}missing {key!r}")
    if isinstance(value, str) or not isinstance(value, list) or (required and not value) or not all(
            isinstance(v, str) and normalise_words(v) for v in value):
        raise fail(f"{where}{key!r} must be a {'non-empty ' if required else ''}list of strings "
                   f"with words in them, not {value!r}")
    return tuple(v.strip() for v in value)
