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


# Rows of a big request searched at once while other requests wait: its rest waits for the
# next search, so a small request that arrives meanwhile waits for at most this many rows
# (about 2 ms on the covtype Flat model, 2 cores) and is searched first. Measured with
# benchmarks/serving_mixed.py (28 single-row and 4 581-row connections, covtype Flat):
# single-row p99 2.4x its value alone with 256-row slices, 1.1x with 64 (docs/serving.md).
SLICE_ROWS = 64


@dataclass
class _Job:
    features: np.ndarray
    nprobe: int | None
    future: asyncio.Future[Predictions] = field(repr=False)
    taken: int = 0  # rows given to searches so far
    parts: list[Predictions] = field(default_factory=list, repr=False)  # answered, in order

    @property
    def rows(self) -> int:
        return int(self.features.shape[0])

    @property
    def left(self) -> int:
        return self.rows - self.taken


@dataclass
class _Piece:
    """Rows ``start:stop`` of a job, in one search."""

    job: _Job
    start: int
    stop: int


def split(predictions: Predictions, sizes: list[int]) -> list[Predictions]:
    """Cut a batch's answers back into per-request answers."""
    bounds = np.cumsum([0, *sizes])
    p = predictions
    return [Predictions(p.predicted[a:b],
                        None if p.distances is None else p.distances[a:b],
                        None if p.labels is None else p.labels[a:b])
            for a, b in zip(bounds[:-1], bounds[1:])]


def joined(parts: list[Predictions]) -> Predictions:
    """One request's answers from the answers of its slices, in order."""
    if len(parts) == 1:
        return parts[0]

    def cat(arrays: list[np.ndarray | None]) -> np.ndarray | None:
        return None if arrays[0] is None else np.concatenate(arrays)  # type: ignore[arg-type]

    predicted = cat([p.predicted for p in parts])
    assert predicted is not None
    return Predictions(predicted, cat([p.distances for p in parts]),
                       cat([p.labels for p in parts]))


