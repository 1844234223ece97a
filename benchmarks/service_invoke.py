"""What `openknn up` adds: the covtype tutorial's model trained and deployed through boto3 on
a fresh service, then single-row InvokeEndpoint latency through the service beside the same
request sent straight to the endpoint's worker (`openknn serve`), in one run (issue 13).

Printed:

- CreateTrainingJob → Completed and CreateEndpoint → InService wall times, polled every 50 ms
  (the SDK itself first looks after 5 s and 30 s);
- single-row latency, p50 and p99 over ``--requests`` requests per path, the paths interleaved
  in blocks of 50 so the machine's noise falls on each alike, one keep-alive httpx client each:
  ``direct`` (POST the worker's /invocations), ``service`` (POST /endpoints/<name>/invocations
  on the service's port, with a SigV4 Authorization header as boto3 sends, which is how the
  service routes it; signatures are not checked without --auth), ``bare hop`` (the floor of
  one more HTTP hop here: a bare uvicorn app in its own process that forwards each request
  to the worker with the service's own forwarder, ``service/forward.py``, and nothing else),
  and ``boto3`` (the whole client: signing, botocore's parsing) for context.
  ``overhead`` = service − direct.

    .venv/bin/python benchmarks/service_invoke.py [--path covtype.csv.gz] [--requests 2000]
"""

from __future__ import annotations

import argparse
import io
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import boto3
import httpx
import numpy as np
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.service_helpers import service  # noqa: E402

from openknn.jobs import datasets  # noqa: E402
from openknn.sdk import write_numpy_to_dense_tensor  # noqa: E402

DEFAULT_DATA = (Path(__file__).resolve().parents[2] / "shared" / "data" / "covtype"
                / "kaggle-forest-cover-type-prediction_train.csv.gz")
IMAGE = "382416733822.dkr.ecr.us-east-1.amazonaws.com/knn:1"
ROLE = "arn:aws:iam::000000000000:role/SageMakerRole"
BUCKET = "sagemaker-us-east-1-000000000000"
BLOCK = 50
BARE_HOP = """
import sys, uvicorn
from openknn.service.forward import Upstream
upstream = Upstream("127.0.0.1", int(sys.argv[1]))
async def app(scope, receive, send):
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    answer = await upstream.post("/invocations", body, [(b"content-type", b"text/csv"),
                                                        (b"accept", b"application/json")], 80)
    await send({"type": "http.response.start", "status": answer.status, "headers": [
        (b"content-type", answer.headers[b"content-type"]),
        (b"content-length", str(len(answer.body)).encode())]})
    await send({"type": "http.response.body", "body": answer.body})
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[2]), log_level="warning",
            lifespan="off", proxy_headers=False)
"""


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q))


