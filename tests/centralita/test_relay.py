"""The relay's contract, over real sockets against the real hypercorn server.

Seed contract first (health, POST /event limits and errors, backlog then live, rooms), then what we
add (seq/ts, since + gap, firehose, slow subscribers, auth, retention, metrics).
"""

from __future__ import annotations

import json
import re
import socket

import pytest
import trio
from trio_websocket import ConnectionClosed

from tests.wsclient import open_ws as open_websocket_url

from tests.centralita.conftest import RunningRelay, StartRelay


def partial(call_id: str, n: int, **extra: object) -> dict[str, object]:
    return {"type": "partial", "callId": call_id, "speaker": "customer", "turnId": f"t-{n}",
            "text": f"hola {n}", "tsStart": n * 1000, "tsEnd": n * 1000 + 500, **extra}


async def receive_json(ws, timeout: float = 5.0) -> dict[str, object]:  # type: ignore[no-untyped-def]
    with trio.fail_after(timeout):
        return json.loads(await ws.get_message())  # type: ignore[no-any-return]


async def settle(relay: RunningRelay, subscribers: int) -> None:
    """Wait until the hub has registered ``subscribers`` subscribers (the handshake is async)."""
    with trio.fail_after(5):
        while relay.hub.statistics().subscribers != subscribers:
            await trio.sleep(0.005)


# -- seed contract --------------------------------------------------------------------------------

async def test_health_answers_ok(relay: RunningRelay) -> None:
    r = await relay.http.get(f"{relay.base_url}/health")
    assert (r.status_code, r.text) == (200, "ok")


async def test_post_event_is_delivered_with_seq_and_ts(relay: RunningRelay) -> None:
    async with open_websocket_url(f"{relay.ws_url}/ws?callId=abc123") as ws:
        await settle(relay, 1)
        r = await relay.post(partial("abc123", 1, extraField="kept"))
        assert r.status_code == 200 and r.json()["seq"] == 1
        got = await receive_json(ws)
    assert got["type"] == "partial" and got["callId"] == "abc123" and got["text"] == "hola 1"
    assert got["seq"] == 1 and isinstance(got["ts"], (int, float)) and got["extraField"] == "kept"


@pytest.mark.parametrize(
    ("body", "needle"),
    [(b"{not json", "JSON"), (b"[1, 2]", "object"), (b'{"type": "partial"}', "callId"),
     (b'{"callId": "", "type": "x"}', "callId"),
     (b'{"callId": "c", "type": "partial", "text": 5}', "text"),
     (b'{"callId": "c", "type": "coach", "text": "t", "severity": "urgent"}', "severity")],
)
async def test_bad_events_get_400_with_a_reason(relay: RunningRelay, body: bytes,
                                                needle: str) -> None:
    r = await relay.http.post(f"{relay.base_url}/event", content=body,
                              headers={"content-type": "application/json"})
    assert r.status_code == 400
    assert needle in r.json()["error"]
    assert relay.hub.statistics().events_total == 0


async def raw_post(relay: RunningRelay, head: bytes, body_chunks: list[bytes]) -> bytes:
    """POST over a raw socket, reading the answer while still sending (the server may answer
    early and stop reading): returns the status line."""
    host, port = relay.base_url.removeprefix("http://").split(":")
    stream = await trio.open_tcp_stream(host, int(port))
    answer = b""
    async with stream, trio.open_nursery() as nursery:

        async def send_all() -> None:
            try:
                await stream.send_all(head)
                for chunk in body_chunks:
                    await stream.send_all(chunk)
            except trio.BrokenResourceError:
                pass  # the server answered and closed: what we are testing

        nursery.start_soon(send_all)
        with trio.fail_after(10):
            while b"\r\n" not in answer:
                data = await stream.receive_some()
                if not data:
                    break
                answer += data
        nursery.cancel_scope.cancel()
    return answer.split(b"\r\n", 1)[0]


async def test_declared_body_over_one_megabyte_is_413_before_reading(relay: RunningRelay) -> None:
    head = (b"POST /event HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 1048577\r\n\r\n")
    assert await raw_post(relay, head, []) == b"HTTP/1.1 413 "
    assert relay.hub.statistics().events_total == 0


async def test_chunked_body_over_one_megabyte_is_413(relay: RunningRelay) -> None:
    head = b"POST /event HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    piece = b"x" * 65_536
    chunks = [b"%x\r\n%s\r\n" % (len(piece), piece)] * 20 + [b"0\r\n\r\n"]
    assert await raw_post(relay, head, chunks) == b"HTTP/1.1 413 "
    assert relay.hub.statistics().events_total == 0


