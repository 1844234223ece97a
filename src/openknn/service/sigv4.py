"""SigV4 verification, with botocore's own signers: a request's signature (its
``Authorization`` header or a presigned query) recomputed by ``SigV4Auth``, ``S3SigV4Auth`` or
their query variants over a botocore ``AWSRequest`` that holds exactly what the client signed,
and compared in constant time; also S3 URLs presigned with Signature Version 2
(``HmacV1QueryAuth``), which boto3 makes by default. Pure: the request's parts, a key lookup
and the time in; None or a ``Refusal`` saying why out (``service.auth`` answers it in each
API's words; decision 37)."""

from __future__ import annotations

import calendar
import email.utils
import functools
import hashlib
import hmac
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any
from urllib.parse import unquote, urlsplit

from openknn.errors import MissingExtraError
from openknn.service.s3 import xml

ALGORITHM = "AWS4-HMAC-SHA256"
SIGV4_TIMESTAMP = "%Y%m%dT%H%M%SZ"
MAX_SKEW_S = 15 * 60  # SigV4's window either side of the server's clock
MAX_EXPIRES_S = 7 * 24 * 3600  # a presigned URL's longest life
Secrets = Callable[[str], str | None]  # access key id -> its secret, or None if unknown


class Failure(str, Enum):
    """Why a request is refused; each API names it in its own words (``service.auth``)."""

    UNSIGNED = "unsigned"
    MALFORMED = "malformed"  # an Authorization header that is not a whole SigV4 one
    MALFORMED_QUERY = "malformed query"  # a presigned URL's X-Amz-* parameters
    NO_CONTENT_SHA256 = "no x-amz-content-sha256"  # S3 signs its payload's hash
    UNKNOWN_KEY = "unknown key"
    BAD_SIGNATURE = "bad signature"
    SKEWED = "skewed"
    EXPIRED = "expired"  # a presigned URL past X-Amz-Expires, or not valid yet


@dataclass(frozen=True)
class Refusal:
    failure: Failure
    detail: str = ""
    fields: tuple[tuple[str, str], ...] = ()  # S3's extra <Error> children, in order


@dataclass(frozen=True)
class Signature:
    """What a request says about its signature."""

    access_key: str
    date: str  # the credential scope's yyyymmdd
    region: str
    service: str
    signed_headers: tuple[str, ...]
    signature: str
    timestamp: str  # SigV4's yyyymmddThhmmssZ
    expires: int | None = None  # presigned only


def query_pairs(query: str) -> list[tuple[str, str]]:
    """The query's (name, value) pairs, percent-decoded, in order."""
    out = []
    for piece in query.split("&"):
        if piece:
            name, _, value = piece.partition("=")
            out.append((unquote(name), unquote(value)))
    return out


def _scope(credential: str) -> tuple[str, str, str, str] | None:
    parts = credential.split("/")
    if len(parts) != 5 or parts[4] != "aws4_request" or not all(parts):
        return None
    return parts[0], parts[1], parts[2], parts[3]


def _header_signature(authorization: str, headers: Mapping[str, str]) -> Signature | Refusal:
    algorithm, _, rest = authorization.strip().partition(" ")
    if algorithm != ALGORITHM:
        return Refusal(Failure.MALFORMED, "the authorization mechanism you have provided is "
                       f"not supported; openknn up --auth takes {ALGORITHM} (SigV4) only")
    values = {}
    for part in rest.split(","):
        name, _, value = part.strip().partition("=")
        values[name] = value
    missing = [n for n in ("Credential", "SignedHeaders", "Signature") if not values.get(n)]
    if missing:
        return Refusal(Failure.MALFORMED, f"Authorization header requires '{missing[0]}' "
                       "parameter")
    scope = _scope(values["Credential"])
    if scope is None:
        return Refusal(Failure.MALFORMED, f"the Credential {values['Credential']!r} is not "
                       "KEY/yyyymmdd/REGION/SERVICE/aws4_request")
    timestamp = _timestamp(headers.get("x-amz-date") or "", headers.get("date") or "")
    if timestamp is None:
        return Refusal(Failure.MALFORMED, "AWS authentication requires a valid Date or "
                       "x-amz-date header")
    return Signature(*scope, tuple(values["SignedHeaders"].lower().split(";")),
                     values["Signature"], timestamp)


