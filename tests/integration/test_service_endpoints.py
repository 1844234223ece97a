"""Endpoints on `openknn up`, driven by boto3 as SDK v2's `deploy`, `predict` and the
tutorial's `delete_endpoint` drive them: CreateModel, CreateEndpointConfig and CreateEndpoint
start openknn's real serving stack, so InvokeEndpoint answers what `openknn serve` answers for
the same model (the oracle); statuses, errors (the control plane's and the runtime's
ModelError / ValidationError), logs, several workers, a worker killed with SIGKILL, an update
under load, a GPU type on a machine without one, and a restart of the service."""

from __future__ import annotations

import io
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from openknn.sdk import write_numpy_to_dense_tensor

from ..service_helpers import service
from .test_service_training import BUCKET, IMAGE, ROLE, SPLITS, X, Y, request, wait

boto3 = pytest.importorskip("boto3")
from botocore.exceptions import ClientError as BotoClientError  # noqa: E402

ACCOUNT_ARN = "arn:aws:sagemaker:us-east-1:000000000000"
ROWS = "".join(",".join(f"{v:.6g}" for v in row) + "\n" for row in X[400:450])
PID = re.compile(r"Started server process \[(\d+)\]")


class Aws:
    """Clients of one running service, and the model a training job on it wrote."""

    def __init__(self, url: str, home: Path, log: Path, proc: subprocess.Popen[bytes]) -> None:
        keys = {"endpoint_url": url, "aws_access_key_id": "test",
                "aws_secret_access_key": "test", "region_name": "us-east-1"}
        self.url, self.home, self.log, self.proc = url, home, log, proc
        self.s3 = boto3.client("s3", **keys)
        self.sm = boto3.client("sagemaker", **keys)
        self.runtime = boto3.client("sagemaker-runtime", **keys)
        self.logs = boto3.client("logs", **keys)
        self.model_data = ""


def start(root: Path) -> Iterator[Aws]:
    with service(root / "home", root / "up.log") as (proc, url):
        yield Aws(url, root / "home", root / "up.log", proc)


@pytest.fixture(scope="module")
def aws(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Aws]:
    """A service with the tutorial's channels in its store, a completed job, and its model."""
    root = tmp_path_factory.mktemp("endpoints")
    for a in start(root):
        a.s3.create_bucket(Bucket=BUCKET)
        for name, rows in SPLITS.items():
            buf = io.BytesIO()
            write_numpy_to_dense_tensor(buf, X[rows], Y[rows])
            buf.seek(0)
            a.s3.upload_fileobj(buf, BUCKET, f"knn/{name}/recordio-pb-data")
        a.sm.create_training_job(**request("knn-for-endpoints"))
        job = wait(a.sm, "knn-for-endpoints")
        assert job["TrainingJobStatus"] == "Completed", job
        a.model_data = job["ModelArtifacts"]["S3ModelArtifacts"]
        a.s3.download_file(BUCKET, a.model_data.split("/", 3)[3], str(root / "model.tar.gz"))
        a.local_model = root / "model.tar.gz"  # type: ignore[attr-defined]
        yield a


def deploy(aws: Aws, name: str, count: int = 1, instance_type: str = "ml.m4.xlarge",
           model_data: str | None = None, wait_for: bool = True) -> dict[str, Any]:
    """SDK v2's deploy: CreateModel, CreateEndpointConfig (named as the endpoint) and
    CreateEndpoint, then DescribeEndpoint while Creating."""
    aws.sm.create_model(ModelName=name, ExecutionRoleArn=ROLE, PrimaryContainer={
        "Image": IMAGE, "Environment": {}, "ModelDataUrl": model_data or aws.model_data})
    aws.sm.create_endpoint_config(EndpointConfigName=name, ProductionVariants=[{
        "VariantName": "AllTraffic", "ModelName": name, "InitialVariantWeight": 1,
        "InitialInstanceCount": count, "InstanceType": instance_type}])
    aws.sm.create_endpoint(EndpointName=name, EndpointConfigName=name, Tags=[])
    return in_service(aws, name) if wait_for else {}


