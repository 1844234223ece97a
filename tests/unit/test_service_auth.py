"""`openknn up --auth`'s pure parts: the key file (auth), and SigV4 verification (sigv4)
of requests that botocore's own signers signed (as boto3, s3fs and the AWS CLI sign them) —
every payload-hash form S3 clients send, presigned URLs of both signature versions, the clock
window — and each API's code for each refusal; the warning a bind gives; `openknn env` with
an --auth file; the key pair the service's workers use."""

from __future__ import annotations

import asyncio
import calendar
import datetime
import logging
import re
import socket
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import urlsplit

import pytest

from openknn.errors import ClientError
from openknn.service import auth, env, sigv4, up
from openknn.service.app import Service, ServiceConfig
from openknn.service.routing import Route
from openknn.service.sigv4 import Failure, Refusal

botocore_auth = pytest.importorskip("botocore.auth")
from botocore.awsrequest import AWSRequest  # noqa: E402
from botocore.credentials import Credentials  # noqa: E402

KEY, SECRET = "AKIAOPENKNN000000001", "s3cr3t/with+signs"
KEYS = auth.Keys(Path("keys.ini"), (auth.KeyPair("main", KEY, SECRET),
                                     auth.KeyPair("other", "123456789012", "other")))
NOW = float(calendar.timegm((2026, 12, 3, 12, 0, 0)))
HOST = "127.0.0.1:8123"
SHAPE = ("give an AWS shared-credentials file: [name] sections, each with aws_access_key_id "
         "and aws_secret_access_key")


def sign(signer: type, service: str, method: str, path: str, body: bytes | None = None,
         headers: dict[str, str] | None = None, secret: str = SECRET, when: float = NOW,
         key: str = KEY, **signer_args: Any) -> dict[str, Any]:
    """A request as it arrives: signed by ``signer`` (a botocore class) at ``when``."""
    request = AWSRequest(method=method, url=f"http://{HOST}{path}", data=body,
                         headers=headers or {})
    stamp = datetime.datetime.fromtimestamp(when, datetime.timezone.utc).replace(tzinfo=None)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(botocore_auth, "get_current_datetime", lambda: stamp)
        patch.setattr(time, "time", lambda: when)  # SigV2's Expires
        made = signer(Credentials(key, secret), service, "us-east-1", **signer_args)
        made.add_auth(request)
    prepared = request.prepare()
    parts = urlsplit(prepared.url)
    arrived = {k.lower(): v for k, v in prepared.headers.items()}
    if "expires" in signer_args:  # a presigned URL: a browser sends none of them
        arrived = {}
    arrived["host"] = HOST
    return {"method": method, "path": parts.path, "query": parts.query, "headers": arrived,
            "body": None if service == "s3" else (body or b"")}


def v2_query(credentials: Any, service: str, region: str, expires: int) -> Any:
    """botocore's SigV2 presigner (boto3's default for S3 URLs) in ``sign``'s terms."""
    return botocore_auth.HmacV1QueryAuth(credentials, expires)


def check(request: dict[str, Any], now: float = NOW, keys: auth.Keys = KEYS) -> Refusal | None:
    return sigv4.verify(request["method"], request["path"], request["query"],
                        request["headers"], request["body"], keys.secret, now)


# --- the key file -------------------------------------------------------------------------------

def test_the_key_file_is_read_in_order_skipping_other_profiles(tmp_path: Path) -> None:
    path = tmp_path / "credentials"
    path.write_text("[default]\naws_access_key_id = AKIA1\naws_secret_access_key = one\n"
                    "region = eu-west-1\n\n[assume]\nrole_arn = arn:aws:iam::1:role/r\n"
                    "source_profile = default\n\n[DEFAULT]\naws_access_key_id = AKIA2\n"
                    "aws_secret_access_key = two%\n")
    keys = auth.load_keys(path)
    assert [(p.profile, p.access_key, p.secret_key) for p in keys.pairs] == [
        ("default", "AKIA1", "one"), ("DEFAULT", "AKIA2", "two%")]
    assert keys.first.access_key == "AKIA1" and keys.secret("AKIA2") == "two%"
    assert keys.secret("AKIA3") is None
    assert "one" not in repr(keys)  # secrets stay out of logs


