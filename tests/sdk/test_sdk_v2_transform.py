"""The real SageMaker Python SDK v2 (``.venv-sagemaker``) runs batch transform against
``openknn up`` with nothing but ``openknn env``'s environment, under the loopback guard:
``Model.transformer(...).transform(..., wait=True, logs=True)`` (``sdk_v2_transform_flow.py``).
The job Completes, its ``.out`` objects are what ``openknn transform`` writes for the same
model and files, ``logs=True`` printed the job's log, ``Transformer.attach`` reads the job
back, and a job over a bad row is the SDK's ``UnexpectedStatusException`` with the
FailureReason. Behind the ``sdk`` marker (about 25 s: the SDK waits 10 s before it first
looks at a job)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from ..integration.test_service_transform import (
    BUCKET,
    INPUTS,
    Aws,
    local_model,
    oracle,
)
from ..service_helpers import service
from .test_sagemaker_sdk_v2 import REPO, SDK_PYTHON

pytestmark = pytest.mark.sdk
pytest.importorskip("boto3")


@pytest.fixture(scope="module")
def sdk_python() -> Path:
    if not SDK_PYTHON.exists():
        pytest.skip(f"no SageMaker SDK venv at {SDK_PYTHON} (README: .venv-sagemaker)")
    return SDK_PYTHON


def test_the_sdks_transformer_runs_a_transform_job(sdk_python: Path, tmp_path: Path) -> None:
    model = local_model(tmp_path / "model")
    with service(tmp_path / "home", tmp_path / "up.log") as (_, url):
        aws = Aws(url, tmp_path)
        aws.s3.create_bucket(Bucket=BUCKET)
        aws.s3.upload_file(str(model), BUCKET, "models/model.tar.gz")
        for key, data in INPUTS.items():
            if key.startswith(("csv/", "bad/")):
                aws.s3.put_object(Bucket=BUCKET, Key=f"transform/{key}", Body=data)
        ran = subprocess.run([sys.executable, "-m", "openknn", "env", "--endpoint-url", url],
                             capture_output=True, text=True, timeout=60, check=True)
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("AWS_", "SAGEMAKER_", "BOTO"))}
        env.update(dict(re.findall(r"^export (\w+)=(\S+)$", ran.stdout, re.M)),
                   PYTHONUNBUFFERED="1")
        results, report = tmp_path / "results.json", tmp_path / "refused.json"
        flow = subprocess.run(
            [str(sdk_python), str(REPO / "tests" / "sdk" / "loopback_guard.py"), str(report),
             str(REPO / "tests" / "sdk" / "sdk_v2_transform_flow.py"),
             "--model-data", f"s3://{BUCKET}/models/model.tar.gz",
             "--input", f"s3://{BUCKET}/transform/csv/",
             "--bad-input", f"s3://{BUCKET}/transform/bad/",
             "--output", f"s3://{BUCKET}/sdk-out", "--results", str(results)],
            capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
        output = flow.stdout + flow.stderr
        assert flow.returncode == 0, output[-4000:]
        assert json.loads(report.read_text()) == [], "a request left the machine"
        got = json.loads(results.read_text())
        print(f"SDK v2 Transformer.transform: {got['seconds']:.1f} s")
        assert got["status"] == "Completed"
        assert (got["output_path"], got["accept"], got["assemble_with"], got["strategy"]) == (
            f"s3://{BUCKET}/sdk-out", "application/jsonlines", "Line", "MultiRecord")
        assert "Transformed 100 records from 3 of 3 input objects" in output  # logs=True
        keys = aws.keys("sdk-out/")
        assert keys == ["sdk-out/a.csv.out", "sdk-out/b.csv.out", "sdk-out/sub/c.csv.out"]
        expected = oracle(model, {k.rsplit("/", 1)[1]: v for k, v in INPUTS.items()
                                  if k.startswith("csv/")}, tmp_path, "--content-type",
                          "text/csv", "--accept", "application/jsonlines")
        for key in keys:
            assert aws.body(key) == expected[key.rsplit("/", 1)[1]], key
        assert got["error"].startswith("Error for Transform job ")
        assert ": Failed. Reason: ClientError: 1 of 2 input objects failed" in got["error"]
        assert aws.keys("sdk-out-bad") == ["sdk-out-bad/good.csv.out"]
