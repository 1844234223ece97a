"""Which API a request is for, on the service's one port: the SigV4 credential scope first
(as boto3 signs each service), then path and X-Amz-Target; and the environment `openknn env`
prints."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from openknn.errors import ClientError
from openknn.service import env, routing, up
from openknn.service.routing import Route


def signed(service: str, key: str = "test", region: str = "eu-west-1") -> dict[str, str]:
    return {"authorization": f"AWS4-HMAC-SHA256 Credential={key}/20261203/{region}/{service}/"
                             "aws4_request, SignedHeaders=host;x-amz-date, Signature=00ff"}


def which(method: str, path: str, headers: dict[str, str], query: str = "") -> Route:
    return routing.route(method, path, headers, routing.credential(headers, query))


def test_the_credential_scope_is_read() -> None:
    scope = routing.credential(signed("s3", "123456789012"))
    assert scope == routing.Credential("123456789012", "20261203", "eu-west-1", "s3")
    assert scope.account == "123456789012"
    assert routing.credential(signed("sts", "AKIAIOSFODNN7EXAMPLE")).account == "000000000000"
    assert routing.credential({}) is None
    presigned = ("X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=test%2F20261203%2F"
                 "us-east-1%2Fs3%2Faws4_request&X-Amz-Signature=ab")
    assert routing.credential({}, presigned).service == "s3"  # type: ignore[union-attr]


@pytest.mark.parametrize(("method", "path", "headers", "expected"), [
    ("PUT", "/training-jobs", signed("s3"), Route.S3),  # a bucket, whatever its name
    ("POST", "/", {**signed("sagemaker"), "x-amz-target": "SageMaker.CreateTrainingJob"},
     Route.SAGEMAKER),
    ("POST", "/endpoints/my-ep/invocations", signed("sagemaker"), Route.RUNTIME),
    ("GET", "/endpoints/my-ep/invocations", signed("sagemaker"), Route.SAGEMAKER),
    ("POST", "/", {**signed("logs"), "x-amz-target": "Logs_20140328.GetLogEvents"},
     Route.LOGS),
    ("POST", "/", signed("sts"), Route.STS),
    ("POST", "/", signed("iam"), Route.IAM),
    ("POST", "/", signed("sqs"), Route.UNKNOWN),
    ("GET", "/_openknn/health", {}, Route.INTERNAL),
    ("GET", "/_openknn/health", signed("s3"), Route.INTERNAL),
    ("GET", "/", {"accept": "text/html,application/xhtml+xml"}, Route.INTERNAL),
    ("GET", "/bucket/key", {}, Route.S3),  # an anonymous read
    ("POST", "/", {"x-amz-target": "SageMaker.ListEndpoints"}, Route.SAGEMAKER),
])
def test_requests_are_routed(method: str, path: str, headers: dict[str, str],
                             expected: Route) -> None:
    assert which(method, path, headers) is expected


def test_the_runtime_path_names_the_endpoint() -> None:
    assert routing.invoked_endpoint("/endpoints/knn-2026%2D1/invocations") == "knn-2026-1"
    assert routing.invoked_endpoint("/endpoints/a/b/invocations") is None


def test_env_points_every_client_here(tmp_path: Path) -> None:
    config = env.write_config(tmp_path, env.default_bucket())
    values = env.variables("http://127.0.0.1:8000/", config)
    assert values["AWS_ENDPOINT_URL"] == "http://127.0.0.1:8000"
    assert "AWS_ENDPOINT_URL_S3" not in values
    assert values["SAGEMAKER_USER_CONFIG_OVERRIDE"] == str(config)
    assert "DefaultS3Bucket: \"sagemaker-us-east-1-000000000000\"" in config.read_text()
    assert "TelemetryOptOut: true" in config.read_text()
    elsewhere = env.variables("http://127.0.0.1:8000", config, "http://minio:9000")
    assert elsewhere["AWS_ENDPOINT_URL_S3"] == "http://minio:9000"
    lines = env.export_lines({"A": "x y"})
    assert lines == "export A='x y'\n"


def test_role_metadata_is_written_or_refused_with_the_fix(tmp_path: Path) -> None:
    path = env.write_role_metadata(tmp_path / "opt" / "resource-metadata.json")
    assert json.loads(path.read_text()) == {
        "ExecutionRoleArn": "arn:aws:iam::000000000000:role/SageMakerRole"}
    (tmp_path / "file").write_text("")
    with pytest.raises(ClientError, match=r"--write-role-metadata: cannot write '.*file/x/m"
                                          r"\.json' .*pass role='arn:aws:iam::000000000000:"
                                          r"role/SageMakerRole' to the SDK instead"):
        env.write_role_metadata(tmp_path / "file" / "x" / "m.json")


@pytest.mark.parametrize(("host", "loopback"), [("127.0.0.1", True), ("::1", True),
                                                ("localhost", True), ("0.0.0.0", False),
                                                ("192.168.1.5", False)])
def test_loopback_is_told_apart(host: str, loopback: bool) -> None:
    assert up._is_loopback(host) is loopback
