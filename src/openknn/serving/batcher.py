"""Micro-batching: concurrent requests' rows go to faiss as one search, in one bounded
worker thread, so many single-row requests cost about what one batched search costs."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from ..formats.codec import Predictions

log = logging.getLogger(__name__)

Search = Callable[[np.ndarray, "int | None"], Predictions]


@dataclass
class _Job:
    features: np.ndarray
    nprobe: int | None
    future: asyncio.Future[Predictions] = field(repr=False)


def split(predictions: Predictions, sizes: list[int]) -> list[Predictions]:
    """Cut a batch's answers back into per-request answers."""
    bounds = np.cumsum([0, *sizes])
    p = predictions
    return [Predictions(p.predicted[a:b],
                        None if p.distances is None else p.distances[a:b],
                        None if p.labels is None else p.labels[a:b])
            for a, b in zip(bounds[:-1], bounds[1:])]


class MicroBatcher:
    """Collects rows while a search runs, then searches them together.

    A batch starts at once when no other request is still being decoded (a request counts
    from when its body is in, ``arriving``: a client still sending holds no batch back), so a
    lone request never waits; otherwise it waits up to ``window_s`` for those requests, or until
    ``max_rows`` rows are queued. A lone request of at most ``inline_rows`` rows, with no
    search running, nothing queued and no other request arriving, is searched right there on
    the event loop: it could not share a batch, and the two thread hand-offs of the search
    thread cost it more than its search (about 0.3 ms of a 1.5 ms single-row request on 2
    cores, docs/serving.md).
    """

    def __init__(self, search: Search, window_s: float = 0.002, max_rows: int = 4096,
                 on_batch: Callable[[int], None] | None = None,
                 inline_rows: int = 1) -> None:
        self._search = search
        self._window = window_s
        self._max_rows = max_rows
        self._on_batch = on_batch
        self._pending: list[_Job] = []
        self._wake = asyncio.Event()
        self._arriving = 0
        self._searching = False  # a batch is in the search thread
        self._inline_rows = inline_rows
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="openknn-search")
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self._executor.shutdown(wait=True)

    def arriving(self) -> None:
        """A request's body is in and is being decoded; it will submit rows or call
        ``abandon``."""
        self._arriving += 1

    def abandon(self) -> None:
        self._arriving -= 1
        self._wake.set()

    async def submit(self, features: np.ndarray, nprobe: int | None = None) -> Predictions:
        self._arriving -= 1
        if (features.shape[0] <= self._inline_rows and not self._searching
                and not self._pending and self._arriving == 0):
            if self._on_batch is not None:
                self._on_batch(features.shape[0])
            return self._search(features, nprobe)
        future: asyncio.Future[Predictions] = asyncio.get_running_loop().create_future()
        self._pending.append(_Job(features, nprobe, future))
        self._wake.set()
        return await future

    def _rows(self) -> int:
        return sum(job.features.shape[0] for job in self._pending)

    async def _gather(self) -> None:
        """Wait (up to the window) for requests still arriving, unless the batch is full."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._window
        while self._arriving > 0 and self._rows() < self._max_rows:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), remaining)
            except asyncio.TimeoutError:  # not the builtin TimeoutError before Python 3.11
                return

    def _take(self) -> list[_Job]:
        """Jobs of one nprobe, up to max_rows rows (at least one job)."""
        first = self._pending[0]
        taken: list[_Job] = []
        rest: list[_Job] = []
        rows = 0
        for job in self._pending:
            fits = rows + job.features.shape[0] <= self._max_rows or not taken
            if job.nprobe == first.nprobe and fits:
                taken.append(job)
                rows += job.features.shape[0]
            else:
                rest.append(job)
        self._pending = rest
        return taken

    async def _run(self) -> None:
        """Supervised: an unexpected error fails the requests it touched (the app answers
        them 500) and the loop goes on, so no later request waits forever."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending:
                jobs: list[_Job] = []
                try:
                    await self._gather()
                    jobs = self._take()
                    await self._answer(jobs)
                except Exception as exc:
                    self._fail(jobs, exc)

    def _fail(self, jobs: list[_Job], exc: Exception) -> None:
        """Deliver ``exc`` to ``jobs``, or to every pending job when none was taken yet (the
        queue itself may be what is broken)."""
        if not jobs:
            jobs, self._pending = self._pending, []
        live = [job for job in jobs if not job.future.done()]
        for job in live:
            job.future.set_exception(exc)
        if not live:
            log.error("Micro-batcher error with no request left to answer: %r", exc)

    async def _answer(self, jobs: list[_Job]) -> None:
        """One search for the live ``jobs``; each gets its rows' answers (an error, the
        search's own included, goes to ``_fail``)."""
        live = [j for j in jobs if not j.future.cancelled()]
        if not live:
            return
        features = (live[0].features if len(live) == 1
                    else np.concatenate([j.features for j in live]))
        if self._on_batch is not None:
            self._on_batch(features.shape[0])
        loop = asyncio.get_running_loop()
        self._searching = True
        try:
            result = await loop.run_in_executor(self._executor, self._search, features,
                                                live[0].nprobe)
        finally:
            self._searching = False
        for job, part in zip(live, split(result, [j.features.shape[0] for j in live])):
            if not job.future.done():
                job.future.set_result(part)
