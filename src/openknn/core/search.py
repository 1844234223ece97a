"""The k nearest neighbours of prepared queries, with exact distances: faiss finds candidates
in float32, openknn recomputes each candidate's distance from the stored vectors, and for
exact (Flat) indexes proves that no other point is nearer — or finds the rows it cannot prove
by float64 brute force.

Why: faiss's fast path for a batch computes ``‖x‖² + ‖y‖² − 2x·y`` in float32, which cancels
when norms are large beside the distances between points (columns in the thousands beside
fractions): it reorders neighbours and misstates distances (26 % on a real data set), and
because faiss picks that path by batch size, the same query could get a different answer
inside a bigger batch. Recomputing from the vectors is exact to float32 rounding and depends
on the query and the point alone, so an answer never depends on the rest of its batch.
"""

from __future__ import annotations

import array
import math
import weakref
from typing import Any

import faiss
import numpy as np

from .index import DIRECT_MAP, faiss_search, raw_search

UNIT_ROUNDOFF = 2.0 ** -24  # float32
FLAT_EXTRA_CANDIDATES = 8  # beyond k: room for the proof to succeed in faiss's first round
BRUTE_FORCE_CHUNK = 1 << 22  # float64 distances held at once by the fallback (32 MiB)
# search_one works a row's k values in Python, which beats numpy's calls on so few but costs
# more per value: in one process, warm, an IVFFlat row took 47 against 52 us at k=10, 56 and
# 57 at k=32, 89 against 77 at k=100 (3,000 x 54; inside the server numpy's calls cost more).
ONE_ROW_MAX_K = 32
RERANK_CHUNK = 1 << 20  # vector coordinates gathered at once for re-ranking (8 MiB float64)
_norms: weakref.WeakKeyDictionary[Any, tuple[int, float]] = weakref.WeakKeyDictionary()
# an index's stored vectors as a view, with the count it was made at (a single-row search
# spends as long in faiss's wrappers making the view as in re-ranking its candidates)
_views: weakref.WeakKeyDictionary[Any, tuple[int, np.ndarray]] = weakref.WeakKeyDictionary()


def is_l2(index: Any) -> bool:
    return int(index.metric_type) == int(faiss.METRIC_L2)


def flat_storage(index: Any) -> Any:
    """The ``IndexFlat`` holding an index's vectors as given: the index itself (Flat) or an
    HNSW index's storage; None for IVF indexes (their vectors sit in inverted lists)."""
    if isinstance(index, faiss.IndexFlat):
        return index
    if isinstance(index, faiss.IndexHNSW):
        return faiss.downcast_index(index.storage)
    return None


def stored(flat: Any) -> np.ndarray:
    """A Flat index's vectors as a read-only (ntotal, d) float32 view (no copy)."""
    n, d = int(flat.ntotal), int(flat.d)
    view = faiss.rev_swig_ptr(flat.get_xb(), n * d).reshape(n, d)
    view.flags.writeable = False
    return view


def vectors_of(index: Any, ids: np.ndarray, n: int | None = None) -> np.ndarray:
    """The stored vectors of ``ids`` (any shape) as float32, shape ``ids.shape + (d,)``. IVF
    indexes get a direct map on first use (for IVFPQ these are the decoded vectors: the
    points as the index holds them). A hash table, since a shard's ids are not 0..n-1.
    ``n``: the index's ntotal, where the caller has read it."""
    if isinstance(index, faiss.IndexIVF):
        flat_ids = ids.ravel()
        try:  # asked, not checked first: reading direct_map.type costs about 1 us
            out: np.ndarray = index.reconstruct_batch(flat_ids)  # (ids.size, d)
        except RuntimeError:  # faiss: "direct map not initialized"
            index.set_direct_map_type(DIRECT_MAP.Hashtable)
            out = index.reconstruct_batch(flat_ids)
        return out.reshape(*ids.shape, out.shape[1])
    cached = _views.get(index)
    if cached is None or cached[0] != (int(index.ntotal) if n is None else n):
        flat = flat_storage(index)
        if flat is None:
            raise TypeError(f"no stored vectors to re-rank with in a {type(index).__name__}")
        view = stored(flat)
        cached = _views[index] = (view.shape[0], view)
    picked: np.ndarray = cached[1][ids]
    return picked


def distances(queries: np.ndarray, vectors: np.ndarray, l2: bool) -> np.ndarray:
    """Squared L2 distance or inner product of each query with its rows of ``vectors``
    (n, c, d), accumulated in float64, without the cancellation of the expanded form. With
    float64 queries (``prepare(..., exact=True)``) the differences are exact too; with
    float32 ones (models without a shift) each rounds once, to float32. For L2, ``np.vecdot``
    (a dot product along the last axis, row by row, whatever the batch) costs as much as
    ``einsum`` on big batches and a third of it on a single row's candidates; for inner
    products of float32 vectors with float64 queries it costs more than ``einsum``."""
    if l2:
        diff = vectors - queries[:, None, :]
        out: np.ndarray = np.vecdot(diff, diff, dtype=np.float64)
    else:
        out = np.einsum("ncd,nd->nc", vectors, queries, dtype=np.float64)
    return out