class MicroBatcher:
    """Collects rows while a search runs, then searches them together.

    A batch starts at once when no other request is still being decoded (a request counts
    from when its body is in, ``arriving``: a client still sending holds no batch back), so a
    lone request never waits; otherwise it waits up to ``window_s`` for those requests, or until
    ``max_rows`` rows are queued. Small requests go first: a search takes the queued requests
    of at most ``slice_rows`` rows (oldest first, up to ``max_rows`` rows), then at most
    ``slice_rows`` rows of bigger ones, whose rest waits for the next search; so a small
    request waits behind at most one slice of a big one, never its whole search (issue 15).
    A lone request of at most ``inline_rows`` rows, with no
    search running, nothing queued and no other request arriving, is searched right there on
    the event loop: it could not share a batch, and the two thread hand-offs of the search
    thread cost it more than its search (about 0.3 ms of a 1.5 ms single-row request on 2
    cores, docs/serving.md). Before that it lets the event loop run once, where ``company``
    (when given) says other requests are in flight: those read in the same turn would
    otherwise each be searched alone, one after another (a batch of 1 at concurrency 32).
    """

    def __init__(self, search: Search, window_s: float = 0.002, max_rows: int = 4096,
                 on_batch: Callable[[int], None] | None = None,
                 inline_rows: int = 1, slice_rows: int = SLICE_ROWS,
                 company: Callable[[], bool] | None = None) -> None:
        self._search = search
        self._window = window_s
        self._max_rows = max_rows
        self._slice = max(1, min(slice_rows, max_rows))
        self._on_batch = on_batch
        self._pending: list[_Job] = []
        self._wake = asyncio.Event()
        self._arriving = 0
        self._searching = False  # a batch is in the search thread
        self._deciding = False  # a lone request is looking for company (``submit``)
        self._company = company
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

    def _alone(self, rows: int) -> bool:
        return (rows <= self._inline_rows and not self._searching and not self._pending
                and self._arriving == 0 and not self._deciding)

    async def submit(self, features: np.ndarray, nprobe: int | None = None) -> Predictions:
        self._arriving -= 1
        rows = features.shape[0]
        alone = self._alone(rows)
        if alone and (self._company is None or self._company()):
            # Requests read in the same turn of the event loop have their tasks queued
            # behind this one and have not counted themselves yet: let them run up to
            # here (one turn of the loop), so that under concurrency rows still share a
            # search. ``company`` (the server's requests in flight) says when there are
            # none, which spares a lone client that turn (about 4 % of its request).
            self._deciding = True
            try:
                await asyncio.sleep(0)
            finally:
                self._deciding = False
            alone = self._alone(rows)
        if alone:
            if self._on_batch is not None:
                self._on_batch(rows)
            return self._search(features, nprobe)
        future: asyncio.Future[Predictions] = asyncio.get_running_loop().create_future()
        self._pending.append(_Job(features, nprobe, future))
        self._wake.set()
        return await future

    def _rows(self) -> int:
        return sum(job.left for job in self._pending)

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

    def _take(self) -> list[_Piece]:
        """One search's rows, of one nprobe: the small jobs (at most a slice each) oldest
        first up to ``max_rows`` rows (at least one), then up to a slice of the big ones (the
        oldest first; a job's rest stays queued). A job alone in the queue, with no other
        request arriving, is taken whole (up to ``max_rows``). Jobs whose client is gone are
        dropped."""
        self._pending = [job for job in self._pending if not job.future.done()]
        if not self._pending:
            return []
        # alone, a big job is searched whole (up to max_rows): slices only pay off when
        # another request waits, or may come before the search ends
        crowded = len(self._pending) > 1 or self._arriving > 0
        limit = self._slice if crowded else self._max_rows
        small = [job for job in self._pending if job.left <= limit]
        nprobe = (small or self._pending)[0].nprobe
        pieces: list[_Piece] = []
        rows = 0
        for job in small:
            if job.nprobe == nprobe and (rows + job.left <= self._max_rows or not pieces):
                pieces.append(_Piece(job, job.taken, job.rows))
                rows += job.left
        budget = min(limit, self._max_rows - rows)
        for job in self._pending:
            if budget <= 0:
                break
            if job.nprobe == nprobe and job.left > limit:
                n = min(budget, job.left)
                pieces.append(_Piece(job, job.taken, job.taken + n))
                budget -= n
        for piece in pieces:
            piece.job.taken = piece.stop
        self._pending = [job for job in self._pending if job.left > 0]
        return pieces

    async def _run(self) -> None:
        """Supervised: an unexpected error fails the requests it touched (the app answers
        them 500) and the loop goes on, so no later request waits forever."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending:
                pieces: list[_Piece] = []
                try:
                    await self._gather()
                    pieces = self._take()
                    await self._answer(pieces)
                except Exception as exc:
                    self._fail(pieces, exc)

    def _fail(self, pieces: list[_Piece], exc: Exception) -> None:
        """Deliver ``exc`` to the jobs of ``pieces`` (their other slices are dropped), or to
        every pending job when none was taken yet (the queue itself may be what is broken)."""
        jobs = list({id(p.job): p.job for p in pieces}.values())
        if not jobs:
            jobs, self._pending = self._pending, []
        else:
            self._pending = [job for job in self._pending if all(job is not j for j in jobs)]
        live = [job for job in jobs if not job.future.done()]
        for job in live:
            job.future.set_exception(exc)
        if not live:
            log.error("Micro-batcher error with no request left to answer: %r", exc)

    async def _answer(self, pieces: list[_Piece]) -> None:
        """One search for the live ``pieces``; a job gets its answers once all its slices
        are answered (an error, the search's own included, goes to ``_fail``)."""
        live = [p for p in pieces if not p.job.future.cancelled()]
        if not live:
            return
        parts = [p.job.features[p.start:p.stop] if p.start or p.stop < p.job.rows
                 else p.job.features for p in live]
        features = parts[0] if len(parts) == 1 else np.concatenate(parts)
        if self._on_batch is not None:
            self._on_batch(features.shape[0])
        loop = asyncio.get_running_loop()
        self._searching = True
        try:
            result = await loop.run_in_executor(self._executor, self._search, features,
                                                live[0].job.nprobe)
        finally:
            self._searching = False
        for piece, part in zip(live, split(result, [p.stop - p.start for p in live])):
            job = piece.job
            job.parts.append(part)
            if piece.stop == job.rows and not job.future.done():
                job.future.set_result(joined(job.parts))
