"""Cutting a streamed LLM reply into speakable chunks: pure text, no I/O, no clock.

Text-to-speech sounds best on whole sentences, but a phone reply must start as soon as it
sensibly can. `SpeakableChunker` takes the LLM's text deltas as they come and hands back chunks:

* at a sentence end (``.`` ``!`` ``?`` ``…``, closing quotes or brackets included), but not after
  a title or abbreviation (``Sr.``, ``Dra.``, ``p. ej.``, an initial), and after ``etc.`` /
  ``aprox.`` only when the next word starts a sentence (capital, ``¿``, ``¡``);
* at a clause boundary (``,`` ``;`` ``:`` ``—`` ``–``) once the chunk has ``clause_min_chars``;
  the *first* chunk already after ``first_min_words`` words ("Muy bien," goes out at once);
* never at a clause boundary inside an open ``¿…?`` or ``¡…!`` (a question cut in two loses its
  intonation);
* as a last resort, once a chunk reaches ``max_chars``, at the next space not between digits.

A cut only ever happens at whitespace *after* the boundary, so ``3.5``, ``1,5``, ``12:30`` and
``www.x.es`` are never split, and the decision waits for the character after the space. That
makes the output independent of how the text was split into deltas. Whitespace is normalised
(runs become one space, ends are trimmed) and chunks are trimmed, so::

    " ".join(chunks) == " ".join(text.split())

The last sentence is always held until `SpeakableChunker.flush` (nothing follows it yet), which
is what lets a caller mark the final chunk of a reply as the last.
"""

from __future__ import annotations

from typing import Final

import attrs

__all__ = [
    "CLAUSE_MIN_CHARS", "FIRST_MIN_WORDS", "MAX_CHUNK_CHARS", "MarkerFilter", "SpeakableChunker",
]

CLAUSE_MIN_CHARS: Final = 40
FIRST_MIN_WORDS: Final = 2
MAX_CHUNK_CHARS: Final = 220

_SENTENCE_END: Final = ".!?…"
_CLAUSE_END: Final = ",;:—–"
_CLOSERS: Final = "\"')]»”’"
_OPENERS: Final = "\"'([«“‘¿¡"
#: Abbreviations after which a "." never ends a sentence (a name or a number follows).
_TITLES: Final = frozenset({
    "sr", "sra", "srta", "sres", "dr", "dra", "d", "dña", "ud", "uds", "vd", "vds", "lic", "ing",
    "prof", "profa", "arq", "av", "avda", "c", "pza", "núm", "nº", "tel", "tfno", "pág", "ej",
    "art", "dpto", "ext", "mr", "mrs", "ms", "st", "vs",
})
#: Abbreviations that may well end a sentence: cut only if the next word starts a sentence.
_ENDING_ABBREVIATIONS: Final = frozenset({"etc", "aprox", "ee.uu", "s.a", "s.l", "a.m", "p.m"})


@attrs.define(eq=False)
class SpeakableChunker:
    """Feed text deltas with `feed`; get speakable chunks; `flush` at the end of the reply.

    Args:
      clause_min_chars: a chunk may end at a clause boundary once it is this long.
      first_min_words: ...or, for the first chunk, once it has this many words.
      max_chars: past this length, cut at the next space that is not inside a number.
    """

    clause_min_chars: int = CLAUSE_MIN_CHARS
    first_min_words: int = FIRST_MIN_WORDS
    max_chars: int = MAX_CHUNK_CHARS
    _buf: str = attrs.field(default="", init=False)  # normalised, never ends with a space
    _space: bool = attrs.field(default=False, init=False)  # whitespace seen, not yet written
    _scan: int = attrs.field(default=0, init=False)  # spaces before this index are decided
    _first: bool = attrs.field(default=True, init=False)

    def feed(self, delta: str) -> list[str]:
        """Add ``delta``; return the chunks it completed (often none)."""
        words = delta.split()
        if not words:
            self._space = self._space or bool(delta)
            return []
        if self._buf and (self._space or delta[0].isspace()):
            self._buf += " "
        self._buf += " ".join(words)
        self._space = delta[-1].isspace()
        return self._cut()

    def flush(self) -> str | None:
        """The rest of the reply as the final chunk (None if nothing is left); resets."""
        rest = self._buf
        self._buf, self._space, self._scan, self._first = "", False, 0, True
        return rest or None

    def _cut(self) -> list[str]:
        chunks: list[str] = []
        i = self._buf.find(" ", self._scan)
        while i != -1:
            # The buffer never ends with a space, so the character after this one is known.
            if self._ends_chunk(self._buf[:i], self._buf[i + 1]):
                chunks.append(self._buf[:i])
                self._buf = self._buf[i + 1:]
                self._first = False
                i = self._buf.find(" ")
            else:
                i = self._buf.find(" ", i + 1)
        self._scan = len(self._buf)
        return chunks

    def _ends_chunk(self, head: str, following: str) -> bool:
        core = head.rstrip(_CLOSERS)
        if not core:
            return False
        mark = core[-1]
        if mark in "!?…":
            return True
        if mark == ".":
            word = core.rsplit(" ", 1)[-1].lstrip(_OPENERS).rstrip(".").lower()
            if word in _ENDING_ABBREVIATIONS or ("." in word and word.replace(".", "").isalpha()):
                return following.isupper() or following in "¿¡"
            return not (word in _TITLES or (len(word) == 1 and word.isalpha()))
        if len(head) >= self.max_chars and not (head[-1].isdigit() and following.isdigit()):
            return True
        if mark in _CLAUSE_END and not _inside_question(core):
            if self._first:
                return len(head.split()) >= self.first_min_words
            return len(head) >= self.clause_min_chars
        return False


@attrs.define
class MarkerFilter:
    """Takes a control marker (e.g. ``[FIN]``, end of call) out of a stream of text deltas.

    However the deltas split it, the marker never comes out (it becomes a space) and ``found``
    says it was there. A tail that could be the start of the marker is held back until the next
    delta (or `flush`) settles it, so a chunker fed from here never cuts just before it.
    """

    marker: str | None
    found: bool = False
    _held: str = ""

    def feed(self, delta: str) -> str:
        if not self.marker:
            return delta
        text, self._held = self._held + delta, ""
        if self.marker in text:
            self.found, text = True, text.replace(self.marker, " ")
        for k in range(min(len(self.marker) - 1, len(text)), 0, -1):
            if text.endswith(self.marker[:k]):
                text, self._held = text[:-k], text[-k:]
                break
        return text

    def flush(self) -> str:
        held, self._held = self._held, ""
        return held


def _inside_question(text: str) -> bool:
    return text.count("¿") > text.count("?") or text.count("¡") > text.count("!")
