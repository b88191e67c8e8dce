"""The front door and the subscriber fast path, over real sockets against the real server.

Subscribers here are raw sockets with wsproto's frame parser on the client side, so the tests see
exactly the bytes the server wrote: handshake headers, frame boundaries, close codes.
"""

from __future__ import annotations

import json
import socket
from typing import Any

import attrs
import httpx
import pytest
import trio
from wsproto.frame_protocol import CloseReason, FrameProtocol, Opcode

from centralita.app import App
from centralita.asgi import Receive, Scope, Send
from centralita.fanout_socket import FanoutWriter, text_frame
from centralita.front_door import websocket_accept
from centralita.relay_hub import RelayHub
from centralita.server import Relay, serve_until
from centralita.settings import Settings
from tests.centralita.conftest import RunningRelay, StartRelay
from tests.wsclient import open_ws

RFC_KEY = b"dGhlIHNhbXBsZSBub25jZQ=="  # RFC 6455 §1.3's example and its answer
RFC_ACCEPT = b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


def partial(call_id: str, n: int, **extra: object) -> dict[str, object]:
    return {"type": "partial", "callId": call_id, "speaker": "customer", "text": f"hola {n}",
            **extra}


def address(relay: RunningRelay) -> tuple[str, int]:
    host, port = relay.base_url.removeprefix("http://").split(":")
    return host, int(port)


def upgrade_head(target: str, extra: bytes = b"", key: bytes = RFC_KEY,
                 version: bytes = b"13") -> bytes:
    return (b"GET " + target.encode() + b" HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Key: " + key + b"\r\n"
            b"Sec-WebSocket-Version: " + version + b"\r\n" + extra + b"\r\n")


@attrs.define(eq=False)
class RawClient:
    """A WebSocket client on a bare socket: masked frames out, strict frame parsing in."""

    stream: trio.SocketStream
    status: int
    head: bytes
    body: bytes = b""
    protocol: FrameProtocol = attrs.field(factory=lambda: FrameProtocol(client=True,
                                                                        extensions=[]))
    eof: bool = False

    @classmethod
    async def connect(cls, relay: RunningRelay, target: str, *, first: bytes | None = None,
                      rcvbuf: int | None = None, head: bytes | None = None) -> RawClient:
        sock = trio.socket.socket()
        if rcvbuf is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        await sock.connect(address(relay))
        stream = trio.SocketStream(sock)
        await stream.send_all((head or upgrade_head(target)) + (first or b""))
        answer = b""
        with trio.fail_after(5):
            while b"\r\n\r\n" not in answer:
                chunk = await stream.receive_some()
                assert chunk, f"EOF during the handshake: {answer!r}"
                answer += chunk
        head_bytes, _, rest = answer.partition(b"\r\n\r\n")
        client = cls(stream=stream, status=int(head_bytes.split(b" ")[1]), head=head_bytes)
        if client.status == 101:
            client.protocol.receive_bytes(rest)
        else:
            client.body = rest
        return client

    def header(self, name: bytes) -> bytes | None:
        for line in self.head.split(b"\r\n")[1:]:
            key, _, value = line.partition(b":")
            if key.strip().lower() == name:
                return value.strip()
        return None

    async def read_body(self) -> dict[str, Any]:
        length = int(self.header(b"content-length") or 0)
        with trio.fail_after(5):
            while len(self.body) < length:
                self.body += await self.stream.receive_some()
        return json.loads(self.body)

    async def message(self, timeout: float = 5.0) -> tuple[Opcode, Any]:
        """The next whole message or control frame: (opcode, payload)."""
        pieces: list[Any] = []
        opcode: Opcode | None = None
        with trio.fail_after(timeout):
            while True:
                for frame in self.protocol.received_frames():
                    if frame.opcode.iscontrol():
                        return frame.opcode, frame.payload
                    opcode = opcode or frame.opcode
                    pieces.append(frame.payload)
                    if frame.message_finished:
                        joined = "".join(pieces) if opcode is Opcode.TEXT else b"".join(pieces)
                        return opcode, joined
                data = await self.stream.receive_some(65_536)
                if not data:
                    self.eof = True
                    raise EOFError
                self.protocol.receive_bytes(data)

    async def event(self, timeout: float = 5.0) -> dict[str, Any]:
        opcode, payload = await self.message(timeout)
        assert opcode is Opcode.TEXT, (opcode, payload)
        return json.loads(payload)

    async def send(self, frame: bytes | bytearray) -> None:
        await self.stream.send_all(bytes(frame))

    async def wait_eof(self) -> None:
        with trio.fail_after(5):
            while await self.stream.receive_some():
                pass
        self.eof = True

    async def aclose(self) -> None:
        await trio.aclose_forcefully(self.stream)


