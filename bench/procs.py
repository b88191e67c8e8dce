"""The processes of a benchmark on the machine's two cores: start, readiness, stop, and sharing.

One benchmark at a time holds the cores (:func:`exclusive_cores`, the lock ``bench_relay``
started); children are pinned to a core (``taskset``) and run in their own session, so a stop
reaches a whole process group; servers listen on free loopback ports and say they are ready on
``GET /health``. Every wait is bounded. Used by ``bench_relay``, ``bench_listen`` and
``bench_voice``.
"""

from __future__ import annotations

import contextlib
import fcntl
import http.client
import json
import os
import resource
import select
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Final

__all__ = ["LOCK_PATH", "LOOPBACK", "exclusive_cores", "finish", "first_line", "free_port", "pinned",
           "raise_fd_limit", "spawn", "stop_server", "wait_healthy"]

REPO: Final = Path(__file__).resolve().parent.parent
OUT_DIR: Final = REPO / "bench" / "out"
LOOPBACK: Final = "127.0.0.1"
#: The core of the server under test, and the one of the load and the orchestrator.
SERVER_CPU: Final = 0
LOAD_CPU: Final = 1
HEALTH_TIMEOUT_S: Final = 20.0
HEALTH_POLL_S: Final = 0.1
STOP_GRACE_S: Final = 3.0
STARTUP_TIMEOUT_S: Final = 20.0
STOP_TIMEOUT_S: Final = 10.0
LOCK_PATH: Final = OUT_DIR / ".bench_relay.lock"
LOCK_WAIT_S: Final = 900.0


def raise_fd_limit(needed: int) -> int:
    """Raises the soft RLIMIT_NOFILE (inherited by the server and the client) up to the hard limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        target = hard if hard == resource.RLIM_INFINITY else min(hard, max(needed, soft))
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    if soft < needed:
        print(f"warning: RLIMIT_NOFILE is {soft}, below the {needed} the largest M needs", file=sys.stderr)
    return soft


@contextlib.contextmanager
def exclusive_cores() -> Iterator[None]:
    """Holds a lock so that two copies of this benchmark never share the two pinned cores."""
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    with LOCK_PATH.open("a+") as lock:
        deadline = time.monotonic() + LOCK_WAIT_S
        told = False
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise SystemExit(f"another bench_relay still holds {LOCK_PATH} after {LOCK_WAIT_S:.0f} s")
                if not told:
                    lock.seek(0)
                    print(f"waiting for another bench_relay ({lock.read().strip() or 'unknown pid'}) to finish",
                          file=sys.stderr)
                    told = True
                time.sleep(1.0)
        lock.seek(0)
        lock.truncate()
        lock.write(f"pid {os.getpid()}\n")
        lock.flush()
        yield


def free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


def pinned(cpu: int, argv: Sequence[str]) -> list[str]:
    if shutil.which("taskset") and (os.cpu_count() or 1) > max(SERVER_CPU, LOAD_CPU):
        return ["taskset", "-c", str(cpu), *argv]
    return list(argv)


def wait_healthy(proc: subprocess.Popen[bytes], port: int) -> str | None:
    """Polls GET /health until it answers "ok"; returns why it never did, or None."""
    deadline = time.monotonic() + HEALTH_TIMEOUT_S
    last = "no answer"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return f"server exited with code {proc.returncode} before /health answered"
        conn = http.client.HTTPConnection(LOOPBACK, port, timeout=1.0)
        try:
            conn.request("GET", "/health")
            resp = conn.getresponse()
            body = resp.read().decode(errors="replace").strip()
            if resp.status == 200 and body.strip('"') == "ok":
                return None
            last = f"HTTP {resp.status} {body[:80]!r}"
        except OSError as exc:
            last = str(exc)
        finally:
            conn.close()
        time.sleep(HEALTH_POLL_S)
    return f"/health did not answer ok within {HEALTH_TIMEOUT_S:.0f} s ({last})"


def stop_server(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the server's own process group (its session was created for it), then SIGKILL."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=STOP_GRACE_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=STOP_GRACE_S)
    except ProcessLookupError:
        pass



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

