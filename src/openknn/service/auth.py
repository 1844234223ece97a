"""``openknn up --auth FILE``: who may call the service. The key pairs come from an AWS
shared-credentials file; ``guard``, which ``Service.__call__`` calls, checks each request's
signature with ``sigv4.verify`` and refuses a request that fails with the code and document
shape of the API it is for (spec sagemaker-api.md §4, §9; decision 37). It reads the small
bodies of the JSON and query APIs (their signatures cover the body) and replays them to the
app, and leaves S3 bodies streaming, trusting ``X-Amz-Content-SHA256`` as the payload hash (the
store checks a real hash against the bytes as they arrive)."""

from __future__ import annotations

import configparser
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import orjson
from starlette.responses import Response

from openknn.errors import ClientError
from openknn.service import identity
from openknn.service.routing import INTERNAL_PREFIX, Route
from openknn.service.s3 import xml
from openknn.service.s3.codes import S3Error
from openknn.service.sigv4 import Failure, Refusal, verify

Receive = Callable[[], Awaitable[Any]]
MAX_SIGNED_BODY = 8 << 20  # JSON and query bodies, read whole to check their hash
OPEN_PATHS = frozenset({INTERNAL_PREFIX + "health"})
SHAPE = ("an AWS shared-credentials file: [name] sections, each with aws_access_key_id and "
         "aws_secret_access_key")


@dataclass(frozen=True)
class KeyPair:
    profile: str  # the file's section
    access_key: str
    secret_key: str = field(repr=False)


@dataclass(frozen=True)
class Keys:
    """The key pairs the service accepts, in the file's order (the first is its workers')."""

    source: Path
    pairs: tuple[KeyPair, ...]

    @property
    def first(self) -> KeyPair:
        return self.pairs[0]

    def secret(self, access_key: str) -> str | None:
        return next((p.secret_key for p in self.pairs if p.access_key == access_key), None)


def load_keys(path: Path) -> Keys:
    """The key pairs of ``path``; one ClientError line naming the file and the shape expected
    if it cannot be read or holds none."""
    where = f"--auth {str(path)!r}"
    parser = configparser.ConfigParser(interpolation=None, default_section="\0")
    try:
        parser.read_string(path.read_text(encoding="utf-8"), source=str(path))
    except OSError as exc:
        raise ClientError(f"{where}: cannot read it ({exc.strerror}); give {SHAPE}") from None
    except (UnicodeDecodeError, configparser.Error) as exc:
        reason = str(exc).splitlines()[0]
        raise ClientError(f"{where}: not an INI file ({reason}); give {SHAPE}") from None
    pairs: list[KeyPair] = []
    for name in parser.sections():
        key = parser[name].get("aws_access_key_id", "").strip()
        secret = parser[name].get("aws_secret_access_key", "").strip()
        if not key and not secret:
            continue  # a profile of another kind (role_arn, sso_...): not a key pair
        if not key or not secret:
            raise ClientError(f"{where}: section [{name}] needs both aws_access_key_id and "
                              f"aws_secret_access_key; give {SHAPE}")
        if any(p.access_key == key and p.secret_key != secret for p in pairs):
            raise ClientError(f"{where}: access key {key!r} appears twice with different "
                              "secrets; keep one")
        pairs.append(KeyPair(name, key, secret))
    if not pairs:
        raise ClientError(f"{where}: holds no key pairs; give {SHAPE}")
    return Keys(path, tuple(pairs))


# --- answers, per API ------------------------------------------------------------------------

BAD_SIGNATURE = ("The request signature we calculated does not match the signature you "
                 "provided. Check your AWS Secret Access Key and signing method. Consult the "
                 "service documentation for details.")
# failure -> (code, HTTP status, message; "{detail}" is the refusal's own words)
_S3 = {
    Failure.UNSIGNED: ("AccessDenied", 403, "Access Denied"),
    Failure.MALFORMED: ("AuthorizationHeaderMalformed", 400,
                        "The authorization header is malformed; {detail}"),
    Failure.MALFORMED_QUERY: ("AuthorizationQueryParametersError", 400, "{detail}"),
    Failure.NO_CONTENT_SHA256: ("InvalidRequest", 400, "Missing required header for this "
                                "request: x-amz-content-sha256"),
    Failure.UNKNOWN_KEY: ("InvalidAccessKeyId", 403, "The AWS Access Key Id you provided does "
                          "not exist in our records."),
    Failure.BAD_SIGNATURE: ("SignatureDoesNotMatch", 403, "The request signature we calculated "
                            "does not match the signature you provided. Check your key and "
                            "signing method."),
    Failure.SKEWED: ("RequestTimeTooSkewed", 403, "The difference between the request time "
                     "and the current time is too large."),
    Failure.EXPIRED: ("AccessDenied", 403, "{detail}"),
}
_JSON = {  # SageMaker, its Runtime, CloudWatch Logs: AWS's JSON services
    Failure.UNSIGNED: ("MissingAuthenticationTokenException", 403,
                       "Missing Authentication Token"),
    Failure.MALFORMED: ("IncompleteSignatureException", 400, "{detail}"),
    Failure.MALFORMED_QUERY: ("IncompleteSignatureException", 400, "{detail}"),
    Failure.NO_CONTENT_SHA256: ("IncompleteSignatureException", 400, "{detail}"),
    Failure.UNKNOWN_KEY: ("UnrecognizedClientException", 400,
                          "The security token included in the request is invalid."),
    Failure.BAD_SIGNATURE: ("InvalidSignatureException", 400, BAD_SIGNATURE),
    Failure.SKEWED: ("InvalidSignatureException", 400, "{detail}"),
    Failure.EXPIRED: ("InvalidSignatureException", 400, "{detail}"),
}
_QUERY = {  # STS and IAM: AWS's query protocol
    Failure.UNSIGNED: ("MissingAuthenticationToken", 403,
                       "Request is missing Authentication Token"),
    Failure.MALFORMED: ("IncompleteSignature", 400, "{detail}"),
    Failure.MALFORMED_QUERY: ("IncompleteSignature", 400, "{detail}"),
    Failure.NO_CONTENT_SHA256: ("IncompleteSignature", 400, "{detail}"),
    Failure.UNKNOWN_KEY: ("InvalidClientTokenId", 403,
                          "The security token included in the request is invalid"),
    Failure.BAD_SIGNATURE: ("SignatureDoesNotMatch", 403, BAD_SIGNATURE),
    Failure.SKEWED: ("SignatureDoesNotMatch", 403, "{detail}"),
    Failure.EXPIRED: ("SignatureDoesNotMatch", 403, "{detail}"),
}
JSON_CONTENT = "application/x-amz-json-1.1"