def top_k(dist: np.ndarray, ids: np.ndarray, k: int, l2: bool,
          ) -> tuple[np.ndarray, np.ndarray]:
    """The best ``k`` columns of each row, nearest first, equal distances by smaller id."""
    if dist.shape[0] == 1:  # a single row: one-dimensional indexing, no row numbers
        order = np.lexsort((ids[0], dist[0] if l2 else -dist[0]))[:k]
        return dist[:, order], ids[:, order]
    order = np.lexsort((ids, dist if l2 else -dist), axis=1)[:, :k]
    rows = np.arange(dist.shape[0])[:, None]  # what take_along_axis does, for less set-up
    return dist[rows, order], ids[rows, order]


def max_norm(flat: Any, n: int | None = None) -> float:
    """The largest vector norm in a Flat index (cached per index and size; ``n``: its
    ntotal, where the caller has read it)."""
    n = int(flat.ntotal) if n is None else n
    cached = _norms.get(flat)
    if cached is None or cached[0] != n:
        x = stored(flat)
        norms = np.einsum("nd,nd->n", x, x, dtype=np.float64) if n else np.zeros(1)
        cached = (n, float(np.sqrt(norms.max())))
        _norms[flat] = cached
    return cached[1]


def proven(flat: Any, queries: np.ndarray, found: np.ndarray, kth: np.ndarray) -> np.ndarray:
    """Rows whose exact k-th distance ``kth`` beats every point faiss did not return.

    ``found`` is faiss's own (float32) value of its last candidate. Any other point scored
    no better in faiss, and faiss's value of a pair is off by at most
    ``(d + 8) u (‖q‖ + R)²`` for L2 (``(d + 4) u ‖q‖ R`` for an inner product), ``u`` the
    float32 unit roundoff and ``R`` the largest stored norm: the standard bound for a
    dot product of length ``d``, plus the norms', the sum's and the query's own rounding to
    float32, covering both of faiss's paths. Beyond it, a missed point is strictly worse.
    """
    d = queries.shape[1]  # the index's width, without a faiss read
    r = max_norm(flat)
    q = np.sqrt(np.einsum("nd,nd->n", queries, queries, dtype=np.float64))
    slack = 4 * UNIT_ROUNDOFF * np.abs(kth)  # the recomputed distance's own rounding
    if is_l2(flat):
        bound = 1.01 * (d + 8) * UNIT_ROUNDOFF * (q + r) ** 2
        result: np.ndarray = found.astype(np.float64) - bound > kth + slack
        return result
    bound = 1.01 * (d + 4) * UNIT_ROUNDOFF * q * r
    result = found.astype(np.float64) + bound < kth - slack
    return result


def proven_one(flat: Any, query: np.ndarray, found: float, kth: float) -> bool:
    """``proven`` for one query (a 1-D row), in Python floats: after a Flat scan each numpy
    call on a tiny array costs microseconds (the scan has evicted its code from the caches).
    Rounding may differ from ``proven``'s in the last bits, which is safe: a proof only
    decides whether more candidates are sought; the answer is the exact one either way."""
    return bound_holds(is_l2(flat), query, max_norm(flat), found, kth)


def bound_holds(l2: bool, query: np.ndarray, r: float, found: float, kth: float) -> bool:
    """``proven_one``'s test, given the metric and the largest stored norm ``r``."""
    d, q = query.shape[0], math.sqrt(float(np.dot(query, query)))
    slack = 4 * UNIT_ROUNDOFF * abs(kth)
    if l2:
        return bool(found - 1.01 * (d + 8) * UNIT_ROUNDOFF * (q + r) ** 2 > kth + slack)
    return bool(found + 1.01 * (d + 4) * UNIT_ROUNDOFF * q * r < kth - slack)


def unproven(flat: Any, queries: np.ndarray, found: np.ndarray, kth: np.ndarray,
             ) -> np.ndarray | None:
    """The rows ``proven`` does not prove, or None when it proves them all."""
    if queries.shape[0] == 1:
        one = proven_one(flat, queries[0], float(found[0]), float(kth[0]))
        return None if one else np.ones(1, bool)
    unsure = ~proven(flat, queries, found, kth)
    return unsure if unsure.any() else None


