"""Prometheus metrics of the live service, in a registry of its own.

A registry per service (not the library's global one) so that tests and tools can run
several services in one process without colliding names.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

#: Latency buckets (seconds) fine enough to read a p99 of a few milliseconds.
_BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)


class ServiceMetrics:
    """Counters and histograms the service updates as it works."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.events = Counter("ebbtide_events", "Posted rows by outcome", ["outcome"], registry=r)
        self.rejected = Counter(
            "ebbtide_rejected_rows", "Refused rows by reason", ["reason"], registry=r
        )
        self.requests = Histogram(
            "ebbtide_request_seconds",
            "Request latency by route and status",
            ["route", "status"],
            buckets=_BUCKETS,
            registry=r,
        )
        self.commits = Histogram(
            "ebbtide_log_commit_seconds",
            "Time to write and fsync one group commit of the event log",
            buckets=_BUCKETS,
            registry=r,
        )
        self.committed_lines = Counter(
            "ebbtide_log_lines", "Lines made durable in the event log", registry=r
        )
        self.loads = Counter(
            "ebbtide_store_loaded_lines", "Log lines loaded into the store", registry=r
        )
        self.users = Gauge("ebbtide_live_users", "Users in the live state", registry=r)
        self.alerts = Counter("ebbtide_alerts", "Early-warning alerts raised", registry=r)

    def on_commit(self, lines: int, seconds: float) -> None:
        self.commits.observe(seconds)
        self.committed_lines.inc(lines)

    def render(self) -> bytes:
        return generate_latest(self.registry)
