"""`openknn datasets` end to end as a user runs it: the tutorial's covtype channels feed
`openknn train` to the benchmark's accuracy, and every failure is one ClientError line.
The commands run in this process (click's CliRunner, ``cli_helpers``)."""

from __future__ import annotations

import gzip
import json
import socket
import sys
from pathlib import Path

import numpy as np
import pytest

from openknn.formats import recordio

from ..conftest import shared_file
from .cli_helpers import Ran, openknn

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
KAGGLE = ("covtype", "kaggle-forest-cover-type-prediction_train.csv.gz")
CHANNELS = ("train/recordio", "test/recordio", "train/csv", "test/csv")


def one_client_error(result: Ran) -> str:
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ClientError: "), result.stderr
    return lines[0]


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/covtype.data.gz"


def test_covtype_channels_train_to_the_benchmarks_accuracy(tmp_path: Path) -> None:
    pytest.importorskip("sklearn")
    path = shared_file(*KAGGLE)
    data = tmp_path / "data"
    r = openknn("datasets", "covtype", "--path", str(path), "--output", str(data))
    assert r.returncode == 0, r.stderr
    assert "train_features shape =  (13608, 54)" in r.stdout
    assert "test_labels shape =  (1512,)" in r.stdout
    for channel in CHANNELS:
        folder = data / channel
        assert folder.is_dir() and len(list(folder.iterdir())) == 1
        rows = 13608 if channel.startswith("train") else 1512
        assert f"{folder} ({rows} rows)" in r.stdout
    x, y = recordio.decode_features((data / "test/recordio/test.pbr").read_bytes(), 54)
    assert x.shape == (1512, 54) and y is not None and y.shape == (1512,)
    csv_rows = np.loadtxt(data / "test/csv/test.csv", delimiter=",")
    np.testing.assert_array_equal(csv_rows, np.column_stack([y, x]))

    out = tmp_path / "out"
    r = openknn("train", "--train", str(data / "train/recordio"), "--test",
                str(data / "test/recordio"), "--hp", "feature_dim=54", "--hp", "k=10",
                "--hp", "sample_size=200000", "--hp", "predictor_type=classifier",
                "--output-dir", str(out))
    assert r.returncode == 0, r.stderr
    accuracy = json.loads((out / "metrics.json").read_text())["test:accuracy"]

    sys.path.insert(0, str(BENCHMARKS))
    try:
        import covtype_accuracy
    finally:
        sys.path.remove(str(BENCHMARKS))
    bench = covtype_accuracy.run(path, 10, tmp_path / "bench")
    assert accuracy == bench["openknn_accuracy"] == bench["sklearn_accuracy"]


