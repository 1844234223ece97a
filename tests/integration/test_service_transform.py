"""Batch transform jobs on `openknn up`, driven by boto3 as SDK v2's `Transformer` drives them
(CreateModel, CreateTransformJob, DescribeTransformJob polling, the log calls): the job is
openknn's real batch transform, so each `.out` object equals what `openknn transform` writes
for the same model and file (the oracle), for CSV lines, RecordIO records, whole files and
gzipped objects; statuses and fields as the SDK reads them, the log, a failing job (no output
for the object that failed), SageMaker's errors, StopTransformJob, and a service restarted
while a job runs."""

from __future__ import annotations

import gzip
import io
import json
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from openknn.jobs import training
from openknn.sdk import write_numpy_to_dense_tensor

from ..service_helpers import service
from .test_service_training import BUCKET, HP, IMAGE, ROLE, X, Y

boto3 = pytest.importorskip("boto3")
from botocore.exceptions import ClientError as BotoClientError  # noqa: E402

MODEL = "knn-transform-model"
MODEL_ARN = f"arn:aws:sagemaker:us-east-1:000000000000:model/{MODEL}"
LOG_GROUP = "/aws/sagemaker/TransformJobs"
KEYS = {"endpoint_url": "", "aws_access_key_id": "test", "aws_secret_access_key": "test",
        "region_name": "us-east-1"}


def csv_rows(rows: Any) -> bytes:
    return "".join(",".join(f"{v:.6g}" for v in row) + "\n" for row in rows).encode()


def recordio_rows(rows: Any) -> bytes:
    buf = io.BytesIO()
    write_numpy_to_dense_tensor(buf, rows)
    return buf.getvalue()


# the input objects, by key under s3://BUCKET/transform/
INPUTS = {
    "csv/a.csv": csv_rows(X[400:450]),
    "csv/b.csv": csv_rows(X[450:480]),
    "csv/sub/c.csv": csv_rows(X[480:500]),
    "recordio/rows.rec": recordio_rows(X[400:500]),
    "gzip/a.csv.gz": gzip.compress(csv_rows(X[400:450])),
    "bad/good.csv": csv_rows(X[400:410]),
    "bad/short.csv": csv_rows(X[410:415]) + b"1,2,3\n" + csv_rows(X[415:420]),
}


class Aws:
    """Clients of one running service holding the inputs and a model."""

    def __init__(self, url: str, root: Path) -> None:
        keys = {**KEYS, "endpoint_url": url}
        self.url, self.root = url, root
        self.s3 = boto3.client("s3", **keys)
        self.sm = boto3.client("sagemaker", **keys)
        self.logs = boto3.client("logs", **keys)

    def keys(self, prefix: str) -> list[str]:
        listed = self.s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix)
        return sorted(o["Key"] for o in listed.get("Contents", []))

    def body(self, key: str) -> bytes:
        return self.s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()  # type: ignore[no-any-return]


def local_model(root: Path) -> Path:
    """A model.tar.gz of openknn's own training job, made here (no service in between)."""
    (root / "train").mkdir(parents=True)
    with open(root / "train" / "data", "wb") as f:
        write_numpy_to_dense_tensor(f, X[:400], Y[:400])
    training.train(root / "train", None, hyperparameters=HP, output_dir=root / "model")
    return root / "model" / "model.tar.gz"


def put_model(aws: Aws, model: Path, name: str = MODEL) -> None:
    """The model in the service's S3 and CreateModel, as SDK v2's Model.transformer does."""
    aws.s3.create_bucket(Bucket=BUCKET)
    aws.s3.upload_file(str(model), BUCKET, "models/model.tar.gz")
    aws.sm.create_model(ModelName=name, ExecutionRoleArn=ROLE, PrimaryContainer={
        "Image": IMAGE, "Environment": {}, "ModelDataUrl": f"s3://{BUCKET}/models/model.tar.gz"})


