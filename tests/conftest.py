"""Shared fixtures: where the real data sets are, small channel writers, and the endpoint app
called in process (``AppClient``)."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import anyio
import anyio.from_thread
import httpx
import numpy as np
import pytest

T = TypeVar("T")

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def shared_file(*parts: str) -> Path:
    """A file of ../shared/data, or a clean skip where it is absent."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real data set not present: {path}")
    return path


def write_csv(path: Path, features: np.ndarray, labels: np.ndarray) -> Path:
    """A training CSV: label first, no header."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = np.column_stack([labels, features])
    np.savetxt(path, rows, delimiter=",", fmt="%.9g")
    return path


class Csr:
    """Just enough of a CSR matrix for ``recordio.write_sparse``, without scipy."""

    def __init__(self, dense: np.ndarray) -> None:
        self.shape, self.dtype = dense.shape, dense.dtype
        mask = dense != 0
        self.data, self.indices = dense[mask], np.nonzero(mask)[1].astype(np.int32)
        self.indptr = np.concatenate(([0], np.cumsum(mask.sum(axis=1))))

    def tocsr(self) -> Csr:
        return self


# ---------------------------------------------------------------- the endpoint app, in process

APP_URL = "http://endpoint"  # the in-process app's base URL; no socket is opened


class _PortalTransport(httpx.BaseTransport):
    """A sync httpx transport that hands each request to ``httpx.ASGITransport`` in the
    event loop where the app's lifespan runs."""

    def __init__(self, client: AppClient, timeout_s: float) -> None:
        self._client, self._timeout_s = client, timeout_s

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        request.read()  # the whole body, a stream ASGITransport can also read asynchronously

        async def call() -> tuple[int, httpx.Headers, bytes]:
            with anyio.fail_after(self._timeout_s):  # a hung app fails the test, no hang
                response = await self._client.asgi.handle_async_request(request)
                return response.status_code, response.headers, await response.aread()

        status, headers, body = self._client.portal.call(call)
        return httpx.Response(status, headers=headers, content=body, request=request)


class AppClient(httpx.Client):
    """``openknn.serving.app.create_app``'s app with its lifespan run, called in process
    through ``httpx.ASGITransport`` (no socket, no uvicorn): a sync ``httpx.Client`` itself,
    and ``run(test)`` awaits ``test(async_client)`` for requests in flight at once.

    ``httpx.ASGITransport`` does not run the ASGI lifespan, and the app starts its
    micro-batcher there (and loads its model there when given a loader; ``/invocations``
    needs both). So this enters the app's lifespan context (``app.router.lifespan_context``,
    what Starlette's router runs on ``lifespan.startup``) in an event loop on a thread of its
    own, anyio's blocking portal, which keeps the context open in one task until the client
    closes. Every request, sync or async, then runs in that loop beside the batcher, and one
    app (its model, batcher and metrics) can serve a whole module of tests. Why not
    ``starlette.testclient.TestClient``, which runs the lifespan too: starlette 1.10 warns on
    import that using it with httpx is deprecated, and it sends requests through a transport
    of its own, not httpx's; why not ``asyncio.run`` around each test: an app per test, and
    no sync client.
    """

    def __init__(self, app: Any, timeout_s: float = 60.0) -> None:
        self.app = app
        self.asgi = httpx.ASGITransport(app=app)
        self.portal: anyio.from_thread.BlockingPortal
        self._timeout_s = timeout_s
        self._stack = contextlib.ExitStack()
        super().__init__(transport=_PortalTransport(self, timeout_s), base_url=APP_URL)

    def __enter__(self) -> AppClient:
        with contextlib.ExitStack() as stack:
            self.portal = stack.enter_context(anyio.from_thread.start_blocking_portal())
            stack.enter_context(self.portal.wrap_async_context_manager(
                self.app.router.lifespan_context(self.app)))
            self._stack = stack.pop_all()
        super().__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        try:
            super().__exit__(*exc)
        finally:
            self._stack.close()  # the lifespan's end (the batcher stops), then the loop's

    def run(self, test: Callable[[httpx.AsyncClient], Awaitable[T]],
            timeout_s: float | None = None) -> T:
        """``await test(client)`` in the app's loop, ``client`` an ``httpx.AsyncClient`` on
        ``httpx.ASGITransport``; at most ``timeout_s`` seconds (default: the client's)."""
        async def main() -> T:
            async with httpx.AsyncClient(transport=self.asgi, base_url=APP_URL) as client:
                with anyio.fail_after(timeout_s or self._timeout_s):
                    return await test(client)

        return self.portal.call(main)


@contextlib.contextmanager
def app_client(model: Any, settings: Any = None) -> Iterator[AppClient]:
    """An ``AppClient`` for ``create_app(model, settings)``; by default one faiss thread, as
    the ``openknn serve`` processes of these tests run."""
    from openknn.serving.app import create_app
    from openknn.settings import ServingSettings

    with AppClient(create_app(model, settings or ServingSettings(threads=1))) as client:
        yield client


class Records(logging.Handler):
    """Every record the openknn loggers write, to count tracebacks and server errors."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    @property
    def tracebacks(self) -> int:
        return sum(r.exc_info is not None for r in self.records)

    @property
    def errors(self) -> list[logging.LogRecord]:
        return [r for r in self.records if r.levelno >= logging.ERROR]


@contextlib.contextmanager
def captured() -> Iterator[Records]:
    """What the ``openknn`` loggers write meanwhile (from any thread, the app's included)."""
    handler = Records()
    logger = logging.getLogger("openknn")
    logger.addHandler(handler)
    old = logger.level
    logger.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old)
