"""Exact search against scikit-learn's brute-force k-NN: every prediction of a Flat model
trained by the whole job equals KNeighborsClassifier / KNeighborsRegressor, ties included."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from openknn.jobs import artifact, training
from openknn.jobs.data import Channel

from ..conftest import write_csv

sklearn = pytest.importorskip("sklearn")
from sklearn.datasets import load_diabetes, load_digits
from sklearn.neighbors import KNeighborsClassifier, KNeighborsRegressor


def train_job(tmp_path: Path, x: np.ndarray, y: np.ndarray, xt: np.ndarray, yt: np.ndarray,
              **hp: str) -> training.TrainingResult:
    write_csv(tmp_path / "train" / "part-0.csv", x, y)
    write_csv(tmp_path / "test" / "part-0.csv", xt, yt)
    spec = training.TrainingJobSpec(
        hyperparameters={"feature_dim": str(x.shape[1]), "sample_size": str(len(x)), **hp},
        channels={"train": Channel("train", str(tmp_path / "train")),
                  "test": Channel("test", str(tmp_path / "test"))},
        output_dir=tmp_path / "out", threads=2)
    return training.run(spec)


def split(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, ...]:
    rng = np.random.RandomState(0)
    order = rng.permutation(len(x))
    x, y = x[order].astype(np.float32), y[order].astype(np.float32)
    cut = int(0.8 * len(x))
    return x[:cut], y[:cut], x[cut:], y[cut:]


@pytest.mark.parametrize("k", [1, 4, 10])
def test_digits_classifier_equals_sklearn_brute(tmp_path: Path, k: int) -> None:
    x, y, xt, yt = split(*load_digits(return_X_y=True))
    result = train_job(tmp_path, x, y, xt, yt, k=str(k), predictor_type="classifier",
                       index_type="faiss.Flat")
    ref = KNeighborsClassifier(n_neighbors=k, algorithm="brute").fit(x, y)
    model = artifact.load(tmp_path / "out" / "model.tar.gz")
    ours = model.predict(xt)
    np.testing.assert_array_equal(ours, ref.predict(xt))
    # The neighbours equal scikit-learn's (as multisets: scikit-learn orders equal distances
    # arbitrarily) except where the k-th distance ties the next one, where openknn keeps the
    # smaller ids (decision 1's tie order).
    ref_dist, ref_ids = ref.kneighbors(xt, n_neighbors=k + 1)
    dist, neighbor_labels = model.neighbors(xt)
    np.testing.assert_allclose(dist, ref_dist[:, :k], rtol=1e-5, atol=1e-4)
    boundary_tie = np.isclose(ref_dist[:, k - 1], ref_dist[:, k], rtol=1e-6)
    same = (np.sort(neighbor_labels, 1) == np.sort(y[ref_ids[:, :k]], 1)).all(axis=1)
    assert same[~boundary_tie].all()
    accuracy = float(np.mean(ref.predict(xt) == yt))
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["test:accuracy"] == pytest.approx(accuracy, abs=1e-12)
    assert result.metrics["test"]["rows"] == len(xt)


@pytest.mark.parametrize("k", [1, 5, 10])
def test_diabetes_regressor_equals_sklearn_brute(tmp_path: Path, k: int) -> None:
    x, y, xt, yt = split(*load_diabetes(return_X_y=True, scaled=False))
    train_job(tmp_path, x, y, xt, yt, k=str(k), predictor_type="regressor")
    ref = KNeighborsRegressor(n_neighbors=k, algorithm="brute").fit(x, y)
    model = artifact.load(tmp_path / "out" / "model.tar.gz")
    np.testing.assert_allclose(model.predict(xt), ref.predict(xt), rtol=1e-6)
    mse = float(np.mean((ref.predict(xt) - yt) ** 2))
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["test:mse"] == pytest.approx(mse, rel=1e-5)


def random_labels() -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(5)
    return (rng.standard_normal((1500, 6)), rng.integers(0, 4, 1500))


@pytest.mark.parametrize(("data", "k", "min_ties"), [
    (lambda: load_digits(return_X_y=True), 2, 3), (random_labels, 4, 50)])
def test_vote_ties_are_broken_like_sklearn(tmp_path: Path, data, k: int, min_ties: int,
                                           ) -> None:  # type: ignore[no-untyped-def]
    """Even k forces tied votes: the smaller label must win, as in scikit-learn."""
    x, y, xt, yt = split(*data())
    train_job(tmp_path, x, y, xt, yt, k=str(k), predictor_type="classifier")
    model = artifact.load(tmp_path / "out" / "model.tar.gz")
    _, neighbor_labels = model.neighbors(xt)
    counts = np.stack([(neighbor_labels == c).sum(1) for c in np.unique(y)], axis=1)
    tied = (counts == counts.max(1, keepdims=True)).sum(1) > 1
    assert tied.sum() >= min_ties  # the case is really exercised
    ref = KNeighborsClassifier(n_neighbors=k, algorithm="brute").fit(x, y)
    ours = model.predict(xt)
    np.testing.assert_array_equal(ours, ref.predict(xt))
    winners = np.unique(y)[np.argmax(counts, axis=1)]  # argmax: first = smallest tied label
    np.testing.assert_array_equal(ours[tied], winners[tied])
