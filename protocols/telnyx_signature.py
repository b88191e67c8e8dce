"""Telnyx webhook signatures (Ed25519), both sides, sans-I/O.

Telnyx signs ``f"{telnyx-timestamp}|".encode() + raw_body`` with the account's Ed25519 key and
sends the base64 signature in ``telnyx-signature-ed25519`` and Unix seconds in
``telnyx-timestamp`` (telnyx.md §4.4; the SDK allows 300 s of clock difference). Verify the
**raw** body bytes before parsing them; never re-serialise the JSON.

:func:`verify_webhook` is the receiving side; :func:`sign_webhook` and :func:`new_keypair` are
for the Telnyx emulator. Every verification failure is a :class:`WebhookSignatureError` (a
RemoteProtocolError) whose ``reason`` says which check failed; answer it with 401/403 and log
the reason. A misconfigured public key also raises it, since the request cannot be trusted
either way; the reason says "public key" so it is not mistaken for an attack.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Final

import attrs
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from protocols.errors import CLOSE_POLICY_VIOLATION, LocalProtocolError, RemoteProtocolError
from protocols.jsonwire import b64decode, b64encode

__all__ = [
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "TIMESTAMP_TOLERANCE_S",
    "WebhookKeypair",
    "WebhookSignatureError",
    "load_public_key",
    "new_keypair",
    "sign_webhook",
    "verify_webhook",
]

SIGNATURE_HEADER: Final = "telnyx-signature-ed25519"
TIMESTAMP_HEADER: Final = "telnyx-timestamp"
TIMESTAMP_TOLERANCE_S: Final = 300.0

_RAW_KEY_BYTES: Final = 32
_SIGNATURE_BYTES: Final = 64
# DER SubjectPublicKeyInfo header of an Ed25519 key (RFC 8410): SEQ { SEQ { OID 1.3.101.112 } BIT STRING }.
# Telnyx documents the raw 32-byte key; a "DER-encoded base64" key is mentioned once (UNCONFIRMED).
_SPKI_ED25519_PREFIX: Final = bytes.fromhex("302a300506032b6570032100")
# Unix seconds as a decimal string: 11 digits reach the year 5138; more is garbage.
_TIMESTAMP_MAX_DIGITS: Final = 11


class WebhookSignatureError(RemoteProtocolError):
    """The webhook cannot be authenticated; ``reason`` names the failed check."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason, close_code=CLOSE_POLICY_VIOLATION)


def _b64decode_strict(value: str) -> bytes | None:
    try:
        return b64decode(value)
    except ValueError:  # binascii.Error is one
        return None


def load_public_key(public_key_b64: str) -> Ed25519PublicKey:
    """Parse the portal's public key: base64 of the raw 32 bytes (or of a 44-byte SPKI DER).

    Load it once at start-up and pass the result to :func:`verify_webhook`.

    Raises:
        WebhookSignatureError: not base64, wrong length, or not an Ed25519 key.
    """
    if type(public_key_b64) is not str:
        raise WebhookSignatureError("webhook public key must be a base64 string")
    raw = _b64decode_strict(public_key_b64.strip())
    if raw is None:
        raise WebhookSignatureError("webhook public key is not valid base64")
    if len(raw) == len(_SPKI_ED25519_PREFIX) + _RAW_KEY_BYTES:
        if not raw.startswith(_SPKI_ED25519_PREFIX):
            raise WebhookSignatureError("webhook public key is 44 bytes but not an Ed25519 SPKI DER key")
        raw = raw[len(_SPKI_ED25519_PREFIX) :]
    if len(raw) != _RAW_KEY_BYTES:
        raise WebhookSignatureError(
            f"webhook public key must decode to {_RAW_KEY_BYTES} bytes (raw Ed25519), got {len(raw)}"
        )
    return Ed25519PublicKey.from_public_bytes(raw)


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is None:
        for key, candidate in headers.items():
            if isinstance(key, str) and key.lower() == name:
                value = candidate
                break
    if isinstance(value, bytes):  # ASGI header values are bytes; be forgiving
        value = value.decode("latin-1")
    return value if isinstance(value, str) else None


