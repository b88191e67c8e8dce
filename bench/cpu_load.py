"""CPU time from /proc: of a process tree, of one process's threads, of every other process, steal.

The machine is shared: other sessions may run test suites on the same two cores, so every
benchmark also measures the CPU that processes outside its own tree used (`OtherLoad`) and marks
a run they overlapped. The samplers read on ``CLOCK_MONOTONIC``, as the load clients mark their
measured windows, and interpolate between samples.
"""

from __future__ import annotations

import bisect
import os
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Final

import attrs
import numpy as np

__all__ = ["CLK_TCK", "CpuSampler", "OtherLoad", "ProcInfo", "SamplingThread", "ServiceCpu", "cpu_seconds",
           "cpu_steal_jiffies", "descendants", "rss_mib", "scan_processes", "wait_quiet"]

CLK_TCK: Final = os.sysconf("SC_CLK_TCK")
CPU_SAMPLE_INTERVAL_S: Final = 0.05
OTHER_LOAD_SCAN_S: Final = 0.5  # full /proc scans: server tree refresh and other processes' CPU


def _stat_fields(pid: int) -> list[str] | None:
    """Fields 3 (state) on of /proc/PID/stat, then the name; the name may hold spaces and parentheses."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    head, _, tail = raw.rpartition(")")
    return [*tail.split(), head.partition("(")[2]]


@attrs.frozen
class ProcInfo:
    name: str
    ppid: int
    cpu_s: float  # utime + stime: all threads, dead threads included
    start_ticks: int


def scan_processes() -> dict[int, ProcInfo]:
    """Every live process, from one pass over /proc."""
    procs: dict[int, ProcInfo] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit() and (f := _stat_fields(int(entry.name))):
            procs[int(entry.name)] = ProcInfo(f[-1], int(f[1]), (int(f[11]) + int(f[12])) / CLK_TCK, int(f[19]))
    return procs


def descendants(procs: dict[int, ProcInfo], root: int) -> set[int]:
    """The root and every live process below it."""
    children: dict[int, list[int]] = {}
    for pid, info in procs.items():
        children.setdefault(info.ppid, []).append(pid)
    tree, todo = set(), [root]
    while todo:
        pid = todo.pop()
        tree.add(pid)
        todo.extend(children.get(pid, ()))
    return tree


def cpu_seconds(pids: Sequence[int]) -> float:
    ticks = 0
    for pid in pids:
        if fields := _stat_fields(pid):
            ticks += int(fields[11]) + int(fields[12])
    return ticks / CLK_TCK


def rss_mib(pids: Sequence[int]) -> float:
    total_kib = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total_kib += int(line.split()[1])
        except OSError:
            pass
    return total_kib / 1024


def cpu_steal_jiffies() -> tuple[int, int]:
    """(steal, total) jiffies over all CPUs, from the first line of /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return values[7] if len(values) > 7 else 0, sum(values[:8])


def _boot_ticks_now() -> int:
    return int(time.clock_gettime(time.CLOCK_BOOTTIME) * CLK_TCK)


class OtherLoad:
    """Accumulates the CPU time of every user process outside this benchmark's own tree.

    Other sessions may run test suites on the same two cores; a run they overlap is not a clean
    measurement. Kernel threads (children of kthreadd) are left out: softirq and kworker time is
    mostly the benchmark's own loopback traffic. A process born and gone between two scans is missed.
    """

    def __init__(self) -> None:
        self._me = os.getpid()
        self._last: dict[int, float] = {}
        self._last_ticks = _boot_ticks_now()
        self.total_s = 0.0
        self.by_name: dict[str, float] = {}
        self.scan()

    def scan(self) -> dict[int, ProcInfo]:
        procs = scan_processes()
        ours = descendants(procs, self._me)
        now_ticks = _boot_ticks_now()
        seen: dict[int, float] = {}
        for pid, info in procs.items():
            if pid in ours or pid == 2 or info.ppid == 2:
                continue
            seen[pid] = info.cpu_s
            if pid in self._last:
                used = max(0.0, info.cpu_s - self._last[pid])
            elif info.start_ticks >= self._last_ticks:  # born since the last scan
                used = info.cpu_s
            else:
                continue
            self.total_s += used
            self.by_name[info.name] = self.by_name.get(info.name, 0.0) + used
        self._last, self._last_ticks = seen, now_ticks
        return procs

    def top_since(self, before: dict[str, float], count: int = 3) -> list[tuple[str, float]]:
        """The process names that used the most CPU seconds since the `before` copy of by_name."""
        used = {n: s - before.get(n, 0.0) for n, s in self.by_name.items()}
        return [(n, round(s, 2)) for n, s in sorted(used.items(), key=lambda x: -x[1])[:count] if s > 0]

    def measure_pct(self, seconds: float) -> float:
        """Other processes' CPU over the next `seconds`, in % of one core."""
        before = self.total_s
        time.sleep(seconds)
        self.scan()
        return 100 * (self.total_s - before) / seconds


