"""What ``centralita demo`` prints: the call as it happens, then a summary. No I/O but ``out``.

Readable three ways: on a colour terminal (partials overwrite one line, speakers coloured), on a
terminal with ``NO_COLOR`` set (the same, without colour), and piped to a file or CI log (no
escape codes, no carriage returns: partials are left out, every other line is printed once).
Bars are Unicode blocks when ``out`` can encode them, ``#`` otherwise.
"""

from __future__ import annotations

import os
import shutil
import statistics
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Final, TextIO

import attrs

if TYPE_CHECKING:
    from centralita.demo_result import DemoResult, Turn

BAR_COLUMNS: Final = 32
#: A waterfall's bars are scaled to its slowest stage, but never to less than this (so a fast
#: turn shows short bars instead of every turn filling the width).
BAR_MIN_SCALE_MS: Final = 1000.0
SAID_COLUMNS: Final = 28
#: Everything of a summary row but the reply; the reply gets the rest of the terminal's width.
TABLE_FIXED_COLUMNS: Final = 2 + 2 + 2 + 2 * (SAID_COLUMNS + 1) + 10 + 11 + 9 + 2
REPLY_MIN_COLUMNS: Final = 24
#: The width when ``out`` is not a terminal (logs, files).
PIPE_COLUMNS: Final = 132
WATERFALL_STAGES: Final = ("stt_final", "llm_request", "llm_first_token", "first_chunk",
                           "tts_first_audio", "first_frame_sent")

_COLOURS: Final = {"caller": "36", "bot": "32", "dim": "2", "bold": "1", "bad": "31;1",
                   "good": "32;1", "warn": "33"}
_EIGHTHS: Final = " ▏▎▍▌▋▊▉"


def wants_colour(out: TextIO, env: Mapping[str, str]) -> bool:
    """Colour only on a terminal, and never with ``NO_COLOR`` (no-color.org) or ``TERM=dumb``."""
    return _is_tty(out) and not env.get("NO_COLOR") and env.get("TERM") != "dumb"


def _is_tty(out: TextIO) -> bool:
    try:
        return out.isatty()
    except (AttributeError, ValueError):
        return False


def _can_encode(out: TextIO, text: str) -> bool:
    try:
        text.encode(getattr(out, "encoding", None) or "ascii")
    except (UnicodeEncodeError, LookupError):
        return False
    return True