@pytest.mark.parametrize(("text", "why"), [
    (None, r"cannot read it \(No such file or directory\); "),
    ("", "holds no key pairs; "),
    ("[only]\nregion = us-east-1\n", "holds no key pairs; "),
    ("aws_access_key_id = AKIA1\n", r"not an INI file \(File contains no section headers\.\); "),
    ("[a]\naws_access_key_id = AKIA1\n", r"section \[a\] needs both aws_access_key_id and "
                                         "aws_secret_access_key; "),
])
def test_a_bad_key_file_is_one_line_naming_it(tmp_path: Path, text: str | None,
                                              why: str) -> None:
    path = tmp_path / "keys.ini"
    if text is not None:
        path.write_text(text)
    with pytest.raises(ClientError, match=rf"^--auth {re.escape(repr(str(path)))}: {why}"
                                          rf"{re.escape(SHAPE)}$"):
        auth.load_keys(path)


def test_one_key_with_two_secrets_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "keys.ini"
    path.write_text("[a]\naws_access_key_id = K\naws_secret_access_key = 1\n"
                    "[b]\naws_access_key_id = K\naws_secret_access_key = 2\n")
    with pytest.raises(ClientError, match="access key 'K' appears twice with different "
                                          "secrets; keep one"):
        auth.load_keys(path)


# --- what verifies --------------------------------------------------------------------------------

@pytest.mark.parametrize("request_", [
    sign(botocore_auth.SigV4Auth, "sagemaker", "POST", "/", b'{"MaxResults": 1}',
         {"X-Amz-Target": "SageMaker.ListTrainingJobs",
          "Content-Type": "application/x-amz-json-1.1"}),
    sign(botocore_auth.SigV4Auth, "sagemaker", "POST", "/endpoints/my-ep/invocations",
         b"1,2,3", {"Content-Type": "text/csv", "Accept": "application/json"}),
    sign(botocore_auth.SigV4Auth, "sts", "POST", "/", b"Action=GetCallerIdentity&"
         b"Version=2011-06-15", {"Content-Type": "application/x-www-form-urlencoded"}),
    sign(botocore_auth.S3SigV4Auth, "s3", "GET", "/bucket?list-type=2&prefix=a%20b%2F&"
         "encoding-type=url"),
    sign(botocore_auth.S3SigV4Auth, "s3", "PUT", "/bucket/a%20b/c%2Bd~e%C3%A9", b"payload"),
    sign(botocore_auth.S3SigV4Auth, "s3", "POST", "/bucket/key?uploads"),
    sign(botocore_auth.S3SigV4QueryAuth, "s3", "GET", "/bucket/key?response-content-type="
         "text%2Fplain", expires=3600),
    sign(v2_query, "s3", "GET", "/bucket/k%2By?response-content-type=text%2Fplain",
         expires=3600),
], ids=["sagemaker", "runtime", "sts", "s3-list", "s3-put", "s3-multipart", "s3-presigned-v4",
        "s3-presigned-v2"])
def test_requests_botocore_signed_verify(request_: dict[str, Any]) -> None:
    assert check(request_) is None
    assert check(request_, NOW + 14 * 60) is None  # within the window


@pytest.mark.parametrize("payload", ["UNSIGNED-PAYLOAD", "STREAMING-AWS4-HMAC-SHA256-PAYLOAD",
                                     "STREAMING-UNSIGNED-PAYLOAD-TRAILER",
                                     "0" * 64])
def test_s3_takes_the_payload_hash_the_client_signed(payload: str) -> None:
    class Client(botocore_auth.S3SigV4Auth):  # type: ignore[misc]
        def payload(self, request: Any) -> str:  # as the AWS CLI, s3fs or a trailer upload
            return payload

    assert check(sign(Client, "s3", "PUT", "/bucket/key", b"streamed")) is None


def test_a_client_may_sign_headers_botocore_would_not() -> None:
    class Client(botocore_auth.SigV4Auth):  # type: ignore[misc]
        def headers_to_sign(self, request: Any) -> Any:
            headers = super().headers_to_sign(request)
            headers["user-agent"] = request.headers["User-Agent"]
            return headers

    signed = sign(Client, "logs", "POST", "/", b"{}", {"User-Agent": "other-sdk/1.0",
                                                       "X-Amz-Target": "Logs_20140328.X"})
    assert "user-agent" in signed["headers"]["authorization"]
    assert check(signed) is None


# --- what does not ------------------------------------------------------------------------------