def brute_force(flat: Any, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-``k`` over every stored vector: float64 products in chunks of the database
    pick ``k`` + 8 candidates per row, whose distances are then recomputed directly."""
    x, l2 = stored(flat), is_l2(flat)
    n, m = x.shape[0], queries.shape[0]
    keep = min(n, k + FLAT_EXTRA_CANDIDATES)
    q64 = queries.astype(np.float64)
    qn = np.einsum("nd,nd->n", q64, q64)[:, None]
    best_d = np.empty((m, 0))
    best_i = np.empty((m, 0), dtype=np.int64)
    step = max(1, BRUTE_FORCE_CHUNK // max(1, m))
    for a in range(0, n, step):
        y = x[a:a + step].astype(np.float64)
        score = q64 @ y.T
        if l2:
            score = qn + np.einsum("nd,nd->n", y, y)[None, :] - 2 * score
        else:
            score = -score
        ids = np.broadcast_to(np.arange(a, a + y.shape[0]), score.shape)
        best_d = np.concatenate([best_d, score], axis=1)
        best_i = np.concatenate([best_i, ids], axis=1)
        if best_d.shape[1] > keep:
            part = np.argpartition(best_d, keep - 1, axis=1)[:, :keep]
            best_d = np.take_along_axis(best_d, part, 1)
            best_i = np.take_along_axis(best_i, part, 1)
    return top_k(exact_distances(flat, queries, best_i, l2), best_i, k, l2)


def candidate_rounds(index: Any, k: int, n: int | None = None) -> tuple[int, ...]:
    """How many candidates to ask faiss for, round by round: on an exact index ``k`` + 8
    (faiss's selection costs grow with the count on small indexes), then ``4k`` + 32 for the
    rows the first round could not prove; ``k`` itself on approximate indexes (their recall
    is what it is; their distances get exact)."""
    if not isinstance(index, faiss.IndexFlat):  # flat_storage(index) is not index
        return (k,)
    n = int(index.ntotal) if n is None else n
    return tuple(sorted({min(n, k + FLAT_EXTRA_CANDIDATES), min(n, 4 * k + 32)}))


def _round(index: Any, finder: Any, queries: np.ndarray, want: int, k: int, nprobe: int,
           complete: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """faiss's ``want`` candidates of each query, re-ranked: faiss's value of its last
    candidate, and the exact top-``k`` distances and ids."""
    l2 = is_l2(index)
    as_float32 = np.ascontiguousarray(queries, dtype=np.float32)  # what faiss searches with
    found, ids = (raw_search if complete else faiss_search)(finder, as_float32, want, nprobe)
    dist, top = top_k(exact_distances(index, queries, ids, l2), ids, k, l2)
    return found[:, -1], dist, top


def exact_distances(index: Any, queries: np.ndarray, ids: np.ndarray, l2: bool,
                    ) -> np.ndarray:
    """``distances`` of each query to its stored points ``ids`` (n, c), -1 as the worst
    value, a few rows at a time so the gathered vectors stay small (10,000 queries x 784
    dimensions would otherwise gather a gigabyte)."""
    d = queries.shape[1]  # the index's width (prepared queries), without a faiss read
    step = max(1, RERANK_CHUNK // max(1, ids.shape[1] * d))
    if ids.shape[0] <= step and ids.min(initial=0) >= 0:  # one chunk, every id found
        return distances(queries, vectors_of(index, ids), l2)
    out = np.empty(ids.shape)
    for a in range(0, ids.shape[0], step):
        part = ids[a:a + step]
        valid = part >= 0  # a shard's probed lists, or an HNSW graph, may return fewer
        if valid.all():
            vectors = vectors_of(index, part)
        else:
            vectors = np.zeros((*part.shape, d), np.float32)
            vectors[valid] = vectors_of(index, part[valid])
        out[a:a + step] = distances(queries[a:a + step], vectors, l2)
        out[a:a + step][~valid] = np.inf if l2 else -np.inf
    return out


def refined(index: Any, queries: np.ndarray, k: int, nprobe: int, searcher: Any = None,
            complete: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Each prepared query's ``k`` nearest stored points (``k`` ≤ ntotal) with float64
    squared L2 distances (or inner products), best first, ties by the smaller id.

    ``searcher`` finds the candidates where it is not ``index`` itself (a GPU copy);
    ``index`` holds the vectors. For an exact index the answer is the exact top-k. IVF rows
    whose probed lists hold fewer than ``k`` points are searched over every list, unless
    ``complete`` is false (one shard of an index: the whole decides), which leaves id -1.
    """
    finder = index if searcher is None else searcher
    rounds = candidate_rounds(index, k)
    last, dist, top = _round(index, finder, queries, rounds[0], k, nprobe, complete)
    if not isinstance(index, faiss.IndexFlat):  # approximate: no proof to make
        return dist, top
    n = int(index.ntotal)
    unsure = None if rounds[0] >= n else unproven(index, queries, last, dist[:, -1])
    for want in rounds[1:]:
        if unsure is None:
            break
        rows = np.flatnonzero(unsure)
        sub = np.ascontiguousarray(queries[rows])
        last, dist[rows], top[rows] = _round(index, finder, sub, want, k, nprobe, complete)
        still = None if want >= n else unproven(index, sub, last, dist[rows, -1])
        if still is None:
            unsure = None
        else:
            unsure[rows] = still
    if unsure is not None:
        dist[unsure], top[unsure] = brute_force(index, np.ascontiguousarray(queries[unsure]), k)
    return dist, top


def search_one(index: Any, queries: np.ndarray, k: int, metric: str, nprobe: int,
               n: int | None = None) -> tuple[np.ndarray, np.ndarray] | None:
    """``search`` for a single prepared query on a CPU faiss index, with the answer it gives
    bit for bit: the candidates' distances are ``distances``' own, and their order, the
    proof of a Flat first round, the square roots, the float32 rounding and its tie order are
    worked on the ``k`` values as Python numbers, not numpy arrays. In the server each numpy
    call on so small an array costs microseconds, as its code is out of the caches: timed
    there, a single IVFFlat row's ``search`` took 91-98 us on the general path and 68-82 on
    this one (two runs each, docs/serving.md). ``n``: the index's ntotal, where the caller
    has read it. None where the row needs more than one round: an IVF row whose probed lists
    hold fewer than ``k`` points, an HNSW answer of fewer than ``k``, a Flat first round not
    proven; ``search`` then takes the general path."""
    l2 = is_l2(index)
    n = int(index.ntotal) if n is None else n  # each read of a faiss attribute: ~0.5 us
    want = candidate_rounds(index, k, n)[0]
    # faiss's wrapper makes the float32 copy it searches with (the general path's own)
    found, ids = faiss_search(index, queries, want, nprobe)
    id_list: list[int] = ids.tolist()[0]
    if min(id_list) < 0:  # fewer than asked for
        return None
    exact = distances(queries, vectors_of(index, ids, n), l2).tolist()[0]
    # np.lexsort's order: by distance (best first), then by the smaller id
    ranked = sorted(zip(exact if l2 else [-v for v in exact], id_list))[:k]
    if want < n and isinstance(index, faiss.IndexFlat):
        kth = ranked[-1][0] if l2 else -ranked[-1][0]
        if not bound_holds(l2, queries[0], max_norm(index, n), found.item(-1), kth):
            return None
    values = [math.sqrt(v) if metric == "L2" else -v for v, _ in ranked]
    # each rounded once to float32, as astype does (beyond its range: inf, as astype)
    rounded = array.array("f", values).tolist()
    order = [i for _, i in ranked]
    if len(set(rounded)) < len(rounded):  # equal in float32: the smaller id first
        pairs = sorted(zip(rounded if metric == "L2" else [-v for v in rounded], order))
        rounded = [v if metric == "L2" else -v for v, _ in pairs]
        order = [i for _, i in pairs]
    return np.array([rounded], np.float32), np.array([order], np.int64)


def search(index: Any, queries: np.ndarray, k: int, metric: str, nprobe: int = 5,
           searcher: Any = None) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` nearest index ids of each prepared query, with decision 1's distances
    (L2: the distance itself; inner product and cosine: the similarity) as float32.

    ``k`` is capped at the points in the index (decision 6); no id is ever -1. ``index``
    may be a stand-in with ``search_raw`` (an index split over shards) that refines inside.
    A single query on a CPU index takes ``search_one`` where it can, for ``k`` up to
    ``ONE_ROW_MAX_K``.
    """
    n = int(index.ntotal)
    k = min(k, n)
    gpu_copy = getattr(index, "cpu", None)  # a GPU copy stands in: its CPU index has the vectors
    if gpu_copy is not None:
        index, searcher = gpu_copy, index
    if hasattr(index, "search_raw"):
        dist, ids = index.search_raw(queries, k, nprobe)
    else:
        if queries.shape[0] == 1 and searcher is None and k <= ONE_ROW_MAX_K:
            one = search_one(index, queries, k, metric, nprobe, n)
            if one is not None:
                return one
        dist, ids = refined(index, queries, k, nprobe, searcher)
    if metric == "L2":
        dist = np.sqrt(dist)  # recomputed sums of squares: never negative
    reported = dist.astype(np.float32)
    if reported.shape[0] == 1:  # one row: sorted, so equal values are neighbours
        values = reported[0].tolist()
        tied = len(set(values)) < len(values)
    else:
        tied = bool((reported[:, 1:] == reported[:, :-1]).any())
    if tied:
        # points whose distances round to one float32 value are listed by the smaller id
        return top_k(reported, ids, k, metric == "L2")
    return reported, ids
