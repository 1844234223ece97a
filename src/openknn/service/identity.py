"""The STS and IAM answers the SDKs need (spec sagemaker-api.md §5, §10): STS's
GetCallerIdentity names an assumed role in the caller's account, so that the SDK's
``get_execution_role()`` maps it to ``role/<name>``; every other STS action and every IAM
action is AccessDenied, which SDK v3's role check reads as "could not verify, proceeding".
Both are AWS's query protocol: a form body in, XML out."""

from __future__ import annotations

import uuid
from urllib.parse import parse_qs
from xml.sax.saxutils import escape

from starlette.requests import Request
from starlette.responses import Response

from openknn.service import routing

STS_NS = "https://sts.amazonaws.com/doc/2011-06-15/"
ROLE = "SageMakerRole"  # the role every caller is taken to have assumed
XML = "text/xml"


def role_arn(account: str, role: str = ROLE) -> str:
    return f"arn:aws:iam::{account}:role/{role}"


def caller_identity(account: str, role: str = ROLE) -> bytes:
    """GetCallerIdentity's response document for a caller in ``account``."""
    return (f'<GetCallerIdentityResponse xmlns="{STS_NS}"><GetCallerIdentityResult>'
            f"<Arn>arn:aws:sts::{account}:assumed-role/{escape(role)}/openknn</Arn>"
            f"<UserId>AROA{account}:openknn</UserId><Account>{account}</Account>"
            f"</GetCallerIdentityResult><ResponseMetadata><RequestId>{uuid.uuid4()}"
            "</RequestId></ResponseMetadata></GetCallerIdentityResponse>").encode()


def access_denied(service: str, action: str, account: str) -> Response:
    """AWS's query-protocol error, 403 AccessDenied, naming what was refused."""
    message = (f"User: arn:aws:sts::{account}:assumed-role/{ROLE}/openknn is not authorized "
               f"to perform: {service}:{action or '(no Action)'}: openknn answers only "
               "sts:GetCallerIdentity")
    return error_response("AccessDenied", message, 403)


def error_response(code: str, message: str, status: int) -> Response:
    """AWS's query-protocol error document (a Sender's fault)."""
    body = (f"<ErrorResponse><Error><Type>Sender</Type><Code>{escape(code)}</Code>"
            f"<Message>{escape(message)}</Message></Error><RequestId>{uuid.uuid4()}"
            "</RequestId></ErrorResponse>")
    return Response(body, status_code=status, media_type=XML)


async def _action(request: Request) -> str:
    form = parse_qs((await request.body()).decode("utf-8", "replace"))
    query = dict(request.query_params)
    return (form.get("Action") or [query.get("Action", "")])[0]


def _account(request: Request) -> str:
    signed = routing.credential({k.lower(): v for k, v in request.headers.items()},
                                request.url.query)
    return signed.account if signed is not None else routing.DEFAULT_ACCOUNT


async def sts(request: Request) -> Response:
    action, account = await _action(request), _account(request)
    if action == "GetCallerIdentity":
        return Response(caller_identity(account), media_type=XML)
    return access_denied("sts", action, account)


async def iam(request: Request) -> Response:
    return access_denied("iam", await _action(request), _account(request))
