"""Voice-to-voice benchmark (issue #6): the runtime's OWN share of a turn's latency, and its CPU.

Three processes per run, all on 127.0.0.1, every one bounded in time:

- the service, ``centralita serve`` unchanged, pinned to CPU 0, with every cloud engine pointed at
  the emulators (``DEEPGRAM_API_KEY`` + ``ANTHROPIC_API_KEY`` set: DeepgramLink, Claude through the
  ``anthropic`` SDK, Aura);
- :mod:`bench.voice.cloud` on CPU 1: the Deepgram listen, Anthropic and Aura emulators with
  configured delays (``first_result_delay_s``, ``ttft_s``/``tokens_per_s``, ``ttfa_s``);
- :mod:`bench.voice.callers` on CPU 1: N Telnyx callers at real time (speed 1.0), ``--turns``
  utterances each, starts staggered over ``--stagger-s``, and a ``/ws?callId=*`` firehose
  subscriber collecting every turn's ``latency`` waterfall. One warm-up call (one turn) goes
  first and is not counted.

Our share of a turn = (first_frame_sent − end_of_speech) − the emulators' configured delays on the
path, computed stage by stage (:mod:`bench.voice.share`): stt, brain, llm, chunk, tts, send. The
caller's own lateness at the frame that triggers the final is reported beside it. CPU: the
service's on-CPU time (``schedstat``) over the window where all N calls are up, and per
call-second over the whole batch; CPU 1's busy share shows whether the load generator kept up.

Repetitions interleave the call counts; pooled percentiles over every turn of every repetition,
and the per-repetition p99 as median (min–max). Markdown on stdout and in
``bench/out/voice-<stamp>/table.md``, raw JSON beside it. Holds ``bench_relay``'s core lock.

    .venv/bin/python -m bench.bench_voice [--calls 1,100] [--turns 3] [--repeats 3]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import secrets
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

from bench.bench_relay import (OtherLoad, cpu_steal_jiffies, exclusive_cores, free_port,
                               raise_fd_limit, stop_server, wait_healthy)
from bench.voice.cloud import DEFAULT_REPLY
from bench.voice.procs import Sampler, first_json, last_json, spawn
from bench.voice.share import COMPONENTS, Delays, first_chunk_deltas, summarize, turn_share

REPO: Final = Path(__file__).resolve().parent.parent
OUT_DIR: Final = REPO / "bench" / "out"
PYTHON: Final = str(REPO / ".venv" / "bin" / "python")
CENTRALITA: Final = str(REPO / ".venv" / "bin" / "centralita")
LOOPBACK: Final = "127.0.0.1"
SERVICE_CPU: Final = 0
LOAD_CPU: Final = 1
API_KEY: Final = "test-key"
ENDPOINTING_S: Final = 0.2  # DeepgramLink.options_for asks for endpointing=200
TARGET_P99_MS: Final = 10.0
QUIET_PROBE_S: Final = 0.5
SETTLE_S: Final = 0.3
CALLERS_MARGIN_S: Final = 60.0
#: CPU 1 busier than this during the full-load window: the load generator may have fallen behind.
LOAD_CPU_BUSY_WARN_PCT: Final = 85.0


def service_env(urls: dict[str, str], token: str) -> dict[str, str]:
    """Only loopback: the three cloud URLs are the emulators', Telnyx's API is a dead local port."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("DEEPGRAM_", "TELNYX_", "RELAY_", "ANTHROPIC_", "AWS_", "REDIS_",
                                "STT_ENGINE", "TTS_ENGINE", "LLM_ENGINE"))}
    env.update(DEEPGRAM_API_KEY=API_KEY, ANTHROPIC_API_KEY=API_KEY,
               DEEPGRAM_LISTEN_URL=urls["listen_url"], ANTHROPIC_BASE_URL=urls["anthropic_url"],
               DEEPGRAM_SPEAK_URL=urls["speak_url"], TELNYX_STREAM_TOKEN=token,
               TELNYX_API_BASE="http://127.0.0.1:9", HOST=LOOPBACK)
    return env


def wait_quiet(other: OtherLoad, max_pct: float, wait_s: float) -> float:
    """Other processes' CPU (% of a core); waits up to ``wait_s`` for it to fall to ``max_pct``."""
    deadline = time.monotonic() + wait_s
    while True:
        pct = other.measure_pct(QUIET_PROBE_S)
        if pct <= max_pct or time.monotonic() >= deadline:
            return round(pct, 1)


