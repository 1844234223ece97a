"""openknn.core.search: the second candidate round and the float64 brute force give the same
exact answers as a first round that proves every row (each path forced in turn)."""

from __future__ import annotations

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
    """Issue 15: one row's proof is worked in Python floats; it decides as the numpy batch
    formula does, row by row, on faiss's own candidates and on values moved to either side of
    the bound (only ties with the bound itself, to the last bits, could differ, and there
    either answer is safe: the proof only decides whether more candidates are sought)."""
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
        one = [bool(search.proven(index, q[i:i + 1], last[i:i + 1], kth[i:i + 1])[0])
               for i in range(len(q))]
        assert one == batch.tolist()
        seen.update(one)
    assert seen == {True, False}  # both answers were reached