async def settle(relay: RunningRelay, subscribers: int) -> None:
    with trio.fail_after(5):
        while relay.hub.statistics().subscribers != subscribers:
            await trio.sleep(0.005)


def fanout(relay: RunningRelay) -> FanoutWriter:
    return relay.relay.routes.subscribe.fanout


# -- the handshake --------------------------------------------------------------------------------

async def test_accept_key_is_rfc_correct_and_no_extension_is_negotiated(
        relay: RunningRelay) -> None:
    client = await RawClient.connect(relay, "/ws?callId=h", head=upgrade_head(
        "/ws?callId=h", extra=b"Sec-WebSocket-Extensions: permessage-deflate; "
                              b"client_max_window_bits\r\n"))
    try:
        assert client.status == 101
        assert client.header(b"sec-websocket-accept") == RFC_ACCEPT
        assert websocket_accept(RFC_KEY) == RFC_ACCEPT
        assert client.header(b"upgrade") == b"websocket"
        assert client.header(b"sec-websocket-extensions") is None
        await settle(relay, 1)
        assert fanout(relay).statistics().subscribers == 1  # served by the fast path
    finally:
        await client.aclose()
    await settle(relay, 0)


@pytest.mark.parametrize(
    ("target", "head_extra", "status", "needle"),
    [("/ws", {}, 400, "callId"),
     ("/ws?callId=", {}, 400, "callId"),
     ("/ws?callId=c&since=1.5", {}, 400, "since"),
     ("/ws?callId=c", {"version": b"8"}, 426, "version 13"),
     ("/ws?callId=c", {"key": b"c2hvcnQ="}, 400, "Sec-WebSocket-Key")])
async def test_fast_path_refusals_carry_a_json_reason(relay: RunningRelay, target: str,
                                                      head_extra: dict[str, bytes], status: int,
                                                      needle: str) -> None:
    client = await RawClient.connect(relay, target, head=upgrade_head(target, **head_extra))
    try:
        assert client.status == status
        assert needle in (await client.read_body())["error"]
        if status == 426:
            assert client.header(b"sec-websocket-version") == b"13"
        await client.wait_eof()  # refused connections are closed
    finally:
        await client.aclose()
    assert relay.hub.statistics().subscribers == 0


async def test_wrong_token_is_401_and_the_header_works(start_relay: StartRelay) -> None:
    relay: RunningRelay = await start_relay(token="s3cret")
    client = await RawClient.connect(relay, "/ws?callId=t&token=nope")
    assert client.status == 401 and "token" in (await client.read_body())["error"]
    await client.aclose()
    target = "/ws?callId=t"
    client = await RawClient.connect(relay, target, head=upgrade_head(
        target, extra=b"Authorization: Bearer s3cret\r\n"))
    assert client.status == 101
    await client.aclose()


async def test_upgrades_are_refused_with_503_while_draining(relay: RunningRelay) -> None:
    relay.app.draining = True
    try:
        client = await RawClient.connect(relay, "/ws?callId=d")
        assert client.status == 503 and "shutting down" in (await client.read_body())["error"]
        await client.aclose()
    finally:
        relay.app.draining = False


