"""The Telnyx API emulator's webhook delivery: signed POSTs, retries, shuffles, duplicates, faults."""

from __future__ import annotations

import random
import time

import attrs
import httpx
import trio

from bench.emulators.telnyx_api.records import (
    _LIFECYCLE,
    STALE_TIMESTAMP_AGE_S,
    Delivery,
    EmulatedCall,
    SignatureFault,
)
from protocols.telnyx_call_control import WebhookEvent, WebhookMeta, encode_webhook
from protocols.telnyx_signature import SIGNATURE_HEADER, WebhookKeypair, sign_webhook


class WebhookSender:
    """Mixin of :class:`~bench.emulators.telnyx_api.TelnyxApiEmulator`: delivers a call's events."""

    # Set by the emulator (attrs fields there).
    duplicate_webhooks: bool
    shuffle: bool
    shuffle_window_s: float
    bad_signature_next: int
    stale_timestamp_next: int
    missing_signature_next: int
    webhook_attempts: int
    webhook_backoff_s: float
    keypair: WebhookKeypair
    deliveries: list[Delivery]
    _client: httpx.AsyncClient | None
    _rng: random.Random

    async def _deliver_all(self, call: EmulatedCall, inbox: trio.MemoryReceiveChannel[WebhookEvent]) -> None:
        async with inbox:
            async for event in inbox:
                batch = [event]
                if self.shuffle:
                    await trio.sleep(self.shuffle_window_s)
                    while True:
                        try:
                            batch.append(inbox.receive_nowait())
                        except (trio.WouldBlock, trio.EndOfChannel):
                            break
                    batch = self._shuffled(batch)
                for item in batch:
                    await self._deliver(call, item)
                    if self.duplicate_webhooks:
                        await self._deliver(call, item, duplicate=True)

    def _shuffled(self, batch: list[WebhookEvent]) -> list[WebhookEvent]:
        if batch and batch[0].event_type == "call.initiated":
            return batch[:1] + self._shuffled(batch[1:])
        if len(batch) < 2 or all(e.event_type in _LIFECYCLE for e in batch):
            return batch
        order = list(range(len(batch)))
        self._rng.shuffle(order)
        if order == sorted(order):
            order = order[1:] + order[:1]  # a shuffle that changes nothing proves nothing
        shuffled = [batch[i] for i in order]
        # Lifecycle events take the slots lifecycle events landed in, in their original order.
        lifecycle = iter([e for e in batch if e.event_type in _LIFECYCLE])
        return [next(lifecycle) if e.event_type in _LIFECYCLE else e for e in shuffled]

    def _signature_headers(self, body: bytes) -> tuple[dict[str, str], SignatureFault | None]:
        now = time.time()
        key = self.keypair.private_key
        if self.bad_signature_next > 0:
            self.bad_signature_next -= 1
            headers = sign_webhook(key, body, now)
            headers[SIGNATURE_HEADER] = sign_webhook(key, b"tampered" + body, now)[SIGNATURE_HEADER]
            return headers, "bad_signature"
        if self.stale_timestamp_next > 0:
            self.stale_timestamp_next -= 1
            return sign_webhook(key, body, now - STALE_TIMESTAMP_AGE_S), "stale_timestamp"
        if self.missing_signature_next > 0:
            self.missing_signature_next -= 1
            headers = sign_webhook(key, body, now)
            del headers[SIGNATURE_HEADER]
            return headers, "missing_signature"
        return sign_webhook(key, body, now), None

    async def _deliver(self, call: EmulatedCall, event: WebhookEvent, *, duplicate: bool = False) -> None:
        assert self._client is not None
        for attempt in range(1, self.webhook_attempts + 1):
            url = call.webhook_url
            status: int | None = None
            error: str | None = None
            fault: SignatureFault | None = None
            if url is None:
                error = "no webhook_url (dial, answer or emulator)"
            else:
                meta = WebhookMeta(attempt=attempt, delivered_to=url)
                body = encode_webhook(attrs.evolve(event, meta=meta))
                headers, fault = self._signature_headers(body)
                try:
                    response = await self._client.post(
                        url, content=body, headers={"content-type": "application/json", **headers}
                    )
                    status = response.status_code
                except httpx.HTTPError as exc:
                    error = f"{type(exc).__name__}: {exc}"
            delivery = Delivery(
                at=trio.current_time(), call_control_id=call.call_control_id, event_id=event.id,
                event_type=event.event_type, url=url, attempt=attempt, status=status, error=error,
                fault=fault, duplicate=duplicate,
            )  # fmt: skip
            self.deliveries.append(delivery)
            call.deliveries.append(delivery)
            call._touch()  # noqa: SLF001
            if delivery.ok or url is None:
                return
            if attempt < self.webhook_attempts:
                await trio.sleep(self.webhook_backoff_s * attempt)

