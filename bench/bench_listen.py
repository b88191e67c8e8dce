"""Listening-half benchmark (issue #5): added latency Telnyx frame → Deepgram, CPU per call, batching.

Three processes per run, all on 127.0.0.1: the service (``centralita serve``) pinned to CPU 0, and
on CPU 1 a Deepgram stand-in and the callers. Every run is bounded and stops by itself.

1. **Frame latency and CPU.** N calls from :mod:`bench.listen.light_caller` (stdlib epoll, one
   ``send()`` per 20 ms frame, calls staggered over the 20 ms) stream speech-like PCMU whose frames
   carry a (call, frame) marker. :mod:`bench.listen.deepgram_sink` is the ``DEEPGRAM_LISTEN_URL``:
   it stamps every audio frame it receives on ``CLOCK_MONOTONIC``, which the caller also read just
   before its ``send()``. Latency = receive − send: an upper bound on what the service adds, that
   includes two loopback hops. The sink stamps twice: *kernel* (``SO_TIMESTAMPNS``: the bytes
   reached its socket, i.e. the service's ``send()`` went through) and *user* (its epoll loop
   woke; adds the sink's own scheduling on the shared CPU 1). The service's CPU time is sampled
   from ``/proc`` over the measured window (after a warm-up).
2. **Loopback baseline.** The same caller straight into the sink (``--mode telnyx``): the bare
   hop, so the service's own share is clear.
3. **Transcript latency** (batching's price). :mod:`bench.listen.transcript_latency` places a few
   calls with scripted speech-like utterances against the service wired to the real emulator
   (:mod:`bench.listen.listen_emulator`), and times each ``final`` on a ``/ws?callId=*``
   subscriber from the end of speech.

The service runs as :mod:`bench.listen.service`: ``centralita serve``'s app, with its calls wired
as *listening* calls (``centralita serve`` itself now answers every call with the bot) and
``DeepgramLink.batch_frames`` (20 ms or 40 ms of audio per Deepgram message; not a setting of the
service yet) chosen per run. Its environment points every cloud URL at loopback.

Repetitions interleave the configurations; tables show **median (min–max)** over repetitions.
Raw JSON and the markdown go to ``bench/out/listen-<stamp>/``. Shares the core lock of
``bench_relay`` (the two never run at once) and the process and /proc helpers
(:mod:`bench.procs`, :mod:`bench.cpu_load`); the statistics and tables are :mod:`bench.listen_report`.

    .venv/bin/python -m bench.bench_listen [--calls 1,100] [--seconds 10] [--repeats 3] [--batch-frames 1,2]
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

from bench.cpu_load import OtherLoad, ServiceCpu, cpu_steal_jiffies, wait_quiet
from bench.listen_report import (  # some only re-exported: they were defined here
    HIST_EDGES_MS, NOISE_NOTE, PERCENTILES, counted, cpu_table, latency_stats, latency_table,
    transcript_table,
)
from bench.procs import (  # STOP_TIMEOUT_S only re-exported, as above
    STARTUP_TIMEOUT_S, STOP_TIMEOUT_S, exclusive_cores, finish, first_line, free_port, pinned,
    raise_fd_limit, spawn, stop_server, wait_healthy,
)

REPO: Final = Path(__file__).resolve().parent.parent
OUT_DIR: Final = REPO / "bench" / "out"
VENV_BIN: Final = REPO / ".venv" / "bin"
PYTHON: Final = str(VENV_BIN / "python")
LOOPBACK: Final = "127.0.0.1"
SERVICE_CPU: Final = 0
LOAD_CPU: Final = 1
API_KEY: Final = "test-key"
DEAD_URL: Final = "ws://127.0.0.1:9/v1/speak"  # the discard port: nothing listens
CLIENT_MARGIN_S: Final = 30.0
QUIET_PROBE_S: Final = 0.3


# ------------------------------------------------------------------------------------------ processes


def run_json(argv: Sequence[str], cpu: int, timeout_s: float) -> dict[str, Any]:
    try:
        done = subprocess.run(pinned(cpu, argv), cwd=REPO, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return {"ok": False, "error": f"timed out after {timeout_s:.0f} s"}
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("{")]
    if not lines:
        return {"ok": False, "error": f"no result (exit {done.returncode}): {done.stderr[-600:]}"}
    result: dict[str, Any] = json.loads(lines[-1])
    if done.returncode and done.stderr.strip():
        result["stderr"] = done.stderr[-1500:]
    return result


def service_argv(batch: int, port: int, args: argparse.Namespace) -> list[str]:
    extra = [] if args.gc_log_ms is None else ["--gc-log-ms", str(args.gc_log_ms)]
    if args.gc_untuned:
        extra.append("--gc-untuned")
    if args.gc_threshold:
        extra += ["--gc-threshold", args.gc_threshold]
    return [PYTHON, "-m", "bench.listen.service", "--batch-frames", str(batch), "--host", LOOPBACK,
            "--port", str(port), *extra]


def service_env(listen_url: str, token: str) -> dict[str, str]:
    """Only loopback: the listen URL is ours, every other cloud endpoint is a dead local port."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("DEEPGRAM_", "TELNYX_", "RELAY_", "ANTHROPIC_", "AWS_", "REDIS_"))}
    env.update(DEEPGRAM_API_KEY=API_KEY, DEEPGRAM_LISTEN_URL=listen_url, TELNYX_STREAM_TOKEN=token,
               DEEPGRAM_SPEAK_URL=DEAD_URL, TELNYX_API_BASE="http://127.0.0.1:9", ANTHROPIC_BASE_URL="http://127.0.0.1:9",
               TTS_ENGINE="local", LLM_ENGINE="local", HOST=LOOPBACK)
    return env



