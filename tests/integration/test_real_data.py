"""Acceptance checks on the real data sets in ../shared/data (skipped where absent): the
tutorial's covtype accuracy equals scikit-learn's, and IVFFlat's recall on Fashion-MNIST."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from ..conftest import shared_file

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))


def test_covtype_accuracy_equals_sklearn_brute(tmp_path: Path) -> None:
    pytest.importorskip("sklearn")
    import covtype_accuracy

    path = shared_file("covtype", "kaggle-forest-cover-type-prediction_train.csv.gz")
    out = covtype_accuracy.run(path, 10, tmp_path)
    assert out["rows_train"] == 13608 and out["rows_test"] == 1512
    assert out["openknn_accuracy"] == out["sklearn_accuracy"]
    assert out["rows_differing"] == 0
    assert 0.7 < out["openknn_accuracy"] < 0.9


@pytest.mark.slow
def test_fashion_mnist_ivfflat_default_nprobe_recall() -> None:
    import bench_ann

    shared_file("fashion-mnist", "t10k-vs-train_knn100_ids.ivecs.gz")
    rows = {r["index"]: r for r in bench_ann.run(shared_file("fashion-mnist"), 56, None)}
    assert rows["faiss.Flat"]["recall_truth"] == pytest.approx(1.0, abs=1e-3)
    assert rows["faiss.IVFFlat"]["nprobe"] == 5 and rows["faiss.IVFFlat"]["nlist"] == 245
    assert rows["faiss.IVFFlat"]["recall_flat"] >= 0.95
    assert rows["faiss.IVFFlat"]["recall_truth"] >= 0.95
    assert 0.3 < float(np.asarray(rows["faiss.IVFPQ"]["recall_flat"])) < 1.0
