"""Micro-batching: concurrent rows share one search, a lone request never waits, answers
are split back correctly, and a failed search fails only its own requests."""

from __future__ import annotations

import asyncio
import time
from typing import Any

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


def test_window_expiry_starts_the_batch() -> None:
    """A request still being read when the window ends does not hold the batch: the wait times
    out (``asyncio.TimeoutError``, not the builtin one before Python 3.11) and the search runs."""
    async def main() -> tuple[Predictions, float]:
        batcher = MicroBatcher(Recorder(), window_s=0.05)
        batcher.start()
        batcher.arriving()  # a slow request that never submits within the window
        t0 = time.perf_counter()
        answer = await asyncio.wait_for(request(batcher, 3.0), 5)
        elapsed = time.perf_counter() - t0
        await batcher.stop()
        return answer, elapsed

    answer, elapsed = asyncio.run(main())
    assert answer.predicted.tolist() == [3.0]
    assert 0.04 <= elapsed < 2


def test_unexpected_error_in_the_loop_fails_its_requests_and_the_loop_goes_on() -> None:
    calls: list[int] = []

    def on_batch(rows: int) -> None:  # e.g. a metrics hook that breaks once
        calls.append(rows)
        if len(calls) == 1:
            raise ValueError("metrics broke")

    async def main() -> None:
        batcher = MicroBatcher(Recorder(), on_batch=on_batch)
        batcher.start()
        with pytest.raises(ValueError, match="metrics broke"):
            await asyncio.wait_for(request(batcher, 1.0), 5)  # bounded: today it hangs
        assert (await asyncio.wait_for(request(batcher, 2.0), 5)).predicted.tolist() == [2.0]
        await batcher.stop()

    asyncio.run(main())


def test_a_broken_queue_fails_every_pending_request_then_recovers(
        monkeypatch: pytest.MonkeyPatch) -> None:
    async def main() -> None:
        batcher = MicroBatcher(Recorder(), window_s=0.05)
        real_take = batcher._take
        broken = [True]

        def take() -> list:  # type: ignore[type-arg]
            if broken[0]:
                broken[0] = False
                raise IndexError("queue broke")
            return real_take()

        monkeypatch.setattr(batcher, "_take", take)
        batcher.start()
        failed = await asyncio.wait_for(asyncio.gather(
            request(batcher, 1.0), request(batcher, 2.0), return_exceptions=True), 5)
        assert [type(f) for f in failed] == [IndexError, IndexError]
        assert (await asyncio.wait_for(request(batcher, 3.0), 5)).predicted.tolist() == [3.0]
        await batcher.stop()

    asyncio.run(main())