# ------------------------------------------------------------------------------------------ runs


def latency_run(kind: str, n: int, batch: int, rep: int, args: argparse.Namespace, run_dir: Path,
                other: OtherLoad, attempt: int) -> dict[str, Any]:
    """``kind`` "service": callers → service → sink; "direct": callers → sink (the bare hop)."""
    seconds = args.seconds if kind == "service" else min(args.seconds, args.baseline_seconds)
    name = f"{kind}-n{n}-b{batch}-r{rep}-a{attempt}"
    record: dict[str, Any] = {"kind": kind, "calls": n, "batch": batch, "rep": rep, "attempt": attempt,
                              "seconds": seconds, "warmup": args.warmup}
    record["other_cpu_before_pct"] = round(wait_quiet(other, args.max_other_cpu, args.quiet_wait, QUIET_PROBE_S), 1)
    token = secrets.token_hex(8)
    sink_npz, client_npz = run_dir / f"{name}-sink.npz", run_dir / f"{name}-client.npz"
    bound_s = args.warmup + seconds + STARTUP_TIMEOUT_S + CLIENT_MARGIN_S + n * 0.05
    sink = spawn([PYTHON, "-m", "bench.listen.deepgram_sink", "--mode",
                  "deepgram" if kind == "service" else "telnyx", "--out", str(sink_npz),
                  "--max-s", str(bound_s + STARTUP_TIMEOUT_S),
                  *(("--interim-every-s", "0", "--final-every-s", "0") if args.no_results else ())],
                 LOAD_CPU, log=run_dir / f"{name}-sink.log")
    service: subprocess.Popen[bytes] | None = None
    try:
        sink_port = int(first_line(sink).split()[1])
        target_port = sink_port
        if kind == "service":
            target_port = free_port()
            argv = service_argv(batch, target_port, args)
            record["service_cmd"] = shlex.join(argv)
            service = spawn(argv, SERVICE_CPU, env=service_env(f"ws://{LOOPBACK}:{sink_port}/v1/listen", token),
                            log=run_dir / f"{name}-service.log")
            problem = wait_healthy(service, target_port)
            if problem:
                record.update(ok=False, error=problem)
                return record
        client_argv = [PYTHON, "-m", "bench.listen.light_caller", "--port", str(target_port), "--token", token,
                       "--calls", str(n), "--warmup", str(args.warmup), "--seconds", str(seconds),
                       "--out", str(client_npz)]
        steal0 = cpu_steal_jiffies()
        sampler: ServiceCpu | None = None
        if service is not None:
            with ServiceCpu(service.pid, other) as sampler:
                client = run_json(client_argv, LOAD_CPU, bound_s)
        else:
            client = run_json(client_argv, LOAD_CPU, bound_s)
        steal1 = cpu_steal_jiffies()
        record["cpu_steal_pct"] = round(100 * (steal1[0] - steal0[0]) / max(1, steal1[1] - steal0[1]), 2)
        record["client"] = client
        time.sleep(0.2)  # the last frames' way through
        record["sink"] = finish(sink)
        if not client.get("ok"):
            record.update(ok=False, error=f"client: {client.get('error')}")
            return record
        if service is not None:
            record["service_alive_after"] = service.poll() is None
        t0, t1 = client["window_start_mono_ns"], client["window_end_mono_ns"]
        window_s = (t1 - t0) / 1e9
        if sampler is not None:
            cpu_s = sampler.used_s(t0, t1)
            frames = n * client["measure_frames"]
            record.update(
                server_cpu_s=round(cpu_s, 4), server_cpu_s_stat_ticks=round(sampler.used_s(t0, t1, 2), 3),
                server_cpu_pct=round(100 * cpu_s / window_s, 2),
                # time the service was runnable but core 0 ran something else (other processes)
                server_runqueue_wait_pct=round(100 * sampler.used_s(t0, t1, 3) / window_s, 2),
                server_cpu_ms_per_call_s=round(1000 * cpu_s / (n * window_s), 3),
                server_cpu_us_per_frame=round(1e6 * cpu_s / frames, 2),
            )
            other_pct = 100 * sampler.other_used_s(t0, t1) / window_s
            record["other_cpu_pct"] = round(other_pct, 1)
            record["noisy"] = other_pct > args.max_other_cpu
        sink_result = record["sink"]
        wall_s = args.warmup + seconds
        record["deepgram_messages_per_s"] = round(sink_result.get("audio_messages", 0) / max(wall_s, 1e-9), 1)
        record["latency"] = latency_stats(client_npz, sink_npz, client)
        record["ok"] = bool(sink_result.get("ok"))
        return record
    except (RuntimeError, OSError, ValueError, KeyError) as exc:
        record.update(ok=False, error=f"{type(exc).__name__}: {exc}")
        return record
    finally:
        if sink.poll() is None:
            finish(sink)
        if service is not None:
            stop_server(service)
        if not args.keep_npz:
            for path in (sink_npz, client_npz):
                path.unlink(missing_ok=True)


