"""Seeded reservoir sampling over a stream of blocks, per worker, and the merge of worker
samples on the leader (SageMaker k-NN's per-host ``sample_size / W``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np


def worker_sample_size(sample_size: int, workers: int, rank: int) -> int:
    """Host ``rank``'s share of ``sample_size``; the first ``sample_size % workers`` get one
    more."""
    return sample_size // workers + (1 if rank < sample_size % workers else 0)


def worker_rng(seed: int, rank: int) -> np.random.Generator:
    """The sampler's generator: ``_seed`` combined with the worker rank (decision 14)."""
    return np.random.default_rng([seed, rank])


def reservoir_slots(seen: int, n: int, capacity: int, rng: np.random.Generator,
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Algorithm R for a block of ``n`` records after ``seen`` earlier ones, vectorised.

    Returns ``(rows, slots)``: block rows that enter the reservoir and the slot each takes,
    with later rows winning a slot drawn twice, exactly as the one-at-a-time algorithm.
    """
    fill = max(0, min(n, capacity - seen))
    rows = np.arange(fill)
    slots = seen + rows
    if fill == n:
        return rows, slots
    positions = seen + np.arange(fill, n)  # 0-based index of each later record in the stream
    draws = rng.integers(0, positions + 1)  # uniform in [0, position]
    keep = draws < capacity
    rows = np.concatenate([rows, np.arange(fill, n)[keep]])
    slots = np.concatenate([slots, draws[keep]])
    # A slot taken twice in one block keeps its last row: take each slot's last occurrence.
    _, last = np.unique(slots[::-1], return_index=True)
    last = len(slots) - 1 - last
    return rows[last], slots[last]


@dataclass
class Reservoir:
    """A fixed-capacity uniform sample of the rows streamed into it."""

    capacity: int
    dim: int
    rng: np.random.Generator
    seen: int = 0
    features: np.ndarray = field(init=False)
    labels: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        # Grown on demand so a small data set never allocates ``capacity`` rows.
        self.features = np.empty((0, self.dim), dtype=np.float32)
        self.labels = np.empty(0, dtype=np.float32)

    def _grow(self, size: int) -> None:
        if size <= self.features.shape[0]:
            return
        new = min(self.capacity, max(size, 2 * self.features.shape[0]))
        feats = np.empty((new, self.dim), dtype=np.float32)
        labels = np.empty(new, dtype=np.float32)
        old = self.features.shape[0]
        feats[:old], labels[:old] = self.features, self.labels
        self.features, self.labels = feats, labels

    def add(self, features: np.ndarray, labels: np.ndarray) -> None:
        """Offer a block of rows to the sample."""
        n = features.shape[0]
        rows, slots = reservoir_slots(self.seen, n, self.capacity, self.rng)
        self._grow(min(self.capacity, self.seen + n))
        self.features[slots] = features[rows]
        self.labels[slots] = labels[rows]
        self.seen += n

    @property
    def size(self) -> int:
        return min(self.seen, self.capacity)

    def sample(self) -> tuple[np.ndarray, np.ndarray]:
        """The kept rows (views, in slot order)."""
        return self.features[: self.size], self.labels[: self.size]


def merge(samples: Sequence[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """The leader's sample: the workers' samples concatenated in rank order."""
    feats = np.concatenate([s[0] for s in samples]) if samples else np.empty((0, 0), np.float32)
    labels = np.concatenate([s[1] for s in samples]) if samples else np.empty(0, np.float32)
    return np.ascontiguousarray(feats, dtype=np.float32), labels.astype(np.float32, copy=False)
