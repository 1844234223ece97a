"""Recall-targeted search parameters (beyond SageMaker): the smallest ``nprobe`` (IVF) or
``efSearch`` (HNSW) whose recall@k on a held-out slice of the sample reaches a target."""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import Any

import faiss
import numpy as np

from .index import faiss_search, knob_name

log = logging.getLogger(__name__)

MAX_QUERIES = 1000
CONFIDENCE_Z = 2.0  # about 97.7% one-sided
NPROBE_STEPS = (1, 2, 3, 4, 5, 6, 8, 10, 12, 16, 20, 24, 32, 48, 64, 96, 128, 192, 256, 384,
                512, 768, 1024, 2048, 4096)
EF_STEPS = (8, 12, 16, 24, 32, 40, 48, 64, 80, 96, 128, 160, 192, 256, 384, 512, 768, 1024,
            1536, 2048, 4096)


@dataclass
class Tuned:
    """What tuning chose and measured; written to the model JSON and metrics.json."""

    knob: str
    value: int
    recall: float
    target: float
    queries: int
    curve: list[tuple[int, float]]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def without_self(ids: np.ndarray, query_ids: np.ndarray, k: int) -> np.ndarray:
    """Each row's first ``k`` neighbours other than the query point itself."""
    # A stable sort of "is self" moves the one self match (if any) behind the others.
    order = np.argsort(ids == query_ids[:, None], axis=1, kind="stable")[:, :k]
    return np.take_along_axis(ids, order, axis=1)


def recall_per_query(found: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Each row's recall@k: the share of its true neighbours found."""
    return np.array([len(set(a) & set(b) - {-1}) / max(1, len(b))
                     for a, b in zip(found.tolist(), truth.tolist())])


def lower_bound(per_query: np.ndarray, z: float = CONFIDENCE_Z) -> float:
    """Mean recall minus ``z`` standard errors: the target must hold for unseen queries
    too, not only on this slice."""
    se = per_query.std(ddof=1) / np.sqrt(len(per_query)) if len(per_query) > 1 else 0.0
    return float(per_query.mean() - z * se)


def candidates(index: Any, k: int) -> tuple[int, ...]:
    if isinstance(index, faiss.IndexIVF):
        return tuple(v for v in NPROBE_STEPS if v < index.nlist) + (int(index.nlist),)
    return tuple(v for v in EF_STEPS if v > k) or (k,)


def tune(index: Any, vectors: np.ndarray, k: int, target: float,
         rng: np.random.Generator) -> Tuned | None:
    """Walk the knob upward until recall@k reaches ``target`` with a margin of two standard
    errors over the held-out queries; None for exact indexes.

    ``vectors`` are the indexed vectors (prepared as the index holds them, in id order). The
    queries are a seeded slice of them; the ground truth is exact search over all of them,
    and each query's own point is left out of both answers.
    """
    name = knob_name(index)
    if name is None:
        return None
    n = vectors.shape[0]
    query_ids = np.sort(rng.choice(n, min(MAX_QUERIES, n), replace=False))
    queries = np.ascontiguousarray(vectors[query_ids])
    exact = faiss.IndexFlat(vectors.shape[1], index.metric_type)
    exact.add(vectors)
    kk = min(k + 1, n)
    truth = without_self(exact.search(queries, kk)[1], query_ids, k)
    curve: list[tuple[int, float]] = []
    for value in candidates(index, k):
        found = without_self(faiss_search(index, queries, kk, value)[1], query_ids, k)
        per_query = recall_per_query(found, truth)
        curve.append((value, float(per_query.mean())))
        if lower_bound(per_query) >= target:
            break
    value, achieved = curve[-1]
    if achieved < target:
        log.warning("Target recall %.3f not reached: %s=%d gives %.4f", target, name, value,
                    achieved)
    log.info("Tuned %s=%d: recall@%d %.4f on %d held-out queries (target %.3f)", name, value,
             k, achieved, len(query_ids), target)
    return Tuned(name, value, achieved, target, len(query_ids), curve)