@attrs.define(eq=False)
class DemoView:
    """Renders demo progress on ``out``. ``live``: a terminal (partials overwrite a line)."""

    out: TextIO
    live: bool = False
    colour: bool = False
    unicode: bool = True
    width: int = PIPE_COLUMNS
    _transient: int = attrs.field(default=0, init=False)  # width of the line on screen
    _pending: tuple[str, int] | None = attrs.field(default=None, init=False)  # to redraw

    @classmethod
    def for_stream(cls, out: TextIO, env: Mapping[str, str] | None = None) -> DemoView:
        env = os.environ if env is None else env
        live = _is_tty(out)
        width = shutil.get_terminal_size((PIPE_COLUMNS, 24)).columns if live else PIPE_COLUMNS
        return cls(out=out, live=live, colour=wants_colour(out, env),
                   unicode=_can_encode(out, "█▏…·"), width=width)

    # -- building blocks ----------------------------------------------------------------------

    def _paint(self, text: str, style: str) -> str:
        return f"\x1b[{_COLOURS[style]}m{text}\x1b[0m" if self.colour else text

    def _line(self, text: str = "", *, settles: bool = False) -> None:
        """A permanent line. The transient one is redrawn under it unless this line ``settles``
        it (the final that replaces the partials, the reply that replaces "speaking")."""
        self._clear_transient()
        self.out.write(text + "\n")
        if settles:
            self._pending = None
        elif self._pending is not None:
            self._draw(*self._pending)
        self.out.flush()

    def _show_transient(self, text: str, width: int) -> None:
        """A line the next output replaces (terminals only; ``width`` = printable length)."""
        if not self.live:
            return
        self._clear_transient()
        self._pending = (text, width)
        self._draw(text, width)
        self.out.flush()

    def _draw(self, text: str, width: int) -> None:
        self.out.write(text)
        self._transient = width

    def _clear_transient(self) -> None:
        if self._transient:
            self.out.write("\r" + " " * self._transient + "\r")
            self._transient = 0

    def _ellipsis(self, text: str, width: int) -> str:
        if len(text) <= width:
            return text
        mark = "…" if self.unicode else "..."
        return text[: width - len(mark)].rstrip() + mark

    # -- the story ------------------------------------------------------------------------------

    def header(self, language: str, engines: Sequence[str], notes: Sequence[str]) -> None:
        name = {"en": "English", "es": "Spanish"}.get(language, language)
        self._line(self._paint(f"Centralita demo: one phone call, end to end, in {name}", "bold"))
        for i, engine in enumerate(engines):
            self._line(f"  {'engines' if i == 0 else '':8} {engine}")
        for note in notes:
            self._line(f"  {'':8} {self._paint(note, 'dim')}")

    def serving(self, url: str, caller: str) -> None:
        self._line(f"  {'service':8} {url}  (the real service: hypercorn, /stream/media, relay)")
        self._line(f"  {'caller':8} {caller}")
        self._line()

    def note(self, call_s: float, text: str) -> None:
        self._line(self._paint(f"{self._stamp(call_s)} {text}", "dim"))

    def partial(self, call_s: float, text: str) -> None:
        label = f"{self._stamp(call_s)} caller  "
        body = self._ellipsis(text, max(10, self.width - len(label) - 4))
        self._show_transient(label + self._paint(body + " …" if self.unicode else body + " ...",
                                                 "dim"), len(label) + len(body) + 3)

    def final(self, call_s: float, text: str) -> None:
        self._line(f"{self._stamp(call_s)} {self._paint('caller', 'caller')}  {text}",
                   settles=True)

    def bot_speaking(self, call_s: float) -> None:
        label = f"{self._stamp(call_s)} bot     "
        text = "(speaking)"
        self._show_transient(label + self._paint(text, "dim"), len(label) + len(text))

    def reply(self, call_s: float, text: str, interrupted: bool) -> None:
        cut = self._paint("  [interrupted]", "warn") if interrupted else ""
        self._line(f"{self._stamp(call_s)} {self._paint('bot', 'bot')}     {text}{cut}",
                   settles=True)

    def waterfall(self, stages: Mapping[str, float]) -> None:
        """One turn's stages in ms after the end of speech, as bars."""
        if "end_of_speech" not in stages:
            return
        origin = stages["end_of_speech"]
        rows = [(name, (stages[name] - origin) * 1000) for name in WATERFALL_STAGES
                if name in stages]
        rows += [(name, (value - origin) * 1000) for name, value in stages.items()
                 if name not in WATERFALL_STAGES and name != "end_of_speech"]
        if not rows:
            return
        scale = max(BAR_MIN_SCALE_MS, max(ms for _, ms in rows))
        self._line(self._paint(f"{'':8}latency after the end of speech (ms; bar = "
                               f"{scale / BAR_COLUMNS:.0f} ms per column)", "dim"))
        for name, ms in rows:
            self._line(f"{'':10}{name:<17}{ms:6.0f}  {self._bar(ms, scale)}")

    def _bar(self, ms: float, scale: float) -> str:
        columns = max(0.0, ms) / scale * BAR_COLUMNS
        if not self.unicode:
            return "#" * round(columns)
        full, eighths = int(columns), int((columns - int(columns)) * 8)
        return "█" * full + (_EIGHTHS[eighths] if eighths else "")

    def failure(self, message: str) -> None:
        self._pending = None
        self._line(self._paint(f"FAILED: {message}", "bad"))

    def summary(self, result: DemoResult) -> None:
        self._pending = None
        self._line()
        self._line(self._paint("Summary", "bold"))
        reply_width = max(REPLY_MIN_COLUMNS, self.width - TABLE_FIXED_COLUMNS)
        self._line(f"  {'#':>2}  {'the caller said':<{SAID_COLUMNS}} {'heard':<{SAID_COLUMNS}} "
                   f"{'intent':<9} {'understood':<10} {'1st audio':>9}  reply")
        for turn in result.turns:
            self._line("  " + self._turn_row(turn, reply_width))
        latencies = [t.first_audio_ms for t in result.turns if t.first_audio_ms is not None]
        heard = [t.heard_after_ms for t in result.turns if t.heard_after_ms is not None]
        if latencies:
            self._line(f"  first audio after the end of speech (service, first frame sent): "
                       f"p50 {statistics.median(latencies):.0f} ms, max {max(latencies):.0f} ms")
        if heard:
            self._line(f"  and as the caller heard it (end of its words to the bot's first sound): "
                       f"p50 {statistics.median(heard):.0f} ms, max {max(heard):.0f} ms")
        saved = [(result.wav_path, "two tracks: left the caller, right the bot (8 kHz)"),
                 (result.events_path, f"all {len(result.events)} relay events"),
                 (result.log_path, "the service's own log (JSON lines)")]
        for i, (path, what) in enumerate(p for p in saved if p[0] is not None):
            self._line(f"  {'saved' if i == 0 else '':6} {path}  {self._paint(what, 'dim')}")
        if result.failure is None:
            self._line(self._paint(
                f"OK: {len(result.turns)} turn{'s' if len(result.turns) != 1 else ''} understood "
                f"and answered, the call took {result.call_s:.1f} s", "good"))
        else:
            self.failure(result.failure)

    def _turn_row(self, turn: Turn, reply_width: int) -> str:
        understood = "yes" if turn.understood else "NO"
        latency = f"{turn.first_audio_ms:.0f} ms" if turn.first_audio_ms is not None else "-"
        said = self._ellipsis(turn.line, SAID_COLUMNS)
        heard = self._ellipsis(turn.heard or "(nothing)", SAID_COLUMNS)
        reply = self._ellipsis(turn.reply or "(no reply)", reply_width)
        return (f"{turn.index:>2}  {said:<{SAID_COLUMNS}} {heard:<{SAID_COLUMNS}} "
                f"{turn.expected:<9} {understood:<10} {latency:>9}  {reply}")

    @staticmethod
    def _stamp(call_s: float) -> str:
        return f"[{call_s:5.1f}s]"