def signed_headers(url: str, body: bytes) -> dict[str, str]:
    """The headers boto3 sends for InvokeEndpoint: SigV4 for the sagemaker scope."""
    request = AWSRequest("POST", url, data=body, headers={"Content-Type": "text/csv",
                                                          "Accept": "application/json"})
    SigV4Auth(Credentials("test", "test"), "sagemaker", "us-east-1").add_auth(request)
    return dict(request.headers.items())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--path", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--requests", type=int, default=2000)
    args = parser.parse_args()
    split = datasets.tutorial_split(datasets.load_covtype(args.path))
    with tempfile.TemporaryDirectory() as tmp, service(Path(tmp) / "home",
                                                        Path(tmp) / "up.log") as (_, url):
        keys: dict[str, Any] = {"endpoint_url": url, "aws_access_key_id": "test",
                                "aws_secret_access_key": "test", "region_name": "us-east-1"}
        s3, sm = boto3.client("s3", **keys), boto3.client("sagemaker", **keys)
        runtime, logs = boto3.client("sagemaker-runtime", **keys), boto3.client("logs", **keys)
        s3.create_bucket(Bucket=BUCKET)
        for name, (x, y) in (("train", split[:2]), ("test", split[2:])):
            buf = io.BytesIO()
            write_numpy_to_dense_tensor(buf, x, y)
            buf.seek(0)
            s3.upload_fileobj(buf, BUCKET, f"knn/{name}/recordio-pb-data")
        started = time.monotonic()
        sm.create_training_job(
            TrainingJobName="knn-bench", RoleArn=ROLE,
            AlgorithmSpecification={"TrainingImage": IMAGE, "TrainingInputMode": "File"},
            InputDataConfig=[{"ChannelName": c, "DataSource": {"S3DataSource": {
                "S3DataType": "S3Prefix", "S3Uri": f"s3://{BUCKET}/knn/{c}/",
                "S3DataDistributionType": "FullyReplicated"}}} for c in ("train", "test")],
            OutputDataConfig={"S3OutputPath": f"s3://{BUCKET}/knn/output"},
            ResourceConfig={"InstanceType": "ml.m5.2xlarge", "InstanceCount": 1,
                            "VolumeSizeInGB": 30},
            StoppingCondition={"MaxRuntimeInSeconds": 86400},
            HyperParameters={"feature_dim": "54", "k": "10", "sample_size": "200000",
                             "predictor_type": "classifier"})
        while (job := sm.describe_training_job(TrainingJobName="knn-bench"))[
                "TrainingJobStatus"] == "InProgress":
            time.sleep(0.05)
        trained = time.monotonic() - started
        assert job["TrainingJobStatus"] == "Completed", job.get("FailureReason")
        sm.create_model(ModelName="knn-bench", ExecutionRoleArn=ROLE, PrimaryContainer={
            "Image": IMAGE, "ModelDataUrl": job["ModelArtifacts"]["S3ModelArtifacts"]})
        sm.create_endpoint_config(EndpointConfigName="knn-bench", ProductionVariants=[{
            "VariantName": "AllTraffic", "ModelName": "knn-bench", "InitialInstanceCount": 1,
            "InstanceType": "ml.m4.xlarge"}])
        started = time.monotonic()
        sm.create_endpoint(EndpointName="knn-bench", EndpointConfigName="knn-bench")
        while (endpoint := sm.describe_endpoint(EndpointName="knn-bench"))[
                "EndpointStatus"] == "Creating":
            time.sleep(0.05)
        deployed = time.monotonic() - started
        assert endpoint["EndpointStatus"] == "InService", endpoint.get("FailureReason")
        group = "/aws/sagemaker/Endpoints/knn-bench"
        [stream] = [s["logStreamName"] for s in logs.describe_log_streams(
            logGroupName=group, logStreamNamePrefix="AllTraffic/")["logStreams"]]
        lines = [e["message"] for e in logs.get_log_events(
            logGroupName=group, logStreamName=stream, startFromHead=True)["events"]]
        worker = re.search(r"Uvicorn running on (http://127\.0\.0\.1:\d+)", "\n".join(lines))
        assert worker is not None, lines
        from openknn.serving.process import free_port

        worker_port, hop_port = int(worker.group(1).rsplit(":", 1)[1]), free_port()
        hop = subprocess.Popen([sys.executable, "-c", BARE_HOP, str(worker_port),
                                str(hop_port)])
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"http://127.0.0.1:{hop_port}/", timeout=1)
                break
            except httpx.HTTPError:
                assert time.monotonic() < deadline and hop.poll() is None
                time.sleep(0.1)
        row = (",".join(f"{v:g}" for v in split.test_x[0]) + "\n").encode()
        via = f"{url}/endpoints/knn-bench/invocations"
        headers = signed_headers(via, row)
        plain = {"Content-Type": "text/csv", "Accept": "application/json"}
        times: dict[str, list[float]] = {"direct": [], "service": [], "bare hop": [],
                                         "boto3": []}
        with httpx.Client(trust_env=False) as direct, httpx.Client(trust_env=False) as through:
            calls = {
                "direct": lambda: direct.post(f"{worker.group(1)}/invocations", content=row,
                                              headers=plain).content,
                "service": lambda: through.post(via, content=row, headers=headers).content,
                "bare hop": lambda: through.post(f"http://127.0.0.1:{hop_port}/invocations",
                                                 content=row, headers=plain).content,
                "boto3": lambda: runtime.invoke_endpoint(
                    EndpointName="knn-bench", ContentType="text/csv",
                    Accept="application/json", Body=row)["Body"].read(),
            }
            answers = {name: call() for name, call in calls.items()}  # warm every path
            assert len(set(answers.values())) == 1, answers
            for _ in range(max(1, args.requests // BLOCK)):
                for name, call in calls.items():
                    for _ in range(BLOCK):
                        t = time.perf_counter()
                        call()
                        times[name].append((time.perf_counter() - t) * 1000)
        hop.terminate()
        hop.wait(10)
        sm.delete_endpoint(EndpointName="knn-bench")
    print(f"covtype rows: {len(split.train_y)} train, {len(split.test_y)} test")
    print(f"CreateTrainingJob -> Completed: {trained:.2f} s")
    print(f"CreateEndpoint -> InService:    {deployed:.2f} s")
    print(f"single-row InvokeEndpoint, {len(times['direct'])} requests per path (ms):")
    print(f"{'path':<10}{'p50':>8}{'p99':>8}{'mean':>8}")
    for name, values in times.items():
        print(f"{name:<10}{percentile(values, 50):8.3f}{percentile(values, 99):8.3f}"
              f"{statistics.fmean(values):8.3f}")
    print(f"{'overhead':<10}"
          f"{percentile(times['service'], 50) - percentile(times['direct'], 50):8.3f}"
          f"{percentile(times['service'], 99) - percentile(times['direct'], 99):8.3f}"
          f"{statistics.fmean(times['service']) - statistics.fmean(times['direct']):8.3f}"
          "   (service - direct; the issue's budget: 0.3 ms)")


if __name__ == "__main__":
    main()
