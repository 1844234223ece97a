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


@pytest.mark.slow
@pytest.mark.parametrize("index_type", ["faiss.IVFFlat", "faiss.HNSW"])
def test_fashion_mnist_target_recall_holds_on_the_test_queries(index_type: str) -> None:
    """_target_recall=0.95 tuned on a slice of the sample holds on the 10,000 held-out
    Fashion-MNIST queries against their exact ground truth."""
    import bench_ann

    from openknn.core import hyperparameters
    from openknn.core.search import search
    from openknn.jobs import training
    from openknn.jobs.datasets import fashion_mnist, read_ivecs

    path = shared_file("fashion-mnist")
    data = fashion_mnist(path)
    truth = read_ivecs(shared_file("fashion-mnist", "t10k-vs-train_knn100_ids.ivecs.gz"))
    hp = hyperparameters.parse({"feature_dim": "784", "k": "10", "sample_size": "60000",
                                "predictor_type": "classifier", "index_type": index_type,
                                "_target_recall": "0.95"})
    model = training.build_model(data["train_images"], data["train_labels"], hp)
    assert model.meta.tuning is not None and model.meta.tuning["recall"] >= 0.95
    queries = model.prepare_queries(data["test_images"])
    _, ids = search(model.index, queries, 10, "L2", model.meta.nprobe)
    assert bench_ann.recall(ids, truth) >= 0.95
