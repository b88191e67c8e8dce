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
``bench_relay`` (the two never run at once) and its /proc helpers.

    .venv/bin/python -m bench.bench_listen [--calls 1,100] [--seconds 10] [--repeats 3] [--batch-frames 1,2]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import secrets
import select
import shlex
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

import numpy as np

from bench.bench_relay import (OtherLoad, cpu_seconds, cpu_steal_jiffies, exclusive_cores, free_port,
                               pinned, raise_fd_limit, stop_server, wait_healthy)

REPO: Final = Path(__file__).resolve().parent.parent
OUT_DIR: Final = REPO / "bench" / "out"
VENV_BIN: Final = REPO / ".venv" / "bin"
PYTHON: Final = str(VENV_BIN / "python")
LOOPBACK: Final = "127.0.0.1"
SERVICE_CPU: Final = 0
LOAD_CPU: Final = 1
API_KEY: Final = "test-key"
DEAD_URL: Final = "ws://127.0.0.1:9/v1/speak"  # the discard port: nothing listens
STARTUP_TIMEOUT_S: Final = 20.0
STOP_TIMEOUT_S: Final = 10.0
CLIENT_MARGIN_S: Final = 30.0
PERCENTILES: Final = (50, 90, 95, 99, 99.9)
HIST_EDGES_MS: Final = (0, 0.25, 0.5, 1, 2, 3, 5, 10, 15, 20, 25, 30, 40, 60, 100, 1e9)
QUIET_PROBE_S: Final = 0.3
CPU_SAMPLE_S: Final = 0.05
OTHER_SCAN_S: Final = 0.5


