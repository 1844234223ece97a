"""openknn on a real GPU (faiss's GPU build and a device; marker ``gpu``, skipped cleanly
elsewhere; ``benchmarks/gpu_check.sh`` runs them): exact search on the GPU equals the CPU's,
IVF indexes built on the GPU keep their recall and search alike from either copy, a training
job with ``_num_gpus=1`` scores like the CPU job, and ``openknn serve --gpus 1`` answers like
the in-process CPU model.

``OPENKNN_TEST_FAKE_GPU=1`` runs the in-process tests with the copy to the GPU replaced by a
CPU clone: a dry run of the tests themselves where there is no GPU, not a GPU check."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import pytest

from openknn.core import gpu
from openknn.core import index as faiss_index
from openknn.core.search import search as knn_search
from openknn.jobs import artifact, training
from openknn.jobs.data import Channel
from openknn.serving import process

from ..conftest import shared_file, write_csv

pytestmark = pytest.mark.gpu
FAKE = os.environ.get("OPENKNN_TEST_FAKE_GPU") == "1"
RNG = np.random.default_rng(11)


@pytest.fixture
def device(monkeypatch: pytest.MonkeyPatch) -> None:
    """A GPU faiss can use, or a skip (or, for a dry run, the CPU-clone stand-in)."""
    if FAKE:
        monkeypatch.setattr(gpu, "visible", lambda: 1)
        monkeypatch.setattr(gpu, "gpu_build", lambda: True)
        monkeypatch.setattr(gpu, "clone_to_gpu", faiss.clone_index)
        monkeypatch.setattr(gpu, "clone_to_cpu", faiss.clone_index)
    elif gpu.visible() == 0:
        pytest.skip("no GPU visible to faiss (faiss GPU build and a device needed)")


def digits() -> tuple[np.ndarray, np.ndarray]:
    sklearn_datasets = pytest.importorskip("sklearn.datasets")
    x, y = sklearn_datasets.load_digits(return_X_y=True)
    return x.astype(np.float32), y.astype(np.float32)


def overlap(a: np.ndarray, b: np.ndarray) -> float:
    """Mean share of each row's ids found in both answers."""
    return float(np.mean([len(set(p) & set(q)) / len(p) for p, q in zip(a.tolist(), b.tolist())]))


@pytest.mark.parametrize("metric", ["L2", "INNER_PRODUCT", "COSINE"])
def test_flat_on_the_gpu_equals_the_cpu(device: None, metric: str) -> None:
    x, _ = digits()
    base, queries = x[:1500], x[1500:]
    config = faiss_index.IndexConfig(metric=metric)
    index = faiss_index.build(base, 10, config)
    searcher = gpu.attach(index, "faiss.Flat", 1)
    assert isinstance(searcher, gpu.GpuIndex)
    q = faiss_index.prepare(queries, metric, index.d)
    d_cpu, i_cpu = knn_search(index, q, 10, metric)
    d_gpu, i_gpu = knn_search(searcher, q, 10, metric)
    np.testing.assert_allclose(d_gpu, d_cpu, rtol=1e-4, atol=1e-3)
    assert overlap(i_gpu, i_cpu) > 0.999  # only ties at the k-th distance may differ


@pytest.mark.parametrize(("index_type", "pq_m", "dim"), [
    ("faiss.IVFFlat", None, 54), ("faiss.IVFPQ", 8, 54),  # the tutorial's IVFPQ: 7 dims/code
    ("faiss.IVFPQ", 16, 64), ("faiss.IVFPQ", 56, 112),  # float16 lookup tables
])
def test_ivf_built_on_the_gpu(device: None, index_type: str, pq_m: int | None,
                              dim: int) -> None:
    centres = RNG.standard_normal((40, dim)).astype(np.float32) * 4
    base = (centres[RNG.integers(0, 40, 20000)]
            + RNG.standard_normal((20000, dim)).astype(np.float32))
    queries = base[:500] + 0.1 * RNG.standard_normal((500, dim)).astype(np.float32)
    config = faiss_index.IndexConfig(index_type, nlist=64, pq_m=pq_m)
    cpu, searcher = gpu.build(base, 10, config, seed=0, gpus=1, strict=True)
    assert searcher is not None and cpu.ntotal == len(base)
    q = faiss_index.prepare(queries, "L2", cpu.d)
    exact = knn_search(faiss_index.build(base, 10, faiss_index.IndexConfig()),
                               faiss_index.prepare(queries, "L2", dim), 10, "L2")[1]
    on_cpu = knn_search(cpu, q, 10, "L2", 16)[1]
    on_gpu = knn_search(searcher, q, 10, "L2", 16)[1]
    cpu_built = knn_search(faiss_index.build(base, 10, config), q, 10, "L2", 16)[1]
    recall_cpu_built = overlap(cpu_built, exact)
    assert overlap(on_gpu, exact) > recall_cpu_built - 0.05
    assert overlap(on_gpu, on_cpu) > 0.95  # the written copy answers like the GPU one


