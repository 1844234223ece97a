"""The endpoint's body reader: a body that stops half-way is a 408 after the body timeout,
and the timeout leaves the request's task as it found it (no stray cancellation)."""

from __future__ import annotations

import asyncio
import time

import pytest
from starlette.requests import Request

from openknn.errors import ClientError, PayloadTooLarge
from openknn.serving.app import read_body


def request(chunks: list[bytes], stall: bool) -> Request:
    """A request whose body arrives as ``chunks``, then stops (``stall``) or ends."""
    messages = [{"type": "http.request", "body": c, "more_body": True} for c in chunks]

    async def receive() -> dict[str, object]:
        if messages:
            return messages.pop(0)
        if stall:
            await asyncio.sleep(3600)
        return {"type": "http.request", "body": b"", "more_body": False}

    return Request({"type": "http", "method": "POST", "headers": []}, receive)


def test_a_stalled_body_is_a_408_and_the_task_goes_on() -> None:
    async def main() -> tuple[ClientError, float, int]:
        t0 = time.perf_counter()
        with pytest.raises(ClientError) as caught:
            await read_body(request([b"1,2,"], stall=True), 6.0, timeout_s=0.05)
        elapsed = time.perf_counter() - t0
        await asyncio.sleep(0.01)  # not cancelled: the timeout's cancel was taken back
        task = asyncio.current_task()
        assert task is not None
        return caught.value, elapsed, getattr(task, "cancelling", lambda: 0)()

    error, elapsed, cancelling = asyncio.run(main())
    assert error.status == 408
    assert "did not all arrive within 0.05 s (4 bytes came)" in str(error)
    assert 0.04 < elapsed < 2 and cancelling == 0


def test_a_complete_body_and_an_outside_cancel_are_left_alone() -> None:
    async def main() -> None:
        body = await read_body(request([b"1,", b"2"], stall=False), 6.0, timeout_s=0.05)
        assert body == b"1,2"
        await asyncio.sleep(0.1)  # the timer was cancelled with the read: nothing fires now
        task = asyncio.ensure_future(read_body(request([], stall=True), 6.0, timeout_s=60))
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        with pytest.raises(PayloadTooLarge):
            await read_body(request([b"x" * 2048], stall=False), 0.001, timeout_s=1)

    asyncio.run(main())