async def test_a_head_arriving_byte_by_byte_and_frames_right_behind_it(
        relay: RunningRelay) -> None:
    sock = trio.socket.socket()
    await sock.connect(address(relay))
    stream = trio.SocketStream(sock)
    ping = FrameProtocol(client=True, extensions=[]).ping(b"early")
    for byte in upgrade_head("/ws?callId=slow"):
        await stream.send_all(bytes([byte]))
        await trio.sleep(0)
    await stream.send_all(bytes(ping))  # before the 101 has been read
    client = RawClient(stream=stream, status=0, head=b"")
    answer = b""
    with trio.fail_after(5):
        while b"\r\n\r\n" not in answer:
            answer += await stream.receive_some()
    head, _, rest = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101 ")
    client.protocol.receive_bytes(rest)
    assert await client.message() == (Opcode.PONG, b"early")
    await client.aclose()


# -- the WebSocket conversation -------------------------------------------------------------------

async def test_ping_gets_pong_and_data_frames_are_ignored(relay: RunningRelay) -> None:
    client = await RawClient.connect(relay, "/ws?callId=p")
    try:
        proto = FrameProtocol(client=True, extensions=[])
        await client.send(proto.send_data("hello?"))
        await client.send(proto.ping(b"are you there"))
        assert await client.message() == (Opcode.PONG, b"are you there")
        await relay.post(partial("p", 1))
        assert (await client.event())["seq"] == 1
        assert relay.relay.routes.garbage_frames_total == 1
    finally:
        await client.aclose()


async def test_client_close_gets_the_close_reply_then_eof(relay: RunningRelay) -> None:
    client = await RawClient.connect(relay, "/ws?callId=c")
    await settle(relay, 1)
    proto = FrameProtocol(client=True, extensions=[])
    await client.send(proto.close(CloseReason.NORMAL_CLOSURE, "bye"))
    opcode, payload = await client.message()
    assert opcode is Opcode.CLOSE and payload[0] == CloseReason.NORMAL_CLOSURE
    await client.wait_eof()
    await client.aclose()
    await settle(relay, 0)


async def test_a_bad_frame_is_closed_with_protocol_error(relay: RunningRelay) -> None:
    client = await RawClient.connect(relay, "/ws?callId=bad")
    await client.send(b"\x81\x05hello")  # unmasked: clients must mask
    opcode, payload = await client.message()
    assert opcode is Opcode.CLOSE and payload[0] == CloseReason.PROTOCOL_ERROR
    await client.wait_eof()
    await client.aclose()


async def test_a_frame_larger_than_the_socket_buffers_arrives_whole(relay: RunningRelay) -> None:
    big = "é" * 400_000  # 800 kB of UTF-8, 2-byte characters straddling every split
    client = await RawClient.connect(relay, "/ws?callId=big", rcvbuf=4096)
    try:
        await settle(relay, 1)
        await relay.post(partial("big", 1, blob=big))
        await relay.post(partial("big", 2))
        await trio.sleep(0.2)  # let the server hit a full buffer before we read
        assert fanout(relay).statistics().blocked == 1  # the kernel took part of the frame
        first = await client.event()
        assert first["seq"] == 1 and first["blob"] == big
        assert (await client.event())["seq"] == 2
    finally:
        await client.aclose()


async def test_queued_frames_go_out_coalesced_and_arrive_separate_and_in_order(
        relay: RunningRelay) -> None:
    client = await RawClient.connect(relay, "/ws?callId=burst")
    try:
        await settle(relay, 1)
        before = fanout(relay).statistics()
        for n in range(300):  # in one go: the writer runs only after all are queued
            relay.hub.publish("burst", partial("burst", n, pad="x" * (n % 200)))
        got = [await client.event() for _ in range(300)]
        assert [e["seq"] for e in got] == list(range(1, 301))
        assert [e["text"] for e in got] == [f"hola {n}" for n in range(300)]
        after = fanout(relay).statistics()
        assert after.frames_sent_total - before.frames_sent_total == 300
        assert after.flushes_total - before.flushes_total < 10
    finally:
        await client.aclose()


