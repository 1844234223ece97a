"""Keyed sampling: record ids and keys, the smallest-keys sample (everything when it fits,
uniform without duplicates when it does not), the same points whatever the number of hosts
or the block size, worker shares, merge in stream order."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest

from openknn.core.sampling import (
    MAX_FILES,
    MAX_RECORDS_PER_FILE,
    HostSample,
    KeyedSample,
    merge,
    record_ids,
    record_keys,
    seed_words,
    worker_sample_size,
)
from openknn.errors import ChannelError

RNG = np.random.default_rng(5)
# four files of a channel, one of them empty and one of a single record
FILES = [RNG.random((n, 3), dtype=np.float32) for n in (700, 1, 0, 1300)]
ALL = np.concatenate(FILES)


def draw(files: Sequence[np.ndarray], capacity: int, seed: int = 0, part: int = 0,
         parts: int = 1, block: int = 97) -> HostSample:
    """Stream ``files`` as a host does (every file, in order, in blocks) into one sample."""
    sample = KeyedSample(capacity, files[0].shape[1], seed, part, parts)
    for ordinal, x in enumerate(files):
        for lo in range(0, len(x), block):
            rows = x[lo:lo + block]
            sample.add(record_ids(ordinal, lo, len(rows)), rows, rows[:, 0] * 10)
    return sample.result()


def hosts(capacity: int, workers: int, seed: int = 0, block: int = 97,
          ) -> tuple[np.ndarray, np.ndarray, list[HostSample]]:
    """What W FullyReplicated hosts give the leader: every host reads every file and keeps
    its part; the leader merges."""
    parts = [draw(FILES, capacity, seed, r, workers, block) for r in range(workers)]
    feats, labels = merge(parts)
    return feats, labels, parts


def test_record_ids_are_unique_and_in_stream_order() -> None:
    ids = np.concatenate([record_ids(0, 0, 5), record_ids(0, 5, 3), record_ids(1, 0, 4),
                          record_ids(7, 10, 2)])
    assert ids.dtype == np.uint64
    assert np.all(np.diff(ids.astype(np.float64)) > 0)
    assert int(record_ids(3, 9, 1)[0]) == (3 << 40) | 9
    assert len(record_ids(2, 0, 0)) == 0


def test_record_ids_refuse_what_does_not_fit_64_bits() -> None:
    with pytest.raises(ChannelError, match=r"more than 16777216 files; merge some"):
        record_ids(MAX_FILES, 0, 1)
    with pytest.raises(ChannelError, match=r"more than 1099511627776 records; split it"):
        record_ids(0, MAX_RECORDS_PER_FILE - 1, 2)


def test_keys_are_a_seeded_bijection() -> None:
    ids = np.concatenate([record_ids(f, 0, 20000) for f in range(5)])
    a, b, c = (record_keys(seed_words(s), ids) for s in (0, 0, 1))
    assert len(np.unique(a)) == len(ids)  # no two records tie
    np.testing.assert_array_equal(a, b)
    assert np.mean(a == c) < 1e-3
    # spread over the whole 64-bit range, whatever the ids' structure
    top = (a >> np.uint64(60)).astype(int)
    assert np.bincount(top, minlength=16).min() > len(ids) / 16 * 0.9


def test_keeps_everything_when_data_fits_in_stream_order() -> None:
    for workers in (1, 2, 3):
        feats, labels, parts = hosts(len(ALL), workers)
        np.testing.assert_array_equal(feats, ALL)
        np.testing.assert_array_equal(labels, ALL[:, 0] * 10)
        assert sum(p.records for p in parts) == len(ALL)  # each record counted once


@pytest.mark.parametrize("capacity", [1, 10, 500, 2000, 2001, 5000])
def test_same_points_whatever_the_number_of_hosts(capacity: int) -> None:
    one, one_labels, _ = hosts(capacity, 1)
    assert len(one) == min(capacity, len(ALL))
    for workers in (2, 3):
        feats, labels, parts = hosts(capacity, workers)
        np.testing.assert_array_equal(feats, one)  # the same rows, in the same order
        np.testing.assert_array_equal(labels, one_labels)
        ids = np.concatenate([p.ids for p in parts])
        assert len(np.unique(ids)) == len(ids)  # the hosts' parts are disjoint
        assert [p.records for p in parts] == [len(range(r, len(ALL), workers))
                                              for r in range(workers)]


def test_block_size_does_not_change_the_sample() -> None:
    a, _, _ = hosts(300, 1, block=1)
    b, _, _ = hosts(300, 2, block=1000)
    c, _, _ = hosts(300, 3, block=7)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, c)


def test_same_seed_same_sample_different_seed_different() -> None:
    a, _, _ = hosts(100, 1, seed=0)
    b, _, _ = hosts(100, 1, seed=0)
    c, _, _ = hosts(100, 1, seed=1)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_sample_is_uniform_without_duplicates() -> None:
    # Each of 200 records should be kept with probability 20/200; count over many seeds.
    n, cap, trials = 200, 20, 2000
    x = np.arange(n, dtype=np.float32)[:, None]
    files = [x[:90], x[90:]]
    counts = np.zeros(n)
    pairs = 0  # records 2i and 2i+1 both kept
    for seed in range(trials):
        kept = draw(files, cap, seed, block=37).features[:, 0].astype(int)
        assert len(kept) == cap and len(set(kept.tolist())) == cap
        counts[kept] += 1
        both = np.zeros(n, bool)
        both[kept] = True
        pairs += int(np.count_nonzero(both[0::2] & both[1::2]))
    expected = trials * cap / n  # 200
    assert abs(counts.mean() - expected) < 1e-9
    # binomial sd ~ 13.4; every record within 5 sd, both files and both halves alike
    assert np.all(np.abs(counts - expected) < 5 * np.sqrt(expected * (1 - cap / n)))
    assert abs(counts[:100].mean() - counts[100:].mean()) < 10
    # neighbours are kept together as often as independent draws without replacement would
    together = trials * (n // 2) * cap / n * (cap - 1) / (n - 1)  # ~ 955
    assert abs(pairs - together) < 5 * np.sqrt(together)


def test_a_part_holds_about_its_share_of_rows() -> None:
    x = RNG.random((60000, 2), dtype=np.float32)
    sample = KeyedSample(3000, 2, 0, part=1, parts=3)
    peak = 0
    for lo in range(0, len(x), 500):
        sample.add(record_ids(0, lo, 500), x[lo:lo + 500], x[lo:lo + 500, 0])
        peak = max(peak, sample.stored)
    assert peak < 1.25 * 3000 / 3 * 1.2 + 500
    assert 800 < len(sample.result().ids) < 1200


def test_zero_capacity_keeps_nothing() -> None:
    out = draw(FILES, 0)
    assert out.features.shape == (0, 3) and out.records == len(ALL)
    with pytest.raises(ValueError, match=r"part 3 is not in \[0, 3\)"):
        KeyedSample(5, 3, 0, part=3, parts=3)


def test_worker_shares_add_up() -> None:
    assert [worker_sample_size(100, 3, r) for r in range(3)] == [34, 33, 33]
    assert sum(worker_sample_size(200000, 7, r) for r in range(7)) == 200000


def test_merge_orders_rows_by_record_id() -> None:
    a = HostSample(record_ids(1, 0, 2), np.ones((2, 3), np.float32),
                   np.zeros(2, np.float32), 2)
    b = HostSample(record_ids(0, 4, 1), 2 * np.ones((1, 3), np.float32),
                   np.ones(1, np.float32), 1)
    feats, labels = merge([a, b])
    assert feats.shape == (3, 3) and feats.flags.c_contiguous and feats.dtype == np.float32
    np.testing.assert_array_equal(labels, [1, 0, 0])
    np.testing.assert_array_equal(merge([b, a])[0], feats)
