"""Micro-batching: concurrent rows share one search, a lone request never waits, answers
are split back correctly, and a failed search fails only its own requests."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

from openknn.formats.codec import Predictions
from openknn.serving.batcher import MicroBatcher


class Recorder:
    def __init__(self, delay: float = 0.0, fail: bool = False) -> None:
        self.batches: list[int] = []
        self.delay, self.fail = delay, fail

    def __call__(self, features: np.ndarray, nprobe: int | None) -> Predictions:
        self.batches.append(features.shape[0])
        time.sleep(self.delay)
        if self.fail:
            raise RuntimeError("search failed")
        # answer = the row's first feature, so each request can check it got its own rows
        d = np.repeat(features[:, :1], 2, axis=1)
        return Predictions(features[:, 0].copy(), d, d + 1)


async def request(batcher: MicroBatcher, value: float, rows: int = 1) -> Predictions:
    batcher.arriving()
    await asyncio.sleep(0)  # decode happens here in the app
    return await batcher.submit(np.full((rows, 3), value, np.float32))


def test_concurrent_requests_share_searches() -> None:
    async def main() -> tuple[list[Predictions], Recorder]:
        search = Recorder(delay=0.01)
        batcher = MicroBatcher(search, window_s=0.05, max_rows=1000)
        batcher.start()
        answers = await asyncio.gather(*(request(batcher, float(i), rows=1 + i % 3)
                                         for i in range(40)))
        await batcher.stop()
        return answers, search

    answers, search = asyncio.run(main())
    assert sum(search.batches) == sum(1 + i % 3 for i in range(40))
    assert len(search.batches) < 10  # 40 requests, a handful of searches
    for i, answer in enumerate(answers):
        assert answer.predicted.tolist() == [float(i)] * (1 + i % 3)
        assert answer.labels is not None and answer.labels.shape == (1 + i % 3, 2)


def test_lone_request_does_not_wait_for_the_window() -> None:
    async def main() -> float:
        batcher = MicroBatcher(Recorder(), window_s=0.5)
        batcher.start()
        t0 = time.perf_counter()
        await request(batcher, 1.0)
        elapsed = time.perf_counter() - t0
        await batcher.stop()
        return elapsed

    assert asyncio.run(main()) < 0.25


def test_max_rows_splits_batches() -> None:
    async def main() -> Recorder:
        search = Recorder(delay=0.005)
        batcher = MicroBatcher(search, window_s=0.05, max_rows=10)
        batcher.start()
        await asyncio.gather(*(request(batcher, 1.0, rows=4) for _ in range(10)))
        await batcher.stop()
        return search

    assert max(asyncio.run(main()).batches) <= 10


def test_failed_search_fails_its_requests_only() -> None:
    async def main() -> None:
        failing = Recorder(fail=True)
        batcher = MicroBatcher(failing)
        batcher.start()
        with pytest.raises(RuntimeError, match="search failed"):
            await request(batcher, 1.0)
        failing.fail = False
        assert (await request(batcher, 2.0)).predicted.tolist() == [2.0]
        await batcher.stop()

    asyncio.run(main())


def test_abandoned_request_releases_the_wait() -> None:
    async def main() -> float:
        batcher = MicroBatcher(Recorder(), window_s=1.0)
        batcher.start()
        batcher.arriving()  # a request that will fail to decode
        task = asyncio.ensure_future(request(batcher, 1.0))
        await asyncio.sleep(0.01)
        t0 = time.perf_counter()
        batcher.abandon()
        await task
        await batcher.stop()
        return time.perf_counter() - t0

    assert asyncio.run(main()) < 0.5