class SamplingThread:
    """Calls ``sample(full=...)`` every CPU_SAMPLE_INTERVAL_S on a daemon thread, ``full`` (a whole
    /proc scan too) every OTHER_LOAD_SCAN_S; and once, full, on `start` and on `stop`."""

    def __init__(self, sample: Callable[..., None], name: str) -> None:
        self._sample = sample
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._sample(full=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._sample(full=True)

    def _run(self) -> None:
        last_full = time.monotonic()
        while not self._stop.wait(CPU_SAMPLE_INTERVAL_S):
            full = time.monotonic() - last_full >= OTHER_LOAD_SCAN_S
            if full:
                last_full = time.monotonic()
            self._sample(full=full)


class CpuSampler:
    """Samples the server tree's CPU seconds, and other processes' CPU, on CLOCK_MONOTONIC.

    The client reports its measured window in CLOCK_MONOTONIC ns; `at` reads the server's CPU time
    off these samples at any instant, interpolating between the two nearest.
    """

    def __init__(self, root: int, other: OtherLoad) -> None:
        self._root = root
        self._other = other
        self._pids = sorted(descendants(other.scan(), root))
        self.samples: list[tuple[int, float]] = []
        self.other_samples: list[tuple[int, float]] = []
        self._thread = SamplingThread(self._sample, "cpu-sampler")

    def __enter__(self) -> CpuSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._thread.stop()

    def _sample(self, *, full: bool) -> None:
        if full:
            self._pids = sorted(descendants(self._other.scan(), self._root))
            self.other_samples.append((time.monotonic_ns(), self._other.total_s))
        self.samples.append((time.monotonic_ns(), cpu_seconds(self._pids)))

    @property
    def pids(self) -> list[int]:
        return list(self._pids)

    def at(self, t_ns: int) -> float:
        """The server's CPU seconds at t_ns."""
        return _interpolate(self.samples, t_ns)

    def other_at(self, t_ns: int) -> float:
        """Other processes' accumulated CPU seconds at t_ns."""
        return _interpolate(self.other_samples, t_ns)


def _interpolate(samples: list[tuple[int, float]], t_ns: int) -> float:
    times = [t for t, _ in samples]
    i = bisect.bisect_left(times, t_ns)
    if i <= 0:
        return samples[0][1]
    if i >= len(samples):
        return samples[-1][1]
    (t0, c0), (t1, c1) = samples[i - 1], samples[i]
    return c0 + (c1 - c0) * (t_ns - t0) / max(1, t1 - t0)



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
        self._thread = SamplingThread(self._sample, "service-cpu")

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

    def __enter__(self) -> ServiceCpu:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._thread.stop()

    def used_s(self, t0: int, t1: int, column: int = 1) -> float:
        times = [s[0] for s in self.samples]
        values = [s[column] for s in self.samples]
        return float(np.interp(t1, times, values) - np.interp(t0, times, values))

    def other_used_s(self, t0: int, t1: int) -> float:
        times = [s[0] for s in self.other_samples]
        values = [s[1] for s in self.other_samples]
        return float(np.interp(t1, times, values) - np.interp(t0, times, values))



def wait_quiet(other: OtherLoad, max_pct: float, wait_s: float, probe_s: float) -> float:
    """Waits, bounded by ``wait_s``, until other processes use at most ``max_pct`` % of a core
    (measured over ``probe_s``); returns the last reading (%)."""
    deadline = time.monotonic() + wait_s
    while True:
        pct = other.measure_pct(probe_s)
        if pct <= max_pct or time.monotonic() >= deadline:
            return pct