def _query_signature(params: Mapping[str, str]) -> Signature | Refusal:
    needed = ("X-Amz-Algorithm", "X-Amz-Credential", "X-Amz-Date", "X-Amz-Expires",
              "X-Amz-SignedHeaders", "X-Amz-Signature")
    missing = [n for n in needed if not params.get(n)]
    if missing:
        return Refusal(Failure.MALFORMED_QUERY, "Query-string authentication version 4 "
                       f"requires the {', '.join(needed)} parameters ({missing[0]} is missing)")
    if params["X-Amz-Algorithm"] != ALGORITHM:
        return Refusal(Failure.MALFORMED_QUERY, f"X-Amz-Algorithm only supports '{ALGORITHM}'")
    scope = _scope(params["X-Amz-Credential"])
    timestamp = _timestamp(params["X-Amz-Date"], "")
    if scope is None or timestamp is None:
        return Refusal(Failure.MALFORMED_QUERY, "X-Amz-Credential must be KEY/yyyymmdd/"
                       "REGION/SERVICE/aws4_request and X-Amz-Date yyyymmddThhmmssZ")
    expires = params["X-Amz-Expires"]
    if not expires.isdigit() or int(expires) > MAX_EXPIRES_S:
        return Refusal(Failure.MALFORMED_QUERY, "X-Amz-Expires must be less than a week (in "
                       f"seconds) that is {MAX_EXPIRES_S}")
    return Signature(*scope, tuple(params["X-Amz-SignedHeaders"].lower().split(";")),
                     params["X-Amz-Signature"], timestamp, int(expires))


def _timestamp(amz_date: str, date: str) -> str | None:
    """SigV4's timestamp from X-Amz-Date, else from an RFC 1123 Date header."""
    if amz_date:
        try:
            time.strptime(amz_date, SIGV4_TIMESTAMP)
        except ValueError:
            return None
        return amz_date
    try:
        parsed = email.utils.parsedate_to_datetime(date) if date else None
    except (TypeError, ValueError):
        return None
    return time.strftime(SIGV4_TIMESTAMP, parsed.utctimetuple()) if parsed else None


def _epoch(timestamp: str) -> float:
    return float(calendar.timegm(time.strptime(timestamp, SIGV4_TIMESTAMP)))


def _iso(t: float) -> str:
    return time.strftime(SIGV4_TIMESTAMP, time.gmtime(t))


def _too_old_or_new(sig: Signature, now: float) -> Refusal | None:
    signed_at = _epoch(sig.timestamp)
    if sig.expires is not None:  # presigned: valid from its date until date + expires
        if now > signed_at + sig.expires:
            return Refusal(Failure.EXPIRED, "Request has expired", (
                ("X-Amz-Expires", str(sig.expires)),
                ("Expires", xml.iso(signed_at + sig.expires)), ("ServerTime", xml.iso(now))))
        if signed_at > now + MAX_SKEW_S:
            return Refusal(Failure.EXPIRED, "Request is not valid yet")
        return None
    if abs(now - signed_at) <= MAX_SKEW_S:
        return None
    window = MAX_SKEW_S // 60
    detail = (f"Signature expired: {sig.timestamp} is now earlier than "
              f"{_iso(now - MAX_SKEW_S)} ({_iso(now)} - {window} min.)" if signed_at < now else
              f"Signature not yet current: {sig.timestamp} is still later than "
              f"{_iso(now + MAX_SKEW_S)} ({_iso(now)} + {window} min.)")
    return Refusal(Failure.SKEWED, detail, (
        ("RequestTime", sig.timestamp), ("ServerTime", xml.iso(now)),
        ("MaxAllowedSkewMilliseconds", str(MAX_SKEW_S * 1000))))


def botocore() -> tuple[Any, Any, Any]:
    """botocore's ``auth`` module, ``AWSRequest`` and ``Credentials``; the [s3] extra's
    install hint where botocore is missing (``openknn up --auth`` asks at startup)."""
    try:
        from botocore import auth
        from botocore.awsrequest import AWSRequest
        from botocore.credentials import Credentials
    except ImportError:
        raise MissingExtraError("openknn up --auth", "s3", "botocore") from None
    return auth, AWSRequest, Credentials


@functools.cache
def _signer(s3: bool, presigned: bool) -> Any:
    """botocore's signer for the request's kind, made to sign exactly the headers the client
    signed (botocore's own leaves out a few, such as User-Agent, that other clients may
    sign)."""
    auth = botocore()[0]
    base: Any = {(False, False): auth.SigV4Auth, (True, False): auth.S3SigV4Auth,
                 (False, True): auth.SigV4QueryAuth,
                 (True, True): auth.S3SigV4QueryAuth}[s3, presigned]

    class Verifier(base):  # type: ignore[misc]
        def headers_to_sign(self, request: Any) -> Any:
            return request.headers

    return Verifier


def expected(method: str, url: str, params: list[tuple[str, str]], signed: list[tuple[str, str]],
             body: bytes | None, sig: Signature, secret: str) -> tuple[str, str, str]:
    """(signature, canonical request, string to sign) as botocore computes them for this
    request signed with ``secret``."""
    _, AWSRequest, Credentials = botocore()
    signer_class = _signer(sig.service == "s3", sig.expires is not None)
    signer = signer_class(Credentials(sig.access_key, secret), sig.service, sig.region)
    request = AWSRequest(method=method, url=url, data=body, params=params)
    for name, value in signed:
        request.headers[name] = value
    request.context["timestamp"] = sig.timestamp  # botocore signs at "now" otherwise
    canonical = signer.canonical_request(request)
    to_sign = signer.string_to_sign(request, canonical)
    return signer.signature(to_sign, request), canonical, to_sign


def _same(wanted: str, given: str) -> bool:
    """Constant-time equality (as bytes: a header may carry any character)."""
    return hmac.compare_digest(wanted.encode(), given.encode("utf-8", "replace"))