def test_a_wrong_secret_a_changed_request_or_body_is_a_bad_signature() -> None:
    wrong = check(sign(botocore_auth.SigV4Auth, "sagemaker", "POST", "/", b"{}",
                       secret="guess"))
    assert wrong is not None and wrong.failure is Failure.BAD_SIGNATURE
    fields = dict(wrong.fields)
    assert fields["AWSAccessKeyId"] == KEY
    assert fields["CanonicalRequest"].startswith("POST\n/\n\n")
    assert fields["StringToSign"].startswith("AWS4-HMAC-SHA256\n20261203T120000Z\n"
                                             "20261203/us-east-1/sagemaker/aws4_request\n")
    good = sign(botocore_auth.SigV4Auth, "sagemaker", "POST", "/", b"{}")
    changed = check({**good, "body": b'{"x": 1}'})
    assert changed is not None and changed.failure is Failure.BAD_SIGNATURE
    moved = check({**good, "path": "/endpoints/x/invocations"})
    assert moved is not None and moved.failure is Failure.BAD_SIGNATURE
    s3 = sign(botocore_auth.S3SigV4Auth, "s3", "GET", "/bucket/key")
    other = check({**s3, "path": "/bucket/other"})
    assert other is not None and other.failure is Failure.BAD_SIGNATURE


def test_a_signature_of_any_characters_is_just_wrong() -> None:
    signed = sign(botocore_auth.S3SigV4Auth, "s3", "GET", "/bucket/key")
    headers = dict(signed["headers"])
    headers["authorization"] = re.sub(r"Signature=\w+", "Signature=\u00e9\u00ff",
                                      headers["authorization"])
    refused = check({**signed, "headers": headers})
    assert refused is not None and refused.failure is Failure.BAD_SIGNATURE


def test_a_stated_body_hash_must_be_the_bodys() -> None:
    signed = sign(botocore_auth.SigV4Auth, "sagemaker", "POST", "/", b"{}",
                  {"X-Amz-Content-SHA256": "0" * 64})
    refused = check(signed)
    assert refused is not None and refused.failure is Failure.BAD_SIGNATURE


def test_unknown_keys_unsigned_and_malformed_requests() -> None:
    unknown = check(sign(botocore_auth.SigV4Auth, "logs", "POST", "/", b"{}", key="AKIANOBODY"))
    assert unknown == Refusal(Failure.UNKNOWN_KEY, fields=(("AWSAccessKeyId", "AKIANOBODY"),))
    bare = {"method": "GET", "path": "/bucket/key", "query": "", "headers": {"host": HOST},
            "body": None}
    assert check(bare) == Refusal(Failure.UNSIGNED)
    v2 = check({**bare, "headers": {"host": HOST, "authorization": f"AWS {KEY}:c2ln"}})
    assert v2 is not None and v2.failure is Failure.MALFORMED
    assert "openknn up --auth takes AWS4-HMAC-SHA256 (SigV4) only" in v2.detail
    partial = check({**bare, "headers": {"host": HOST, "authorization":
                                          f"AWS4-HMAC-SHA256 Credential={KEY}/20261203/"
                                          "us-east-1/s3/aws4_request"}})
    assert partial == Refusal(Failure.MALFORMED, "Authorization header requires "
                                                 "'SignedHeaders' parameter")
    s3 = sign(botocore_auth.S3SigV4Auth, "s3", "GET", "/bucket/key")
    without = {k: v for k, v in s3["headers"].items() if k != "x-amz-content-sha256"}
    without["authorization"] = without["authorization"].replace(";x-amz-content-sha256", "")
    assert check({**s3, "headers": without}) == Refusal(Failure.NO_CONTENT_SHA256)
    query = check({**bare, "query": f"X-Amz-Credential={KEY}%2F20261203%2Fus-east-1%2Fs3%2F"
                                    "aws4_request&X-Amz-Signature=00"})
    assert query is not None and query.failure is Failure.MALFORMED_QUERY


def test_the_clock_window_is_15_minutes_either_way() -> None:
    signed = sign(botocore_auth.SigV4Auth, "sagemaker", "POST", "/", b"{}")
    late = check(signed, NOW + 16 * 60)
    assert late is not None and late.failure is Failure.SKEWED
    assert late.detail == ("Signature expired: 20261203T120000Z is now earlier than "
                           "20261203T120100Z (20261203T121600Z - 15 min.)")
    early = check(signed, NOW - 16 * 60)
    assert early is not None and early.detail == (
        "Signature not yet current: 20261203T120000Z is still later than 20261203T115900Z "
        "(20261203T114400Z + 15 min.)")
    assert dict(late.fields)["MaxAllowedSkewMilliseconds"] == "900000"


