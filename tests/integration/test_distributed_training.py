"""Multi-host training: the in-process runner (default suite, no Ray) and Ray tasks (marker
`ray`) give bit-identical models for the same seed, hosts and files; shards and replicas;
a dead worker fails the job cleanly; no Ray means a clear install hint."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from openknn import artifact, training
from openknn.data import Channel
from openknn.errors import AlgorithmError
from openknn.runner import LocalRunner

from ..conftest import write_csv

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


def test_fully_replicated_reads_everything_on_every_host(data: Path, tmp_path: Path) -> None:
    result = training.run(spec(data, tmp_path, 2, "FullyReplicated"), LocalRunner())
    assert result.metrics["records_read"] == 2000
    assert result.model.meta.num_points == 301


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
@pytest.mark.parametrize("workers", [1, 2, 3])
def test_ray_equals_local_runner_bit_for_bit(data: Path, tmp_path: Path, workers: int,
                                             ray_runner: object) -> None:
    local = training.run(spec(data, tmp_path / "local", workers), LocalRunner())
    remote = training.run(spec(data, tmp_path / "ray", workers), ray_runner)  # type: ignore[arg-type]
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
