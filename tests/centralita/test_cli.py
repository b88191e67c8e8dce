"""The installed entry point, as a newcomer and an operator use it: --help, and SIGTERM."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import trio
from trio_websocket import ConnectionClosed

from tests.wsclient import open_ws as open_websocket_url

ENTRY = Path(sys.executable).with_name("centralita")


def test_help_lists_the_subcommands() -> None:
    out = subprocess.run([ENTRY, "--help"], capture_output=True, text=True, check=True).stdout
    for command in ("serve", "relay"):
        assert command in out
    sub = subprocess.run([ENTRY, "relay", "--help"], capture_output=True, text=True, check=True)
    assert "--port" in sub.stdout


def test_bad_configuration_is_a_clear_error() -> None:
    proc = subprocess.run([ENTRY, "relay"], capture_output=True, text=True,
                          env={**os.environ, "PORT": "eighty"})
    assert proc.returncode == 2 and "PORT" in proc.stderr


async def test_sigterm_closes_subscribers_with_1001_and_exits() -> None:
    proc = await trio.lowlevel.open_process(
        [str(ENTRY), "relay", "--host", "127.0.0.1", "--port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        assert proc.stdout is not None
        buffered = b""
        with trio.fail_after(15):
            while b"\n" not in buffered:
                buffered += await proc.stdout.receive_some()
        match = re.search(rb"listening on (http://\S+)", buffered)
        assert match, buffered
        url = match.group(1).decode().replace("http://", "ws://")
        async with open_websocket_url(f"{url}/ws?callId=x") as ws:
            await trio.sleep(0.2)
            proc.send_signal(signal.SIGTERM)
            with pytest.raises(ConnectionClosed) as info:
                with trio.fail_after(5):
                    await ws.get_message()
            assert info.value.reason.code == 1001
        with trio.fail_after(5):
            assert await proc.wait() == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


def test_settle_heap_freezes_what_exists_and_raises_the_thresholds() -> None:
    import gc

    from centralita.server import GC_THRESHOLDS, settle_heap

    before = gc.get_threshold()
    survivor = [object()]  # a container the collector tracks, alive before and after
    try:
        settle_heap()
        assert gc.get_threshold() == GC_THRESHOLDS
        assert gc.get_freeze_count() > 0
        assert not any(o is survivor for o in gc.get_objects())  # frozen: out of every pass
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
