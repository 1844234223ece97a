"""The AWS CLI (v1, from PyPI, in its own virtual environment: it pins botocore exactly, which
the project's own environment cannot share with s3fs's aiobotocore) against both servers:
``aws s3 mb / cp / ls / sync / rm / rb`` and ``aws s3api`` as a user types them on a local
endpoint. Skipped where no ``aws`` is found: CI makes ``.venv-awscli`` (see .ci/run);
``OPENKNN_AWS_CLI`` names another."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

from .conftest import Server

REPO = Path(__file__).resolve().parents[2]
VENV_AWS = REPO / ".venv-awscli" / "bin" / "aws"
AWS = (os.environ.get("OPENKNN_AWS_CLI") or (str(VENV_AWS) if VENV_AWS.exists() else None)
       or shutil.which("aws"))
pytestmark = pytest.mark.skipif(AWS is None, reason="no AWS CLI (.venv-awscli/bin/aws)")

MIB = 1 << 20


def aws(server: Server, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(cwd),
           "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": server.endpoint,
           "AWS_MAX_ATTEMPTS": "1", "AWS_EC2_METADATA_DISABLED": "true"}
    assert AWS is not None
    return subprocess.run([AWS, *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=120, check=False)


def listed_keys(ls_output: str) -> list[str]:
    """The keys of ``aws s3 ls --recursive`` lines (date, time, size, key)."""
    return [line.split(maxsplit=3)[3] for line in ls_output.splitlines() if line.strip()]


def test_the_aws_cli_round_trip(server: Server, tmp_path: Path) -> None:
    bucket = f"cli-{uuid.uuid4().hex[:12]}"
    (tmp_path / "tree" / "sub").mkdir(parents=True)
    (tmp_path / "tree" / "a.csv").write_bytes(b"1,2,3\n" * 1000)
    (tmp_path / "tree" / "sub" / "b.csv").write_bytes(b"4,5,6\n")
    big = tmp_path / "big.bin"  # over the CLI's 8 MiB multipart threshold: three parts
    big.write_bytes(os.urandom(20 * MIB + 123))

    def ok(*args: str) -> str:
        ran = aws(server, *args, cwd=tmp_path)
        assert ran.returncode == 0, (args, ran.stderr)
        return ran.stdout

    assert f"make_bucket: {bucket}" in ok("s3", "mb", f"s3://{bucket}")
    assert bucket in ok("s3", "ls").split()
    ok("s3", "cp", str(big), f"s3://{bucket}/big.bin")
    ok("s3", "sync", str(tmp_path / "tree"), f"s3://{bucket}/tree/")
    assert listed_keys(ok("s3", "ls", "--recursive", f"s3://{bucket}/")) == [
        "big.bin", "tree/a.csv", "tree/sub/b.csv"]
    assert ok("s3", "ls", f"s3://{bucket}/tree/").split() == [
        "PRE", "sub/", *ok("s3", "ls", f"s3://{bucket}/tree/a.csv").split()]
    head = json.loads(ok("s3api", "head-object", "--bucket", bucket, "--key", "big.bin"))
    assert head["ContentLength"] == 20 * MIB + 123 and head["ETag"].endswith('-3"')  # 3 parts
    ok("s3", "cp", f"s3://{bucket}/big.bin", str(tmp_path / "back.bin"))
    assert (tmp_path / "back.bin").read_bytes() == big.read_bytes()
    ok("s3", "sync", f"s3://{bucket}/tree/", str(tmp_path / "again"))
    assert (tmp_path / "again" / "sub" / "b.csv").read_bytes() == b"4,5,6\n"
    assert "upload" not in ok("s3", "sync", str(tmp_path / "tree"), f"s3://{bucket}/tree/")

    missing = aws(server, "s3", "cp", f"s3://{bucket}/nope", str(tmp_path / "x"), cwd=tmp_path)
    assert missing.returncode != 0 and "404" in missing.stderr
    not_empty = aws(server, "s3", "rb", f"s3://{bucket}", cwd=tmp_path)
    assert not_empty.returncode != 0 and "BucketNotEmpty" in not_empty.stderr
    ok("s3", "rm", "--recursive", f"s3://{bucket}/")
    assert ok("s3", "ls", "--recursive", f"s3://{bucket}/") == ""
    assert f"remove_bucket: {bucket}" in ok("s3", "rb", f"s3://{bucket}")
