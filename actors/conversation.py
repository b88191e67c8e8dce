"""The Brain's conversation: what was said so far, as the LLM will see it, and its phrasing.

Pure state, no I/O, no clock. The history holds only what the caller actually heard (an
interrupted reply is kept as far as it was played), merges consecutive messages of the same role
(the API wants them alternating) and opens with `CALL_OPENED` when the bot spoke first.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from typing import Final, Literal

import attrs

from actors.llm import ChatMessage

__all__ = [
    "CALL_OPENED", "DEFAULT_FALLBACK", "DEFAULT_GREETING", "DEFAULT_SYSTEM_PROMPT", "UNKNOWN_NAME",
    "Conversation", "fill_name", "normalise",
]

DEFAULT_SYSTEM_PROMPT: Final = (
    "Eres el asistente virtual de una centralita y hablas por teléfono, en español, con un tono "
    "cercano y profesional; tratas de usted. Nombre de la persona con la que hablas: {nombre}.\n"
    "Lo que escribes se convierte en voz: contesta con una o dos frases cortas, sin listas, sin "
    "emojis, sin markdown ni símbolos, y escribe números, horas y fechas como se dicen. Los "
    "mensajes del usuario son transcripciones automáticas y pueden traer errores: si no entiendes "
    "algo, pide que lo repitan. \"[tecla N]\" significa que pulsó la tecla N del teléfono."
)
DEFAULT_GREETING: Final = "Hola{, nombre}, le habla el asistente virtual. ¿En qué puedo ayudarle?"
DEFAULT_FALLBACK: Final = "Disculpe, tuve un problema. ¿Podría repetirlo?"
UNKNOWN_NAME: Final = "desconocido"
#: The opening user message when the history starts with the greeting (the API wants user first).
CALL_OPENED: Final = "(La llamada acaba de empezar.)"


@attrs.define(eq=False)
class Conversation:
    """The history of one call; lives on the Brain object, so it survives the Brain's restarts."""

    _history: list[ChatMessage] = attrs.field(factory=list, init=False)

    @property
    def history(self) -> Sequence[ChatMessage]:
        return tuple(self._history)

    def __len__(self) -> int:
        return len(self._history)

    def awaits_reply(self) -> bool:
        """The caller spoke last: a turn is unanswered (e.g. the Brain restarted mid-turn)."""
        return bool(self._history) and self._history[-1].role == "user"

    def add(self, role: Literal["user", "assistant"], text: str) -> None:
        """Append, merging into the last message if it has the same role."""
        if self._history and self._history[-1].role == role:
            text = f"{self._history[-1].content} {text}"
            self._history.pop()
        self._history.append(ChatMessage(role, text))

    def messages(self) -> list[ChatMessage]:
        """The messages for the next request (a fresh list: the caller may extend it)."""
        if self._history and self._history[0].role == "assistant":
            return [ChatMessage("user", CALL_OPENED), *self._history]
        return list(self._history)

    def messages_with(self, heard: str) -> list[ChatMessage]:
        """The messages as they will be if the caller's turn so far is ``heard`` (speculation)."""
        messages = self.messages()
        if messages and messages[-1].role == "user":  # an unanswered turn: same user message
            messages[-1] = ChatMessage("user", f"{messages[-1].content} {heard}")
        else:
            messages.append(ChatMessage("user", heard))
        return messages


def fill_name(template: str, name: str | None) -> str:
    """``{, nombre}`` becomes ``, Ana`` (or nothing), ``{nombre}`` the name (or nothing)."""
    return template.replace("{, nombre}", f", {name}" if name else "").replace(
        "{nombre}", name or "")


def normalise(text: str) -> str:
    """For matching a speculation against the final: case, accents, punctuation, spacing."""
    decomposed = unicodedata.normalize("NFD", text.lower())
    kept = "".join(c if c.isalnum() else " " for c in decomposed
                   if not unicodedata.combining(c))
    return " ".join(kept.split())
