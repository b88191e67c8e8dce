"""SpeakableChunker: where replies are cut, and that no split of the deltas changes the result."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from actors.speakable import MarkerFilter, SpeakableChunker

NUMBER = re.compile(r"\d+(?:[.,:]\d+)*")


def chunks_of(deltas: list[str], **kw: int) -> list[str]:
    chunker = SpeakableChunker(**kw)
    out = [chunk for delta in deltas for chunk in chunker.feed(delta)]
    rest = chunker.flush()
    return out + ([rest] if rest is not None else [])


def by_char(text: str, **kw: int) -> list[str]:
    return chunks_of(list(text), **kw)


@pytest.mark.parametrize(("text", "expected"), [
    ("Hola. ¿Qué tal está?", ["Hola.", "¿Qué tal está?"]),
    ("¡Perfecto! Ya está. Gracias…  Adiós", ["¡Perfecto!", "Ya está.", "Gracias…", "Adiós"]),
    ("Cuesta 3.5 euros. Vale", ["Cuesta 3.5 euros.", "Vale"]),
    ("Son 1,5 litros a las 12:30. Bien", ["Son 1,5 litros a las 12:30.", "Bien"]),
    ("El Sr. Gil y la Dra. López llegan. Vale", ["El Sr. Gil y la Dra. López llegan.", "Vale"]),
    ("Frutas, p. ej. peras. Vale", ["Frutas, p. ej. peras.", "Vale"]),
    ("Hay peras etc. ¿Algo más?", ["Hay peras etc.", "¿Algo más?"]),
    ("Peras, uvas etc. y más. Sí", ["Peras, uvas etc. y más.", "Sí"]),
    ('Dijo "hola." Luego colgó', ['Dijo "hola."', "Luego colgó"]),
    ("Visite www.ejemplo.es hoy. Sí", ["Visite www.ejemplo.es hoy.", "Sí"]),
])
def test_sentence_cuts(text: str, expected: list[str]) -> None:
    assert by_char(text) == expected


def test_the_first_chunk_goes_at_the_first_clause_after_two_words() -> None:
    assert by_char("Muy bien, ahora mismo se lo miro, un momento por favor.") == [
        "Muy bien,", "ahora mismo se lo miro, un momento por favor."]
    assert by_char("Claro, ahora se lo miro.")[0] == "Claro, ahora se lo miro."  # one word: wait


def test_later_clause_cuts_need_clause_min_chars() -> None:
    text = "Vale. Su cita queda para el martes por la mañana, a las diez y media, en la consulta."
    assert by_char(text, clause_min_chars=30) == [
        "Vale.", "Su cita queda para el martes por la mañana,",
        "a las diez y media, en la consulta."]


def test_no_clause_cut_inside_a_question() -> None:
    assert by_char("Muy bien, ¿me podría decir, por favor, su número de cliente?") == [
        "Muy bien,", "¿me podría decir, por favor, su número de cliente?"]


def test_em_dash_is_a_clause_boundary() -> None:
    assert by_char("Lo siento mucho — ahora lo reviso todo.") == [
        "Lo siento mucho —", "ahora lo reviso todo."]


def test_overlong_text_is_cut_but_not_between_digits() -> None:
    text = "uno dos 123 456 tres cuatro cinco"
    assert by_char(text, max_chars=10) == ["uno dos 123 456", "tres cuatro", "cinco"]


def test_whitespace_is_normalised_and_nothing_empty_comes_out() -> None:
    chunker = SpeakableChunker()
    assert chunker.feed("  \n ") == []
    assert chunker.feed("Hola.\n\n") == []
    assert chunker.feed("\t") == []
    assert chunker.feed("  ¿Sí?") == ["Hola."]
    assert chunker.flush() == "¿Sí?"
    assert chunker.flush() is None
    assert chunks_of(["   ", "\n"]) == []


# -- properties ----------------------------------------------------------------------------------

WORDS = st.sampled_from([
    "hola", "Sr.", "Dra.", "etc.", "3.5", "1,5", "12:30", "2026", "sí.", "no,", "¿qué", "tal?",
    "¡vale!", "bien…", "p.", "ej.", "García", "—", "euros;", "hora:", "(nota.)", "«dijo.»", "5.",
])
SEPARATORS = st.sampled_from([" ", "  ", "\n", " \t", ""])


@st.composite
def texts_and_splits(draw: st.DrawFn) -> tuple[str, list[str]]:
    parts = draw(st.lists(st.tuples(WORDS, SEPARATORS), max_size=40))
    text = draw(SEPARATORS) + "".join(w + s for w, s in parts)
    cuts = sorted(draw(st.lists(st.integers(0, len(text)), max_size=12)))
    bounds = [0, *cuts, len(text)]
    return text, [text[a:b] for a, b in zip(bounds, bounds[1:])]


@given(texts_and_splits(), st.integers(1, 60), st.integers(1, 4))
def test_chunks_rebuild_the_normalised_text_for_any_split(
        case: tuple[str, list[str]], clause_min: int, first_words: int) -> None:
    text, deltas = case
    kw = {"clause_min_chars": clause_min, "first_min_words": first_words, "max_chars": 50}
    chunks = chunks_of(deltas, **kw)
    assert " ".join(chunks) == " ".join(text.split())
    assert all(chunk and chunk == chunk.strip() for chunk in chunks)
    assert chunks == chunks_of([text], **kw)  # how the deltas fell changes nothing


@given(texts_and_splits())
def test_chunks_never_split_a_number(case: tuple[str, list[str]]) -> None:
    text, deltas = case
    chunks = chunks_of(deltas, max_chars=8)
    spans, at = [], 0
    for chunk in chunks:
        spans.append((at, at + len(chunk)))
        at += len(chunk) + 1
    for number in NUMBER.finditer(" ".join(text.split())):
        assert any(a <= number.start() and number.end() <= b for a, b in spans), (number, chunks)


@given(st.lists(st.sampled_from(["[FIN]", "[F", "IN]", "[", "]", "hola ", "FIN", " "]), max_size=12),
       st.lists(st.integers(0, 60), max_size=6))
def test_the_marker_filter_removes_every_marker_for_any_split(parts: list[str],
                                                              cuts: list[int]) -> None:
    text = "".join(parts)
    bounds = [0, *sorted(min(c, len(text)) for c in cuts), len(text)]
    marker = MarkerFilter("[FIN]")
    out = "".join(marker.feed(text[a:b]) for a, b in zip(bounds, bounds[1:])) + marker.flush()
    assert out == text.replace("[FIN]", " ") and marker.found == ("[FIN]" in text)
    assert MarkerFilter(None).feed(text) == text
