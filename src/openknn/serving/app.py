"""The ASGI app: ``/ping``, ``/invocations``, ``/execution-parameters``, ``/metrics``. A thin
adapter: it reads the body, negotiates types, calls the inference core, maps errors to statuses.

``/invocations`` is a plain ASGI callable (``Invocations``) that the app calls before
Starlette's stack: a single-row request costs about 0.2 ms of openknn's own work beside
faiss, and Starlette's middleware, routing, ``Request`` and ``Response`` were about a quarter
of it (py-spy, docs/serving.md). The other routes are rare and stay on Starlette."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
import orjson
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Message, Receive, Scope, Send

from ..core import index as faiss_index
from ..core.model import KnnModel
from ..errors import OpenKnnError, PayloadTooLarge, RequestTimeout
from ..formats import NotQuick
from ..formats.codec import Predictions, RequestType, ResponseType, encode, negotiate
from ..formats.media import JSON
from ..settings import ServingSettings
from .batcher import MicroBatcher
from .connections import BODY_COMPLETE
from .inference import check_request, infer, parse_request
from .metrics import CONTENT_TYPE, EndpointMetrics

log = logging.getLogger(__name__)

# Bodies up to this size are decoded on the event loop, by the formats' quick paths only
# (measured at most 0.3 ms at 4 KiB on 2 cores, docs/serving.md); larger ones, and any that
# need a slower path (an error to locate, sparse or odd RecordIO), in a worker thread.
DECODE_IN_THREAD_BYTES = 4 * 1024
ENCODE_IN_THREAD_CELLS = 2048  # numbers in a response (about 0.1 us each) encoded on the loop
DISCONNECTED = 499  # the client went away mid-request (nginx's code); counted, never sent
TRACEBACK_EVERY_S = 60.0  # at most one full traceback of openknn's own errors per minute
SWEEP_S = 0.25  # how often the body deadlines are checked (BodyDeadlines), at most
MIN_SWEEP_S = 0.005  # however short a timeout (tests use 0.05 s), no busier sweep than this


def error_body(status: int, message: str) -> bytes:
    """Decision 12's one error shape."""
    text = message.encode("utf-8", "backslashreplace").decode("utf-8")  # no lone surrogates
    return orjson.dumps({"error": {"code": status, "message": text}})


def error_response(status: int, message: str) -> Response:
    return Response(error_body(status, message), status_code=status, media_type=JSON)


@functools.lru_cache(maxsize=64)
def content_type_header(media_type: str) -> bytes:
    """The Content-Type a response goes out with: Starlette's rule (text types say their
    charset), kept so that the plain ASGI path answers byte for byte as Starlette did."""
    if media_type.startswith("text/") and "charset=" not in media_type.lower():
        media_type += "; charset=utf-8"
    return media_type.encode("latin-1")


async def respond(send: Send, status: int, body: bytes, content_type: bytes) -> None:
    """One whole response: its head (with a length, never chunked), then its body."""
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-length", str(len(body)).encode()),
                            (b"content-type", content_type)]})
    await send({"type": "http.response.body", "body": body})


async def decode_off_loop(model: KnnModel, body: bytes, request: RequestType) -> Any:
    """The request's features: small bodies by the quick paths on the event loop, the rest
    (and small ones that need more) in a worker thread, so the loop never waits long."""
    if len(body) <= DECODE_IN_THREAD_BYTES:
        try:
            return parse_request(model, body, request, quick=True)
        except NotQuick:
            pass
    return await anyio.to_thread.run_sync(parse_request, model, body, request)


async def encode_off_loop(predictions: Predictions, response: ResponseType) -> bytes:
    """The response body; a large one is encoded in a worker thread."""
    cells = predictions.predicted.size
    if response.verbose and predictions.distances is not None:
        cells *= 1 + 2 * predictions.distances.shape[1]
    if cells <= ENCODE_IN_THREAD_CELLS:
        return encode(predictions, response)
    return await anyio.to_thread.run_sync(encode, predictions, response)


