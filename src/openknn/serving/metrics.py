"""The endpoint's Prometheus metrics: requests and errors by status, rows, latency, batches,
and clients that went away before their request was read.

Counted in plain Python numbers and turned into metric families only when ``/metrics`` is
read: prometheus_client's ``Counter.labels().inc()`` and ``Histogram.observe()`` take a lock
and a label lookup each, about 12 us of a single-row request's 0.3 ms (py-spy, issue 15),
where these cost well under a microsecond. Every count is made on the event loop (the app
and the micro-batcher run there), so no lock is needed. The text is prometheus_client's own
(``generate_latest``), the same names, samples and ``_created`` times as its classes give.
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Iterator, Sequence

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.utils import floatToGoString

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)
BATCH_BUCKETS = tuple(float(2**i) for i in range(13))
CONTENT_TYPE = CONTENT_TYPE_LATEST


class Buckets:
    """A histogram's counts: one per upper bound (a value lands in the first bound at least
    as large, Prometheus's ``le``), one past the last, and the sum."""

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)
        self.sum = 0.0
        self.created = time.time()

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sum += value

    def family(self, name: str, documentation: str) -> HistogramMetricFamily:
        cumulative, buckets = 0, []
        for bound, count in zip((*self.bounds, float("inf")), self.counts):
            cumulative += count
            buckets.append((floatToGoString(bound), float(cumulative)))  # type: ignore[no-untyped-call]
        family = HistogramMetricFamily(name, documentation)
        family.add_metric([], buckets, self.sum)
        family.add_sample(f"{name}_created", {}, self.created)
        return family


class Count:
    """A counter, by label value (``""``: none), with when each label was first counted."""

    def __init__(self) -> None:
        self.values: dict[str, float] = {}
        self.created: dict[str, float] = {}

    def inc(self, label: str = "", amount: float = 1) -> None:
        if label not in self.values:
            self.values[label] = 0
            self.created[label] = time.time()
        self.values[label] += amount

    def family(self, name: str, documentation: str,
               label: str | None = None) -> CounterMetricFamily:
        family = CounterMetricFamily(name, documentation, labels=[label] if label else None)
        for value in self.values:  # first counted first, as prometheus_client lists them
            family.add_metric([value] if label else [], float(self.values[value]),
                              created=self.created[value])
        return family


class EndpointMetrics:
    """One registry per app, so tests and several apps in a process never share counters."""

    def __init__(self) -> None:
        self.requests, self.errors = Count(), Count()
        self.rows, self.disconnects = Count(), Count()
        self.rows.inc(amount=0)  # unlabelled counters show from the start, as before
        self.disconnects.inc(amount=0)
        self.latency = Buckets(LATENCY_BUCKETS)
        self.batch_rows = Buckets(BATCH_BUCKETS)
        self.registry = CollectorRegistry()
        self.registry.register(self)  # a collector: it has collect()

    def observe(self, status: int, rows: int, seconds: float) -> None:
        label = str(status)
        self.requests.inc(label)
        if status >= 400:
            self.errors.inc(label)
        self.rows.inc(amount=rows)
        self.latency.observe(seconds)

    def disconnected(self) -> None:
        self.disconnects.inc()

    def collect(self) -> Iterator[Metric]:
        """The metric families, for the registry (prometheus_client's collector protocol)."""
        yield self.requests.family("openknn_requests", "Invocations by HTTP status", "status")
        yield self.errors.family("openknn_errors", "Failed invocations by HTTP status",
                                 "status")
        yield self.rows.family("openknn_rows", "Rows answered")
        yield self.latency.family("openknn_request_latency_seconds",
                                  "Invocation latency inside the server")
        yield self.batch_rows.family("openknn_batch_rows", "Rows per faiss search (micro-batch)")
        yield self.disconnects.family(
            "openknn_client_disconnects", "Invocations whose client disconnected before its "
            "body was read (not errors: nobody is left to answer)")

    def render(self) -> bytes:
        return bytes(generate_latest(self.registry))
