"""`openknn up` as a process, driven by boto3 with only `openknn env`'s environment: STS,
IAM and S3 on the one port; S3 objects survive a restart with the same home; one service per
home; SIGTERM stops it cleanly; an operation not served yet is named, with those that are."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

boto3 = pytest.importorskip("boto3")
from botocore.exceptions import ClientError as BotoClientError  # noqa: E402

from ..service_helpers import environment, service  # noqa: E402


@pytest.fixture
def client_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in [n for n in os.environ if n.startswith("AWS_")]:
        monkeypatch.delenv(name)
    yield


def clients(values: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> boto3.Session:
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    return boto3.Session()


def test_one_port_serves_sts_iam_and_s3_and_keeps_objects(
        tmp_path: Path, client_env: None, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "home"
    with service(home, tmp_path / "up.log") as (proc, url):
        session = clients(environment(url, home), monkeypatch)
        identity = session.client("sts").get_caller_identity()
        assert identity["Account"] == "000000000000"
        assert identity["Arn"] == "arn:aws:sts::000000000000:assumed-role/SageMakerRole/openknn"
        with pytest.raises(BotoClientError, match=r"AccessDenied.*iam:GetRole"):
            session.client("iam").get_role(RoleName="SageMakerRole")
        s3 = session.client("s3")
        s3.create_bucket(Bucket="sagemaker-us-east-1-000000000000")
        s3.put_object(Bucket="sagemaker-us-east-1-000000000000", Key="knn/a", Body=b"kept")
        with pytest.raises(BotoClientError, match="UnknownOperationException.*'sqs'"):
            session.client("sqs").list_queues()
        with pytest.raises(BotoClientError, match=r"SageMaker\.ListNotebookInstances: not an "
                                                  r"operation openknn serves for the SageMaker "
                                                  r"API; it serves CreateEndpoint, "):
            session.client("sagemaker").list_notebook_instances()
        health = httpx.get(f"{url}/_openknn/health", trust_env=False).json()
        assert health["status"] == "ok" and health["home"] == str(home)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) in (0, -signal.SIGTERM)  # uvicorn re-raises it once stopped
        assert (tmp_path / "up.log").read_text().splitlines()[-1] == "openknn up: stopped"
    with service(home, tmp_path / "up2.log") as (_, url2):
        session = clients(environment(url2, home), monkeypatch)
        body = session.client("s3").get_object(Bucket="sagemaker-us-east-1-000000000000",
                                               Key="knn/a")["Body"].read()
        assert body == b"kept"


def test_one_service_per_home(tmp_path: Path) -> None:
    home = tmp_path / "home"
    with service(home, tmp_path / "up.log"):
        second = subprocess.run([sys.executable, "-m", "openknn", "up", "--port", "0",
                                 "--home", str(home)], capture_output=True, text=True,
                                timeout=60, check=False)
    assert second.returncode == 1
    assert second.stderr.strip().splitlines()[-1] == (
        f"ClientError: --home {str(home)!r} is in use by another openknn up; stop it, or "
        "give another --home")


def test_a_busy_port_is_named(tmp_path: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        ran = subprocess.run([sys.executable, "-m", "openknn", "up", "--port", str(port),
                              "--home", str(tmp_path / "home")], capture_output=True,
                             text=True, timeout=60, check=False)
    assert ran.returncode == 1
    assert re.fullmatch(rf"ClientError: --port {port}: cannot listen on 127\.0\.0\.1:{port} "
                        r"\(.+\); stop what uses it, or give another --port \(0 picks a free "
                        r"one\)", ran.stderr.strip().splitlines()[-1])