async def test_body_of_exactly_one_megabyte_is_accepted(relay: RunningRelay) -> None:
    exactly = b'{"callId":"c","pad":"' + b"x" * (1_048_576 - 23) + b'"}'
    assert len(exactly) == 1_048_576
    r = await relay.http.post(f"{relay.base_url}/event", content=exactly)
    assert r.status_code == 200


async def test_subscriber_gets_last_50_backlog_oldest_first_then_live(relay: RunningRelay) -> None:
    for n in range(1, 61):
        assert (await relay.post(partial("c1", n))).status_code == 200
    async with open_websocket_url(f"{relay.ws_url}/ws?callId=c1") as ws:
        backlog = [await receive_json(ws) for _ in range(50)]
        assert [e["seq"] for e in backlog] == list(range(11, 61))
        await relay.post(partial("c1", 61))
        assert (await receive_json(ws))["seq"] == 61


async def test_many_subscribers_each_get_every_event_in_order(relay: RunningRelay) -> None:
    async with trio.open_nursery() as nursery:
        results: dict[int, list[int]] = {}

        async def subscriber(i: int) -> None:
            async with open_websocket_url(f"{relay.ws_url}/ws?callId=room") as ws:
                results[i] = [int((await receive_json(ws))["seq"]) for _ in range(30)]

        for i in range(20):
            nursery.start_soon(subscriber, i)
        await settle(relay, 20)
        for n in range(30):
            await relay.post(partial("room", n))
    assert all(seqs == list(range(1, 31)) for seqs in results.values()) and len(results) == 20


async def test_events_of_other_calls_do_not_leak(relay: RunningRelay) -> None:
    async with open_websocket_url(f"{relay.ws_url}/ws?callId=a") as ws:
        await settle(relay, 1)
        await relay.post(partial("b", 1))
        await relay.post(partial("a", 2))
        assert (await receive_json(ws))["callId"] == "a"


async def test_room_is_removed_with_its_last_subscriber(relay: RunningRelay) -> None:
    async with open_websocket_url(f"{relay.ws_url}/ws?callId=r"):
        async with open_websocket_url(f"{relay.ws_url}/ws?callId=r"):
            await settle(relay, 2)
            assert relay.hub.statistics().rooms == 1
        await settle(relay, 1)
        assert relay.hub.statistics().rooms == 1
    await settle(relay, 0)
    assert relay.hub.statistics().rooms == 0


async def test_concurrent_publishers_keep_per_call_order(relay: RunningRelay) -> None:
    async with open_websocket_url(f"{relay.ws_url}/ws?callId=busy") as ws:
        await settle(relay, 1)
        async with trio.open_nursery() as nursery:
            for p in range(4):
                async def publish(p: int = p) -> None:
                    for n in range(25):
                        await relay.post(partial("busy", n, publisher=p))
                nursery.start_soon(publish)
        got = [await receive_json(ws) for _ in range(100)]
    assert [e["seq"] for e in got] == list(range(1, 101))
    for p in range(4):  # each publisher's own events arrive in the order it sent them
        mine = [e["turnId"] for e in got if e["publisher"] == p]
        assert mine == [f"t-{n}" for n in range(25)]


# -- what we add ----------------------------------------------------------------------------------

async def test_resume_since_replays_only_newer_events(relay: RunningRelay) -> None:
    for n in range(1, 11):
        await relay.post(partial("c", n))
    async with open_websocket_url(f"{relay.ws_url}/ws?callId=c&since=7") as ws:
        assert [(await receive_json(ws))["seq"] for _ in range(3)] == [8, 9, 10]
        await relay.post(partial("c", 11))
        assert (await receive_json(ws))["seq"] == 11


async def test_resume_past_the_backlog_starts_with_a_gap(relay: RunningRelay) -> None:
    for n in range(1, 81):
        await relay.post(partial("c", n))
    async with open_websocket_url(f"{relay.ws_url}/ws?callId=c&since=5") as ws:
        gap = await receive_json(ws)
        assert gap["type"] == "gap" and gap["callId"] == "c"
        assert (gap["fromSeq"], gap["toSeq"]) == (6, 30)
        assert (await receive_json(ws))["seq"] == 31


async def test_resume_up_to_date_gets_nothing_old(relay: RunningRelay) -> None:
    for n in range(1, 4):
        await relay.post(partial("c", n))
    async with open_websocket_url(f"{relay.ws_url}/ws?callId=c&since=3") as ws:
        await settle(relay, 1)
        await relay.post(partial("c", 4))
        assert (await receive_json(ws))["seq"] == 4