def transcript_run(batch: int, rep: int, args: argparse.Namespace, run_dir: Path,
                   other: OtherLoad) -> dict[str, Any]:
    name = f"transcripts-b{batch}-r{rep}"
    record: dict[str, Any] = {"kind": "transcripts", "batch": batch, "rep": rep, "calls": args.transcript_calls}
    record["other_cpu_before_pct"] = round(wait_quiet(other, args.max_other_cpu, args.quiet_wait, QUIET_PROBE_S), 1)
    token = secrets.token_hex(8)
    emulator = spawn([PYTHON, "-m", "bench.listen.listen_emulator", "--max-s", "120"], LOAD_CPU,
                     log=run_dir / f"{name}-emulator.log")
    service: subprocess.Popen[bytes] | None = None
    try:
        url = first_line(emulator).split()[1]
        port = free_port()
        argv = service_argv(batch, port, args)
        record["service_cmd"] = shlex.join(argv)
        service = spawn(argv, SERVICE_CPU, env=service_env(url, token), log=run_dir / f"{name}-service.log")
        problem = wait_healthy(service, port)
        if problem:
            record.update(ok=False, error=problem)
            return record
        result = run_json([PYTHON, "-m", "bench.listen.transcript_latency", "--port", str(port), "--token", token,
                           "--calls", str(args.transcript_calls), "--seed", str(rep)], LOAD_CPU, 90.0)
        record["result"] = result
        record["ok"] = bool(result.get("ok"))
        if not record["ok"]:
            record["error"] = result.get("error") or "; ".join(result.get("problems", []))[:500]
        return record
    except (RuntimeError, OSError, ValueError) as exc:
        record.update(ok=False, error=f"{type(exc).__name__}: {exc}")
        return record
    finally:
        finish(emulator)
        if service is not None:
            stop_server(service)


