"""ScriptedLlm: script parsing, tolerant intent matching, fallbacks, streaming, and the real Brain.

The Brain tests run the real `actors.brain.Brain` with the shipped English script; the test
plays the Speaker's part by feeding its reports back into the inbox (autojump clock).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import trio

from actors.brain import Brain
from actors.llm import ChatMessage
from actors.messages import (
    CallInfo, ChunkPlayed, Hangup, ReplyAudioStarted, ReplyFinished, Speak, TranscriptFinal,
)
from actors.pocketsphinx_decoder import normalise_phrase, phrases_to_jsgf
from actors.scripted_llm import (
    BUILTIN_SCRIPTS, DialogueScript, ScriptError, ScriptedLlm, normalise_words,
)
from protocols.audio import PCMU_8K
from tests.actors.harness import ActorUnderTest, open_actor

MARKER = "[FIN]"

SCRIPT = """
greeting = "Hola{, nombre}. ¿En qué puedo ayudarle?"
fallback = "Perdone, no le entiendo."
max_fallbacks = 2
goodbye = "Lo siento. Adiós."

[[intents]]
name = "saldo"
keywords = ["saldo", "cuánto dinero"]
phrases = ["consultar mi cuenta"]
dtmf = "1"
reply = "Su saldo es de cien euros."

[[intents]]
name = "horario"
keywords = ["horario", "abren"]
reply = "Abrimos a las nueve."

