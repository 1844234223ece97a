"""An index split over shards: cut a faiss index into id ranges, search every shard, merge
the per-shard top-k — the same neighbours as the whole index (ties by the smaller id)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import faiss
import numpy as np

from .index import ASCENDING_METRICS, DIRECT_MAP, nlist_of
from .search import refined

Parts = list[tuple[np.ndarray, np.ndarray]]
# Searches every shard with (queries, k, nprobe) and returns each one's (distances, global ids).
FanOut = Callable[[np.ndarray, int, int], Parts]


def split(index: Any, shards: int) -> list[tuple[Any, int]]:
    """``shards`` sub-indexes over contiguous id ranges, each with the id offset to add.

    Flat shards hold their vectors with local ids; IVF shards share the trained quantizer and
    keep their global ids (``copy_subset_to``), so they probe the same lists as the whole.
    """
    n = int(index.ntotal)
    bounds = np.linspace(0, n, shards + 1).astype(np.int64)
    out = []
    for a, b in zip(bounds[:-1], bounds[1:]):
        if isinstance(index, faiss.IndexIVF):
            sub: Any = faiss.clone_index(index)  # already the concrete IVF class
            sub.reset()
            # copy_subset_to fills lists, not a direct map: exact search makes its own.
            sub.set_direct_map_type(DIRECT_MAP.NoMap)
            index.copy_subset_to(sub, 0, int(a), int(b))  # subset type 0: ids in [a, b)
            out.append((sub, 0))
        else:
            sub = faiss.IndexFlat(index.d, index.metric_type)
            sub.add(index.reconstruct_n(int(a), int(b - a)))
            out.append((sub, int(a)))
    return out


def shard_search(sub: Any, offset: int, queries: np.ndarray, k: int, nprobe: int,
                 ) -> tuple[np.ndarray, np.ndarray]:
    """One shard's top-k with global ids (-1 stays -1)."""
    k = min(k, max(1, int(sub.ntotal)))
    dist, ids = refined(sub, queries, k, nprobe, complete=False)
    return dist, np.where(ids >= 0, ids + offset, -1)


def merge(parts: Parts, k: int, ascending: bool) -> tuple[np.ndarray, np.ndarray]:
    """The best ``k`` of the shards' candidates per row, equal distances by smaller id;
    missing candidates (-1) last."""
    dist = np.concatenate([p[0] for p in parts], axis=1)
    ids = np.concatenate([p[1] for p in parts], axis=1)
    worst = np.inf if ascending else -np.inf
    key = np.where(ids >= 0, dist, worst)
    order = np.lexsort((np.where(ids >= 0, ids, np.iinfo(np.int64).max),
                        key if ascending else -key), axis=1)[:, :k]
    return np.take_along_axis(dist, order, 1), np.take_along_axis(ids, order, 1)


@dataclass
class ShardedIndex:
    """Stands in for a faiss index in ``openknn.core.search.search``: fans the query out to
    shards that each refine their candidates, merges."""

    fanout: FanOut
    ntotal: int
    metric: str
    nlist: int | None = None

    def search_raw(self, queries: np.ndarray, k: int, nprobe: int,
                   ) -> tuple[np.ndarray, np.ndarray]:
        ascending = self.metric in ASCENDING_METRICS
        dist, ids = merge(self.fanout(queries, k, nprobe), k, ascending)
        short = (ids < 0).any(axis=1)
        if short.any() and self.nlist is not None:  # as the whole IVF index would do
            d2, i2 = merge(self.fanout(np.ascontiguousarray(queries[short]), k, self.nlist),
                           k, ascending)
            dist[short], ids[short] = d2, i2
        return dist, ids


def local_shards(index: Any, shards: int, metric: str) -> ShardedIndex:
    """Shards searched one after another in this process (tests, and the Ray-free path)."""
    subs = split(index, shards)

    def fanout(queries: np.ndarray, k: int, nprobe: int) -> Parts:
        return [shard_search(sub, offset, queries, k, nprobe) for sub, offset in subs]

    return ShardedIndex(fanout, int(index.ntotal), metric, nlist_of(index))

