"""`openknn quickstart`: the whole flow on covtype (--path) or, offline, on digits; prints
accuracy and latency and leaves no endpoint process behind."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from openknn.sdk import list_endpoints

from ..conftest import shared_file
from .cli_helpers import openknn


def quickstart(tmp_path: Path, *args: str, **env: str) -> str:
    """``openknn quickstart`` in this process (click's CliRunner); its training job and its
    endpoint are processes of their own, as in a user's run."""
    r = openknn("quickstart", "--workdir", str(tmp_path / "qs"), *args, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    return r.stdout


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENKNN_HOME", str(tmp_path / "home"))


def check(out: str) -> float:
    assert re.search(r"single-row latency over \d+ requests: mean [0-9.]+ ms", out)
    assert re.search(r"endpoint knn-[0-9-]+ deleted", out)
    assert list_endpoints() == []
    return float(re.search(r"accuracy of model: ([0-9.]+)%", out).group(1))  # type: ignore[union-attr]


def test_quickstart_on_covtype(tmp_path: Path) -> None:
    path = shared_file("covtype", "kaggle-forest-cover-type-prediction_train.csv.gz")
    out = quickstart(tmp_path, "--path", str(path))
    assert "data: covtype" in out
    assert "time required for predicting 1512 data point" in out
    from .test_tutorial import sklearn_accuracy

    pytest.importorskip("sklearn")
    assert check(out) == round(sklearn_accuracy(path) * 100, 1)


def test_quickstart_offline_falls_back_to_digits(tmp_path: Path) -> None:
    pytest.importorskip("sklearn")
    out = quickstart(tmp_path, OPENKNN_COVTYPE_URLS="http://127.0.0.1:9/covtype.data.gz",
                     OPENKNN_CACHE=str(tmp_path / "cache"))
    assert "using scikit-learn's bundled digits set instead (pass --path for covtype)" in out
    assert "data: digits" in out
    assert check(out) > 90


def test_quickstart_through_the_service(tmp_path: Path) -> None:
    """`openknn quickstart --service` with `openknn env`'s environment: the same flow on
    `openknn up` (channels uploaded to its S3, its training job and endpoint), the same
    accuracy, and no endpoint left on the service."""
    boto3 = pytest.importorskip("boto3")
    s3fs = pytest.importorskip("s3fs")
    pytest.importorskip("sklearn")
    from ..service_helpers import environment, service
    from .test_tutorial import sklearn_accuracy

    path = shared_file("covtype", "kaggle-forest-cover-type-prediction_train.csv.gz")
    with service(tmp_path / "svc", tmp_path / "up.log") as (_, url):
        values = environment(url, tmp_path / "svc")
        s3fs.S3FileSystem.clear_instance_cache()
        out = quickstart(tmp_path, "--path", str(path), "--service", **values)
        s3fs.S3FileSystem.clear_instance_cache()
        assert f"service: {url}" in out
        assert "train s3://sagemaker-us-east-1-000000000000/openknn-quickstart/train/" in out
        assert check(out) == round(sklearn_accuracy(path) * 100, 1)
        sm = boto3.client("sagemaker", endpoint_url=url, region_name="us-east-1",
                          aws_access_key_id="test", aws_secret_access_key="test")
        assert sm.list_endpoints()["Endpoints"] == []
        [job] = sm.list_training_jobs()["TrainingJobSummaries"]
        assert job["TrainingJobStatus"] == "Completed"


def test_quickstart_service_needs_the_environment(tmp_path: Path) -> None:
    r = openknn("quickstart", "--workdir", str(tmp_path / "qs"), "--service",
                env={"AWS_ENDPOINT_URL": ""})
    assert r.returncode != 0
    assert r.stderr.strip().startswith("ClientError: openknn.sdk.Session() talks to openknn "
                                       "up, and AWS_ENDPOINT_URL is not set")
