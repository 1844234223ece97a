"""Exact means exact: a Flat L2 model returns float64 brute force's neighbours and distances
(to float32 rounding of the true distance) on data that makes faiss's float32 BLAS path
cancel — covtype with its distance columns scaled by 1,000, rows offset by 1e4 with
duplicates, the raw diabetes features — for batches of 1, 16, 581 and 4,096 rows; IVF, PQ
and HNSW report exact distances for the neighbours they return; and an endpoint's answer to
a request is the same alone and inside a batch with other traffic."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import faiss
import httpx
import numpy as np
import pytest
from scipy.spatial import distance

from openknn.core import gpu, hyperparameters
from openknn.core import index as faiss_index
from openknn.core.model import KnnModel
from openknn.core.search import search
from openknn.formats import csv as csv_format
from openknn.jobs import artifact, datasets, training
from openknn.jobs.data import Channel
from openknn.serving.app import create_app
from openknn.settings import ServingSettings

from ..conftest import SHARED_DATA, AppClient, write_csv

K = 10
BATCHES = (1, 16, 581, 4096)
COVTYPE = SHARED_DATA / "covtype" / "kaggle-forest-cover-type-prediction_train.csv.gz"
DISTANCE_COLUMNS = [3, 4, 5, 9]  # horizontal / vertical distances to water, roads, fire
TOLERANCE = 2.0 ** -22  # two float32 ulps, relative: the reported value's own rounding


def covtype_scaled() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if not COVTYPE.exists():
        pytest.skip(f"real data set not present: {COVTYPE}")
    split = datasets.tutorial_split(datasets.load_covtype(COVTYPE))
    train, test = split.train_x.copy(), split.test_x.copy()
    train[:, DISTANCE_COLUMNS] *= 1000
    test[:, DISTANCE_COLUMNS] *= 1000
    # 4,096 queries: the test rows, then training rows (their own nearest point at 0).
    queries = np.concatenate([test, train[: 4096 - len(test)]])
    return train, split.train_y, queries


def offset_with_duplicates() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    base = rng.random((3000, 12)) + 1e4
    train = np.concatenate([base, base[:500]])  # 500 points twice
    queries = np.concatenate([rng.random((3596, 12)) + 1e4, base[:500]])
    return train, rng.integers(0, 5, len(train)).astype(np.float64), queries


def diabetes_raw() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    sklearn_datasets = pytest.importorskip("sklearn.datasets")
    x, y = sklearn_datasets.load_diabetes(return_X_y=True, scaled=False)
    x = x * np.array([1, 1, 1, 1, 100, 100, 1, 1, 1000, 1])  # thousands beside fractions
    queries = np.concatenate([x + 0.5] * 10)[:4096]
    return x, y, queries


CASES = {"covtype-distances-x1000": covtype_scaled, "offset-1e4-duplicates":
         offset_with_duplicates, "diabetes-raw": diabetes_raw}


def flat_model(train: np.ndarray, labels: np.ndarray, index_type: str = "faiss.Flat",
               **extra: str) -> KnnModel:
    hp = hyperparameters.parse({"feature_dim": str(train.shape[1]), "k": str(K),
                                "sample_size": str(len(train)), "predictor_type": "regressor",
                                "index_type": index_type, **extra})
    return training.build_model(train.astype(np.float32), labels.astype(np.float32), hp)


def true_distances(train32: np.ndarray, queries32: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """float64 distances of each query to the given stored rows (direct differences)."""
    diff = train32.astype(np.float64)[ids] - queries32.astype(np.float64)[:, None, :]
    return np.sqrt(np.einsum("ncd,ncd->nc", diff, diff))


def brute_force(train32: np.ndarray, queries32: np.ndarray) -> np.ndarray:
    """float64 brute force: each query's exact k-th nearest distance. scipy's ``cdist``
    sums squared direct differences in float64 (never the expanded ‖x‖² + ‖y‖² − 2x·y),
    by chunks of queries on two threads (it releases the GIL); ``np.partition`` picks the
    k-th smallest without sorting each row."""
    a = train32.astype(np.float64)

    def kth(chunk: np.ndarray) -> np.ndarray:
        d2 = distance.cdist(chunk, a, "sqeuclidean")
        return np.sqrt(np.partition(d2, K - 1, axis=1)[:, K - 1])

    chunks = np.array_split(queries32.astype(np.float64), 32)
    with ThreadPoolExecutor(2) as pool:
        return np.concatenate(list(pool.map(kth, chunks)))


def answer(model: KnnModel, queries: np.ndarray, batch: int) -> tuple[np.ndarray, np.ndarray]:
    """The model's distances and ids, ``batch`` rows per search."""
    parts = [search(model.index, model.prepare_queries(queries[a:a + batch]), K, "L2",
                    model.meta.nprobe) for a in range(0, len(queries), batch)]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