@pytest.fixture(scope="module")
def aws(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Aws]:
    root = tmp_path_factory.mktemp("transform")
    model = local_model(root)
    with service(root / "home", root / "up.log") as (_, url):
        a = Aws(url, root)
        put_model(a, model)
        for key, data in INPUTS.items():
            a.s3.put_object(Bucket=BUCKET, Key=f"transform/{key}", Body=data)
        a.model = model  # type: ignore[attr-defined]
        yield a


def request(name: str, prefix: str = "csv/", **changes: Any) -> dict[str, Any]:
    """A CreateTransformJob request as SDK v2's Transformer.transform sends it."""
    body: dict[str, Any] = {
        "TransformJobName": name, "ModelName": MODEL,
        "TransformInput": {"DataSource": {"S3DataSource": {
            "S3DataType": "S3Prefix", "S3Uri": f"s3://{BUCKET}/transform/{prefix}"}},
            "ContentType": "text/csv", "SplitType": "Line"},
        "TransformOutput": {"S3OutputPath": f"s3://{BUCKET}/transform-out/{name}",
                            "Accept": "application/jsonlines", "AssembleWith": "Line"},
        "TransformResources": {"InstanceCount": 1, "InstanceType": "ml.m5.large"},
        "BatchStrategy": "MultiRecord",
    }
    body.update(changes)
    return body


