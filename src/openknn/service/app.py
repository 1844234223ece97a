"""The ASGI app of ``openknn up``: one port, every API, routed per request by
``routing.route`` (the SigV4 credential scope first). Each API is its own small app; this one
only reads the request's head and hands the whole request on, so an S3 upload streams
straight into the store."""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route as HttpRoute  # routing.Route names an API

from openknn import __version__
from openknn.service import identity, logs, routing
from openknn.service.api import json_app
from openknn.service.auth import Keys, guard
from openknn.service.console import Console, Parts
from openknn.service.endpoints import Endpoints
from openknn.service.hosting import Hosting
from openknn.service.routing import Route
from openknn.service.runtime import Runtime
from openknn.service.state import State
from openknn.service.training_jobs import TrainingJobs
from openknn.service.transform_jobs import TransformJobs

Scope = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]],
                   Awaitable[None]]
JSON_11 = "application/x-amz-json-1.1"
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServiceConfig:
    """Where the service keeps its state, and the S3 it uses (None: the embedded store)."""

    home: Path
    s3_endpoint: str | None = None
    url: str = "http://127.0.0.1:8000"  # where the service listens (its workers' S3)
    keys: Keys | None = None  # --auth: the key pairs it accepts (None: any credentials)

    @property
    def s3_root(self) -> Path:
        return self.home / "s3"


def json_error(code: str, message: str, status: int = 400) -> Response:
    """The JSON 1.1 error shape botocore reads (``__type`` and ``message``)."""
    return Response(orjson.dumps({"__type": code, "message": message}), status_code=status,
                    media_type=JSON_11)


def _external_s3(endpoint: str) -> ASGIApp:
    async def answer(request: Request) -> Response:
        body = ("<Error><Code>InvalidRequest</Code><Message>This openknn service uses the S3 "
                f"at {endpoint}; point S3 clients there (openknn env prints "
                "AWS_ENDPOINT_URL_S3)</Message></Error>")
        return Response(body, status_code=400, media_type="application/xml")

    return Starlette(routes=[HttpRoute("/{path:path}", answer, methods=["GET", "POST", "PUT",
                                                                       "DELETE", "HEAD"])])


def _query_app(handler: Callable[[Request], Awaitable[Response]]) -> ASGIApp:
    return Starlette(routes=[HttpRoute("/{path:path}", handler, methods=["GET", "POST"])])