@pytest.fixture(scope="module", params=list(CASES))
def case(request: pytest.FixtureRequest) -> tuple[KnnModel, np.ndarray, np.ndarray,
                                                   np.ndarray]:
    train, labels, queries = CASES[request.param]()
    train32, queries32 = train.astype(np.float32), queries.astype(np.float32)
    return flat_model(train, labels), train32, queries32, brute_force(train32, queries32)


def test_the_data_makes_faiss_float32_path_misstate_distances(case: tuple) -> None:
    """The defect first: raw faiss's BLAS path on these vectors is off by far more than
    float32 rounding (it is what openknn searched with before)."""
    _, train32, queries32, _ = case
    index = faiss.IndexFlatL2(train32.shape[1])
    index.add(train32)
    default = faiss.cvar.distance_compute_blas_threshold
    faiss.cvar.distance_compute_blas_threshold = 16 * train32.shape[1]
    try:
        dist, ids = index.search(queries32[:581], K)
    finally:
        faiss.cvar.distance_compute_blas_threshold = default
    true = true_distances(train32, queries32[:581], ids)
    error = np.abs(np.sqrt(np.maximum(dist, 0)) - true) / np.maximum(true, 1e-9)
    assert error.max() > 1e-3


@pytest.mark.parametrize("batch", BATCHES)
def test_flat_equals_float64_brute_force_for_every_batch_size(case: tuple, batch: int) -> None:
    model, train32, queries32, kth = case
    rows = min(len(queries32), max(batch, 600) if batch < 581 else batch)
    dist, ids = answer(model, queries32[:rows], batch)
    # each reported distance is the true distance of the reported point
    np.testing.assert_allclose(dist, true_distances(train32, queries32[:rows], ids),
                               rtol=TOLERANCE, atol=0)
    # and no nearer point was missed: the k-th is brute force's k-th
    np.testing.assert_allclose(dist[:, -1], kth[:rows], rtol=TOLERANCE, atol=0)
    assert (np.diff(dist, axis=1) >= 0).all()
    if rows > 3596:  # the offset case's last 500 queries are stored points: distance 0
        assert (dist[:, 0] >= 0).all()


def test_an_answer_does_not_depend_on_its_batch(case: tuple) -> None:
    model, _, queries32, _ = case
    alone = [answer(model, queries32[i:i + 1], 1) for i in range(0, 581, 29)]
    together = answer(model, queries32[:581], 581)
    for j, i in enumerate(range(0, 581, 29)):
        np.testing.assert_array_equal(alone[j][0][0], together[0][i])
        np.testing.assert_array_equal(alone[j][1][0], together[1][i])


def test_stored_points_are_found_at_distance_zero() -> None:
    train, labels, queries = offset_with_duplicates()
    model = flat_model(train, labels)
    dist, ids = answer(model, queries[-500:].astype(np.float32), 581)
    assert (dist[:, :2] == 0).all()  # each point and its duplicate
    np.testing.assert_array_equal(np.sort(ids[:, :2], axis=1)[:, 1] - 3000, np.arange(500))


@pytest.mark.parametrize(("index_type", "extra"), [
    ("faiss.IVFFlat", {}), ("faiss.HNSW", {}), ("faiss.IVFPQ", {"faiss_index_pq_m": "2"})])
def test_approximate_indexes_report_exact_distances_for_what_they_return(
        index_type: str, extra: dict[str, str]) -> None:
    train, labels, queries = covtype_scaled()
    model = flat_model(train, labels, index_type, **extra)
    dist, ids = answer(model, queries[:581].astype(np.float32), 581)
    # the points as the index holds them (IVFPQ: decoded), shifted back
    held = model.index.reconstruct_batch(np.arange(model.index.ntotal)) + model.center
    np.testing.assert_allclose(dist, true_distances(held, queries[:581].astype(np.float32),
                                                    ids), rtol=TOLERANCE, atol=1e-3)
    if index_type != "faiss.IVFPQ":  # exact storage: the stored points are the data
        np.testing.assert_allclose(
            dist, true_distances(train.astype(np.float32), queries[:581].astype(np.float32),
                                 ids), rtol=TOLERANCE, atol=0)
    alone = answer(model, queries[:40].astype(np.float32), 1)
    np.testing.assert_array_equal(alone[1], ids[:40])


