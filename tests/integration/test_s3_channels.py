"""Channels and models in S3, read through s3fs exactly as a user configures it
(AWS_ENDPOINT_URL and the credentials in the environment), against moto's S3 server on
127.0.0.1: the model trained from s3:// RecordIO channels is the model trained from the same
files on disk; a model.tar.gz object answers invoke and transform as its local copy does; and
a missing bucket, prefix or key, an endpoint that does not answer and access denied (moto's
server with IAM authorization on: a user with no policy, an unknown key) are each one
ClientError line naming the location and the fix."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from openknn.cli import EXIT_CLIENT
from openknn.jobs import artifact
from openknn.sdk import write_numpy_to_dense_tensor

from .cli_helpers import openknn

moto_server = pytest.importorskip("moto.server")
boto3 = pytest.importorskip("boto3")
s3fs = pytest.importorskip("s3fs")

RNG = np.random.default_rng(5)
X = RNG.standard_normal((300, 6)).astype(np.float32)
Y = (X[:, 0] + X[:, 1] > 0).astype(np.float32)
HP = ["--hp", "feature_dim=6", "--hp", "k=5", "--hp", "sample_size=250",
      "--hp", "predictor_type=classifier"]
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
               "AWS_DEFAULT_REGION": "us-east-1", "AWS_MAX_ATTEMPTS": "1"}


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    s3 = boto3.client("s3", endpoint_url=url, **{
        "aws_access_key_id": "test", "aws_secret_access_key": "test",
        "region_name": "us-east-1"})
    s3.create_bucket(Bucket="tutorial")
    for name, rows in (("train", slice(0, 250)), ("test", slice(250, 300))):
        buf = io.BytesIO()  # the tutorial's upload: the SDK's RecordIO, then upload_fileobj
        write_numpy_to_dense_tensor(buf, X[rows], Y[rows])
        buf.seek(0)
        s3.upload_fileobj(buf, "tutorial", f"knn/{name}/recordio-pb-data")
    try:
        yield url
    finally:
        server.stop()


def env(url: str) -> dict[str, str]:
    s3fs.S3FileSystem.clear_instance_cache()  # each command reads the environment afresh
    return {**CREDENTIALS, "AWS_ENDPOINT_URL": url}


def test_a_model_trained_from_s3_is_the_model_trained_from_disk(endpoint: str,
                                                              tmp_path: Path) -> None:
    ran = openknn("train", "--train", "s3://tutorial/knn/train/", "--test",
                  "s3://tutorial/knn/test/", "--output-dir", "from-s3", *HP,
                  env=env(endpoint), cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr
    for name, rows in (("train", slice(0, 250)), ("test", slice(250, 300))):
        (tmp_path / name).mkdir()
        with open(tmp_path / name / "recordio-pb-data", "wb") as f:
            write_numpy_to_dense_tensor(f, X[rows], Y[rows])
    local = openknn("train", "--train", "train", "--test", "test", "--output-dir", "local",
                    *HP, cwd=tmp_path)
    assert local.returncode == 0, local.stderr
    assert "test:accuracy" in ran.stdout and ran.stdout.replace("from-s3", "local") == local.stdout
    a = artifact.load(tmp_path / "from-s3" / "model.tar.gz")
    b = artifact.load(tmp_path / "local" / "model.tar.gz")
    assert artifact.model_bytes(a) == artifact.model_bytes(b)


@pytest.mark.parametrize(("train", "message"), [
    ("s3://no-such-bucket/knn/train/",
     "Channel location 's3://no-such-bucket/knn/train/': bucket 'no-such-bucket' does not "
     "exist; create it (aws s3 mb s3://no-such-bucket) or correct the location"),
    ("s3://tutorial/knn/absent/",
     "Channel 'train' at 's3://tutorial/knn/absent/' has no data files; put the CSV or "
     "RecordIO-protobuf files there"),
])
def test_a_missing_bucket_or_prefix_is_named(endpoint: str, tmp_path: Path, train: str,
                                             message: str) -> None:
    ran = openknn("train", "--train", train, "--output-dir", "out", *HP, env=env(endpoint),
                  cwd=tmp_path)
    assert ran.returncode == EXIT_CLIENT and ran.stderr.strip() == f"ClientError: {message}"
    assert not (tmp_path / "out" / "model.tar.gz").exists()


def test_an_endpoint_that_does_not_answer_is_named(tmp_path: Path) -> None:
    ran = openknn("train", "--train", "s3://tutorial/knn/train/", "--output-dir", "out", *HP,
                  env=env("http://127.0.0.1:9"), cwd=tmp_path)
    assert ran.returncode == EXIT_CLIENT
    assert ran.stderr.startswith("ClientError: Channel location 's3://tutorial/knn/train/': "
                                 "the S3 endpoint did not answer (")
    assert ran.stderr.rstrip().endswith("); check AWS_ENDPOINT_URL / AWS_ENDPOINT_URL_S3 and "
                                        "that the server is running")


def test_a_model_in_s3_answers_as_its_local_copy(endpoint: str, tmp_path: Path) -> None:
    for name, rows in (("train", slice(0, 250)), ("test", slice(250, 300))):
        (tmp_path / name).mkdir()
        with open(tmp_path / name / "recordio-pb-data", "wb") as f:
            write_numpy_to_dense_tensor(f, X[rows], Y[rows])
    assert openknn("train", "--train", "train", "--output-dir", "out", *HP,
                   cwd=tmp_path).returncode == 0
    s3 = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="test",
                      aws_secret_access_key="test", region_name="us-east-1")
    s3.upload_file(str(tmp_path / "out" / "model.tar.gz"), "tutorial", "knn/out/model.tar.gz")
    rows = "".join(",".join(f"{v:.6g}" for v in row) + "\n" for row in X[250:270])
    local = openknn("invoke", "out/model.tar.gz", input=rows, cwd=tmp_path)
    remote = openknn("invoke", "s3://tutorial/knn/out/model.tar.gz", input=rows,
                     env=env(endpoint), cwd=tmp_path)
    assert remote.returncode == 0, remote.stderr
    assert remote.stdout_bytes == local.stdout_bytes and b"predicted_label" in local.stdout_bytes
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "rows.csv").write_text(rows)
    ran = openknn("transform", "s3://tutorial/knn/out/model.tar.gz", "--input", "in",
                  "--output", "t", "--content-type", "text/csv", env=env(endpoint),
                  cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr
    assert (tmp_path / "t" / "rows.csv.out").read_bytes().count(b"\n") == 20
    assert not (tmp_path / "s3:").exists()


def test_a_missing_model_object_is_named(endpoint: str, tmp_path: Path) -> None:
    ran = openknn("invoke", "s3://tutorial/knn/absent/model.tar.gz", input="0,0,0,0,0,0\n",
                  env=env(endpoint), cwd=tmp_path)
    assert ran.returncode == EXIT_CLIENT
    assert ran.stderr.strip() == ("ClientError: Model location "
                                  "'s3://tutorial/knn/absent/model.tar.gz' does not exist; give "
                                  "the prefix or object that holds it")


def objects(endpoint: str, prefix: str) -> dict[str, bytes]:
    s3 = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="test",
                      aws_secret_access_key="test", region_name="us-east-1")
    listed = s3.list_objects_v2(Bucket="tutorial", Prefix=prefix).get("Contents", [])
    return {o["Key"][len(prefix):]: s3.get_object(Bucket="tutorial", Key=o["Key"])["Body"].read()
            for o in listed}


def test_train_from_and_to_s3_puts_the_local_model_in_s3(endpoint: str,
                                                         tmp_path: Path) -> None:
    """The tutorial's whole job in S3: the objects are the bytes a local run writes, and no
    local path is made of the URI."""
    ran = openknn("train", "--train", "s3://tutorial/knn/train/", "--test",
                  "s3://tutorial/knn/test/", "--output-dir", "s3://tutorial/knn/output/", *HP,
                  env=env(endpoint), cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr
    assert "model: s3://tutorial/knn/output/model.tar.gz" in ran.stdout
    assert list(tmp_path.iterdir()) == []  # nothing local: no s3: directory, no staging left
    local = openknn("train", "--train", "s3://tutorial/knn/train/", "--test",
                    "s3://tutorial/knn/test/", "--output-dir", "local", *HP, env=env(endpoint),
                    cwd=tmp_path)
    assert local.returncode == 0, local.stderr
    put = objects(endpoint, "knn/output/")
    assert sorted(put) == ["metrics.json", "model.tar.gz"]
    assert put["model.tar.gz"] == (tmp_path / "local" / "model.tar.gz").read_bytes()
    metrics = [json.loads(data) for data in (put["metrics.json"],
                                             (tmp_path / "local" / "metrics.json").read_bytes())]
    for m in metrics:
        del m["timings_seconds"]  # which differ run to run
    assert metrics[0] == metrics[1] and metrics[0]["records_read"] == 250


@pytest.mark.parametrize("how", ["profile", "AWS_ENDPOINT_URL_S3"])
def test_the_standard_aws_configuration_is_read(endpoint: str, tmp_path: Path,
                                                how: str) -> None:
    """A named profile in AWS's config and credentials files (its endpoint_url included),
    or the S3-only endpoint variable, is what the job reads: botocore's own chain."""
    s3fs.S3FileSystem.clear_instance_cache()
    if how == "profile":
        (tmp_path / "config").write_text(
            f"[profile local]\nregion = us-east-1\nendpoint_url = {endpoint}\n")
        (tmp_path / "credentials").write_text(
            "[local]\naws_access_key_id = test\naws_secret_access_key = test\n")
        environment = {"AWS_PROFILE": "local", "AWS_CONFIG_FILE": str(tmp_path / "config"),
                       "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "credentials")}
    else:
        environment = {**CREDENTIALS, "AWS_ENDPOINT_URL_S3": endpoint}
    ran = openknn("train", "--train", "s3://tutorial/knn/train/", "--output-dir",
                  f"s3://tutorial/knn/{how}/", *HP, env=environment, cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr
    assert sorted(objects(endpoint, f"knn/{how}/")) == ["metrics.json", "model.tar.gz"]


def test_an_upload_shows_its_progress(endpoint: str, tmp_path: Path,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Off a terminal an upload logs how far it got (here after every part, not every 10 s),
    ending at the file's whole size."""
    from openknn.jobs import storage

    monkeypatch.setattr(storage, "PROGRESS_EVERY_S", 0.0)
    ran = openknn("train", "--train", "s3://tutorial/knn/train/", "--output-dir",
                  "s3://tutorial/knn/progress/", *HP, env=env(endpoint), cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr
    size = len(objects(endpoint, "knn/progress/")["model.tar.gz"]) / (1 << 20)
    assert f"uploading model.tar.gz: {size:.1f} of {size:.1f} MiB" in ran.stderr


def test_a_failed_job_or_a_missing_bucket_puts_no_object(endpoint: str, tmp_path: Path) -> None:
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "train.csv").write_text("1,2,3\n")  # 2 features, not 6
    ran = openknn("train", "--train", "bad", "--output-dir", "s3://tutorial/knn/failed/", *HP,
                  env=env(endpoint), cwd=tmp_path)
    assert ran.returncode == EXIT_CLIENT and "ClientError: " in ran.stderr
    assert objects(endpoint, "knn/failed/") == {}
    ran = openknn("train", "--train", "bad", "--output-dir", "s3://no-such-bucket/out/", *HP,
                  env=env(endpoint), cwd=tmp_path)
    assert ran.returncode == EXIT_CLIENT
    assert ran.stderr.strip() == ("ClientError: --output-dir 's3://no-such-bucket/out/': bucket "
                                  "'no-such-bucket' does not exist; create it (aws s3 mb "
                                  "s3://no-such-bucket) or correct the location")


def test_transform_to_s3_writes_what_it_writes_locally(endpoint: str, tmp_path: Path) -> None:
    for name, rows in (("train", slice(0, 250)),):
        (tmp_path / name).mkdir()
        with open(tmp_path / name / "recordio-pb-data", "wb") as f:
            write_numpy_to_dense_tensor(f, X[rows], Y[rows])
    assert openknn("train", "--train", "train", "--output-dir", "out", *HP,
                   cwd=tmp_path).returncode == 0
    (tmp_path / "in").mkdir()
    for i in range(2):
        rows = X[250 + 20 * i:270 + 20 * i]
        (tmp_path / "in" / f"part-{i}.csv").write_text(
            "".join(",".join(f"{v:.6g}" for v in row) + "\n" for row in rows))
    args = ("transform", "out/model.tar.gz", "--input", "in", "--content-type", "text/csv")
    assert openknn(*args, "--output", "t", cwd=tmp_path).returncode == 0
    ran = openknn(*args, "--output", "s3://tutorial/knn/transform/", env=env(endpoint),
                  cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.split() == [f"s3://tutorial/knn/transform/part-{i}.csv.out"
                                  for i in range(2)]
    assert objects(endpoint, "knn/transform/") == {
        p.name: p.read_bytes() for p in (tmp_path / "t").iterdir()}


def test_two_hosts_shard_the_s3_keys(endpoint: str, tmp_path: Path) -> None:
    """ShardedByS3Key over two objects: each host samples one key, and the job reads every
    record once, as the same two files on disk give."""
    s3 = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="test",
                      aws_secret_access_key="test", region_name="us-east-1")
    (tmp_path / "parts").mkdir()
    for i, rows in enumerate((slice(0, 120), slice(120, 250))):
        path = tmp_path / "parts" / f"part-{i}"
        with open(path, "wb") as f:
            write_numpy_to_dense_tensor(f, X[rows], Y[rows])
        s3.upload_file(str(path), "tutorial", f"knn/sharded/part-{i}")
    args = ("--instance-count", "2", "--distribution", "ShardedByS3Key", "--runner", "local",
            *HP)
    ran = openknn("train", "--train", "s3://tutorial/knn/sharded/", "--output-dir", "s3o",
                  *args, env=env(endpoint), cwd=tmp_path)
    local = openknn("train", "--train", "parts", "--output-dir", "local", *args, cwd=tmp_path)
    assert ran.returncode == 0 == local.returncode, (ran.stderr, local.stderr)
    read = [json.loads((tmp_path / d / "metrics.json").read_text())["records_read"]
            for d in ("s3o", "local")]
    assert read == [250, 250]
    assert (artifact.model_bytes(artifact.load(tmp_path / "s3o" / "model.tar.gz"))
            == artifact.model_bytes(artifact.load(tmp_path / "local" / "model.tar.gz")))


@pytest.fixture(scope="module")
def authorizing_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """moto's server in its own process with IAM authorization on
    (INITIAL_NO_AUTH_ACTION_COUNT: the first requests, which set up a bucket, an object and a
    user with no policy, are not checked; every one after them is)."""
    import socket
    import subprocess
    import sys
    import time

    import httpx

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    log = open(tmp_path_factory.mktemp("moto") / "moto.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p",
                             str(port)], stdout=log, stderr=log,
                            env={"PATH": "/usr/bin:/bin", "INITIAL_NO_AUTH_ACTION_COUNT": "4"})
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"{url}/moto-api/", timeout=1)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("moto's server did not start") from None
                time.sleep(0.1)
        keys = {"aws_access_key_id": "test", "aws_secret_access_key": "test",
                "region_name": "us-east-1", "endpoint_url": url}
        s3 = boto3.client("s3", **keys)
        s3.create_bucket(Bucket="locked")
        s3.put_object(Bucket="locked", Key="knn/train/train.csv", Body=b"1,2,3,4,5,6,7\n")
        iam = boto3.client("iam", **keys)
        iam.create_user(UserName="reader")
        key = iam.create_access_key(UserName="reader")["AccessKey"]
        yield f"{url} {key['AccessKeyId']} {key['SecretAccessKey']}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        log.close()


@pytest.mark.parametrize("who", ["a user with no policy", "an unknown access key"])
def test_access_denied_names_the_location_and_the_fix(authorizing_endpoint: str,
                                                      tmp_path: Path, who: str) -> None:
    url, key_id, secret = authorizing_endpoint.split()
    if who == "an unknown access key":
        key_id, secret = "AKIANOSUCHKEY0000000", "wrong"
    environment = {**CREDENTIALS, "AWS_ENDPOINT_URL": url, "AWS_ACCESS_KEY_ID": key_id,
                   "AWS_SECRET_ACCESS_KEY": secret}
    s3fs.S3FileSystem.clear_instance_cache()
    ran = openknn("train", "--train", "s3://locked/knn/train/", "--output-dir", "out", *HP,
                  env=environment, cwd=tmp_path)
    assert ran.returncode == EXIT_CLIENT, ran.stderr
    line = ran.stderr.strip()
    assert line.startswith("ClientError: Channel location 's3://locked/knn/train/': access "
                           "denied ("), line
    assert line.endswith("); use credentials (AWS_PROFILE, AWS_ACCESS_KEY_ID) that may read "
                         "bucket 'locked', or renew them if they expired"), line
    assert "\n" not in line and not (tmp_path / "out" / "model.tar.gz").exists()