[[intents]]
name = "adiós"
keywords = ["adiós", "nada más"]
reply = "Gracias por llamar."
end_call = true
"""


def llm(text: str = SCRIPT, **kwargs: Any) -> ScriptedLlm:
    return ScriptedLlm(DialogueScript.from_toml(text, source="test.toml"), **kwargs)


def user(text: str) -> ChatMessage:
    return ChatMessage("user", text)


def assistant(text: str) -> ChatMessage:
    return ChatMessage("assistant", text)


async def stream(engine: ScriptedLlm, messages: Sequence[ChatMessage]) -> list[str]:
    async with engine.stream_reply(system="ignored", messages=messages) as deltas:
        return [piece async for piece in deltas]


# -- matching --------------------------------------------------------------------------------------

@pytest.mark.parametrize(("heard", "intent"), [
    ("¿Cuál es mi saldo?", "saldo"),
    ("SALDO", "saldo"),
    ("quería saber cuanto dinero tengo", "saldo"),  # a two-word keyword, accent missing
    ("¿A qué hora abren?", "horario"),
    ("consultar mi cuenta por favor", "saldo"),  # a phrase matches as well as a keyword
    ("el sáldo", "saldo"),  # an accent where there is none
    ("orario", "horario"),  # misrecognised: 0.92 alike
    ("nada mas, adios", "adiós"),
    ("[tecla 1]", "saldo"),  # a key press, as the Brain writes it
    ("saldos", "saldo"),  # 0.91 alike
    ("abre", "horario"),  # "abren" has 5 letters: fuzzy from 5 on (0.89 alike)
    ("adiosito", None),  # 0.77 alike: not close enough
    ("mas", None),  # "nada más": every word of a keyword must be there
    ("me han robado la cartera", None),
    ("[tecla 7]", None),
])
def test_intents_match_tolerantly(heard: str, intent: str | None) -> None:
    script = DialogueScript.from_toml(SCRIPT)
    found = script.match(heard)
    assert (found.name if found else None) == intent


def test_english_misrecognitions_still_find_the_intent() -> None:
    script = DialogueScript.builtin("demo_en")
    for heard, intent in [("balanse", "balance"), ("what is my ballance", "balance"),
                          ("what are your hours", "hours"), ("opening ours", "hours"),
                          ("talk to an agents", "agent"), ("good bye", "goodbye"),
                          ("no thank you", "goodbye"), ("I want the operater", "agent")]:
        found = script.match(heard)
        assert found is not None and found.name == intent, heard


def test_exact_beats_fuzzy_and_ties_go_to_the_first_intent() -> None:
    script = DialogueScript.from_toml(SCRIPT)
    assert script.match("orario del saldo").name == "saldo"  # type: ignore[union-attr]
    assert script.match("horario del saldo").name == "saldo"  # type: ignore[union-attr]
    assert script.match("nada más sobre el horario").name == "horario"  # type: ignore[union-attr]


def test_fuzzy_can_be_turned_off() -> None:
    assert DialogueScript.from_toml(SCRIPT).match("orario") is not None
    exact = DialogueScript.from_toml("fuzzy_ratio = 1.0\n" + SCRIPT)
    assert exact.match("orario") is None and exact.match("horario") is not None


def test_normalise_words() -> None:
    assert normalise_words("¿Qué HORA abrís, Señor?") == ("que", "hora", "abris", "senor")
    assert normalise_words("  ") == ()


# -- replies ---------------------------------------------------------------------------------------

async def test_a_reply_streams_in_word_pieces_that_join_to_it() -> None:
    pieces = await stream(llm(), [user("¿Y el saldo?")])
    assert pieces == ["Su", " saldo", " es", " de", " cien", " euros."]
    assert "".join(pieces) == "Su saldo es de cien euros."


async def test_pieces_come_delay_s_apart(autojump_clock: object) -> None:
    engine = llm(delay_s=0.05)
    begun = trio.current_time()
    times = []
    async with engine.stream_reply(system="", messages=[user("saldo")]) as deltas:
        async for _ in deltas:
            times.append(trio.current_time() - begun)
    assert times == pytest.approx([0.0, 0.05, 0.10, 0.15, 0.20, 0.25])


async def test_end_call_replies_carry_the_brains_marker() -> None:
    assert "".join(await stream(llm(hangup_marker=MARKER), [user("adiós")])) == (
        "Gracias por llamar. [FIN]")
    assert "".join(await stream(llm(), [user("adiós")])) == "Gracias por llamar."  # no marker set
    assert "".join(await stream(llm(hangup_marker=MARKER), [user("saldo")])) == (
        "Su saldo es de cien euros.")


async def test_fallbacks_then_goodbye_after_max_fallbacks() -> None:
    engine = llm(hangup_marker=MARKER)
    history = [user("(La llamada acaba de empezar.)"), assistant("Hola. ¿En qué puedo ayudarle?")]
    said = []
    for heard in ("bla", "ble", "bli"):
        history.append(user(heard))
        reply = "".join(await stream(engine, history))
        said.append(reply)
        history.append(assistant(reply.replace(MARKER, "").strip()))  # what the Brain keeps
    assert said == ["Perdone, no le entiendo.", "Perdone, no le entiendo.",
                    "Lo siento. Adiós. [FIN]"]


def test_a_match_resets_the_fallback_count() -> None:
    engine = llm(hangup_marker=MARKER)
    fallback, saldo = "Perdone, no le entiendo.", "Su saldo es de cien euros."
    history = [user("bla"), assistant(fallback), user("saldo"), assistant(saldo),
               user("ble"), assistant(fallback), user("bli")]
    assert engine.reply_to(history) == fallback
    # The Brain's text differs in spacing and punctuation only: it still counts.
    assert engine.reply_to([*history, assistant("perdone no le entiendo"), user("blo")]) == (
        "Lo siento. Adiós. [FIN]")


def test_max_fallbacks_zero_says_goodbye_at_the_first_miss() -> None:
    engine = llm("max_fallbacks = 0\n" + SCRIPT.replace("max_fallbacks = 2\n", ""),
                 hangup_marker=MARKER)
    assert engine.reply_to([user("bla")]) == "Lo siento. Adiós. [FIN]"


def test_greeting_with_and_without_a_name() -> None:
    engine = llm()
    assert engine.greeting("Ana") == "Hola, Ana. ¿En qué puedo ayudarle?"
    assert engine.greeting(None) == "Hola. ¿En qué puedo ayudarle?"
    assert engine.greeting_template == "Hola{, nombre}. ¿En qué puedo ayudarle?"
    plain = llm(SCRIPT.replace("Hola{, nombre}.", "Buenos días, {nombre}."))
    assert plain.greeting("Luis") == "Buenos días, Luis. ¿En qué puedo ayudarle?"


# -- the shipped scripts ---------------------------------------------------------------------------

@pytest.mark.parametrize("name", BUILTIN_SCRIPTS)
def test_builtin_scripts_load_and_every_expected_phrase_finds_its_intent(name: str) -> None:
    script = DialogueScript.builtin(name)
    assert {i.name for i in script.intents if i.end_call}  # a way to end the call
    for intent in script.intents:
        for phrase in (*intent.keywords, *intent.phrases):
            found = script.match(phrase)
            assert found is intent, f"{phrase!r} -> {found and found.name}, not {intent.name}"


def test_english_phrases_fit_the_local_recogniser_grammar() -> None:
    phrases = ScriptedLlm.builtin("demo_en").expected_phrases()
    assert "what is my balance" in phrases and "balance" in phrases
    assert len(phrases) == len(set(phrases))
    grammar = phrases_to_jsgf(phrases)
    pocketsphinx = pytest.importorskip("pocketsphinx")
    dictionary = Path(pocketsphinx.get_model_path("en-us/cmudict-en-us.dict"))
    known = {line.split(maxsplit=1)[0].split("(")[0]
             for line in dictionary.read_text().splitlines() if line.strip()}
    words = {w for p in phrases for w in normalise_phrase(p).split()}
    assert words - known == set(), "not in the pocketsphinx dictionary"
    assert grammar.count("|") == len(phrases) - 1


def test_unknown_builtin_is_an_error() -> None:
    with pytest.raises(ScriptError, match="no built-in script 'demo_fr'"):
        DialogueScript.builtin("demo_fr")


# -- bad scripts -----------------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "problem"), [
    ("greeting = 'Hola'\nfallback = = 2\n", r"bad\.toml: not valid TOML: .*line 2"),
    (SCRIPT.replace('greeting = "Hola{, nombre}. ¿En qué puedo ayudarle?"\n', ""),
     r"bad\.toml: missing 'greeting'"),
    ("\n".join(SCRIPT.split("\n")[:5]), r"needs at least one \[\[intents\]\] table"),
    (SCRIPT.replace('keywords = ["horario", "abren"]', "keywords = []"),
     r"intents\[1\] \('horario'\): 'keywords' must be a non-empty list of strings"),
    (SCRIPT.replace('keywords = ["horario", "abren"]', 'keywords = "horario"'),
     r"intents\[1\] \('horario'\): 'keywords' must be"),
    (SCRIPT.replace('keywords = ["horario", "abren"]', 'keywords = ["¿?"]'),
     r"'keywords' must be .* with words in them"),
    (SCRIPT.replace("end_call = true", 'end_call = "yes"'),
     r"intents\[2\] \('adiós'\): 'end_call' must be true or false"),
    (SCRIPT.replace("end_call = true", "end-call = true"),
     r"intents\[2\] \('adiós'\): unknown key 'end-call'"),
    (SCRIPT.replace('name = "horario"', 'name = "saldo"'), "intent names must be unique: saldo"),
    (SCRIPT.replace('dtmf = "1"', "dtmf = 1"), "'dtmf' must be one key of the phone pad"),
    (SCRIPT.replace("max_fallbacks = 2", "max_fallbacks = -1"), "'max_fallbacks' must be"),
    ("fuzzy_ratio = 0.2\n" + SCRIPT, "'fuzzy_ratio' must be a number from 0.5 to 1"),
    ("intent = []\n" + SCRIPT, "unknown key 'intent'"),
    (SCRIPT.replace('reply = "Abrimos a las nueve."', 'reply = ""'),
     r"intents\[1\] \('horario'\): 'reply' must be a non-empty string"),
])
def test_a_bad_script_is_a_clear_error(text: str, problem: str) -> None:
    with pytest.raises(ScriptError, match=problem):
        DialogueScript.from_toml(text, source="bad.toml")


def test_load_reads_a_file_and_names_it(tmp_path: Path) -> None:
    good = tmp_path / "good.toml"
    good.write_text(SCRIPT, encoding="utf-8")
    assert ScriptedLlm.load(good, delay_s=0.1).script.intents[0].name == "saldo"
    bad = tmp_path / "bad.toml"
    bad.write_text("greeting = 3\n", encoding="utf-8")
    with pytest.raises(ScriptError, match=r"bad\.toml: unknown|bad\.toml: needs"):
        DialogueScript.load(bad)
    with pytest.raises(ScriptError, match=r"missing\.toml: cannot read"):
        DialogueScript.load(tmp_path / "missing.toml")


# -- through the real Brain ------------------------------------------------------------------------

OUTPUTS = ("speaker_out", "relay_out", "control_out")


def scripted_brain(**kwargs: Any) -> tuple[Brain, ScriptedLlm]:
    engine = ScriptedLlm.builtin("demo_en", hangup_marker=MARKER, delay_s=0.02)
    call = CallInfo(call_id="c1", call_control_id="v3:c1", stream_id="s1", audio_format=PCMU_8K,
                    started_at=trio.current_time(), callee_name=kwargs.pop("callee_name", None))
    return Brain(call, engine, greeting=engine.greeting_template, hangup_marker=MARKER,
                 preemptive=False, **kwargs), engine


def speaks(actor: ActorUnderTest) -> list[Speak]:
    return [m for m in actor.received["speaker_out"] if isinstance(m, Speak)]


async def next_reply(actor: ActorUnderTest, number: int) -> list[Speak]:
    """The chunks of the ``number``-th reply (from 0), once its last chunk is out."""
    await actor.wait_for("speaker_out",
                         lambda _: sum(1 for s in speaks(actor) if s.last) > number)
    last = [s for s in speaks(actor) if s.last][number]
    return [s for s in speaks(actor) if s.reply_id == last.reply_id]


def text_of(chunks: list[Speak]) -> str:
    return " ".join(c.text for c in chunks if c.text)


async def play(actor: ActorUnderTest, brain: Brain, chunks: list[Speak]) -> None:
    """Be the Speaker: first audio at once, each chunk heard 0.5 s later, then ReplyFinished."""
    now = trio.current_time() - brain.call.started_at
    await actor.feed([ReplyAudioStarted(chunks[0].reply_id, now, now)])
    for chunk in chunks:
        await trio.sleep(0.5)
        now = trio.current_time() - brain.call.started_at
        await actor.feed([ChunkPlayed(chunk.reply_id, chunk.chunk, chunk.text, now)])
    await actor.feed([ReplyFinished(chunks[0].reply_id, trio.current_time()
                                    - brain.call.started_at)])


def said(turn: str, text: str, end_s: float) -> TranscriptFinal:
    return TranscriptFinal(turn, text, end_s - 1.0, end_s, True, end_s + 0.1)


async def test_brain_speaks_the_scripted_replies_and_hangs_up_after_goodbye(
        autojump_clock: object) -> None:
    brain, engine = scripted_brain(callee_name="Ana")
    async with open_actor(brain.run, outputs=OUTPUTS) as actor:
        greeting = await next_reply(actor, 0)
        assert text_of(greeting) == engine.greeting("Ana")
        await play(actor, brain, greeting)
        await actor.feed([said("t-1", "what is my balanse", 5.0)])  # misrecognised
        balance = await next_reply(actor, 1)
        assert text_of(balance) == engine.script.intents[1].reply
        await play(actor, brain, balance)
        assert actor.received["control_out"] == []
        await actor.feed([said("t-2", "no thank you", 12.0)])
        goodbye = await next_reply(actor, 2)
        assert text_of(goodbye) == "Thank you for calling. Goodbye."  # the marker is not spoken
        await trio.sleep(2.0)
        assert actor.received["control_out"] == []  # not before it has been heard
        await play(actor, brain, goodbye)
        hangup = await actor.wait_for("control_out")
    assert hangup == Hangup("goodbye said")
    assert [m.content for m in brain.history if m.role == "assistant"][-1] == text_of(goodbye)


async def test_brain_misses_twice_then_the_script_says_goodbye(autojump_clock: object) -> None:
    brain, engine = scripted_brain()
    async with open_actor(brain.run, outputs=OUTPUTS) as actor:
        await play(actor, brain, await next_reply(actor, 0))
        replies = []
        for n, heard in enumerate(["purple elephants", "the weather", "a red bicycle"]):
            await actor.feed([said(f"t-{n + 1}", heard, 10.0 * (n + 1))])
            reply = await next_reply(actor, n + 1)
            replies.append(text_of(reply))
            await play(actor, brain, reply)
        hangup = await actor.wait_for("control_out")
    script = engine.script
    assert replies == [script.fallback, script.fallback, script.goodbye]
    assert hangup == Hangup("goodbye said")
