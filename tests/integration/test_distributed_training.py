"""Multi-host training: the in-process runner (default suite, no Ray) and Ray tasks (marker
`ray`) give bit-identical models for the same seed, hosts and files; FullyReplicated hosts
build the one-host model whatever their number (synthetic data, and the real Kaggle covtype
rows with scikit-learn's accuracy); a dead worker fails the job cleanly; no Ray means a clear
install hint."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from openknn.errors import AlgorithmError
from openknn.jobs import artifact, datasets, training
from openknn.jobs.data import Channel
from openknn.jobs.runner import LocalRunner

from ..conftest import shared_file, write_csv

RNG = np.random.default_rng(11)
X = RNG.standard_normal((1200, 8)).astype(np.float32).astype(np.float64)
Y = (X[:, 0] + X[:, 1] > 0).astype(np.float64)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("dist")
    for i in range(5):  # five train files of 200 rows, in sorted key order
        write_csv(root / "train" / f"part-{i}.csv", X[i * 200:(i + 1) * 200],
                  Y[i * 200:(i + 1) * 200])
    write_csv(root / "test" / "a.csv", X[1000:1100], Y[1000:1100])
    write_csv(root / "test" / "b.csv", X[1100:], Y[1100:])
    return root


def spec(data: Path, out: Path, workers: int, distribution: str = "ShardedByS3Key",
         **hp: str) -> training.TrainingJobSpec:
    return training.TrainingJobSpec(
        {"feature_dim": "8", "k": "5", "sample_size": "301", "predictor_type": "classifier",
         **hp},
        {"train": Channel("train", str(data / "train"), None, distribution),
         "test": Channel("test", str(data / "test"))},
        output_dir=out, threads=1, instance_count=workers)


def files_of(result: training.TrainingResult) -> dict[str, bytes]:
    return artifact.model_bytes(result.model)


def test_shard_assignment() -> None:
    files = list("abcdefg")
    assert training.shard(files, 0, 3, "ShardedByS3Key") == ["a", "d", "g"]  # type: ignore[arg-type]
    assert training.shard(files, 2, 3, "ShardedByS3Key") == ["c", "f"]  # type: ignore[arg-type]
    assert training.shard(files, 1, 3, "FullyReplicated") == files  # type: ignore[arg-type]
    assert training.shard(files, 3, 8, "ShardedByS3Key") == ["d"]  # type: ignore[arg-type]
    assert training.shard(files, 7, 8, "ShardedByS3Key") == []  # type: ignore[arg-type]


@pytest.mark.parametrize("workers", [1, 2, 3])
def test_local_runner_samples_per_host(data: Path, tmp_path: Path, workers: int) -> None:
    result = training.run(spec(data, tmp_path, workers), LocalRunner())
    assert result.model.meta.num_points == 301  # sample_size is the total over the hosts
    assert result.metrics["records_read"] == 1000
    assert result.metrics["test"]["rows"] == 200  # every test record scored exactly once
    again = training.run(spec(data, tmp_path / "again", workers), LocalRunner())
    assert files_of(result) == files_of(again)


@pytest.mark.parametrize("sample_size", ["301", "5000"])  # a sample, and every record
def test_fully_replicated_hosts_build_the_one_host_model(data: Path, tmp_path: Path,
                                                         sample_size: str,
                                                         caplog: pytest.LogCaptureFixture,
                                                         ) -> None:
    one = training.run(spec(data, tmp_path / "1", 1, "FullyReplicated",
                            sample_size=sample_size), LocalRunner())
    for workers in (2, 3):
        caplog.clear()
        with caplog.at_level("INFO", logger="openknn.jobs.training"):
            result = training.run(spec(data, tmp_path / str(workers), workers,
                                       "FullyReplicated", sample_size=sample_size),
                                  LocalRunner())
        # every host reads every file and keeps its own records of them
        for r in range(workers):
            assert (f"algo-{r + 1}: sampling 5 file(s), keeping records {r} mod {workers}"
                    in caplog.text)
        assert result.metrics["records_read"] == 1000  # each record once, not W times
        assert result.model.meta.num_points == min(int(sample_size), 1000)
        assert files_of(result) == files_of(one)
        assert result.metrics["test"] == one.metrics["test"]


def test_without_ray_instance_count_fails_with_install_hint(data: Path, tmp_path: Path) -> None:
    code = ("import sys; sys.modules['ray'] = None\n"
            "from openknn.cli import main\n"
            "main()\n")
    r = subprocess.run([sys.executable, "-c", code, "train", "--train", str(data / "train"),
                        "--hp", "feature_dim=8", "--hp", "k=5", "--hp", "sample_size=10",
                        "--hp", "predictor_type=classifier", "--instance-count", "2",
                        "--output-dir", str(tmp_path)], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert "pip install 'openknn[ray]'" in r.stderr.strip().splitlines()[-1]
    # and the rest runs: one host, or --runner local, needs no Ray
    r = subprocess.run([sys.executable, "-c", code, "train", "--train", str(data / "train"),
                        "--hp", "feature_dim=8", "--hp", "k=5", "--hp", "sample_size=10",
                        "--hp", "predictor_type=classifier", "--instance-count", "2",
                        "--runner", "local", "--output-dir", str(tmp_path)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr


# ---------------------------------------------------------------- on Ray (marker: ray)

@pytest.fixture(scope="module")
def ray_runner() -> Iterator[object]:
    pytest.importorskip("ray")
    from openknn.distributed.runner import RayRunner

    runner = RayRunner(num_cpus=3)  # three task slots on this 2-core machine
    yield runner
    runner.close()


@pytest.mark.ray
@pytest.mark.parametrize("distribution", ["ShardedByS3Key", "FullyReplicated"])
@pytest.mark.parametrize("workers", [1, 2, 3])
def test_ray_equals_local_runner_bit_for_bit(data: Path, tmp_path: Path, workers: int,
                                             distribution: str, ray_runner: object) -> None:
    local = training.run(spec(data, tmp_path / "local", workers, distribution), LocalRunner())
    remote = training.run(spec(data, tmp_path / "ray", workers, distribution),
                          ray_runner)  # type: ignore[arg-type]
    assert files_of(local) == files_of(remote)
    assert (tmp_path / "local" / "model.tar.gz").exists()
    assert local.metrics["test:accuracy"] == remote.metrics["test:accuracy"]


def _die_on_second_host(channel, files, hp, rank, workers):  # type: ignore[no-untyped-def]
    if rank == 1:
        os._exit(1)  # the worker process dies, as a crashed host would
    return training.sample_host(channel, files, hp, rank, workers)


@pytest.mark.ray
def test_dead_worker_fails_the_job_cleanly(data: Path, tmp_path: Path,
                                           ray_runner: object, monkeypatch: pytest.MonkeyPatch,
                                           ) -> None:
    monkeypatch.setattr(training, "sample_host", _die_on_second_host)
    with pytest.raises(AlgorithmError, match=r"algo-2 died in _die_on_second_host"):
        training.run(spec(data, tmp_path, 2), ray_runner)  # type: ignore[arg-type]
    assert not (tmp_path / "model.tar.gz").exists()


@pytest.mark.ray
def test_cli_instance_count_on_local_ray(data: Path, tmp_path: Path) -> None:
    pytest.importorskip("ray")
    r = subprocess.run([sys.executable, "-m", "openknn", "train", "--train",
                        str(data / "train"), "--test", str(data / "test"), "--hp",
                        "feature_dim=8", "--hp", "k=5", "--hp", "sample_size=301", "--hp",
                        "predictor_type=classifier", "--instance-count", "2",
                        "--distribution", "ShardedByS3Key", "--output-dir",
                        str(tmp_path / "ray"), "--threads", "1"],
                       capture_output=True, text=True, timeout=300,
                       env={k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"})
    assert r.returncode == 0, r.stderr[-3000:]
    assert "algo-2" in r.stderr  # every host's log lines reach the job log
    local = training.run(spec(data, tmp_path / "local", 2), LocalRunner())
    assert (artifact.model_bytes(artifact.load(tmp_path / "ray" / "model.tar.gz"))
            == files_of(local))


# ------------------------------------------- the real Kaggle covtype rows (skipped if absent)

COVTYPE = ("covtype", "kaggle-forest-cover-type-prediction_train.csv.gz")
COVTYPE_HP = {"feature_dim": "54", "k": "10", "predictor_type": "classifier"}


@pytest.fixture(scope="module")
def covtype(tmp_path_factory: pytest.TempPathFactory) -> tuple[datasets.Split, dict[str, Path]]:
    split = datasets.tutorial_split(datasets.load_covtype(shared_file(*COVTYPE)))
    return split, datasets.write_channels(tmp_path_factory.mktemp("covtype"), split,
                                          ["recordio"])


def covtype_job(channels: dict[str, Path], out: Path, workers: int,
                sample_size: str) -> training.TrainingResult:
    return training.run(training.TrainingJobSpec(
        {**COVTYPE_HP, "sample_size": sample_size},
        {"train": Channel("train", str(channels["train_recordio"])),  # FullyReplicated
         "test": Channel("test", str(channels["test_recordio"]))},
        output_dir=out, threads=1, instance_count=workers), LocalRunner())


def sorted_rows(rows: np.ndarray) -> np.ndarray:
    return rows[np.lexsort(rows.T[::-1])]


def sorted_points(result: training.TrainingResult) -> np.ndarray:
    """The model's points with their labels, as a sorted multiset of rows."""
    model = result.model
    return sorted_rows(np.column_stack([model.labels,
                                        model.index.reconstruct_n(0, model.index.ntotal)]))


