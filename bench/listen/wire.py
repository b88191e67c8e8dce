"""WebSocket framing (RFC 6455) for the light bench processes, and the per-frame audio marker.

Only what the light caller and the sink need: the HTTP upgrade, masked client frames with real
random masks (a zero mask would let a server skip unmasking), an incremental frame reader, and
the marker that makes every 20 ms audio frame identifiable after it crossed the service.
"""

from __future__ import annotations

import base64
import hashlib
import os
from collections.abc import Iterator
from typing import Final

OP_CONT: Final = 0x0
OP_TEXT: Final = 0x1
OP_BINARY: Final = 0x2
OP_CLOSE: Final = 0x8
OP_PING: Final = 0x9
OP_PONG: Final = 0xA
_GUID: Final = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

#: The marker occupies the first bytes of every 160-byte PCMU frame: magic, call (2), frame (3).
MARKER_MAGIC: Final = 0xA5
MARKER_BYTES: Final = 6
FRAME_BYTES: Final = 160  # 20 ms of 8 kHz PCMU


def marker(call: int, frame: int) -> bytes:
    return bytes((MARKER_MAGIC,)) + call.to_bytes(2, "big") + frame.to_bytes(3, "big")


def read_marker(chunk: bytes | memoryview) -> tuple[int, int] | None:
    """``(call, frame)`` from a frame's leading bytes, or None if it carries no marker."""
    if len(chunk) < MARKER_BYTES or chunk[0] != MARKER_MAGIC:
        return None
    return int.from_bytes(chunk[1:3], "big"), int.from_bytes(chunk[3:6], "big")


def accept_key(key: bytes) -> bytes:
    return base64.b64encode(hashlib.sha1(key + _GUID).digest())  # noqa: S324 - RFC 6455


def upgrade_request(host: str, port: int, path: str,
                    headers: list[tuple[str, str]] = ()) -> tuple[bytes, bytes]:  # type: ignore[assignment]
    """The client's upgrade request and the ``Sec-WebSocket-Accept`` value to expect."""
    key = base64.b64encode(os.urandom(16))
    lines = [f"GET {path} HTTP/1.1", f"Host: {host}:{port}", "Upgrade: websocket",
             "Connection: Upgrade", f"Sec-WebSocket-Key: {key.decode()}", "Sec-WebSocket-Version: 13",
             *(f"{name}: {value}" for name, value in headers)]
    return ("\r\n".join(lines) + "\r\n\r\n").encode(), accept_key(key)


def upgrade_response(key: bytes) -> bytes:
    return (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: " + accept_key(key) + b"\r\n\r\n")


def _header(opcode: int, length: int, masked: bool) -> bytes:
    first = bytes((0x80 | opcode,))
    bit = 0x80 if masked else 0
    if length < 126:
        return first + bytes((bit | length,))
    if length < 65536:
        return first + bytes((bit | 126,)) + length.to_bytes(2, "big")
    return first + bytes((bit | 127,)) + length.to_bytes(8, "big")


def xor_mask(payload: bytes | bytearray | memoryview, key: bytes) -> bytes:
    n = len(payload)
    if n == 0:
        return b""
    stream = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "little") ^ int.from_bytes(stream, "little")).to_bytes(n, "little")


def client_frame(payload: bytes, opcode: int = OP_TEXT) -> bytes:
    """A masked frame, with a fresh random non-zero mask, the payload really XOR-masked."""
    key = b"\x00\x00\x00\x00"
    while key == b"\x00\x00\x00\x00":
        key = os.urandom(4)
    return _header(opcode, len(payload), True) + key + xor_mask(payload, key)


def server_frame(payload: bytes, opcode: int = OP_BINARY) -> bytes:
    return _header(opcode, len(payload), False) + payload


def close_payload(code: int, reason: str = "") -> bytes:
    return code.to_bytes(2, "big") + reason.encode()


class FrameReader:
    """Incremental parser: ``feed(bytes)`` yields whole ``(opcode, payload)`` messages.

    Unmasks client frames; reassembles fragmented messages (trio-websocket does not fragment,
    but a sink must not miscount if someone does).
    """

    def __init__(self) -> None:
        self._buf = bytearray()
        self._parts: list[bytes] = []
        self._opcode = 0

    def feed(self, data: bytes) -> Iterator[tuple[int, bytes]]:
        buf = self._buf
        buf += data
        pos = 0
        end = len(buf)
        while end - pos >= 2:
            b0, b1 = buf[pos], buf[pos + 1]
            length = b1 & 0x7F
            head = 2
            if length == 126:
                if end - pos < 4:
                    break
                length = int.from_bytes(buf[pos + 2:pos + 4], "big")
                head = 4
            elif length == 127:
                if end - pos < 10:
                    break
                length = int.from_bytes(buf[pos + 2:pos + 10], "big")
                head = 10
            masked = b1 & 0x80
            key_at = pos + head
            if masked:
                head += 4
            if end - pos < head + length:
                break
            start = pos + head
            payload = bytes(buf[start:start + length])
            if masked:
                payload = xor_mask(payload, bytes(buf[key_at:key_at + 4]))
            pos = start + length
            opcode, fin = b0 & 0x0F, b0 & 0x80
            if opcode >= 0x8:  # control frames are never fragmented
                yield opcode, payload
                continue
            if opcode != OP_CONT:
                self._opcode = opcode
            if fin and not self._parts:
                yield self._opcode, payload
            else:
                self._parts.append(payload)
                if fin:
                    whole, self._parts = b"".join(self._parts), []
                    yield self._opcode, whole
        del buf[:pos]
