"""Recall-targeted tuning, HNSW indexes and the per-request search-knob override."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from openknn.core import hyperparameters
from openknn.core import index as fi
from openknn.core.search import search as knn_search
from openknn.errors import DataError
from openknn.jobs import artifact, training
from openknn.serving.inference import invoke, knob_override

RNG = np.random.default_rng(9)
CENTRES = RNG.standard_normal((20, 16)).astype(np.float32) * 4
X = (CENTRES[RNG.integers(0, 20, 4000)] + RNG.standard_normal((4000, 16))).astype(np.float32)
Y = RNG.integers(0, 3, 4000).astype(np.float32)


def model_for(index_type: str, **extra: str) -> training.KnnModel:
    hp = hyperparameters.parse({"feature_dim": "16", "k": "10", "sample_size": "4000",
                                "predictor_type": "classifier", "index_type": index_type,
                                **extra})
    return training.build_model(X, Y, hp)


def exact_ids(q: np.ndarray, metric: str = "L2") -> np.ndarray:
    whole = fi.build(X, 10, fi.IndexConfig(metric=metric))
    return knn_search(whole, fi.prepare(q, metric, 16), 10, metric)[1]


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(found.tolist(),
                                                                    truth.tolist())]))


@pytest.mark.parametrize("index_type", ["faiss.IVFFlat", "faiss.HNSW"])
def test_target_recall_is_reached_on_new_queries(index_type: str) -> None:
    model = model_for(index_type, _target_recall="0.9")
    tuned = model.meta.tuning
    assert tuned is not None and tuned["target"] == 0.9 and tuned["queries"] == 1000
    assert tuned["knob"] == ("nprobe" if index_type == "faiss.IVFFlat" else "efSearch")
    assert model.meta.nprobe == tuned["value"] and tuned["recall"] >= 0.9
    values = [v for v, _ in tuned["curve"]]
    assert values == sorted(values) and values[-1] == tuned["value"]
    # the smallest value that reaches it (with its 2-standard-error margin): the values
    # before it fall short of the target plus that margin
    assert all(r < 0.9 + 0.05 for _, r in tuned["curve"][:-1])
    q = (CENTRES[RNG.integers(0, 20, 500)] + RNG.standard_normal((500, 16))).astype(np.float32)
    found = knn_search(model.index, model.prepare_queries(q), 10, "L2", model.meta.nprobe)[1]
    assert recall(found, exact_ids(q)) >= 0.9


def test_flat_has_nothing_to_tune() -> None:
    assert model_for("faiss.Flat", _target_recall="0.99").meta.tuning is None


@pytest.mark.parametrize("metric", ["L2", "INNER_PRODUCT", "COSINE"])
def test_hnsw_every_metric_and_round_trip(tmp_path: Path, metric: str) -> None:
    model = model_for("faiss.HNSW", index_metric=metric, _hnsw_m="16",
                      _hnsw_ef_construction="64", _hnsw_ef_search="128")
    q = X[:50] + 0.01
    distances, _ = model.neighbors(q)
    step = np.diff(distances, axis=1)
    assert (step >= 0).all() if metric == "L2" else (step <= 1e-6).all()  # decision 1
    ids = knn_search(model.index, model.prepare_queries(q), 10, metric, 128)[1]
    assert recall(ids, exact_ids(q, metric)) > 0.95
    artifact.write_model_tar(model, tmp_path / "model.tar.gz")
    loaded = artifact.load(tmp_path / "model.tar.gz")
    assert loaded.meta.index_type == "faiss.HNSW" and loaded.meta.nprobe == 128
    np.testing.assert_array_equal(loaded.predict(q), model.predict(q))


def test_knob_override_and_its_errors() -> None:
    ivf = model_for("faiss.IVFFlat", faiss_index_ivf_nlists="16")
    assert knob_override(ivf, "text/csv; nprobe=16") == 16
    assert knob_override(ivf, "text/csv") is None
    with pytest.raises(DataError, match=r"nprobe=17 is larger than the index's nlist=16"):
        knob_override(ivf, "text/csv; nprobe=17")
    with pytest.raises(DataError, match=r"nprobe='x' must be a positive integer"):
        knob_override(ivf, "text/csv; nprobe=x")
    with pytest.raises(DataError, match=r"exact and has no search-time knob"):
        knob_override(model_for("faiss.Flat"), "text/csv; nprobe=2")
    hnsw = model_for("faiss.HNSW")
    assert knob_override(hnsw, "text/csv; ef_search=200") == 200
    with pytest.raises(DataError, match=r"an HNSW index takes ef_search="):
        knob_override(hnsw, "text/csv; nprobe=2")
    # nprobe = nlist visits every list: the exact answer
    q = X[:40] + 0.05
    body = "\n".join(",".join(map(repr, r.tolist())) for r in q).encode()
    exact = json.loads(invoke(model_for("faiss.Flat"), body, "text/csv",
                              "application/json; verbose=true")[0])
    full = json.loads(invoke(ivf, body, "text/csv; nprobe=16",
                             "application/json; verbose=true")[0])
    assert [p["labels"] for p in full["predictions"]] == [
        p["labels"] for p in exact["predictions"]]


def test_without_self_drops_the_query_point_only() -> None:
    from openknn.core.tuning import without_self

    ids = np.array([[5, 3, 7], [2, 9, 4], [3, 1, 0]])
    got = without_self(ids, np.array([3, 8, 3]), 2)
    assert got.tolist() == [[5, 7], [2, 9], [1, 0]]
