"""`openknn up --auth FILE`, driven by real clients (boto3, its transfer manager, s3fs, httpx):
requests signed with the file's key pairs are served on every API; a wrong secret, an unknown
key and an unsigned request are refused with each API's own AWS code and message; `openknn
env` points the clients at the file instead of printing dummy keys; a training job still
completes (its worker signs with the first key pair); a bad file stops the start."""

from __future__ import annotations

import datetime
import io
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import httpx
import pytest

from openknn.sdk import write_numpy_to_dense_tensor

from ..service_helpers import environment, service
from .test_service_training import SPLITS, X, Y, request, wait

boto3 = pytest.importorskip("boto3")
s3fs = pytest.importorskip("s3fs")
from boto3.s3.transfer import TransferConfig  # noqa: E402
from botocore.config import Config  # noqa: E402
from botocore.exceptions import ClientError as BotoClientError  # noqa: E402

FIRST = ("AKIAOPENKNNFIRST0001", "first/secret+key")
SECOND = ("123456789012", "second-secret")  # a 12-digit key names its account
KEYS = f"""# the service's key pairs
[first]
aws_access_key_id = {FIRST[0]}
aws_secret_access_key = {FIRST[1]}

[ci-role]
role_arn = arn:aws:iam::123456789012:role/ci
source_profile = first

[second]
aws_access_key_id = {SECOND[0]}
aws_secret_access_key = {SECOND[1]}
"""
BUCKET = "sagemaker-us-east-1-000000000000"
BAD_SIGNATURE = ("The request signature we calculated does not match the signature you "
                 "provided. Check your AWS Secret Access Key and signing method. Consult the "
                 "service documentation for details.")
MIB = 1 << 20


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("auth")
    (root / "keys.ini").write_text(KEYS)
    with service(root / "home", root / "up.log", ["--auth", str(root / "keys.ini")]) as (_, url):
        yield {"url": url, "root": root, "log": root / "up.log"}


