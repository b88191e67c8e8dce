"""What ``bench_listen`` makes of its runs: per-frame latency statistics, then the tables (added
frame latency, the service's CPU, transcript latency).

Each cell is median (min–max) over the clean repetitions of its configuration, or, flagged †,
over the disturbed ones when no clean run exists.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

import numpy as np

from bench.figures import num, spread

__all__ = ["HIST_EDGES_MS", "NOISE_NOTE", "PERCENTILES", "counted", "cpu_table", "latency_stats",
           "latency_table", "transcript_table"]

PERCENTILES: Final = (50, 90, 95, 99, 99.9)
HIST_EDGES_MS: Final = (0, 0.25, 0.5, 1, 2, 3, 5, 10, 15, 20, 25, 30, 40, 60, 100, 1e9)


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
                f"| {n} | {label} | {spread(vals('latency', key, 'n'), 0)} "
                f"| {spread(vals('latency', key, 'p50'), 2)} | {spread(vals('latency', key, 'p95'), 2)} "
                f"| {spread(vals('latency', key, 'p99'), 2)} | {spread(vals('latency', key, 'max'), 2)} "
                f"| {spread(vals('latency', 'user', 'p99'), 2) if key == 'kernel' else ''} "
                f"| {num(sum(vals('latency', 'lost')), 0) if key == 'kernel' else ''} "
                f"| {spread(vals('client', 'client_cpu_pct'), 0) if key == 'kernel' else ''} "
                f"| {spread(vals('latency', 'sink_cpu_pct'), 0) if key == 'kernel' else ''} "
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
            out.append(f"| {n} | {b} ({20 * b} ms) | {spread(vals('server_cpu_pct'), 1)} "
                       f"| {spread(vals('server_cpu_ms_per_call_s'), 3)} | {spread(vals('server_cpu_us_per_frame'), 1)} "
                       f"| {spread(vals('deepgram_messages_per_s'), 0)} | {spread(vals('other_cpu_pct'), 1)} "
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
            f"| {b} ({20 * b} ms) | {total} | {spread(stat('end_to_final_ms', statistics.median), 1)} "
            f"| {spread(stat('end_to_final_ms', statistics.fmean), 1)} | {spread(stat('end_to_final_ms', max), 1)} "
            f"| {spread(stat('trigger_to_final_ms', statistics.median), 1)} "
            f"| {spread(stat('trigger_to_final_ms', statistics.fmean), 1)} "
            f"| {spread(stat('trigger_to_final_ms', max), 1)} | {len(runs)} |")
    return "\n".join(out)

