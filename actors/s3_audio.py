"""Reply audio on S3: a WAV uploaded with boto3, handed to Telnyx as a presigned GET URL.

Webhook mode's ``playback_start`` needs a URL Telnyx can fetch. :class:`S3AudioStore` uploads the
bytes (``put_object``) and presigns a GET for them, both in a worker thread — boto3 blocks — under
a ``trio.CapacityLimiter`` sized to botocore's connection pool (``max_pool_connections``), so
uploads never starve other thread work nor overflow urllib3's pool. Presigning is SigV4
(``s3v4``: boto3 still presigns SigV2 in some regions by default), path-style URLs when an
endpoint is given (``AWS_ENDPOINT_URL``: MinIO, moto, LocalStack).

One client per process, built once by the composition root (:meth:`S3AudioStore.from_settings`)
on the trio thread; low-level boto3 clients are thread-safe, sessions are not, so no default
session (global state) is touched. Credentials come from the standard AWS chain and are never
logged. A cancelled upload waits for its thread (``abandon_on_cancel=False``); the short
botocore timeouts below bound that wait.
"""

from __future__ import annotations

import io
import logging
import wave
from typing import Any, Final, Protocol

import attrs
import boto3
import botocore.config
import botocore.exceptions
import trio

from protocols.audio import Pcm16
from protocols.g711 import pcm16le_encode

log = logging.getLogger(__name__)

__all__ = [
    "S3_CONNECT_TIMEOUT_S",
    "S3_MAX_POOL_CONNECTIONS",
    "S3_READ_TIMEOUT_S",
    "AudioStore",
    "AudioStoreError",
    "S3AudioStore",
    "S3AudioStoreStatistics",
    "wav_file",
]

S3_MAX_POOL_CONNECTIONS: Final = 10  # botocore's default pool; the limiter matches it
S3_CONNECT_TIMEOUT_S: Final = 2.0
S3_READ_TIMEOUT_S: Final = 5.0
S3_MAX_ATTEMPTS: Final = 2  # one retry: a reply is worth little a few seconds late
WAV_CONTENT_TYPE: Final = "audio/wav"


class AudioStoreError(Exception):
    """The audio could not be stored or its URL made; the message is safe to log."""


class AudioStore(Protocol):
    """Where a reply's audio goes so that Telnyx can fetch it (S3, or a test double)."""

    async def publish(self, key: str, audio: bytes, *, content_type: str = WAV_CONTENT_TYPE
                      ) -> str:
        """Store ``audio`` under ``key``; returns a URL Telnyx can GET. Raises AudioStoreError."""
        ...


def wav_file(pcm: Pcm16, sample_rate_hz: int) -> bytes:
    """A mono 16-bit PCM WAV of ``pcm`` (what Telnyx's ``playback_start`` plays, ``audio_type=wav``)."""
    out = io.BytesIO()
    with wave.open(out, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(sample_rate_hz)
        wav.writeframes(pcm16le_encode(pcm))
    return out.getvalue()


@attrs.frozen
class S3AudioStoreStatistics:
    uploads: int
    failures: int
    bytes_uploaded: int


@attrs.define(eq=False)
class S3AudioStore:
    """Uploads reply audio to ``bucket`` under ``prefix`` and presigns a GET for ``expiry_s``.

    Args:
        client: a boto3 S3 client (thread-safe; shared by every call of the process).
        limiter: at most this many boto3 calls at once (= the client's ``max_pool_connections``).
    """

    client: Any = attrs.field(repr=False)
    bucket: str
    limiter: trio.CapacityLimiter
    prefix: str = ""
    expiry_s: int = 900
    _uploads: int = attrs.field(default=0, init=False)
    _failures: int = attrs.field(default=0, init=False)
    _bytes: int = attrs.field(default=0, init=False)

    @classmethod
    def from_settings(cls, *, bucket: str, region: str | None, endpoint_url: str | None,
                      prefix: str = "", expiry_s: int = 900,
                      max_pool_connections: int = S3_MAX_POOL_CONNECTIONS,
                      connect_timeout_s: float = S3_CONNECT_TIMEOUT_S,
                      read_timeout_s: float = S3_READ_TIMEOUT_S,
                      credentials: tuple[str, str] | None = None) -> S3AudioStore:
        """Build the client once (call on the trio thread, at start-up).

        ``credentials`` (key id, secret) are for tests; production leaves them to the standard
        AWS chain (environment, profile, instance role).
        """
        config = botocore.config.Config(
            signature_version="s3v4", max_pool_connections=max_pool_connections,
            connect_timeout=connect_timeout_s, read_timeout=read_timeout_s,
            retries={"max_attempts": S3_MAX_ATTEMPTS, "mode": "standard"},
            s3={"addressing_style": "path"} if endpoint_url else None)
        session = boto3.session.Session(region_name=region)
        keys: dict[str, str] = {}
        if credentials is not None:
            keys = {"aws_access_key_id": credentials[0], "aws_secret_access_key": credentials[1]}
        client = session.client("s3", endpoint_url=endpoint_url, config=config, **keys)
        return cls(client=client, bucket=bucket, limiter=trio.CapacityLimiter(max_pool_connections),
                   prefix=prefix, expiry_s=expiry_s)

    def statistics(self) -> S3AudioStoreStatistics:
        return S3AudioStoreStatistics(uploads=self._uploads, failures=self._failures,
                                      bytes_uploaded=self._bytes)

    async def publish(self, key: str, audio: bytes, *, content_type: str = WAV_CONTENT_TYPE
                      ) -> str:
        """``put_object`` then a presigned GET, in a worker thread under the limiter."""
        full_key = self.prefix + key
        try:
            url = await trio.to_thread.run_sync(self._put_and_presign, full_key, audio,
                                                content_type, limiter=self.limiter)
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
            self._failures += 1
            raise AudioStoreError(f"S3 upload of {full_key!r} failed: {_describe(exc)}") from None
        self._uploads += 1
        self._bytes += len(audio)
        return url

    def _put_and_presign(self, key: str, audio: bytes, content_type: str) -> str:
        self.client.put_object(Bucket=self.bucket, Key=key, Body=audio, ContentType=content_type)
        url: str = self.client.generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": key}, ExpiresIn=self.expiry_s)
        return url


def _describe(exc: Exception) -> str:
    """The error code or class, never a URL (presigned URLs carry credentials' signatures)."""
    if isinstance(exc, botocore.exceptions.ClientError):
        error = exc.response.get("Error", {})
        return f"{error.get('Code', 'ClientError')} ({exc.operation_name})"
    return type(exc).__name__
