"""AWS's JSON 1.1 protocol, shared by the SageMaker API and CloudWatch Logs: ``POST /`` with
``X-Amz-Target: <Prefix>.<Operation>`` and a JSON body in; a JSON document out, or an error
as ``{"__type": code, "message": text}`` (the shape botocore's parser reads, spec §4).
Handlers are plain functions of the request's document and its caller."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import anyio.to_thread
import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from openknn.service import routing

log = logging.getLogger(__name__)
JSON_11 = "application/x-amz-json-1.1"


class ApiError(Exception):
    """An error the caller gets as AWS's code and message."""

    def __init__(self, code: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.code, self.message, self.status = code, message, status


def validation(message: str) -> ApiError:
    return ApiError("ValidationException", message)


@dataclass(frozen=True)
class Caller:
    """Who called, as the SigV4 credential scope says: ARNs carry this region and account."""

    region: str = routing.DEFAULT_REGION
    account: str = routing.DEFAULT_ACCOUNT


Handler = Callable[[dict[str, Any], Caller], dict[str, Any]]


def error_response(code: str, message: str, status: int = 400) -> Response:
    return Response(orjson.dumps({"__type": code, "message": message}), status_code=status,
                    media_type=JSON_11)


def caller_of(request: Request) -> Caller:
    signed = routing.credential({k.lower(): v for k, v in request.headers.items()},
                                request.url.query)
    if signed is None:
        return Caller()
    return Caller(signed.region, signed.account)


def json_app(prefix: str, handlers: Mapping[str, Handler], what: str) -> Starlette:
    """An app answering ``<prefix>.<Op>`` targets with ``handlers[Op]``, run in a worker
    thread (they touch SQLite and processes). An unknown operation, a body that is not a
    JSON object, or a handler's ApiError is an AWS error; anything else is a 500
    ``InternalFailure`` naming the exception, logged with its traceback."""

    async def answer(request: Request) -> Response:
        target = request.headers.get("x-amz-target", "")
        op = target[len(prefix) + 1:] if target.startswith(prefix + ".") else ""
        handler = handlers.get(op)
        if handler is None:
            return error_response("UnknownOperationException",
                                  f"{target or 'no X-Amz-Target'}: not an operation openknn "
                                  f"serves for {what}; it serves {', '.join(sorted(handlers))}")
        raw = await request.body()
        try:
            body = orjson.loads(raw or b"{}")
        except orjson.JSONDecodeError as exc:
            return error_response("SerializationException", f"{op}: the body is not JSON "
                                  f"({exc})")
        if not isinstance(body, dict):
            return error_response("SerializationException",
                                  f"{op}: the body must be a JSON object")
        caller = caller_of(request)
        try:
            out = await anyio.to_thread.run_sync(handler, body, caller)
        except ApiError as err:
            return error_response(err.code, err.message, err.status)
        except Exception as exc:  # openknn's fault: say what, keep the server up
            log.exception("%s %s failed", what, op)
            return error_response("InternalFailure", f"{op}: {type(exc).__name__}: {exc}",
                                  500)
        return Response(orjson.dumps(out), media_type=JSON_11)

    return Starlette(routes=[Route("/{path:path}", answer, methods=["POST"])])