def test_presigned_urls_expire() -> None:
    v4 = sign(botocore_auth.S3SigV4QueryAuth, "s3", "GET", "/bucket/key", expires=60)
    assert check(v4, NOW + 59) is None
    gone = check(v4, NOW + 61)
    assert gone is not None and (gone.failure, gone.detail) == (Failure.EXPIRED,
                                                                "Request has expired")
    assert dict(gone.fields)["Expires"] == "2026-12-03T12:01:00.000Z"
    assert check(v4, NOW - 20 * 60) == Refusal(Failure.EXPIRED, "Request is not valid yet")
    v2 = sign(v2_query, "s3", "GET", "/bucket/key", expires=60)
    assert check(v2, NOW + 59) is None
    assert check(v2, NOW + 61) is not None
    tampered = check({**v2, "path": "/bucket/other"})
    assert tampered is not None and tampered.failure is Failure.BAD_SIGNATURE


# --- each API's words ---------------------------------------------------------------------------

@pytest.mark.parametrize(("which", "failure", "code", "status"), [
    (Route.S3, Failure.UNSIGNED, "AccessDenied", 403),
    (Route.S3, Failure.UNKNOWN_KEY, "InvalidAccessKeyId", 403),
    (Route.S3, Failure.BAD_SIGNATURE, "SignatureDoesNotMatch", 403),
    (Route.S3, Failure.SKEWED, "RequestTimeTooSkewed", 403),
    (Route.S3, Failure.MALFORMED, "AuthorizationHeaderMalformed", 400),
    (Route.SAGEMAKER, Failure.UNSIGNED, "MissingAuthenticationTokenException", 403),
    (Route.RUNTIME, Failure.UNKNOWN_KEY, "UnrecognizedClientException", 400),
    (Route.LOGS, Failure.BAD_SIGNATURE, "InvalidSignatureException", 400),
    (Route.SAGEMAKER, Failure.SKEWED, "InvalidSignatureException", 400),
    (Route.STS, Failure.UNSIGNED, "MissingAuthenticationToken", 403),
    (Route.IAM, Failure.UNKNOWN_KEY, "InvalidClientTokenId", 403),
    (Route.STS, Failure.BAD_SIGNATURE, "SignatureDoesNotMatch", 403),
])
def test_each_api_names_a_refusal_as_aws_does(which: Route, failure: Failure, code: str,
                                              status: int) -> None:
    fields = (("CanonicalRequest", "GET\n/"), ("StringToSign", "AWS4"))
    got = auth.code_of(which, Refusal(failure, "why", fields))
    assert got[:2] == (code, status)
    response = auth.refusal_response(which, Refusal(failure, "why", fields), "/bucket")
    assert response.status_code == status and code.encode() in response.body
    if which in (Route.SAGEMAKER, Route.RUNTIME, Route.LOGS):
        assert response.headers["x-amzn-errortype"] == code  # the Runtime's parser reads it


def test_the_json_apis_say_what_should_have_been_signed() -> None:
    refusal = Refusal(Failure.BAD_SIGNATURE, fields=(("CanonicalRequest", "POST\n/"),
                                                     ("StringToSign", "AWS4-HMAC-SHA256")))
    message = auth.code_of(Route.SAGEMAKER, refusal)[2]
    assert message.endswith("\n\nThe Canonical String for this request should have been\n"
                            "'POST\n/'\n\nThe String-to-Sign should have been\n"
                            "'AWS4-HMAC-SHA256'\n")
    assert auth.code_of(Route.S3, refusal)[2] == (
        "The request signature we calculated does not match the signature you provided. "
        "Check your key and signing method.")