def code_of(which: Route, refusal: Refusal) -> tuple[str, int, str]:
    """(code, HTTP status, message) the API ``which`` answers ``refusal`` with."""
    table = _S3 if which is Route.S3 else _QUERY if which in (Route.STS, Route.IAM) else _JSON
    code, status, text = table[refusal.failure]
    message = text.format(detail=refusal.detail or refusal.failure.value)
    fields = dict(refusal.fields)
    if "CanonicalRequest" in fields and table is not _S3:
        message += (f"\n\nThe Canonical String for this request should have been\n"
                    f"'{fields['CanonicalRequest']}'\n\nThe String-to-Sign should have been\n"
                    f"'{fields['StringToSign']}'\n")
    return code, status, message


def refusal_response(which: Route, refusal: Refusal, resource: str) -> Response:
    """The refusal in the document shape of ``which``'s API."""
    code, status, message = code_of(which, refusal)
    if which is Route.S3:
        err = S3Error(code, message, **dict(refusal.fields))
        return Response(xml.error(err, resource), status_code=status,
                        media_type="application/xml")
    if which in (Route.STS, Route.IAM):
        return identity.error_response(code, message, status)
    return Response(orjson.dumps({"__type": code, "message": message}), status_code=status,
                    media_type=JSON_CONTENT, headers={"x-amzn-ErrorType": code})


def console_refusal() -> Response:
    return Response("openknn up runs with --auth: only AWS-signed requests are served here "
                    f"(and {', '.join(sorted(OPEN_PATHS))})\n", status_code=403,
                    media_type="text/plain")


# --- the ASGI side -----------------------------------------------------------------------------

async def read_body(receive: Receive, limit: int) -> bytes | None:
    """The whole request body, or None past ``limit`` bytes."""
    parts, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        parts.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(parts)


def replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that gives ``body`` once, then whatever the connection says next."""
    given = False

    async def again() -> Any:
        nonlocal given
        if given:
            return await receive()
        given = True
        return {"type": "http.request", "body": body, "more_body": False}

    return again


Gate = Callable[[Mapping[str, Any], Mapping[str, str]], Response | None]


async def guard(keys: Keys, which: Route, scope: Mapping[str, Any], receive: Receive,
                headers: Mapping[str, str], now: float | None = None,
                console: Gate | None = None) -> tuple[Response | None, Receive]:
    """None and the ``receive`` to hand the app on (the body replayed where it was read), or
    the response that refuses the request. ``console`` is the web console's sign-in check
    for the internal pages (``Console.gate``: a session cookie, not a signature)."""
    if which is Route.INTERNAL:
        # The health check is open; the console's pages need a signed-in browser, which the
        # console itself checks (its sign-in page, static files and session cookies), and
        # without a console only the health check is served.
        # Websockets (none yet) reach the internal app without this guard: check them there.
        if scope["path"] in OPEN_PATHS:
            return None, receive
        return (console_refusal() if console is None else console(scope, headers)), receive
    body = None
    if which is not Route.S3:
        body = await read_body(receive, MAX_SIGNED_BODY)
        if body is None:
            return _too_large(which), receive
        receive = replay(body, receive)
    path = scope.get("raw_path") or quote(scope["path"]).encode()
    refusal = verify(scope["method"], path.decode("latin-1"),
                     scope.get("query_string", b"").decode("latin-1"), headers, body,
                     keys.secret, time.time() if now is None else now)
    if refusal is None:
        return None, receive
    return refusal_response(which, refusal, scope["path"]), receive


def _too_large(which: Route) -> Response:
    message = (f"The request body is over {MAX_SIGNED_BODY} bytes, more than openknn up "
               "--auth reads to check a signature")
    if which in (Route.STS, Route.IAM):
        return identity.error_response("ValidationError", message, 413)
    return Response(orjson.dumps({"__type": "ValidationException", "message": message}),
                    status_code=413, media_type=JSON_CONTENT,
                    headers={"x-amzn-ErrorType": "ValidationException"})