def wait(sm: Any, name: str, timeout: float = 60.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        job = sm.describe_transform_job(TransformJobName=name)
        if job["TransformJobStatus"] in ("Completed", "Failed", "Stopped"):
            return job  # type: ignore[no-any-return]
        assert time.monotonic() < deadline, job
        time.sleep(0.1)


def oracle(model: Path, files: dict[str, bytes], tmp: Path, *args: str) -> dict[str, bytes]:
    """`openknn transform` on the same model and files, on this machine: name → output."""
    (tmp / "in").mkdir()
    for name, data in files.items():
        (tmp / "in" / name).write_bytes(data)
    ran = subprocess.run([sys.executable, "-m", "openknn", "transform", str(model), "--input",
                          str(tmp / "in"), "--output", str(tmp / "out"), *args],
                         capture_output=True, text=True, timeout=120)
    assert ran.returncode == 0, ran.stderr
    return {p.name: p.read_bytes() for p in (tmp / "out").iterdir()}


def messages(aws: Aws, name: str) -> list[str]:
    streams = aws.logs.describe_log_streams(logGroupName=LOG_GROUP,
                                            logStreamNamePrefix=f"{name}/",
                                            orderBy="LogStreamName", limit=1)
    assert "nextToken" not in streams  # SDK v2 loops while it is there
    [stream] = [s["logStreamName"] for s in streams["logStreams"]]
    assert re.fullmatch(rf"{name}/i-[0-9a-f]{{16}}-\d+", stream), stream
    page = aws.logs.get_log_events(logGroupName=LOG_GROUP, logStreamName=stream, startTime=0,
                                   startFromHead=True)
    return [e["message"] for e in page["events"]]


def test_a_job_writes_what_openknn_transform_writes(aws: Aws, tmp_path: Path) -> None:
    started = time.monotonic()
    created = aws.sm.create_transform_job(**request("knn-batch-1"))
    assert created["TransformJobArn"] == (
        "arn:aws:sagemaker:us-east-1:000000000000:transform-job/knn-batch-1")
    job = wait(aws.sm, "knn-batch-1")
    assert time.monotonic() - started < 10.0  # SDK v2 first looks after 10 s (logs=True)
    assert job["TransformJobStatus"] == "Completed", job.get("FailureReason")
    # what SDK v2 reads: Transformer.attach, logs_for_transform_job, _check_job_status
    assert job["ModelName"] == MODEL and job["BatchStrategy"] == "MultiRecord"
    assert job["TransformResources"] == {"InstanceCount": 1, "InstanceType": "ml.m5.large"}
    assert job["TransformOutput"]["S3OutputPath"] == f"s3://{BUCKET}/transform-out/knn-batch-1"
    assert job["TransformOutput"]["AssembleWith"] == "Line"
    assert job["TransformInput"]["CompressionType"] == "None"
    assert job["CreationTime"] <= job["TransformStartTime"] <= job["TransformEndTime"]
    assert "FailureReason" not in job and "LogStream" not in job
    out = "transform-out/knn-batch-1/"
    assert aws.keys(out) == [f"{out}a.csv.out", f"{out}b.csv.out", f"{out}sub/c.csv.out"]
    expected = oracle(aws.model, {k.rsplit("/", 1)[1]: v for k, v in INPUTS.items()  # type: ignore[attr-defined]
                                  if k.startswith("csv/")}, tmp_path, "--content-type",
                      "text/csv", "--accept", "application/jsonlines")
    for key in aws.keys(out):
        assert aws.body(key) == expected[key.rsplit("/", 1)[1]], key
    assert len(aws.body(f"{out}a.csv.out").splitlines()) == 50

    lines = messages(aws, "knn-batch-1")
    assert any("(ml.m5.large): transforming 3 input objects from "
               f"s3://{BUCKET}/transform/csv/ with the model " in m and
               m.endswith("searching on the CPU") for m in lines), lines
    assert any("Transformed 100 records from 3 of 3 input objects" in m for m in lines), lines
    listed = aws.sm.list_transform_jobs(NameContains="batch-1")["TransformJobSummaries"]
    assert [(j["TransformJobName"], j["TransformJobStatus"]) for j in listed] == [
        ("knn-batch-1", "Completed")]
    assert listed[0]["TransformEndTime"] == job["TransformEndTime"]


JSONLINES = {"Accept": "application/jsonlines", "AssembleWith": "Line"}


@pytest.mark.parametrize(("name", "prefix", "given", "cli", "file"), [
    ("knn-batch-recordio", "recordio/",
     {"TransformInput": {"ContentType": "application/x-recordio-protobuf",
                         "SplitType": "RecordIO"}, "TransformOutput": JSONLINES},
     ["--content-type", "application/x-recordio-protobuf", "--split-type", "RecordIO"],
     "recordio/rows.rec"),
    # SDK v2's defaults: no SplitType (None: the whole object in one request), no
    # AssembleWith (None), no BatchStrategy (the container's: MultiRecord)
    ("knn-batch-whole", "csv/a.csv",
     {"TransformInput": {"ContentType": "text/csv"},
      "TransformOutput": {"Accept": "application/json"}, "BatchStrategy": None},
     ["--split-type", "None", "--assemble-with", "None", "--accept", "application/json"],
     "csv/a.csv"),
    ("knn-batch-gzip", "gzip/",
     {"TransformInput": {"ContentType": "text/csv", "SplitType": "Line",
                         "CompressionType": "Gzip"}, "TransformOutput": JSONLINES},
     [], "csv/a.csv"),
    ("knn-batch-single", "csv/b.csv",
     {"TransformOutput": {"Accept": "application/json; verbose=true", "AssembleWith": "Line"},
      "BatchStrategy": "SingleRecord"},
     ["--batch-strategy", "SingleRecord", "--accept", "application/json; verbose=true"],
     "csv/b.csv"),
], ids=["recordio", "whole-object-sdk-defaults", "gzip", "single-record-verbose"])
def test_splits_batches_and_compression_as_openknn_transform(
        aws: Aws, tmp_path: Path, name: str, prefix: str, given: dict[str, Any],
        cli: list[str], file: str) -> None:
    body = request(name, prefix)
    for member, value in given.items():
        if value is None:
            del body[member]
        elif member in ("TransformInput", "TransformOutput"):
            kept = {"TransformInput": "DataSource", "TransformOutput": "S3OutputPath"}[member]
            body[member] = {kept: body[member][kept], **value}
        else:
            body[member] = value
    aws.sm.create_transform_job(**body)
    job = wait(aws.sm, name)
    assert job["TransformJobStatus"] == "Completed", job.get("FailureReason")
    [key] = aws.keys(f"transform-out/{name}/")
    local = file.rsplit("/", 1)[1]
    expected = oracle(aws.model, {local: INPUTS[file]}, tmp_path,  # type: ignore[attr-defined]
                      "--content-type", "text/csv", "--accept", "application/jsonlines", *cli)
    [source] = [k for k in INPUTS if k.startswith(prefix)]
    assert key == f"transform-out/{name}/{source.rsplit('/', 1)[1]}.out"
    assert aws.body(key) == expected[f"{local}.out"]


def test_a_manifest_lists_the_objects_and_names_the_outputs(aws: Aws, tmp_path: Path) -> None:
    aws.s3.put_object(Bucket=BUCKET, Key="transform/manifests/two.manifest", Body=json.dumps(
        [{"prefix": f"s3://{BUCKET}/transform/csv/"}, "sub/c.csv", "a.csv"]).encode())
    body = request("knn-batch-manifest")
    body["TransformInput"]["DataSource"]["S3DataSource"] = {
        "S3DataType": "ManifestFile", "S3Uri": f"s3://{BUCKET}/transform/manifests/two.manifest"}
    aws.sm.create_transform_job(**body)
    job = wait(aws.sm, "knn-batch-manifest")
    assert job["TransformJobStatus"] == "Completed", job.get("FailureReason")
    out = "transform-out/knn-batch-manifest/"
    assert aws.keys(out) == [f"{out}a.csv.out", f"{out}sub/c.csv.out"]
    expected = oracle(aws.model, {"a.csv": INPUTS["csv/a.csv"],  # type: ignore[attr-defined]
                                  "c.csv": INPUTS["csv/sub/c.csv"]}, tmp_path,
                      "--content-type", "text/csv", "--accept", "application/jsonlines")
    assert aws.body(f"{out}a.csv.out") == expected["a.csv.out"]
    assert aws.body(f"{out}sub/c.csv.out") == expected["c.csv.out"]


def test_a_failing_object_fails_the_job_and_has_no_output(aws: Aws) -> None:
    """As SageMaker: the object with a bad row has no output, the others' are written, and
    the job is Failed naming the object, the records and the row."""
    aws.sm.create_transform_job(**request("knn-batch-bad", "bad/"))
    job = wait(aws.sm, "knn-batch-bad")
    assert job["TransformJobStatus"] == "Failed"
    reason = job["FailureReason"]
    assert reason.startswith("ClientError: 1 of 2 input objects failed and have no output "
                             "(the other 1 were written); the first: "
                             f"s3://{BUCKET}/transform/bad/short.csv, records 1-11: "), reason
    assert "6" in reason and "TransformEndTime" in job
    assert aws.keys("transform-out/knn-batch-bad/") == ["transform-out/knn-batch-bad/good.csv.out"]
    assert any("short.csv, records 1-11: " in m and m.endswith("(this object has no output)")
               for m in messages(aws, "knn-batch-bad"))

    no_type = request("knn-batch-no-type", "csv/a.csv")
    del no_type["TransformInput"]["ContentType"]
    aws.sm.create_transform_job(**no_type)
    job = wait(aws.sm, "knn-batch-no-type")
    assert job["TransformJobStatus"] == "Failed"
    assert job["FailureReason"].startswith(
        f"ClientError: s3://{BUCKET}/transform/csv/a.csv, records 1-50: Content-Type (none) is "
        "not supported; send one of "), job["FailureReason"]
    assert aws.keys("transform-out/knn-batch-no-type/") == []

    empty = request("knn-batch-empty", "nothing-here/")
    aws.sm.create_transform_job(**empty)
    job = wait(aws.sm, "knn-batch-empty")
    assert job["FailureReason"].startswith("ClientError: ") and "nothing-here" in (
        job["FailureReason"])

    aws.sm.create_model(ModelName="knn-no-model-object", ExecutionRoleArn=ROLE,
                        PrimaryContainer={"Image": IMAGE, "ModelDataUrl":
                                          f"s3://{BUCKET}/models/missing/model.tar.gz"})
    aws.sm.create_transform_job(**request("knn-batch-no-object", "csv/a.csv",
                                          ModelName="knn-no-model-object"))
    job = wait(aws.sm, "knn-batch-no-object")
    assert job["FailureReason"].startswith("ClientError: ") and (
        f"s3://{BUCKET}/models/missing/model.tar.gz" in job["FailureReason"]), job
    assert "TransformStartTime" not in job

    tf = request("knn-batch-tfrecord", "csv/a.csv")
    tf["TransformInput"]["SplitType"] = "TFRecord"
    aws.sm.create_transform_job(**tf)
    assert wait(aws.sm, "knn-batch-tfrecord")["FailureReason"] == (
        "ClientError: SplitType 'TFRecord' is not one of Line, RecordIO, None")


def test_sagemakers_errors(aws: Aws) -> None:
    with pytest.raises(BotoClientError) as missing:
        aws.sm.create_transform_job(**request("knn-batch-no-model", ModelName="no-such-model"))
    assert missing.value.response["Error"] == {
        "Code": "ValidationException",
        "Message": 'Could not find model "arn:aws:sagemaker:us-east-1:000000000000:model/'
                   'no-such-model".'}
    aws.sm.create_transform_job(**request("knn-batch-twice"))
    with pytest.raises(BotoClientError) as reused:
        aws.sm.create_transform_job(**request("knn-batch-twice"))
    assert reused.value.response["Error"] == {
        "Code": "ResourceInUse",
        "Message": "Transform job names must be unique within an AWS account and region, and a "
                   "transform job with this name already exists (arn:aws:sagemaker:us-east-1:"
                   "000000000000:transform-job/knn-batch-twice)"}
    for call in (aws.sm.describe_transform_job, aws.sm.stop_transform_job):
        with pytest.raises(BotoClientError) as absent:
            call(TransformJobName="no-such-job")
        assert absent.value.response["Error"] == {"Code": "ValidationException",
                                                  "Message": "Requested resource not found."}
    wait(aws.sm, "knn-batch-twice")


@pytest.mark.parametrize(("change", "message"), [
    ({"TransformJobName": "knn_batch"},
     "1 validation error detected: Value 'knn_batch' at 'transformJobName' failed to satisfy "
     "constraint: Member must satisfy regular expression pattern: ^[a-zA-Z0-9](-*[a-zA-Z0-9])"
     "{0,62}"),
    ({"TransformResources": {"InstanceCount": 1, "InstanceType": "local"}},
     "1 validation error detected: Value 'local' at 'transformResources.instanceType' failed "
     "to satisfy constraint: Member must satisfy enum value set: [ml."),
    ({"BatchStrategy": "AllAtOnce"},
     "1 validation error detected: Value 'AllAtOnce' at 'batchStrategy' failed to satisfy "
     "constraint: Member must satisfy enum value set: [MultiRecord, SingleRecord]"),
    ({"TransformOutput": {"S3OutputPath": "/tmp/out"}},
     "1 validation error detected: Value '/tmp/out' at 'transformOutput.s3OutputPath' failed "
     "to satisfy constraint: Member must satisfy regular expression pattern: "),
    ({"MaxPayloadInMB": 0}, "MaxPayloadInMB 0 asks for streamed (HTTP chunked) requests"),
    ({"MaxPayloadInMB": 60, "MaxConcurrentTransforms": 2},
     "MaxPayloadInMB (60) times MaxConcurrentTransforms (2) must not exceed 100 MB"),
    ({"DataProcessing": {"InputFilter": "$[1:]", "JoinSource": "Input"}},
     "DataProcessing (InputFilter '$[1:]', JoinSource 'Input') is not applied by openknn up"),
    ({"DataCaptureConfig": {"DestinationS3Uri": f"s3://{BUCKET}/capture"}},
     "DataCaptureConfig is not served by openknn up"),
], ids=["name", "instance-type", "strategy", "output", "streaming",
        "payload-limit", "data-processing", "data-capture"])
def test_the_server_validates_as_sagemaker_does(aws: Aws, change: dict[str, Any],
                                                message: str) -> None:
    with pytest.raises(BotoClientError) as refused:
        aws.sm.create_transform_job(**request("knn-batch-refused", **change))
    error = refused.value.response["Error"]
    assert error["Code"] == "ValidationException"
    assert error["Message"].startswith(message), error["Message"]
    with pytest.raises(BotoClientError, match="Requested resource not found"):
        aws.sm.describe_transform_job(TransformJobName="knn-batch-refused")


def test_identity_data_processing_is_accepted(aws: Aws) -> None:
    aws.sm.create_transform_job(**request("knn-batch-identity", "csv/b.csv", DataProcessing={
        "InputFilter": "$", "OutputFilter": "$", "JoinSource": "None"}))
    job = wait(aws.sm, "knn-batch-identity")
    assert job["TransformJobStatus"] == "Completed", job.get("FailureReason")
    assert job["DataProcessing"]["JoinSource"] == "None"


def test_a_stopped_job_is_stopped_and_writes_nothing(aws: Aws) -> None:
    aws.sm.create_transform_job(**request("knn-batch-stopped"))
    aws.sm.stop_transform_job(TransformJobName="knn-batch-stopped")  # while its worker starts
    assert aws.sm.describe_transform_job(TransformJobName="knn-batch-stopped")[
        "TransformJobStatus"] in ("Stopping", "Stopped")
    job = wait(aws.sm, "knn-batch-stopped")
    assert job["TransformJobStatus"] == "Stopped" and "TransformEndTime" in job
    assert aws.keys("transform-out/knn-batch-stopped/") == []
    with pytest.raises(BotoClientError, match="the transform job is in status Stopped"):
        aws.sm.stop_transform_job(TransformJobName="knn-batch-stopped")
    listed = aws.sm.list_transform_jobs(StatusEquals="Stopped")["TransformJobSummaries"]
    assert "knn-batch-stopped" in [j["TransformJobName"] for j in listed]


def test_a_job_running_when_the_service_dies_is_failed_after_a_restart(
        aws: Aws, tmp_path: Path) -> None:
    """The service is killed (-9) while a job runs: its worker stops itself and writes
    nothing, and the next service on that home says the job failed, and why."""
    home = tmp_path / "home"
    with service(home, tmp_path / "first.log") as (proc, url):
        first = Aws(url, tmp_path)
        put_model(first, aws.model)  # type: ignore[attr-defined]
        first.s3.put_object(Bucket=BUCKET, Key="transform/csv/a.csv", Body=INPUTS["csv/a.csv"])
        first.sm.create_transform_job(**request("knn-batch-orphan"))
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    time.sleep(1.5)  # the worker notices its service is gone (it looks every 0.5 s)
    with service(home, tmp_path / "second.log") as (_, url):
        second = Aws(url, tmp_path)
        job = second.sm.describe_transform_job(TransformJobName="knn-batch-orphan")
        assert job["TransformJobStatus"] == "Failed"
        assert job["FailureReason"] == (
            "AlgorithmError: openknn up stopped while the transform job was running; the job "
            "did not finish and wrote no output. Run it again under a new name")
        assert second.keys("transform-out/knn-batch-orphan/") == []
        assert [j["TransformJobName"] for j in second.sm.list_transform_jobs()[
            "TransformJobSummaries"]] == ["knn-batch-orphan"]
