"""The test of record for S3 end to end, on the Kaggle covtype rows, against both S3 servers
(moto's, the reference, and openknn's embedded store), through the CLI as a user runs it
with AWS_ENDPOINT_URL and credentials in the environment:

- the tutorial's RecordIO channels (the SDK's format, ``upload_fileobj``) in S3;
- ``openknn train --train s3://… --test s3://… --output-dir s3://…`` gives scikit-learn's
  accuracy, puts ``model.tar.gz`` in S3 and writes nothing under the working directory;
- the same with ``--instance-count 2 --distribution ShardedByS3Key`` over two shards;
- ``openknn serve s3://…/model.tar.gz`` and ``openknn transform`` from and to S3 give the
  same answers, which are scikit-learn's;
- a missing bucket fails with its name, and leaves no object and no local path."""

from __future__ import annotations

import io
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from openknn.cli import EXIT_CLIENT
from openknn.jobs import datasets
from openknn.sdk import write_numpy_to_dense_tensor
from openknn.serving import process

from ..conftest import shared_file
from ..s3_servers import moto_s3, store_s3
from .cli_helpers import openknn

boto3 = pytest.importorskip("boto3")
s3fs = pytest.importorskip("s3fs")
pytest.importorskip("moto.server")
pytest.importorskip("sklearn")

BUCKET = "covtype-tutorial"
HP = ["--hp", "feature_dim=54", "--hp", "k=10", "--hp", "sample_size=200000",
      "--hp", "predictor_type=classifier"]
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
               "AWS_DEFAULT_REGION": "us-east-1", "AWS_MAX_ATTEMPTS": "1"}
BATCH_ROWS = 500  # test rows sent through serve and transform


@pytest.fixture(scope="module")
def split() -> datasets.Split:
    path = shared_file("covtype", "kaggle-forest-cover-type-prediction_train.csv.gz")
    return datasets.tutorial_split(datasets.load_covtype(path))


@pytest.fixture(scope="module")
def sklearn_predictions(split: datasets.Split) -> np.ndarray:
    from sklearn.neighbors import KNeighborsClassifier

    x, y, xt, _ = split
    return np.asarray(KNeighborsClassifier(n_neighbors=10, algorithm="brute")
                      .fit(x, y).predict(xt))


def client(endpoint: str) -> Any:
    return boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="test",
                        aws_secret_access_key="test", region_name="us-east-1")


def upload_recordio(s3: Any, key: str, x: np.ndarray, y: np.ndarray) -> None:
    buf = io.BytesIO()  # the tutorial: the SDK's RecordIO into a buffer, then upload_fileobj
    write_numpy_to_dense_tensor(buf, x.astype(np.float32), y.astype(np.float32))
    buf.seek(0)
    s3.upload_fileobj(buf, BUCKET, key)


