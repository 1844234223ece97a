"""faiss indexes for SageMaker k-NN: build (Flat / IVFFlat / IVFPQ / HNSW; L2 /
INNER_PRODUCT / COSINE; the L2 shift; PQ padding; ``nlist=auto``) and faiss's own search with
``nprobe``. ``openknn.core.search`` turns that search into exact answers."""

from __future__ import annotations

import logging
import math
import os
import weakref
from dataclasses import dataclass
from typing import Any

import faiss
import numpy as np

from ..errors import TrainingError
from .hyperparameters import PQ_M_VALUES

log = logging.getLogger(__name__)

PQ_BITS = 8
MIN_PQ_POINTS = 1 << PQ_BITS  # 8-bit PQ codebooks need 256 training points (decision 3)
IVF_TYPES = ("faiss.IVFFlat", "faiss.IVFPQ")
HNSW = "faiss.HNSW"
ASCENDING_METRICS = ("L2",)  # metrics whose best neighbour has the smallest value


@dataclass(frozen=True)
class IndexConfig:
    """What to build: the resolved index hyperparameters."""

    index_type: str = "faiss.Flat"
    metric: str = "L2"
    nlist: int | str = "auto"
    pq_m: int | None = None
    nprobe: int = 5  # the search-time knob: nprobe for IVF, efSearch for HNSW
    hnsw_m: int = 32
    hnsw_ef_construction: int = 40


# faiss 1.15 takes its BLAS path only when rows x d >= 128,000, so a batch under ~2,400 rows of
# 54 features is scanned: 2-4x slower at 16-581 rows (measured, 200k x 54, 2 threads), while
# a single row is faster scanned on one thread. BLAS from 16 rows: its float32 rounding
# only picks candidates, whose distances openknn.core.search recomputes.
BLAS_MIN_ROWS = 16
NEVER_BLAS = 1 << 30
FAISS_BLAS_THRESHOLD = int(faiss.cvar.distance_compute_blas_threshold)  # faiss's default
DIRECT_MAP = faiss.DirectMap  # type: ignore[attr-defined]  # IVF id -> list position
_configured = [1]  # the thread count set_threads chose, for threads that search later


def set_threads(threads: int | None = None) -> int:
    """Set faiss's OpenMP thread count on purpose (default: the CPUs this process may use),
    for the calling thread (OpenMP settings are per thread) and as the count later search
    threads use (``use_threads_for``)."""
    if threads is None:
        affinity = getattr(os, "sched_getaffinity", None)
        threads = len(affinity(0)) if affinity else (os.cpu_count() or 1)
    faiss.omp_set_num_threads(threads)
    _configured[0] = threads
    return threads


def use_threads_for(rows: int) -> None:
    """In the calling (search) thread: every configured thread for a batch, one thread for
    fewer rows than threads — faiss then splits a tiny batch over the database, which made
    one-row searches 3x slower on 2 threads."""
    faiss.omp_set_num_threads(1 if rows < _configured[0] else _configured[0])


def default_pq_m(dim: int) -> int:
    """Decision 4: the largest allowed ``faiss_index_pq_m`` that is at most ``dim / 4``."""
    return max([m for m in PQ_M_VALUES if m <= dim / 4] or [1])


