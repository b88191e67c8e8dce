"""RawMediaSocket: the Telnyx media WebSocket on a bare socket, against a wsproto client peer.

A socket pair: our end is what the front door hands the route (non-blocking, 101 already sent);
the peer speaks client frames (masked) through wsproto's frame layer, so every byte we write is
parsed strictly on the other side.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from typing import Any

import attrs
import pytest
import trio
import trio.testing
from wsproto.frame_protocol import FrameProtocol, Opcode

from centralita.front_door import SocketRoute
from centralita.media_socket import CLOSE_MESSAGE_TOO_BIG, RawMediaSocket
from centralita.routes_media import MediaStreamRoute
from centralita.server import build_service_app
from centralita.settings import Settings


@attrs.define(eq=False)
class Peer:
    """Telnyx's end: masked frames out, strict parsing in."""

    sock: trio.socket.SocketType
    protocol: FrameProtocol = attrs.field(factory=lambda: FrameProtocol(client=True,
                                                                        extensions=[]))

    async def send(self, data: bytes) -> None:
        await self.sock.send(data)

    def text(self, text: str, *, fin: bool = True) -> bytes:
        return self.protocol.send_data(text, fin)

    async def frames(self, timeout_s: float = 5.0) -> list[tuple[Opcode, Any]]:
        """Every frame the server wrote until it closed the TCP socket (or went quiet)."""
        out: list[tuple[Opcode, Any]] = []
        with trio.move_on_after(timeout_s):
            while True:
                data = await self.sock.recv(65_536)
                if not data:
                    break
                self.protocol.receive_bytes(data)
                out.extend((f.opcode, f.payload) for f in self.protocol.received_frames())
        return out

    async def next_frame(self) -> tuple[Opcode, Any]:
        with trio.fail_after(5):
            while True:
                for frame in self.protocol.received_frames():
                    return frame.opcode, frame.payload
                data = await self.sock.recv(65_536)
                assert data, "EOF"
                self.protocol.receive_bytes(data)


@pytest.fixture
async def pair() -> AsyncIterator[tuple[RawMediaSocket, Peer]]:
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    peer = Peer(trio.socket.from_stdlib_socket(theirs))
    media = RawMediaSocket(ours)
    try:
        yield media, peer
    finally:
        await media.finish(0.0)
        peer.sock.close()


async def test_messages_arrive_whole_fragmented_or_not_text_or_binary(
        pair: tuple[RawMediaSocket, Peer]) -> None:
    media, peer = pair
    await peer.send(peer.text('{"event":"connected"}')
                    + peer.text('{"event":', fin=False) + peer.text('"start"', fin=False)
                    + peer.text("}")
                    + peer.protocol.send_data(b"\x00\x01", True))
    assert await media.receive() == '{"event":"connected"}'
    assert await media.receive() == '{"event":"start"}'
    assert await media.receive() == b"\x00\x01"


async def test_bytes_that_followed_the_handshake_are_not_lost() -> None:
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    protocol = FrameProtocol(client=True, extensions=[])
    media = RawMediaSocket(ours, protocol.send_data("first", True))
    try:
        theirs.sendall(protocol.send_data("second", True))
        assert await media.receive() == "first"
        assert await media.receive() == "second"
    finally:
        await media.finish(0.0)
        theirs.close()


async def test_a_ping_gets_its_pong_and_reading_goes_on(pair: tuple[RawMediaSocket, Peer]) -> None:
    media, peer = pair
    await peer.send(peer.protocol.ping(b"are you there") + peer.text("media"))
    assert await media.receive() == "media"
    assert await peer.next_frame() == (Opcode.PONG, b"are you there")


async def test_peer_close_is_answered_with_its_code_and_ends_the_stream(
        pair: tuple[RawMediaSocket, Peer]) -> None:
    media, peer = pair
    await peer.send(peer.protocol.close(1000, "stream over"))
    assert await media.receive() is None
    assert media.close_code == 1000
    assert await peer.next_frame() == (Opcode.CLOSE, (1000, "stream over"))
    with pytest.raises(trio.BrokenResourceError):
        await media.send("late")
    assert await media.receive() is None  # and stays ended


@pytest.mark.parametrize("how", ["eof", "reset"])
async def test_eof_or_reset_ends_the_stream_quietly(pair: tuple[RawMediaSocket, Peer],
                                                    how: str) -> None:
    media, peer = pair
    if how == "reset":
        peer.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    peer.sock.close()
    assert await media.receive() is None
    await media.close(1000)  # nothing to say it to: no error


