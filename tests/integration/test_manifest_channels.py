"""ManifestFile channels (SageMaker's S3DataType): `openknn train --train-data-type
ManifestFile` reads the files a manifest lists (``[{"prefix": P}, key, ...]``, P + key each),
in its order, on disk and in S3 (moto's server on 127.0.0.1, configured as a user does);
ShardedByS3Key hosts split the manifest's files; a manifest that is malformed, missing or
lists a missing key is one ClientError line naming it."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from openknn.cli import EXIT_CLIENT
from openknn.jobs import artifact
from openknn.sdk import write_numpy_to_dense_tensor

from ..s3_servers import moto_s3
from .cli_helpers import openknn

RNG = np.random.default_rng(7)
X = RNG.standard_normal((300, 6)).astype(np.float32)
Y = (X[:, 0] - X[:, 2] > 0).astype(np.float32)
PARTS = {"part-0": slice(0, 100), "part-1": slice(100, 200), "part-2": slice(200, 250)}
HP = ["--hp", "feature_dim=6", "--hp", "k=5", "--hp", "sample_size=250",
      "--hp", "predictor_type=classifier"]
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
               "AWS_DEFAULT_REGION": "us-east-1", "AWS_MAX_ATTEMPTS": "1"}
BUCKET = "manifest-bucket"  # "bucket" in its name: a missing key is still not a missing bucket
SHAPE = ('expected a JSON list like [{"prefix": "s3://bucket/prefix/"}, "key-1", "key-2"], '
         "as the SageMaker SDK's record_set writes it")


@pytest.fixture(scope="module")
def parts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """part-0, part-1, part-2 (RecordIO, the SDK's bytes) and a test file, on disk."""
    root = tmp_path_factory.mktemp("parts")
    for name, rows in {**PARTS, "test": slice(250, 300)}.items():
        with open(root / name, "wb") as f:
            write_numpy_to_dense_tensor(f, X[rows], Y[rows])
    return root


@pytest.fixture(scope="module")
def endpoint(parts: Path) -> Iterator[str]:
    """moto's S3 server holding the parts under s3://manifest-bucket/parts/."""
    boto3 = pytest.importorskip("boto3")
    pytest.importorskip("s3fs")
    with moto_s3() as url:
        s3 = client(url)
        s3.create_bucket(Bucket=BUCKET)
        for path in parts.iterdir():
            s3.upload_file(str(path), BUCKET, f"parts/{path.name}")
        assert boto3 is not None
        yield url


def client(url: str) -> Any:
    import boto3

    return boto3.client("s3", endpoint_url=url, aws_access_key_id="test",
                        aws_secret_access_key="test", region_name="us-east-1")


def env(url: str) -> dict[str, str]:
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()  # each command reads the environment afresh
    return {**CREDENTIALS, "AWS_ENDPOINT_URL": url}


def manifest(prefix: str, *keys: str) -> str:
    return json.dumps([{"prefix": prefix}, *keys])


def model_of(directory: Path) -> dict[str, bytes]:
    return artifact.model_bytes(artifact.load(directory / "model.tar.gz"))


def records_read(directory: Path) -> int:
    return int(json.loads((directory / "metrics.json").read_text())["records_read"])


def test_a_local_manifest_reads_its_files_in_its_order(parts: Path, tmp_path: Path) -> None:
    """part-2 then part-0 (part-1 beside them is not listed): the model is the one trained
    on a directory holding just those two files in that (sorted) order."""
    (tmp_path / "train.manifest").write_text(manifest(f"{parts}/", "part-2", "part-0"))
    ran = openknn("train", "--train", "train.manifest", "--train-data-type", "ManifestFile",
                  "--output-dir", "m", *HP, cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr
    (tmp_path / "same").mkdir()
    shutil.copy(parts / "part-2", tmp_path / "same" / "a")
    shutil.copy(parts / "part-0", tmp_path / "same" / "b")
    ran = openknn("train", "--train", "same", "--output-dir", "d", *HP, cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr
    assert records_read(tmp_path / "m") == 150 == records_read(tmp_path / "d")
    assert model_of(tmp_path / "m") == model_of(tmp_path / "d")


def test_an_s3_manifest_trains_the_model_its_local_copy_trains(endpoint: str, parts: Path,
                                                               tmp_path: Path) -> None:
    s3 = client(endpoint)
    s3.put_object(Bucket=BUCKET, Key="m/train.manifest",
                  Body=manifest(f"s3://{BUCKET}/parts/", "part-0", "part-1", "part-2").encode())
    s3.put_object(Bucket=BUCKET, Key="m/test.manifest",
                  Body=manifest(f"s3://{BUCKET}/parts/", "test").encode())
    (tmp_path / "train.manifest").write_text(manifest(f"file://{parts}/", "part-0", "part-1",
                                                      "part-2"))
    (tmp_path / "test.manifest").write_text(manifest(f"{parts}/", "test"))
    ran = openknn("train", "--train", f"s3://{BUCKET}/m/train.manifest", "--train-data-type",
                  "ManifestFile", "--test", f"s3://{BUCKET}/m/test.manifest",
                  "--test-data-type", "ManifestFile", "--output-dir", "s3", *HP,
                  env=env(endpoint), cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr
    local = openknn("train", "--train", "train.manifest", "--train-data-type", "ManifestFile",
                    "--test", "test.manifest", "--test-data-type", "ManifestFile",
                    "--output-dir", "local", *HP, cwd=tmp_path)
    assert local.returncode == 0, local.stderr
    assert "test:accuracy" in ran.stdout and ran.stdout.replace("s3", "local") == local.stdout
    assert records_read(tmp_path / "s3") == 250
    assert model_of(tmp_path / "s3") == model_of(tmp_path / "local")


def test_two_hosts_shard_a_manifests_files(endpoint: str, parts: Path, tmp_path: Path) -> None:
    """ShardedByS3Key over a manifest: host r reads every 2nd listed file from the r-th, in
    the manifest's order, as over a prefix holding those files in that order."""
    s3 = client(endpoint)
    s3.put_object(Bucket=BUCKET, Key="m/sharded.manifest",
                  Body=manifest(f"s3://{BUCKET}/parts/", "part-2", "part-1", "part-0").encode())
    (tmp_path / "same").mkdir()
    for letter, name in zip("abc", ("part-2", "part-1", "part-0")):
        shutil.copy(parts / name, tmp_path / "same" / letter)
    args = ("--instance-count", "2", "--distribution", "ShardedByS3Key", "--runner", "local",
            *HP)
    ran = openknn("train", "--train", f"s3://{BUCKET}/m/sharded.manifest",
                  "--train-data-type", "ManifestFile", "--output-dir", "s3", *args,
                  env=env(endpoint), cwd=tmp_path)
    local = openknn("train", "--train", "same", "--output-dir", "local", *args, cwd=tmp_path)
    assert ran.returncode == 0 == local.returncode, (ran.stderr, local.stderr)
    assert "algo-1: sampling 2 file(s)" in ran.stderr
    assert "algo-2: sampling 1 file(s)" in ran.stderr
    assert records_read(tmp_path / "s3") == 250 == records_read(tmp_path / "local")
    assert model_of(tmp_path / "s3") == model_of(tmp_path / "local")


@pytest.mark.ray
def test_ray_hosts_shard_a_manifests_files(parts: Path, tmp_path: Path) -> None:
    pytest.importorskip("ray")
    (tmp_path / "train.manifest").write_text(manifest(f"{parts}/", "part-2", "part-1",
                                                      "part-0"))
    common = ("train", "--train", "train.manifest", "--train-data-type", "ManifestFile",
              "--instance-count", "2", "--distribution", "ShardedByS3Key", *HP)
    ray = openknn(*common, "--output-dir", "ray", "--runner", "ray", cwd=tmp_path)
    local = openknn(*common, "--output-dir", "local", "--runner", "local", cwd=tmp_path)
    assert ray.returncode == 0 == local.returncode, (ray.stderr[-2000:], local.stderr)
    assert records_read(tmp_path / "ray") == 250
    assert model_of(tmp_path / "ray") == model_of(tmp_path / "local")


@pytest.mark.parametrize(("body", "reason"), [
    ("not json", "it is not JSON (Expecting value: line 1 column 1 (char 0))"),
    ('{"prefix": "x/"}', "it is a JSON dict, not a list"),
    ("[]", "it is an empty list"),
    ('["part-0"]', 'its first element is "part-0", not {"prefix": "..."}'),
    ('[{"prefix": 3}, "part-0"]', 'its first element is {"prefix": 3}, not {"prefix": "..."}'),
    ('[{"prefix": ""}, "a"]', 'its first element is {"prefix": ""}, not {"prefix": "..."}'),
    ('[{"prefix": "x/"}]', "it lists no keys after the prefix"),
    ('[{"prefix": "x/"}, "part-0", 7]', "element 3 is 7, not a key string"),
    ('[{"prefix": "x/"}, ""]', 'element 2 is "", not a key string'),
])
def test_a_malformed_manifest_is_one_client_error(tmp_path: Path, body: str,
                                                  reason: str) -> None:
    (tmp_path / "bad.manifest").write_text(body)
    ran = openknn("train", "--train", "bad.manifest", "--train-data-type", "ManifestFile",
                  "--output-dir", "out", *HP, cwd=tmp_path)
    assert ran.returncode == EXIT_CLIENT
    assert ran.stderr.strip() == (f"ClientError: Manifest 'bad.manifest' is not a SageMaker "
                                  f"manifest: {reason}; {SHAPE}")
    assert not (tmp_path / "out" / "model.tar.gz").exists()


def test_a_missing_key_or_manifest_is_named(parts: Path, tmp_path: Path) -> None:
    (tmp_path / "m").write_text(manifest(f"{parts}/", "part-0", "part-9"))
    ran = openknn("train", "--train", "m", "--train-data-type", "ManifestFile",
                  "--output-dir", "out", *HP, cwd=tmp_path)
    assert ran.returncode == EXIT_CLIENT
    assert ran.stderr.strip() == (f"ClientError: Manifest 'm' lists 'part-9', but "
                                  f"'{parts}/part-9' does not exist; put the file there or "
                                  "remove the key from the manifest")
    (tmp_path / "twice").write_text(manifest(f"{parts}/", "part-0", "./part-0"))
    ran = openknn("train", "--train", "twice", "--train-data-type", "ManifestFile",
                  "--output-dir", "out", *HP, cwd=tmp_path)
    assert ran.stderr.strip() == (f"ClientError: Manifest 'twice' lists '{parts}/part-0' "
                                  "twice (as './part-0'); list each file once")
    for where, what in (("absent", "does not exist; a ManifestFile channel names the manifest "
                         "itself (e.g. s3://bucket/prefix/.amazon.manifest), not the prefix "
                         "that holds it"),
                        (str(parts), "is a directory; a ManifestFile channel names the manifest "
                         "file itself, and a directory of data files is an S3Prefix channel")):
        ran = openknn("train", "--train", where, "--train-data-type", "ManifestFile",
                      "--output-dir", "out", *HP, cwd=tmp_path)
        assert ran.returncode == EXIT_CLIENT
        assert ran.stderr.strip() == f"ClientError: Manifest {where!r} {what}"
    assert not (tmp_path / "out" / "model.tar.gz").exists()


def test_a_missing_s3_key_manifest_or_bucket_is_named(endpoint: str, tmp_path: Path) -> None:
    client(endpoint).put_object(Bucket=BUCKET, Key="m/gap.manifest", Body=manifest(
        f"s3://{BUCKET}/parts/", "part-0", "part-9").encode())
    cases = {
        f"s3://{BUCKET}/m/gap.manifest": (
            f"Manifest 's3://{BUCKET}/m/gap.manifest' lists 'part-9', but "
            f"'s3://{BUCKET}/parts/part-9' does not exist; put the file there or remove the "
            "key from the manifest"),
        f"s3://{BUCKET}/m/none.manifest": (
            f"Manifest 's3://{BUCKET}/m/none.manifest' does not exist; a ManifestFile channel "
            "names the manifest itself (e.g. s3://bucket/prefix/.amazon.manifest), not the "
            "prefix that holds it"),
        "s3://no-such-bucket/m.manifest": (
            "Manifest 's3://no-such-bucket/m.manifest': bucket 'no-such-bucket' does not "
            "exist; create it (aws s3 mb s3://no-such-bucket) or correct the location"),
    }
    for location, message in cases.items():
        ran = openknn("train", "--train", location, "--train-data-type", "ManifestFile",
                      "--output-dir", "out", *HP, env=env(endpoint), cwd=tmp_path)
        assert ran.returncode == EXIT_CLIENT
        assert ran.stderr.strip() == f"ClientError: {message}"
    assert not (tmp_path / "out" / "model.tar.gz").exists()
