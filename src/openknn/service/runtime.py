"""SageMaker Runtime's InvokeEndpoint on the service: ``POST /endpoints/<name>/invocations``
with the raw body is forwarded to a ready worker of the endpoint (``service.endpoints``), and
its answer comes back as the runtime gives it: the body, its Content-Type and
``x-Amzn-Invoked-Production-Variant``. The runtime's error mapping (spec sagemaker-api.md §4):
a worker's 4xx or 5xx is ``ModelError`` 424 "Received client error (400) from primary with
message "<body>". See https://…" with OriginalStatusCode, OriginalMessage and LogStreamArn; an
endpoint that does not exist, or is not InService, is ``ValidationError`` 400 "Endpoint <name>
of account <account> not found."; a body over 6 MiB is refused before it is forwarded.

A plain ASGI app, not a Starlette one: this is the hot path of every prediction, and each
layer costs microseconds the issue's budget (0.3 ms per request) does not have."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import unquote

import orjson

from openknn.service import routing
from openknn.service.endpoints import Endpoints, Worker, log_group
from openknn.service.forward import UpstreamError

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Any]]
Send = Callable[[Any], Awaitable[None]]
INVOCATIONS = re.compile(r"^/endpoints/([^/]+)/invocations$")
MAX_BODY = 6 * 1024 * 1024  # InvokeEndpoint's payload limit, 6,291,456 bytes
WAIT_FOR_WORKER_S = 60.0  # a worker restarting, or an endpoint starting again
FORWARDED = (b"content-type", b"accept", b"x-amzn-sagemaker-custom-attributes")
WORKER_TIMEOUT_S = 80.0  # the SDK's own read timeout for InvokeEndpoint
VARIANT_HEADER = b"x-amzn-sagemaker-target-variant"


def _error(code: str, message: str, status: int, **extra: Any) -> tuple[int, list[Any], bytes]:
    body = orjson.dumps({"message": message, **extra})
    return status, [(b"content-type", b"application/json"),
                    (b"x-amzn-errortype", f"{code}:http://internal.amazon.com/coral/"
                     "com.amazon.sagemaker/".encode())], body


def model_error(endpoint: str, worker: Worker, status: int, body: bytes,
                region: str, account: str) -> tuple[int, list[Any], bytes]:
    """ModelError 424 for a worker's error answer, in the runtime's words."""
    kind = "client" if status < 500 else "server"
    text = body.decode("utf-8", errors="replace")
    message = (f'Received {kind} error ({status}) from primary with message "{text}". See '
               f"https://{region}.console.aws.amazon.com/cloudwatch/home?region={region}"
               f"#logEventViewer:group={log_group(endpoint)} in account {account} for more "
               "information.")
    stream = (f"arn:aws:logs:{region}:{account}:log-group:{log_group(endpoint)}"
              f":log-stream:{worker.stream}")
    return _error("ModelError", message, 424, ErrorCode=f"{kind.upper()}_ERROR_FROM_MODEL",
                  OriginalStatusCode=status, OriginalMessage=text, LogStreamArn=stream)


class Runtime:
    """The InvokeEndpoint app over ``endpoints``."""

    def __init__(self, endpoints: Endpoints) -> None:
        self.endpoints = endpoints

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        status, headers, body = await self._answer(scope, receive)
        # A length, not chunks: the server writes no chunk framing and the client reads one
        # sized body.
        headers.append((b"content-length", str(len(body)).encode()))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def _answer(self, scope: Scope, receive: Receive) -> tuple[int, list[Any], bytes]:
        headers = dict(scope["headers"])
        match = INVOCATIONS.match(scope["path"])
        if match is None or scope["method"] != "POST":
            return _error("UnknownOperationException",
                          f"{scope['method']} {scope['path']}: SageMaker Runtime here serves "
                          "POST /endpoints/<name>/invocations (InvokeEndpoint)", 404)
        name = unquote(match.group(1))
        body = await _read_body(receive)
        if body is None:
            return _error("ValidationError", f"The request body is over {MAX_BODY} bytes, "
                          "InvokeEndpoint's limit; send fewer rows per request", 413)
        live = self.endpoints.live(name)
        if live is None:
            deadline = time.monotonic() + WAIT_FOR_WORKER_S
            while live is None and self.endpoints.restoring(name) and (
                    time.monotonic() < deadline):
                await asyncio.sleep(0.02)  # openknn up started again: its workers are starting
                live = self.endpoints.live(name)
        if live is None:
            return _error("ValidationError", f"Endpoint {name} of account "
                          f"{_account(scope)} not found.", 400)
        wanted = headers.get(VARIANT_HEADER)
        variant = live.choose(wanted.decode("latin-1") if wanted else None)
        if variant is None:
            return _error("ValidationError", f"Endpoint {name} has no variant "
                          f"{wanted.decode('latin-1') if wanted else ''!r}; give one of "
                          f"{', '.join(live.variants)}", 400)
        forward = [(k, v) for k, v in headers.items() if k in FORWARDED]
        for _ in range(3):
            worker = variant.pick() or await live.worker(variant, WAIT_FOR_WORKER_S)
            if worker is None:
                return _error("ServiceUnavailable", f"Endpoint {name}: no worker of variant "
                              f"{variant.name} is ready; see its log, "
                              f"{log_group(name)}", 503)
            serving, upstream = live, worker.upstream
            assert upstream is not None
            serving.inflight += 1
            try:
                answer = await upstream.post("/invocations", body, forward, WORKER_TIMEOUT_S)
            except UpstreamError:
                # The worker died (or the update retired it) as this request reached it:
                # another one, or the new config's, takes the request.
                live = self.endpoints.live(name) or live
                variant = live.variants.get(variant.name, variant)
                continue
            finally:
                serving.inflight -= 1
            if answer.status >= 400:
                signed = _credential(scope)
                return model_error(name, worker, answer.status, answer.body,
                                   signed.region if signed else routing.DEFAULT_REGION,
                                   _account(scope))
            out = [(b"content-type", answer.headers.get(b"content-type", b"")),
                   (b"x-amzn-invoked-production-variant", variant.name.encode())]
            return 200, out, answer.body
        return _error("ServiceUnavailable", f"Endpoint {name}: its workers did not answer; "
                      f"see its log, {log_group(name)}", 503)

    async def close(self) -> None:
        """Close the kept-alive connections to every live worker."""
        for name in list(self.endpoints.names()):
            live = self.endpoints.live(name)
            for worker in live.workers() if live else []:
                if worker.upstream is not None:
                    worker.upstream.close()


def _credential(scope: Scope) -> routing.Credential | None:
    """The request's SigV4 scope: the router's, or read from the Authorization header the
    hot path passed on unread."""
    if "openknn.credential" in scope:
        return scope["openknn.credential"]  # type: ignore[no-any-return]
    return routing.credential({"authorization": scope.get("openknn.authorization", "")})


def _account(scope: Scope) -> str:
    signed = _credential(scope)
    return signed.account if signed else routing.DEFAULT_ACCOUNT


async def _read_body(receive: Receive) -> bytes | None:
    """The request body, or None past MAX_BODY (the rest is not kept)."""
    parts: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size <= MAX_BODY:
            parts.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(parts) if size <= MAX_BODY else None