async def test_a_subscriber_that_stops_reading_is_closed_1013_and_the_fast_one_gets_all(
        start_relay: StartRelay) -> None:
    relay: RunningRelay = await start_relay(queue_frames=32)
    slow = await RawClient.connect(relay, "/ws?callId=s", rcvbuf=4096)
    fast = await RawClient.connect(relay, "/ws?callId=s")
    try:
        await settle(relay, 2)
        n_events, blob = 300, "y" * 20_000
        got: list[int] = []

        async def read_fast() -> None:
            while len(got) < n_events:
                got.append((await fast.event())["seq"])

        async with trio.open_nursery() as nursery:
            nursery.start_soon(read_fast)
            for n in range(n_events):
                relay.hub.publish("s", partial("s", n, blob=blob))
                await trio.sleep(0)
        assert got == list(range(1, n_events + 1))
        assert relay.hub.statistics().slow_subscribers_closed_total == 1
        # What the slow one finds: whole frames in order, then close 1013 (never a torn frame).
        seqs = []
        while True:
            opcode, payload = await slow.message()
            if opcode is Opcode.CLOSE:
                assert payload[0] == 1013
                break
            seqs.append(json.loads(payload)["seq"])
        assert seqs == list(range(1, len(seqs) + 1)) and len(seqs) < n_events
        await slow.send(FrameProtocol(client=True, extensions=[]).close(1000))
        await slow.wait_eof()
    finally:
        await slow.aclose()
        await fast.aclose()


async def test_tcp_reset_while_blocked_frees_the_subscriber(start_relay: StartRelay) -> None:
    relay: RunningRelay = await start_relay()
    client = await RawClient.connect(relay, "/ws?callId=rst", rcvbuf=4096)
    await settle(relay, 1)
    for n in range(20):
        relay.hub.publish("rst", partial("rst", n, blob="z" * 50_000))
    with trio.fail_after(5):
        while not fanout(relay).statistics().blocked:
            await trio.sleep(0.01)
    client.stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                    b"\x01\x00\x00\x00\x00\x00\x00\x00")
    await client.aclose()  # RST
    await settle(relay, 0)
    with trio.fail_after(5):
        while fanout(relay).statistics().blocked:
            await trio.sleep(0.01)


async def test_shutdown_closes_fast_subscribers_with_1001(relay: RunningRelay) -> None:
    client = await RawClient.connect(relay, "/ws?callId=bye")
    await settle(relay, 1)
    relay.stop.set()
    opcode, payload = await client.message()
    assert opcode is Opcode.CLOSE and payload[0] == CloseReason.GOING_AWAY
    await client.send(FrameProtocol(client=True, extensions=[]).close(1001))
    await client.wait_eof()
    await client.aclose()


# -- everything else still goes to hypercorn ------------------------------------------------------

