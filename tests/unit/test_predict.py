"""Vote (ties to the smallest label, decision 2) and mean, against a plain Python oracle."""

from __future__ import annotations

from collections import Counter

import numpy as np
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from openknn.core import predict as predict_module
from openknn.core.predict import mean, predict, vote


def oracle_vote(row: list[float]) -> float:
    counts = Counter(row)
    best = max(counts.values())
    return min(v for v, c in counts.items() if c == best)


def test_vote_examples() -> None:
    labels = np.array([[2, 2, 0], [1, 3, 3], [5, 4, 6], [7, 7, 7], [3, 1, 1, 3]][:4],
                      dtype=np.float32)
    np.testing.assert_array_equal(vote(labels), [2, 3, 4, 7])
    np.testing.assert_array_equal(vote(np.array([[3, 1, 1, 3]], np.float32)), [1])


@given(arrays(np.float32, st.tuples(st.integers(1, 20), st.integers(1, 15)),
              elements=st.integers(0, 5).map(float)))
def test_vote_matches_oracle(labels: np.ndarray) -> None:
    np.testing.assert_array_equal(vote(labels), [oracle_vote(r) for r in labels.tolist()])


def test_mean_and_dispatch() -> None:
    labels = np.array([[1, 2, 6], [0, 0, 3]], np.float32)
    np.testing.assert_allclose(mean(labels), [3, 1])
    np.testing.assert_array_equal(predict(labels, "classifier"), vote(labels))
    np.testing.assert_array_equal(predict(labels, "regressor"), mean(labels))
    assert vote(labels).dtype == np.float32 and mean(labels).dtype == np.float32


@given(st.sampled_from([np.float32, np.float64]).flatmap(lambda dtype: arrays(
    dtype, st.tuples(st.integers(1, 4), st.integers(1, 15)),
    elements=st.sampled_from([0.0, -0.0, 1.5, -2.0, 3.0, 1e30, -1e-30, 0.1, float("nan")]))))
def test_the_small_vote_is_the_batch_vote_bit_for_bit(labels: np.ndarray) -> None:
    """Issue 15: a few rows are voted in Python (the single-row path); the answers are the
    numpy path's, to the bit (a row of -0.0 and 0.0 votes for their one value, equal), for
    float32 and float64 labels; rows with a NaN label take the numpy path."""
    many = np.concatenate([labels] * 5)  # over SMALL_VOTE_ROWS rows: the numpy path
    assert many.shape[0] > predict_module.SMALL_VOTE_ROWS
    small, batch = vote(labels), vote(many)[:labels.shape[0]]
    assert small.dtype == batch.dtype == np.float32
    np.testing.assert_array_equal(small, batch)
    if not np.isnan(labels).any():
        assert [np.float32(oracle_vote(r)) for r in labels.tolist()] == small.tolist()