class ServiceCpu:
    """Samples one process's on-CPU time, and other processes' CPU, on ``CLOCK_MONOTONIC``.

    On-CPU time is the sum of ``/proc/PID/task/*/schedstat`` (nanoseconds; ``/proc/PID/stat``
    counts 10 ms ticks, too coarse for one call's ~1 % of a core over 10 s). ``stat`` ticks are
    kept as a cross-check (they also count threads that have exited).
    """

    def __init__(self, pid: int, other: OtherLoad) -> None:
        self._pid, self._other = pid, other
        # (mono ns, on-CPU s from schedstat, stat s, run-queue wait s: runnable but another task ran)
        self.samples: list[tuple[int, float, float, float]] = []
        self.other_samples: list[tuple[int, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="service-cpu", daemon=True)

    def _schedstat_s(self) -> tuple[float, float]:
        """(on-CPU, waiting on a run queue) seconds, summed over the live threads."""
        run = wait = 0
        try:
            tasks = os.listdir(f"/proc/{self._pid}/task")
        except OSError:
            return (self.samples[-1][1], self.samples[-1][3]) if self.samples else (0.0, 0.0)
        for tid in tasks:
            try:
                fields = Path(f"/proc/{self._pid}/task/{tid}/schedstat").read_text().split()
                run, wait = run + int(fields[0]), wait + int(fields[1])
            except (OSError, ValueError, IndexError):
                pass
        return run / 1e9, wait / 1e9

    def _sample(self, *, full: bool) -> None:
        if full:
            self._other.scan()
            self.other_samples.append((time.monotonic_ns(), self._other.total_s))
        run, wait = self._schedstat_s()
        self.samples.append((time.monotonic_ns(), run, cpu_seconds([self._pid]), wait))

    def _run(self) -> None:
        last_full = time.monotonic()
        while not self._stop.wait(CPU_SAMPLE_S):
            full = time.monotonic() - last_full >= OTHER_SCAN_S
            if full:
                last_full = time.monotonic()
            self._sample(full=full)

    def __enter__(self) -> ServiceCpu:
        self._sample(full=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._sample(full=True)

    def used_s(self, t0: int, t1: int, column: int = 1) -> float:
        times = [s[0] for s in self.samples]
        values = [s[column] for s in self.samples]
        return float(np.interp(t1, times, values) - np.interp(t0, times, values))

    def other_used_s(self, t0: int, t1: int) -> float:
        times = [s[0] for s in self.other_samples]
        values = [s[1] for s in self.other_samples]
        return float(np.interp(t1, times, values) - np.interp(t0, times, values))


# ------------------------------------------------------------------------------------------ processes


def spawn(argv: Sequence[str], cpu: int, *, env: dict[str, str] | None = None,
          log: Path | None = None) -> subprocess.Popen[bytes]:
    """A pinned child in its own session (so it can be stopped as a group); stdout piped."""
    stderr = log.open("wb") if log else subprocess.DEVNULL
    try:
        return subprocess.Popen(pinned(cpu, argv), cwd=REPO, env=env, stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=stderr, start_new_session=True)
    finally:
        if log:
            stderr.close()  # type: ignore[union-attr]


def first_line(proc: subprocess.Popen[bytes], timeout_s: float = STARTUP_TIMEOUT_S) -> str:
    """The child's first stdout line (its "listening ..." announcement), bounded."""
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout_s)
    if not ready:
        raise RuntimeError(f"{proc.args!r} printed nothing in {timeout_s:.0f} s")
    line = proc.stdout.readline().decode().strip()
    if not line:
        raise RuntimeError(f"{proc.args!r} exited ({proc.wait(5)}) before announcing itself")
    return line


def finish(proc: subprocess.Popen[bytes]) -> dict[str, Any]:
    """SIGTERM to the child's group, then its last JSON line on stdout (SIGKILL if it hangs)."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    try:
        out, _ = proc.communicate(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate(timeout=STOP_TIMEOUT_S)
    lines = [ln for ln in out.decode().splitlines() if ln.startswith("{")]
    return json.loads(lines[-1]) if lines else {"ok": False, "error": f"no result (exit {proc.returncode})"}


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
    if args.gc_freeze:
        extra.append("--gc-freeze")
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


def wait_quiet(other: OtherLoad, max_pct: float, wait_s: float) -> float:
    deadline = time.monotonic() + wait_s
    while True:
        pct = other.measure_pct(QUIET_PROBE_S)
        if pct <= max_pct or time.monotonic() >= deadline:
            return round(pct, 1)


# ------------------------------------------------------------------------------------------ analysis


def _interp(samples: np.ndarray, t_ns: int) -> float:
    return float(np.interp(t_ns, samples[:, 0], samples[:, 1]))


def latency_stats(client_npz: Path, sink_npz: Path, client: dict[str, Any]) -> dict[str, Any]:
    """Per-frame latency over the frames the caller sent inside the measured window."""
    send = np.load(client_npz)["send_ns"]
    sink = np.load(sink_npz)
    calls, frames = send.shape
    call, frame = sink["call"], sink["frame"]
    keep = (call < calls) & (frame < frames)
    call, frame = call[keep], frame[keep]
    kernel, user, pos = sink["kernel_ns"][keep], sink["user_ns"][keep], sink["pos"][keep]
    w0, w1 = client["warm_frames"], client["warm_frames"] + client["measure_frames"]
    in_window = (frame >= w0) & (frame < w1)
    sent = send[call, frame]
    ids = call[in_window] * frames + frame[in_window]
    unique = np.unique(ids).size
    lat_k = (kernel[in_window] - sent[in_window]) / 1e6
    lat_u = (user[in_window] - sent[in_window]) / 1e6
    first = pos[in_window] == 0

    def summary(values: np.ndarray) -> dict[str, Any]:
        if values.size == 0:
            return {"n": 0}
        pct = np.percentile(values, PERCENTILES)
        hist, _ = np.histogram(values, bins=HIST_EDGES_MS)
        return {"n": int(values.size), **{f"p{p:g}": round(float(v), 3) for p, v in zip(PERCENTILES, pct)},
                "max": round(float(values.max()), 3), "mean": round(float(values.mean()), 3),
                "min": round(float(values.min()), 3), "hist_edges_ms": list(HIST_EDGES_MS[:-1]),
                "hist": hist.tolist()}

    sink_cpu = sink["cpu"]
    t0, t1 = client["window_start_mono_ns"], client["window_end_mono_ns"]
    sink_cpu_pct = (100 * (_interp(sink_cpu, t1) - _interp(sink_cpu, t0)) / ((t1 - t0) / 1e9)
                    if sink_cpu.shape[0] >= 2 else None)
    return {
        "expected": calls * (w1 - w0), "received_unique": unique, "duplicates": int(ids.size - unique),
        "lost": calls * (w1 - w0) - unique, "kernel": summary(lat_k), "user": summary(lat_u),
        # batch > 1: a frame that opens a message waits for its partners; the last one does not
        "kernel_opens_message": summary(lat_k[first]), "kernel_in_message": summary(lat_k[~first]),
        "sink_cpu_pct": None if sink_cpu_pct is None else round(sink_cpu_pct, 1),
    }


# ------------------------------------------------------------------------------------------ runs


def latency_run(kind: str, n: int, batch: int, rep: int, args: argparse.Namespace, run_dir: Path,
                other: OtherLoad, attempt: int) -> dict[str, Any]:
    """``kind`` "service": callers → service → sink; "direct": callers → sink (the bare hop)."""
    seconds = args.seconds if kind == "service" else min(args.seconds, args.baseline_seconds)
    name = f"{kind}-n{n}-b{batch}-r{rep}-a{attempt}"
    record: dict[str, Any] = {"kind": kind, "calls": n, "batch": batch, "rep": rep, "attempt": attempt,
                              "seconds": seconds, "warmup": args.warmup}
    record["other_cpu_before_pct"] = wait_quiet(other, args.max_other_cpu, args.quiet_wait)
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
    record["other_cpu_before_pct"] = wait_quiet(other, args.max_other_cpu, args.quiet_wait)
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


# ------------------------------------------------------------------------------------------ report


def _num(x: float, digits: int) -> str:
    return f"{x:,.{digits}f}".replace(",", " ")


def _spread(values: Sequence[float], digits: int = 2) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "–"
    med = statistics.median(values)
    if len(values) == 1:
        return _num(med, digits)
    return f"{_num(med, digits)} ({_num(min(values), digits)}–{_num(max(values), digits)})"


def _get(run: dict[str, Any], *path: str) -> Any:
    value: Any = run
    for key in path:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value


def counted(records: list[dict[str, Any]], **match: Any) -> list[dict[str, Any]]:
    """The runs a cell is made of: the clean completed ones, else every completed one."""
    done = [r for r in records if r.get("ok") and all(r.get(k) == v for k, v in match.items())]
    clean = [r for r in done if not r.get("noisy")]
    return clean or done


def _mark(runs: list[dict[str, Any]]) -> str:
    """The runs-column text: how many, and † when none of them was clean."""
    return f"{len(runs)}{' †' if runs and all(r.get('noisy') for r in runs) else ''}"


NOISE_NOTE: Final = ("† no clean run: other processes on the machine used more than --max-other-cpu of a core "
                     "during every attempt; the figures come from those disturbed runs.")


def latency_table(records: list[dict[str, Any]], ns: Sequence[int], batches: Sequence[int]) -> str:
    out = [
        "| calls | path | frames (in window, per run) | p50 ms | p95 ms | p99 ms | max ms "
        "| p99 ms, sink's epoll wake-up | lost | client CPU % | sink CPU % | runs |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for n in ns:
        rows: list[tuple[str, list[dict[str, Any]], str]] = [
            ("direct: caller → sink (bare loopback hop)", counted(records, kind="direct", calls=n), "kernel")]
        for b in batches:
            runs = counted(records, kind="service", calls=n, batch=b)
            rows.append((f"service, batch {b} ({20 * b} ms), all frames", runs, "kernel"))
            if b > 1:
                rows.append((f"service, batch {b}: frames that open a message", runs, "kernel_opens_message"))
                rows.append((f"service, batch {b}: frames that complete it", runs, "kernel_in_message"))
        for label, runs, key in rows:
            def vals(*path: str, runs: list[dict[str, Any]] = runs) -> list[float]:
                return [v for r in runs if (v := _get(r, *path)) is not None]
            out.append(
                f"| {n} | {label} | {_spread(vals('latency', key, 'n'), 0)} "
                f"| {_spread(vals('latency', key, 'p50'))} | {_spread(vals('latency', key, 'p95'))} "
                f"| {_spread(vals('latency', key, 'p99'))} | {_spread(vals('latency', key, 'max'))} "
                f"| {_spread(vals('latency', 'user', 'p99')) if key == 'kernel' else ''} "
                f"| {_num(sum(vals('latency', 'lost')), 0) if key == 'kernel' else ''} "
                f"| {_spread(vals('client', 'client_cpu_pct'), 0) if key == 'kernel' else ''} "
                f"| {_spread(vals('latency', 'sink_cpu_pct'), 0) if key == 'kernel' else ''} "
                f"| {_mark(runs)} |")
    return "\n".join(out)


def cpu_table(records: list[dict[str, Any]], ns: Sequence[int], batches: Sequence[int]) -> str:
    out = [
        "| calls | batch | server CPU % of core 0 | server CPU ms per call-second | µs per inbound frame "
        "| messages to Deepgram /s | other processes CPU % | runs |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for n in ns:
        for b in batches:
            runs = counted(records, kind="service", calls=n, batch=b)

            def vals(key: str, runs: list[dict[str, Any]] = runs) -> list[float]:
                return [r[key] for r in runs if r.get(key) is not None]
            out.append(f"| {n} | {b} ({20 * b} ms) | {_spread(vals('server_cpu_pct'), 1)} "
                       f"| {_spread(vals('server_cpu_ms_per_call_s'), 3)} | {_spread(vals('server_cpu_us_per_frame'), 1)} "
                       f"| {_spread(vals('deepgram_messages_per_s'), 0)} | {_spread(vals('other_cpu_pct'), 1)} "
                       f"| {_mark(runs)} |")
    if 1 in batches and len(batches) > 1:
        out += ["", "| calls | batch | µs per inbound frame vs batch 1 (ratio of medians) |", "|---|---|---|"]
        for n in ns:
            base = [r["server_cpu_us_per_frame"] for r in counted(records, kind="service", calls=n, batch=1)
                    if r.get("server_cpu_us_per_frame")]
            for b in batches:
                if b == 1:
                    continue
                this = [r["server_cpu_us_per_frame"] for r in counted(records, kind="service", calls=n, batch=b)
                        if r.get("server_cpu_us_per_frame")]
                if base and this:
                    mb, mt = statistics.median(base), statistics.median(this)
                    out.append(f"| {n} | {b} | {mt / mb:.2f}× ({mt - mb:+.1f} µs/frame) |")
    return "\n".join(out)


def transcript_table(records: list[dict[str, Any]], batches: Sequence[int]) -> str:
    out = [
        "| batch | finals (all runs) | speech end → final at subscriber, median ms | mean ms | max ms "
        "| trigger frame sent → final, median ms | mean ms | max ms | runs |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for b in batches:
        runs = [r for r in records if r["kind"] == "transcripts" and r["batch"] == b and r.get("ok")]
        per_run = [r["result"]["finals"] for r in runs]

        def stat(key: str, fn: Any) -> list[float]:
            return [fn([f[key] for f in finals]) for finals in per_run if finals]
        total = sum(len(f) for f in per_run)
        out.append(
            f"| {b} ({20 * b} ms) | {total} | {_spread(stat('end_to_final_ms', statistics.median), 1)} "
            f"| {_spread(stat('end_to_final_ms', statistics.fmean), 1)} | {_spread(stat('end_to_final_ms', max), 1)} "
            f"| {_spread(stat('trigger_to_final_ms', statistics.median), 1)} "
            f"| {_spread(stat('trigger_to_final_ms', statistics.fmean), 1)} "
            f"| {_spread(stat('trigger_to_final_ms', max), 1)} | {len(runs)} |")
    return "\n".join(out)


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
    p.add_argument("--gc-freeze", action="store_true",
                   help="experiment: the service calls gc.freeze() after start-up")
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