def one_run(n: int, rep: int, args: argparse.Namespace, delays: Delays, run_dir: Path,
            other: OtherLoad) -> dict[str, Any]:
    name = f"n{n}-r{rep}"
    record: dict[str, Any] = {"calls": n, "rep": rep}
    record["other_cpu_before_pct"] = wait_quiet(other, args.max_other_cpu, args.quiet_wait)
    token = secrets.token_hex(8)
    cloud_argv = [PYTHON, "-m", "bench.voice.cloud", "--dg-delay-s", str(args.dg_delay_s),
                  "--ttft-s", str(args.ttft_s), "--tokens-per-s", str(args.tokens_per_s),
                  "--ttfa-s", str(args.ttfa_s), "--ms-per-char", str(args.ms_per_char),
                  "--reply", args.reply, "--max-s", "300", *(["--no-listen"] if args.load == "light" else [])]
    record["cloud_cmd"] = shlex.join(cloud_argv)
    cloud = spawn(cloud_argv, LOAD_CPU, log=run_dir / f"{name}-cloud.log")
    listen: subprocess.Popen[bytes] | None = None
    service: subprocess.Popen[bytes] | None = None
    try:
        urls = first_json(cloud)
        if args.load == "light":
            listen_argv = [PYTHON, "-m", "bench.voice.light_listen", "--delay-s", str(args.dg_delay_s),
                           "--max-s", "300"]
            record["listen_cmd"] = shlex.join(listen_argv)
            listen = spawn(listen_argv, LOAD_CPU, log=run_dir / f"{name}-listen.log")
            urls.update(first_json(listen))
        port = free_port()
        service_argv = [CENTRALITA, "serve", "--host", LOOPBACK, "--port", str(port)]
        record["service_cmd"] = shlex.join(service_argv)
        service = spawn(service_argv, SERVICE_CPU, env=service_env(urls, token),
                        log=run_dir / f"{name}-service.log")
        problem = wait_healthy(service, port)
        if problem:
            record.update(ok=False, error=problem)
            return record
        callers_module = "bench.voice.light_callers" if args.load == "light" else "bench.voice.callers"
        callers_argv = [PYTHON, "-m", callers_module, "--port", str(port), "--token", token,
                        "--calls", str(n), "--turns", str(args.turns), "--stagger-s",
                        str(args.stagger_s if n > 1 else 0), "--lead-in-s", str(args.lead_in_s),
                        "--gap-s", str(args.gap_s), "--warmup-calls", str(args.warmup_calls),
                        "--seed", str(args.seed + rep)]
        record["callers_cmd"] = shlex.join(callers_argv)
        other_before, steal0 = other.total_s, cpu_steal_jiffies()
        pids = {"service": service.pid, "cloud": cloud.pid, **({"listen": listen.pid} if listen else {})}
        with Sampler(pids) as sampler:
            callers = spawn(callers_argv, LOAD_CPU, log=run_dir / f"{name}-callers.log")
            sampler.add("callers", callers.pid)
            bound = (args.warmup_calls + 1) * (args.lead_in_s + args.turns * (1.2 + args.gap_s)) \
                + args.stagger_s + CALLERS_MARGIN_S
            result = last_json(callers, terminate=False, timeout_s=bound)
        other.scan()
        steal1 = cpu_steal_jiffies()
        record["cpu_steal_pct"] = round(100 * (steal1[0] - steal0[0]) / max(1, steal1[1] - steal0[1]), 2)
        turns = result.pop("turns", [])
        record["callers"] = result
        time.sleep(SETTLE_S)
        record["cloud"] = last_json(cloud, terminate=True, timeout_s=10)
        if listen is not None:
            record["listen"] = last_json(listen, terminate=True, timeout_s=10)
        if not result.get("ok") and not turns:
            record.update(ok=False, error=f"callers: {result.get('error') or result.get('problems')}")
            return record
        # CPU windows: "full" = every call up (last start → first end); "batch" = first start → last end.
        full = (result["all_started_mono_ns"], result["first_end_mono_ns"])
        batch = (result["first_start_mono_ns"], result["last_end_mono_ns"])
        full_s, batch_s = (full[1] - full[0]) / 1e9, (batch[1] - batch[0]) / 1e9
        cpu = {"full_window_s": round(full_s, 2), "batch_window_s": round(batch_s, 2)}
        for proc in ("service", "cloud", "callers", *(["listen"] if listen else [])):
            cpu[f"{proc}_pct"] = round(100 * sampler.used_s(proc, *full) / full_s, 1)
        if listen is not None:  # "emulators" = the trio cloud process + the light listen server
            cpu["cloud_pct"] = round(cpu["cloud_pct"] + cpu["listen_pct"], 1)
        service_batch_s = sampler.used_s("service", *batch)
        cpu["service_batch_cpu_s"] = round(service_batch_s, 3)
        cpu["service_ms_per_call_s"] = round(1000 * service_batch_s / (n * result["call_s"]), 3)
        cpu["core0_busy_pct"] = sampler.core_busy_pct("cpu0", *full)
        cpu["core1_busy_pct"] = sampler.core_busy_pct("cpu1", *full)
        cpu["other_pct"] = round(100 * (other.total_s - other_before) / max(batch_s, 1e-9), 1)
        record["cpu"] = cpu
        shares = []
        for turn in turns:
            share = turn_share(turn["stages"], delays)
            if share is None:
                continue
            late = turn.get("trigger_late_ms")
            share["total_less_caller"] = share["total"] - (late / 1000 if late is not None else 0.0)
            shares.append({**turn, "share": share, "preempt_hit": share["brain"] < 0})
        record["turns"] = shares
        record["ok"] = bool(result.get("ok")) and len(shares) == result.get("expected_turns")
        if not record["ok"]:
            record["error"] = (f"{len(shares)} of {result.get('expected_turns')} turns; "
                               f"{result.get('problems') or result.get('error') or ''}")
        return record
    except Exception as exc:  # noqa: BLE001 - one failed run must not lose the others
        record.update(ok=False, error=f"{type(exc).__name__}: {exc}")
        return record
    finally:
        if service is not None:
            stop_server(service)
        for child in (cloud, listen):
            if child is not None and child.poll() is None:
                last_json(child, terminate=True, timeout_s=10)


