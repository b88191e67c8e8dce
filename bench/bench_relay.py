"""Relay fanout benchmark: our hub against the seed's Node relay, one core each, in the same run.

Each run starts a fresh server pinned to CPU 0 (``taskset -c 0``) and the C load client
(``bench/fanout/fanout.c``) pinned to CPU 1. The client opens M WebSocket subscribers on one fresh
callId and W (8) keep-alive ``POST /event`` publishers. Phase A times single events until all M
subscribers hold them. Phase B is a closed loop with at most K events in flight that not all M
subscribers have received, so the load stays below the servers' per-subscriber queues: a warm-up,
then a measured window. Meanwhile this script samples the server's CPU time from ``/proc/PID/stat``
(the server and its children) and keeps only the part inside the client's measured window. It
then stops the server. Servers are interleaved inside each repetition, and the tables show
**median (min–max)** over repetitions, plus ratios ours / node per M. Raw JSON and the markdown go
to ``bench/out/``.

The machine is shared: a run during which processes outside this benchmark's own tree used more
than ``--max-other-cpu`` of a core is marked disturbed, retried, and left out of the tables while a
clean run of the same cell exists. A lock keeps two copies of this script off the cores at once.

All traffic goes to 127.0.0.1. Every phase is bounded in time (the client also has a hard
``alarm()``), and every subprocess has a timeout. The process helpers are in :mod:`bench.procs`,
the /proc CPU accounting in :mod:`bench.cpu_load`, the tables in :mod:`bench.relay_report`.

    .venv/bin/python -m bench.bench_relay [--servers node,ours] [--m 1,100,1000] [--seconds 6] [--repeats 3]
    .venv/bin/python -m bench.bench_relay --servers node --server-cmd 'mine=python -m mine --port {port}'
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import secrets
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Final

import attrs

from bench.cpu_load import (  # re-exported: bench_voice and bench/voice import them from here
    CLK_TCK, CPU_SAMPLE_INTERVAL_S, OTHER_LOAD_SCAN_S, CpuSampler, OtherLoad, ProcInfo, cpu_seconds,
    cpu_steal_jiffies, descendants, rss_mib, scan_processes, wait_quiet,
)
from bench.figures import num
from bench.procs import (  # re-exported as above
    HEALTH_POLL_S, HEALTH_TIMEOUT_S, LOCK_PATH, LOCK_WAIT_S, LOOPBACK, STOP_GRACE_S, exclusive_cores,
    free_port, pinned, raise_fd_limit, stop_server, wait_healthy,
)
from bench.relay_report import counted_runs, summarize

REPO: Final = Path(__file__).resolve().parent.parent
FANOUT_SRC: Final = REPO / "bench" / "fanout" / "fanout.c"
OUT_DIR: Final = REPO / "bench" / "out"
FANOUT_BIN: Final = OUT_DIR / "fanout"
NODE_RELAY_DIR: Final = REPO / "bench" / "peers" / "node-relay"
VENV_BIN: Final = REPO / ".venv" / "bin"

SERVER_CPU: Final = 0
CLIENT_CPU: Final = 1
QUIET_PROBE_S: Final = 1.0
CLIENT_SETUP_TIMEOUT_S: Final = 30.0
CLIENT_EVENT_TIMEOUT_S: Final = 10.0
CLIENT_TIMEOUT_MARGIN_S: Final = 20.0
NPM_TIMEOUT_S: Final = 300.0
BUILD_TIMEOUT_S: Final = 120.0
FD_MARGIN: Final = 256  # descriptors beyond the M + W sockets, for each process


@attrs.frozen
class ServerSpec:
    """How to start one server; ``{port}`` in ``argv`` is replaced, and PORT/HOST are set too."""

    name: str
    argv: tuple[str, ...]
    cwd: Path
    prepare: Callable[[], str | None] | None = None  # returns why the server cannot run, or None


@attrs.frozen
class ClientConfig:
    w: int
    k: int
    seconds: float
    warmup_s: float
    a_events: int


# ------------------------------------------------------------------------------------------------ set-up


def build_client() -> Path:
    """Compiles the C client when the binary is missing or older than its source."""
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    if FANOUT_BIN.exists() and FANOUT_BIN.stat().st_mtime >= FANOUT_SRC.stat().st_mtime:
        return FANOUT_BIN
    cmd = ["gcc", "-O2", "-o", str(FANOUT_BIN), str(FANOUT_SRC)]
    print("building:", shlex.join(cmd), file=sys.stderr)
    subprocess.run(cmd, check=True, timeout=BUILD_TIMEOUT_S)
    selftest = subprocess.run([str(FANOUT_BIN), "--selftest"], capture_output=True, text=True, timeout=10)
    if selftest.returncode != 0:
        raise SystemExit(f"fanout self-test failed: {selftest.stdout}{selftest.stderr}")
    return FANOUT_BIN


def prepare_node() -> str | None:
    """Installs the Node relay's locked dependencies (``npm ci``) once; needs only the npm registry."""
    if shutil.which("node") is None:
        return "node is not on PATH"
    if (NODE_RELAY_DIR / "node_modules" / "ws" / "package.json").exists() and (
        NODE_RELAY_DIR / "node_modules" / "express" / "package.json"
    ).exists():
        return None
    if shutil.which("npm") is None:
        return "npm is not on PATH and node_modules is missing"
    print("npm ci in", NODE_RELAY_DIR.relative_to(REPO), file=sys.stderr)
    done = subprocess.run(
        ["npm", "ci", "--no-audit", "--no-fund"], cwd=NODE_RELAY_DIR, capture_output=True, text=True,
        timeout=NPM_TIMEOUT_S,
    )
    if done.returncode != 0:
        return f"npm ci failed: {done.stderr.strip()[-400:]}"
    return None


