"""``openknn env``: the environment that points the SageMaker SDK, boto3, s3fs and the AWS CLI
at ``openknn up`` (spec sagemaker-api.md §8). Only environment variables and the SDK's config
file reach every client the SDKs make, so that is what this writes: endpoint URLs, dummy
credentials, a region, the instance-metadata probe off, and the SDK's config with its default
bucket and telemetry off, so that no request leaves the machine. A service started with
``--auth FILE`` takes no dummy credentials: then the clients read the file itself, as a
shared-credentials file (``AWS_SHARED_CREDENTIALS_FILE``, ``AWS_PROFILE``), so that no secret
is printed."""

from __future__ import annotations

import json
import os
import shlex
import tempfile
from pathlib import Path

from openknn.errors import ClientError
from openknn.service import identity, routing

DEFAULT_URL = "http://127.0.0.1:8000"
CONFIG_FILE = "sagemaker-config.yaml"
AUTH_FILE = "auth.json"  # which --auth file the service runs with (no secrets)
CREDENTIAL_VARIABLES = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")
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
              region: str = routing.DEFAULT_REGION,
              credentials: tuple[Path, str] | None = None) -> dict[str, str]:
    """The variables, in the order ``openknn env`` prints them. ``credentials``: the --auth
    file and the profile in it to use, instead of the dummy key pair."""
    out = {"AWS_ENDPOINT_URL": url.rstrip("/")}
    if s3_endpoint:
        out["AWS_ENDPOINT_URL_S3"] = s3_endpoint.rstrip("/")
    if credentials is None:
        out.update({"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test"})
    else:
        out.update({"AWS_SHARED_CREDENTIALS_FILE": str(credentials[0]),
                    "AWS_PROFILE": credentials[1]})
    out.update({"AWS_DEFAULT_REGION": region, "AWS_REGION": region,
                "AWS_EC2_METADATA_DISABLED": "true",
                "SAGEMAKER_USER_CONFIG_OVERRIDE": str(config_file),
                "SAGEMAKER_SUPPRESS_V2_WARNING": "1"})
    return out


def export_lines(values: dict[str, str]) -> str:
    """The ``export`` lines; where the credentials come from a file, an ``unset`` line first,
    since key variables left in the shell would win over the profile."""
    unset = ("unset " + " ".join(CREDENTIAL_VARIABLES) + "\n"
             if "AWS_SHARED_CREDENTIALS_FILE" in values else "")
    return unset + "".join(f"export {name}={shlex.quote(value)}\n"
                           for name, value in values.items())


def write_auth(home: Path, credentials: tuple[Path, str] | None) -> None:
    """Note under ``home`` which --auth file (and first profile) the service runs with, for
    ``openknn env``; removed when it runs without."""
    path = home / AUTH_FILE
    if credentials is None:
        path.unlink(missing_ok=True)
        return
    _replace_whole(path, json.dumps({"credentials_file": str(credentials[0]),
                                     "profile": credentials[1]}))


def read_auth(home: Path) -> tuple[Path, str] | None:
    """The --auth file and profile ``write_auth`` noted under ``home``, if any."""
    try:
        noted = json.loads((home / AUTH_FILE).read_text())
        return Path(noted["credentials_file"]), str(noted["profile"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def write_config(home: Path, bucket: str) -> Path:
    """The SDK's config file under ``home``, replaced whole (a temporary file, renamed)."""
    home.mkdir(parents=True, exist_ok=True)
    path = home / CONFIG_FILE
    _replace_whole(path, sdk_config(bucket))
    return path


def _replace_whole(path: Path, text: str) -> None:
    """``path`` holds ``text``: written to a temporary file of its own beside it, then
    renamed over it, so readers see the old file or the new one, and two writers at once
    (two notebooks, two tests) each leave a whole file without renaming the other's away."""
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(handle, "w") as f:
            f.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_role_metadata(path: Path = ROLE_METADATA,
                        account: str = routing.DEFAULT_ACCOUNT) -> Path:
    """The execution-role metadata file that makes the SDK's ``get_execution_role()`` answer
    offline (as on a SageMaker notebook instance); it needs write access to ``path``."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        _replace_whole(path, json.dumps({"ExecutionRoleArn": identity.role_arn(account)}))
    except OSError as exc:
        raise ClientError(f"--write-role-metadata: cannot write {str(path)!r} ({exc.strerror}); "
                          "run it as a user who may (sudo), or pass role='arn:aws:iam::"
                          f"{account}:role/{identity.ROLE}' to the SDK instead") from None
    return path