async def test_keep_alive_requests_on_one_connection_go_to_hypercorn(relay: RunningRelay) -> None:
    sock = trio.socket.socket()
    await sock.connect(address(relay))
    async with trio.SocketStream(sock) as stream:
        body = json.dumps(partial("ka", 1)).encode()
        request = (b"POST /event HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                   b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
        answers = []
        for _ in range(2):
            await stream.send_all(request)
            answer = b""
            with trio.fail_after(5):
                while not answer.endswith(b"}"):
                    answer += await stream.receive_some()
            answers.append(answer)
        # a plain GET /ws (no upgrade) on the same connection: hypercorn's 404
        await stream.send_all(b"GET /ws?callId=ka HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = b""
        with trio.fail_after(5):
            while not answer.endswith(b"}"):
                answer += await stream.receive_some()
    assert [a.split(b"\r\n")[0] for a in answers] == [b"HTTP/1.1 200 "] * 2
    assert [json.loads(a.partition(b"\r\n\r\n")[2])["seq"] for a in answers] == [1, 2]
    assert answer.startswith(b"HTTP/1.1 404 ")


async def test_an_upgrade_on_a_reused_connection_is_served_through_asgi(
        relay: RunningRelay) -> None:
    sock = trio.socket.socket()
    await sock.connect(address(relay))
    async with trio.SocketStream(sock) as stream:
        await stream.send_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = b""
        with trio.fail_after(5):
            while not answer.endswith(b"ok"):
                answer += await stream.receive_some()
        await relay.post(partial("reuse", 1))
        await stream.send_all(upgrade_head("/ws?callId=reuse"))
        client = RawClient(stream=stream, status=0, head=b"")
        answer = b""
        with trio.fail_after(5):
            while b"\r\n\r\n" not in answer:
                answer += await stream.receive_some()
        head, _, rest = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101 ")
        client.protocol.receive_bytes(rest)
        assert (await client.event())["seq"] == 1
        assert fanout(relay).statistics().subscribers == 0  # not the fast path


async def echo(scope: Scope, receive: Receive, send: Send) -> None:
    """A tiny ASGI WebSocket echo, standing in for /stream/media."""
    assert (await receive())["type"] == "websocket.connect"
    await send({"type": "websocket.accept"})
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            return
        await send({"type": "websocket.send", "text": message.get("text") or "?"})


async def test_other_websocket_routes_go_to_hypercorn() -> None:
    settings = Settings(host="127.0.0.1", port=0)
    app = App()
    relay = Relay.from_settings(settings)
    relay.mount(app)
    app.websocket_routes["/stream/media"] = echo
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(serve_until, app, settings, stop)
        url = binds[0].replace("http://", "ws://")
        async with open_ws(f"{url}/stream/media") as ws:
            await ws.send_message("marco")
            with trio.fail_after(5):
                assert await ws.get_message() == "marco"
        async with httpx.AsyncClient() as http:
            assert (await http.get(f"{binds[0]}/health")).text == "ok"
        stop.set()


# -- the writer's partial-send bookkeeping, on a socket pair with tiny buffers ---------------------

async def test_partial_sends_never_tear_or_reorder_frames() -> None:
    hub = RelayHub(queue_frames=10_000)
    writer = FanoutWriter(hub)
    server_end, client_end = socket.socketpair()
    server_end.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    client_end.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    server_end.setblocking(False)
    sizes = [0, 1, 125, 126, 127, 5000, 65_535, 65_536, 70_000, 3, 200_000, 7]
    expected = b""
    async with trio.open_nursery() as nursery:
        await nursery.start(writer.run)
        nursery.start_soon(writer.serve, server_end, "pair", None)
        await trio.sleep(0.01)
        for round_ in range(3):
            for i, size in enumerate(sizes):
                hub.publish("pair", {"callId": "pair", "pad": "q" * size, "i": i, "r": round_})
        deliveries = [d for _, d in hub._backlogs["pair"].events]  # noqa: SLF001
        expected = b"".join(text_frame(d.text.encode()) for d in deliveries)
        received = bytearray()
        with trio.socket.from_stdlib_socket(client_end) as client, trio.fail_after(10):
            while len(received) < len(expected):
                received += await client.recv(3000)
                await trio.sleep(0)
        assert bytes(received) == expected
        stats = writer.statistics()
        assert stats.blocked_total >= 1 and stats.flushes_total > 3 * len(sizes)
        assert stats.frames_sent_total == 3 * len(sizes)
        nursery.cancel_scope.cancel()


async def test_more_frames_than_one_sendmsg_takes_go_out_in_order() -> None:
    hub = RelayHub(queue_frames=5_000)
    writer = FanoutWriter(hub)
    server_end, client_end = socket.socketpair()
    server_end.setblocking(False)
    async with trio.open_nursery() as nursery:
        await nursery.start(writer.run)
        nursery.start_soon(writer.serve, server_end, "many", None)
        await trio.sleep(0.01)
        for n in range(3_000):
            hub.publish("many", {"callId": "many", "n": n})
        with trio.socket.from_stdlib_socket(client_end) as client:
            proto = FrameProtocol(client=True, extensions=[])
            got: list[int] = []
            text = ""
            with trio.fail_after(10):
                while len(got) < 3_000:
                    proto.receive_bytes(await client.recv(65_536))
                    for frame in proto.received_frames():
                        text += frame.payload  # type: ignore[operator]
                        if frame.message_finished:
                            got.append(json.loads(text)["n"])
                            text = ""
        assert got == list(range(3_000))
        assert writer.statistics().flushes_total >= 3  # 1022 frames per sendmsg at most
        nursery.cancel_scope.cancel()