def prepare_ours() -> str | None:
    """Our relay exists once ``centralita relay`` can import its server module."""
    exe = VENV_BIN / "centralita"
    if not exe.exists():
        return f"{exe.relative_to(REPO)} is missing (run make install)"
    probe = subprocess.run(
        [str(VENV_BIN / "python"), "-c", "import centralita.server"], capture_output=True, text=True, timeout=60,
        cwd=REPO,
    )
    if probe.returncode != 0:
        last = (probe.stderr.strip().splitlines() or ["import failed"])[-1]
        return f"centralita.server is not importable yet ({last})"
    return None


def builtin_servers() -> dict[str, ServerSpec]:
    return {
        "node": ServerSpec("node", ("node", "relay.js"), NODE_RELAY_DIR, prepare_node),
        "ours": ServerSpec(
            "ours", (str(VENV_BIN / "centralita"), "relay", "--port", "{port}", "--host", LOOPBACK), REPO,
            prepare_ours,
        ),
    }


# ------------------------------------------------------------------------------------------------ one run


def start_server(spec: ServerSpec, port: int, log_path: Path) -> subprocess.Popen[bytes]:
    argv = [a.replace("{port}", str(port)) for a in spec.argv]
    env = dict(os.environ, PORT=str(port), HOST=LOOPBACK)
    log = log_path.open("wb")
    try:
        return subprocess.Popen(
            pinned(SERVER_CPU, argv), cwd=spec.cwd, env=env, stdin=subprocess.DEVNULL, stdout=log,
            stderr=subprocess.STDOUT, start_new_session=True,
        )
    finally:
        log.close()



def client_bound_s(m: int, cfg: ClientConfig) -> float:
    return (CLIENT_SETUP_TIMEOUT_S + cfg.a_events * (CLIENT_EVENT_TIMEOUT_S + 0.02) + cfg.warmup_s + cfg.seconds
            + CLIENT_EVENT_TIMEOUT_S + CLIENT_TIMEOUT_MARGIN_S)


