"""Prometheus exposition of turn latencies: stage times measured from the end of speech."""

from __future__ import annotations

from prometheus_client import generate_latest

from actors.messages import TurnLatency
from centralita.metrics import TurnLatencyMetrics, new_registry
from centralita.relay_hub import RelayHub


def test_turn_latency_histogram_is_relative_to_end_of_speech() -> None:
    registry = new_registry(RelayHub())
    metrics = TurnLatencyMetrics(registry)
    metrics.observe(TurnLatency("t-1", (("end_of_speech", 10.0), ("stt_final", 10.3),
                                        ("first_frame_sent", 10.8))))
    metrics.observe(TurnLatency("greeting", (("first_frame_sent", 0.1),)))  # no origin: skipped
    text = generate_latest(registry).decode()
    assert 'centralita_turn_latency_seconds_count{stage="stt_final"} 1.0' in text
    assert 'centralita_turn_latency_seconds_bucket{le="0.5",stage="stt_final"} 1.0' in text
    assert 'centralita_turn_latency_seconds_bucket{le="0.75",stage="first_frame_sent"} 0.0' in text
    assert 'centralita_turn_latency_seconds_bucket{le="1.0",stage="first_frame_sent"} 1.0' in text
    assert 'stage="end_of_speech"' not in text
