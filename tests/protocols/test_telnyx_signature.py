"""protocols.telnyx_signature: Ed25519 webhook signatures, every failure with its own reason."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocols import telnyx_call_control as cc
from protocols.errors import LocalProtocolError, RemoteProtocolError
from protocols.telnyx_signature import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    WebhookSignatureError,
    load_public_key,
    new_keypair,
    sign_webhook,
    verify_webhook,
)

NOW = 1_700_000_000.0
BODY = (
    b'{"data":{"record_type":"event","event_type":"call.answered","id":"e1",'
    b'"payload":{"call_control_id":"c"}}}'
)
KEYS = new_keypair()
OTHER = new_keypair()


def _signed(body: bytes = BODY, at: float = NOW) -> dict[str, str]:
    return sign_webhook(KEYS.private_key, body, at)


def _reason(
    headers: dict[str, str], body: bytes = BODY, key: Any = KEYS.public_key_b64, now: float = NOW
) -> str:
    with pytest.raises(WebhookSignatureError) as info:
        verify_webhook(key, headers, body, now)
    assert isinstance(info.value, RemoteProtocolError)
    return info.value.reason


def test_valid_signature_passes() -> None:
    headers = _signed()
    assert set(headers) == {SIGNATURE_HEADER, TIMESTAMP_HEADER}
    assert headers[TIMESTAMP_HEADER] == "1700000000"
    assert len(base64.b64decode(headers[SIGNATURE_HEADER])) == 64
    verify_webhook(KEYS.public_key_b64, headers, BODY, NOW)
    verify_webhook(load_public_key(KEYS.public_key_b64), headers, BODY, NOW)  # preloaded key


def test_header_names_are_case_insensitive_and_bytes_values_work() -> None:
    headers = {name.title(): value for name, value in _signed().items()}
    verify_webhook(KEYS.public_key_b64, headers, BODY, NOW)
    as_bytes = {name.upper(): value.encode() for name, value in _signed().items()}
    verify_webhook(KEYS.public_key_b64, as_bytes, BODY, NOW)  # type: ignore[arg-type]


def test_tolerance_edges() -> None:
    verify_webhook(KEYS.public_key_b64, _signed(at=NOW - 300), BODY, NOW)
    verify_webhook(KEYS.public_key_b64, _signed(at=NOW + 300), BODY, NOW)
    verify_webhook(KEYS.public_key_b64, _signed(at=NOW - 301), BODY, NOW, tolerance_s=400)


def test_the_signed_message_is_timestamp_pipe_raw_body() -> None:
    private = Ed25519PrivateKey.generate()
    public_b64 = base64.b64encode(private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)).decode()
    signature = base64.b64encode(private.sign(b"1700000000|" + BODY)).decode()
    headers = {"telnyx-signature-ed25519": signature, "telnyx-timestamp": "1700000000"}
    verify_webhook(public_b64, headers, BODY, NOW)


def test_spki_der_key_is_accepted() -> None:
    private = Ed25519PrivateKey.generate()
    der = private.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    assert len(der) == 44
    headers = sign_webhook(private, BODY, NOW)
    verify_webhook(base64.b64encode(der).decode(), headers, BODY, NOW)


def _without(name: str) -> dict[str, str]:
    return {k: v for k, v in _signed().items() if k != name}


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _with(name: str, value: str) -> dict[str, str]:
    return {**_signed(), name: value}


FORGED = BODY.replace(b"call.answered", b"call.hangup")
FAILURES: list[tuple[str, dict[str, Any], str]] = [
    ("missing signature", dict(headers=_without(SIGNATURE_HEADER)), "missing telnyx-signature-ed25519"),
    ("missing timestamp", dict(headers=_without(TIMESTAMP_HEADER)), "missing telnyx-timestamp header"),
    ("bad base64 signature", dict(headers=_with(SIGNATURE_HEADER, "not base64!!")), "is not valid base64"),
    ("short signature", dict(headers=_with(SIGNATURE_HEADER, _b64(b"x" * 32))), "must be 64 bytes, got 32"),
    ("non-numeric timestamp", dict(headers=_with(TIMESTAMP_HEADER, "yesterday")), "is not Unix seconds"),
    ("fractional timestamp", dict(headers=_with(TIMESTAMP_HEADER, "1700000000.5")), "is not Unix seconds"),
    ("huge timestamp", dict(headers=_with(TIMESTAMP_HEADER, "9" * 400)), "is not Unix seconds"),
    ("stale", dict(headers=_signed(at=NOW - 301)), "is stale: 301 s old"),
    ("future", dict(headers=_signed(at=NOW + 301)), "is in the future by 301 s"),
    ("forged body", dict(headers=_signed(), body=FORGED), "signature does not match"),
    ("wrong key", dict(headers=_signed(), key=OTHER.public_key_b64), "signature does not match"),
    ("bad base64 key", dict(headers=_signed(), key="%%%"), "public key is not valid base64"),
    ("wrong key length", dict(headers=_signed(), key=_b64(b"k" * 31)), "must decode to 32 bytes"),
    ("44 bytes, not SPKI", dict(headers=_signed(), key=_b64(b"k" * 44)), "not an Ed25519 SPKI"),
    ("key not a string", dict(headers=_signed(), key=b"bytes"), "must be a base64 string"),
]


@pytest.mark.parametrize(("case", "change", "reason"), FAILURES, ids=[case for case, _, _ in FAILURES])
def test_failures_have_readable_reasons(case: str, change: dict[str, Any], reason: str) -> None:
    assert reason in _reason(**change)


def test_failure_reasons_are_distinct() -> None:
    # Forged body and wrong key cannot be told apart by design; everything else can.
    reasons = {_reason(**change) for _, change, _ in FAILURES}
    assert len(reasons) == len(FAILURES) - 1


def test_replayed_signature_for_another_timestamp_fails() -> None:
    headers = {**_signed(at=NOW - 10), TIMESTAMP_HEADER: str(int(NOW))}
    assert "does not match" in _reason(headers)


def test_misuse_is_local() -> None:
    with pytest.raises(LocalProtocolError):
        verify_webhook(KEYS.public_key_b64, _signed(), BODY.decode(), NOW)  # type: ignore[arg-type]
    with pytest.raises(LocalProtocolError):
        verify_webhook(KEYS.public_key_b64, _signed(), BODY, float("nan"))
    with pytest.raises(LocalProtocolError):
        sign_webhook(KEYS.public_key_b64, BODY, NOW)  # type: ignore[arg-type]
    with pytest.raises(LocalProtocolError):
        sign_webhook(KEYS.private_key, "text", NOW)  # type: ignore[arg-type]
    with pytest.raises(LocalProtocolError):
        sign_webhook(KEYS.private_key, BODY, -1)
    assert "private_key" not in repr(KEYS)  # never logged


def test_emulator_to_server_flow() -> None:
    payload = cc.CallDtmfReceived(call_control_id="c", digit="5")
    event = cc.WebhookEvent(id="e9", event_type="call.dtmf.received", payload=payload)
    body = cc.encode_webhook(event)
    headers = sign_webhook(KEYS.private_key, body, NOW)
    verify_webhook(KEYS.public_key_b64, headers, body, NOW + 5)
    assert cc.decode_webhook(body) == event


_header_values = st.text(max_size=120) | st.binary(max_size=90).map(lambda b: base64.b64encode(b).decode())


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow], max_examples=300)
@given(
    st.dictionaries(
        st.sampled_from([SIGNATURE_HEADER, TIMESTAMP_HEADER, "Telnyx-Timestamp", "x"]), _header_values
    ),
    st.binary(max_size=200),
    st.floats(0, 4e9),
    st.text(max_size=80) | st.binary(min_size=32, max_size=32).map(lambda b: base64.b64encode(b).decode()),
)
def test_garbage_only_raises_signature_errors(
    headers: dict[str, str], body: bytes, now: float, key: str
) -> None:
    for public_key in (key, KEYS.public_key_b64):
        try:
            verify_webhook(public_key, headers, body, now)
        except WebhookSignatureError:
            pass