class FaultLog:
    """openknn's own failures (the 500s) in the log: a full traceback at most every
    ``every_s`` seconds, one line for each failure in between, with a count."""

    def __init__(self, logger: logging.Logger, every_s: float = TRACEBACK_EVERY_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._log, self._every, self._clock = logger, every_s, clock
        self._last: float | None = None
        self._quiet = 0  # failures logged in one line since the last traceback

    def failed(self, exc: BaseException) -> None:
        now = self._clock()
        if self._last is None or now - self._last >= self._every:
            more = (f" ({self._quiet} more since the last traceback, one line each)"
                    if self._quiet else "")
            self._log.error("Internal error while answering /invocations%s", more,
                            exc_info=exc)
            self._last, self._quiet = now, 0
            return
        self._quiet += 1
        self._log.error("Internal error while answering /invocations: %s: %s (%d since the "
                        "last traceback; one is logged at most every %g s)",
                        type(exc).__name__, exc, self._quiet, self._every)


class BodyDeadlines:
    """The deadlines of the bodies being read, kept by one timer for them all.

    With a timer of its own per request (``call_later`` and its cancel), reading a
    single-row body took about 10.5 us in the server, against 3.6 us with no deadline at all
    (IVFFlat, wrk -c1, docs/serving.md); here a request only puts itself in a dict and takes
    itself out, and a sweep every ``every_s`` seconds
    (while any body is being read) cancels the reads past their deadline, so a body is cut
    off between its deadline and ``every_s`` after it."""

    def __init__(self, every_s: float) -> None:
        self.every_s = every_s
        self._due: dict[asyncio.Task[Any], tuple[float, list[bool]]] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @classmethod
    def for_timeout(cls, timeout_s: float) -> BodyDeadlines:
        """Swept often enough to keep a ``timeout_s`` deadline within a quarter of it."""
        return cls(max(MIN_SWEEP_S, min(SWEEP_S, timeout_s / 4)))

    def watch(self, task: asyncio.Task[Any], timeout_s: float, expired: list[bool]) -> None:
        """Cancel ``task`` (and mark ``expired``) once ``timeout_s`` has passed."""
        loop = asyncio.get_running_loop()
        self._due[task] = (loop.time() + timeout_s, expired)
        if self._timer is None or self._loop is not loop:  # a test may run a second loop
            self._loop = loop
            self._timer = loop.call_later(self.every_s, self._sweep)

    def forget(self, task: asyncio.Task[Any]) -> None:
        self._due.pop(task, None)

    def _sweep(self) -> None:
        self._timer = None
        assert self._loop is not None
        now = self._loop.time()
        for task, (due, expired) in list(self._due.items()):
            if due <= now:
                del self._due[task]
                expired.append(True)
                task.cancel()
        if self._due:
            self._timer = self._loop.call_later(self.every_s, self._sweep)


async def read_body(request: Request, limit_mb: float, timeout_s: float | None = None) -> bytes:
    """``receive_body`` for a Starlette request; ``timeout_s`` defaults to the app's
    ``body_timeout_s``."""
    if timeout_s is None:
        endpoint = getattr(request.app.state, "endpoint", None)
        timeout_s = (endpoint.settings if endpoint else ServingSettings()).body_timeout_s
    return await receive_body(request.receive, request.headers.get("content-length"),
                              limit_mb, timeout_s, BodyDeadlines.for_timeout(timeout_s))


def too_big(limit_mb: float) -> PayloadTooLarge:
    """The 413 for a body over ``limit_mb``, made only when one is."""
    return PayloadTooLarge(
        f"The request body is over the {limit_mb:g} MB payload limit; send fewer rows "
        "per request (or raise SAGEMAKER_MAX_PAYLOAD_IN_MB / --max-payload-mb)")


async def receive_body(receive: Receive, declared: str | None, limit_mb: float,
                       timeout_s: float, deadlines: BodyDeadlines, complete: bool = False,
                       ) -> bytes:
    """The body, refusing (413) anything over ``limit_mb`` MiB before reading it all (at once
    when its ``declared`` Content-Length says so), and (408) a body not all there
    ``timeout_s`` seconds after reading starts (as ``deadlines`` keeps it), so a client that
    stops half-way does not hold its connection. ``complete``: the server holds the whole
    body already (``connections.BODY_COMPLETE``), so receiving it cannot wait and needs no
    deadline (most single-row requests: their body read went from about 11 to 5 us).
    A client gone raises ``ClientDisconnect``."""
    limit = int(limit_mb * 1024 * 1024)
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise too_big(limit_mb)
    chunks: list[bytes] = []
    size = 0
    expired: list[bool] = []
    # one deadline for the whole body, which cancels this task (anyio.fail_after cost three
    # times what a timer does, and a timer costs more than the shared sweep)
    task = None if complete else _watched(deadlines, timeout_s, expired)
    try:
        while True:
            message: Message = await receive()
            if message["type"] != "http.request":  # http.disconnect
                raise ClientDisconnect()
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise too_big(limit_mb)
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
            if task is None:  # not all there after all: the rest under the deadline
                task = _watched(deadlines, timeout_s, expired)
    except asyncio.CancelledError:
        if not expired:
            raise
        if task is not None and hasattr(task, "uncancel"):  # Python 3.11+: this
            task.uncancel()  # cancellation is handled here
        # The server closes the connection after the 408.
        raise RequestTimeout(
            f"The request body did not all arrive within {timeout_s:g} s ({size} bytes came); "
            "send it at once (or raise OPENKNN_BODY_TIMEOUT_S / --body-timeout-s)") from None
    finally:
        if task is not None:
            deadlines.forget(task)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _watched(deadlines: BodyDeadlines, timeout_s: float, expired: list[bool],
             ) -> asyncio.Task[Any]:
    """The running task, given to ``deadlines`` to cancel (marking ``expired``) at its
    deadline."""
    task = asyncio.current_task()
    assert task is not None
    deadlines.watch(task, timeout_s, expired)
    return task


def request_headers(scope: Scope) -> tuple[str | None, str | None, str | None]:
    """The first Content-Type, Accept and Content-Length of a request (ASGI gives header
    names in lower case; values as Starlette decodes them, latin-1)."""
    content_type = accept = length = None
    for name, value in scope["headers"]:
        if name == b"content-type":
            if content_type is None:
                content_type = value.decode("latin-1")
        elif name == b"accept":
            if accept is None:
                accept = value.decode("latin-1")
        elif name == b"content-length" and length is None:
            length = value.decode("latin-1")
    return content_type, accept, length


class Endpoint:
    """The app's state: the model (once loaded), the batcher and the metrics."""

    def __init__(self, model: KnnModel | Callable[[], KnnModel], settings: ServingSettings,
                 on_load_error: Callable[[BaseException], None] | None = None,
                 health: Callable[[], bool] | None = None,
                 company: Callable[[], bool] | None = None) -> None:
        self.settings = settings
        self._company = company
        self._health = health
        self.load_error: BaseException | None = None
        self._on_load_error = on_load_error
        self.metrics = EndpointMetrics()
        self.faults = FaultLog(log)
        self.deadlines = BodyDeadlines.for_timeout(settings.body_timeout_s)
        self._load = model if callable(model) else None
        self.model: KnnModel | None = None if callable(model) else model
        self.batcher: MicroBatcher | None = None

    def _search(self, features: Any, nprobe: int | None) -> Predictions:
        """Runs in the batcher's search thread, or on the event loop for a lone small request
        (``MicroBatcher``): either needs its own OpenMP setting, set here."""
        assert self.model is not None
        faiss_index.use_threads_for(features.shape[0])
        return infer(self.model, features, nprobe)

    @contextlib.asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        faiss_index.set_threads(self.settings.threads)
        self.batcher = MicroBatcher(self._search, self.settings.batch_window_ms / 1000,
                                    self.settings.max_batch_rows,
                                    self.metrics.batch_rows.observe, company=self._company)
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
        }), media_type=JSON)

    async def metrics_route(self, request: Request) -> Response:
        return Response(self.metrics.render(), media_type=CONTENT_TYPE)

    async def invocations(self, scope: Scope, receive: Receive, send: Send) -> None:
        """``POST /invocations`` as a plain ASGI callable."""
        start, status, rows = time.perf_counter(), 200, 0
        batcher = self.batcher
        assert batcher is not None
        arrived = submitted = False
        media_type = JSON
        try:
            if self.model is None:
                status = 503
                body = error_body(503, "The model is still loading; retry after /ping "
                                       "answers 200")
            else:
                model = self.model
                content_type, accept, declared = request_headers(scope)
                data = await receive_body(receive, declared, self.settings.max_payload_mb,
                                          self.settings.body_timeout_s, self.deadlines,
                                          BODY_COMPLETE in scope)
                response_type = negotiate(accept)
                request_type, knob = check_request(model, content_type)
                # Arriving only once its body is in: a batch waits (up to the window) for rows
                # being decoded, never for a client still sending, which may take seconds.
                batcher.arriving()
                arrived = True
                features = await decode_off_loop(model, data, request_type)
                submitted = True
                predictions = await batcher.submit(features, knob)
                rows = features.shape[0]
                body = await encode_off_loop(predictions, response_type)
                media_type = response_type.content_type
        except ClientDisconnect:  # nobody to answer, and not an error of anyone's here
            status = DISCONNECTED
        except OpenKnnError as exc:
            status = exc.status
            if status >= 500:
                self.faults.failed(exc)
            body = error_body(status, str(exc))
        except Exception as exc:  # never a traceback to the client; the log has it
            status = 500
            self.faults.failed(exc)
            body = error_body(500, "Internal error; the server log has the details")
        finally:
            if arrived and not submitted:
                batcher.abandon()
            if status == DISCONNECTED:
                self.metrics.disconnected()
            else:
                self.metrics.observe(status, rows, time.perf_counter() - start)
        if status != DISCONNECTED:
            await respond(send, status, body, content_type_header(media_type))


