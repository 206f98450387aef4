"""The relay's own /metrics (`relay --metrics-listen ADDR`), in Prometheus's text format.

What only the relay knows: events and batches published, how long a batch and a ledger publish take,
how long a commit took to be durably in the ledger, the newest source commit relayed, when the ledger
last acknowledged a batch, and whether the Debezium engine streams. `drledger watch --relay-metrics`
reads the last three.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from drledger.metrics_endpoint import MetricsEndpoint

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class RelayMetrics(MetricsEndpoint):
    server_name = "The relay"

    def __init__(self) -> None:
        super().__init__()
        r = self.registry
        self.events = Counter(
            "drledger_relay_events_published_total", "Outbox events the ledger acknowledged.", registry=r
        )
        self.batches = Counter("drledger_relay_batches_total", "Debezium batches handled.", registry=r)
        self.publish_failures = Counter(
            "drledger_relay_publish_failures_total",
            "Ledger writes that failed and were retried (the ledger unavailable).",
            registry=r,
        )
        self.batch_seconds = Histogram(
            "drledger_relay_batch_duration_seconds",
            "Time to handle one Debezium batch: decode its changes and publish them durably.",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.publish_seconds = Histogram(
            "drledger_relay_publish_duration_seconds",
            "Time the ledger took to durably acknowledge one batch, retries included.",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_events = Histogram(
            "drledger_relay_batch_events",
            "Outbox events per published batch.",
            buckets=(1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000),
            registry=r,
        )
        self.commit_to_ledger = Histogram(
            "drledger_relay_commit_to_ledger_seconds",
            "Per event: source commit to durable acknowledgement by the ledger (the time it was exposed).",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.last_commit = Gauge(
            "drledger_relay_last_commit_timestamp_seconds",
            "Source commit time of the newest event relayed.",
            registry=r,
        )
        self.last_publish = Gauge(
            "drledger_relay_last_publish_timestamp_seconds",
            "When the ledger last acknowledged a batch (wall clock).",
            registry=r,
        )
        self.held_changes = Gauge(
            "drledger_relay_held_changes",
            "Changes of a source transaction not yet ended, held so that it is published whole.",
            registry=r,
        )
        self.engine_up = Gauge(
            "drledger_relay_engine_up", "1 while the Debezium engine streams from the slot.", registry=r
        )

    def published(
        self, count: int, publish_s: float, lags_ms: list[int], last_commit_ms: int, acked_ms: int
    ) -> None:
        self.events.inc(count)
        self.publish_seconds.observe(publish_s)
        self.batch_events.observe(count)
        for lag in lags_ms:
            self.commit_to_ledger.observe(max(0, lag) / 1000)
        self.last_commit.set(last_commit_ms / 1000)
        self.last_publish.set(acked_ms / 1000)
