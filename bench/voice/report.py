"""The voice bench's Markdown report: one table per aspect, a row per (calls, variant) group.

Used by :mod:`bench.bench_voice`; the figures and their meaning are described there and in
:mod:`bench.voice.share`.
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Sequence
from typing import Any, Final

from bench.voice.share import COMPONENTS, Delays, summarize

__all__ = ["Group", "report", "fmt"]

TARGET_P99_MS: Final = 10.0
#: CPU 1 busier than this during the full-load window: the load generator may have fallen behind.
LOAD_CPU_BUSY_WARN_PCT: Final = 85.0



def fmt(x: float | None, digits: int = 1) -> str:
    return "–" if x is None else f"{x:,.{digits}f}"


def _spread(raw: Sequence[float | None], digits: int = 1) -> str:
    values = [v for v in raw if v is not None]
    if not values:
        return "–"
    if len(values) == 1:
        return fmt(values[0], digits)
    return f"{fmt(statistics.median(values), digits)} ({fmt(min(values), digits)}–{fmt(max(values), digits)})"


Group = tuple[int, str]  # (calls, variant label)


def _of(records: list[dict[str, Any]], group: Group) -> list[dict[str, Any]]:
    return [r for r in records if (r["calls"], r["variant"]) == group]


def _name(group: Group) -> str:
    return f"{group[0]} · {group[1]}"


def report(records: list[dict[str, Any]], groups: Sequence[Group], args: argparse.Namespace,
           delays: Delays) -> tuple[str, dict[str, Any]]:
    lines: list[str] = []
    summary: dict[str, Any] = {}
    lines += [
        f"Voice-to-voice, the runtime's own share. Service on CPU 0; emulators and callers on CPU 1; "
        f"{args.turns} turns per call ({args.lines} lines, utterances {args.utterance_min_s:g}–"
        f"{args.utterance_max_s:g} s), {args.repeats} repetition(s), callers at real time, starts "
        f"staggered over {args.stagger_s:g} s. Configured delays subtracted: endpointing wait "
        f"{delays.endpointing_wait_s * 1000:.0f} ms (200 ms − one 20 ms frame), Deepgram "
        f"first_result_delay {delays.dg_delay_s * 1000:.0f} ms, Anthropic ttft {delays.ttft_s * 1000:.0f} ms "
        f"+ first chunk assembly {delays.assembly_s * 1000:.1f} ms ({delays.first_chunk_delta} deltas at "
        f"{delays.tokens_per_s:g}/s), Aura ttfa {delays.ttfa_s * 1000:.0f} ms: "
        f"{delays.total_s * 1000:.1f} ms in all (on a preemptive hit, only the LLM delay still ahead "
        "when the final arrives: bench/voice/share.py).", "",
        "| calls · variant | turns | our share p50 ms | p95 ms | p99 ms | p99 per run, median (min–max) | "
        "p99 less caller lateness | voice-to-voice p50 / p95 / p99 ms | preempt hits / misses (Brain) | "
        "hit turns v2v p50 | failed runs | "
        f"p99 ≤ {TARGET_P99_MS:g} ms |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for group in groups:
        runs = _of(records, group)
        good = [r for r in runs if r.get("turns")]
        turns = [t for r in good for t in r["turns"]]
        s = summarize([t["share"] for t in turns])
        hits = summarize([t["share"] for t in turns if t["preempt_hit"]])
        brain = {k: sum(r.get("brain", {}).get(k, 0) for r in runs) for k in ("preempt_hits", "preempt_misses")}
        summary[_name(group)] = {"pooled": s, "hits": hits, "brain": brain,
                                 "per_run": [summarize([t["share"] for t in r["turns"]]) for r in good]}
        if not turns:
            lines.append(f"| {_name(group)} | 0 | – | – | – | – | – | – | – | – | {len(runs) - len(good)} | – |")
            continue
        per_run_p99 = [x["total"]["p99"] for x in summary[_name(group)]["per_run"] if x.get("n")]
        ok = "yes" if s["total"]["p99"] <= TARGET_P99_MS else "**no**"
        lines.append(
            f"| {_name(group)} | {s['n']} | {fmt(s['total']['p50'])} | {fmt(s['total']['p95'])} | "
            f"**{fmt(s['total']['p99'])}** | {_spread(per_run_p99)} | {fmt(s['total_less_caller']['p99'])} | "
            f"{fmt(s['v2v']['p50'], 0)} / {fmt(s['v2v']['p95'], 0)} / {fmt(s['v2v']['p99'], 0)} | "
            f"{brain['preempt_hits']} / {brain['preempt_misses']} | "
            f"{fmt(hits['v2v']['p50'], 0) if hits.get('n') else '–'} ({hits.get('n', 0)}) | "
            f"{sum(not r.get('ok') for r in runs)} | {ok} |")
    lines += _preemption_table(groups, summary)
    lines += ["", "Stage by stage (pooled turns; ms; each is the measured span minus its configured delay):", "",
              "| calls | component | span | p50 | p95 | p99 | max |", "|---|---|---|---|---|---|---|"]
    spans = {"stt": "stt_final − end_of_speech − 180 − dg_delay", "brain": "llm_request − stt_final",
             "llm": "llm_first_token − llm_request − ttft", "chunk": "first_chunk − llm_first_token − assembly",
             "tts": "tts_first_audio − first_chunk − ttfa", "send": "first_frame_sent − tts_first_audio",
             "total": "sum (with a preemptive head start: see share.py)"}
    for group in groups:
        s = summary[_name(group)]["pooled"]
        if not s.get("n"):
            continue
        for comp in (*COMPONENTS, "total"):
            c = s[comp]
            lines.append(f"| {_name(group)} | {comp} | {spans[comp]} | {fmt(c['p50'], 2)} | {fmt(c['p95'], 2)} | "
                         f"{fmt(c['p99'], 2)} | {fmt(c['max'], 2)} |")
    lines += ["", "CPU (full-load window: every call up; median (min–max) over runs):", "",
              "| calls | server CPU % (core 0) | server CPU ms per call-second | core 0 busy % | "
              "core 1 busy % | emulators CPU % | callers CPU % | other processes % | steal % |",
              "|---|---|---|---|---|---|---|---|---|"]
    for group in groups:
        cpus = [r["cpu"] for r in _of(records, group) if "cpu" in r]
        if not cpus:
            continue
        steal = [r.get("cpu_steal_pct") for r in _of(records, group) if "cpu" in r]
        lines.append(
            f"| {_name(group)} | {_spread([c['service_pct'] for c in cpus])} | "
            f"{_spread([c['service_ms_per_call_s'] for c in cpus], 2)} | "
            f"{_spread([c['core0_busy_pct'] for c in cpus])} | {_spread([c['core1_busy_pct'] for c in cpus])} | "
            f"{_spread([c['cloud_pct'] for c in cpus])} | {_spread([c['callers_pct'] for c in cpus])} | "
            f"{_spread([c['other_pct'] for c in cpus])} | {_spread(steal, 2)} |")
    lines += ["", "Load generator and emulators, against their own schedules (ms; median (min–max) over runs):", "",
              "| calls | caller frame lateness p50 / p99 / max | lateness at the trigger frame p99 | "
              "Anthropic first delta late p50 / p99 | Aura first audio late p50 / p99 | clears | LLM requests (outcomes) |",
              "|---|---|---|---|---|---|---|"]
    for group in groups:
        runs = [r for r in _of(records, group) if "callers" in r]
        if not runs:
            continue
        late = [r["callers"].get("caller_send_late_ms", {}) for r in runs]
        trig = [t["trigger_late_ms"] for r in runs for t in r.get("turns", []) if "trigger_late_ms" in t]
        trig_p99 = sorted(trig)[min(len(trig) - 1, int(0.99 * len(trig)))] if trig else None
        llm = [r.get("cloud", {}).get("llm_first_token_late_ms", {}) for r in runs]
        aura = [r.get("cloud", {}).get("speak_first_audio_late_ms", {}) for r in runs]
        outcomes: dict[str, int] = {}
        for r in runs:
            for k, v in r.get("cloud", {}).get("llm_outcomes", {}).items():
                outcomes[k] = outcomes.get(k, 0) + v
        lines.append(
            f"| {_name(group)} | {_spread([x.get('p50') for x in late], 2)} / {_spread([x.get('p99') for x in late], 2)} / "
            f"{_spread([x.get('max') for x in late], 1)} | {fmt(trig_p99, 2)} | "
            f"{_spread([x.get('p50') for x in llm], 2)} / {_spread([x.get('p99') for x in llm], 2)} | "
            f"{_spread([x.get('p50') for x in aura], 2)} / {_spread([x.get('p99') for x in aura], 2)} | "
            f"{sum(r['callers'].get('clears_received', 0) for r in runs)} | "
            f"{sum(outcomes.values())} ({', '.join(f'{k} {v}' for k, v in sorted(outcomes.items()))}) |")
    busy = [r for r in records if r.get("cpu", {}).get("core1_busy_pct") and
            r["cpu"]["core1_busy_pct"] > LOAD_CPU_BUSY_WARN_PCT]
    if busy:
        lines += ["", f"**Warning:** core 1 (emulators + callers) was above {LOAD_CPU_BUSY_WARN_PCT:g} % busy in "
                      f"{len(busy)} run(s) ({', '.join(r['calls'].__str__() + ' calls' for r in busy)}): "
                      "the load generator's own lateness is inside those figures."]
    disturbed = [r for r in records if r.get("cpu", {}).get("other_pct", 0) > args.max_other_cpu]
    if disturbed:
        lines += ["", f"**Disturbed:** other processes on the machine (not ours, not pinned) used more than "
                      f"{args.max_other_cpu:g} % of a core during {len(disturbed)} of {len(records)} run(s) "
                      "(column \"other processes %\"): they share both cores with the service and the load."]
    failed = [r for r in records if not r.get("ok")]
    for r in failed:
        lines.append(f"\nRun {r['calls']} calls ({r['variant']}) rep {r['rep']} failed or incomplete: {r.get('error')}")
    return "\n".join(lines), summary


def _preemption_table(groups: Sequence[Group], summary: dict[str, Any]) -> list[str]:
    """On − off, for every load and message size run both ways (negative: preemption saves)."""
    rows = []
    for n, label in groups:
        if not label.startswith("preemptive on"):
            continue
        on, off = summary.get(_name((n, label))), summary.get(_name((n, label.replace(" on,", " off,"))))
        if not on or not off or not on["pooled"].get("n") or not off["pooled"].get("n"):
            continue
        a, b = on["pooled"], off["pooled"]
        d = {k: {p: a[k][p] - b[k][p] for p in ("p50", "p95", "p99")} for k in ("total", "v2v")}
        rows.append(f"| {n} · {label.split(', ', 1)[1]} | {on['brain']['preempt_hits']} / "
                    f"{on['brain']['preempt_misses']} | {fmt(d['v2v']['p50'], 0)} / {fmt(d['v2v']['p95'], 0)} / "
                    f"{fmt(d['v2v']['p99'], 0)} | {fmt(d['total']['p50'])} / {fmt(d['total']['p95'])} / "
                    f"{fmt(d['total']['p99'])} |")
    if not rows:
        return []
    return ["", "Preemptive generation, on − off (ms; pooled turns; negative = on is faster):", "",
            "| calls · messages | hits / misses (on) | Δ voice-to-voice p50 / p95 / p99 | "
            "Δ our share p50 / p95 / p99 |", "|---|---|---|---|", *rows]