def environment() -> dict[str, Any]:
    def out(cmd: list[str]) -> str:
        try:
            return subprocess.run(cmd, capture_output=True, text=True, timeout=20, cwd=REPO).stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            return ""

    return {"nproc": os.cpu_count(), "kernel": platform.release(), "python": platform.python_version(),
            "git_head": out(["git", "rev-parse", "--short", "HEAD"]),
            "git_dirty": bool(out(["git", "status", "--porcelain"])), "service_cpu": SERVICE_CPU,
            "load_cpu": LOAD_CPU}


# ------------------------------------------------------------------------------------------ CLI


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.bench_listen", description=__doc__.split("\n\n")[0])
    p.add_argument("--calls", default="1,100", help="concurrent calls, comma-separated (default 1,100)")
    p.add_argument("--seconds", type=float, default=10.0, help="measured window per run (default 10)")
    p.add_argument("--warmup", type=float, default=2.0, help="streaming before the window (default 2)")
    p.add_argument("--repeats", type=int, default=3, help="repetitions, configurations interleaved (default 3)")
    p.add_argument("--batch-frames", default="1,2", help="DeepgramLink.batch_frames values (default 1,2)")
    p.add_argument("--baseline-seconds", type=float, default=5.0,
                   help="measured window of the direct caller → sink runs (default 5)")
    p.add_argument("--transcript-calls", type=int, default=4,
                   help="calls of the transcript-latency part, 3 utterances each (default 4; 0 skips it)")
    p.add_argument("--no-baseline", action="store_true", help="skip the direct caller → sink runs")
    p.add_argument("--no-results", action="store_true",
                   help="the sink sends no Results back (by default: an interim every 1 s of audio and a "
                        "final every 3 s, as Deepgram does on continuous speech)")
    p.add_argument("--gc-log-ms", type=float, default=None, metavar="MS",
                   help="diagnostic: log the service's garbage collections of at least MS ms "
                        "(in the run's service logs)")
    p.add_argument("--gc-threshold", default=None, metavar="G0,G1,G2",
                   help="experiment: settle_heap's thresholds for the service")
    p.add_argument("--gc-untuned", action="store_true",
                   help="experiment: the service without `centralita serve`'s GC tuning (settle_heap)")
    p.add_argument("--keep-npz", action="store_true", help="keep the per-frame send/receive times (.npz)")
    p.add_argument("--max-other-cpu", type=float, default=15.0, metavar="PCT",
                   help="a run in which other processes used more than PCT %% of a core is retried and left "
                        "out while a clean run of that cell exists (default 15)")
    p.add_argument("--quiet-wait", type=float, default=10.0, metavar="S",
                   help="wait up to S s before each run for other processes to calm down (default 10)")
    p.add_argument("--retries", type=int, default=1, help="extra attempts for a disturbed run (default 1)")
    args = p.parse_args(argv)
    args.call_counts, args.batches = _ints(args.calls), _ints(args.batch_frames)
    if not (1 <= args.repeats <= 10 and 0 < args.seconds <= 60 and 0 <= args.warmup <= 30
            and 0 < args.baseline_seconds <= 60 and 0 <= args.retries <= 3 and 0 <= args.quiet_wait <= 120):
        p.error("keep it bounded: repeats 1–10, seconds ≤ 60, warmup ≤ 30, retries ≤ 3, quiet-wait ≤ 120")
    if not args.call_counts or not all(1 <= n <= 1000 for n in args.call_counts):
        p.error("--calls: 1 to 1000 each")
    if not args.batches or not all(1 <= b <= 10 for b in args.batches):
        p.error("--batch-frames: 1 to 10 each")
    if not 0 <= args.transcript_calls <= 20:
        p.error("--transcript-calls: 0 to 20")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse_args(argv)
    with exclusive_cores():
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    if (os.cpu_count() or 1) > LOAD_CPU:
        os.sched_setaffinity(0, {LOAD_CPU})  # keep the orchestrator off the service's core
    else:
        print("warning: fewer than 2 CPUs: service and load share a core", file=sys.stderr)
    raise_fd_limit(2 * max(args.call_counts) + 256)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    run_dir = OUT_DIR / f"listen-{stamp}"
    run_dir.mkdir(parents=True, exist_ok=True)
    other = OtherLoad()
    records: list[dict[str, Any]] = []
    started = time.monotonic()
    for rep in range(1, args.repeats + 1):
        shift = (rep - 1) % len(args.batches)
        batches = args.batches[shift:] + args.batches[:shift]  # first configuration rotates
        for n in args.call_counts:
            plan = ([] if args.no_baseline else [("direct", 1)]) + [("service", b) for b in batches]
            for kind, b in plan:
                for attempt in range(1 + args.retries):
                    record = latency_run(kind, n, b, rep, args, run_dir, other, attempt)
                    records.append(record)
                    print(_progress(record, rep, args.repeats, started), file=sys.stderr, flush=True)
                    if not (record.get("ok") and record.get("noisy")):
                        break
        if args.transcript_calls:
            for b in batches:
                record = transcript_run(b, rep, args, run_dir, other)
                records.append(record)
                print(_progress(record, rep, args.repeats, started), file=sys.stderr, flush=True)

    header = (f"Listening half, {stamp}: service on CPU {SERVICE_CPU}; light callers and the Deepgram sink on "
              f"CPU {LOAD_CPU}; warm-up {args.warmup:g} s + {args.seconds:g} s measured "
              f"(direct runs {min(args.seconds, args.baseline_seconds):g} s); {args.repeats} repetition(s), "
              f"median (min–max) over repetitions.\n")
    sections = [
        header,
        "Added latency, Telnyx media frame handed to send() → its bytes reach the Deepgram socket "
        "(kernel receive stamp), frames in the measured window:\n",
        latency_table(records, args.call_counts, args.batches),
        "\nServer CPU over the measured window:\n",
        cpu_table(records, args.call_counts, args.batches),
        "\n" + NOISE_NOTE,
    ]
    if args.transcript_calls:
        sections += [f"\nTranscript latency, {args.transcript_calls} calls × 3 utterances per run, "
                     "Deepgram emulator (endpointing 200 ms), firehose subscriber:\n",
                     transcript_table(records, args.batches)]
    table = "\n".join(sections)
    raw = {"args": {k: v for k, v in vars(args).items()}, "environment": environment(), "runs": records}
    (run_dir / "results.json").write_text(json.dumps(raw, indent=1))
    (run_dir / "table.md").write_text(table + "\n")
    print(table)
    print(f"\nraw JSON: {(run_dir / 'results.json').relative_to(REPO)} "
          f"(took {time.monotonic() - started:.0f} s)")
    return 0 if all(r.get("ok") for r in records) else 1


