"""openknn bench's measurements (bench/measure.py) on tiny real faiss models: the vote by k,
recall@10, the request batches and bodies, the Content-Type knob, latency summaries, raw
faiss timings and ids, and the measuring steps wired to an in-process stand-in for the
endpoint (httpx's MockTransport over openknn's own request path): no server, no network."""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from openknn.bench import measure
from openknn.bench.config import BenchConfig, Covtype, Fashion, ModelSpec, Trained
from openknn.bench.measure import Latency, Pass
from openknn.core import hyperparameters
from openknn.errors import AlgorithmError
from openknn.formats.csv import parse_csv
from openknn.formats.json import encode_json
from openknn.jobs import training
from openknn.serving.inference import invoke

RNG = np.random.default_rng(11)
CENTRES = RNG.standard_normal((6, 5)).astype(np.float32) * 3
X = (CENTRES[RNG.integers(0, 6, 500)] + RNG.standard_normal((500, 5))).astype(np.float32)
Y = RNG.integers(0, 4, 500).astype(np.float32)
Q = (CENTRES[RNG.integers(0, 6, 40)] + RNG.standard_normal((40, 5))).astype(np.float32)
QY = RNG.integers(0, 4, 40).astype(np.float32)


def build(index_type: str, labels: np.ndarray = Y, k: int = 10, **extra: str) -> Trained:
    hp = hyperparameters.parse({"feature_dim": "5", "k": str(k), "sample_size": "500",
                                "predictor_type": "classifier", "index_type": index_type,
                                **extra})
    model = training.build_model(X, labels, hp)
    return Trained(ModelSpec(index_type.split(".")[1].lower(), index_type, 500, extra), model,
                   Path("unused.tar.gz"), 0.01, 1000)


@pytest.fixture(scope="module")
def flat() -> Trained:
    return build("faiss.Flat")


@pytest.fixture(scope="module")
def ivf() -> Trained:
    return build("faiss.IVFFlat", _faiss_index_nprobe="1")


@pytest.fixture(scope="module")
def hnsw() -> Trained:
    return build("faiss.HNSW")


def exact_ids(base: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """Brute force in float64 with numpy: the independent answer."""
    d = ((queries[:, None, :].astype(np.float64) - base[None, :, :]) ** 2).sum(-1)
    return np.argsort(d, axis=1, kind="stable")[:, :k]


# ---------------------------------------------------------------- accuracy and recall


def slow_vote(row: np.ndarray) -> float:
    counts = Counter(row.tolist())
    best = max(counts.values())
    return min(label for label, n in counts.items() if n == best)


def test_accuracy_by_k_is_the_vote_over_the_first_k_labels() -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, (200, 12)).astype(np.float32)  # many ties among 3 classes
    truth = rng.integers(0, 3, 200).astype(np.float32)
    got = measure.accuracy_by_k(labels, truth, 12)
    want = [np.mean([slow_vote(row[:k]) == t for row, t in zip(labels, truth)])
            for k in range(1, 13)]
    assert len(got) == 12 and all(type(a) is float for a in got)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)
    assert got[0] == np.mean(labels[:, 0] == truth)


def test_accuracy_by_k_matches_scikit_learns_classifier() -> None:
    from sklearn.neighbors import KNeighborsClassifier

    ids = KNeighborsClassifier(n_neighbors=1, algorithm="brute").fit(X, Y).kneighbors(
        Q, n_neighbors=7, return_distance=False)
    got = measure.accuracy_by_k(Y[ids], QY, 7)
    for k in range(1, 8):
        clf = KNeighborsClassifier(n_neighbors=k, algorithm="brute").fit(X, Y)
        assert got[k - 1] == np.mean(clf.predict(Q) == QY), k


def test_recall_at_counts_true_neighbours_in_the_first_k() -> None:
    truth = np.array([[1, 2, 3, 4], [5, 6, 7, 8]])
    found = np.array([[4, 3, 9, 9], [8, -1, 5, 6]])
    assert measure.recall_at(found, truth, 2) == pytest.approx((0 + 0) / 2)  # 1,2 / 5,6
    assert measure.recall_at(found, truth, 3) == pytest.approx((1 / 3 + 1 / 3) / 2)
    assert measure.recall_at(found, truth, 4) == pytest.approx((2 / 4 + 3 / 4) / 2)
    assert measure.recall_at(truth, truth) == 1.0  # RECALL_AT beyond the width: all of it
    assert measure.recall_at(-np.ones_like(truth), -np.ones_like(truth)) == 0.0  # -1: none


