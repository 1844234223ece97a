"""openknn.core.search: the second candidate round and the float64 brute force give the same
exact answers as a first round that proves every row (each path forced in turn)."""

from __future__ import annotations

import faiss
import numpy as np
import pytest

from openknn.core import index as fi
from openknn.core import search

RNG = np.random.default_rng(11)


def exact(x: np.ndarray, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    d2 = ((q.astype(np.float64)[:, None, :] - x.astype(np.float64)[None]) ** 2).sum(-1)
    ids = np.argsort(d2, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(d2, ids, 1), ids


@pytest.mark.parametrize("path", ["first round", "second round", "brute force"])
def test_every_path_gives_the_exact_top_k(monkeypatch: pytest.MonkeyPatch, path: str) -> None:
    x = (RNG.standard_normal((2000, 9)) * 50 + 1e4).astype(np.float32)
    x[1000:1100] = x[:100]  # duplicates: ties broken by the smaller id
    center = fi.center_of(x, "L2")
    index = fi.build(x, 5, fi.IndexConfig(), center=center)
    q = fi.prepare(np.concatenate([x[:50], x[:50] + 0.5]), "L2", 9, center, exact=True)
    calls: list[int] = []
    proven = search.proven

    def forced(flat, queries, found, kth):  # type: ignore[no-untyped-def]
        calls.append(len(queries))
        if path == "first round":
            return proven(flat, queries, found, kth)
        if path == "second round":
            return np.full(len(queries), len(calls) > 1)
        return np.zeros(len(queries), bool)

    monkeypatch.setattr(search, "proven", forced)
    dist, ids = search.refined(index, q, 5, 1)
    want_d, want_ids = exact(x - center, q, 5)
    np.testing.assert_array_equal(ids, want_ids)
    np.testing.assert_allclose(dist, want_d, rtol=1e-12)
    assert len(calls) == (1 if path == "first round" else 2)


@pytest.mark.parametrize("metric", ["L2", "INNER_PRODUCT"])
def test_a_single_rows_proof_is_the_batch_proof(metric: str) -> None:
    """Issue 15: one row's proof is worked in Python floats (proven_one); it decides as
    the batch formula (proven) does, row by row, on faiss's own candidates and on values
    moved to either side of the bound (only ties with the bound itself, to the last bits,
    could differ, and there either answer is safe: the proof only decides whether more
    candidates are sought)."""
    x = (RNG.standard_normal((3000, 12)) * 20 + 300).astype(np.float32)
    center = fi.center_of(x, metric)
    index = fi.build(x, 5, fi.IndexConfig(metric=metric), center=center)
    q = fi.prepare(x[:200] + 0.25, metric, 12, center, exact=True)
    found, _ = fi.faiss_search(index, np.ascontiguousarray(q, np.float32), 13, 1)
    dist, _ = search.refined(index, q, 5, 1)
    kth = dist[:, -1]
    seen: set[bool] = set()
    for last in (found[:, -1], found[:, 4], found[:, -1] * 1.0001, found[:, 4] * 0.9999):
        batch = search.proven(index, q, last, kth)
        one = [search.proven_one(index, q[i], float(last[i]), float(kth[i]))
               for i in range(len(q))]
        assert one == batch.tolist()
        seen.update(one)
    assert seen == {True, False}  # both answers were reached


def test_a_single_row_that_is_not_proven_still_gets_the_exact_top_k(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The one-row proof refusing every round sends the row to the second round and then to
    the float64 brute force, and the answer is still the exact one."""
    x = (RNG.standard_normal((2000, 9)) * 50 + 1e4).astype(np.float32)
    x[1000:1100] = x[:100]
    center = fi.center_of(x, "L2")
    index = fi.build(x, 5, fi.IndexConfig(), center=center)
    q = fi.prepare(x[:20] + 0.5, "L2", 9, center, exact=True)
    calls: list[int] = []

    def refused(flat, query, found, kth):  # type: ignore[no-untyped-def]
        calls.append(query.shape[0])
        return False

    monkeypatch.setattr(search, "proven_one", refused)
    want_d, want_ids = exact(x - center, q, 5)
    for i in range(len(q)):
        dist, ids = search.refined(index, q[i:i + 1], 5, 1)
        np.testing.assert_array_equal(ids[0], want_ids[i])
        np.testing.assert_allclose(dist[0], want_d[i], rtol=1e-12)
    assert calls == [9] * (2 * len(q))  # both rounds asked, for every row


def test_distances_equal_in_float32_list_the_smaller_id_first_for_one_row_and_a_batch(
        ) -> None:
    """Id 1 is nearer in float64 by 2^-39, but both distances are 0.5 in float32: the
    answer lists id 0 first, for a single row (its own tie check) as in a batch."""
    index = faiss.IndexFlatL2(1)
    index.add(np.array([[1.0], [0.0]], np.float32))
    q = np.array([[0.5 - 2.0 ** -40]])
    one = search.search(index, q, 2, "L2")
    batch = search.search(index, np.repeat(q, 3, axis=0), 2, "L2")
    assert one[1].tolist() == [[0, 1]] and one[0].tolist() == [[0.5, 0.5]]
    assert batch[1].tolist() == [[0, 1]] * 3 and batch[0].tolist() == [[0.5, 0.5]] * 3


CASES = [(t, m) for t in ("faiss.Flat", "faiss.IVFFlat", "faiss.IVFPQ", "faiss.HNSW")
         for m in ("L2", "INNER_PRODUCT", "COSINE")]


@pytest.mark.parametrize(("index_type", "metric"), CASES)
def test_a_single_row_gets_what_it_gets_in_a_batch_bit_for_bit(index_type: str,
                                                                 metric: str) -> None:
    """Issue 15: a single query takes search_one (Python numbers for its k values) where it
    can; its distances and ids are those of the same row searched in a batch (the general
    path), bit for bit, with duplicate points (ties in float64 and float32), a shifted
    L2 model, a knob too small for some IVF rows (the general path's second search) and k
    above what HNSW's graph returns at a small efSearch."""
    rng = np.random.default_rng(sum(map(ord, index_type + metric)))
    x = (rng.standard_normal((1500, 8)) * 30 + 500).astype(np.float32)
    x[700:760] = x[:60]  # duplicates
    config = fi.IndexConfig(index_type=index_type, metric=metric, nlist=40,
                            pq_m=4 if index_type == "faiss.IVFPQ" else None)
    center = fi.center_of(x, metric)
    index = fi.build(x, 10, config, center=center)
    q = fi.prepare(np.concatenate([x[:40], x[:40] + 0.25, x[650:660]]), metric, 8, center,
                   exact=True)
    taken = 0
    for k, knob in ((10, 8), (10, 1), (40, 1)):
        batch_d, batch_i = search.search(index, q, k, metric, knob)
        for row in range(len(q)):
            one = search.search_one(index, q[row:row + 1], k, metric, knob)
            taken += one is not None
            d, i = search.search(index, q[row:row + 1], k, metric, knob)
            assert d.dtype == np.float32 and i.dtype == np.int64
            assert d.tobytes() == batch_d[row:row + 1].tobytes()
            np.testing.assert_array_equal(i, batch_i[row:row + 1])
    assert taken > len(q)  # the one-row path answered most rows
    if index_type in ("faiss.IVFFlat", "faiss.IVFPQ"):  # lists of ~37 points, k=40, nprobe=1
        assert taken < 3 * len(q)  # so some rows took the general path's second search


def test_a_single_row_whose_first_round_is_not_proven_takes_the_general_path(
        monkeypatch: pytest.MonkeyPatch) -> None:
    x = (RNG.standard_normal((2000, 9)) * 50 + 1e4).astype(np.float32)
    center = fi.center_of(x, "L2")
    index = fi.build(x, 5, fi.IndexConfig(), center=center)
    q = fi.prepare(x[:10] + 0.5, "L2", 9, center, exact=True)
    want = search.search(index, q, 5, "L2")
    monkeypatch.setattr(search, "bound_holds", lambda *args: False)  # proven_one's test too
    assert search.search_one(index, q[:1], 5, "L2", 1) is None
    for row in range(len(q)):
        d, i = search.search(index, q[row:row + 1], 5, "L2")
        assert d.tobytes() == want[0][row:row + 1].tobytes()
        np.testing.assert_array_equal(i, want[1][row:row + 1])


def test_a_single_row_takes_search_one_up_to_its_k(monkeypatch: pytest.MonkeyPatch) -> None:
    """Past ONE_ROW_MAX_K the Python numbers cost more than numpy's calls: the general path."""
    x = RNG.standard_normal((500, 6)).astype(np.float32)
    index = fi.build(x, 10, fi.IndexConfig())
    q = fi.prepare(x[:1] + 0.1, "L2", 6, None, exact=True)
    calls: list[int] = []
    one = search.search_one

    def counted(*args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(args[2])
        return one(*args, **kwargs)

    monkeypatch.setattr(search, "search_one", counted)
    small = search.search(index, q, search.ONE_ROW_MAX_K, "L2")
    big = search.search(index, q, search.ONE_ROW_MAX_K + 1, "L2")
    assert calls == [search.ONE_ROW_MAX_K]
    np.testing.assert_array_equal(big[1][:, :search.ONE_ROW_MAX_K], small[1])
