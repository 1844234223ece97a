"""The training job's steps: sampling size and determinism, reduction with PQ raising,
metrics, and no output when a step fails."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from openknn.errors import ChannelError
from openknn.jobs import artifact, training
from openknn.jobs.data import Channel

from ..conftest import write_csv

RNG = np.random.default_rng(0)
X = RNG.standard_normal((3000, 16)).astype(np.float32).astype(np.float64)
Y = (X[:, 0] > 0).astype(np.float64)
HP = {"feature_dim": "16", "k": "5", "predictor_type": "classifier"}


@pytest.fixture(scope="module")
def channel_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("channels")
    write_csv(root / "train" / "a.csv", X[:1500], Y[:1500])
    write_csv(root / "train" / "b.csv", X[1500:2500], Y[1500:2500])
    write_csv(root / "test" / "t.csv", X[2500:], Y[2500:])
    return root


def job(root: Path, out: Path, **hp: str) -> training.TrainingResult:
    return training.run(training.TrainingJobSpec(
        {**HP, "sample_size": "1000", **hp},
        {"train": Channel("train", str(root / "train")),
         "test": Channel("test", str(root / "test"))},
        output_dir=out, threads=1))


def tar_bytes(out: Path) -> dict[str, bytes]:
    model = artifact.load(out / "model.tar.gz")
    return artifact.model_bytes(model)


def test_sample_size_and_determinism(channel_dir: Path, tmp_path: Path) -> None:
    a = job(channel_dir, tmp_path / "a")
    job(channel_dir, tmp_path / "b")
    c = job(channel_dir, tmp_path / "c", _seed="1")
    assert a.model.meta.num_points == 1000 and a.metrics["records_read"] == 2500
    assert tar_bytes(tmp_path / "a") == tar_bytes(tmp_path / "b")
    assert tar_bytes(tmp_path / "a") != tar_bytes(tmp_path / "c")
    assert a.model.meta.sampling_seed == 0 and c.model.meta.sampling_seed == 1
    # the sample holds real training rows (the index may hold them shifted by the centre)
    rows = X[:2500].astype(np.float32).astype(np.float64)
    sample = a.model.index.reconstruct_n(0, 10).astype(np.float64)
    center = getattr(a.model, "center", None)
    sample = sample if center is None else sample + center
    nearest = ((sample[:, None, :] - rows[None, :, :]) ** 2).sum(axis=2).min(axis=1)
    assert np.all(nearest < 1e-9)


def test_sample_larger_than_data_keeps_everything(channel_dir: Path, tmp_path: Path) -> None:
    result = job(channel_dir, tmp_path, sample_size="200000")
    assert result.model.meta.num_points == 2500


@pytest.mark.parametrize("kind", ["sign", "fjlt"])
def test_reduction_is_stored_and_rebuilt(channel_dir: Path, tmp_path: Path, kind: str) -> None:
    result = job(channel_dir, tmp_path, dimension_reduction_type=kind,
                 dimension_reduction_target="8")
    meta = json.loads(artifact.model_bytes(result.model)[artifact.META_FILE])
    assert meta["dimension_reduction"] == {"type": kind, "seed": 0, "target_dim": 8,
                                           "input_dim": 16}
    assert meta["index_dim"] == 8
    loaded = artifact.load(tmp_path / "model.tar.gz")
    np.testing.assert_array_equal(loaded.predict(X[2500:].astype(np.float32)),
                                  result.model.predict(X[2500:].astype(np.float32)))
    assert result.metrics["test:accuracy"] > 0.6  # chance is 0.5


def test_ivfpq_raises_reduction_target_to_multiple_of_m(channel_dir: Path,
                                                        tmp_path: Path) -> None:
    result = job(channel_dir, tmp_path, index_type="faiss.IVFPQ", faiss_index_pq_m="4",
                 dimension_reduction_type="sign", dimension_reduction_target="6",
                 faiss_index_ivf_nlists="8")
    assert result.model.meta.dimension_reduction["target_dim"] == 8  # type: ignore[index]
    assert result.model.meta.index_dim == 8 and result.model.meta.faiss_index_pq_m == 4


def test_ivfpq_pads_without_reduction(channel_dir: Path, tmp_path: Path) -> None:
    result = job(channel_dir, tmp_path, index_type="faiss.IVFPQ", faiss_index_pq_m="3")
    assert result.model.meta.index_dim == 18 and result.model.index.d == 18
    assert result.model.meta.faiss_index_ivf_nlists == 32  # round(sqrt(1000))


def test_metrics_json(channel_dir: Path, tmp_path: Path) -> None:
    job(channel_dir, tmp_path, index_type="faiss.IVFFlat")
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["test"]["rows"] == 500 and metrics["test"]["metric"] == "accuracy"
    assert metrics["test"]["total"] == pytest.approx(metrics["test:accuracy"] * 500)
    assert metrics["hyperparameters"]["index_type"] == "faiss.IVFFlat"
    assert set(metrics["timings_seconds"]) >= {"sample", "build_index", "score_test", "total"}


def test_channel_rules(channel_dir: Path, tmp_path: Path) -> None:
    spec = training.TrainingJobSpec({**HP, "sample_size": "10"}, {}, output_dir=tmp_path)
    with pytest.raises(ChannelError, match=r"^Must provide train channel\.$"):
        training.run(spec)
    spec = training.TrainingJobSpec(
        {**HP, "sample_size": "10"},
        {"train": Channel("train", str(channel_dir / "train")),
         "validation": Channel("validation", str(channel_dir / "test"))},
        output_dir=tmp_path)
    with pytest.raises(ChannelError, match=r"Unknown channel\(s\) \['validation'\]"):
        training.run(spec)
    assert not (tmp_path / "model.tar.gz").exists()


def hosts_job(root: Path, out: Path, workers: int, distribution: str = "FullyReplicated",
              **hp: str) -> training.TrainingResult:
    return training.run(training.TrainingJobSpec(
        {**HP, "sample_size": "1000", **hp},
        {"train": Channel("train", str(root / "train"), None, distribution),
         "test": Channel("test", str(root / "test"))},
        output_dir=out, threads=1, instance_count=workers))


@pytest.mark.parametrize("sample_size", ["1000", "200000"])  # a sample, and every record
def test_fully_replicated_hosts_build_the_same_model(channel_dir: Path, tmp_path: Path,
                                                     sample_size: str) -> None:
    results = [hosts_job(channel_dir, tmp_path / str(w), w, sample_size=sample_size)
               for w in (1, 2, 3)]
    assert {r.model.meta.num_points for r in results} == {min(int(sample_size), 2500)}
    assert {r.metrics["records_read"] for r in results} == {2500}
    assert {r.metrics["test:accuracy"] for r in results} == {results[0].metrics["test:accuracy"]}
    assert tar_bytes(tmp_path / "1") == tar_bytes(tmp_path / "2") == tar_bytes(tmp_path / "3")
    # one host reads its files the same way whichever distribution is named
    hosts_job(channel_dir, tmp_path / "s", 1, "ShardedByS3Key", sample_size=sample_size)
    assert tar_bytes(tmp_path / "s") == tar_bytes(tmp_path / "1")


def test_fully_replicated_hosts_keep_disjoint_parts(channel_dir: Path) -> None:
    from openknn.core.hyperparameters import parse
    from openknn.jobs.data import require_files

    channel = Channel("train", str(channel_dir / "train"))
    files = require_files(channel)
    hp = parse({**HP, "sample_size": "1000"})
    whole = training.sample_host(channel, files, hp, 0, 1)
    parts = [training.sample_host(channel, files, hp, r, 3) for r in range(3)]
    ids = np.concatenate([p.ids for p in parts])
    assert len(ids) == len(np.unique(ids)) == 1000
    np.testing.assert_array_equal(np.sort(ids), whole.ids)
    assert [p.records for p in parts] == [834, 833, 833] and whole.records == 2500
    assert min(len(p.ids) for p in parts) > 250  # each host keeps about a third


def test_sample_does_not_depend_on_mini_batch_size(channel_dir: Path, tmp_path: Path) -> None:
    hosts_job(channel_dir, tmp_path / "a", 1, mini_batch_size="64")
    hosts_job(channel_dir, tmp_path / "b", 2, mini_batch_size="5000")
    assert tar_bytes(tmp_path / "a") == tar_bytes(tmp_path / "b")
