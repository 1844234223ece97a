"""Training jobs on `openknn up`, driven by boto3 as the SageMaker SDK drives them
(CreateTrainingJob with the tutorial's request, DescribeTrainingJob polling, the log calls):
the job is openknn's real training job, so its metric is the one the same job gives run
locally; statuses and transitions, log paging, listing, stopping, failures and the server's
validation are SageMaker's."""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from openknn.jobs import training
from openknn.sdk import write_numpy_to_dense_tensor

from ..service_helpers import environment, service

boto3 = pytest.importorskip("boto3")
from botocore.exceptions import ClientError as BotoClientError  # noqa: E402

BUCKET = "sagemaker-us-east-1-000000000000"
IMAGE = "382416733822.dkr.ecr.us-east-1.amazonaws.com/knn:1"
ROLE = "arn:aws:iam::000000000000:role/SageMakerRole"
HP = {"feature_dim": "6", "k": "5", "sample_size": "400", "predictor_type": "classifier"}
RNG = np.random.default_rng(11)
X = RNG.standard_normal((500, 6)).astype(np.float32)
Y = (X[:, 0] + X[:, 2] > 0).astype(np.float32)
SPLITS = {"train": slice(0, 400), "test": slice(400, 500)}


@pytest.fixture(scope="module")
def aws(tmp_path_factory: pytest.TempPathFactory) -> Iterator[boto3.Session]:
    """A service holding the tutorial's two RecordIO channels, and a boto3 session that
    `openknn env`'s environment alone points at it."""
    root = tmp_path_factory.mktemp("service")
    with service(root / "home", root / "up.log") as (_, url):
        values = environment(url, root / "home")
        session = boto3.Session(aws_access_key_id=values["AWS_ACCESS_KEY_ID"],
                                aws_secret_access_key=values["AWS_SECRET_ACCESS_KEY"],
                                region_name=values["AWS_DEFAULT_REGION"])
        session.url = url  # type: ignore[attr-defined]
        s3 = client(session, "s3")
        s3.create_bucket(Bucket=BUCKET)
        for name, rows in SPLITS.items():
            buf = io.BytesIO()
            write_numpy_to_dense_tensor(buf, X[rows], Y[rows])
            buf.seek(0)
            s3.upload_fileobj(buf, BUCKET, f"knn/{name}/recordio-pb-data")
        yield session


def client(session: boto3.Session, name: str) -> Any:
    return session.client(name, endpoint_url=session.url)  # type: ignore[attr-defined]


def request(name: str, **changes: Any) -> dict[str, Any]:
    """The tutorial's CreateTrainingJob request (as SDK v2's Estimator.fit sends it)."""
    body: dict[str, Any] = {
        "TrainingJobName": name,
        "AlgorithmSpecification": {"TrainingImage": IMAGE, "TrainingInputMode": "File"},
        "RoleArn": ROLE,
        "InputDataConfig": [
            {"ChannelName": c, "DataSource": {"S3DataSource": {
                "S3DataType": "S3Prefix", "S3Uri": f"s3://{BUCKET}/knn/{c}/",
                "S3DataDistributionType": "FullyReplicated"}}} for c in SPLITS],
        "OutputDataConfig": {"S3OutputPath": f"s3://{BUCKET}/knn/output"},
        "ResourceConfig": {"InstanceType": "ml.m5.2xlarge", "InstanceCount": 1,
                           "VolumeSizeInGB": 30},
        "StoppingCondition": {"MaxRuntimeInSeconds": 86400},
        "HyperParameters": HP,
    }
    body.update(changes)
    return body


