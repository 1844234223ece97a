"""What the console does, rather than shows: stop a training job, delete a model, an endpoint
configuration or an endpoint, call an endpoint, and read an endpoint's workers' counters.

Each action calls the very handler boto3's request reaches (``TrainingJobs.stop``,
``Hosting.delete_model``, ``Endpoints.delete``, …) with the request document the API would
have parsed and the signed-in person's ``Caller``, so a click and an API call are one
implementation, with the same checks and the same errors. "Try it" goes through the Runtime's
own ASGI app, as InvokeEndpoint does."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from openknn.service.api import ApiError, Caller, Handler
from openknn.service.console import metrics
from openknn.service.console.pages import ENDPOINT, Parts
from openknn.service.hosting import CONFIG, MODEL
from openknn.service.routing import DEFAULT_REGION, Credential
from openknn.service.runtime import Runtime
from openknn.service.training_jobs import KIND as TRAINING
from openknn.service.transform_jobs import KIND as TRANSFORM

SCRAPE_TIMEOUT_S = 1.0


@dataclass(frozen=True)
class Action:
    """One button: what it acts on, the API handler it calls, and what the confirmation
    page says happens."""

    what: str  # "endpoint", as the page names it
    verb: str  # "Delete", "Stop"
    kind: str  # the state's kind, to find the resource
    field: str  # the name's field in the API request
    handler: Callable[[Parts], Handler]
    explain: str
    back_to_list: bool  # after it: the list (a delete) or the resource's page (a stop)


def _transform_stop(parts: Parts) -> Handler:
    if parts.transform_jobs is None:
        raise ApiError("UnknownOperationException", "this service runs no transform jobs")
    return parts.transform_jobs.stop


ACTIONS: dict[tuple[str, str], Action] = {
    ("training-jobs", "stop"): Action(
        "training job", "Stop", TRAINING, "TrainingJobName",
        lambda p: p.training_jobs.stop,
        "StopTrainingJob: the job's worker gets SIGTERM, unwinds and uploads nothing; the job "
        "goes Stopping, then Stopped.", False),
    ("transform-jobs", "stop"): Action(
        "transform job", "Stop", TRANSFORM, "TransformJobName", _transform_stop,
        "StopTransformJob: the job's worker gets SIGTERM and uploads nothing more; the job "
        "goes Stopping, then Stopped.", False),
    ("models", "delete"): Action(
        "model", "Delete", MODEL, "ModelName", lambda p: p.hosting.delete_model,
        "DeleteModel: the model's document goes; its model.tar.gz stays in S3, and an endpoint "
        "that serves it keeps what it loaded.", True),
    ("endpoint-configs", "delete"): Action(
        "endpoint configuration", "Delete", CONFIG, "EndpointConfigName",
        lambda p: p.hosting.delete_config,
        "DeleteEndpointConfig: the configuration goes; endpoints running on it keep running.",
        True),
    ("endpoints", "delete"): Action(
        "endpoint", "Delete", ENDPOINT, "EndpointName", lambda p: p.endpoints.delete,
        "DeleteEndpoint: its workers stop and InvokeEndpoint no longer answers for it; its "
        "endpoint configuration and model stay (delete them on their own pages).", True),
}


def caller_of(account: str) -> Caller:
    return Caller(DEFAULT_REGION, account)


def perform(parts: Parts, action: Action, name: str, caller: Caller) -> dict[str, Any]:
    """The action's API call, as boto3's request would make it (ApiError on refusal)."""
    return action.handler(parts)({action.field: name}, caller)


# -- try it ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Answer:
    status: int
    content_type: str
    body: bytes
    variant: str
    ms: float  # from the request to the whole answer, inside the service


async def invoke(runtime: Runtime, name: str, body: bytes, content_type: str, accept: str,
                 access_key: str | None) -> Answer:
    """InvokeEndpoint through the Runtime's ASGI app: the request boto3 would send, as the
    service's router hands it on (its credential scope read already)."""
    scope: dict[str, Any] = {
        "type": "http", "method": "POST", "path": f"/endpoints/{name}/invocations",
        "raw_path": f"/endpoints/{name}/invocations".encode(), "query_string": b"",
        "headers": [(b"content-type", content_type.encode("latin-1")),
                    (b"accept", accept.encode("latin-1")),
                    (b"content-length", str(len(body)).encode())],
        "openknn.credential": Credential(access_key or "console", time.strftime("%Y%m%d"),
                                         DEFAULT_REGION, "sagemaker")}
    given = False

    async def receive() -> dict[str, Any]:
        nonlocal given
        if given:
            return {"type": "http.disconnect"}  # the runtime reads the body once
        given = True
        return {"type": "http.request", "body": body, "more_body": False}

    start: dict[str, Any] = {}
    parts: list[bytes] = []

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            start.update(message)
        else:
            parts.append(message.get("body", b""))

    began = time.perf_counter()
    await runtime(scope, receive, send)
    took = (time.perf_counter() - began) * 1000
    headers = {k.decode("latin-1").lower(): v.decode("latin-1")
               for k, v in start.get("headers", [])}
    return Answer(int(start.get("status", 500)), headers.get("content-type", ""),
                  b"".join(parts), headers.get("x-amzn-invoked-production-variant", ""), took)


# -- the workers' counters -------------------------------------------------------------------------

@dataclass
class Meter:
    """The history of every endpoint's counters, read when a page asks (at most about once a
    second per endpoint, however many pages ask)."""

    histories: dict[str, metrics.History] = field(default_factory=dict)

    async def read(self, parts: Parts, name: str) -> dict[str, object]:
        history = self.histories.setdefault(name, metrics.History())
        live = parts.endpoints.live(name)
        urls = [w.url for w in live.workers() if w.ready] if live is not None else []
        now = time.time()
        if urls and history.due(now):
            async with httpx.AsyncClient(trust_env=False, timeout=SCRAPE_TIMEOUT_S) as client:
                texts = await asyncio.gather(*(_metrics_text(client, u) for u in urls))
            history.add(metrics.combine([metrics.parse(t, now) for t in texts if t], now))
        for gone in [n for n in self.histories if parts.state.get(ENDPOINT, n) is None]:
            del self.histories[gone]
        out = metrics.summary(history)
        out["ready_workers"] = len(urls)
        return out


async def _metrics_text(client: httpx.AsyncClient, url: str) -> str:
    """A worker's /metrics, or '' if it does not answer (restarting: its counters are
    gone with it)."""
    try:
        answer = await client.get(f"{url}/metrics")
    except httpx.HTTPError:
        return ""
    return answer.text if answer.status_code == 200 else ""