async def test_firehose_gets_live_events_of_every_call(relay: RunningRelay) -> None:
    await relay.post(partial("before", 0))
    async with open_websocket_url(f"{relay.ws_url}/ws?callId=*") as ws:
        await settle(relay, 1)
        await relay.post(partial("x", 1))
        await relay.post(partial("y", 1))
        assert [(await receive_json(ws))["callId"] for _ in range(2)] == ["x", "y"]


async def raw_upgrade(relay: RunningRelay, target: str,
                      extra: bytes = b"") -> tuple[int, bytes]:
    """A WebSocket upgrade over a raw socket; returns (status, body) of the server's answer.

    (trio-websocket leaks its socket when a handshake is rejected, so tests of refusals do
    the handshake by hand.)"""
    host, port = relay.base_url.removeprefix("http://").split(":")
    async with await trio.open_tcp_stream(host, int(port)) as stream:
        await stream.send_all(
            b"GET " + target.encode() + b" HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            b"Sec-WebSocket-Version: 13\r\n" + extra + b"\r\n")
        answer = b""
        with trio.fail_after(5):
            while b"\r\n\r\n" not in answer:
                answer += await stream.receive_some()
            head, _, body = answer.partition(b"\r\n\r\n")
            length = int(re.search(rb"content-length: (\d+)", head, re.I).group(1))  # type: ignore[union-attr]
            while len(body) < length:
                body += await stream.receive_some()
    return int(head.split(b" ")[1]), body


@pytest.mark.parametrize("query", ["", "?callId=", "?callId=c&since=-1", "?callId=c&since=x"])
async def test_bad_subscriptions_are_refused_at_the_handshake(relay: RunningRelay,
                                                              query: str) -> None:
    status, body = await raw_upgrade(relay, f"/ws{query}")
    assert status == 400
    assert json.loads(body)["error"]
    assert relay.hub.statistics().subscribers == 0


async def test_slow_subscriber_is_cut_off_and_never_slows_the_fast_one(
        start_relay: StartRelay) -> None:
    relay: RunningRelay = await start_relay(queue_frames=64)
    n_events = 400
    blob = "x" * 65_536  # fills the slow client's TCP buffers after a few dozen events
    async with open_websocket_url(f"{relay.ws_url}/ws?callId=s") as slow:
        async with open_websocket_url(f"{relay.ws_url}/ws?callId=s", message_queue_size=1000) as fast:
            await settle(relay, 2)
            got: list[int] = []

            async def read_fast() -> None:
                while len(got) < n_events:
                    got.append(int((await receive_json(fast))["seq"]))

            async with trio.open_nursery() as nursery:
                nursery.start_soon(read_fast)
                for n in range(n_events):
                    await relay.post(partial("s", n, blob=blob))
            assert got == list(range(1, n_events + 1))
            assert relay.hub.statistics().slow_subscribers_closed_total == 1
        # The slow one, reading at last, finds what its socket held, then close code 1013.
        with pytest.raises(ConnectionClosed) as info:
            with trio.fail_after(10):
                while True:
                    await slow.get_message()
        assert info.value.reason.code == 1013


async def test_subscriber_garbage_frames_are_ignored(relay: RunningRelay) -> None:
    async with open_websocket_url(f"{relay.ws_url}/ws?callId=g") as ws:
        await settle(relay, 1)
        await ws.send_message(b"\x00\xff garbage")
        await ws.send_message("{not json")
        await relay.post(partial("g", 1))
        assert (await receive_json(ws))["seq"] == 1
    assert relay.relay.routes.garbage_frames_total == 2


async def test_abrupt_tcp_reset_frees_the_subscriber(relay: RunningRelay) -> None:
    host, port = relay.base_url.removeprefix("http://").split(":")
    sock = trio.socket.socket()
    await sock.connect((host, int(port)))
    await sock.send(b"GET /ws?callId=rst HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                    b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                    b"Sec-WebSocket-Version: 13\r\n\r\n")
    assert b"101" in await sock.recv(4096)
    await settle(relay, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    sock.close()  # RST, no close frame
    await settle(relay, 0)
    await relay.post(partial("rst", 1))  # publishing to the gone room is harmless
    assert (await relay.http.get(f"{relay.base_url}/health")).status_code == 200


async def test_token_protects_publish_and_subscribe(start_relay: StartRelay) -> None:
    relay: RunningRelay = await start_relay(token="s3cret")
    assert (await relay.post(partial("t", 1))).status_code == 401
    bad = await relay.post(partial("t", 1), headers={"authorization": "Bearer nope"})
    assert bad.status_code == 401
    ok = await relay.post(partial("t", 1), headers={"authorization": "Bearer s3cret"})
    assert ok.status_code == 200
    status, _ = await raw_upgrade(relay, "/ws?callId=t&token=nope")
    assert status == 401
    status, _ = await raw_upgrade(relay, "/ws?callId=t")
    assert status == 401
    async with open_websocket_url(f"{relay.ws_url}/ws?callId=t&token=s3cret") as ws:
        assert (await receive_json(ws))["seq"] == 1
    async with open_websocket_url(f"{relay.ws_url}/ws?callId=t",
                                  extra_headers=[(b"authorization", b"Bearer s3cret")]) as ws:
        assert (await receive_json(ws))["seq"] == 1


async def test_open_relay_warns_at_startup(start_relay: StartRelay,
                                           caplog: pytest.LogCaptureFixture) -> None:
    await start_relay()
    assert any("relay is open" in r.getMessage() for r in caplog.records)


async def test_backlog_expires_after_ttl(start_relay: StartRelay) -> None:
    relay: RunningRelay = await start_relay(ttl_s=0.2)
    await relay.post(partial("old", 1))
    assert relay.hub.statistics().backlog_calls == 1
    with trio.fail_after(5):
        while relay.hub.statistics().backlog_calls:
            await trio.sleep(0.05)
    async with open_websocket_url(f"{relay.ws_url}/ws?callId=old") as ws:
        await settle(relay, 1)
        await relay.post(partial("old", 2))
        assert (await receive_json(ws))["text"] == "hola 2"  # nothing old came first


async def test_metrics_expose_the_relay_figures(relay: RunningRelay) -> None:
    async with open_websocket_url(f"{relay.ws_url}/ws?callId=m"):
        await settle(relay, 1)
        await relay.post(partial("m", 1))
        text = (await relay.http.get(f"{relay.base_url}/metrics")).text
    for line in ["centralita_relay_rooms 1.0", "centralita_relay_subscribers 1.0",
                 "centralita_relay_backlog_calls 1.0", "centralita_relay_events_total 1.0",
                 "centralita_relay_slow_subscribers_closed_total 0.0"]:
        assert line in text


async def test_shutdown_closes_subscribers_with_1001(relay: RunningRelay) -> None:
    async with open_websocket_url(f"{relay.ws_url}/ws?callId=bye") as ws:
        await settle(relay, 1)
        relay.stop.set()
        with pytest.raises(ConnectionClosed) as info:
            with trio.fail_after(5):
                await ws.get_message()
    assert info.value.reason.code == 1001


async def _short_lived_room(relay: RunningRelay, call_id: str) -> None:
    """Publish to a fresh call, subscribe over a raw WebSocket, read the backlog frame, leave."""
    host, port = relay.base_url.removeprefix("http://").split(":")
    async with await trio.open_tcp_stream(host, int(port)) as stream:
        body = json.dumps(partial(call_id, 1)).encode()
        await stream.send_all(b"POST /event HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
                              b"\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        answer = b""
        while b"\r\n\r\n" not in answer or not answer.endswith(b"}"):
            answer += await stream.receive_some()
    async with await trio.open_tcp_stream(host, int(port)) as stream:
        await stream.send_all(
            b"GET /ws?callId=" + call_id.encode() + b" HTTP/1.1\r\nHost: x\r\n"
            b"Upgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
        data = b""
        while call_id.encode() not in data:  # 101 then the backlog frame
            data += await stream.receive_some()
        await stream.send_all(b"\x88\x82\x00\x00\x00\x00\x03\xe8")  # masked close 1000


async def test_ten_thousand_short_lived_rooms_leave_the_server_at_baseline(
        start_relay: StartRelay) -> None:
    import gc

    relay: RunningRelay = await start_relay(ttl_s=0.5)

    async def churn(prefix: str, n: int) -> None:
        limiter = trio.CapacityLimiter(32)
        async with trio.open_nursery() as nursery:
            for i in range(n):
                async def one(i: int = i) -> None:
                    async with limiter:
                        await _short_lived_room(relay, f"{prefix}-{i}")
                nursery.start_soon(one)

    async def settled() -> None:
        with trio.fail_after(10):
            while (s := relay.hub.statistics()).subscribers or s.rooms or s.backlog_calls:
                await trio.sleep(0.05)

    await churn("warm", 500)
    await settled()
    gc.collect()
    baseline = len(gc.get_objects())  # (tracemalloc would triple the run time)
    await churn("room", 10_000)
    assert relay.hub.statistics().events_total == 10_500
    await settled()  # rooms gone with their subscribers; backlogs gone after the TTL
    gc.collect()
    grown = len(gc.get_objects()) - baseline
    assert grown < 2_000, f"{grown} more live objects after 10,000 rooms (a leak keeps >= 10,000)"