def test_the_app_answers_500_and_keeps_serving_after_a_loop_error(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Through the endpoint: the request caught by the error gets a 500 with the error shape,
    the next one its prediction."""
    import httpx

    from openknn.core import index as fi
    from openknn.core.model import KnnModel, ModelMeta
    from openknn.serving import batcher as batcher_module
    from openknn.serving.app import create_app

    x = np.random.default_rng(0).standard_normal((20, 3)).astype(np.float32)
    meta = ModelMeta(k=1, predictor_type="regressor", feature_dim=3, index_dim=3,
                     index_type="faiss.Flat", num_points=20)
    model = KnnModel(meta, fi.build(x, 1, fi.IndexConfig(index_type="faiss.Flat")),
                     np.arange(20, dtype=np.float32))
    real_split = batcher_module.split
    broken = [True]

    def split(predictions: Predictions, sizes: list[int]) -> list[Predictions]:
        if broken[0]:
            broken[0] = False
            raise RuntimeError("split broke")
        return real_split(predictions, sizes)

    monkeypatch.setattr(batcher_module, "split", split)
    # two rows: more than a lone request searched on the event loop, so the batcher's loop
    # takes them
    body = ("\n".join(",".join(str(v) for v in x[5]) for _ in range(2)) + "\n").encode()

    async def main() -> list[httpx.Response]:
        app = create_app(model)
        async with app.router.lifespan_context(app), httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://endpoint") as client:
            return [await asyncio.wait_for(client.post(  # bounded: today the first hangs
                "/invocations", content=body, headers={"Content-Type": "text/csv"}), 5)
                for _ in range(2)]

    first, second = asyncio.run(main())
    assert first.status_code == 500 and first.json()["error"]["code"] == 500
    assert second.status_code == 200
    assert second.json()["predictions"][0]["predicted_label"] == 5.0


def test_a_lone_single_row_is_searched_on_the_loop_and_concurrent_ones_are_batched() -> None:
    """A lone one-row request never reaches the search thread; rows arriving together still
    go to faiss as one search."""
    import threading

    threads: list[str] = []
    batches: list[int] = []

    def search(features: np.ndarray, nprobe: int | None) -> Predictions:
        threads.append(threading.current_thread().name)
        return Predictions(features[:, 0].copy(), None, None)

    async def main() -> tuple[Predictions, list[Predictions]]:
        batcher = MicroBatcher(search, window_s=0.05, on_batch=batches.append)
        batcher.start()
        try:
            batcher.arriving()
            lone = await batcher.submit(np.ones((1, 2), np.float32))

            async def one(value: float) -> Predictions:
                await asyncio.sleep(0)
                return await batcher.submit(np.full((1, 2), value, np.float32))

            for _ in range(4):
                batcher.arriving()
            together = await asyncio.gather(*(one(v) for v in range(4)))
        finally:
            await batcher.stop()
        return lone, together

    lone, together = asyncio.run(main())
    assert lone.predicted.tolist() == [1.0]
    assert [p.predicted.tolist() for p in together] == [[0.0], [1.0], [2.0], [3.0]]
    assert threads[0] == "MainThread" and threads[1].startswith("openknn-search")
    assert batches == [1, 4]


def test_a_client_still_sending_is_not_waited_for() -> None:
    """Issue 15, part 3: a request counts as arriving (the batch waits for it, up to the
    window) only once its body is in; an upload that stalls half-way holds no batch back, and
    a one-row request beside it is answered at once."""
    import httpx

    from openknn.core import index as fi
    from openknn.core.model import KnnModel, ModelMeta
    from openknn.serving.app import create_app

    x = np.random.default_rng(1).standard_normal((20, 3)).astype(np.float32)
    meta = ModelMeta(k=1, predictor_type="regressor", feature_dim=3, index_dim=3,
                     index_type="faiss.Flat", num_points=20)
    model = KnnModel(meta, fi.build(x, 1, fi.IndexConfig(index_type="faiss.Flat")),
                     np.arange(20, dtype=np.float32))
    row = ",".join(str(v) for v in x[7]).encode()
    csv = {"Content-Type": "text/csv"}

    async def main() -> tuple[int, list[float], int, int]:
        app = create_app(model)
        gate = asyncio.Event()

        async def stalled() -> Any:
            yield row[:3]  # part of a row, then nothing until the gate opens
            await gate.wait()
            yield row[3:]

        async with app.router.lifespan_context(app), httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://endpoint") as client:
            slow = [asyncio.create_task(client.post("/invocations", content=stalled(),
                                                    headers=csv)) for _ in range(3)]
            await asyncio.sleep(0.2)
            arriving = app.state.endpoint.batcher._arriving
            quick = await asyncio.wait_for(client.post("/invocations", content=row,
                                                       headers=csv), 5)
            gate.set()
            answers = await asyncio.gather(*slow)
        labels = quick.json()["predictions"][0]["predicted_label"]
        return arriving, [labels], quick.status_code, sum(a.status_code for a in answers)

    arriving, labels, status, slow_statuses = asyncio.run(main())
    assert arriving == 0 and status == 200 and labels == [7.0]
    assert slow_statuses == 3 * 200


def test_a_big_request_is_searched_in_slices_and_a_small_one_goes_first() -> None:
    """Issue 15, part 3: while other requests wait, a big request's rows go to faiss a slice
    at a time, so a one-row request that arrives during its search waits for one slice, not
    the whole request; each request still gets its own rows' answers, in order. The last big
    request, alone, is searched whole."""
    done: list[str] = []

    async def main() -> tuple[list[Predictions], Predictions, Recorder]:
        search = Recorder(delay=0.02)
        batcher = MicroBatcher(search, window_s=0.001, max_rows=1000, slice_rows=10)
        batcher.start()

        async def big(name: str, first: float) -> Predictions:
            rows = (first + np.arange(50, dtype=np.float32))[:, None] * np.ones((1, 3))
            answer = await batcher.submit(rows.astype(np.float32))
            done.append(name)
            return answer

        async def small() -> Predictions:
            await asyncio.sleep(0.005)  # while the first big request's first slice is searched
            answer = await request(batcher, -1.0)
            done.append("small")
            return answer

        batcher.arriving()
        batcher.arriving()
        *bigs, small_answer = await asyncio.gather(big("big 1", 0), big("big 2", 100), small())
        await batcher.stop()
        return bigs, small_answer, search

    bigs, small_answer, search = asyncio.run(main())
    # the small row rode with a slice; big 1's last slice went with big 2's first
    assert search.batches == [10, 11, 10, 10, 20, 40]
    assert done == ["small", "big 1", "big 2"]
    assert small_answer.predicted.tolist() == [-1.0]
    for answer, first in zip(bigs, (0, 100)):
        assert answer.predicted.tolist() == [first + i for i in range(50)]
        assert answer.labels is not None and answer.labels.shape == (50, 2)
        assert answer.labels[:, 0].tolist() == [first + i + 1.0 for i in range(50)]


def test_a_big_request_alone_is_searched_whole() -> None:
    async def main() -> Recorder:
        search = Recorder()
        batcher = MicroBatcher(search, window_s=0.001, max_rows=1000, slice_rows=10)
        batcher.start()
        await request(batcher, 1.0, rows=50)
        await batcher.stop()
        return search

    assert asyncio.run(main()).batches == [50]


def test_a_failed_slice_fails_its_request_and_drops_the_rest() -> None:
    async def main() -> tuple[Recorder, Predictions]:
        search = Recorder(fail=True)
        batcher = MicroBatcher(search, window_s=0.001, slice_rows=4)
        batcher.start()
        batcher.arriving()
        batcher.arriving()
        outcomes = await asyncio.gather(batcher.submit(np.ones((10, 3), np.float32)),
                                        batcher.submit(np.ones((1, 3), np.float32)),
                                        return_exceptions=True)
        assert all(isinstance(o, RuntimeError) for o in outcomes)
        search.fail = False
        after = await request(batcher, 5.0)
        await batcher.stop()
        return search, after

    search, after = asyncio.run(main())
    assert search.batches == [5, 1]  # the big request's other slices were never searched
    assert after.predicted.tolist() == [5.0]


def test_single_rows_read_in_one_turn_of_the_loop_share_a_search() -> None:
    """Requests whose bodies came in together run one after another on the event loop: the
    first, alone so far, lets the loop run once before searching, so the others join it."""
    search = Recorder()

    async def main() -> list[Predictions]:
        batcher = MicroBatcher(search, window_s=0.05)
        batcher.start()

        async def one(value: float) -> Predictions:
            batcher.arriving()
            return await batcher.submit(np.full((1, 3), value, np.float32))

        answers = await asyncio.gather(*(one(float(v)) for v in range(5)))
        await batcher.stop()
        return answers

    answers = asyncio.run(main())
    assert search.batches == [5]
    assert [a.predicted.tolist() for a in answers] == [[0.0], [1.0], [2.0], [3.0], [4.0]]


@pytest.mark.parametrize("company", [False, True])
def test_a_lone_client_is_not_kept_waiting_for_company(company: bool) -> None:
    """With ``company`` saying no other request is in flight, a lone row is searched at once,
    before the loop runs anything else; when it says there are others, after one turn."""
    ran: list[str] = []

    def search(features: np.ndarray, nprobe: int | None) -> Predictions:
        ran.append("search")
        return Predictions(features[:, 0].copy(), None, None)

    async def main() -> None:
        batcher = MicroBatcher(search, company=lambda: company)
        batcher.start()

        async def other() -> None:
            ran.append("other task")

        task = asyncio.ensure_future(other())  # ready to run, not yet run
        batcher.arriving()
        await batcher.submit(np.ones((1, 3), np.float32))
        await task
        await batcher.stop()

    asyncio.run(main())
    assert ran == (["other task", "search"] if company else ["search", "other task"])