@pytest.mark.parametrize("fragments", [["z" * 101], ["x" * 60, "y" * 60]])
async def test_a_message_over_the_limit_is_closed_1009_and_nothing_after_is_read(
        fragments: list[str]) -> None:
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    peer = Peer(trio.socket.from_stdlib_socket(theirs))
    media = RawMediaSocket(ours, max_message_bytes=100)
    try:
        data = b"".join(peer.text(f, fin=i == len(fragments) - 1) for i, f in enumerate(fragments))
        await peer.send(data + peer.text("never read"))
        assert await media.receive() is None
        opcode, payload = await peer.next_frame()
        assert (opcode, payload[0]) == (Opcode.CLOSE, CLOSE_MESSAGE_TOO_BIG)
        assert await media.receive() is None
    finally:
        await media.finish(0.0)
        peer.sock.close()


@pytest.mark.parametrize(("frame", "code"), [
    (b"\x81\x05hello", 1002),  # a client frame must be masked
    (b"\x81\x82\x00\x00\x00\x00\xc3\x28", 1007),  # text that is not UTF-8
    (b"\x83\x80\x00\x00\x00\x00", 1002),  # a reserved opcode
])
async def test_a_protocol_violation_is_closed_with_the_rfc_code(
        pair: tuple[RawMediaSocket, Peer], frame: bytes, code: int) -> None:
    media, peer = pair
    await peer.send(frame)
    assert await media.receive() is None
    opcode, payload = await peer.next_frame()
    assert (opcode, payload[0]) == (Opcode.CLOSE, code)


async def test_close_sends_one_close_frame_with_a_short_enough_reason(
        pair: tuple[RawMediaSocket, Peer]) -> None:
    media, peer = pair
    await media.close(1011, "é" * 100)  # 200 bytes of UTF-8: cut to fit a control frame
    await media.close(1000, "again")  # idempotent
    opcode, (code, reason) = await peer.next_frame()
    assert (opcode, code) == (Opcode.CLOSE, 1011)
    assert reason == "é" * 61  # 122 bytes: no half character
    with pytest.raises(trio.BrokenResourceError):
        await media.send("after close")


async def test_finish_waits_for_the_close_reply_then_closes_tcp(
        pair: tuple[RawMediaSocket, Peer]) -> None:
    media, peer = pair
    await media.close(1000, "call ended")
    assert await peer.next_frame() == (Opcode.CLOSE, (1000, "call ended"))
    await peer.send(peer.protocol.close(1000))
    await media.finish()
    assert media.sock.fileno() == -1
    assert await peer.sock.recv(10) == b""


async def test_finish_gives_up_on_a_silent_peer(autojump_clock: trio.testing.MockClock,
                                                pair: tuple[RawMediaSocket, Peer]) -> None:
    media, _ = pair
    await media.close(1001, "going away")
    started = trio.current_time()
    await media.finish(2.0)
    assert trio.current_time() - started == pytest.approx(2.0)
    assert media.sock.fileno() == -1


async def test_concurrent_writers_never_interleave_frames() -> None:
    ours, theirs = socket.socketpair()
    ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    theirs.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    ours.setblocking(False)
    peer = Peer(trio.socket.from_stdlib_socket(theirs))
    media = RawMediaSocket(ours)
    texts = {name: [f"{name}{i:04d}" + "-" * 3000 for i in range(30)] for name in "ab"}

    async def write(name: str) -> None:
        for text in texts[name]:
            await media.send(text)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(write, "a")
        nursery.start_soon(write, "b")
        received: list[str] = []
        while len(received) < 60:
            opcode, payload = await peer.next_frame()
            assert opcode is Opcode.TEXT
            received.append(payload)
    for name in "ab":
        assert [t for t in received if t.startswith(name)] == texts[name]
    await media.finish(0.0)
    peer.sock.close()


async def test_a_send_cut_mid_frame_breaks_the_socket_for_good() -> None:
    ours, theirs = socket.socketpair()
    ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    theirs.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    ours.setblocking(False)
    media = RawMediaSocket(ours)
    with trio.move_on_after(0.05):  # nobody reads: the kernel takes part of the frame, then waits
        await media.send("x" * 1_000_000)
    with pytest.raises(trio.BrokenResourceError):
        await media.send("a frame after half a frame would be garbage")
    await media.close(1000)  # no close frame either, and no error
    await media.finish(0.0)
    theirs.close()


def test_the_service_serves_media_streams_on_the_raw_socket_path() -> None:
    app, _ = build_service_app(Settings(host="127.0.0.1", port=0))
    route = app.websocket_routes["/stream/media"]
    assert isinstance(route, MediaStreamRoute) and isinstance(route, SocketRoute)
