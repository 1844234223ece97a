"""Which of the service's APIs a request is for, on its one port (spec sagemaker-api.md §1).

Every AWS client signs with SigV4, and the credential scope names the service it signs for
(``Credential=AKID/20261203/us-east-1/s3/aws4_request``): that decides first, because a path
alone cannot (``/training-jobs`` may be a bucket). SageMaker's API and its Runtime share the
scope ``sagemaker`` and differ by path and ``X-Amz-Target``. Unsigned requests are a browser's
(the console, under ``/_openknn/``, a path no bucket can have since bucket names hold no
``_``), or anonymous S3 reads. Pure functions: headers in, a route out."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from urllib.parse import parse_qs, unquote

INTERNAL_PREFIX = "/_openknn/"
DEFAULT_REGION = "us-east-1"
DEFAULT_ACCOUNT = "000000000000"

_CREDENTIAL = re.compile(r"Credential=([^/,\s]+)/(\d{8})/([^/,\s]+)/([^/,\s]+)/aws4_request")
_INVOCATIONS = re.compile(r"^/endpoints/([^/]+)/invocations$")


class Route(str, Enum):
    S3 = "s3"
    SAGEMAKER = "sagemaker"
    RUNTIME = "runtime"
    LOGS = "logs"
    STS = "sts"
    IAM = "iam"
    INTERNAL = "internal"  # health, and the console of a later issue
    UNKNOWN = "unknown"  # signed for a service openknn does not serve


_BY_SCOPE = {"s3": Route.S3, "logs": Route.LOGS, "sts": Route.STS, "iam": Route.IAM}


@dataclass(frozen=True)
class Credential:
    """The SigV4 credential scope of a request: who signed, when, where, for what."""

    access_key: str
    date: str
    region: str
    service: str

    @property
    def account(self) -> str:
        return account_for(self.access_key)


def credential(headers: Mapping[str, str], query_string: str = "") -> Credential | None:
    """The credential scope in the ``Authorization`` header, or in a presigned URL's
    ``X-Amz-Credential``; None for an unsigned request. ``headers`` have lower-case names."""
    match = _CREDENTIAL.search(headers.get("authorization", ""))
    if match is None and "x-amz-credential" in query_string.lower():
        values = {k.lower(): v for k, v in parse_qs(query_string).items()}
        presigned = values.get("x-amz-credential", [""])[0]
        match = _CREDENTIAL.search(f"Credential={unquote(presigned)}")
    if match is None:
        return None
    return Credential(*match.groups())


def account_for(access_key: str) -> str:
    """LocalStack's rule: a 12-digit access key id is the account; any other key (``test``,
    ``AKIA...``, ``ASIA...``) is the default account."""
    return access_key if re.fullmatch(r"\d{12}", access_key) else DEFAULT_ACCOUNT


def route(method: str, path: str, headers: Mapping[str, str],
          signed: Credential | None) -> Route:
    """The API a request is for. ``headers`` have lower-case names."""
    if path.startswith(INTERNAL_PREFIX) or path.rstrip("/") == INTERNAL_PREFIX.rstrip("/"):
        return Route.INTERNAL
    target = headers.get("x-amz-target", "")
    service = signed.service if signed is not None else None
    if service is None:  # unsigned: a browser at "/", or an anonymous S3 read
        if target.startswith("SageMaker."):
            return Route.SAGEMAKER
        if target.startswith("Logs_"):
            return Route.LOGS
        if path == "/" and method == "GET" and "text/html" in headers.get("accept", ""):
            return Route.INTERNAL
        return Route.S3
    if service == "sagemaker":
        if method == "POST" and _INVOCATIONS.match(path):
            return Route.RUNTIME
        return Route.SAGEMAKER
    return _BY_SCOPE.get(service, Route.UNKNOWN)


def invoked_endpoint(path: str) -> str | None:
    """The endpoint name of a Runtime ``/endpoints/{EndpointName}/invocations`` path."""
    match = _INVOCATIONS.match(path)
    return unquote(match.group(1)) if match else None
