"""Seeded, mergeable sampling over a stream of blocks: every record gets a key hashed from
``(_seed, its file, its place in the file)``, a sample keeps the ``capacity`` smallest keys,
and the leader merges host samples in stream order — so the sample does not depend on how
many hosts drew it (SageMaker k-NN's per-host ``sample_size / W`` where hosts own files)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from ..errors import ChannelError

RECORD_BITS = 40  # a record id is (file ordinal << RECORD_BITS) | record number in the file
MAX_FILES = 1 << (64 - RECORD_BITS)
MAX_RECORDS_PER_FILE = 1 << RECORD_BITS
_M1, _M2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)
_S30, _S27, _S31 = np.uint64(30), np.uint64(27), np.uint64(31)


def worker_sample_size(sample_size: int, workers: int, rank: int) -> int:
    """Host ``rank``'s share of ``sample_size``; the first ``sample_size % workers`` get one
    more."""
    return sample_size // workers + (1 if rank < sample_size % workers else 0)


def record_ids(file_ordinal: int, first: int, n: int) -> np.ndarray:
    """The ids of ``n`` records from record ``first`` (0-based) of the channel's
    ``file_ordinal``-th file in sorted key order: unique, increasing in stream order."""
    if not 0 <= file_ordinal < MAX_FILES:
        raise ChannelError(f"The channel has more than {MAX_FILES} files; merge some of them")
    if first + n > MAX_RECORDS_PER_FILE:
        raise ChannelError(f"A file holds more than {MAX_RECORDS_PER_FILE} records; split it")
    base = np.uint64(file_ordinal) << np.uint64(RECORD_BITS)
    return base | np.arange(first, first + n, dtype=np.uint64)


def _mix(z: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: a bijection of uint64 with full avalanche."""
    z = (z ^ (z >> _S30)) * _M1
    z = (z ^ (z >> _S27)) * _M2
    out: np.ndarray = z ^ (z >> _S31)
    return out


def seed_words(seed: int) -> tuple[np.uint64, np.uint64]:
    """Two 64-bit words from ``_seed`` (numpy's SeedSequence), mixed into every key."""
    s0, s1 = np.random.SeedSequence(seed).generate_state(2, np.uint64)
    return np.uint64(s0), np.uint64(s1)


def record_keys(words: tuple[np.uint64, np.uint64], ids: np.ndarray) -> np.ndarray:
    """Each record's sampling key: a seeded bijection of its id, so keys never tie and the
    records with the smallest keys are a uniform sample without replacement."""
    return _mix(_mix(ids ^ words[0]) ^ words[1])


@dataclass
class HostSample:
    """What a host sends the leader: its kept records with their ids, and how many records
    of its share it read."""

    ids: np.ndarray  # uint64, increasing
    features: np.ndarray  # float32 (m, d)
    labels: np.ndarray  # float32 (m,)
    records: int


@dataclass
class KeyedSample:
    """The ``capacity`` records with the smallest keys among those offered, in stream order.

    Records are offered in stream order; with ``parts > 1`` the sample stores only the rows
    of its part (the records whose stream ordinal is ``part`` mod ``parts``) but ranks keys
    over all of them, so the parts of ``parts`` such samples are disjoint and together hold
    exactly the rows one sample with ``parts = 1`` holds. Rows are stored once their key is
    below the running cut; memory stays about ``capacity / parts`` rows plus
    ``capacity`` keys.
    """

    capacity: int
    dim: int
    seed: int
    part: int = 0
    parts: int = 1
    seen: int = 0  # records offered (every part)
    records: int = 0  # records of this part offered
    _words: tuple[np.uint64, np.uint64] = field(init=False, repr=False)
    _cut: np.uint64 | None = field(default=None, init=False, repr=False)
    _pool: list[np.ndarray] = field(default_factory=list, init=False, repr=False)
    _pooled: int = field(default=0, init=False, repr=False)
    _rows: list[tuple[np.ndarray, ...]] = field(  # (keys, ids, features, labels) chunks
        default_factory=list, init=False, repr=False)

    def __post_init__(self) -> None:
        if not 0 <= self.part < self.parts:
            raise ValueError(f"part {self.part} is not in [0, {self.parts})")
        self._words = seed_words(self.seed)

    def add(self, ids: np.ndarray, features: np.ndarray, labels: np.ndarray) -> None:
        """Offer the next block of the stream (``ids`` from :func:`record_ids`)."""
        n = len(ids)
        ordinals = self.seen + np.arange(n)
        self.seen += n
        mine = ordinals % self.parts == self.part if self.parts > 1 else np.ones(n, bool)
        self.records += int(np.count_nonzero(mine))
        if self.capacity == 0 or n == 0:
            return
        keys = record_keys(self._words, ids)
        candidate = keys <= self._cut if self._cut is not None else np.ones(n, bool)
        self._pool.append(keys[candidate])
        self._pooled += len(self._pool[-1])
        keep = np.flatnonzero(candidate & mine)
        if len(keep):
            self._rows.append((keys[keep], ids[keep], features[keep], labels[keep]))
        if self._pooled > self.capacity + max(1, self.capacity // 4):
            self._compact()

    def _compact(self) -> None:
        """Cut the pooled keys to the ``capacity`` smallest and drop rows above the cut."""
        pool = np.concatenate(self._pool) if self._pool else np.empty(0, np.uint64)
        if len(pool) > self.capacity:
            self._cut = np.partition(pool, self.capacity - 1)[self.capacity - 1]
            pool = pool[pool <= self._cut]
            cut = self._cut
            kept = (tuple(a[row[0] <= cut] for a in row) for row in self._rows)
            self._rows = [row for row in kept if len(row[0])]
        self._pool, self._pooled = [pool], len(pool)

    @property
    def stored(self) -> int:
        """Rows held now (at most about ``1.25 * capacity / parts`` plus a block)."""
        return sum(len(r[0]) for r in self._rows)

    def result(self) -> HostSample:
        """The kept rows of this part, in stream order."""
        self._compact()
        rows = [r for r in self._rows if len(r[0])]
        if not rows:
            return HostSample(np.empty(0, np.uint64), np.empty((0, self.dim), np.float32),
                              np.empty(0, np.float32), self.records)
        ids, feats, labels = (np.concatenate([r[i] for r in rows]) for i in (1, 2, 3))
        return HostSample(ids, np.ascontiguousarray(feats, dtype=np.float32),
                          labels.astype(np.float32, copy=False), self.records)


def merge(samples: Sequence[HostSample]) -> tuple[np.ndarray, np.ndarray]:
    """The leader's sample: every host's rows in stream (record id) order, so the points and
    their index ids do not depend on which host kept which row."""
    if not samples:
        return np.empty((0, 0), np.float32), np.empty(0, np.float32)
    ids = np.concatenate([s.ids for s in samples])
    order = np.argsort(ids, kind="stable")
    feats = np.concatenate([s.features for s in samples])[order]
    labels = np.concatenate([s.labels for s in samples])[order]
    return np.ascontiguousarray(feats, dtype=np.float32), labels.astype(np.float32, copy=False)
