"""Predictions from neighbour labels: the classifier's majority vote (ties to the smallest
label, decision 2) and the regressor's mean."""

from __future__ import annotations

import numpy as np

from .hyperparameters import PREDICTOR_TYPES

CLASSIFIER, REGRESSOR = PREDICTOR_TYPES
SMALL_VOTE_ROWS = 4  # rows voted in Python: ~1 us a row, beside ~10 us of numpy set-up


def _vote_small(neighbor_labels: np.ndarray) -> np.ndarray | None:
    """``vote`` for a few rows, in Python: the same answer (the longest run of the sorted
    row, the first such run, so the smallest tied label), bit for bit; None where a label is
    NaN (numpy sorts NaN last; Python's sort does not)."""
    out = []
    for row in neighbor_labels.tolist():
        row.sort()
        best, best_count, count = row[0], 0, 0
        for i, value in enumerate(row):
            if value != value:  # NaN
                return None
            count = count + 1 if i and value == row[i - 1] else 1
            if count > best_count:
                best, best_count = value, count
        out.append(best)
    return np.array(out, dtype=np.float32)  # one rounding, as numpy's cast of the label


def vote(neighbor_labels: np.ndarray) -> np.ndarray:
    """The most frequent label of each row; among tied labels the smallest value wins.

    This is what ``scipy.stats.mode`` and scikit-learn's ``KNeighborsClassifier`` do, so exact
    search gives scikit-learn's answers. Vectorised: sort each row, count equal runs, and take
    the first position with the highest count (the smallest label among the tied ones).
    """
    n, k = neighbor_labels.shape
    if k == 0:
        return np.full(n, np.nan, dtype=np.float32)
    if n <= SMALL_VOTE_ROWS and neighbor_labels.dtype.kind == "f":
        small = _vote_small(neighbor_labels)
        if small is not None:
            return small
    s = np.sort(neighbor_labels, axis=1)
    starts = np.ones((n, k), dtype=bool)
    starts[:, 1:] = s[:, 1:] != s[:, :-1]
    run = np.cumsum(starts, axis=1) - 1  # run id of each position within its row
    flat = run + (np.arange(n) * k)[:, None]
    counts = np.bincount(flat.ravel(), minlength=n * k)[flat]
    best = np.argmax(counts, axis=1)
    out: np.ndarray = s[np.arange(n), best].astype(np.float32)
    return out


def mean(neighbor_labels: np.ndarray) -> np.ndarray:
    """The regressor's answer: the unweighted mean of the neighbour labels (float64 sum)."""
    out: np.ndarray = neighbor_labels.mean(axis=1, dtype=np.float64).astype(np.float32)
    return out


def predict(neighbor_labels: np.ndarray, predictor_type: str) -> np.ndarray:
    """Dispatch on the model's ``predictor_type``."""
    return vote(neighbor_labels) if predictor_type == CLASSIFIER else mean(neighbor_labels)