def verify(method: str, path: str, query: str, headers: Mapping[str, str], body: bytes | None,
           secret_of: Secrets, now: float) -> Refusal | None:
    """None if the request is signed with a known key's secret within SigV4's time window,
    else why not. ``path`` is the raw (still percent-encoded) path, ``headers`` have
    lower-case names, ``body`` is None for S3 (its ``X-Amz-Content-SHA256`` is the payload
    hash)."""
    params = query_pairs(query)
    by_name = dict(params)
    if "authorization" in headers:
        sig = _header_signature(headers["authorization"], headers)
    elif "X-Amz-Signature" in by_name or "X-Amz-Credential" in by_name:
        sig = _query_signature(by_name)
    elif body is None and "AWSAccessKeyId" in by_name and "Signature" in by_name:
        return _verify_v2_query(method, path, query, headers, by_name, secret_of, now)
    else:
        return Refusal(Failure.UNSIGNED)
    if isinstance(sig, Refusal):
        return sig
    secret = secret_of(sig.access_key)
    if secret is None:
        return Refusal(Failure.UNKNOWN_KEY, fields=(("AWSAccessKeyId", sig.access_key),))
    late = _too_old_or_new(sig, now)
    if late is not None:
        return late
    if sig.date != sig.timestamp[:8]:
        return Refusal(Failure.MALFORMED, "Date in Credential scope does not match YYYYMMDD "
                       f"from ISO-8601 version of date from HTTP: '{sig.date}' != "
                       f"'{sig.timestamp[:8]}', from '{sig.timestamp}'.")
    if (body is None and sig.expires is None
            and "x-amz-content-sha256" not in sig.signed_headers):
        return Refusal(Failure.NO_CONTENT_SHA256)
    if sig.expires is not None:
        params = [(k, v) for k, v in params if k != "X-Amz-Signature"]
    signed = [(n, headers.get(n, "")) for n in sig.signed_headers if n in headers]
    url = f"http://{headers.get('host', '')}{path}"
    wanted, canonical, to_sign = expected(method, url, params, signed, body, sig, secret)
    stated = headers.get("x-amz-content-sha256")
    body_ok = body is None or stated is None or stated == hashlib.sha256(body).hexdigest()
    if _same(wanted, sig.signature) and body_ok:
        return None
    return Refusal(Failure.BAD_SIGNATURE, fields=(
        ("AWSAccessKeyId", sig.access_key), ("StringToSign", to_sign),
        ("SignatureProvided", sig.signature), ("CanonicalRequest", canonical)))


def _verify_v2_query(method: str, path: str, query: str, headers: Mapping[str, str],
                     params: Mapping[str, str], secret_of: Secrets,
                     now: float) -> Refusal | None:
    """An S3 URL presigned with Signature Version 2 (``AWSAccessKeyId``, ``Expires``,
    ``Signature``): what boto3's ``generate_presigned_url`` makes for S3 unless its client is
    configured with ``signature_version="s3v4"``."""
    access_key, expires = params["AWSAccessKeyId"], params.get("Expires", "")
    secret = secret_of(access_key)
    if secret is None:
        return Refusal(Failure.UNKNOWN_KEY, fields=(("AWSAccessKeyId", access_key),))
    if not expires.isdigit():
        return Refusal(Failure.MALFORMED_QUERY, "Query-string authentication requires the "
                       "Signature, Expires and AWSAccessKeyId parameters")
    if now > int(expires):
        return Refusal(Failure.EXPIRED, "Request has expired", (
            ("Expires", xml.iso(int(expires))), ("ServerTime", xml.iso(now))))
    wanted, to_sign = expected_v2(method, f"http://{headers.get('host', '')}{path}?{query}",
                                  headers, access_key, secret, expires)
    if _same(wanted, params["Signature"]):
        return None
    return Refusal(Failure.BAD_SIGNATURE, fields=(
        ("AWSAccessKeyId", access_key), ("StringToSign", to_sign),
        ("SignatureProvided", params["Signature"])))


@functools.cache
def _v2_signer() -> Any:
    """botocore's SigV2 query signer, dated by the URL's own ``Expires``."""
    base: Any = botocore()[0].HmacV1QueryAuth

    class Verifier(base):  # type: ignore[misc]
        def _get_date(self) -> str:
            return str(self._expires)

    return Verifier


def expected_v2(method: str, url: str, headers: Mapping[str, str], access_key: str,
                secret: str, expires: str) -> tuple[str, str]:
    """(signature, string to sign) of a SigV2-presigned S3 request, as botocore signs it."""
    _, AWSRequest, Credentials = botocore()
    signer = _v2_signer()(Credentials(access_key, secret), expires)
    request = AWSRequest(method=method, url=url)
    for name, value in headers.items():
        if name in ("content-md5", "content-type") or name.startswith("x-amz-"):
            request.headers[name] = value
    to_sign = signer.canonical_string(method, urlsplit(url), request.headers)
    return signer.sign_string(to_sign), to_sign
