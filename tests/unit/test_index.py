"""faiss indexes: exactness against NumPy brute force, decision 1 distances, PQ padding,
IVF edge cases and the too-few-points errors."""

from __future__ import annotations

import numpy as np
import pytest

from openknn.core import index as fi
from openknn.core.search import search as knn_search
from openknn.errors import TrainingError

RNG = np.random.default_rng(0)
BASE = RNG.standard_normal((2000, 12)).astype(np.float32)
QUERIES = RNG.standard_normal((50, 12)).astype(np.float32)


def brute(base: np.ndarray, q: np.ndarray, k: int, metric: str) -> tuple[np.ndarray, np.ndarray]:
    b, qq = base.astype(np.float64), q.astype(np.float64)
    if metric == "COSINE":
        b = b / np.linalg.norm(b, axis=1, keepdims=True)
        qq = qq / np.linalg.norm(qq, axis=1, keepdims=True)
    if metric == "L2":
        d = np.sqrt(((qq[:, None, :] - b[None]) ** 2).sum(-1))
        ids = np.argsort(d, axis=1, kind="stable")[:, :k]
    else:
        d = qq @ b.T
        ids = np.argsort(-d, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(d, ids, 1), ids


def build_search(metric: str, index_type: str = "faiss.Flat", k: int = 10, **kw: object,
                 ) -> tuple[np.ndarray, np.ndarray]:
    config = fi.IndexConfig(index_type=index_type, metric=metric, **kw)  # type: ignore[arg-type]
    index = fi.build(BASE, k, config)
    q = fi.prepare(QUERIES, metric, fi.index_dim(12, config))
    return knn_search(index, q, k, metric, config.nprobe)


@pytest.mark.parametrize("metric", ["L2", "INNER_PRODUCT", "COSINE"])
def test_flat_equals_brute_force_with_decision_1_distances(metric: str) -> None:
    dist, ids = build_search(metric)
    ref_d, ref_ids = brute(BASE, QUERIES, 10, metric)
    np.testing.assert_array_equal(ids, ref_ids)
    np.testing.assert_allclose(dist, ref_d, rtol=1e-4, atol=1e-4)
    step = np.diff(dist, axis=1)
    assert (step >= 0).all() if metric == "L2" else (step <= 0).all()


def test_equal_distances_are_ordered_by_id() -> None:
    base = np.zeros((6, 2), np.float32)
    base[[1, 4]] = 1.0  # ids 0,2,3,5 at distance 0 from the origin; 1,4 at sqrt(2)
    index = fi.build(base, 6, fi.IndexConfig())
    dist, ids = knn_search(index, np.zeros((1, 2), np.float32), 6, "L2")
    assert ids.tolist() == [[0, 2, 3, 5, 1, 4]]
    np.testing.assert_allclose(dist[0], [0, 0, 0, 0, np.sqrt(2), np.sqrt(2)], rtol=1e-6)


@pytest.mark.parametrize("metric", ["L2", "INNER_PRODUCT", "COSINE"])
@pytest.mark.parametrize("index_type", ["faiss.IVFFlat", "faiss.IVFPQ"])
def test_ivf_types_all_metrics_recall(metric: str, index_type: str) -> None:
    extra = {"pq_m": 4} if index_type == "faiss.IVFPQ" else {}
    _, ids = build_search(metric, index_type, nlist=8, nprobe=8, **extra)
    _, ref = brute(BASE, QUERIES, 10, metric)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(ids.tolist(), ref.tolist())])
    assert recall >= (0.99 if index_type == "faiss.IVFFlat" else 0.4)


def test_ivf_never_returns_minus_one() -> None:
    # 64 lists over 300 points: nprobe=1 often probes a list with fewer than k points.
    base = RNG.standard_normal((300, 4)).astype(np.float32)
    index = fi.build(base, 20, fi.IndexConfig("faiss.IVFFlat", nlist=64, nprobe=1))
    _, ids = knn_search(index, RNG.standard_normal((100, 4)).astype(np.float32), 20, "L2", 1)
    assert (ids >= 0).all()


def test_k_is_capped_at_points_in_index() -> None:
    index = fi.build(BASE[:5], 5, fi.IndexConfig())
    dist, ids = knn_search(index, QUERIES[:2], 50, "L2")
    assert ids.shape == (2, 5) and (ids >= 0).all()