def test_training_job_test_mse_equals_scikit_learn_on_raw_features(tmp_path: Path) -> None:
    neighbors = pytest.importorskip("sklearn.neighbors")
    x, y, _ = diabetes_raw()
    x32 = x.astype(np.float32)
    write_csv(tmp_path / "train" / "part-0.csv", x32[:350], y[:350])
    write_csv(tmp_path / "test" / "part-0.csv", x32[350:], y[350:])
    result = training.run(training.TrainingJobSpec(
        hyperparameters={"feature_dim": "10", "k": str(K), "predictor_type": "regressor",
                         "sample_size": "350"},
        channels={"train": Channel("train", str(tmp_path / "train")),
                  "test": Channel("test", str(tmp_path / "test"))}, threads=2))
    ref = neighbors.KNeighborsRegressor(n_neighbors=K, algorithm="brute").fit(
        x32[:350].astype(np.float64), y[:350])
    mse = float(np.mean((ref.predict(x32[350:].astype(np.float64)) - y[350:]) ** 2))
    assert result.metrics["test"]["metric"] == "mse"
    assert result.metrics["test"]["value"] == pytest.approx(mse, rel=1e-6)


# ------------------------------------------------------------------ the endpoint, under load

@pytest.fixture(scope="module")
def covtype_endpoint(tmp_path_factory: pytest.TempPathFactory,
                     ) -> Iterator[tuple[AppClient, bytes]]:
    """The endpoint's app in process (``conftest.AppClient``), as ``openknn serve MODEL
    --threads 2`` runs it with ``OPENKNN_BATCH_WINDOW_MS=20``: the model read back from its
    model.tar.gz, a GPU copy attached where ``--gpus``' default finds one."""
    train, labels, queries = covtype_scaled()
    path = tmp_path_factory.mktemp("exact") / "model.tar.gz"
    artifact.write_model_tar(flat_model(train, labels), path)
    settings = ServingSettings(threads=2, batch_window_ms=20)
    model = artifact.load(path)
    model.searcher = gpu.attach(model.index, model.meta.index_type, settings.gpus)
    configured = faiss_index._configured[0]  # the app's startup sets faiss's threads
    try:
        with AppClient(create_app(model, settings), timeout_s=120) as client:
            yield client, csv_format.encode_csv(queries[:581].astype(np.float32))
    finally:
        faiss_index._configured[0] = configured


VERBOSE = {"Content-Type": "text/csv", "Accept": "application/json; verbose=true"}


def test_a_request_answers_the_same_alone_and_inside_a_batch(
        covtype_endpoint: tuple[AppClient, bytes]) -> None:
    client, body = covtype_endpoint
    alone = client.post("/invocations", content=body, headers=VERBOSE)
    assert alone.status_code == 200
    before = client.get("/metrics").text

    async def under_load(client: httpx.AsyncClient) -> list[httpx.Response]:
        rows = body.split(b"\n")
        others = [client.post("/invocations", content=rows[i % 500] + b"\n",
                              headers=VERBOSE) for i in range(40)]
        others += [client.post("/invocations", content=b"\n".join(rows[i:i + 16]),
                               headers=VERBOSE) for i in range(0, 160, 16)]
        mine = [client.post("/invocations", content=body, headers=VERBOSE)
                for _ in range(3)]
        return list(await asyncio.gather(*others[:25], *mine, *others[25:]))

    responses = client.run(under_load)
    assert all(r.status_code == 200 for r in responses)
    mine = responses[25:28]
    assert all(r.content == alone.content for r in mine)
    after = client.get("/metrics").text
    count = lambda text: float(next(line.rsplit(" ", 1)[1] for line in text.splitlines()
                                    if line.startswith("openknn_batch_rows_count")))
    total = lambda text: float(next(line.rsplit(" ", 1)[1] for line in text.splitlines()
                                    if line.startswith("openknn_batch_rows_sum")))
    searches, rows = count(after) - count(before), total(after) - total(before)
    requests = len(responses)
    assert searches < requests, "the requests were not micro-batched together"
    assert rows == 40 + 160 + 3 * 581
