"""What one ``openknn bench`` run measures and what its steps hand each other: the sizes
(``BenchConfig``), the model set, the loaded data sets and a trained model. Shared by
``run`` (the steps), ``measure`` and ``output``, so none of them imports another's types."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..core.index import knob_name
from ..core.model import KnnModel
from ..errors import ClientError

FLAT, IVFFLAT, IVFPQ, HNSW = "faiss.Flat", "faiss.IVFFlat", "faiss.IVFPQ", "faiss.HNSW"


# ---------------------------------------------------------------- configuration


@dataclass(frozen=True)
class BenchConfig:
    """Sizes of one run; ``make(quick=True)`` is the few-minute smoke run."""

    quick: bool = False
    threads: int = 1
    sample_sizes: tuple[int, int] = (200_000, 500_000)  # the tutorial's two models
    covtype_k: int = 100  # Part 2's models: verbose answers carry 100 labels
    max_k: int = 12  # accuracy for k = 1..12
    covtype_test_rows: int | None = None  # None: every test row
    batch_rows: int = 581  # about 58,102 / 100, the notebook's batch
    batch_requests: int = 100
    single_requests: int = 2000
    sklearn_batches: int = 5
    sklearn_single: int = 200
    fashion_base: int | None = None  # None: all 60,000 with the shipped exact ground truth
    fashion_queries: int | None = None
    fashion_k: int = 10
    target_recall: float = 0.95
    nprobe_curve: tuple[int, ...] = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 128)
    ef_curve: tuple[int, ...] = (10, 16, 24, 32, 48, 64, 96, 128, 192, 256, 512)

    @classmethod
    def make(cls, quick: bool = False, threads: int | None = None) -> BenchConfig:
        if threads is not None and threads < 1:
            raise ClientError(f"--threads {threads}: give 1 or more faiss threads")
        cpus = threads or all_cpus()
        if not quick:
            return cls(threads=cpus)
        return cls(quick=True, threads=cpus, sample_sizes=(20_000, 50_000),
                   covtype_test_rows=300, batch_requests=10, single_requests=200,
                   sklearn_batches=3, sklearn_single=50, fashion_base=10_000,
                   fashion_queries=500, nprobe_curve=(1, 2, 4, 8, 16, 32),
                   ef_curve=(16, 32, 64, 128))


def all_cpus() -> int:
    affinity = getattr(os, "sched_getaffinity", None)
    return len(affinity(0)) if affinity else (os.cpu_count() or 1)


@dataclass(frozen=True)
class ModelSpec:
    """One model of the set: its name, index and hyperparameters beyond the common ones."""

    name: str
    index_type: str
    sample_size: int
    extra: Mapping[str, str] = field(default_factory=dict)


def covtype_specs(cfg: BenchConfig) -> list[ModelSpec]:
    """Part 2's four models, then IVFFlat and HNSW tuned to the target recall."""
    small, large = cfg.sample_sizes
    pq = {"faiss_index_pq_m": "8"}
    tuned = {"_target_recall": str(cfg.target_recall)}
    return [ModelSpec("flat_l2", FLAT, small), ModelSpec("ivfpq_l2", IVFPQ, small, pq),
            ModelSpec("flat_l2_large", FLAT, large),
            ModelSpec("ivfpq_l2_large", IVFPQ, large, pq),
            ModelSpec("ivfflat_l2_large", IVFFLAT, large, tuned),
            ModelSpec("hnsw_l2_large", HNSW, large, tuned)]


def fashion_specs(cfg: BenchConfig, rows: int) -> list[ModelSpec]:
    tuned = {"_target_recall": str(cfg.target_recall)}
    return [ModelSpec("flat_l2", FLAT, rows), ModelSpec("ivfflat_l2", IVFFLAT, rows, tuned),
            ModelSpec("hnsw_l2", HNSW, rows, tuned)]


# ---------------------------------------------------------------- data


@dataclass
class Covtype:
    """The tutorial's split: all train rows, the evaluated test rows, and every test row
    (the pool the 581-row batches are cut from)."""

    source: str
    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    pool: np.ndarray
    notes: list[str] = field(default_factory=list)


@dataclass
class Fashion:
    source: str
    base: np.ndarray
    base_labels: np.ndarray
    queries: np.ndarray
    query_labels: np.ndarray
    truth: np.ndarray  # (queries, RECALL_AT) exact neighbour ids
    notes: list[str] = field(default_factory=list)


# ---------------------------------------------------------------- training


@dataclass
class Trained:
    spec: ModelSpec
    model: KnnModel
    tar: Path
    train_s: float
    index_bytes: int
    job_accuracy: float | None = None  # the training job's test score at k

    @property
    def knob(self) -> str:
        """``nprobe=5`` / ``efSearch=128`` (tuned) / ``exact``."""
        name = knob_name(self.model.index)
        if name is None:
            return "exact"
        tuned = " (tuned)" if self.model.meta.tuning else ""
        return f"{name}={self.model.meta.nprobe}{tuned}"