@pytest.fixture(scope="module", params=["moto", "store"])
def endpoint(request: pytest.FixtureRequest, split: datasets.Split,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One S3 server holding the tutorial's channels: train whole, train in two shards (as
    ``record_set`` writes them for two instances), test, and test rows as CSV for transform."""
    x, y, xt, yt = split
    servers = {"moto": moto_s3, "store": lambda: store_s3(tmp_path_factory.mktemp("s3store"))}
    with servers[request.param]() as url:  # type: ignore[operator]
        s3 = client(url)
        s3.create_bucket(Bucket=BUCKET)
        upload_recordio(s3, "knn/train/recordio-pb-data", x, y)
        upload_recordio(s3, "knn/test/recordio-pb-data", xt, yt)
        half = x.shape[0] // 2
        upload_recordio(s3, "knn/sharded/matrix_0.pbr", x[:half], y[:half])
        upload_recordio(s3, "knn/sharded/matrix_1.pbr", x[half:], y[half:])
        rows = "\n".join(",".join(f"{v:g}" for v in row) for row in xt[:BATCH_ROWS]) + "\n"
        s3.put_object(Bucket=BUCKET, Key="knn/batch/rows.csv", Body=rows.encode())
        yield url


def env(url: str) -> dict[str, str]:
    s3fs.S3FileSystem.clear_instance_cache()  # each command reads the environment afresh
    return {**CREDENTIALS, "AWS_ENDPOINT_URL": url}


def keys(endpoint: str, prefix: str) -> list[str]:
    listed = client(endpoint).list_objects_v2(Bucket=BUCKET, Prefix=prefix)
    return sorted(o["Key"] for o in listed.get("Contents", []))


def accuracy(stdout: str) -> float:
    line = next(ln for ln in stdout.splitlines() if "test:accuracy" in ln)
    return float(line.rsplit(maxsplit=1)[-1])


def test_train_from_and_to_s3_gives_sklearn_accuracy(endpoint: str, tmp_path: Path,
                                                     split: datasets.Split,
                                                     sklearn_predictions: np.ndarray) -> None:
    ran = openknn("train", "--train", f"s3://{BUCKET}/knn/train/", "--test",
                  f"s3://{BUCKET}/knn/test/", "--output-dir", f"s3://{BUCKET}/knn/output/",
                  *HP, env=env(endpoint), cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr
    expected = float(np.mean(sklearn_predictions == split[3]))
    assert accuracy(ran.stdout) == pytest.approx(expected, abs=1e-12)
    assert keys(endpoint, "knn/output/") == ["knn/output/metrics.json",
                                             "knn/output/model.tar.gz"]
    assert list(tmp_path.iterdir()) == []  # no local `s3:` directory, nothing at all


def test_two_hosts_sharded_by_s3_key_give_sklearn_accuracy(
        endpoint: str, tmp_path: Path, split: datasets.Split,
        sklearn_predictions: np.ndarray) -> None:
    ran = openknn("train", "--train", f"s3://{BUCKET}/knn/sharded/", "--test",
                  f"s3://{BUCKET}/knn/test/", "--output-dir", f"s3://{BUCKET}/knn/sharded-out/",
                  "--instance-count", "2", "--distribution", "ShardedByS3Key",
                  "--runner", "local", *HP, env=env(endpoint), cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr
    assert accuracy(ran.stdout) == pytest.approx(
        float(np.mean(sklearn_predictions == split[3])), abs=1e-12)
    metrics = json.loads(client(endpoint).get_object(
        Bucket=BUCKET, Key="knn/sharded-out/metrics.json")["Body"].read())
    assert metrics["records_read"] == split[0].shape[0]  # each record once, across two hosts
    assert list(tmp_path.iterdir()) == []


def test_serve_and_transform_from_s3_give_the_same_answers(
        endpoint: str, tmp_path: Path, sklearn_predictions: np.ndarray) -> None:
    model = f"s3://{BUCKET}/knn/served/model.tar.gz"
    trained = openknn("train", "--train", f"s3://{BUCKET}/knn/train/", "--output-dir",
                      f"s3://{BUCKET}/knn/served/", *HP, env=env(endpoint), cwd=tmp_path)
    assert trained.returncode == 0, trained.stderr
    rows = client(endpoint).get_object(Bucket=BUCKET, Key="knn/batch/rows.csv")["Body"].read()

    port, log = process.free_port(), tmp_path.parent / f"{tmp_path.name}-serve.log"
    proc = process.start([model, "--threads", "1"], port, log,
                         env={**os.environ, **env(endpoint)})
    try:
        url = f"http://127.0.0.1:{port}"
        process.wait_ready(url, proc, log)
        answer = httpx.post(f"{url}/invocations", content=rows, timeout=60, trust_env=False,
                            headers={"Content-Type": "text/csv", "Accept": "application/json"})
    finally:
        process.stop(proc)
    assert answer.status_code == 200, answer.text
    served = [p["predicted_label"] for p in answer.json()["predictions"]]
    assert served == sklearn_predictions[:BATCH_ROWS].tolist()

    ran = openknn("transform", model, "--input", f"s3://{BUCKET}/knn/batch/", "--output",
                  f"s3://{BUCKET}/knn/transformed/", "--content-type", "text/csv",
                  "--accept", "application/json", env=env(endpoint), cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr
    assert keys(endpoint, "knn/transformed/") == ["knn/transformed/rows.csv.out"]
    out = client(endpoint).get_object(Bucket=BUCKET, Key="knn/transformed/rows.csv.out")
    # one file in, one JSON document out (no SplitType): the endpoint's answer to the file
    transformed = [p["predicted_label"] for p in json.loads(out["Body"].read())["predictions"]]
    assert transformed == served
    assert list(tmp_path.iterdir()) == []


def test_a_missing_bucket_fails_with_its_name(endpoint: str, tmp_path: Path) -> None:
    ran = openknn("train", "--train", f"s3://{BUCKET}/knn/train/", "--output-dir",
                  "s3://no-such-covtype-bucket/out/", *HP, env=env(endpoint), cwd=tmp_path)
    assert ran.returncode == EXIT_CLIENT
    assert ran.stderr.strip().splitlines()[-1] == (
        "ClientError: --output-dir 's3://no-such-covtype-bucket/out/': bucket "
        "'no-such-covtype-bucket' does not exist; create it (aws s3 mb "
        "s3://no-such-covtype-bucket) or correct the location")
    assert list(tmp_path.iterdir()) == []
    assert BUCKET in [b["Name"] for b in client(endpoint).list_buckets()["Buckets"]]
    assert "no-such-covtype-bucket" not in [
        b["Name"] for b in client(endpoint).list_buckets()["Buckets"]]
