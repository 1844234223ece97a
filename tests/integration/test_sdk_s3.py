"""The look-alike SDK with every location in S3 (moto's server on 127.0.0.1; credentials and
AWS_ENDPOINT_URL in the environment, as a notebook has them): ``record_set`` uploads the
shards and the manifest the real SDK uploads, ``fit(output_path=s3://…)`` puts the model in
S3, ``deploy`` serves it from there, and the predictions are those of the same flow on local
paths; a missing bucket or object fails, named, before any job or endpoint starts."""

from __future__ import annotations

import io
import json
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from openknn.errors import ClientError
from openknn.jobs import artifact
from openknn.sdk import (
    KNN,
    CSVSerializer,
    Estimator,
    JSONDeserializer,
    KNNModel,
    TrainingInput,
    UnexpectedStatusException,
    list_endpoints,
    write_numpy_to_dense_tensor,
)
from openknn.sdk import endpoints as registry

from ..s3_servers import moto_s3

boto3 = pytest.importorskip("boto3")
s3fs = pytest.importorskip("s3fs")
pytest.importorskip("moto.server")

RNG = np.random.default_rng(3)
X = RNG.standard_normal((300, 6)).astype(np.float32)
Y = (X[:, 0] + X[:, 1] > 0).astype(np.float32)
TRAIN, TEST = slice(0, 250), slice(250, 300)
KNN_ARGS: dict[str, Any] = {"k": 5, "sample_size": 250, "predictor_type": "classifier",
                            "instance_type": "local"}
BUCKET = "sdk-bucket"
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
               "AWS_DEFAULT_REGION": "us-east-1", "AWS_MAX_ATTEMPTS": "1"}
NO_BUCKET = ("bucket 'no-such-bucket' does not exist; create it (aws s3 mb "
             "s3://no-such-bucket) or correct the location")


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    with moto_s3() as url:
        s3(url).create_bucket(Bucket=BUCKET)
        yield url


def s3(url: str) -> Any:
    return boto3.client("s3", endpoint_url=url, aws_access_key_id="test",
                        aws_secret_access_key="test", region_name="us-east-1")


