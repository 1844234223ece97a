"""An index split over shards answers exactly as the whole index: Flat (every metric, ties
by id), IVFFlat and IVFPQ, including the IVF re-search of rows with too few candidates."""

from __future__ import annotations

import numpy as np
import pytest

from openknn.core import index as fi
from openknn.core import sharding
from openknn.core.model import KnnModel, ModelMeta
from openknn.core.search import search as knn_search
from openknn.errors import DataError
from openknn.serving.inference import knob_override

RNG = np.random.default_rng(4)
BASE = RNG.standard_normal((1000, 8)).astype(np.float32)
QUERIES = RNG.standard_normal((60, 8)).astype(np.float32)


@pytest.mark.parametrize("shards", [1, 2, 3, 7])
@pytest.mark.parametrize(("index_type", "metric"), [
    ("faiss.Flat", "L2"), ("faiss.Flat", "INNER_PRODUCT"), ("faiss.Flat", "COSINE"),
    ("faiss.IVFFlat", "L2"), ("faiss.IVFPQ", "L2"), ("faiss.IVFFlat", "INNER_PRODUCT")])
def test_sharded_equals_whole(index_type: str, metric: str, shards: int) -> None:
    config = fi.IndexConfig(index_type, metric, nlist=16, pq_m=4, nprobe=2)
    whole = fi.build(BASE, 10, config)
    q = fi.prepare(QUERIES, metric, whole.d)
    expected = knn_search(whole, q, 10, metric, 2)
    split = sharding.local_shards(whole, shards, metric)
    got = knn_search(split, q, 10, metric, 2)
    np.testing.assert_array_equal(got[1], expected[1])
    np.testing.assert_allclose(got[0], expected[0], rtol=1e-5)


def test_ties_across_shards_go_to_the_smaller_id() -> None:
    base = np.zeros((6, 2), np.float32)  # all at distance 0 from the origin
    whole = fi.build(base, 4, fi.IndexConfig())
    got = knn_search(sharding.local_shards(whole, 3, "L2"), np.zeros((1, 2), np.float32), 4,
                    "L2")
    assert got[1].tolist() == [[0, 1, 2, 3]]


def test_ivf_rows_with_few_candidates_are_searched_again() -> None:
    base = RNG.standard_normal((300, 4)).astype(np.float32)
    whole = fi.build(base, 20, fi.IndexConfig("faiss.IVFFlat", nlist=64))
    q = RNG.standard_normal((50, 4)).astype(np.float32)
    expected = knn_search(whole, q, 20, "L2", 1)
    got = knn_search(sharding.local_shards(whole, 3, "L2"), q, 20, "L2", 1)
    assert (got[1] >= 0).all()
    np.testing.assert_array_equal(got[1], expected[1])


def test_merge_puts_missing_candidates_last() -> None:
    parts = [(np.array([[1.0, 9.0]]), np.array([[4, -1]])),
             (np.array([[0.5, 2.0]]), np.array([[7, 8]]))]
    d, i = sharding.merge(parts, 3, ascending=True)
    assert i.tolist() == [[7, 4, 8]] and d.tolist() == [[0.5, 1.0, 2.0]]


def test_a_sharded_model_takes_the_per_request_nprobe() -> None:
    """The override is checked against the model's index type and nlist, not the index
    object, which is a ShardedIndex here."""
    config = fi.IndexConfig("faiss.IVFFlat", nlist=16)
    whole = fi.build(BASE, 5, config)
    meta = ModelMeta(k=5, predictor_type="classifier", feature_dim=BASE.shape[1],
                     index_dim=BASE.shape[1], index_type="faiss.IVFFlat",
                     faiss_index_ivf_nlists=16)
    model = KnnModel(meta, sharding.local_shards(whole, 3, "L2"),
                     np.zeros(len(BASE), np.float32))
    assert knob_override(model, "text/csv; nprobe=16") == 16
    with pytest.raises(DataError, match=r"nprobe=17 is larger than the index's nlist=16"):
        knob_override(model, "text/csv; nprobe=17")
    got = model.neighbors(QUERIES, nprobe=16)[0]
    np.testing.assert_allclose(got, knn_search(whole, QUERIES, 5, "L2", 16)[0], rtol=1e-6)