def wait(sm: Any, name: str, timeout: float = 60.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        job = sm.describe_training_job(TrainingJobName=name)
        if job["TrainingJobStatus"] in ("Completed", "Failed", "Stopped"):
            return job  # type: ignore[no-any-return]
        assert time.monotonic() < deadline, job
        time.sleep(0.1)


def keys(session: boto3.Session, prefix: str) -> list[str]:
    listed = client(session, "s3").list_objects_v2(Bucket=BUCKET, Prefix=prefix)
    return sorted(o["Key"] for o in listed.get("Contents", []))


def test_a_job_runs_the_real_training_job(aws: boto3.Session, tmp_path: Path) -> None:
    sm = client(aws, "sagemaker")
    started = time.monotonic()
    created = sm.create_training_job(**request("knn-tutorial-1"))
    assert created["TrainingJobArn"] == (
        "arn:aws:sagemaker:us-east-1:000000000000:training-job/knn-tutorial-1")
    job = wait(sm, "knn-tutorial-1")
    assert time.monotonic() - started < 5.0  # the SDK's first poll comes after 5 s
    assert (job["TrainingJobStatus"], job["SecondaryStatus"]) == ("Completed", "Completed")
    assert [t["Status"] for t in job["SecondaryStatusTransitions"]] == [
        "Starting", "Downloading", "Training", "Uploading", "Completed"]
    assert job["SecondaryStatusTransitions"][2]["StatusMessage"] == (
        "Training image download completed. Training in progress.")
    assert job["ResourceConfig"]["InstanceCount"] == 1
    assert job["OutputDataConfig"]["CompressionType"] == "GZIP"
    model = job["ModelArtifacts"]["S3ModelArtifacts"]
    assert model == f"s3://{BUCKET}/knn/output/knn-tutorial-1/output/model.tar.gz"
    assert keys(aws, "knn/output/knn-tutorial-1/") == [
        "knn/output/knn-tutorial-1/output/metrics.json",
        "knn/output/knn-tutorial-1/output/model.tar.gz"]

    for name, rows in SPLITS.items():  # the oracle: the same job on the same files, here
        (tmp_path / name).mkdir()
        with open(tmp_path / name / "data", "wb") as f:
            write_numpy_to_dense_tensor(f, X[rows], Y[rows])
    local = training.train(tmp_path / "train", tmp_path / "test", hyperparameters=HP,
                           output_dir=tmp_path / "out")
    [metric] = job["FinalMetricDataList"]
    assert metric["MetricName"] == "test:accuracy"
    assert metric["Value"] == local.metrics["test:accuracy"]

    logs = client(aws, "logs")
    streams = logs.describe_log_streams(logGroupName="/aws/sagemaker/TrainingJobs",
                                        logStreamNamePrefix="knn-tutorial-1/",
                                        orderBy="LogStreamName", limit=1)
    assert "nextToken" not in streams  # SDK v2 loops while it is there
    [stream] = [s["logStreamName"] for s in streams["logStreams"]]
    assert stream.startswith("knn-tutorial-1/algo-1-")
    page = logs.get_log_events(logGroupName="/aws/sagemaker/TrainingJobs",
                               logStreamName=stream, startTime=0, startFromHead=True)
    messages = [e["message"] for e in page["events"]]
    assert any(f"#test_score (algo-1) : ('accuracy', {metric['Value']})" in m for m in messages)
    end = logs.get_log_events(logGroupName="/aws/sagemaker/TrainingJobs",
                              logStreamName=stream, startTime=0, startFromHead=True,
                              nextToken=page["nextForwardToken"])
    assert end["events"] == [] and end["nextForwardToken"] == page["nextForwardToken"]

    listed = sm.list_training_jobs(NameContains="tutorial-1")["TrainingJobSummaries"]
    assert [(j["TrainingJobName"], j["TrainingJobStatus"]) for j in listed] == [
        ("knn-tutorial-1", "Completed")]


def test_a_reused_name_and_a_missing_job_are_sagemakers_errors(aws: boto3.Session) -> None:
    sm = client(aws, "sagemaker")
    sm.create_training_job(**request("knn-twice"))
    with pytest.raises(BotoClientError) as reused:
        sm.create_training_job(**request("knn-twice"))
    assert reused.value.response["Error"] == {
        "Code": "ResourceInUse",
        "Message": "Training job names must be unique within an AWS account and region, and "
                   "a training job with this name already exists (arn:aws:sagemaker:us-east-1:"
                   "000000000000:training-job/knn-twice)"}
    with pytest.raises(BotoClientError) as missing:
        sm.describe_training_job(TrainingJobName="no-such-job")
    assert missing.value.response["Error"] == {"Code": "ValidationException",
                                               "Message": "Requested resource not found."}
    wait(sm, "knn-twice")


@pytest.mark.parametrize(("change", "message"), [
    ({"TrainingJobName": "knn_underscore"},
     "1 validation error detected: Value 'knn_underscore' at 'trainingJobName' failed to "
     "satisfy constraint: Member must satisfy regular expression pattern: "
     "^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62} (letters, digits and hyphens, at most 63, no '_')"),
    ({"AlgorithmSpecification": {"TrainingImage": "683313688378.dkr.ecr.us-east-1."
                                 "amazonaws.com/sagemaker-xgboost:1.7-1",
                                 "TrainingInputMode": "File"}},
     "TrainingImage '683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-xgboost:1.7-1' is "
     "not the built-in k-NN algorithm's image (<registry>/knn:<tag>, as "
     "sagemaker.image_uris.retrieve('knn', region) returns); openknn up runs only the k-NN "
     "algorithm"),
    ({"ResourceConfig": {"InstanceType": "local", "InstanceCount": 1, "VolumeSizeInGB": 30}},
     "1 validation error detected: Value 'local' at 'resourceConfig.instanceType' failed to "
     "satisfy constraint: Member must satisfy enum value set: [ml."),
    ({"RoleArn": "arn:aws:iam::123:role/SageMakerRole"},
     "1 validation error detected: Value 'arn:aws:iam::123:role/SageMakerRole' at 'roleArn' "
     "failed to satisfy "
     "constraint: Member must satisfy regular expression pattern: "),
    ({"OutputDataConfig": {"S3OutputPath": "/tmp/out"}},
     "1 validation error detected: Value '/tmp/out' at 'outputDataConfig.s3OutputPath' failed "
     "to satisfy constraint: Member must satisfy regular expression pattern: "),
])
def test_the_server_validates_as_sagemaker_does(aws: boto3.Session, change: dict[str, Any],
                                                message: str) -> None:
    sm = client(aws, "sagemaker")
    with pytest.raises(BotoClientError) as refused:
        sm.create_training_job(**request("knn-refused", **change))
    error = refused.value.response["Error"]
    assert error["Code"] == "ValidationException"
    assert error["Message"].startswith(message)
    with pytest.raises(BotoClientError, match="Requested resource not found"):
        sm.describe_training_job(TrainingJobName="knn-refused")  # nothing was created


def test_a_job_that_fails_says_why_and_writes_no_model(aws: boto3.Session) -> None:
    sm = client(aws, "sagemaker")
    channels = [{"ChannelName": "train", "DataSource": {"S3DataSource": {
        "S3DataType": "S3Prefix", "S3Uri": "s3://no-such-bucket-here/knn/train/"}}}]
    sm.create_training_job(**request("knn-missing-data", InputDataConfig=channels))
    job = wait(sm, "knn-missing-data")
    assert job["TrainingJobStatus"] == "Failed"
    assert job["FailureReason"].startswith(
        "ClientError: Channel location 's3://no-such-bucket-here/knn/train/': bucket "
        "'no-such-bucket-here' does not exist")
    assert [t["Status"] for t in job["SecondaryStatusTransitions"]][-1] == "Failed"
    assert keys(aws, "knn/output/knn-missing-data/") == []

    bad_hp = request("knn-bad-k", HyperParameters={**HP, "k": "0"})
    sm.create_training_job(**bad_hp)
    failed = wait(sm, "knn-bad-k")
    assert failed["TrainingJobStatus"] == "Failed"
    assert failed["FailureReason"].startswith("ClientError: ") and "k" in failed["FailureReason"]


def test_a_stopped_job_is_stopped_and_writes_no_model(aws: boto3.Session) -> None:
    sm = client(aws, "sagemaker")
    sm.create_training_job(**request("knn-stopped"))
    sm.stop_training_job(TrainingJobName="knn-stopped")  # while its worker starts
    job = wait(sm, "knn-stopped")
    assert (job["TrainingJobStatus"], job["SecondaryStatus"]) == ("Stopped", "Stopped")
    assert "Stopping" in [t["Status"] for t in job["SecondaryStatusTransitions"]]
    assert keys(aws, "knn/output/knn-stopped/") == []
    with pytest.raises(BotoClientError, match="the training job is in status Stopped"):
        sm.stop_training_job(TrainingJobName="knn-stopped")


def test_a_manifest_channel_reads_the_objects_it_lists(aws: boto3.Session,
                                                       tmp_path: Path) -> None:
    """S3DataType ManifestFile, as the SDK's record_set sends it: the job reads the objects
    the manifest lists, and scores as the same files on disk do."""
    import json

    client(aws, "s3").put_object(Bucket=BUCKET, Key="knn/manifests/train.manifest",
                                 Body=json.dumps([{"prefix": f"s3://{BUCKET}/knn/train/"},
                                                  "recordio-pb-data"]).encode())
    body = request("knn-manifest")
    body["InputDataConfig"][0]["DataSource"]["S3DataSource"].update(
        S3DataType="ManifestFile", S3Uri=f"s3://{BUCKET}/knn/manifests/train.manifest",
        S3DataDistributionType="ShardedByS3Key")
    sm = client(aws, "sagemaker")
    sm.create_training_job(**body)
    job = wait(sm, "knn-manifest")
    assert job["TrainingJobStatus"] == "Completed", job.get("FailureReason")
    for name, rows in SPLITS.items():
        (tmp_path / name).mkdir()
        with open(tmp_path / name / "data", "wb") as f:
            write_numpy_to_dense_tensor(f, X[rows], Y[rows])
    local = training.train(tmp_path / "train", tmp_path / "test", hyperparameters=HP,
                           output_dir=tmp_path / "out")
    assert job["FinalMetricDataList"][0]["Value"] == local.metrics["test:accuracy"]


def _worker_pid(job: str, timeout: float = 30.0) -> int:
    """The pid of the job's worker process (its command line names the job's folder)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            try:
                cmdline = (proc / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"openknn.service.worker" in cmdline and any(
                    f"/training-jobs/{job}/".encode() in part for part in cmdline):
                return int(proc.name)
        time.sleep(0.02)
    raise AssertionError(f"no worker process for {job}")


def test_a_worker_killed_with_sigkill_fails_its_job_and_writes_no_model(
        aws: boto3.Session) -> None:
    """A job big enough to be caught training (100,000 rows, scored on 10,000): its worker
    is killed with SIGKILL; the job is Failed saying so, and no model object appears."""
    import os
    import signal

    rng = np.random.default_rng(3)
    s3 = client(aws, "s3")
    for name, rows in (("train", 100_000), ("test", 10_000)):
        x = rng.standard_normal((rows, 54)).astype(np.float32)
        buf = io.BytesIO()
        write_numpy_to_dense_tensor(buf, x, (x[:, 0] > 0).astype(np.float32))
        buf.seek(0)
        s3.upload_fileobj(buf, BUCKET, f"knn/big/{name}/recordio-pb-data")
    channels = [{"ChannelName": c, "DataSource": {"S3DataSource": {
        "S3DataType": "S3Prefix", "S3Uri": f"s3://{BUCKET}/knn/big/{c}/"}}}
        for c in ("train", "test")]
    sm = client(aws, "sagemaker")
    sm.create_training_job(**request("knn-killed", InputDataConfig=channels, HyperParameters={
        **HP, "feature_dim": "54", "sample_size": "100000"}))
    pid = _worker_pid("knn-killed")
    deadline = time.monotonic() + 60
    while sm.describe_training_job(TrainingJobName="knn-killed")["SecondaryStatus"] in (
            "Starting", "Downloading"):
        assert time.monotonic() < deadline
        time.sleep(0.02)
    os.kill(pid, signal.SIGKILL)
    job = wait(sm, "knn-killed")
    assert job["TrainingJobStatus"] == "Failed", job
    assert job["FailureReason"] == ("AlgorithmError: the training worker was killed by signal "
                                    "9; the job wrote no model")
    assert keys(aws, "knn/output/knn-killed/") == []


def test_three_jobs_at_once(aws: boto3.Session, tmp_path: Path) -> None:
    """Three CreateTrainingJob calls from three threads: the jobs are in flight together
    (each was created before any ended), and each Completes with the metric the same job
    gives locally."""
    import threading

    sm = client(aws, "sagemaker")
    names = [f"knn-at-once-{i}" for i in range(3)]
    ks = ["3", "5", "7"]
    threads = [threading.Thread(target=lambda n=n, k=k: client(aws, "sagemaker")
                                .create_training_job(**request(n, HyperParameters={**HP,
                                                                                   "k": k})))
               for n, k in zip(names, ks)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    jobs = [wait(sm, n) for n in names]
    assert [j["TrainingJobStatus"] for j in jobs] == ["Completed"] * 3, [
        j.get("FailureReason") for j in jobs]
    created = [j["CreationTime"] for j in jobs]
    ends = [j["TrainingEndTime"] for j in jobs]
    assert max(created) < min(ends)  # all three were in flight at one moment
    for name, rows in SPLITS.items():
        (tmp_path / name).mkdir()
        with open(tmp_path / name / "data", "wb") as f:
            write_numpy_to_dense_tensor(f, X[rows], Y[rows])
    for job, k in zip(jobs, ks):
        local = training.train(tmp_path / "train", tmp_path / "test",
                               hyperparameters={**HP, "k": k}, output_dir=tmp_path / f"out{k}")
        assert job["FinalMetricDataList"][0]["Value"] == local.metrics["test:accuracy"]
