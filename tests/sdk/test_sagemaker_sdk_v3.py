"""The real SageMaker Python SDK v3 (``sagemaker==3.27.*``, in its own venv,
``.venv-sagemaker-v3``) trains, deploys, invokes and deletes a k-NN model on ``openknn up``
with nothing but ``openknn env``'s environment: ``tests/sdk/sdk_v3_flow.py`` (``ModelTrainer``,
``ModelBuilder``, ``Endpoint``) under a guard that refuses and records any connection or name
lookup that would leave the machine, and a recorder of the calls the SDK made. Checked
against scikit-learn on the same Kaggle covtype rows: every prediction, the verbose labels;
the job, as boto3 describes it from here, Completed with its test metric; the endpoint, its
config and model gone afterwards. Behind the ``sdk`` marker (about 45 s: v3, like v2, waits
30 s before its first look at a new endpoint)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from openknn.jobs import datasets

from ..conftest import shared_file
from ..service_helpers import service

pytestmark = pytest.mark.sdk
REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
SDK_PYTHON = Path(os.environ.get("OPENKNN_SAGEMAKER_V3_PYTHON",
                                 REPO / ".venv-sagemaker-v3" / "bin" / "python"))
COVTYPE = ("covtype", "kaggle-forest-cover-type-prediction_train.csv.gz")
TIMEOUT_S = 600
# The calls a v3 user's flow makes, in this order (others may come between them).
FLOW = [("s3", "ListBuckets"), ("s3", "PutObject"), ("iam", "SimulatePrincipalPolicy"),
        ("sagemaker", "CreateTrainingJob"), ("sagemaker", "DescribeTrainingJob"),
        ("logs", "GetLogEvents"), ("sagemaker", "CreateModel"), ("sagemaker", "DescribeModel"),
        ("sagemaker", "CreateEndpointConfig"), ("sagemaker", "CreateEndpoint"),
        ("logs", "FilterLogEvents"), ("sagemaker", "DescribeEndpoint"),
        ("sagemaker-runtime", "InvokeEndpoint"), ("sagemaker", "DeleteEndpoint"),
        ("sagemaker", "DeleteEndpointConfig"), ("sagemaker", "DeleteModel")]
# What v3 asks and is meant to be refused: default_bucket() creates a bucket HeadBucket does
# not find; the role check reads AccessDenied as "proceeding"; train() looks for the job's
# log stream before the job has written one; wait_for_delete() reads a missing endpoint as
# deleted.
REFUSALS = {("s3", "HeadBucket", 404, "404"),
            ("iam", "SimulatePrincipalPolicy", 403, "AccessDenied"),
            ("iam", "GetRole", 403, "AccessDenied"),
            ("logs", "DescribeLogStreams", 400, "ResourceNotFoundException"),
            ("sagemaker", "DescribeEndpoint", 400, "ValidationException")}


@pytest.fixture(scope="module")
def sdk_python() -> Path:
    if not SDK_PYTHON.exists():
        pytest.skip(f"no SageMaker SDK v3 venv at {SDK_PYTHON}: python3 -m venv "
                    ".venv-sagemaker-v3 && .venv-sagemaker-v3/bin/pip install -e "
                    "'.[sagemaker-v3]' (README)")
    return SDK_PYTHON


def sdk_environment(url: str) -> dict[str, str]:
    """The user's environment, less anything that could point a client elsewhere, plus
    exactly what ``openknn env --endpoint-url URL --write-role-metadata`` prints."""
    ran = subprocess.run([sys.executable, "-m", "openknn", "env", "--endpoint-url", url,
                          "--write-role-metadata"], capture_output=True, text=True, timeout=60)
    if ran.returncode != 0 and "(Permission denied)" in ran.stderr:  # not root
        pytest.skip(f"cannot write the SDK's role metadata file: {ran.stderr.strip()}")
    assert ran.returncode == 0, ran.stderr
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("AWS_", "SAGEMAKER_", "BOTO"))}
    env.update(re.findall(r"^export (\w+)=(\S+)$", ran.stdout, re.M), PYTHONUNBUFFERED="1")
    return env


def sagemaker_client(url: str, env: dict[str, str]) -> Any:
    """boto3 from this venv, on the service, as the SDK's environment says."""
    import boto3

    return boto3.session.Session(
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        region_name=env["AWS_DEFAULT_REGION"]).client("sagemaker", endpoint_url=url)