def index_dim(dim: int, config: IndexConfig) -> int:
    """The dimension the index holds: ``dim`` padded up to a multiple of ``pq_m`` for IVFPQ."""
    if config.index_type != "faiss.IVFPQ":
        return dim
    m = config.pq_m or default_pq_m(dim)
    return -(-dim // m) * m


def resolve_nlist(nlist: int | str, n: int) -> int:
    """Decision 3: ``auto`` is ``max(1, round(sqrt(n)))`` for ``n`` sampled points."""
    return max(1, round(math.sqrt(n))) if nlist == "auto" else int(nlist)


SHIFT_BITS = (24, 16, 12, 8, 4, 2, 1)  # significant bits tried for a column's shift
PROBE_ROWS = 4096  # rows a shift is tried on before all of them


def _round_to_bits(values: np.ndarray, bits: int) -> np.ndarray:
    """``values`` rounded to ``bits`` significant binary digits, as float32 values."""
    mantissa, exponent = np.frexp(values)
    rounded: np.ndarray = np.ldexp(np.round(np.ldexp(mantissa, bits)), exponent - bits)
    return rounded.astype(np.float32).astype(np.float64)


def _shifts_exact(x: np.ndarray, columns: np.ndarray, shift: np.ndarray,
                  rows: int = 1 << 14) -> np.ndarray:
    """For each of ``columns``: whether every float32 value minus its ``shift`` is itself a
    float32 value (checked a block of rows at a time)."""
    ok = np.ones(len(columns), bool)
    for a in range(0, x.shape[0], rows):
        shifted = x[a:a + rows, columns].astype(np.float64) - shift  # exact in float64
        ok &= (shifted.astype(np.float32) == shifted).all(axis=0)
    return ok


def center_of(vectors: np.ndarray, metric: str) -> np.ndarray | None:
    """L2's shift (decision 23, exact search): per column, the float32 value nearest
    the mean, with as few significant bits as needed, by which every stored value shifts
    exactly in float32 (0 where none does) — distances between shifted vectors are the
    distances between the vectors themselves, while faiss's float32 search no longer
    cancels on large magnitudes or offsets. None for inner product and cosine, which are
    not translation-invariant."""
    if metric != "L2" or vectors.shape[0] == 0:
        return None
    x = np.asarray(vectors, dtype=np.float32)
    mean = x.mean(axis=0, dtype=np.float64)
    center = np.zeros(x.shape[1])
    open_ = np.ones(x.shape[1], bool)  # columns without a shift yet
    for bits in SHIFT_BITS:
        if not open_.any():
            break
        columns = np.flatnonzero(open_)
        shift = _round_to_bits(mean[columns], bits)
        probe = _shifts_exact(x[:PROBE_ROWS], columns, shift)  # most misses show early
        columns, shift = columns[probe], shift[probe]
        ok = _shifts_exact(x, columns, shift)
        center[columns[ok]] = shift[ok]
        open_[columns[ok]] = False
    return center


def prepare(x: np.ndarray, metric: str, dim: int, center: np.ndarray | None = None,
            exact: bool = False) -> np.ndarray:
    """Vectors as the index sees them: float32, minus ``center``, normalised for COSINE,
    zero-padded to ``dim``. ``exact`` (queries): float64, so that the shift rounds nothing
    (float32 minus float32 is exact in float64) and re-ranking sees the query as sent."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    if center is not None:
        if x.shape[1] != center.shape[0]:
            raise ValueError(f"center has {center.shape[0]} values for {x.shape[1]}-wide rows")
        shifted: np.ndarray = x.astype(np.float64)
        # in place, and as a (1, d) row: one row minus a same-shaped row takes numpy's plain
        # loop, where a (d,) vector is broadcast by its general iterator (warm 1.3 against
        # 2.1 us; timed in the server, a single row's preparation went from 9.8 to 7.1 us,
        # docs/serving.md)
        shifted -= center.reshape(1, -1)
        x = shifted if exact else shifted.astype(np.float32)
    if metric == "COSINE":
        x = x.copy()
        faiss.normalize_L2(x)
    if x.shape[1] < dim:
        x = np.pad(x, ((0, 0), (0, dim - x.shape[1])))
    return x


def _faiss_metric(metric: str) -> int:
    return int(faiss.METRIC_L2 if metric == "L2" else faiss.METRIC_INNER_PRODUCT)


def _check_points(n: int, k: int, nlist: int, config: IndexConfig) -> None:
    if n < k:
        raise TrainingError(
            f"k={k} exceeds the {n} points sampled into the index; lower k to at most {n} or "
            "provide more training data (or a larger sample_size)"
        )
    if config.index_type in IVF_TYPES and n < nlist:
        raise TrainingError(
            f"{config.index_type} with faiss_index_ivf_nlists={nlist} needs at least {nlist} "
            f"points to train, but only {n} were sampled; lower faiss_index_ivf_nlists, use "
            "'auto', or provide more training data"
        )
    if config.index_type == "faiss.IVFPQ" and n < MIN_PQ_POINTS:
        raise TrainingError(
            f"faiss.IVFPQ needs at least {MIN_PQ_POINTS} points to train its 8-bit codebooks, "
            f"but only {n} were sampled; use faiss.Flat or faiss.IVFFlat, or more data"
        )


def _empty_index(dim: int, nlist: int, config: IndexConfig) -> Any:
    metric = _faiss_metric(config.metric)
    flat = faiss.IndexFlat(dim, metric)
    if config.index_type == "faiss.Flat":
        return flat
    if config.index_type == "faiss.IVFFlat":
        return faiss.IndexIVFFlat(flat, dim, nlist, metric)
    if config.index_type == HNSW:
        index = faiss.IndexHNSWFlat(dim, config.hnsw_m, metric)
        index.hnsw.efConstruction = config.hnsw_ef_construction
        return index
    m = config.pq_m or default_pq_m(dim)
    return faiss.IndexIVFPQ(flat, dim, nlist, m, PQ_BITS, metric)


def empty(vectors: np.ndarray, k: int, config: IndexConfig,
          center: np.ndarray | None = None) -> tuple[Any, np.ndarray]:
    """An untrained, empty index for ``vectors`` (already reduced), and the vectors prepared
    (shifted by ``center``) as it holds them; refuses too few points."""
    n, d = vectors.shape
    nlist = resolve_nlist(config.nlist, n)
    _check_points(n, k, nlist, config)
    dim = index_dim(d, config)
    if dim != d:
        log.info("Padding data from %d to %d dimensions for faiss_index_pq_m", d, dim)
    return _empty_index(dim, nlist, config), prepare(vectors, config.metric, dim, center)


def fill(index: Any, x: np.ndarray, seed: int = 0) -> None:
    """Train the index if it needs it (IVF k-means, PQ codebooks), then add ``x``. ``index``
    may be a CPU or a GPU index."""
    n = x.shape[0]
    if not index.is_trained:
        nlist = int(index.nlist)
        if n < 39 * nlist:
            log.warning("IVF training with %d points for %d lists (faiss advises >= 39 per "
                        "list); recall may suffer", n, nlist)
        index.cp.seed = seed  # faiss's k-means seed: the same data gives the same index
        log.info("Training index (nlist=%d) on %d points", nlist, n)
        index.train(x)
    log.info("Adding %d points to the index", n)
    index.add(x)


def build(vectors: np.ndarray, k: int, config: IndexConfig, seed: int = 0,
          center: np.ndarray | None = None) -> Any:
    """Train (IVF) and fill a CPU index with ``vectors`` (already reduced, not yet prepared)."""
    index, x = empty(vectors, k, config, center)
    fill(index, x, seed)
    return index


# Search parameters made once per index and knob value: faiss only reads them, so sharing
# them between threads is safe, and making one costs about 4 us, a tenth of an IVF search of
# one row. Bounded, since per-request knobs may take thousands of values.
_PARAMS_PER_INDEX = 64
_params: weakref.WeakKeyDictionary[Any, dict[int, Any]] = weakref.WeakKeyDictionary()


def _search_params(index: Any, nprobe: int) -> Any:
    """Search parameters for ``nprobe`` (thread-safe, unlike setting them on the index)."""
    ivf = isinstance(index, faiss.IndexIVF)
    if not ivf and not isinstance(index, faiss.IndexHNSW):
        return None
    cache = _params.setdefault(index, {})
    params = cache.get(nprobe)
    if params is None:
        if len(cache) >= _PARAMS_PER_INDEX:
            cache.clear()
        params = cache[nprobe] = (
            faiss.SearchParametersIVF(nprobe=min(nprobe, index.nlist))  # type: ignore[call-arg]
            if ivf else faiss.SearchParametersHNSW(efSearch=nprobe))  # type: ignore[attr-defined]
    return params


def knob_name(index: Any) -> str | None:
    """The name of the index's search-time knob, or None for exact search."""
    if isinstance(index, faiss.IndexIVF):
        return "nprobe"
    if isinstance(index, faiss.IndexHNSW):
        return "efSearch"
    return None


def nlist_of(index: Any) -> int | None:
    """An IVF index's number of lists; None for other indexes."""
    return int(index.nlist) if isinstance(index, faiss.IndexIVF) else None


def faiss_search(index: Any, queries: np.ndarray, k: int, nprobe: int,
                 ) -> tuple[np.ndarray, np.ndarray]:
    """One faiss search with ``nprobe``: faiss's own distances, id -1 where it found fewer.

    An IVF index's coarse quantiser never takes the BLAS path: which lists a query probes
    must not depend on how many other queries share its batch (the lists are few, so the
    direct scan costs little)."""
    rows, d = queries.shape  # not index.d: each read of a faiss attribute costs ~0.3 us
    threshold = NEVER_BLAS if isinstance(index, faiss.IndexIVF) else BLAS_MIN_ROWS * d
    cells = rows * d
    if cells < threshold and cells < FAISS_BLAS_THRESHOLD:  # scanned either way: leave it
        result: tuple[np.ndarray, np.ndarray] = index.search(
            queries, k, params=_search_params(index, nprobe))
        return result
    faiss.cvar.distance_compute_blas_threshold = threshold
    try:
        result = index.search(queries, k, params=_search_params(index, nprobe))
    finally:  # faiss's own setting back: k-means training (IVF, PQ) needs its BLAS path
        faiss.cvar.distance_compute_blas_threshold = FAISS_BLAS_THRESHOLD
    return result


def raw_search(index: Any, queries: np.ndarray, k: int, nprobe: int,
               ) -> tuple[np.ndarray, np.ndarray]:
    """faiss's distances of the ``k`` nearest; IVF rows whose probed lists hold fewer than
    ``k`` points are searched again over every list, so no id is ever -1. An index split
    over shards (``openknn.core.sharding``) does the same across its shards."""
    if hasattr(index, "search_raw"):
        result: tuple[np.ndarray, np.ndarray] = index.search_raw(queries, k, nprobe)
        return result
    dist, ids = faiss_search(index, queries, k, nprobe)
    if not isinstance(index, faiss.IndexIVF) or ids.min(initial=0) >= 0:  # none short
        return dist, ids
    short = (ids < 0).any(axis=1)
    d2, i2 = faiss_search(index, np.ascontiguousarray(queries[short]), k, index.nlist)
    dist[short], ids[short] = d2, i2
    return dist, ids


def serialize(index: Any) -> bytes:
    """``faiss.write_index`` bytes of a CPU index (decision 8), without the direct map that
    exact re-ranking adds to IVF indexes (rebuilt where needed after loading)."""
    mapped = isinstance(index, faiss.IndexIVF) and (
        int(index.direct_map.type) != int(DIRECT_MAP.NoMap))
    kind = index.direct_map.type if mapped else None
    if mapped:
        index.set_direct_map_type(DIRECT_MAP.NoMap)
    try:
        return bytes(faiss.serialize_index(index).tobytes())
    finally:
        if kind is not None:
            index.set_direct_map_type(kind)


def deserialize(data: bytes) -> Any:
    return faiss.deserialize_index(np.frombuffer(data, dtype=np.uint8))
