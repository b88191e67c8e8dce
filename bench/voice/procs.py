"""Child processes of the voice bench and a /proc sampler for their CPU and each core's load.

On-CPU time comes from ``/proc/PID/task/*/schedstat`` (nanoseconds; ``/proc/PID/stat`` ticks are
10 ms, too coarse for one call), each core's busy share from the ``cpuN`` lines of ``/proc/stat``.
Samples are on ``CLOCK_MONOTONIC`` so they line up with the callers' window marks.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final

import numpy as np

from bench.bench_relay import pinned

REPO: Final = Path(__file__).resolve().parent.parent.parent
SAMPLE_S: Final = 0.05
STARTUP_TIMEOUT_S: Final = 20.0
STOP_TIMEOUT_S: Final = 10.0


def spawn(argv: Sequence[str], cpu: int, *, env: Mapping[str, str] | None = None,
          log: Path | None = None) -> subprocess.Popen[bytes]:
    """A child pinned to ``cpu``, in its own session (stopped as a group); stdout piped."""
    stderr = log.open("wb") if log else subprocess.DEVNULL
    try:
        return subprocess.Popen(pinned(cpu, argv), cwd=REPO, env=dict(env) if env else None,
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=stderr,
                                start_new_session=True)
    finally:
        if log:
            stderr.close()  # type: ignore[union-attr]


def first_json(proc: subprocess.Popen[bytes], timeout_s: float = STARTUP_TIMEOUT_S) -> dict[str, Any]:
    """The child's first stdout line, as JSON (its announcement), bounded."""
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout_s)
    if not ready:
        raise RuntimeError(f"{proc.args!r} printed nothing in {timeout_s:.0f} s")
    line = proc.stdout.readline().decode().strip()
    if not line:
        raise RuntimeError(f"{proc.args!r} exited ({proc.wait(5)}) before announcing itself")
    return json.loads(line)


def last_json(proc: subprocess.Popen[bytes], *, terminate: bool, timeout_s: float) -> dict[str, Any]:
    """Wait for the child (SIGTERM to its group first if ``terminate``); its last JSON line."""
    if terminate and proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    try:
        out, _ = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate(timeout=STOP_TIMEOUT_S)
        return {"ok": False, "error": f"killed after {timeout_s:.0f} s"}
    lines = [ln for ln in out.decode().splitlines() if ln.startswith("{")]
    return json.loads(lines[-1]) if lines else {"ok": False, "error": f"no result (exit {proc.returncode})"}


def _schedstat_s(pid: int) -> float | None:
    total = 0
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return None
    for tid in tasks:
        try:
            total += int(Path(f"/proc/{pid}/task/{tid}/schedstat").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            pass
    return total / 1e9


def _core_jiffies() -> dict[str, tuple[int, int]]:
    """cpuN → (busy, total) jiffies; busy excludes idle and iowait."""
    out = {}
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith("cpu") and line[3:4].isdigit():
            name, *fields = line.split()
            values = [int(v) for v in fields[:8]]
            out[name] = (sum(values) - values[3] - values[4], sum(values))
    return out


class Sampler:
    """Samples named processes' on-CPU seconds and every core's busy jiffies, in a thread."""

    def __init__(self, pids: Mapping[str, int]) -> None:
        self._pids = dict(pids)
        self.times: list[int] = []
        self.cpu: dict[str, list[float]] = {name: [] for name in pids}
        self.cores: list[dict[str, tuple[int, int]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="voice-sampler", daemon=True)

    def add(self, name: str, pid: int) -> None:
        """Sample one more process from now on (earlier samples count as 0 s)."""
        self._pids[name] = pid
        self.cpu[name] = [0.0] * len(self.times)

    def _sample(self) -> None:
        self.times.append(time.monotonic_ns())
        for name, pid in list(self._pids.items()):
            value = _schedstat_s(pid)
            series = self.cpu[name]
            series.append(value if value is not None else (series[-1] if series else 0.0))
        self.cores.append(_core_jiffies())

    def _run(self) -> None:
        while not self._stop.wait(SAMPLE_S):
            self._sample()

    def __enter__(self) -> Sampler:
        self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._sample()

    def used_s(self, name: str, t0: int, t1: int) -> float:
        """CPU seconds ``name`` used between two monotonic ns instants (interpolated)."""
        values = self.cpu[name]
        n = min(len(values), len(self.times))
        return float(np.interp(t1, self.times[:n], values[:n]) - np.interp(t0, self.times[:n], values[:n]))

    def core_busy_pct(self, core: str, t0: int, t1: int) -> float | None:
        """Busy % of ``core`` (e.g. "cpu1") over the samples inside [t0, t1]."""
        inside = [i for i, t in enumerate(self.times) if t0 <= t <= t1]
        if len(inside) < 2:
            return None
        (b0, a0), (b1, a1) = self.cores[inside[0]][core], self.cores[inside[-1]][core]
        return 100 * (b1 - b0) / max(1, a1 - a0)