@pytest.fixture
def work(endpoint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """An empty working directory, the S3 configuration in the environment (this process's
    s3fs and the job and endpoint processes it starts read it), endpoints under tmp_path."""
    for name, value in {**CREDENTIALS, "AWS_ENDPOINT_URL": endpoint,
                        "OPENKNN_HOME": str(tmp_path / "home")}.items():
        monkeypatch.setenv(name, value)
    s3fs.S3FileSystem.clear_instance_cache()
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    yield tmp_path / "work"
    for info in list_endpoints():  # never leave a server behind, even when a test fails
        registry.delete(info.name)
    s3fs.S3FileSystem.clear_instance_cache()


def objects(url: str, prefix: str) -> dict[str, bytes]:
    client = s3(url)
    listed = client.list_objects_v2(Bucket=BUCKET, Prefix=prefix).get("Contents", [])
    return {o["Key"][len(prefix):]: client.get_object(Bucket=BUCKET, Key=o["Key"])["Body"].read()
            for o in listed}


def sdk_bytes(features: np.ndarray, labels: np.ndarray) -> bytes:
    buf = io.BytesIO()
    write_numpy_to_dense_tensor(buf, features, labels)
    return buf.getvalue()


def predictions(knn: KNN) -> list[float]:
    predictor = knn.deploy(1, "local", serializer=CSVSerializer(),
                           deserializer=JSONDeserializer())
    try:
        assert registry.describe(predictor.endpoint_name).model_data == knn.model_data
        answer = predictor.predict(X[TEST])
    finally:
        predictor.delete_endpoint()
    return [p["predicted_label"] for p in answer["predictions"]]


def test_the_sdk_flow_in_s3_predicts_as_the_local_flow(endpoint: str, work: Path) -> None:
    knn = KNN(output_path=f"s3://{BUCKET}/output", data_location=f"s3://{BUCKET}/sets",
              **KNN_ARGS)
    train = knn.record_set(X[TRAIN], Y[TRAIN])
    test = knn.record_set(X[TEST], Y[TEST], channel="test")
    # the real SDK's upload: matrix_0.pbr and .amazon.manifest under sets/KNN-<timestamp>/,
    # the RecordSet naming the manifest as a ManifestFile channel
    found = re.fullmatch(rf"s3://{BUCKET}/(sets/KNN-\d{{4}}(-\d\d){{5}}-\d{{3}}/)"
                         r"\.amazon\.manifest", train.s3_data)
    assert found is not None and train.s3_data_type == "ManifestFile"
    assert (train.num_records, train.feature_dim, train.distribution) == (
        250, 6, "ShardedByS3Key")
    put = objects(endpoint, found[1])
    assert put == {".amazon.manifest": json.dumps(
        [{"prefix": f"s3://{BUCKET}/{found[1]}"}, "matrix_0.pbr"]).encode(),
        "matrix_0.pbr": sdk_bytes(X[TRAIN], Y[TRAIN])}

    knn.fit([train, test], logs=False)
    job = knn.latest_training_job
    assert job is not None
    assert knn.model_data == f"s3://{BUCKET}/output/{job.name}/output/model.tar.gz"
    assert sorted(objects(endpoint, f"output/{job.name}/")) == [
        "output/metrics.json", "output/model.tar.gz"]  # hyperparameters.json stays local
    described = job.describe()
    assert described["TrainingJobStatus"] == "Completed"
    assert described["ModelArtifacts"]["S3ModelArtifacts"] == knn.model_data
    assert described["FinalMetricDataList"] == [
        {"MetricName": "test:accuracy", "Value": knn.metrics["test:accuracy"]}]
    assert knn.metrics["records_read"] == 250
    assert list(work.iterdir()) == []  # no local path was made of a URI
    assert not list(Path(tempfile.gettempdir()).glob(f"openknn-{job.name}-*"))
    remote = predictions(knn)

    local = KNN(output_path=str(work.parent / "out"), data_location=str(work.parent / "data"),
                **KNN_ARGS)
    local.fit([local.record_set(X[TRAIN], Y[TRAIN]),
               local.record_set(X[TEST], Y[TEST], channel="test")], logs=False)
    assert local.metrics["test:accuracy"] == knn.metrics["test:accuracy"]
    assert (artifact.model_bytes(artifact.load(knn.model_data))
            == artifact.model_bytes(artifact.load(local.model_data)))
    assert remote == predictions(local) and len(remote) == 50


def test_a_local_record_set_has_the_same_shape(work: Path) -> None:
    knn = KNN(instance_count=1, data_location="sets", **KNN_ARGS)
    train = knn.record_set(X[TRAIN], Y[TRAIN])
    manifest = Path(train.s3_data)
    assert manifest.name == ".amazon.manifest" and train.s3_data_type == "ManifestFile"
    assert manifest.read_text() == json.dumps([{"prefix": f"{manifest.parent.resolve()}/"},
                                               "matrix_0.pbr"])
    assert (manifest.parent / "matrix_0.pbr").read_bytes() == sdk_bytes(X[TRAIN], Y[TRAIN])


def test_a_missing_bucket_fails_before_any_job_starts(work: Path) -> None:
    knn = KNN(output_path="s3://no-such-bucket/output", data_location="sets", **KNN_ARGS)
    train = knn.record_set(X[TRAIN], Y[TRAIN])
    with pytest.raises(ClientError, match=r"^output_path 's3://no-such-bucket/output/knn-[-0-9]+"
                       rf"/output': {re.escape(NO_BUCKET)}$"):
        knn.fit(train, logs=False)
    assert knn.latest_training_job is None
    knn.data_location = "s3://no-such-bucket/sets"
    with pytest.raises(ClientError, match=r"^data_location 's3://no-such-bucket/sets/KNN-"
                       rf"[-0-9]+/': {re.escape(NO_BUCKET)}$"):
        knn.record_set(X[TRAIN], Y[TRAIN])


def test_s3_channels_are_passed_to_the_job(endpoint: str, work: Path) -> None:
    """No local existence check for s3:// channels: the job names a missing prefix."""
    est = Estimator("knn", output_path=str(work.parent / "out"))
    est.set_hyperparameters(feature_dim=6, k=5, sample_size=250, predictor_type="classifier")
    with pytest.raises(UnexpectedStatusException, match=re.escape(
            f"Failed. Reason: ClientError: Channel 'train' at 's3://{BUCKET}/absent/' has no "
            "data files; put the CSV or RecordIO-protobuf files there")):
        est.fit({"train": TrainingInput(f"s3://{BUCKET}/absent/")}, logs=False)
    with pytest.raises(ClientError, match=r"^Channel 'train': s3_data_type 'Augmented' is not "
                       r"one k-NN reads; give 'S3Prefix' or 'ManifestFile'$"):
        est.fit({"train": TrainingInput(f"s3://{BUCKET}/x/", s3_data_type="Augmented")})


def test_a_missing_model_object_is_named_before_an_endpoint_starts(work: Path) -> None:
    uri = f"s3://{BUCKET}/absent/model.tar.gz"
    with pytest.raises(ClientError, match=rf"^model_data '{re.escape(uri)}' does not exist; "
                       r"give the s3:// URI of a model.tar.gz object \(a training job's "
                       r"estimator.model_data\)$"):
        KNNModel(uri).deploy(1, "local")
    assert list_endpoints() == []