@pytest.mark.parametrize("sample_size", ["200000", "5000"])  # every record, and a sample
def test_covtype_hosts_build_the_one_host_model(covtype: tuple[datasets.Split,
                                                               dict[str, Path]],
                                                tmp_path: Path, sample_size: str) -> None:
    split, channels = covtype
    results = {w: covtype_job(channels, tmp_path / str(w), w, sample_size) for w in (1, 2, 3)}
    one = results[1]
    assert one.model.meta.num_points == min(int(sample_size), 13608)
    for workers in (2, 3):
        result = results[workers]
        assert result.model.meta.num_points == one.model.meta.num_points
        assert result.metrics["records_read"] == 13608
        np.testing.assert_array_equal(sorted_points(result), sorted_points(one))
        assert files_of(result) == files_of(one)  # the same points in the same order
        assert result.metrics["test"] == one.metrics["test"]
    if sample_size == "200000":
        pytest.importorskip("sklearn")
        from sklearn.neighbors import KNeighborsClassifier

        # every train row is in the model exactly once, whatever the number of hosts
        model = one.model
        points = model.index.reconstruct_n(0, model.index.ntotal).astype(np.float64)
        centre = getattr(model, "center", None)
        if centre is not None:  # the index may hold the points shifted by the centre
            points += centre
        points = np.column_stack([model.labels, np.rint(points)])  # covtype is integral
        train = np.column_stack([split.train_y, split.train_x])
        np.testing.assert_array_equal(sorted_rows(points), sorted_rows(train))
        ref = KNeighborsClassifier(n_neighbors=10, algorithm="brute").fit(
            split.train_x, split.train_y).predict(split.test_x)
        accuracy = float(np.mean(ref == split.test_y))
        assert accuracy == pytest.approx(0.7824, abs=5e-5)
        assert {r.metrics["test:accuracy"] for r in results.values()} == {accuracy}


def test_cli_instance_count_fully_replicated_on_covtype(
        covtype: tuple[datasets.Split, dict[str, Path]], tmp_path: Path) -> None:
    """What the issue ran: `openknn train --instance-count 2` with the default distribution."""
    _, channels = covtype
    r = subprocess.run([sys.executable, "-m", "openknn", "train",
                        "--train", str(channels["train_recordio"]),
                        "--test", str(channels["test_recordio"]),
                        *(f"--hp={k}={v}" for k, v in COVTYPE_HP.items()),
                        "--hp=sample_size=200000", "--instance-count", "2", "--runner",
                        "local", "--output-dir", str(tmp_path / "cli"), "--threads", "1"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    one = covtype_job(channels, tmp_path / "one", 1, "200000")
    assert (artifact.model_bytes(artifact.load(tmp_path / "cli" / "model.tar.gz"))
            == files_of(one))
    metrics = json.loads((tmp_path / "cli" / "metrics.json").read_text())
    assert metrics["points_indexed"] == metrics["records_read"] == 13608  # not 27,216
    assert metrics["test:accuracy"] == one.metrics["test:accuracy"]
