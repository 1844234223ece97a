"""The endpoint's Prometheus metrics: requests and errors by status, rows, latency, batches,
and clients that went away before their request was read."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)
BATCH_BUCKETS = tuple(float(2**i) for i in range(13))
CONTENT_TYPE = CONTENT_TYPE_LATEST


class EndpointMetrics:
    """One registry per app, so tests and several apps in a process never share counters."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("openknn_requests", "Invocations by HTTP status", ["status"],
                                registry=self.registry)
        self.errors = Counter("openknn_errors", "Failed invocations by HTTP status",
                              ["status"], registry=self.registry)
        self.rows = Counter("openknn_rows", "Rows answered", registry=self.registry)
        self.latency = Histogram("openknn_request_latency_seconds",
                                 "Invocation latency inside the server",
                                 buckets=LATENCY_BUCKETS, registry=self.registry)
        self.batch_rows = Histogram("openknn_batch_rows", "Rows per faiss search (micro-batch)",
                                    buckets=BATCH_BUCKETS, registry=self.registry)
        self.disconnects = Counter("openknn_client_disconnects",
                                   "Invocations whose client disconnected before its body was "
                                   "read (not errors: nobody is left to answer)",
                                   registry=self.registry)

    def observe(self, status: int, rows: int, seconds: float) -> None:
        self.requests.labels(status=str(status)).inc()
        if status >= 400:
            self.errors.labels(status=str(status)).inc()
        self.rows.inc(rows)
        self.latency.observe(seconds)

    def disconnected(self) -> None:
        self.disconnects.inc()

    def render(self) -> bytes:
        return bytes(generate_latest(self.registry))