def run_client(port: int, m: int, cfg: ClientConfig, call_id: str) -> dict[str, Any]:
    argv = [
        str(FANOUT_BIN), "--host", LOOPBACK, "--port", str(port), "--m", str(m), "--w", str(cfg.w),
        "--k", str(cfg.k), "--seconds", str(cfg.seconds), "--warmup", str(cfg.warmup_s),
        "--a-events", str(cfg.a_events), "--call-id", call_id, "--setup-timeout", str(CLIENT_SETUP_TIMEOUT_S),
        "--event-timeout", str(CLIENT_EVENT_TIMEOUT_S),
    ]
    try:
        done = subprocess.run(pinned(CLIENT_CPU, argv), capture_output=True, text=True,
                              timeout=client_bound_s(m, cfg))
    except subprocess.TimeoutExpired:
        return {"ok": False, "error": "client timed out"}
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("{")]
    if not lines:
        return {"ok": False, "error": f"client printed no result (exit {done.returncode}): {done.stderr[-400:]}"}
    result: dict[str, Any] = json.loads(lines[-1])
    if done.stderr.strip():
        result["client_stderr"] = done.stderr[-2000:]
    return result


@attrs.frozen
class NoisePolicy:
    """When a run counts as disturbed by other processes on the machine, and what to do about it."""

    max_other_cpu_pct: float  # of one core, during the measured window
    quiet_wait_s: float  # how long to wait for the machine to calm down before a run
    retries: int  # extra attempts for a disturbed run


def wait_for_quiet(other: OtherLoad, noise: NoisePolicy) -> float:
    """Waits, bounded, until other processes use at most the threshold; returns the last reading (%)."""
    return wait_quiet(other, noise.max_other_cpu_pct, noise.quiet_wait_s, QUIET_PROBE_S)


def one_run(spec: ServerSpec, m: int, rep: int, cfg: ClientConfig, run_dir: Path, other: OtherLoad,
            noise: NoisePolicy, attempt: int) -> dict[str, Any]:
    """A fresh server, one client run against it, the server's CPU inside the measured window."""
    record: dict[str, Any] = {"server": spec.name, "m": m, "rep": rep, "attempt": attempt}
    record["other_cpu_before_pct"] = round(wait_for_quiet(other, noise), 1)
    port = free_port()
    log_path = run_dir / f"{spec.name}-m{m}-r{rep}-a{attempt}.log"
    record.update(port=port, log=str(log_path.relative_to(REPO)))
    proc = start_server(spec, port, log_path)
    record["pid"] = proc.pid
    try:
        problem = wait_healthy(proc, port)
        if problem:
            record.update(ok=False, error=problem)
            return record
        call_id = f"bench-{spec.name}-m{m}-r{rep}-{secrets.token_hex(4)}"
        steal0 = cpu_steal_jiffies()
        other_by_name = dict(other.by_name)
        with CpuSampler(proc.pid, other) as sampler:
            client = run_client(port, m, cfg, call_id)
            pids = sampler.pids
        steal1 = cpu_steal_jiffies()
        record["other_top_cpu_s"] = other.top_since(other_by_name)  # whole client run, not just the window
        record["client"] = client
        record["ok"] = bool(client.get("ok"))
        if not record["ok"]:
            record["error"] = client.get("error")
        record["server_rss_mib"] = round(rss_mib(pids), 1)
        record["server_alive_after"] = proc.poll() is None
        record["cpu_steal_pct"] = round(100 * (steal1[0] - steal0[0]) / max(1, steal1[1] - steal0[1]), 2)
        phase_b = client.get("phase_b") or {}
        t0, t1 = phase_b.get("window_start_mono_ns", 0), phase_b.get("window_end_mono_ns", 0)
        if t1 > t0 > 0:
            cpu_s = sampler.at(t1) - sampler.at(t0)
            window_s = (t1 - t0) / 1e9
            deliveries = phase_b.get("window_deliveries", 0)
            record["server_cpu_s"] = round(cpu_s, 3)
            record["server_cpu_pct"] = round(100 * cpu_s / window_s, 1)
            record["server_cpu_us_per_delivery"] = round(1e6 * cpu_s / deliveries, 2) if deliveries else None
            other_pct = 100 * (sampler.other_at(t1) - sampler.other_at(t0)) / window_s
            record["other_cpu_pct"] = round(other_pct, 1)
            record["noisy"] = other_pct > noise.max_other_cpu_pct
        return record
    finally:
        stop_server(proc)