def verify_webhook(
    public_key_b64: str | Ed25519PublicKey,
    headers: Mapping[str, str],
    body: bytes,
    now: float,
    tolerance_s: float = TIMESTAMP_TOLERANCE_S,
) -> None:
    """Check a webhook's Ed25519 signature and freshness; return None if it is genuine.

    Args:
        public_key_b64: the account public key (base64), or a key from :func:`load_public_key`.
        headers: request headers; names are matched case-insensitively.
        body: the raw request body, exactly as received.
        now: current Unix time in seconds (pass ``time.time()``; injected for tests).
        tolerance_s: largest accepted ``|now - telnyx-timestamp|``.

    Raises:
        WebhookSignatureError: missing header, bad base64 signature or key, wrong key or signature
            length, non-numeric timestamp, timestamp too old or in the future, or a signature that
            does not match (forged body, wrong key).
    """
    key = public_key_b64 if isinstance(public_key_b64, Ed25519PublicKey) else load_public_key(public_key_b64)
    if not isinstance(body, (bytes, bytearray, memoryview)):
        raise LocalProtocolError(f"verify_webhook needs the raw body bytes, not {type(body).__name__}")
    signature_b64 = _header(headers, SIGNATURE_HEADER)
    if signature_b64 is None:
        raise WebhookSignatureError(f"missing {SIGNATURE_HEADER} header")
    timestamp = _header(headers, TIMESTAMP_HEADER)
    if timestamp is None:
        raise WebhookSignatureError(f"missing {TIMESTAMP_HEADER} header")
    if not (0 < len(timestamp) <= _TIMESTAMP_MAX_DIGITS and timestamp.isascii() and timestamp.isdigit()):
        raise WebhookSignatureError(f"{TIMESTAMP_HEADER} is not Unix seconds: {timestamp[:24]!r}")
    if type(now) not in (int, float) or not math.isfinite(now):
        raise LocalProtocolError(f"now must be a finite Unix time, got {now!r}")
    age_s = now - int(timestamp)
    if age_s > tolerance_s:
        raise WebhookSignatureError(
            f"{TIMESTAMP_HEADER} is stale: {age_s:.0f} s old (tolerance {tolerance_s:g} s)"
        )
    if age_s < -tolerance_s:
        raise WebhookSignatureError(
            f"{TIMESTAMP_HEADER} is in the future by {-age_s:.0f} s (tolerance {tolerance_s:g} s)"
        )
    signature = _b64decode_strict(signature_b64.strip())
    if signature is None:
        raise WebhookSignatureError(f"{SIGNATURE_HEADER} is not valid base64")
    if len(signature) != _SIGNATURE_BYTES:
        raise WebhookSignatureError(
            f"{SIGNATURE_HEADER} must be {_SIGNATURE_BYTES} bytes, got {len(signature)}"
        )
    try:
        key.verify(signature, timestamp.encode("ascii") + b"|" + bytes(body))
    except InvalidSignature:
        raise WebhookSignatureError(
            "signature does not match (body altered, or signed with another key)"
        ) from None


@attrs.frozen
class WebhookKeypair:
    """An emulator's signing key and the base64 raw public key our server is configured with."""

    private_key: Ed25519PrivateKey = attrs.field(repr=False)
    public_key_b64: str


def new_keypair() -> WebhookKeypair:
    """Generate an Ed25519 keypair (emulator start-up)."""
    private_key = Ed25519PrivateKey.generate()
    raw = private_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return WebhookKeypair(private_key, b64encode(raw))


def sign_webhook(private_key: Ed25519PrivateKey, body: bytes, timestamp: int | float) -> dict[str, str]:
    """The two headers Telnyx sends with ``body``, signed at Unix time ``timestamp`` (whole seconds).

    Raises:
        LocalProtocolError: not an Ed25519 private key, body not bytes, timestamp not a finite
            non-negative number.
    """
    if not isinstance(private_key, Ed25519PrivateKey):
        raise LocalProtocolError("sign_webhook needs an Ed25519PrivateKey")
    if not isinstance(body, (bytes, bytearray, memoryview)):
        raise LocalProtocolError(f"body must be bytes, not {type(body).__name__}")
    if type(timestamp) not in (int, float) or not math.isfinite(timestamp) or timestamp < 0:
        raise LocalProtocolError(f"timestamp must be finite Unix seconds, got {timestamp!r}")
    stamp = str(int(timestamp))
    signature = private_key.sign(stamp.encode("ascii") + b"|" + bytes(body))
    return {
        SIGNATURE_HEADER: b64encode(signature),
        TIMESTAMP_HEADER: stamp,
    }