def in_service(aws: Aws, name: str, timeout: float = 30.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        described = aws.sm.describe_endpoint(EndpointName=name)
        if described["EndpointStatus"] not in ("Creating", "Updating"):
            return described  # type: ignore[no-any-return]
        assert time.monotonic() < deadline, described
        time.sleep(0.05)


def invoke(aws: Aws, name: str, body: str = ROWS, accept: str = "application/json") -> bytes:
    answer = aws.runtime.invoke_endpoint(EndpointName=name, ContentType="text/csv",
                                         Accept=accept, Body=body)
    return answer["Body"].read()  # type: ignore[no-any-return]


def local_answer(model: Path, accept: str) -> bytes:
    """The oracle: `openknn invoke` on the same model.tar.gz, no service in between."""
    ran = subprocess.run([sys.executable, "-m", "openknn", "invoke", str(model), "--accept",
                          accept], input=ROWS.encode(), capture_output=True, timeout=120)
    assert ran.returncode == 0, ran.stderr
    return ran.stdout


def messages(aws: Aws, name: str, prefix: str = "") -> dict[str, list[str]]:
    group = f"/aws/sagemaker/Endpoints/{name}"
    out = {}
    filters = {"logStreamNamePrefix": prefix} if prefix else {}
    for stream in aws.logs.describe_log_streams(logGroupName=group, **filters)["logStreams"]:
        page = aws.logs.get_log_events(logGroupName=group, logStreamName=stream["logStreamName"],
                                       startFromHead=True)
        out[stream["logStreamName"]] = [e["message"] for e in page["events"]]
    return out


def worker_pids(aws: Aws, name: str) -> dict[str, int]:
    """Each worker stream's current process (the last `Started server process` line)."""
    return {stream: int(PID.findall("\n".join(lines))[-1])
            for stream, lines in messages(aws, name, "AllTraffic/").items()
            if PID.search("\n".join(lines))}


def alive(pid: int) -> bool:
    """Whether the process runs (a zombie, exited and not yet reaped, does not)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "\nState:\tZ" not in status


def test_an_endpoint_serves_what_openknn_serve_serves(aws: Aws) -> None:
    started = time.monotonic()
    described = deploy(aws, "knn-endpoint")
    assert time.monotonic() - started < 30.0  # the SDK's first DescribeEndpoint, at 30 s
    assert described["EndpointStatus"] == "InService", described
    assert described["EndpointArn"] == f"{ACCOUNT_ARN}:endpoint/knn-endpoint"
    assert described["EndpointConfigName"] == "knn-endpoint"
    [variant] = described["ProductionVariants"]
    assert (variant["VariantName"], variant["CurrentInstanceCount"]) == ("AllTraffic", 1)
    for accept in ("application/json", "application/json; verbose=true", "text/csv",
                   "application/jsonlines"):
        assert invoke(aws, "knn-endpoint", accept=accept) == local_answer(aws.local_model,
                                                                          accept)
    answer = aws.runtime.invoke_endpoint(EndpointName="knn-endpoint", ContentType="text/csv",
                                         Body=ROWS)
    assert answer["ResponseMetadata"]["HTTPHeaders"]["x-amzn-invoked-production-variant"] == (
        "AllTraffic")
    streams = messages(aws, "knn-endpoint")
    [worker] = [s for s in streams if s.startswith("AllTraffic/i-")]
    assert streams[worker][0].endswith("of variant AllTraffic: searching on the CPU")
    assert any("Endpoint knn-endpoint is InService" in m for m in streams["openknn"])
    config = aws.sm.describe_endpoint_config(EndpointConfigName="knn-endpoint")
    assert config["ProductionVariants"][0]["ModelName"] == "knn-endpoint"
    model = aws.sm.describe_model(ModelName="knn-endpoint")
    assert model["PrimaryContainer"]["ModelDataUrl"] == aws.model_data
    listed = aws.sm.list_endpoints(NameContains="knn-endpoint")["Endpoints"]
    assert [(e["EndpointName"], e["EndpointStatus"]) for e in listed] == [
        ("knn-endpoint", "InService")]

    pids = list(worker_pids(aws, "knn-endpoint").values())
    aws.sm.delete_endpoint(EndpointName="knn-endpoint")  # the tutorial's last call
    with pytest.raises(BotoClientError) as gone:
        aws.sm.describe_endpoint(EndpointName="knn-endpoint")
    assert gone.value.response["Error"] == {
        "Code": "ValidationException",
        "Message": f'Could not find endpoint "{ACCOUNT_ARN}:endpoint/knn-endpoint".'}
    assert pids and not any(alive(p) for p in pids)
    with pytest.raises(BotoClientError) as missing:
        invoke(aws, "knn-endpoint")
    assert missing.value.response["Error"] == {
        "Code": "ValidationError",
        "Message": "Endpoint knn-endpoint of account 000000000000 not found."}
    # the config and the model stay, as after boto3's delete_endpoint on SageMaker
    aws.sm.delete_endpoint_config(EndpointConfigName="knn-endpoint")
    aws.sm.delete_model(ModelName="knn-endpoint")


def test_a_bad_body_is_the_runtimes_model_error(aws: Aws) -> None:
    deploy(aws, "knn-errors")
    with pytest.raises(BotoClientError) as bad:
        invoke(aws, "knn-errors", body="1,2\n")
    error = bad.value.response
    assert error["Error"]["Code"] == "ModelError"
    assert error["ResponseMetadata"]["HTTPStatusCode"] == 424
    message = error["Error"]["Message"]
    assert message.startswith('Received client error (400) from primary with message "')
    assert "record 1 has 2 columns; expected 6 columns" in message
    assert message.endswith(
        '". See https://us-east-1.console.aws.amazon.com/cloudwatch/home?region=us-east-1'
        "#logEventViewer:group=/aws/sagemaker/Endpoints/knn-errors in account 000000000000 "
        "for more information.")
    assert error["OriginalStatusCode"] == 400
    assert error["LogStreamArn"].startswith(
        "arn:aws:logs:us-east-1:000000000000:log-group:/aws/sagemaker/Endpoints/knn-errors"
        ":log-stream:AllTraffic/i-")
    assert invoke(aws, "knn-errors")  # and the endpoint still answers
    aws.sm.delete_endpoint(EndpointName="knn-errors")


def test_duplicates_and_missing_resources_are_sagemakers_errors(aws: Aws) -> None:
    deploy(aws, "knn-dup")

    def error(call: Any, **kwargs: Any) -> tuple[str, str]:
        with pytest.raises(BotoClientError) as raised:
            call(**kwargs)
        return raised.value.response["Error"]["Code"], raised.value.response["Error"]["Message"]

    assert error(aws.sm.create_model, ModelName="knn-dup", ExecutionRoleArn=ROLE,
                 PrimaryContainer={"Image": IMAGE, "ModelDataUrl": aws.model_data}) == (
        "ValidationException", f'Cannot create already existing model "{ACCOUNT_ARN}:model/'
        'knn-dup".')
    assert error(aws.sm.create_endpoint_config, EndpointConfigName="knn-dup",
                 ProductionVariants=[{"VariantName": "AllTraffic", "ModelName": "knn-dup",
                                      "InitialInstanceCount": 1,
                                      "InstanceType": "ml.m4.xlarge"}]) == (
        "ValidationException", "Cannot create already existing endpoint configuration "
        f'"{ACCOUNT_ARN}:endpoint-config/knn-dup".')
    assert error(aws.sm.create_endpoint, EndpointName="knn-dup",
                 EndpointConfigName="knn-dup") == (
        "ValidationException", f'Cannot create already existing endpoint "{ACCOUNT_ARN}:'
        'endpoint/knn-dup".')
    assert error(aws.sm.create_endpoint, EndpointName="knn-x", EndpointConfigName="none") == (
        "ValidationException", f'Could not find endpoint configuration "{ACCOUNT_ARN}:'
        'endpoint-config/none".')
    assert error(aws.sm.create_endpoint_config, EndpointConfigName="knn-x",
                 ProductionVariants=[{"VariantName": "AllTraffic", "ModelName": "none",
                                      "InitialInstanceCount": 1,
                                      "InstanceType": "ml.m4.xlarge"}]) == (
        "ValidationException", f'Could not find model "{ACCOUNT_ARN}:model/none".')
    code, message = error(aws.sm.create_endpoint_config, EndpointConfigName="knn-x",
                          ProductionVariants=[{"VariantName": "AllTraffic",
                                               "ModelName": "knn-dup",
                                               "InitialInstanceCount": 1,
                                               "InstanceType": "local"}])
    assert code == "ValidationException" and message.startswith(
        "1 validation error detected: Value 'local' at 'productionVariants.1.member."
        "instanceType' failed to satisfy constraint: Member must satisfy enum value set: [")
    code, message = error(aws.sm.create_model, ModelName="knn-xgb", ExecutionRoleArn=ROLE,
                          PrimaryContainer={"Image": "683313688378.dkr.ecr.us-east-1."
                                            "amazonaws.com/sagemaker-xgboost:1.7-1",
                                            "ModelDataUrl": aws.model_data})
    assert code == "ValidationException" and "is not the built-in k-NN algorithm's image" in (
        message)
    assert error(aws.sm.describe_model, ModelName="none") == (
        "ValidationException", f'Could not find model "{ACCOUNT_ARN}:model/none".')
    aws.sm.delete_endpoint(EndpointName="knn-dup")


def test_a_model_that_cannot_load_fails_the_endpoint_with_the_reason(aws: Aws) -> None:
    missing = f"s3://{BUCKET}/knn/no-such-job/output/model.tar.gz"
    deploy(aws, "knn-broken", model_data=missing, wait_for=False)
    described = in_service(aws, "knn-broken")
    assert described["EndpointStatus"] == "Failed"
    assert missing in described["FailureReason"] and "does not exist" in (
        described["FailureReason"])
    with pytest.raises(BotoClientError, match="Endpoint knn-broken of account 000000000000 "
                                              "not found"):
        invoke(aws, "knn-broken")
    aws.sm.delete_endpoint(EndpointName="knn-broken")


def test_several_instances_and_a_killed_worker(aws: Aws) -> None:
    """InitialInstanceCount 2 is two workers, each taking requests; one killed with SIGKILL is
    started again, the endpoint's log says so, and requests after it succeed."""
    deploy(aws, "knn-two", count=2)
    pids = worker_pids(aws, "knn-two")
    assert len(pids) == 2
    expected = invoke(aws, "knn-two")
    assert all(invoke(aws, "knn-two") == expected for _ in range(6))
    stream, pid = sorted(pids.items())[0]
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while worker_pids(aws, "knn-two").get(stream) == pid:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    while not any("is serving again" in m for m in messages(aws, "knn-two")[stream]):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert any("was killed by signal 9; starting it again" in m
               for m in messages(aws, "knn-two")[stream])
    assert all(invoke(aws, "knn-two") == expected for _ in range(10))
    assert aws.sm.describe_endpoint(EndpointName="knn-two")["EndpointStatus"] == "InService"
    aws.sm.delete_endpoint(EndpointName="knn-two")
    assert not any(alive(p) for p in worker_pids(aws, "knn-two").values() if p != pid)


def test_a_gpu_type_serves_on_the_cpu_here_and_says_so(aws: Aws) -> None:
    from openknn.core import gpu

    if gpu.visible() > 0:
        pytest.skip("this machine has a GPU faiss sees")
    deploy(aws, "knn-p2", instance_type="ml.p2.xlarge")
    assert invoke(aws, "knn-p2") == local_answer(aws.local_model, "application/json")
    [first] = [lines[0] for s, lines in messages(aws, "knn-p2").items() if s != "openknn"]
    assert first.endswith("(ml.p2.xlarge) of variant AllTraffic: a GPU instance type, but "
                          "faiss sees no GPU on this machine (faiss-cpu is installed): "
                          "searching on the CPU")
    aws.sm.delete_endpoint(EndpointName="knn-p2")


def test_an_update_under_load_fails_no_request(aws: Aws) -> None:
    deploy(aws, "knn-update")
    aws.sm.create_endpoint_config(EndpointConfigName="knn-update-2", ProductionVariants=[{
        "VariantName": "AllTraffic", "ModelName": "knn-update", "InitialVariantWeight": 1,
        "InitialInstanceCount": 2, "InstanceType": "ml.c5.xlarge"}])
    expected = invoke(aws, "knn-update")
    counts = {"ok": 0, "failed": 0}
    stop = threading.Event()
    errors: list[str] = []

    def load() -> None:
        runtime = boto3.client("sagemaker-runtime", endpoint_url=aws.url, region_name="us-east-1",
                               aws_access_key_id="test", aws_secret_access_key="test")
        while not stop.is_set():
            try:
                got = runtime.invoke_endpoint(EndpointName="knn-update", ContentType="text/csv",
                                              Accept="application/json", Body=ROWS)
                ok = got["Body"].read() == expected
            except BotoClientError as exc:
                ok = False
                errors.append(str(exc))
            counts["ok" if ok else "failed"] += 1

    threads = [threading.Thread(target=load) for _ in range(3)]
    for t in threads:
        t.start()
    time.sleep(0.5)
    before = dict(worker_pids(aws, "knn-update"))
    aws.sm.update_endpoint(EndpointName="knn-update", EndpointConfigName="knn-update-2")
    assert aws.sm.describe_endpoint(EndpointName="knn-update")["EndpointStatus"] == "Updating"
    described = in_service(aws, "knn-update")
    time.sleep(1.0)  # the old worker drains and stops while the load goes on
    stop.set()
    for t in threads:
        t.join(timeout=30)
    print(f"update under load: {counts['ok']} requests answered, {counts['failed']} failed")
    assert counts["failed"] == 0, errors[:3]
    assert counts["ok"] > 20
    assert described["EndpointConfigName"] == "knn-update-2"
    assert described["ProductionVariants"][0]["CurrentInstanceCount"] == 2
    assert not any(alive(p) for p in before.values())
    aws.sm.delete_endpoint(EndpointName="knn-update")


def test_endpoints_and_objects_survive_a_restart(tmp_path: Path, aws: Aws) -> None:
    """Stop the service (SIGTERM: its workers stop too) and start it with the same home: the
    InService endpoint comes back InService by itself and answers the same; the model, the
    completed training job (described exactly as before) and the S3 objects remain."""
    local = aws.local_model
    for first in start(tmp_path):
        first.s3.create_bucket(Bucket=BUCKET)
        first.s3.upload_file(str(local), BUCKET, "models/model.tar.gz")
        deploy(first, "knn-restart", model_data=f"s3://{BUCKET}/models/model.tar.gz")
        answer = invoke(first, "knn-restart")
        for name, rows in SPLITS.items():  # and a training job, Completed before the stop
            buf = io.BytesIO()
            write_numpy_to_dense_tensor(buf, X[rows], Y[rows])
            buf.seek(0)
            first.s3.upload_fileobj(buf, BUCKET, f"knn/{name}/recordio-pb-data")
        first.sm.create_training_job(**request("knn-before-restart"))
        job = wait(first.sm, "knn-before-restart")
        assert job["TrainingJobStatus"] == "Completed"
        pids = list(worker_pids(first, "knn-restart").values())
        first.proc.send_signal(signal.SIGTERM)
        assert first.proc.wait(30) == -signal.SIGTERM
        assert pids and not any(alive(p) for p in pids)
    for second in start(tmp_path):
        assert [e["EndpointName"] for e in second.sm.list_endpoints()["Endpoints"]] == [
            "knn-restart"]
        assert second.sm.describe_endpoint(EndpointName="knn-restart")["EndpointStatus"] == (
            "InService")
        assert invoke(second, "knn-restart") == answer  # waits while its worker starts
        assert [m["ModelName"] for m in second.sm.list_models()["Models"]] == ["knn-restart"]
        again = second.sm.describe_training_job(TrainingJobName="knn-before-restart")
        assert again == {**job, "ResponseMetadata": again["ResponseMetadata"]}
        assert second.s3.head_object(Bucket=BUCKET, Key="models/model.tar.gz")[
            "ContentLength"] == local.stat().st_size
        second.sm.delete_endpoint(EndpointName="knn-restart")


def test_lists_page_and_sort(aws: Aws) -> None:
    for i in range(3):
        aws.sm.create_model(ModelName=f"knn-list-{i}", ExecutionRoleArn=ROLE, PrimaryContainer={
            "Image": IMAGE, "ModelDataUrl": aws.model_data})
        time.sleep(0.01)
    first = aws.sm.list_models(NameContains="knn-list", MaxResults=2)
    assert [m["ModelName"] for m in first["Models"]] == ["knn-list-2", "knn-list-1"]
    rest = aws.sm.list_models(NameContains="knn-list", MaxResults=2,
                              NextToken=first["NextToken"])
    assert [m["ModelName"] for m in rest["Models"]] == ["knn-list-0"] and "NextToken" not in rest
    ascending = aws.sm.list_models(NameContains="knn-list", SortBy="Name",
                                   SortOrder="Ascending")
    assert [m["ModelName"] for m in ascending["Models"]] == [f"knn-list-{i}" for i in range(3)]
    for i in range(3):
        aws.sm.delete_model(ModelName=f"knn-list-{i}")
    assert aws.sm.list_models(NameContains="knn-list")["Models"] == []


def test_no_worker_outlives_the_service(tmp_path: Path, aws: Aws) -> None:
    """kill -9 of the service itself: its workers watch its pid and stop."""
    for running in start(tmp_path):
        running.s3.create_bucket(Bucket=BUCKET)
        running.s3.upload_file(str(aws.local_model), BUCKET, "m/model.tar.gz")
        deploy(running, "knn-orphan", model_data=f"s3://{BUCKET}/m/model.tar.gz")
        pids = list(worker_pids(running, "knn-orphan").values())
        running.proc.kill()
        running.proc.wait(10)
        deadline = time.monotonic() + 15
        while any(alive(p) for p in pids):
            assert time.monotonic() < deadline, pids
            time.sleep(0.1)

