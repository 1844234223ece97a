"""openknn.core.gpu without a GPU: which requests resolve to a GPU and which fail (with what
message), the GpuIndex stand-in's answers (its "device" a CPU clone, so every fallback is
exercised), and the build / attach paths with the copy to the device replaced by a CPU clone
or by a failing one. tests/gpu/ runs the same paths on a real GPU."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import pytest

from openknn.core import gpu
from openknn.core import index as faiss_index
from openknn.core.search import search as knn_search
from openknn.errors import ClientError
from openknn.jobs import training
from openknn.jobs.data import Channel
from openknn.settings import from_env, parse_gpus

from ..conftest import write_csv

RNG = np.random.default_rng(7)
BASE = RNG.standard_normal((2000, 12)).astype(np.float32)
QUERIES = RNG.standard_normal((50, 12)).astype(np.float32)


# ---------------------------------------------------------------- resolve


@pytest.mark.parametrize(("request_", "index_type", "available", "expected"), [
    ("auto", "faiss.Flat", 0, 0), ("auto", "faiss.Flat", 1, 1), ("auto", "faiss.IVFPQ", 4, 1),
    ("auto", "faiss.HNSW", 1, 0), (0, "faiss.HNSW", 0, 0), (0, "faiss.Flat", 1, 0),
    (1, "faiss.IVFFlat", 1, 1), (3, "faiss.Flat", 8, 1),
])
def test_resolve(request_: int | str, index_type: str, available: int, expected: int) -> None:
    assert gpu.resolve(request_, index_type, available, built=True) == expected


@pytest.mark.parametrize(("request_", "index_type", "available", "built", "message"), [
    (1, "faiss.HNSW", 1, True,
     r"_num_gpus=1: faiss has no GPU implementation of faiss.HNSW; set _num_gpus=0 or 'auto'"),
    (1, "faiss.Flat", 0, False,
     r"_num_gpus=1: the installed faiss is the CPU build; install faiss's GPU build: "
     r"pip uninstall -y faiss-cpu && pip install --force-reinstall faiss-gpu-cu12"),
    (2, "faiss.IVFPQ", 0, True, r"_num_gpus=2: faiss sees no GPU \(check nvidia-smi"),
])
def test_resolve_refuses_what_cannot_be_had(request_: int, index_type: str, available: int,
                                            built: bool, message: str) -> None:
    with pytest.raises(ClientError, match=message):
        gpu.resolve(request_, index_type, available, built)


@pytest.mark.parametrize(("instance_type", "expected"), [
    ("ml.p3.2xlarge", "auto"), ("ml.g5.xlarge", "auto"), ("local_gpu", "auto"),
    ("ml.m5.2xlarge", 0), ("ml.c5.xlarge", 0), ("local", 0),
])
def test_instance_types(instance_type: str, expected: int | str) -> None:
    assert gpu.for_instance_type(instance_type) == expected


def test_serving_setting() -> None:
    assert parse_gpus("auto", "--gpus") == "auto" and parse_gpus(" 1 ", "--gpus") == 1
    assert from_env({}).gpus == "auto" and from_env({"OPENKNN_NUM_GPUS": "0"}).gpus == 0
    with pytest.raises(ClientError, match=r"OPENKNN_NUM_GPUS='two' is not 'auto' or a GPU "
                                          r"count; give auto, 0 \(CPU only\) or 1"):
        from_env({"OPENKNN_NUM_GPUS": "two"})
    with pytest.raises(ClientError, match=r"--gpus='-1' is not 'auto' or a GPU count"):
        parse_gpus("-1", "--gpus")


# ---------------------------------------------------------------- GpuIndex


def ivf(nlist: int = 64) -> Any:
    return faiss_index.build(BASE, 1, faiss_index.IndexConfig("faiss.IVFFlat", nlist=nlist))


def test_gpu_index_answers_as_the_cpu_index_does() -> None:
    """Through the stand-in with a CPU clone as the device: the same neighbours as plain
    search, including rows whose probed lists hold fewer than k points (k=100, nprobe 1)."""
    index = ivf()
    stand_in = gpu.GpuIndex(index, faiss.clone_index(index))
    for k, nprobe in ((10, 5), (100, 1), (5, 64)):
        want = knn_search(index, QUERIES, k, "L2", nprobe)
        got = knn_search(stand_in, QUERIES, k, "L2", nprobe)
        np.testing.assert_array_equal(got[1], want[1])
        assert (got[1] >= 0).all()
    flat = faiss_index.build(BASE, 1, faiss_index.IndexConfig())
    got = knn_search(gpu.GpuIndex(flat, faiss.clone_index(flat)), QUERIES, 7, "L2")
    np.testing.assert_array_equal(got[1], knn_search(flat, QUERIES, 7, "L2")[1])


class Recorder:
    """A device that records its searches (and answers like the CPU index)."""

    def __init__(self, index: Any) -> None:
        self.index, self.calls = index, []

    def search(self, x: np.ndarray, k: int, params: Any = None) -> tuple[np.ndarray, ...]:
        self.calls.append((len(x), k, None if params is None else params.nprobe))
        return tuple(self.index.search(x, k, params=params))


def test_gpu_index_leaves_to_the_cpu_what_the_gpu_cannot_do(
        monkeypatch: pytest.MonkeyPatch) -> None:
    index = ivf()
    device = Recorder(faiss.clone_index(index))
    stand_in = gpu.GpuIndex(index, device)
    stand_in.search_raw(QUERIES, 10, 500)  # nprobe is capped at nlist first
    assert device.calls == [(50, 10, 64)]
    monkeypatch.setattr(gpu, "MAX_SELECTION", 32)  # faiss GPU's limit, made small
    device.calls.clear()
    dist, ids = stand_in.search_raw(QUERIES, 10, 40)  # nprobe 40 > 32: the CPU answers
    assert device.calls == []
    want = faiss_index.raw_search(index, QUERIES, 10, 40)
    np.testing.assert_array_equal(ids, want[1])
    stand_in.search_raw(QUERIES, 40, 5)  # so does k 40 > 32
    assert device.calls == []


# ---------------------------------------------------------------- build and attach


@pytest.fixture
def fake_gpu(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """One visible "GPU" whose copies are CPU clones; records what was copied."""
    copies: list[str] = []

    def to_gpu(index: Any) -> Any:
        copies.append(type(index).__name__)
        return faiss.clone_index(index)

    monkeypatch.setattr(gpu, "visible", lambda: 1)
    monkeypatch.setattr(gpu, "gpu_build", lambda: True)
    monkeypatch.setattr(gpu, "clone_to_gpu", to_gpu)
    monkeypatch.setattr(gpu, "clone_to_cpu", faiss.clone_index)
    return copies


def failing_copy(index: Any) -> Any:
    raise RuntimeError("Error in GpuIndexIVFPQ: Number of dimensions per sub-quantizer (7) "
                       "is not currently supported")


@pytest.mark.parametrize("index_type", ["faiss.IVFFlat", "faiss.IVFPQ"])
def test_build_on_the_device_gives_the_cpu_build(fake_gpu: list[str], index_type: str) -> None:
    """Trained on the (stand-in) device with the same seed: the CPU copy written to the
    model is the index a CPU build makes, and the device copy searches for it."""
    config = faiss_index.IndexConfig(index_type, nlist=16, pq_m=4 if "PQ" in index_type
                                     else None)
    cpu, searcher = gpu.build(BASE, 5, config, seed=3, gpus=1, strict=True)
    assert fake_gpu == [index_type.replace("faiss.", "Index")]  # copied while still empty
    assert isinstance(searcher, gpu.GpuIndex) and searcher.cpu is cpu
    plain = faiss_index.build(BASE, 5, config, seed=3)
    assert faiss_index.serialize(cpu) == faiss_index.serialize(plain)
    got = knn_search(searcher, QUERIES, 5, "L2", 4)[1]
    np.testing.assert_array_equal(got, knn_search(plain, QUERIES, 5, "L2", 4)[1])


def test_build_on_the_cpu_without_gpus(fake_gpu: list[str]) -> None:
    cpu, searcher = gpu.build(BASE, 5, faiss_index.IndexConfig(), 0, gpus=0, strict=False)
    assert searcher is None and fake_gpu == [] and cpu.ntotal == len(BASE)


def test_a_gpu_failure_falls_back_under_auto_and_fails_when_asked(
        fake_gpu: list[str], monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(gpu, "clone_to_gpu", failing_copy)
    config = faiss_index.IndexConfig("faiss.IVFPQ", nlist=8, pq_m=4)
    with caplog.at_level(logging.WARNING, "openknn.core.gpu"):
        cpu, searcher = gpu.build(BASE, 5, config, 0, gpus=1, strict=False)
    assert searcher is None and cpu.is_trained and cpu.ntotal == len(BASE)
    assert "Building faiss.IVFPQ on the GPU failed (Error in GpuIndexIVFPQ" in caplog.text
    with pytest.raises(ClientError, match=r"_num_gpus: building faiss.IVFPQ on the GPU "
                                          r"failed: Error in GpuIndexIVFPQ: .*; set "
                                          r"_num_gpus=0 or 'auto'"):
        gpu.build(BASE, 5, config, 0, gpus=1, strict=True)


def test_attach(fake_gpu: list[str], monkeypatch: pytest.MonkeyPatch,
                caplog: pytest.LogCaptureFixture) -> None:
    index = ivf(16)
    assert isinstance(gpu.attach(index, "faiss.IVFFlat", "auto"), gpu.GpuIndex)
    assert gpu.attach(index, "faiss.IVFFlat", 0) is None
    hnsw = faiss_index.build(BASE, 5, faiss_index.IndexConfig("faiss.HNSW"))
    assert gpu.attach(hnsw, "faiss.HNSW", "auto") is None
    assert fake_gpu == ["IndexIVFFlat"]
    monkeypatch.setattr(gpu, "clone_to_gpu", failing_copy)
    with caplog.at_level(logging.WARNING, "openknn.core.gpu"):
        assert gpu.attach(index, "faiss.IVFFlat", "auto") is None
    assert "searching on the CPU" in caplog.text
    with pytest.raises(ClientError, match=r"--gpus: copying the faiss.IVFFlat index to the "
                                          r"GPU failed: Error in GpuIndexIVFPQ: .*; set "
                                          r"--gpus=0 or 'auto'"):
        gpu.attach(index, "faiss.IVFFlat", 1)


# ---------------------------------------------------------------- the training job


def test_training_job_on_a_device_scores_there_and_writes_the_cpu_model(
        fake_gpu: list[str], tmp_path: Path) -> None:
    x = RNG.standard_normal((1200, 8))
    y = (x[:, 0] > 0).astype(np.float64)
    write_csv(tmp_path / "train" / "a.csv", x[:1000], y[:1000])
    write_csv(tmp_path / "test" / "t.csv", x[1000:], y[1000:])
    channels = {"train": Channel("train", str(tmp_path / "train")),
                "test": Channel("test", str(tmp_path / "test"))}
    hp = {"feature_dim": "8", "k": "5", "predictor_type": "classifier", "sample_size": "1000",
          "index_type": "faiss.IVFFlat", "faiss_index_ivf_nlists": "10"}
    results = {n: training.run(training.TrainingJobSpec(
        {**hp, "_num_gpus": n}, channels, output_dir=tmp_path / f"out{n}", threads=1))
        for n in ("0", "1")}
    assert results["1"].metrics["device"] == "GPU 0" and results["0"].metrics["device"] == "CPU"
    assert fake_gpu == ["IndexIVFFlat"]
    assert results["1"].metrics["test"] == results["0"].metrics["test"]
    tars = [(tmp_path / f"out{n}" / "model.tar.gz").read_bytes() for n in ("0", "1")]
    assert tars[0] == tars[1]  # the artifact is the CPU index either way


@pytest.mark.skipif(not gpu.gpu_build(), reason="faiss's cloner options are in its GPU build")
def test_cloner_options_for_the_gpu_kernels() -> None:
    """Precomputed tables where a sub-quantiser's width is not one the kernels scan (the
    tutorial's m=8 over 56 dimensions: 7), float16 lookup tables above 48 sub-quantisers."""
    def ivfpq(dim: int, m: int) -> Any:
        return faiss_index.empty(np.zeros((1000, dim), np.float32), 1,
                                 faiss_index.IndexConfig("faiss.IVFPQ", nlist=4, pq_m=m))[0]

    tutorial, wide, plain = (gpu.cloner_options(ivfpq(54, 8)), gpu.cloner_options(ivfpq(112, 56)),
                             gpu.cloner_options(ivfpq(64, 16)))
    assert tutorial.usePrecomputed and not tutorial.useFloat16
    assert wide.useFloat16 and not wide.usePrecomputed  # 2 dims per sub-quantiser
    assert not plain.usePrecomputed and not plain.useFloat16
    flat = gpu.cloner_options(faiss_index.build(BASE, 1, faiss_index.IndexConfig()))
    assert not flat.usePrecomputed and not flat.useFloat16
