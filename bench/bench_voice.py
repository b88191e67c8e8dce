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

Variants of the service's settings run interleaved within each repetition, with the same load:
``--preemptive on,off`` (``PREEMPTIVE_GENERATION``) and ``--message-ms 20,100``
(``SPEAKER_MESSAGE_MS``). ``--lines short`` makes the callers say two or three words a turn, so
the emulated Deepgram's interims can settle on the final and preemptive generation can hit (the
default long lines never can): the Brain's hits and misses are read from its ``brain
statistics`` log lines (one per call, the warm-up call left out), and a table gives on − off.
``--profile`` runs py-spy on the service (collapsed stacks; :mod:`bench.voice.profile_share`
splits them by actor).

Repetitions interleave the call counts and variants; pooled percentiles over every turn of every
repetition, and the per-repetition p99 as median (min–max). Markdown on stdout and in
``bench/out/voice-<stamp>/table.md``, raw JSON beside it. Holds ``bench_relay``'s core lock.

    .venv/bin/python -m bench.bench_voice [--calls 1,100] [--turns 3] [--repeats 3]
    .venv/bin/python -m bench.bench_voice --calls 25 --lines short --preemptive on,off
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import secrets
import shlex
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

import attrs

from bench.bench_relay import (OtherLoad, cpu_steal_jiffies, exclusive_cores, free_port, pinned,
                               raise_fd_limit, stop_server, wait_healthy)
from bench.voice.cloud import DEFAULT_REPLY
from bench.voice.procs import Sampler, first_json, last_json, spawn
from bench.voice.report import fmt, report
from bench.voice.share import Delays, first_chunk_deltas, summarize, turn_share

REPO: Final = Path(__file__).resolve().parent.parent
OUT_DIR: Final = REPO / "bench" / "out"
PYTHON: Final = str(REPO / ".venv" / "bin" / "python")
CENTRALITA: Final = str(REPO / ".venv" / "bin" / "centralita")
LOOPBACK: Final = "127.0.0.1"
SERVICE_CPU: Final = 0
LOAD_CPU: Final = 1
API_KEY: Final = "test-key"
ENDPOINTING_S: Final = 0.2  # DeepgramLink.options_for asks for endpointing=200
QUIET_PROBE_S: Final = 0.5
SETTLE_S: Final = 0.3
CALLERS_MARGIN_S: Final = 60.0
LONG_UTTERANCE_S: Final = (0.8, 1.2)
#: Short lines: a 2-word line is whole in the interim at 1.0 s of speech (bench/voice/cloud.py).
SHORT_UTTERANCE_S: Final = (1.1, 1.5)


def service_env(urls: dict[str, str], token: str, variant: Variant) -> dict[str, str]:
    """Only loopback: the three cloud URLs are the emulators', Telnyx's API is a dead local port."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("DEEPGRAM_", "TELNYX_", "RELAY_", "ANTHROPIC_", "AWS_", "REDIS_",
                                "STT_ENGINE", "TTS_ENGINE", "LLM_ENGINE"))}
    env.update(DEEPGRAM_API_KEY=API_KEY, ANTHROPIC_API_KEY=API_KEY,
               DEEPGRAM_LISTEN_URL=urls["listen_url"], ANTHROPIC_BASE_URL=urls["anthropic_url"],
               DEEPGRAM_SPEAK_URL=urls["speak_url"], TELNYX_STREAM_TOKEN=token,
               TELNYX_API_BASE="http://127.0.0.1:9", HOST=LOOPBACK,
               PREEMPTIVE_GENERATION="true" if variant.preemptive else "false",
               SPEAKER_MESSAGE_MS=str(variant.message_ms))
    return env


@attrs.frozen
class Variant:
    """The service's settings under comparison (interleaved within each repetition)."""

    preemptive: bool = True
    message_ms: int = 100

    @property
    def label(self) -> str:
        return f"preemptive {'on' if self.preemptive else 'off'}, {self.message_ms} ms messages"


def brain_counts(service_log: Path, skip_call_ids: Sequence[str]) -> dict[str, int]:
    """The Brain's statistics summed over the measured calls, from its "brain statistics" log
    lines (one per Brain run, cumulative: the last line of each call counts)."""
    last: dict[str, dict[str, Any]] = {}
    try:
        lines = service_log.read_text(errors="replace").splitlines()
    except OSError:
        return {}
    for line in lines:
        if '"brain statistics"' not in line:
            continue
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if entry.get("call_id") not in skip_call_ids:
            last[str(entry.get("call_id"))] = entry
    keys = ("turns", "replies", "preempt_hits", "preempt_misses", "barge_ins", "fallbacks")
    return {"calls": len(last), **{k: sum(int(e.get(k, 0)) for e in last.values()) for k in keys}}


