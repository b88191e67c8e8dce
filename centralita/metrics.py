"""Prometheus exposition for ``GET /metrics``, built on prometheus-client with a per-app registry.

No global registry: each app owns a :class:`CollectorRegistry`, so tests and several apps in one
process never see each other's numbers. Hub figures are read at scrape time by a collector, so the
hot paths only bump plain integers.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import Collector

from actors.messages import TurnLatency
from centralita.asgi import Handler, Receive, Scope, Send, respond
from centralita.relay_hub import RelayHub


class RelayCollector(Collector):
    def __init__(self, hub: RelayHub) -> None:
        self._hub = hub

    def collect(self) -> Iterator[Metric]:
        s = self._hub.statistics()
        yield GaugeMetricFamily("centralita_relay_rooms", "Calls with at least one subscriber.",
                                value=s.rooms)
        yield GaugeMetricFamily("centralita_relay_subscribers", "Open subscriber sockets.",
                                value=s.subscribers)
        yield GaugeMetricFamily("centralita_relay_backlog_calls",
                                "Calls whose event backlog is held.", value=s.backlog_calls)
        yield CounterMetricFamily("centralita_relay_events", "Events published.",
                                  value=s.events_total)
        yield CounterMetricFamily("centralita_relay_slow_subscribers_closed",
                                  "Subscribers closed with 1013 for falling behind.",
                                  value=s.slow_subscribers_closed_total)


#: Voice-to-voice budget buckets: tens of ms (our own work) up to seconds (the LLM on a bad day).
LATENCY_BUCKETS_S = (0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)


class TurnLatencyMetrics:
    """``centralita_turn_latency_seconds{stage=…}``: each stage's time after the caller's end of
    speech (the waterfall's origin), one observation per answered turn."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._histogram = Histogram(
            "centralita_turn_latency_seconds",
            "Seconds from the caller's end of speech to each stage of the bot's reply.",
            ["stage"], registry=registry, buckets=LATENCY_BUCKETS_S)

    def observe(self, latency: TurnLatency) -> None:
        stages = dict(latency.stages)
        origin = stages.get("end_of_speech")
        if origin is None:
            return
        for stage, at in stages.items():
            if stage != "end_of_speech":
                self._histogram.labels(stage=stage).observe(max(0.0, at - origin))


def new_registry(hub: RelayHub) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=True)
    registry.register(RelayCollector(hub))
    return registry


def metrics_route(registry: CollectorRegistry) -> Handler:
    async def metrics(scope: Scope, receive: Receive, send: Send) -> None:
        await respond(send, 200, generate_latest(registry), CONTENT_TYPE_LATEST.encode())

    return metrics
