"""An endpoint's live figures from its workers' own counters: each worker's ``/metrics``
(Prometheus text, ``serving.metrics``) is read, the workers are summed into a sample, and
two samples make a point of the chart: requests, rows and errors per second, and latency p50
and p99 over the window between them (from the histogram's bucket counts, as Prometheus's
``histogram_quantile`` estimates them). Pure functions and a small history; the scraping is
the console app's.

Why here and not in the workers: the counters are cumulative and per worker, and a point needs
the difference of two readings of every worker, which only something that reads them all, at
its own times, can take."""

from __future__ import annotations

import collections
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families

REQUESTS = "openknn_requests"
ERRORS = "openknn_errors"
ROWS = "openknn_rows"
LATENCY = "openknn_request_latency_seconds"
HISTORY = 90  # points kept per endpoint (3 minutes at the page's 2 s)
MIN_GAP_S = 0.9  # pages polling together share a reading rather than make points of noise


@dataclass(frozen=True)
class Sample:
    """One reading of an endpoint's workers, summed: counters since each worker started and
    the latency histogram's cumulative bucket counts ((upper bound, count), +Inf last)."""

    time: float
    requests: float = 0.0
    errors: float = 0.0
    rows: float = 0.0
    buckets: tuple[tuple[float, float], ...] = ()
    workers: int = 0


@dataclass(frozen=True)
class Point:
    """The figures over the window that ends at ``time``. p50 / p99 are None without requests
    in the window."""

    time: float
    requests_per_s: float
    rows_per_s: float
    errors_per_s: float
    p50_ms: float | None
    p99_ms: float | None


def parse(text: str, at: float) -> Sample:
    """One worker's ``/metrics`` text as a sample."""
    requests = errors = rows = 0.0
    buckets: dict[float, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if family.name == REQUESTS and s.name == REQUESTS + "_total":
                requests += s.value
            elif family.name == ERRORS and s.name == ERRORS + "_total":
                errors += s.value
            elif family.name == ROWS and s.name == ROWS + "_total":
                rows += s.value
            elif family.name == LATENCY and s.name == LATENCY + "_bucket":
                bound = float(s.labels["le"])
                buckets[bound] = buckets.get(bound, 0.0) + s.value
    return Sample(at, requests, errors, rows, tuple(sorted(buckets.items())), 1)


def combine(samples: Sequence[Sample], at: float) -> Sample:
    """The endpoint's sample: its workers' summed (bucket bounds are the same in every
    worker, the histogram of ``serving.metrics``)."""
    buckets: dict[float, float] = {}
    for s in samples:
        for bound, count in s.buckets:
            buckets[bound] = buckets.get(bound, 0.0) + count
    return Sample(at, sum(s.requests for s in samples), sum(s.errors for s in samples),
                  sum(s.rows for s in samples), tuple(sorted(buckets.items())),
                  sum(s.workers for s in samples))


def quantile(q: float, buckets: Sequence[tuple[float, float]]) -> float | None:
    """The ``q`` quantile (0..1) of a cumulative histogram, interpolated linearly within its
    bucket as Prometheus does; in the bucket's units. None for an empty histogram; the
    largest finite bound where the quantile falls in +Inf."""
    if not buckets or buckets[-1][1] <= 0:
        return None
    rank = q * buckets[-1][1]
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if math.isinf(bound):
                return lower_bound
            if count == lower_count:
                return bound
            return lower_bound + (bound - lower_bound) * (rank - lower_count) / (
                count - lower_count)
        lower_bound, lower_count = bound, count
    return lower_bound  # pragma: no cover - the last bucket holds every count


def point(before: Sample, after: Sample) -> Point:
    """The figures between two samples of one endpoint. A counter that went down (a worker
    restarted, or one was replaced by an update) starts the window from zero."""
    gap = max(after.time - before.time, 1e-9)
    reset = after.requests < before.requests or after.rows < before.rows
    base = Sample(before.time) if reset else before
    window = [(bound, count - dict(base.buckets).get(bound, 0.0))
              for bound, count in after.buckets]
    p50, p99 = quantile(0.5, window), quantile(0.99, window)
    return Point(after.time, (after.requests - base.requests) / gap,
                 (after.rows - base.rows) / gap, (after.errors - base.errors) / gap,
                 None if p50 is None else p50 * 1000, None if p99 is None else p99 * 1000)


@dataclass
class History:
    """The latest samples of one endpoint, oldest first, and the points between them."""

    samples: collections.deque[Sample] = field(
        default_factory=lambda: collections.deque(maxlen=HISTORY + 1))

    def due(self, now: float) -> bool:
        """Whether a new reading is worth taking at ``now``."""
        return not self.samples or now - self.samples[-1].time >= MIN_GAP_S

    def add(self, sample: Sample) -> None:
        self.samples.append(sample)

    def points(self) -> list[Point]:
        pairs = zip(list(self.samples), list(self.samples)[1:])
        return [point(a, b) for a, b in pairs]


def summary(history: History) -> dict[str, object]:
    """What the endpoint page's metrics panel shows: the totals since the workers started, the
    latest point, and the chart's series."""
    points = history.points()
    last = history.samples[-1] if history.samples else Sample(0.0)
    totals = {"requests": last.requests, "rows": last.rows, "errors": last.errors,
              "workers": last.workers, "p50_ms": _ms(quantile(0.5, last.buckets)),
              "p99_ms": _ms(quantile(0.99, last.buckets))}
    return {"totals": totals, "latest": _point_json(points[-1]) if points else None,
            "series": [_point_json(p) for p in points]}


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1000


def _point_json(p: Point) -> dict[str, float | None]:
    return {"time": p.time, "requests_per_s": p.requests_per_s, "rows_per_s": p.rows_per_s,
            "errors_per_s": p.errors_per_s, "p50_ms": p.p50_ms, "p99_ms": p.p99_ms}