def profile(pid: int, args: argparse.Namespace, out: Path) -> subprocess.Popen[bytes]:
    """py-spy on the service for the callers' whole run (on-CPU samples only, collapsed stacks,
    ``--nonblocking``: the service is never paused), pinned beside the load generator."""
    call_s = args.lead_in_s + args.turns * (args.utterance_max_s + args.gap_s)
    duration = (args.warmup_calls * (args.lead_in_s + args.utterance_max_s + args.gap_s)
                + args.stagger_s + call_s + 2)
    argv = [str(REPO / ".venv" / "bin" / "py-spy"), "record", "--pid", str(pid), "--rate", "200",
            "--nonblocking", "--format", "raw", "--duration", str(round(duration)), "-o", str(out)]
    return subprocess.Popen(pinned(LOAD_CPU, argv), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def wait_quiet(other: OtherLoad, max_pct: float, wait_s: float) -> float:
    """Other processes' CPU (% of a core); waits up to ``wait_s`` for it to fall to ``max_pct``."""
    deadline = time.monotonic() + wait_s
    while True:
        pct = other.measure_pct(QUIET_PROBE_S)
        if pct <= max_pct or time.monotonic() >= deadline:
            return round(pct, 1)


def one_run(n: int, rep: int, variant: Variant, args: argparse.Namespace, delays: Delays,
            run_dir: Path, other: OtherLoad) -> dict[str, Any]:
    name = f"n{n}-r{rep}-{'p' if variant.preemptive else 'np'}{variant.message_ms}"
    record: dict[str, Any] = {"calls": n, "rep": rep, "variant": variant.label,
                              "service_log": str(run_dir / f"{name}-service.log")}
    record["other_cpu_before_pct"] = wait_quiet(other, args.max_other_cpu, args.quiet_wait)
    token = secrets.token_hex(8)
    cloud_argv = [PYTHON, "-m", "bench.voice.cloud", "--dg-delay-s", str(args.dg_delay_s),
                  "--ttft-s", str(args.ttft_s), "--tokens-per-s", str(args.tokens_per_s),
                  "--ttfa-s", str(args.ttfa_s), "--ms-per-char", str(args.ms_per_char),
                  "--reply", args.reply, "--max-s", "300", "--lines", args.lines,
                  *(["--no-listen"] if args.load == "light" else [])]
    record["cloud_cmd"] = shlex.join(cloud_argv)
    cloud = spawn(cloud_argv, LOAD_CPU, log=run_dir / f"{name}-cloud.log")
    listen: subprocess.Popen[bytes] | None = None
    service: subprocess.Popen[bytes] | None = None
    try:
        urls = first_json(cloud)
        if args.load == "light":
            listen_argv = [PYTHON, "-m", "bench.voice.light_listen", "--delay-s", str(args.dg_delay_s),
                           "--max-s", "300", "--lines", args.lines]
            record["listen_cmd"] = shlex.join(listen_argv)
            listen = spawn(listen_argv, LOAD_CPU, log=run_dir / f"{name}-listen.log")
            urls.update(first_json(listen))
        port = free_port()
        service_argv = [CENTRALITA, "serve", "--host", LOOPBACK, "--port", str(port)]
        record["service_cmd"] = shlex.join(service_argv)
        service = spawn(service_argv, SERVICE_CPU, env=service_env(urls, token, variant),
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
                        "--utterance-min-s", str(args.utterance_min_s),
                        "--utterance-max-s", str(args.utterance_max_s), "--seed", str(args.seed + rep)]
        record["callers_cmd"] = shlex.join(callers_argv)
        other_before, steal0 = other.total_s, cpu_steal_jiffies()
        pids = {"service": service.pid, "cloud": cloud.pid, **({"listen": listen.pid} if listen else {})}
        with Sampler(pids) as sampler:
            callers = spawn(callers_argv, LOAD_CPU, log=run_dir / f"{name}-callers.log")
            sampler.add("callers", callers.pid)
            profiler = profile(service.pid, args, run_dir / f"{name}-pyspy.txt") if args.profile else None
            bound = (args.warmup_calls + 1) * (args.lead_in_s + args.turns * (1.2 + args.gap_s)) \
                + args.stagger_s + CALLERS_MARGIN_S
            result = last_json(callers, terminate=False, timeout_s=bound)
            if profiler is not None:
                record["profile"] = str(run_dir / f"{name}-pyspy.txt")
                profiler.wait(timeout=30)
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
            shares.append({**turn, "share": share, "preempt_hit": share["head_start"] > 0})
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
    p.add_argument("--lines", choices=("long", "short"), default="long",
                   help="long: 15+ words a line (interims never equal the final: no preemptive hit); "
                        "short: 2-3 words (bench/voice/cloud.py: hits and misses)")
    p.add_argument("--utterance-min-s", type=float, default=None,
                   help=f"default {LONG_UTTERANCE_S[0]:g} (long lines) or {SHORT_UTTERANCE_S[0]:g} (short)")
    p.add_argument("--utterance-max-s", type=float, default=None,
                   help=f"default {LONG_UTTERANCE_S[1]:g} (long lines) or {SHORT_UTTERANCE_S[1]:g} (short)")
    p.add_argument("--preemptive", default="on", help="on, off, or on,off (interleaved runs): "
                                                      "PREEMPTIVE_GENERATION of the service")
    p.add_argument("--message-ms", default="100",
                   help="SPEAKER_MESSAGE_MS of the service; a comma list runs each (interleaved)")
    p.add_argument("--profile", action="store_true",
                   help="py-spy record the service (collapsed stacks beside the results)")
    p.add_argument("--seed", type=int, default=6)
    p.add_argument("--load", choices=("light", "trio"), default="light",
                   help="light: epoll callers + epoll Deepgram listen server (the emulator's own "
                        "transcriber); trio: TelnyxCaller + DeepgramListenEmulator (saturate CPU 1 at 100 calls)")
    p.add_argument("--max-other-cpu", type=float, default=25.0,
                   help="wait (up to --quiet-wait s) until other processes use less than this %% of a core")
    p.add_argument("--quiet-wait", type=float, default=10.0)
    args = p.parse_args(argv)
    short = args.lines == "short"
    args.utterance_min_s = args.utterance_min_s or (SHORT_UTTERANCE_S[0] if short else LONG_UTTERANCE_S[0])
    args.utterance_max_s = args.utterance_max_s or (SHORT_UTTERANCE_S[1] if short else LONG_UTTERANCE_S[1])
    try:
        variants = [Variant(preemptive=pre, message_ms=int(ms))
                    for pre in [{"on": True, "off": False}[x.strip()] for x in args.preemptive.split(",")]
                    for ms in args.message_ms.split(",")]
    except (KeyError, ValueError):
        p.error("--preemptive takes on, off or both; --message-ms whole milliseconds")
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
            for n, variant in [(n, v) for n in ns for v in variants]:
                t0 = time.monotonic()
                record = one_run(n, rep, variant, args, delays, run_dir, other)
                record["brain"] = brain_counts(Path(record["service_log"]),
                                               record.get("callers", {}).get("warmup_call_ids", []))
                record["wall_s"] = round(time.monotonic() - t0, 1)
                records.append(record)
                s = summarize([t["share"] for t in record.get("turns", [])])
                print(f"# {n} calls ({variant.label}), rep {rep}: "
                      f"{'ok' if record.get('ok') else 'FAILED ' + str(record.get('error'))}"
                      f"; Brain {record['brain']}"
                      f"; share p50 {fmt(s.get('total', {}).get('p50'), 2)} p99 {fmt(s.get('total', {}).get('p99'), 2)} ms"
                      f"; server CPU {record.get('cpu', {}).get('service_pct')} %; core 1 busy "
                      f"{fmt(record.get('cpu', {}).get('core1_busy_pct'))} %; {record['wall_s']} s",
                      file=sys.stderr, flush=True)
    table, summary = report(records, [(n, v.label) for n in ns for v in variants], args, delays)
    (run_dir / "table.md").write_text(table + "\n")
    (run_dir / "results.json").write_text(json.dumps(
        {"environment": environment(), "args": vars(args), "delays": delays.as_dict(), "summary": summary,
         "runs": records, "wall_s": round(time.monotonic() - started, 1)}, indent=1))
    print(table)
    print(f"\nraw: {run_dir / 'results.json'}")
    return 0 if all(r.get("ok") for r in records) else 1


if __name__ == "__main__":
    sys.exit(main())
