"""Reservoir sampling: Algorithm R semantics, determinism, uniformity, worker shares, merge."""

from __future__ import annotations

import numpy as np
import pytest

from openknn.sampling import Reservoir, merge, reservoir_slots, worker_rng, worker_sample_size


def one_at_a_time(seen: int, n: int, capacity: int, draws: np.ndarray) -> dict[int, int]:
    """Reference Algorithm R on the same draws: slot -> block row."""
    slots: dict[int, int] = {}
    d = iter(draws)
    for row in range(n):
        t = seen + row
        if t < capacity:
            slots[t] = row
        else:
            j = int(next(d))
            if j < capacity:
                slots[j] = row
    return slots


@pytest.mark.parametrize(("seen", "n", "capacity"), [(0, 50, 10), (5, 50, 10), (30, 7, 10),
                                                      (0, 5, 10), (8, 40, 10)])
def test_vectorised_slots_equal_one_at_a_time(seen: int, n: int, capacity: int) -> None:
    rows, slots = reservoir_slots(seen, n, capacity, np.random.default_rng(3))
    positions = seen + np.arange(max(0, min(n, capacity - seen)), n)
    draws = np.random.default_rng(3).integers(0, positions + 1) if len(positions) else []
    expected = one_at_a_time(seen, n, capacity, np.asarray(draws))
    assert dict(zip(slots.tolist(), rows.tolist())) == expected
    assert len(set(slots.tolist())) == len(slots)


def stream(reservoir: Reservoir, x: np.ndarray, block: int) -> None:
    for lo in range(0, len(x), block):
        reservoir.add(x[lo:lo + block], x[lo:lo + block, 0])


def test_keeps_everything_when_data_fits() -> None:
    x = np.arange(30, dtype=np.float32).reshape(15, 2)
    r = Reservoir(100, 2, worker_rng(0, 0))
    stream(r, x, 4)
    feats, labels = r.sample()
    np.testing.assert_array_equal(feats, x)
    np.testing.assert_array_equal(labels, x[:, 0])
    assert r.seen == 15 and r.size == 15


def test_same_seed_same_sample_different_seed_different() -> None:
    x = np.random.default_rng(1).random((5000, 3), dtype=np.float32)
    a, b, c = (Reservoir(100, 3, worker_rng(s, 0)) for s in (0, 0, 1))
    for r in (a, b, c):
        stream(r, x, 333)
    np.testing.assert_array_equal(a.sample()[0], b.sample()[0])
    assert not np.array_equal(a.sample()[0], c.sample()[0])
    assert worker_rng(0, 0).integers(1 << 30) != worker_rng(0, 1).integers(1 << 30)


def test_sample_is_uniform() -> None:
    # Each of 200 records should be kept with probability 20/200; count over many seeds.
    n, cap, trials = 200, 20, 2000
    x = np.arange(n, dtype=np.float32)[:, None]
    counts = np.zeros(n)
    for seed in range(trials):
        r = Reservoir(cap, 1, worker_rng(seed, 0))
        stream(r, x, 37)
        counts[r.sample()[0][:, 0].astype(int)] += 1
    expected = trials * cap / n  # 200
    assert abs(counts.mean() - expected) < 1e-9
    # binomial sd ~ 13.4; every record within 5 sd, first and last halves alike
    assert np.all(np.abs(counts - expected) < 5 * np.sqrt(expected * (1 - cap / n)))
    assert abs(counts[:100].mean() - counts[100:].mean()) < 10


def test_block_size_does_not_change_uniformity_contract() -> None:
    x = np.random.default_rng(2).random((1000, 2), dtype=np.float32)
    r = Reservoir(50, 2, worker_rng(0, 0))
    stream(r, x, 1000)
    feats, _ = r.sample()
    assert feats.shape == (50, 2)
    # every kept row is a real input row
    assert {tuple(v) for v in feats.tolist()} <= {tuple(v) for v in x.tolist()}


def test_worker_shares_add_up() -> None:
    assert [worker_sample_size(100, 3, r) for r in range(3)] == [34, 33, 33]
    assert sum(worker_sample_size(200000, 7, r) for r in range(7)) == 200000


def test_merge_concatenates_in_rank_order() -> None:
    a = (np.ones((2, 3), np.float32), np.zeros(2, np.float32))
    b = (2 * np.ones((1, 3), np.float32), np.ones(1, np.float32))
    feats, labels = merge([a, b])
    assert feats.shape == (3, 3) and feats.flags.c_contiguous
    np.testing.assert_array_equal(labels, [0, 0, 1])