# ------------------------------------------------------------------------------------------ report


def _f(x: float | None, digits: int = 1) -> str:
    return "–" if x is None else f"{x:,.{digits}f}"


def _spread(raw: Sequence[float | None], digits: int = 1) -> str:
    values = [v for v in raw if v is not None]
    if not values:
        return "–"
    if len(values) == 1:
        return _f(values[0], digits)
    return f"{_f(statistics.median(values), digits)} ({_f(min(values), digits)}–{_f(max(values), digits)})"


def report(records: list[dict[str, Any]], ns: Sequence[int], args: argparse.Namespace,
           delays: Delays) -> tuple[str, dict[str, Any]]:
    lines: list[str] = []
    summary: dict[str, Any] = {}
    lines += [
        f"Voice-to-voice, the runtime's own share. Service on CPU 0; emulators and callers on CPU 1; "
        f"{args.turns} turns per call, {args.repeats} repetition(s), callers at real time, starts "
        f"staggered over {args.stagger_s:g} s. Configured delays subtracted: endpointing wait "
        f"{delays.endpointing_wait_s * 1000:.0f} ms (200 ms − one 20 ms frame), Deepgram "
        f"first_result_delay {delays.dg_delay_s * 1000:.0f} ms, Anthropic ttft {delays.ttft_s * 1000:.0f} ms "
        f"+ first chunk assembly {delays.assembly_s * 1000:.1f} ms ({delays.first_chunk_delta} deltas at "
        f"{delays.tokens_per_s:g}/s), Aura ttfa {delays.ttfa_s * 1000:.0f} ms: "
        f"{delays.total_s * 1000:.1f} ms in all.", "",
        "| calls | turns | our share p50 ms | p95 ms | p99 ms | p99 per run, median (min–max) | "
        "p99 less caller lateness | voice-to-voice p50 ms | preempt hits (excluded) | failed runs | "
        f"p99 ≤ {TARGET_P99_MS:g} ms |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for n in ns:
        runs = [r for r in records if r["calls"] == n]
        good = [r for r in runs if r.get("turns")]
        turns = [t for r in good for t in r["turns"]]
        plain = [t["share"] for t in turns if not t["preempt_hit"]]
        s = summarize(plain)
        summary[str(n)] = {"pooled": s, "per_run": [summarize([t["share"] for t in r["turns"]
                                                               if not t["preempt_hit"]]) for r in good]}
        if not plain:
            lines.append(f"| {n} | 0 | – | – | – | – | – | – | – | {len(runs) - len(good)} | – |")
            continue
        per_run_p99 = [x["total"]["p99"] for x in summary[str(n)]["per_run"] if x.get("n")]
        ok = "yes" if s["total"]["p99"] <= TARGET_P99_MS else "**no**"
        lines.append(
            f"| {n} | {s['n']} | {_f(s['total']['p50'])} | {_f(s['total']['p95'])} | "
            f"**{_f(s['total']['p99'])}** | {_spread(per_run_p99)} | {_f(s['total_less_caller']['p99'])} | "
            f"{_f(s['v2v']['p50'], 0)} | {sum(t['preempt_hit'] for t in turns)} | "
            f"{sum(not r.get('ok') for r in runs)} | {ok} |")
    lines += ["", "Stage by stage (pooled turns; ms; each is the measured span minus its configured delay):", "",
              "| calls | component | span | p50 | p95 | p99 | max |", "|---|---|---|---|---|---|---|"]
    spans = {"stt": "stt_final − end_of_speech − 180 − dg_delay", "brain": "llm_request − stt_final",
             "llm": "llm_first_token − llm_request − ttft", "chunk": "first_chunk − llm_first_token − assembly",
             "tts": "tts_first_audio − first_chunk − ttfa", "send": "first_frame_sent − tts_first_audio",
             "total": "sum"}
    for n in ns:
        s = summary[str(n)]["pooled"]
        if not s.get("n"):
            continue
        for comp in (*COMPONENTS, "total"):
            c = s[comp]
            lines.append(f"| {n} | {comp} | {spans[comp]} | {_f(c['p50'], 2)} | {_f(c['p95'], 2)} | "
                         f"{_f(c['p99'], 2)} | {_f(c['max'], 2)} |")
    lines += ["", "CPU (full-load window: every call up; median (min–max) over runs):", "",
              "| calls | server CPU % (core 0) | server CPU ms per call-second | core 0 busy % | "
              "core 1 busy % | emulators CPU % | callers CPU % | other processes % | steal % |",
              "|---|---|---|---|---|---|---|---|---|"]
    for n in ns:
        cpus = [r["cpu"] for r in records if r["calls"] == n and "cpu" in r]
        if not cpus:
            continue
        steal = [r.get("cpu_steal_pct") for r in records if r["calls"] == n and "cpu" in r]
        lines.append(
            f"| {n} | {_spread([c['service_pct'] for c in cpus])} | "
            f"{_spread([c['service_ms_per_call_s'] for c in cpus], 2)} | "
            f"{_spread([c['core0_busy_pct'] for c in cpus])} | {_spread([c['core1_busy_pct'] for c in cpus])} | "
            f"{_spread([c['cloud_pct'] for c in cpus])} | {_spread([c['callers_pct'] for c in cpus])} | "
            f"{_spread([c['other_pct'] for c in cpus])} | {_spread(steal, 2)} |")
    lines += ["", "Load generator and emulators, against their own schedules (ms; median (min–max) over runs):", "",
              "| calls | caller frame lateness p50 / p99 / max | lateness at the trigger frame p99 | "
              "Anthropic first delta late p50 / p99 | Aura first audio late p50 / p99 | clears | LLM requests (outcomes) |",
              "|---|---|---|---|---|---|---|"]
    for n in ns:
        runs = [r for r in records if r["calls"] == n and "callers" in r]
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
            f"| {n} | {_spread([x.get('p50') for x in late], 2)} / {_spread([x.get('p99') for x in late], 2)} / "
            f"{_spread([x.get('max') for x in late], 1)} | {_f(trig_p99, 2)} | "
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
        lines.append(f"\nRun {r['calls']} calls rep {r['rep']} failed or incomplete: {r.get('error')}")
    return "\n".join(lines), summary


def environment() -> dict[str, Any]:
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True,
                                timeout=5).stdout.strip()
        dirty = bool(subprocess.run(["git", "status", "--porcelain"], cwd=REPO, capture_output=True,
                                    text=True, timeout=5).stdout.strip())
    except (OSError, subprocess.SubprocessError):
        commit, dirty = "unknown", True
    return {"python": platform.python_version(), "machine": platform.machine(), "cpus": os.cpu_count(),
            "commit": commit, "dirty_tree": dirty, "argv": sys.argv}


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.bench_voice", description=__doc__.split("\n\n")[0])
    p.add_argument("--calls", default="1,100", help="comma-separated concurrent call counts")
    p.add_argument("--turns", type=int, default=3)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--stagger-s", type=float, default=2.0)
    p.add_argument("--lead-in-s", type=float, default=3.0, help="silence before the first turn (greeting)")
    p.add_argument("--gap-s", type=float, default=2.5, help="pause after each utterance (the reply)")
    p.add_argument("--warmup-calls", type=int, default=1)
    p.add_argument("--dg-delay-s", type=float, default=0.05)
    p.add_argument("--ttft-s", type=float, default=0.3)
    p.add_argument("--tokens-per-s", type=float, default=200.0)
    p.add_argument("--ttfa-s", type=float, default=0.15)
    p.add_argument("--ms-per-char", type=float, default=30.0, help="Aura audio per character")
    p.add_argument("--reply", default=DEFAULT_REPLY)
    p.add_argument("--seed", type=int, default=6)
    p.add_argument("--load", choices=("light", "trio"), default="light",
                   help="light: epoll callers + epoll Deepgram listen server (the emulator's own "
                        "transcriber); trio: TelnyxCaller + DeepgramListenEmulator (saturate CPU 1 at 100 calls)")
    p.add_argument("--max-other-cpu", type=float, default=25.0,
                   help="wait (up to --quiet-wait s) until other processes use less than this %% of a core")
    p.add_argument("--quiet-wait", type=float, default=10.0)
    args = p.parse_args(argv)
    ns = [int(x) for x in args.calls.split(",") if x.strip()]
    if not ns or min(ns) < 1 or max(ns) > 300 or not 1 <= args.repeats <= 10 or not 1 <= args.turns <= 10:
        p.error("1 ≤ calls ≤ 300, 1 ≤ repeats ≤ 10, 1 ≤ turns ≤ 10")
    delays = Delays(endpointing_s=ENDPOINTING_S, dg_delay_s=args.dg_delay_s, ttft_s=args.ttft_s,
                    tokens_per_s=args.tokens_per_s, first_chunk_delta=first_chunk_deltas(args.reply),
                    ttfa_s=args.ttfa_s)
    raise_fd_limit(4 * max(ns) + 256)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    run_dir = OUT_DIR / f"voice-{stamp}"
    run_dir.mkdir(parents=True, exist_ok=True)
    records: list[dict[str, Any]] = []
    started = time.monotonic()
    with exclusive_cores():
        other = OtherLoad()
        for rep in range(1, args.repeats + 1):
            for n in ns:
                t0 = time.monotonic()
                record = one_run(n, rep, args, delays, run_dir, other)
                record["wall_s"] = round(time.monotonic() - t0, 1)
                records.append(record)
                s = summarize([t["share"] for t in record.get("turns", []) if not t["preempt_hit"]])
                print(f"# {n} calls, rep {rep}: {'ok' if record.get('ok') else 'FAILED ' + str(record.get('error'))}"
                      f"; share p50 {_f(s.get('total', {}).get('p50'), 2)} p99 {_f(s.get('total', {}).get('p99'), 2)} ms"
                      f"; server CPU {record.get('cpu', {}).get('service_pct')} %; core 1 busy "
                      f"{_f(record.get('cpu', {}).get('core1_busy_pct'))} %; {record['wall_s']} s",
                      file=sys.stderr, flush=True)
    table, summary = report(records, ns, args, delays)
    (run_dir / "table.md").write_text(table + "\n")
    (run_dir / "results.json").write_text(json.dumps(
        {"environment": environment(), "args": vars(args), "delays": delays.as_dict(), "summary": summary,
         "runs": records, "wall_s": round(time.monotonic() - started, 1)}, indent=1))
    print(table)
    print(f"\nraw: {run_dir / 'results.json'}")
    return 0 if all(r.get("ok") for r in records) else 1


if __name__ == "__main__":
    sys.exit(main())