def test_covtype_offline_is_one_client_error_naming_path(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    url = closed_port_url()
    r = openknn("datasets", "covtype", "--output", str(tmp_path / "data"),
                env={"OPENKNN_CACHE": str(cache), "OPENKNN_COVTYPE_URLS": url})
    line = one_client_error(r)
    assert f"could not download covtype.data.gz from {url} (" in line
    assert "pass --path" in line and "kaggle-forest-cover-type-prediction_train" in line
    assert [p for p in cache.rglob("*") if p.is_file()] == []
    assert not (tmp_path / "data").exists()


def test_covtype_bad_inputs_are_one_client_error_line(tmp_path: Path) -> None:
    line = one_client_error(openknn("datasets", "covtype", "--path", str(tmp_path / "no.gz")))
    assert "no.gz: no such file; pass --path" in line
    odd = tmp_path / "odd.csv.gz"
    odd.write_bytes(gzip.compress(b"1,2,3\n"))
    line = one_client_error(openknn("datasets", "covtype", "--path", str(odd)))
    assert "odd.csv.gz: not a covtype file: its first line has 3 columns" in line
    assert "55 integer columns" in line and "56 columns" in line
    r = openknn("datasets", "covtype", "--path", str(odd), "--formats", "csv,parquet")
    assert r.returncode == 2 and "Invalid value for '--formats'" in r.stderr


def test_covtype_default_output_and_formats_option(tmp_path: Path) -> None:
    rows = np.zeros((30, 55), np.int64)
    rows[:, 0] = np.arange(30)
    rows[:, 54] = np.arange(30) % 7 + 1
    path = tmp_path / "covtype.data"
    np.savetxt(path, rows, fmt="%d", delimiter=",")
    r = openknn("datasets", "covtype", "--formats", "csv", "--path", str(path), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert sorted(p.relative_to(tmp_path / "data/covtype").as_posix()
                  for p in (tmp_path / "data/covtype").rglob("*.*")) == [
        "test/csv/test.csv", "train/csv/train.csv"]
    assert "--train data/covtype/train/csv --test data/covtype/test/csv" in r.stdout


def test_fashion_mnist_missing_folder_names_path(tmp_path: Path) -> None:
    line = one_client_error(openknn("datasets", "fashion-mnist", "--path",
                                    str(tmp_path / "none"), "--output", str(tmp_path / "o")))
    assert "Fashion-MNIST not found in" in line and "pass --path" in line


def test_covtype_to_s3_uploads_the_channels_only_when_complete(tmp_path: Path) -> None:
    """--output s3://…: the objects are the files a local run writes, the report names their
    URIs, nothing is written under the working directory; a run that fails uploads nothing,
    a missing bucket fails before any download, and a channel prefix that holds other
    objects is refused."""
    boto3 = pytest.importorskip("boto3")
    s3fs = pytest.importorskip("s3fs")
    pytest.importorskip("moto.server")
    from ..s3_servers import moto_s3

    rows = np.zeros((40, 55), np.int64)
    rows[:, 0] = np.arange(40)
    rows[:, 54] = np.arange(40) % 7 + 1
    path = tmp_path / "covtype.data"
    np.savetxt(path, rows, fmt="%d", delimiter=",")
    (tmp_path / "work").mkdir()
    with moto_s3() as url:
        s3 = boto3.client("s3", endpoint_url=url, aws_access_key_id="test",
                          aws_secret_access_key="test", region_name="us-east-1")
        s3.create_bucket(Bucket="datasets")
        s3fs.S3FileSystem.clear_instance_cache()
        env = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
               "AWS_DEFAULT_REGION": "us-east-1", "AWS_MAX_ATTEMPTS": "1",
               "AWS_ENDPOINT_URL": url, "OPENKNN_COVTYPE_URLS": closed_port_url(),
               "OPENKNN_CACHE": str(tmp_path / "cache")}

        def stored(prefix: str) -> dict[str, bytes]:
            listed = s3.list_objects_v2(Bucket="datasets", Prefix=prefix).get("Contents", [])
            return {o["Key"][len(prefix):]: s3.get_object(Bucket="datasets", Key=o["Key"])[
                "Body"].read() for o in listed}

        r = openknn("datasets", "covtype", "--path", str(path), "--output",
                    "s3://datasets/covtype/", env=env, cwd=tmp_path / "work")
        assert r.returncode == 0, r.stderr
        assert list((tmp_path / "work").iterdir()) == []
        assert "train_recordio: s3://datasets/covtype/train/recordio (36 rows)" in r.stdout
        assert ("--train s3://datasets/covtype/train/recordio --test "
                "s3://datasets/covtype/test/recordio") in r.stdout
        local = openknn("datasets", "covtype", "--path", str(path), "--output",
                        str(tmp_path / "local"))
        assert local.returncode == 0, local.stderr
        assert stored("covtype/") == {
            p.relative_to(tmp_path / "local").as_posix(): p.read_bytes()
            for p in (tmp_path / "local").rglob("*") if p.is_file()}

        odd = tmp_path / "odd.csv"
        odd.write_text("1,2,3\n")
        line = one_client_error(openknn("datasets", "covtype", "--path", str(odd), "--output",
                                        "s3://datasets/failed/", env=env))
        assert "not a covtype file" in line and stored("failed/") == {}
        line = one_client_error(openknn("datasets", "covtype", "--output",
                                        "s3://no-such-bucket/covtype/", env=env))
        assert line == ("ClientError: --output 's3://no-such-bucket/covtype/': bucket "
                        "'no-such-bucket' does not exist; create it (aws s3 mb "
                        "s3://no-such-bucket) or correct the location")
        s3.put_object(Bucket="datasets", Key="covtype/train/csv/old.csv", Body=b"1,2\n")
        line = one_client_error(openknn("datasets", "covtype", "--path", str(path), "--output",
                                        "s3://datasets/covtype", env=env))
        assert line == ("ClientError: s3://datasets/covtype/train/csv already holds "
                        "s3://datasets/covtype/train/csv/old.csv; a channel prefix must hold "
                        "only train.csv: remove them or choose another --output")
        s3fs.S3FileSystem.clear_instance_cache()