class Invocations:
    """``Endpoint.invocations`` as an ASGI app object, so Starlette's ``Route`` calls it as
    one (a method would be wrapped in ``Request`` / ``Response``)."""

    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.endpoint.invocations(scope, receive, send)


class EndpointApp(Starlette):
    """Starlette, with ``POST /invocations`` answered before its middleware and router."""

    endpoint: Endpoint

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (scope["type"] == "http" and scope["path"] == "/invocations"
                and scope["method"] == "POST" and not scope.get("root_path")):
            await self.endpoint.invocations(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


def create_app(model: KnnModel | Callable[[], KnnModel],
               settings: ServingSettings | None = None,
               on_load_error: Callable[[BaseException], None] | None = None,
               health: Callable[[], bool] | None = None,
               company: Callable[[], bool] | None = None) -> EndpointApp:
    """The endpoint for a loaded model, or a loader run at startup (``/ping`` 503 until done).
    ``health``, when given, must also hold for ``/ping`` to answer 200. ``company``, when
    given, says whether requests besides the asking one are in flight (the server's
    ``connections.InFlight.others``; without it a lone request always looks for company)."""
    endpoint = Endpoint(model, settings or ServingSettings(), on_load_error, health, company)
    routes = [
        Route("/ping", endpoint.ping, methods=["GET"]),
        Route("/invocations", Invocations(endpoint), methods=["POST"]),
        Route("/execution-parameters", endpoint.execution_parameters, methods=["GET"]),
        Route("/metrics", endpoint.metrics_route, methods=["GET"]),
    ]
    app = EndpointApp(routes=routes, lifespan=endpoint.lifespan)
    app.endpoint = endpoint
    app.state.endpoint = endpoint
    return app
