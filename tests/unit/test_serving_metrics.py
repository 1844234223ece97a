"""The endpoint's metrics text is what prometheus_client's own Counter and Histogram give for
the same observations (issue 15 counts in plain numbers; the oracle is the library's classes),
and the console's parser reads it."""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from openknn.serving.metrics import BATCH_BUCKETS, LATENCY_BUCKETS, EndpointMetrics

STATUSES = st.sampled_from([200, 400, 406, 413, 415, 500, 503])
REQUEST = st.tuples(STATUSES, st.integers(0, 5000), st.floats(0, 10, allow_nan=False))


def library_text(requests: list[tuple[int, int, float]], batches: list[int],
                 disconnects: int) -> str:
    """The same observations through prometheus_client's classes (what openknn used before)."""
    r = CollectorRegistry()
    count = Counter("openknn_requests", "Invocations by HTTP status", ["status"], registry=r)
    errors = Counter("openknn_errors", "Failed invocations by HTTP status", ["status"],
                     registry=r)
    rows = Counter("openknn_rows", "Rows answered", registry=r)
    latency = Histogram("openknn_request_latency_seconds", "Invocation latency inside the "
                        "server", buckets=LATENCY_BUCKETS, registry=r)
    batch = Histogram("openknn_batch_rows", "Rows per faiss search (micro-batch)",
                      buckets=BATCH_BUCKETS, registry=r)
    gone = Counter("openknn_client_disconnects", "Invocations whose client disconnected "
                   "before its body was read (not errors: nobody is left to answer)",
                   registry=r)
    for status, n, seconds in requests:
        count.labels(status=str(status)).inc()
        if status >= 400:
            errors.labels(status=str(status)).inc()
        rows.inc(n)
        latency.observe(seconds)
    for n in batches:
        batch.observe(n)
    for _ in range(disconnects):
        gone.inc()
    return generate_latest(r).decode()


def without_times(text: str) -> str:
    """The text with each ``_created`` sample's value (a wall-clock time) blanked."""
    return re.sub(r"(_created(\{[^}]*\})?) \S+", r"\1 T", text)


@settings(max_examples=50, deadline=None)
@given(st.lists(REQUEST, max_size=30), st.lists(st.integers(1, 8192), max_size=10),
       st.integers(0, 3))
def test_the_text_is_prometheus_clients_own(requests: list[tuple[int, int, float]],
                                            batches: list[int], disconnects: int) -> None:
    m = EndpointMetrics()
    for status, n, seconds in requests:
        m.observe(status, n, seconds)
    for n in batches:
        m.batch_rows.observe(n)
    for _ in range(disconnects):
        m.disconnected()
    assert without_times(m.render().decode()) == without_times(
        library_text(requests, batches, disconnects))


def test_a_value_on_a_bound_is_in_that_bucket() -> None:
    m = EndpointMetrics()
    m.observe(200, 1, 0.001)
    text = m.render().decode()
    assert 'openknn_request_latency_seconds_bucket{le="0.0005"} 0.0' in text
    assert 'openknn_request_latency_seconds_bucket{le="0.001"} 1.0' in text
