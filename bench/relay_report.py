"""The tables of ``bench_relay``: per subscriber count M and server, median (min–max) over the
clean repetitions, then the ratios of each server to the Node relay."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any

from bench.figures import num, spread

__all__ = ["counted_runs", "summarize"]


def _metric(run: dict[str, Any], name: str) -> float | None:
    c = run.get("client", {})
    b = c.get("phase_b", {})
    values: dict[str, Any] = {
        "deliveries_per_s": b.get("deliveries_per_s"),
        "events_per_s": b.get("events_per_s"),
        "p50": b.get("latency_ms", {}).get("p50"),
        "p99": b.get("latency_ms", {}).get("p99"),
        "max": b.get("latency_ms", {}).get("max"),
        "tta_p50": c.get("phase_a", {}).get("time_to_all_ms", {}).get("p50"),
        "cpu_us": run.get("server_cpu_us_per_delivery"),
        "cpu_pct": run.get("server_cpu_pct"),
        "client_cpu": c.get("client_cpu_pct"),
        "other_cpu": run.get("other_cpu_pct"),
        "missing": b.get("missing"),
        "mismatch": c.get("checks", {}).get("order_mismatch_subs"),
        "seq_bad": c.get("checks", {}).get("seq_violations"),
    }
    v = values[name]
    return None if v is None or (isinstance(v, (int, float)) and v < 0) else float(v)


def _values(runs: list[dict[str, Any]], name: str) -> list[float]:
    return [v for r in runs if r.get("ok") and (v := _metric(r, name)) is not None]


def counted_runs(records: list[dict[str, Any]], name: str, m: int) -> tuple[list[dict[str, Any]], bool]:
    """The runs a table cell is made of: the clean ones, else (flagged) every completed one."""
    done = [r for r in records if r["server"] == name and r["m"] == m and r.get("ok")]
    clean = [r for r in done if not r.get("noisy")]
    return (clean, False) if clean else (done, bool(done))


def summarize(records: list[dict[str, Any]], servers: Sequence[str], ms: Sequence[int],
              unavailable: dict[str, str]) -> str:
    out = [
        "| M | server | deliveries/s | events/s to all M | latency p50 ms | p99 ms | max ms "
        "| time-to-all p50 ms (single event) | server CPU µs/delivery | server CPU % | client CPU % "
        "| other procs CPU % | missing | order mismatch | seq violations | runs clean/total |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    flagged = False
    for m in ms:
        for name in servers:
            if name in unavailable:
                out.append(f"| {m} | {name} | n/a: {unavailable[name]} |" + " |" * 13)
                continue
            runs, noisy = counted_runs(records, name, m)
            flagged |= noisy
            total = [r for r in records if r["server"] == name and r["m"] == m]
            clean = [r for r in total if r.get("ok") and not r.get("noisy")]
            out.append(
                f"| {m} | {name}{' †' if noisy else ''} | {spread(_values(runs, 'deliveries_per_s'))} "
                f"| {spread(_values(runs, 'events_per_s'), 1)} | {spread(_values(runs, 'p50'), 2)} "
                f"| {spread(_values(runs, 'p99'), 2)} | {spread(_values(runs, 'max'), 1)} "
                f"| {spread(_values(runs, 'tta_p50'), 2)} | {spread(_values(runs, 'cpu_us'), 2)} "
                f"| {spread(_values(runs, 'cpu_pct'))} | {spread(_values(runs, 'client_cpu'))} "
                f"| {spread(_values(runs, 'other_cpu'))} "
                f"| {num(sum(_values(runs, 'missing')))} | {num(sum(_values(runs, 'mismatch')))} "
                f"| {num(sum(_values(runs, 'seq_bad')))} | {len(clean)}/{len(total)} |"
            )
    if flagged:
        out += ["", "† no clean run: these figures come from runs that other processes on the machine disturbed."]
    others = [s for s in servers if s != "node" and s not in unavailable]
    if "node" in servers and "node" not in unavailable and others:
        out += [
            "",
            "Ratios of medians, server / node (deliveries/s: higher is better; latency and CPU: lower is better):",
            "",
            "| M | server | deliveries/s | latency p50 | latency p99 | time-to-all p50 | server CPU µs/delivery |",
            "|---|---|---|---|---|---|---|",
        ]
        for m in ms:
            base, _ = counted_runs(records, "node", m)
            for name in others:
                runs, _ = counted_runs(records, name, m)
                cells = []
                for metric in ("deliveries_per_s", "p50", "p99", "tta_p50", "cpu_us"):
                    a, b = _values(runs, metric), _values(base, metric)
                    cells.append(f"{statistics.median(a) / statistics.median(b):.2f}×"
                                 if a and b and statistics.median(b) else "n/a")
                out.append(f"| {m} | {name} | " + " | ".join(cells) + " |")
    elif unavailable:
        out += ["", "No ratios: " + "; ".join(f"{k}: {v}" for k, v in unavailable.items())]
    return "\n".join(out)