class Service:
    """``openknn up``'s app: the embedded S3 store (or a note pointing at the external one),
    STS and IAM, the internal pages (health), and the SageMaker, Runtime and Logs APIs."""

    def __init__(self, config: ServiceConfig) -> None:
        from openknn.service.s3 import Store, create_app

        self.config = config
        self.started = time.time()
        config.home.mkdir(parents=True, exist_ok=True)
        self.state = State(config.home)
        self.training_jobs = TrainingJobs(self.state, config.home, self.worker_env)
        self.training_jobs.recover()
        self.transform_jobs = TransformJobs(self.state, config.home, self.worker_env)
        self.transform_jobs.recover()
        self.hosting = Hosting(self.state)
        self.endpoints = Endpoints(self.state, self.worker_env)
        self.endpoints.recover()
        self.runtime = Runtime(self.endpoints)
        s3: ASGIApp = (create_app(config.s3_root) if config.s3_endpoint is None
                       else _external_s3(config.s3_endpoint))
        self.console = Console(Parts(self.state, self.training_jobs, self.hosting,
                                     self.endpoints, self.runtime,
                                     Store(config.s3_root) if config.s3_endpoint is None
                                     else None, self.transform_jobs), config.keys)
        self.apps: dict[Route, ASGIApp] = {
            Route.S3: s3,
            Route.STS: _query_app(identity.sts),
            Route.IAM: _query_app(identity.iam),
            Route.INTERNAL: Starlette(routes=[
                HttpRoute("/_openknn/health", self.health, methods=["GET"]),
                *self.console.routes()], lifespan=self.lifespan),
            Route.SAGEMAKER: json_app("SageMaker", {**self.training_jobs.handlers(),
                                                    **self.hosting.handlers(),
                                                    **self.endpoints.handlers(),
                                                    **self.transform_jobs.handlers()},
                                      "the SageMaker API"),
            Route.RUNTIME: self.runtime,
            Route.LOGS: json_app("Logs_20140328", logs.handlers(self.state),
                                 "CloudWatch Logs"),
        }

    @contextlib.asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        """Runs around the server's life: what the service started stops here, before
        uvicorn lets a SIGTERM end the process."""
        yield
        await self.runtime.close()
        self.close()
        print("openknn up: stopped", flush=True)

    def close(self) -> None:
        """Stop what the service started (training and endpoint workers) and close its
        state."""
        self.training_jobs.shutdown()
        self.transform_jobs.shutdown()
        self.endpoints.shutdown()
        self.state.close()

    def worker_env(self) -> dict[str, str]:
        """The environment of a job's worker: its S3 is this service's store (or the
        external S3), with the service's dummy credentials unless it has real ones: with
        --auth, the embedded store's are the first key pair of its file."""
        out = {"AWS_ENDPOINT_URL_S3": self.config.s3_endpoint or self.config.url,
               "AWS_EC2_METADATA_DISABLED": "true"}
        if self.config.s3_endpoint is None and self.config.keys is not None:
            first = self.config.keys.first
            out.update(AWS_ACCESS_KEY_ID=first.access_key,
                       AWS_SECRET_ACCESS_KEY=first.secret_key)
        elif self.config.s3_endpoint is None or "AWS_ACCESS_KEY_ID" not in os.environ:
            out.update(AWS_ACCESS_KEY_ID="test", AWS_SECRET_ACCESS_KEY="test")
        out.setdefault("AWS_DEFAULT_REGION", os.environ.get("AWS_DEFAULT_REGION", "us-east-1"))
        return out

    def status(self) -> dict[str, Any]:
        """What ``/_openknn/health`` answers once the service is ready."""
        return {"status": "ok", "version": __version__, "home": str(self.config.home),
                "s3_endpoint": self.config.s3_endpoint, "started": self.started}

    async def health(self, request: Request) -> Response:
        return JSONResponse(self.status())

    async def __call__(self, scope: Scope, receive: Callable[[], Awaitable[Any]],
                       send: Callable[[Any], Awaitable[None]]) -> None:
        if scope["type"] != "http":  # lifespan (startup, shutdown), websockets: the internal app
            await self.apps[Route.INTERNAL](scope, receive, send)
            return
        if self.config.keys is None and scope["method"] == "POST" and (
                scope["path"].endswith("/invocations")):  # the hot path: InvokeEndpoint
            # signed for sagemaker (the Runtime's scope); the credential itself is read only
            # where an answer needs its region or account (runtime.Runtime)
            authorization = _authorization(scope["headers"])
            if "/sagemaker/aws4_request" in authorization and (
                    routing.invoked_endpoint(scope["path"]) is not None):
                scope["openknn.authorization"] = authorization
                await self.runtime(scope, receive, send)
                return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1")
                   for k, v in scope["headers"]}
        signed = routing.credential(headers, scope.get("query_string", b"").decode("latin-1"))
        which = routing.route(scope["method"], scope["path"], headers, signed)
        scope["openknn.credential"] = signed
        if self.config.keys is not None:  # --auth: signed with one of them, or refused
            refused, receive = await guard(self.config.keys, which, scope, receive, headers,
                                           console=self.console.gate)
            if refused is not None:
                await refused(scope, receive, send)
                return
        if which is Route.UNKNOWN:
            assert signed is not None
            response = json_error("UnknownOperationException",
                                  f"openknn up does not serve the AWS service "
                                  f"{signed.service!r}; it serves sagemaker, "
                                  "sagemaker-runtime, logs, sts, iam and s3")
            await response(scope, receive, send)
            return
        await self.apps[which](scope, receive, send)


def _authorization(headers: list[tuple[bytes, bytes]]) -> str:
    """The Authorization header of an ASGI scope's raw headers ('' if none)."""
    for name, value in headers:
        if name == b"authorization":
            return value.decode("latin-1")
    return ""
