"""The ASGI app: ``/ping``, ``/invocations``, ``/execution-parameters``, ``/metrics``. A thin
adapter: it reads the body, negotiates types, calls the inference core, maps errors to statuses."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from .. import index as faiss_index
from ..errors import OpenKnnError, PayloadTooLarge
from ..formats.codec import Predictions, encode, negotiate
from ..inference import infer, knob_override, parse_request
from ..model import KnnModel
from ..settings import ServingSettings
from .batcher import MicroBatcher
from .metrics import CONTENT_TYPE, EndpointMetrics

log = logging.getLogger(__name__)

JSON_ERROR = "application/json"
DECODE_IN_THREAD_BYTES = 256 * 1024  # larger bodies are parsed off the event loop


def error_response(status: int, message: str) -> Response:
    """Decision 12's one error shape."""
    body = orjson.dumps({"error": {"code": status, "message": message}})
    return Response(body, status_code=status, media_type=JSON_ERROR)


async def read_body(request: Request, limit_mb: float) -> bytes:
    """The body, refusing (413) anything over ``limit_mb`` MiB before reading it all."""
    limit = int(limit_mb * 1024 * 1024)
    declared = request.headers.get("content-length")
    too_big = PayloadTooLarge(
        f"The request body is over the {limit_mb:g} MB payload limit; send fewer rows "
        "per request (or raise SAGEMAKER_MAX_PAYLOAD_IN_MB / --max-payload-mb)")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise too_big
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_big
        chunks.append(chunk)
    return b"".join(chunks)


class Endpoint:
    """The app's state: the model (once loaded), the batcher and the metrics."""

    def __init__(self, model: KnnModel | Callable[[], KnnModel], settings: ServingSettings,
                 on_load_error: Callable[[BaseException], None] | None = None,
                 health: Callable[[], bool] | None = None) -> None:
        self.settings = settings
        self._health = health
        self.load_error: BaseException | None = None
        self._on_load_error = on_load_error
        self.metrics = EndpointMetrics()
        self._load = model if callable(model) else None
        self.model: KnnModel | None = None if callable(model) else model
        self.batcher: MicroBatcher | None = None

    def _search(self, features: Any, nprobe: int | None) -> Predictions:
        """Runs in the batcher's search thread, which needs its own OpenMP setting."""
        assert self.model is not None
        faiss_index.use_threads_for(features.shape[0])
        return infer(self.model, features, nprobe)

    @contextlib.asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        faiss_index.set_threads(self.settings.threads)
        self.batcher = MicroBatcher(self._search, self.settings.batch_window_ms / 1000,
                                    self.settings.max_batch_rows,
                                    self.metrics.batch_rows.observe)
        self.batcher.start()
        async with anyio.create_task_group() as tg:
            if self._load is not None:
                tg.start_soon(self._load_model)  # /ping answers 503 while the model loads
            yield
            tg.cancel_scope.cancel()
        await self.batcher.stop()

    async def _load_model(self) -> None:
        assert self._load is not None
        try:
            self.model = await anyio.to_thread.run_sync(self._load)
            log.info("Model loaded: %s", self.model.meta)
        except Exception as exc:
            self.load_error = exc
            log.error("Model failed to load; /ping stays 503: %s", exc)
            if self._on_load_error is not None:
                self._on_load_error(exc)

    async def ping(self, request: Request) -> Response:
        healthy = self.model is not None
        if healthy and self._health is not None:  # e.g. every shard actor answers
            healthy = await anyio.to_thread.run_sync(self._health)
        # serving.server.serve sets it for an endpoint started with a token (the SDK's)
        identify = getattr(request.app.state, "identify", None)
        headers = identify(request.headers) if identify is not None else None
        return Response(status_code=200 if healthy else 503, headers=headers)

    async def execution_parameters(self, request: Request) -> Response:
        return Response(orjson.dumps({
            "MaxConcurrentTransforms": self.settings.max_concurrent_transforms,
            "BatchStrategy": self.settings.batch_strategy,
            "MaxPayloadInMB": int(self.settings.max_payload_mb),
        }), media_type="application/json")

    async def metrics_route(self, request: Request) -> Response:
        return Response(self.metrics.render(), media_type=CONTENT_TYPE)

    async def invocations(self, request: Request) -> Response:
        start, status, rows = time.perf_counter(), 200, 0
        batcher = self.batcher
        assert batcher is not None
        batcher.arriving()
        submitted = False
        try:
            if self.model is None:
                status = 503
                return error_response(503, "The model is still loading; retry after /ping "
                                           "answers 200")
            model = self.model
            body = await read_body(request, self.settings.max_payload_mb)
            response_type = negotiate(request.headers.get("accept"))
            content_type = request.headers.get("content-type")
            if len(body) > DECODE_IN_THREAD_BYTES:
                features = await anyio.to_thread.run_sync(parse_request, model, body,
                                                          content_type)
            else:
                features = parse_request(model, body, content_type)
            knob = knob_override(model, content_type)
            submitted = True
            predictions = await batcher.submit(features, knob)
            rows = features.shape[0]
            return Response(encode(predictions, response_type),
                            media_type=response_type.content_type)
        except OpenKnnError as exc:
            status = exc.status
            return error_response(status, str(exc))
        except Exception:  # never a traceback to the client; the log has it
            log.exception("Internal error while answering /invocations")
            status = 500
            return error_response(500, "Internal error; the server log has the details")
        finally:
            if not submitted:
                batcher.abandon()
            self.metrics.observe(status, rows, time.perf_counter() - start)


def create_app(model: KnnModel | Callable[[], KnnModel],
               settings: ServingSettings | None = None,
               on_load_error: Callable[[BaseException], None] | None = None,
               health: Callable[[], bool] | None = None) -> Starlette:
    """The endpoint for a loaded model, or a loader run at startup (``/ping`` 503 until done).
    ``health``, when given, must also hold for ``/ping`` to answer 200."""
    endpoint = Endpoint(model, settings or ServingSettings(), on_load_error, health)
    routes = [
        Route("/ping", endpoint.ping, methods=["GET"]),
        Route("/invocations", endpoint.invocations, methods=["POST"]),
        Route("/execution-parameters", endpoint.execution_parameters, methods=["GET"]),
        Route("/metrics", endpoint.metrics_route, methods=["GET"]),
    ]
    app = Starlette(routes=routes, lifespan=endpoint.lifespan)
    app.state.endpoint = endpoint
    return app