@pytest.fixture
def client_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in [n for n in os.environ if n.startswith("AWS_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    yield


def session(up: dict[str, Any], key: tuple[str, str]) -> boto3.Session:
    return boto3.Session(aws_access_key_id=key[0], aws_secret_access_key=key[1],
                         region_name="us-east-1")


def client(up: dict[str, Any], name: str, key: tuple[str, str] = FIRST, **config: Any) -> Any:
    return session(up, key).client(name, endpoint_url=up["url"],
                                   config=Config(retries={"max_attempts": 1}, **config))


def refused(call: Any, code: str, message: str | re.Pattern[str], status: int) -> None:
    with pytest.raises(BotoClientError) as caught:
        call()
    error, meta = caught.value.response["Error"], caught.value.response["ResponseMetadata"]
    assert (error["Code"], meta["HTTPStatusCode"]) == (code, status), caught.value.response
    if isinstance(message, str):
        assert error["Message"] == message
    else:
        assert message.match(error["Message"]), error["Message"]


def test_env_points_the_clients_at_the_auth_file(up: dict[str, Any], client_env: None,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    printed = subprocess.run([sys.executable, "-m", "openknn", "env", "--endpoint-url",
                              up["url"]], capture_output=True, text=True, timeout=60,
                             check=True).stdout
    assert printed.splitlines()[0] == (
        "unset AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY AWS_SESSION_TOKEN")
    values = environment(up["url"], up["root"] / "home")
    assert "AWS_ACCESS_KEY_ID" not in values and "AWS_SECRET_ACCESS_KEY" not in values
    assert values["AWS_SHARED_CREDENTIALS_FILE"] == str(up["root"] / "keys.ini")
    assert values["AWS_PROFILE"] == "first"
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    identity = boto3.Session().client("sts").get_caller_identity()  # the env alone
    assert identity["Account"] == "000000000000"
    assert "only requests signed with the 2 key pairs of" in up["log"].read_text()


def test_the_key_pairs_are_served_on_every_api(up: dict[str, Any], client_env: None) -> None:
    assert client(up, "sagemaker").list_training_jobs()["TrainingJobSummaries"] == []
    refused(lambda: client(up, "sagemaker-runtime").invoke_endpoint(
        EndpointName="nope", Body=b"1,2", ContentType="text/csv"),
        "ValidationError", "Endpoint nope of account 000000000000 not found.", 400)
    refused(lambda: client(up, "logs").describe_log_streams(logGroupName="/aws/none"),
            "ResourceNotFoundException", "The specified log group does not exist.", 400)
    assert client(up, "sts").get_caller_identity()["Account"] == "000000000000"
    assert client(up, "sts", SECOND).get_caller_identity()["Account"] == "123456789012"
    refused(lambda: client(up, "iam").get_role(RoleName="SageMakerRole"), "AccessDenied",
            re.compile(r"User: .* is not authorized to perform: iam:GetRole"), 403)


def test_s3_uploads_downloads_multipart_and_s3fs(up: dict[str, Any], client_env: None) -> None:
    s3 = client(up, "s3")
    s3.create_bucket(Bucket="signed")
    s3.put_object(Bucket="signed", Key="a b/c+d~e.txt", Body=b"signed bytes")
    assert s3.get_object(Bucket="signed", Key="a b/c+d~e.txt")["Body"].read() == b"signed bytes"
    big = os.urandom(11 * MIB)
    s3.upload_fileobj(io.BytesIO(big), "signed", "big", Config=TransferConfig(
        multipart_threshold=5 * MIB, multipart_chunksize=5 * MIB))
    assert s3.head_object(Bucket="signed", Key="big")["ETag"].endswith('-3"')  # 3 parts
    listed = s3.list_objects_v2(Bucket="signed", Prefix="a b/", Delimiter="/")
    assert [o["Key"] for o in listed["Contents"]] == ["a b/c+d~e.txt"]
    fs = s3fs.S3FileSystem(key=FIRST[0], secret=FIRST[1], skip_instance_cache=True,
                           client_kwargs={"endpoint_url": up["url"], "region_name": "us-east-1"})
    with fs.open("signed/big", "rb", block_size=4 * MIB) as f:
        assert f.read() == big
    v4 = client(up, "s3", signature_version="s3v4")
    for signer in (s3, v4):  # boto3 presigns with SigV2 unless told s3v4
        url = signer.generate_presigned_url("get_object", ExpiresIn=60,
                                            Params={"Bucket": "signed", "Key": "big"})
        answer = httpx.get(url, trust_env=False, headers={"Range": "bytes=0-9"})
        assert (answer.status_code, answer.content) == (206, big[:10])
        tampered = httpx.get(url.replace("/signed/big?", "/signed/a%20b/c%2Bd~e.txt?"),
                             trust_env=False)
        assert tampered.status_code == 403
        assert "<Code>SignatureDoesNotMatch</Code>" in tampered.text
    assert "X-Amz-Signature=" in url


def test_a_wrong_secret_is_refused_in_each_apis_words(up: dict[str, Any],
                                                      client_env: None) -> None:
    wrong = (FIRST[0], "not-the-secret")
    canonical = re.compile(re.escape(BAD_SIGNATURE) + r"\n\nThe Canonical String for this "
                           r"request should have been\n'POST\n/\n", re.S)
    refused(lambda: client(up, "sagemaker", wrong).list_training_jobs(),
            "InvalidSignatureException", canonical, 400)
    refused(lambda: client(up, "sagemaker-runtime", wrong).invoke_endpoint(
        EndpointName="nope", Body=b"1,2", ContentType="text/csv"),
        "InvalidSignatureException", re.compile(re.escape(BAD_SIGNATURE)), 400)
    refused(lambda: client(up, "logs", wrong).describe_log_streams(logGroupName="/x"),
            "InvalidSignatureException", re.compile(re.escape(BAD_SIGNATURE)), 400)
    refused(lambda: client(up, "sts", wrong).get_caller_identity(), "SignatureDoesNotMatch",
            re.compile(re.escape(BAD_SIGNATURE)), 403)
    refused(lambda: client(up, "s3", wrong).list_buckets(), "SignatureDoesNotMatch",
            "The request signature we calculated does not match the signature you provided. "
            "Check your key and signing method.", 403)
    refused(lambda: client(up, "s3", wrong).head_object(Bucket="signed", Key="big"),
            "403", "Forbidden", 403)  # HEAD: no body, so botocore names the status


def test_an_unknown_key_is_refused_in_each_apis_words(up: dict[str, Any],
                                                      client_env: None) -> None:
    stranger = ("AKIASTRANGER00000000", FIRST[1])
    invalid = "The security token included in the request is invalid."
    refused(lambda: client(up, "sagemaker", stranger).list_training_jobs(),
            "UnrecognizedClientException", invalid, 400)
    refused(lambda: client(up, "sagemaker-runtime", stranger).invoke_endpoint(
        EndpointName="nope", Body=b"1,2", ContentType="text/csv"),
        "UnrecognizedClientException", invalid, 400)
    refused(lambda: client(up, "logs", stranger).describe_log_streams(logGroupName="/x"),
            "UnrecognizedClientException", invalid, 400)
    refused(lambda: client(up, "sts", stranger).get_caller_identity(), "InvalidClientTokenId",
            invalid.rstrip("."), 403)
    refused(lambda: client(up, "iam", stranger).get_role(RoleName="r"), "InvalidClientTokenId",
            invalid.rstrip("."), 403)
    with pytest.raises(BotoClientError) as caught:
        client(up, "s3", stranger).list_objects_v2(Bucket="signed")
    assert caught.value.response["Error"] == {
        "Code": "InvalidAccessKeyId", "AWSAccessKeyId": stranger[0],
        "Message": "The AWS Access Key Id you provided does not exist in our records.",
        "Resource": "/signed"}


def test_a_skewed_clock_is_refused(up: dict[str, Any], client_env: None) -> None:
    late = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None) - \
        datetime.timedelta(minutes=20)
    with mock.patch("botocore.auth.get_current_datetime", return_value=late):
        refused(lambda: client(up, "sagemaker").list_training_jobs(),
                "InvalidSignatureException",
                re.compile(rf"Signature expired: {late:%Y%m%dT%H%M%SZ} is now earlier than "
                           r"\d{8}T\d{6}Z \(\d{8}T\d{6}Z - 15 min\.\)$"), 400)
        refused(lambda: client(up, "s3").list_buckets(), "RequestTimeTooSkewed",
                "The difference between the request time and the current time is too large.",
                403)


def test_unsigned_requests_are_refused_but_health(up: dict[str, Any]) -> None:
    url = up["url"]
    api = httpx.post(url, trust_env=False, content=b"{}", headers={
        "X-Amz-Target": "SageMaker.ListTrainingJobs",
        "Content-Type": "application/x-amz-json-1.1"})
    assert api.status_code == 403
    assert api.json() == {"__type": "MissingAuthenticationTokenException",
                          "message": "Missing Authentication Token"}
    obj = httpx.get(f"{url}/signed/big", trust_env=False)
    assert obj.status_code == 403
    assert re.search(r"<Code>AccessDenied</Code><Message>Access Denied</Message>", obj.text)
    page = httpx.get(url, trust_env=False, headers={"Accept": "text/html"})
    assert page.status_code == 403 and "--auth" in page.text
    assert httpx.get(f"{url}/_openknn/health", trust_env=False).json()["status"] == "ok"


def test_a_training_job_completes_with_the_first_key_pair(up: dict[str, Any],
                                                          client_env: None) -> None:
    s3 = client(up, "s3")
    s3.create_bucket(Bucket=BUCKET)
    for name, rows in SPLITS.items():
        buf = io.BytesIO()
        write_numpy_to_dense_tensor(buf, X[rows], Y[rows])
        buf.seek(0)
        s3.upload_fileobj(buf, BUCKET, f"knn/{name}/recordio-pb-data")
    sm = client(up, "sagemaker", SECOND)  # any pair may call; the worker signs with the first
    sm.create_training_job(**request("knn-auth-1"))
    job = wait(sm, "knn-auth-1")
    assert job["TrainingJobStatus"] == "Completed", job.get("FailureReason")
    assert job["TrainingJobArn"].split(":")[4] == "123456789012"
    model = job["ModelArtifacts"]["S3ModelArtifacts"]
    key = model.removeprefix(f"s3://{BUCKET}/")
    assert s3.head_object(Bucket=BUCKET, Key=key)["ContentLength"] > 0


@pytest.mark.parametrize(("text", "why"), [
    (None, r"cannot read it \(No such file or directory\)"),
    ("", "holds no key pairs"),
])
def test_a_bad_auth_file_stops_the_start(tmp_path: Path, text: str | None, why: str) -> None:
    keys = tmp_path / "keys.ini"
    if text is not None:
        keys.write_text(text)
    ran = subprocess.run([sys.executable, "-m", "openknn", "up", "--port", "0", "--home",
                          str(tmp_path / "home"), "--auth", str(keys)], capture_output=True,
                         text=True, timeout=60, check=False)
    assert ran.returncode == 1
    assert re.fullmatch(rf"ClientError: --auth {re.escape(repr(str(keys)))}: {why}; give an "
                        r"AWS shared-credentials file: \[name\] sections, each with "
                        r"aws_access_key_id and aws_secret_access_key",
                        ran.stderr.strip().splitlines()[-1]), ran.stderr
    assert not (tmp_path / "home").exists()  # refused before anything was made