# ---------------------------------------------------------------- batches and bodies


def test_chunks_cover_the_rows_in_order() -> None:
    x = np.arange(23 * 2).reshape(23, 2)
    parts = measure.chunks(x, 5)
    assert [len(p) for p in parts] == [5, 5, 5, 5, 3]
    np.testing.assert_array_equal(np.vstack(parts), x)
    assert [len(p) for p in measure.chunks(x, 23)] == [23]
    assert measure.chunks(x[:0], 4) == []


def test_cycled_wraps_around_the_pool() -> None:
    pool = np.arange(7)[:, None] * np.ones((1, 3))
    batches = measure.cycled(pool, 3, 4)
    assert len(batches) == 4 and all(b.shape == (3, 3) for b in batches)
    assert [b[:, 0].tolist() for b in batches] == [[0, 1, 2], [3, 4, 5], [6, 0, 1],
                                                   [2, 3, 4]]
    singles = measure.cycled(pool, 1, 9)
    assert [int(b[0, 0]) for b in singles] == [0, 1, 2, 3, 4, 5, 6, 0, 1]


def test_csv_bodies_read_back_to_the_rows() -> None:
    bodies = measure.csv_bodies(Q, 16)
    assert len(bodies) == 3
    parts = [parse_csv(b, feature_dim=5)[0] for b in bodies]
    assert [len(p) for p in parts] == [16, 16, 8]
    np.testing.assert_array_equal(np.vstack(parts), Q)  # shortest float32 text, bit-exact


def test_content_type_carries_the_knob_only_where_there_is_one(
        flat: Trained, ivf: Trained, hnsw: Trained) -> None:
    assert measure.content_type(flat.model, 7) == "text/csv"
    assert measure.content_type(flat.model, None) == "text/csv"
    assert measure.content_type(ivf.model, None) == "text/csv"
    assert measure.content_type(ivf.model, 7) == "text/csv; nprobe=7"
    assert measure.content_type(hnsw.model, 40) == "text/csv; ef_search=40"


def test_curve_values_stay_within_the_index_and_keep_its_own_knob(
        flat: Trained, ivf: Trained, hnsw: Trained) -> None:
    cfg = BenchConfig(nprobe_curve=(1, 2, 4, 8, 16, 10_000), ef_curve=(16, 64))
    nlist = int(ivf.model.index.nlist)
    assert measure.curve_values(ivf.model, cfg) == sorted(
        {v for v in (1, 2, 4, 8, 16) if v <= nlist} | {ivf.model.meta.nprobe})
    assert max(measure.curve_values(ivf.model, cfg)) <= nlist
    own = hnsw.model.meta.nprobe
    assert measure.curve_values(hnsw.model, cfg) == sorted({16, 64, own})
    assert measure.curve_values(flat.model, cfg) == []


# ---------------------------------------------------------------- latency


def test_latency_summarises_batches_and_single_rows() -> None:
    batch = np.array([10.0, 20.0, 30.0])
    single = np.arange(1, 101, dtype=float)  # 1..100 ms
    lat = Latency.of(batch, single, 581)
    assert lat.batch_ms == 20.0 and lat.mean_ms == 50.5 and lat.batch_rows == 581
    assert lat.p90_ms == pytest.approx(float(np.quantile(single, 0.9)))  # linear: 90.1
    assert lat.p99_ms == pytest.approx(99.01)
    assert lat.qps == pytest.approx(581 / 0.020)
    assert all(type(v) is float for v in (lat.batch_ms, lat.mean_ms, lat.p90_ms, lat.p99_ms))


def test_raw_ms_times_each_batch(flat: Trained, ivf: Trained) -> None:
    for t in (flat, ivf):
        times = measure.raw_ms(t.model, measure.chunks(Q, 8), 10)
        assert times.shape == (5,) and np.all(np.isfinite(times)) and np.all(times >= 0)
        assert times.max() < 5_000  # milliseconds, not seconds or microseconds
    assert measure.raw_ms(flat.model, measure.cycled(Q, 1, 3), 10).shape == (3,)


def test_raw_ids_of_flat_are_the_exact_neighbours(flat: Trained) -> None:
    ids, seconds = measure.raw_ids(flat.model, Q, 10, flat.model.meta.nprobe, 16)
    assert ids.shape == (40, 10) and seconds > 0
    np.testing.assert_array_equal(ids, exact_ids(X, Q, 10))
    # the batch size does not change an answer, and the model's labels are those ids'
    for rows in (1, 7, 40):
        np.testing.assert_array_equal(measure.raw_ids(flat.model, Q, 10, 5, rows)[0], ids)
    np.testing.assert_array_equal(flat.model.neighbors(Q)[1], Y[ids])


