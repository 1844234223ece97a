"""``openknn env``: the environment that points the SageMaker SDK, boto3, s3fs and the AWS CLI
at ``openknn up`` (spec sagemaker-api.md §8). Only environment variables and the SDK's config
file reach every client the SDKs make, so that is what this writes: endpoint URLs, dummy
credentials, a region, the instance-metadata probe off, and the SDK's config with its default
bucket and telemetry off, so that no request leaves the machine."""

from __future__ import annotations

import json
import os
import shlex
from pathlib import Path

from openknn.errors import ClientError
from openknn.service import identity, routing

DEFAULT_URL = "http://127.0.0.1:8000"
CONFIG_FILE = "sagemaker-config.yaml"
ROLE_METADATA = Path("/opt/ml/metadata/resource-metadata.json")


def default_bucket(region: str = routing.DEFAULT_REGION,
                   account: str = routing.DEFAULT_ACCOUNT) -> str:
    """The SDK's own name for its default bucket, ``sagemaker-<region>-<account>``."""
    return f"sagemaker-{region}-{account}"


def sdk_config(bucket: str) -> str:
    """The SageMaker SDK's config file (YAML; written as text, as it is this small)."""
    return ("SchemaVersion: '1.0'\n"
            "SageMaker:\n"
            "  PythonSDK:\n"
            "    Modules:\n"
            "      TelemetryOptOut: true\n"
            "      Session:\n"
            f"        DefaultS3Bucket: {json.dumps(bucket)}\n")


def variables(url: str, config_file: Path, s3_endpoint: str | None = None,
              region: str = routing.DEFAULT_REGION) -> dict[str, str]:
    """The variables, in the order ``openknn env`` prints them."""
    out = {"AWS_ENDPOINT_URL": url.rstrip("/")}
    if s3_endpoint:
        out["AWS_ENDPOINT_URL_S3"] = s3_endpoint.rstrip("/")
    out.update({"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
                "AWS_DEFAULT_REGION": region, "AWS_REGION": region,
                "AWS_EC2_METADATA_DISABLED": "true",
                "SAGEMAKER_USER_CONFIG_OVERRIDE": str(config_file),
                "SAGEMAKER_SUPPRESS_V2_WARNING": "1"})
    return out


def export_lines(values: dict[str, str]) -> str:
    return "".join(f"export {name}={shlex.quote(value)}\n" for name, value in values.items())


def write_config(home: Path, bucket: str) -> Path:
    """The SDK's config file under ``home``, replaced whole (a temporary file, renamed)."""
    home.mkdir(parents=True, exist_ok=True)
    path = home / CONFIG_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(sdk_config(bucket))
    os.replace(tmp, path)
    return path


def write_role_metadata(path: Path = ROLE_METADATA,
                        account: str = routing.DEFAULT_ACCOUNT) -> Path:
    """The execution-role metadata file that makes the SDK's ``get_execution_role()`` answer
    offline (as on a SageMaker notebook instance); it needs write access to ``path``."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"ExecutionRoleArn": identity.role_arn(account)}))
        os.replace(tmp, path)
    except OSError as exc:
        raise ClientError(f"--write-role-metadata: cannot write {str(path)!r} ({exc.strerror}); "
                          "run it as a user who may (sudo), or pass role='arn:aws:iam::"
                          f"{account}:role/{identity.ROLE}' to the SDK instead") from None
    return path