def _progress(r: dict[str, Any], rep: int, repeats: int, started: float) -> str:
    head = (f"[{rep}/{repeats} {time.monotonic() - started:5.0f}s] {r['kind']:>11} "
            f"N={r.get('calls', ''):<4} batch={r.get('batch')}" + (f" (retry {r['attempt']})" if r.get("attempt") else ""))
    if not r.get("ok"):
        return f"{head} FAILED: {r.get('error')}"
    if r["kind"] == "transcripts":
        finals = r["result"]["finals"]
        e2f = [f["end_to_final_ms"] for f in finals]
        t2f = [f["trigger_to_final_ms"] for f in finals]
        return (f"{head} {len(finals)} finals, speech end → final median {statistics.median(e2f):.1f} ms, "
                f"trigger → final median {statistics.median(t2f):.1f} ms (max {max(t2f):.1f})")
    lat = r["latency"]["kernel"]
    text = (f"{head} p50 {lat['p50']:.2f} p95 {lat['p95']:.2f} p99 {lat['p99']:.2f} max {lat['max']:.1f} ms "
            f"(sink wake-up p99 {r['latency']['user']['p99']:.2f}), lost {r['latency']['lost']}, "
            f"client {r['client']['client_cpu_pct']:.0f} %, sink {r['latency']['sink_cpu_pct']} %, "
            f"late sends >1 ms {r['client']['sends_late_over_1ms']}")
    if r["kind"] == "service":
        text += (f"; server {r['server_cpu_pct']:.1f} % = {r['server_cpu_us_per_frame']:.1f} µs/frame, "
                 f"{r['deepgram_messages_per_s']:.0f} msg/s to Deepgram, run-queue wait "
                 f"{r.get('server_runqueue_wait_pct')} %, other {r.get('other_cpu_pct')} %"
                 + (" DISTURBED" if r.get("noisy") else ""))
    return text


if __name__ == "__main__":
    sys.exit(main())