def test_raw_ids_follow_the_knob(ivf: Trained) -> None:
    nlist = int(ivf.model.index.nlist)
    assert nlist > 1
    every, _ = measure.raw_ids(ivf.model, Q, 10, nlist, 16)  # every list: exact
    np.testing.assert_array_equal(every, exact_ids(X, Q, 10))
    one, _ = measure.raw_ids(ivf.model, Q, 10, 1, 16)
    assert measure.recall_at(one, every) < 1.0  # one list of several misses some


def test_raw_timings_take_another_index(flat: Trained) -> None:
    """The GPU rows pass the GPU copy as ``index``; any index of the same points will do."""
    import faiss

    other = faiss.IndexFlatL2(flat.model.index.d)
    other.add(flat.model.index.reconstruct_n(0, flat.model.index.ntotal)[::-1].copy())
    ids, _ = measure.raw_ids(flat.model, Q, 10, 1, 16, index=other)
    np.testing.assert_array_equal(ids, 499 - exact_ids(X, Q, 10))
    assert measure.raw_ms(flat.model, [Q], 10, index=other).shape == (1,)


def test_gpu_rows_say_why_there_are_none(hnsw: Trained, flat: Trained,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(measure.gpus, "visible", lambda: 0)
    assert measure.gpu_index(flat.model) == measure.NO_GPU
    assert measure.gpu_latency(flat.model, [Q], [Q[:1]], 10) == measure.NO_GPU
    cfg = BenchConfig()
    assert measure.gpu_endpoint(flat, [Q], [Q[:1]], cfg, Path("unused")) == measure.NO_GPU
    monkeypatch.setattr(measure.gpus, "visible", lambda: 1)
    assert measure.gpu_index(hnsw.model) == "faiss has no GPU faiss.HNSW index"
    assert measure.gpu_endpoint(hnsw, [Q], [Q[:1]], cfg, Path("unused")) == \
        "faiss has no GPU faiss.HNSW index"


def test_fashion_pass_is_recall_rate_and_vote_accuracy() -> None:
    base_labels = np.array([0, 1, 1, 2], np.float32)
    data = Fashion("x", np.zeros((4, 2), np.float32), base_labels, np.zeros((2, 2), np.float32),
                   np.array([1, 2], np.float32), np.array([[1, 2], [3, 0]]))
    ids = np.array([[1, 2, 0], [3, -1, 2]], np.float32)  # float labels from the endpoint
    p = measure.fashion_pass(ids, 0.5, data, 2)
    # recall over RECALL_AT: {1, 2} of {1, 2}; {3} of {3, 0} (-1 found nothing)
    assert p.recall == pytest.approx((1 + 0.5) / 2)
    assert p.qps == 4.0  # 2 queries in half a second
    # vote of the first 2 labels: [1, 1] -> 1 (right); [2, label of id -1 clipped to 0] ->
    # the tie 0 / 2 goes to 0 (wrong)
    assert p.accuracy == 0.5


# ---------------------------------------------------------------- HTTP, in process


def test_post_returns_the_body_and_refuses_other_statuses() -> None:
    seen = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append((request.url.path, request.headers["content-type"],
                     request.headers["accept"], request.content))
        if request.content == b"bad":
            return httpx.Response(415, text="unsupported " + "x" * 1000)
        return httpx.Response(200, content=b"ok")

    with httpx.Client(transport=httpx.MockTransport(handler), base_url="http://t") as client:
        body, seconds = measure.post(client, b"1,2\n", "text/csv", "application/json")
        assert body == b"ok" and 0 <= seconds < 5
        with pytest.raises(AlgorithmError, match=r"^the endpoint answered HTTP 415: "
                                                  r"unsupported x+$") as err:
            measure.post(client, b"bad", "text/csv", "application/json")
        assert len(str(err.value)) < 340  # the body is cut
    assert seen[0] == ("/invocations", "text/csv", "application/json", b"1,2\n")


@contextlib.contextmanager
def in_process(t: Trained, calls: list[tuple[str, str]]) -> Iterator[httpx.Client]:
    """What ``measure.endpoint`` yields, answered by openknn's own request path."""
    def handler(request: httpx.Request) -> httpx.Response:
        ctype, accept = request.headers["content-type"], request.headers["accept"]
        calls.append((ctype, accept))
        body, response = invoke(t.model, request.content, ctype, accept)
        return httpx.Response(200, content=body)

    with httpx.Client(transport=httpx.MockTransport(handler), base_url="http://t") as client:
        yield client


def test_endpoint_labels_and_ms_warm_up_once(flat: Trained) -> None:
    calls: list[tuple[str, str]] = []
    with in_process(flat, calls) as client:
        labels, seconds = measure.endpoint_labels(client, measure.csv_bodies(Q, 16),
                                                  "text/csv")
        assert len(calls) == 1 + 3 and seconds > 0
        assert {a for _, a in calls} == {measure.VERBOSE_JSON}
        np.testing.assert_array_equal(labels, flat.model.neighbors(Q)[1])
        calls.clear()
        ms = measure.endpoint_ms(client, measure.cycled(Q, 1, 4))
        assert ms.shape == (4,) and len(calls) == 1 + 4
        assert {a for _, a in calls} == {measure.PLAIN_JSON}


def covtype_data() -> Covtype:
    return Covtype("test rows", X, Y, Q[:30], QY[:30], Q)


def small_cfg() -> BenchConfig:
    return BenchConfig(threads=1, covtype_k=10, max_k=6, batch_rows=8, batch_requests=3,
                       single_requests=5, sklearn_batches=2, sklearn_single=3, fashion_k=10,
                       nprobe_curve=(1, 2, 1000), ef_curve=(8, 32))


def test_covtype_baseline_is_scikit_learn_on_the_flat_sample(flat: Trained) -> None:
    from sklearn.neighbors import KNeighborsClassifier

    data, cfg = covtype_data(), small_cfg()
    base = measure.covtype_baseline(flat, data, cfg)
    assert base.points == 500 and base.data_bytes == X.nbytes
    assert base.name == "scikit-learn brute (flat sample)"
    np.testing.assert_array_equal(base.labels, Y)
    assert base.ids.shape == (30, max(cfg.max_k, measure.RECALL_AT))
    np.testing.assert_array_equal(base.ids, exact_ids(X, data.test_x, 10))
    for k in (1, 3, 6):
        clf = KNeighborsClassifier(n_neighbors=k, algorithm="brute").fit(X, Y)
        assert base.accuracy[k - 1] == np.mean(clf.predict(data.test_x) == data.test_y)
    assert base.latency.batch_rows == 8 and base.latency.batch_ms > 0 and base.fit_s >= 0


def test_the_baseline_searches_the_points_as_trained_where_the_model_shifts_them() -> None:
    """covtype's integer columns in the thousands: the model stores its points shifted by the
    L2 center, and scikit-learn must see them (and the test rows) as given."""
    x_off, q_off = np.round(X * 100) + 3000, np.round(Q * 100) + 3000
    hp = hyperparameters.parse({"feature_dim": "5", "k": "10", "sample_size": "500",
                                "predictor_type": "classifier"})
    model = training.build_model(x_off, Y, hp)
    assert model.center is not None and np.all(model.center != 0)
    flat = Trained(ModelSpec("flat", "faiss.Flat", 500), model, Path("unused"), 0.01, 1000)
    np.testing.assert_array_equal(measure.sampled_points(model), x_off)
    data, cfg = Covtype("offset rows", x_off, Y, q_off[:30], QY[:30], q_off), small_cfg()
    base = measure.covtype_baseline(flat, data, cfg)
    # integer rows tie: scikit-learn may order equal distances either way, so compare them
    dist = np.linalg.norm(x_off[base.ids] - data.test_x[:, None, :], axis=2)
    exact = np.linalg.norm(x_off[exact_ids(x_off, data.test_x, 10)] - data.test_x[:, None, :],
                           axis=2)
    np.testing.assert_array_equal(dist, exact)


class NoServer:
    """``measure.endpoint`` replaced: each model file named answers in process."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []
        self.models: dict[Path, Trained] = {}

    def add(self, t: Trained, tar: str) -> Trained:
        t = Trained(t.spec, t.model, Path(tar), t.train_s, t.index_bytes)
        self.models[t.tar] = t
        return t

    def endpoint(self, tar: Path, threads: int, log_path: Path,
                 gpu: int = 0) -> contextlib.AbstractContextManager[httpx.Client]:
        assert gpu == 0 and threads == 1
        return in_process(self.models[tar], self.calls)


@pytest.fixture
def no_server(monkeypatch: pytest.MonkeyPatch) -> NoServer:
    server = NoServer()
    monkeypatch.setattr(measure, "endpoint", server.endpoint)
    monkeypatch.setattr(measure.gpus, "visible", lambda: 0)
    return server


def test_measure_covtype_wires_endpoint_raw_faiss_and_recall(
        flat: Trained, ivf: Trained, no_server: NoServer) -> None:
    data, cfg = covtype_data(), small_cfg()
    base = measure.covtype_baseline(flat, data, cfg)
    res = measure.measure_covtype(no_server.add(flat, "flat.tar.gz"), data, base, cfg,
                                  Path("unused"))
    assert res.agrees and res.recall == 1.0  # exact, the same sample as the baseline
    assert res.accuracy == base.accuracy  # endpoint votes = scikit-learn's predictions
    assert res.gpu == res.gpu_endpoint == measure.NO_GPU
    assert res.endpoint.batch_rows == res.raw.batch_rows == 8
    # warm-up + 4 evaluated bodies of 8 rows (30 rows), then warm-up + batches, + singles
    assert len(no_server.calls) == (1 + 4) + (1 + 3) + (1 + 5)
    other = no_server.add(ivf, "ivf.tar.gz")
    shuffled = measure.Baseline(base.name, base.points, base.labels[::-1], base.ids,
                                base.accuracy, base.latency, base.fit_s, base.data_bytes)
    assert measure.measure_covtype(other, data, shuffled, cfg, Path("u")).recall is None


def test_measure_fashion_walks_the_knob_curve(no_server: NoServer) -> None:
    ids = np.arange(500, dtype=np.float32)  # labelled by row id, as the bench trains them
    t = no_server.add(build("faiss.IVFFlat", labels=ids, _faiss_index_nprobe="1"),
                      "fashion-ivf.tar.gz")
    truth = exact_ids(X, Q, measure.RECALL_AT)
    data = Fashion("f", X, Y, Q, QY, truth)
    cfg = small_cfg()
    res = measure.measure_fashion(t, data, cfg, Path("unused"))
    nlist = int(t.model.index.nlist)
    assert res.knob == "nprobe" and res.gpu == measure.NO_GPU
    assert [p.value for p in res.curve] == [1, 2]  # 1000 is beyond nlist
    assert nlist < 1000
    # through the endpoint the knob travels in the Content-Type; the same value in raw faiss
    for p in res.curve:
        assert p.endpoint.recall == p.raw.recall and p.endpoint.accuracy == p.raw.accuracy
    # at its own nprobe (1), with no override, the same answers as the curve's first point
    assert res.endpoint.recall == res.raw.recall == res.curve[0].raw.recall
    assert res.curve[1].raw.recall >= res.curve[0].raw.recall
    exact, _ = measure.raw_ids(t.model, Q, 10, nlist, 16)
    assert measure.recall_at(exact, truth) == 1.0  # the truth is the exact answer
    assert ("text/csv; nprobe=2", measure.VERBOSE_JSON) in no_server.calls
    assert ("text/csv", measure.VERBOSE_JSON) in no_server.calls  # its own knob
    for p in (res.endpoint, res.raw):
        assert isinstance(p, Pass) and 0 < p.recall <= 1 and p.qps > 0


def test_fashion_baseline_is_exact() -> None:
    truth = exact_ids(X, Q, measure.RECALL_AT)
    data = Fashion("f", X, Y, Q, QY, truth)
    b = measure.fashion_baseline(data, small_cfg())
    assert b.pass_.recall == 1.0 and b.pass_.qps > 0 and b.data_bytes == X.nbytes
    from sklearn.neighbors import KNeighborsClassifier

    clf = KNeighborsClassifier(n_neighbors=10, algorithm="brute").fit(X, Y)
    assert b.pass_.accuracy == np.mean(clf.predict(Q) == QY)


def test_encode_json_is_what_endpoint_labels_reads() -> None:
    """The verbose response shape the bench parses (labels column) is the codec's own."""
    body = encode_json(np.array([1, 2], np.float32), None,
                       np.array([[1, 2, 2], [3, 3, 1]], np.float32))
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return httpx.Response(200, content=body)

    with httpx.Client(transport=httpx.MockTransport(handler), base_url="http://t") as client:
        labels, _ = measure.endpoint_labels(client, [b"a", b"b"], "text/csv")
    assert labels.tolist() == [[1, 2, 2], [3, 3, 1]] * 2 and len(calls) == 3