def test_training_job_on_the_gpu_scores_like_the_cpu(device: None, tmp_path: Path) -> None:
    x, y = digits()
    write_csv(tmp_path / "train" / "a.csv", x[:1400], y[:1400])
    write_csv(tmp_path / "test" / "t.csv", x[1400:], y[1400:])
    channels = {"train": Channel("train", str(tmp_path / "train")),
                "test": Channel("test", str(tmp_path / "test"))}
    hp = {"feature_dim": "64", "k": "5", "predictor_type": "classifier", "sample_size": "1400"}
    runs = {n: training.run(training.TrainingJobSpec({**hp, "_num_gpus": n}, channels,
                                                     output_dir=tmp_path / f"out{n}"))
            for n in ("0", "1")}
    assert runs["1"].metrics["device"] == "GPU 0"
    assert runs["1"].metrics["test:accuracy"] == runs["0"].metrics["test:accuracy"]
    cpu_model = artifact.load(tmp_path / "out1" / "model.tar.gz")
    np.testing.assert_array_equal(cpu_model.predict(x[1400:]),
                                  runs["0"].model.predict(x[1400:]))


def test_covtype_flat_on_the_gpu_keeps_the_tutorial_accuracy(device: None,
                                                             tmp_path: Path) -> None:
    from openknn.jobs import datasets

    split = datasets.tutorial_split(datasets.load_covtype(
        shared_file("covtype", "kaggle-forest-cover-type-prediction_train.csv.gz")))
    write_csv(tmp_path / "train" / "a.csv", split.train_x, split.train_y)
    write_csv(tmp_path / "test" / "t.csv", split.test_x, split.test_y)
    channels = {"train": Channel("train", str(tmp_path / "train")),
                "test": Channel("test", str(tmp_path / "test"))}
    hp = {"feature_dim": "54", "k": "10", "predictor_type": "classifier",
          "sample_size": "200000"}
    acc = {n: training.run(training.TrainingJobSpec({**hp, "_num_gpus": n}, channels))
           .metrics["test:accuracy"] for n in ("0", "1")}
    assert acc["1"] == pytest.approx(acc["0"], abs=2 / len(split.test_y))  # ties at most


@pytest.mark.skipif(FAKE, reason="a server process cannot use the stand-in")
def test_endpoint_on_the_gpu_answers_like_the_cpu_model(device: None, tmp_path: Path) -> None:
    import httpx

    from openknn.formats.csv import encode_csv
    from openknn.formats.json import parse_predictions_json

    x, y = digits()
    write_csv(tmp_path / "train" / "a.csv", x[:1400], y[:1400])
    training.run(training.TrainingJobSpec(
        {"feature_dim": "64", "k": "5", "predictor_type": "classifier", "sample_size": "1400",
         "_num_gpus": "0"}, {"train": Channel("train", str(tmp_path / "train"))},
        output_dir=tmp_path / "out"))
    tar = tmp_path / "out" / "model.tar.gz"
    log = tmp_path / "serve.log"
    port = process.free_port()
    proc = process.start([str(tar), "--gpus", "1"], port, log)
    url = f"http://127.0.0.1:{port}"
    try:
        process.wait_ready(url, proc, log, timeout=300)
        r = httpx.post(f"{url}/invocations", content=encode_csv(x[1400:]),
                       headers={"Content-Type": "text/csv",
                                "Accept": "application/json; verbose=true"}, timeout=120)
        assert r.status_code == 200, r.text
        got: Any = parse_predictions_json(r.content)
    finally:
        process.stop(proc)
    assert re.search(r"Searching faiss.Flat on GPU 0", log.read_text())
    model = artifact.load(tar)
    dist, labels = model.neighbors(x[1400:])
    np.testing.assert_array_equal(got["predicted_label"], model.predict(x[1400:]))
    np.testing.assert_allclose(got["distances"], dist, rtol=1e-4, atol=1e-3)