# ------------------------------------------------------------------------------------------------ environment


def environment() -> dict[str, Any]:
    def out(cmd: list[str], cwd: Path = REPO) -> str:
        try:
            return subprocess.run(cmd, capture_output=True, text=True, timeout=20, cwd=cwd).stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            return ""

    def npm_version(pkg: str) -> str:
        try:
            return str(json.loads((NODE_RELAY_DIR / "node_modules" / pkg / "package.json").read_text())["version"])
        except (OSError, ValueError, KeyError):
            return ""

    return {
        "nproc": os.cpu_count(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "node": out(["node", "--version"]),
        "express": npm_version("express"),
        "ws": npm_version("ws"),
        "git_head": out(["git", "rev-parse", "--short", "HEAD"]),
        "server_cpu": SERVER_CPU,
        "client_cpu": CLIENT_CPU,
    }


# ------------------------------------------------------------------------------------------------ CLI


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.bench_relay", description=__doc__.split("\n\n")[0])
    p.add_argument("--servers", default="node,ours", help="comma-separated: node, ours, or --server-cmd names")
    p.add_argument("--m", default="1,100,1000", help="subscriber counts, comma-separated (default 1,100,1000)")
    p.add_argument("--seconds", type=float, default=6.0, help="measured window of phase B (default 6)")
    p.add_argument("--warmup", type=float, default=2.0, help="phase B warm-up before the window (default 2)")
    p.add_argument("--repeats", type=int, default=3, help="repetitions, servers interleaved (default 3)")
    p.add_argument("--w", type=int, default=8, help="publisher connections (default 8)")
    p.add_argument("--k", type=int, default=8, help="events in flight in phase B (default 8; keep below 50)")
    p.add_argument("--a-events", type=int, default=20, help="single events timed in phase A (default 20)")
    p.add_argument("--max-other-cpu", type=float, default=15.0, metavar="PCT",
                   help="a run during which processes outside this benchmark used more than PCT %% of a core "
                        "is disturbed: it is retried, and left out of the table while a clean run exists "
                        "(default 15)")
    p.add_argument("--quiet-wait", type=float, default=30.0, metavar="S",
                   help="before each run, wait up to S seconds for other processes to go below "
                        "--max-other-cpu (default 30)")
    p.add_argument("--retries", type=int, default=2, help="extra attempts for a disturbed run (default 2)")
    p.add_argument("--server-cmd", action="append", default=[], metavar="NAME=CMD",
                   help="benchmark any command; {port} is substituted, PORT and HOST are set; "
                        "NAME is added to --servers (repeatable; may override node or ours)")
    args = p.parse_args(argv)
    if not 1 <= args.repeats <= 20 or not 0 < args.seconds <= 120 or not 0 <= args.warmup <= 60:
        p.error("keep runs bounded: 1 ≤ repeats ≤ 20, 0 < seconds ≤ 120, 0 ≤ warmup ≤ 60")
    if not 0 <= args.retries <= 5 or not 0 <= args.quiet_wait <= 600:
        p.error("keep runs bounded: 0 ≤ retries ≤ 5, 0 ≤ quiet-wait ≤ 600")
    if not 1 <= args.k < 50:
        p.error("--k must be 1..49 so the closed loop stays below the servers' 50-event queues")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse_args(argv)
    with exclusive_cores():
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    ms = [int(x) for x in args.m.split(",") if x.strip()]
    specs = builtin_servers()
    names = [s.strip() for s in args.servers.split(",") if s.strip()]
    for item in args.server_cmd:
        name, sep, cmd = item.partition("=")
        if not sep or not name or not cmd:
            raise SystemExit(f"--server-cmd wants NAME=CMD, got {item!r}")
        specs[name] = ServerSpec(name, tuple(shlex.split(cmd)), REPO)
        if name not in names:
            names.append(name)
    unknown = [n for n in names if n not in specs]
    if unknown:
        raise SystemExit(f"unknown server(s) {unknown}; known: {sorted(specs)}")

    if (os.cpu_count() or 1) > CLIENT_CPU:
        os.sched_setaffinity(0, {CLIENT_CPU})  # keep this orchestrator off the server's core
    else:
        print("warning: fewer than 2 CPUs: server and client share a core", file=sys.stderr)
    raise_fd_limit(max(ms) + args.w + FD_MARGIN)
    build_client()

    unavailable: dict[str, str] = {}
    for name in names:
        prepare = specs[name].prepare
        reason = prepare() if prepare else None
        if reason:
            unavailable[name] = reason
            print(f"{name}: unavailable, skipped: {reason}", file=sys.stderr)
    active = [n for n in names if n not in unavailable]

    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    run_dir = OUT_DIR / f"relay-fanout-{stamp}"
    run_dir.mkdir(parents=True, exist_ok=True)
    cfg = ClientConfig(w=args.w, k=args.k, seconds=args.seconds, warmup_s=args.warmup, a_events=args.a_events)
    noise = NoisePolicy(args.max_other_cpu, args.quiet_wait, args.retries)
    other = OtherLoad()
    records: list[dict[str, Any]] = []
    for rep in range(1, args.repeats + 1):
        for m in ms:
            shift = (rep - 1) % max(1, len(active))
            for name in active[shift:] + active[:shift]:  # interleaved, first server rotating
                for attempt in range(1 + noise.retries):
                    record = one_run(specs[name], m, rep, cfg, run_dir, other, noise, attempt)
                    records.append(record)
                    print(_progress(record, rep, args.repeats), file=sys.stderr, flush=True)
                    if not (record.get("ok") and record.get("noisy")):
                        break

    table = summarize(records, names, ms, unavailable)
    header = (f"Relay fanout, {stamp}: server on CPU {SERVER_CPU}, C client on CPU {CLIENT_CPU}; W={args.w} POST "
              f"publishers, K={args.k} in flight, warm-up {args.warmup:g} s + {args.seconds:g} s measured; "
              f"{args.repeats} repetition(s), median (min–max).\n\n")
    raw = {"args": vars(args), "environment": environment(), "unavailable": unavailable, "runs": records}
    (run_dir / "results.json").write_text(json.dumps(raw, indent=1))
    (run_dir / "table.md").write_text(header + table + "\n")
    print(header + table)
    print(f"\nraw JSON: {(run_dir / 'results.json').relative_to(REPO)}")
    return 0 if all(r.get("ok") for r in records) else 1


def _progress(r: dict[str, Any], rep: int, repeats: int) -> str:
    head = f"[{rep}/{repeats}] {r['server']:>6} M={r['m']:<5}" + (f" (retry {r['attempt']})" if r["attempt"] else "")
    if not r.get("ok"):
        return f"{head} FAILED: {r.get('error')} (log: {r.get('log')})"
    c = r["client"]
    b = c["phase_b"]
    return (f"{head} {num(b['deliveries_per_s'])} deliveries/s, {b['events_per_s']:.1f} events/s, "
            f"p50 {b['latency_ms']['p50']:.2f} ms, p99 {b['latency_ms']['p99']:.2f} ms, "
            f"time-to-all p50 {c['phase_a']['time_to_all_ms']['p50']:.2f} ms, "
            f"server {r.get('server_cpu_us_per_delivery')} µs/delivery at {r.get('server_cpu_pct')} % CPU, "
            f"client {c['client_cpu_pct']:.0f} %, missing {b['missing']}, steal {r.get('cpu_steal_pct')} %, "
            f"other processes {r.get('other_cpu_pct')} % (before: {r.get('other_cpu_before_pct')} %)"
            + (f" DISTURBED by {r.get('other_top_cpu_s')}" if r.get("noisy") else ""))


if __name__ == "__main__":
    sys.exit(main())