def test_pq_padding_54_to_56_and_default_m() -> None:
    config = fi.IndexConfig("faiss.IVFPQ", pq_m=8)
    assert fi.index_dim(54, config) == 56
    assert fi.default_pq_m(54) == 12 and fi.index_dim(54, fi.IndexConfig("faiss.IVFPQ")) == 60
    assert fi.default_pq_m(3) == 1 and fi.default_pq_m(784) == 96
    x = RNG.standard_normal((400, 54)).astype(np.float32)
    index = fi.build(x, 5, fi.IndexConfig("faiss.IVFPQ", nlist=4, pq_m=8))
    assert index.d == 56 and index.pq.M == 8
    padded = fi.prepare(x[:3], "L2", 56)
    assert padded.shape == (3, 56) and not padded[:, 54:].any()


@pytest.mark.parametrize("rows", [1, 3, 500])
def test_the_shift_is_the_float64_difference_whatever_the_rows(rows: int) -> None:
    """``prepare``'s L2 shift (decision 23), done in place against a (1, d) row: for one row
    and for many, exactly float64(x) - center, and its float32 rounding where not exact;
    the caller's array is left as it was."""
    x = (RNG.standard_normal((rows, 12)) * 1000).astype(np.float32)
    before = x.copy()
    center = RNG.standard_normal(12) * 300
    want = x.astype(np.float64) - center
    got = fi.prepare(x, "L2", 12, center, exact=True)
    assert got.dtype == np.float64 and np.array_equal(got, want)
    assert np.array_equal(fi.prepare(x, "L2", 12, center), want.astype(np.float32))
    padded = fi.prepare(x, "L2", 14, center, exact=True)
    assert np.array_equal(padded[:, :12], want) and not padded[:, 12:].any()
    assert np.array_equal(x, before)
    with pytest.raises(ValueError, match="center has 12 values for 11-wide rows"):
        fi.prepare(x[:, :11], "L2", 12, center)


def test_nlist_auto_rounds_sqrt() -> None:
    assert fi.resolve_nlist("auto", 200000) == 447
    assert fi.resolve_nlist("auto", 1) == 1 and fi.resolve_nlist(7, 100) == 7


@pytest.mark.parametrize(
    ("n", "config", "pattern"),
    [
        (5, fi.IndexConfig(), r"k=10 exceeds the 5 points sampled"),
        (50, fi.IndexConfig("faiss.IVFFlat", nlist=100),
         r"faiss.IVFFlat with faiss_index_ivf_nlists=100 needs at least 100 points to train, "
         r"but only 50 were sampled"),
        (200, fi.IndexConfig("faiss.IVFPQ", nlist=4, pq_m=4),
         r"faiss.IVFPQ needs at least 256 points to train its 8-bit codebooks, but only 200"),
    ],
)
def test_too_few_points(n: int, config: fi.IndexConfig, pattern: str) -> None:
    with pytest.raises(TrainingError, match=pattern):
        fi.build(BASE[:n], 10, config)


def test_ivf_build_is_deterministic_and_serialises() -> None:
    config = fi.IndexConfig("faiss.IVFPQ", nlist=16, pq_m=4)
    a, b = fi.build(BASE, 5, config), fi.build(BASE, 5, config)
    assert fi.serialize(a) == fi.serialize(b)
    c = fi.deserialize(fi.serialize(a))
    q = fi.prepare(QUERIES, "L2", 12)
    np.testing.assert_array_equal(knn_search(a, q, 5, "L2")[1], knn_search(c, q, 5, "L2")[1])


@pytest.mark.parametrize(("scale", "offset"), [(1.0, 0.0), (1.0, 1e4), (1000.0, 0.0),
                                               (0.01, -3e5), (1e6, 123.25)])
def test_center_shifts_every_stored_value_exactly(scale: float, offset: float) -> None:
    """The L2 shift is about the mean and loses nothing: x - center is exact in float32,
    so distances between shifted vectors are those between the vectors."""
    x = (RNG.standard_normal((3000, 7)) * scale + offset).astype(np.float32)
    x[:, 3] = np.round(x[:, 3])  # an integer column
    center = fi.center_of(x, "L2")
    assert center is not None and center.shape == (7,)
    shifted = x.astype(np.float64) - center
    np.testing.assert_array_equal(shifted.astype(np.float32), shifted)
    if offset and abs(offset) > 10 * scale:  # a column far from 0 is shifted near its mean
        assert (np.abs(center - x.mean(axis=0, dtype=np.float64)) < 4 * scale).all()
    assert fi.center_of(x, "INNER_PRODUCT") is None and fi.center_of(x, "COSINE") is None