def test_the_guard_replays_the_body_and_opens_only_health() -> None:
    signed = sign(botocore_auth.SigV4Auth, "sagemaker", "POST", "/", b'{"a": 1}')
    messages = [{"type": "http.request", "body": b'{"a"', "more_body": True},
                {"type": "http.request", "body": b": 1}", "more_body": False},
                {"type": "http.disconnect"}]

    async def receive() -> Any:
        return messages.pop(0)

    async def run() -> tuple[Any, list[Any]]:
        scope = {"type": "http", "method": "POST", "path": "/", "raw_path": b"/",
                 "query_string": b""}
        refused, replay = await auth.guard(KEYS, Route.SAGEMAKER, scope, receive,
                                           signed["headers"], NOW)
        return refused, [await replay(), await replay()]

    refused, seen = asyncio.run(run())
    assert refused is None
    assert seen == [{"type": "http.request", "body": b'{"a": 1}', "more_body": False},
                    {"type": "http.disconnect"}]

    async def internal(path: str) -> Any:
        return (await auth.guard(KEYS, Route.INTERNAL, {"path": path}, receive, {}))[0]

    assert asyncio.run(internal("/_openknn/health")) is None
    assert asyncio.run(internal("/")).status_code == 403


# --- the bind, openknn env, the workers ---------------------------------------------------------

def test_only_a_non_loopback_bind_without_auth_warns() -> None:
    assert up.exposure_warning("127.0.0.1", None) is None
    assert up.exposure_warning("::1", None) is None
    assert up.exposure_warning("0.0.0.0", KEYS) is None
    assert up.exposure_warning("0.0.0.0", None) == (
        "openknn up listens on 0.0.0.0, which is not loopback, and accepts any credentials: "
        "anyone who can reach this port can use it (give --auth FILE to require your key "
        "pairs)")


def test_run_logs_the_warning(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                              caplog: pytest.LogCaptureFixture) -> None:
    def loopback(host: str, port: int) -> socket.socket:  # tests bind loopback only
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        return sock

    def serve(server: Any, sockets: Any = None) -> None:
        server.config.app.close()  # what its lifespan would do

    monkeypatch.setattr(up, "_bind", loopback)
    monkeypatch.setattr(up.uvicorn.Server, "run", serve)
    with caplog.at_level(logging.WARNING, logger=up.__name__):
        up.run("0.0.0.0", 0, tmp_path / "home")
    assert [r.getMessage() for r in caplog.records] == [up.exposure_warning("0.0.0.0", None)]
    assert not (tmp_path / "home" / env.AUTH_FILE).exists()


def test_env_reads_the_auth_file_instead_of_printing_keys(tmp_path: Path) -> None:
    env.write_auth(tmp_path, (Path("/keys/credentials"), "main"))
    assert env.read_auth(tmp_path) == (Path("/keys/credentials"), "main")
    lines = env.export_lines(env.variables("http://h:1/", tmp_path / "c.yaml",
                                           credentials=env.read_auth(tmp_path)))
    assert lines.splitlines()[:4] == [
        "unset AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY AWS_SESSION_TOKEN",
        "export AWS_ENDPOINT_URL=http://h:1", "export AWS_SHARED_CREDENTIALS_FILE="
        "/keys/credentials", "export AWS_PROFILE=main"]
    assert "AWS_ACCESS_KEY_ID=" not in lines
    env.write_auth(tmp_path, None)
    assert env.read_auth(tmp_path) is None
    assert "export AWS_ACCESS_KEY_ID=test" in env.export_lines(
        env.variables("http://h:1", tmp_path / "c.yaml"))


def test_the_workers_sign_with_the_first_key_pair(tmp_path: Path) -> None:
    def worker_env(config: ServiceConfig) -> dict[str, str]:
        return Service.worker_env(SimpleNamespace(config=config))  # type: ignore[arg-type]

    with_keys = worker_env(ServiceConfig(tmp_path, keys=KEYS))
    assert (with_keys["AWS_ACCESS_KEY_ID"], with_keys["AWS_SECRET_ACCESS_KEY"]) == (KEY, SECRET)
    assert worker_env(ServiceConfig(tmp_path))["AWS_ACCESS_KEY_ID"] == "test"


def test_env_takes_the_auth_file_outright(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from openknn.cli import main

    keys = tmp_path / "keys.ini"
    keys.write_text("[ops]\naws_access_key_id = AKIA1\naws_secret_access_key = hush-9\n")
    ran = CliRunner().invoke(main, ["env", "--endpoint-url", "http://127.0.0.1:9",
                                    "--home", str(tmp_path / "home"), "--auth", str(keys)])
    assert ran.exit_code == 0, ran.output
    assert f"export AWS_SHARED_CREDENTIALS_FILE={keys}\nexport AWS_PROFILE=ops\n" in ran.output
    assert "AWS_ACCESS_KEY_ID=" not in ran.output and "hush-9" not in ran.output