def run_flow(python: Path, tmp_path: Path) -> dict[str, Any]:
    """The flow under the loopback guard and the call recorder against a fresh
    ``openknn up``; what it wrote and printed, the calls it made, and what boto3 describes
    of its resources before the service stops."""
    data = shared_file(*COVTYPE)
    with service(tmp_path / "home", tmp_path / "up.log") as (_, url):
        env = sdk_environment(url)
        results, refused, calls = (tmp_path / name for name in
                                   ("results.json", "refused.json", "calls.json"))
        started = time.monotonic()
        ran = subprocess.run(
            [str(python), str(HERE / "loopback_guard.py"), str(refused),
             str(HERE / "call_recorder.py"), str(calls), str(HERE / "sdk_v3_flow.py"),
             "--path", str(data), "--results", str(results)],
            capture_output=True, text=True, env=env, cwd=tmp_path, timeout=TIMEOUT_S)
        wall = time.monotonic() - started
        output = ran.stdout + ran.stderr
        print(f"SDK v3 flow wall time: {wall:.1f} s")
        assert ran.returncode == 0, output[-4000:]
        flow = json.loads(results.read_text())
        client = sagemaker_client(url, env)
        described = {
            "job": client.describe_training_job(TrainingJobName=flow["training_job"]),
            "endpoints": client.list_endpoints()["Endpoints"],
            "configs": client.list_endpoint_configs()["EndpointConfigs"],
            "models": client.list_models()["Models"]}
        try:
            client.describe_endpoint(EndpointName=flow["endpoint_name"])
            described["endpoint_error"] = ""
        except client.exceptions.ClientError as err:
            described["endpoint_error"] = err.response["Error"]["Message"]
    assert json.loads(refused.read_text()) == [], "a request left the machine"
    return {"results": flow, "output": output, "calls": json.loads(calls.read_text()),
            "described": described, "wall": wall}


def in_order(wanted: list[tuple[str, str]], made: list[tuple[str, str]]) -> bool:
    rest = iter(made)
    return all(call in rest for call in wanted)


def test_sdk_v3_trains_deploys_invokes_and_deletes(sdk_python: Path, tmp_path: Path) -> None:
    from sklearn.neighbors import KNeighborsClassifier

    run = run_flow(sdk_python, tmp_path)
    results, described = run["results"], run["described"]
    x, y, xt, yt = datasets.tutorial_split(datasets.load_covtype(shared_file(*COVTYPE)))
    knn = KNeighborsClassifier(n_neighbors=10, algorithm="brute").fit(x, y)
    expected = knn.predict(xt)
    predictions = np.array(results["predictions"])
    print(f"SDK v3: accuracy {results['accuracy']:.4f} (scikit-learn "
          f"{np.mean(expected == yt):.4f}); train {results['train_seconds']:.1f} s, build "
          f"{results['build_seconds']:.1f} s, deploy {results['deploy_seconds']:.1f} s, "
          f"invoke {results['invoke_seconds']:.2f} s; the flow {results['wall_seconds']:.1f} s")
    assert len(predictions) == len(yt)
    assert np.array_equal(predictions, expected), np.flatnonzero(predictions != expected)[:20]
    _, index = knn.kneighbors(xt[:5])
    for row, near in zip(results["verbose"], index):
        assert sorted(row["labels"]) == sorted(y[near].tolist())
    # train(logs=True) showed the job's log (v3 logs through `logging`; importing
    # sagemaker.serve sets the root logger to INFO), its test score line among it
    score = re.search(r"#test_score \(algo-1\) : \('accuracy', ([0-9.]+)\)", run["output"])
    assert score is not None, run["output"][-3000:]
    assert abs(float(score.group(1)) - results["accuracy"]) < 1e-6
    # deploy() printed the endpoint's log (FilterLogEvents on its group; rich wraps it at 80
    # columns off a terminal), its first line among it: where the instance searches
    squashed = "".join(run["output"].split())
    assert re.search(r"Instancei-[0-9a-f]{16}\(ml\.m5\.large\)ofvariantAllTraffic:"
                     r"searchingontheCPU", squashed), run["output"][-3000:]
    # the job as boto3 describes it, from this venv
    job = described["job"]
    assert job["TrainingJobStatus"] == "Completed", job.get("FailureReason")
    assert job["AlgorithmSpecification"]["TrainingImage"] == results["image"]
    metrics = {m["MetricName"]: m["Value"] for m in job["FinalMetricDataList"]}
    assert abs(metrics["test:accuracy"] - results["accuracy"]) < 1e-6
    # gone afterwards: the endpoint, and the config and model v3's delete leaves
    assert 'Could not find endpoint "' in described["endpoint_error"]
    assert described["endpoints"] == described["configs"] == described["models"] == []
    # the calls the SDK made: the flow's, in order, and no error but the expected refusals
    calls = run["calls"]
    print("SDK v3 calls: " + ", ".join(f"{op}{'' if status < 300 else f' ({code})'}"
                                       for _, _, op, status, code in calls))
    assert in_order(FLOW, [(service, op) for _, service, op, _, _ in calls]), calls
    errors = {(service, op, status, code) for _, service, op, status, code in calls
              if status >= 300}
    assert errors <= REFUSALS, errors
