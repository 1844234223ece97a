"""The endpoint's body reader: a body that stops half-way is a 408 after the body timeout,
and the timeout leaves the request's task as it found it (no stray cancellation)."""

from __future__ import annotations

import asyncio
import time

import pytest
from starlette.requests import ClientDisconnect, Request

from openknn.errors import ClientError, PayloadTooLarge
from openknn.serving.app import BodyDeadlines, read_body, receive_body


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


def test_one_sweep_keeps_every_deadline_and_stops_when_no_body_is_read() -> None:
    """Issue 15: one timer for all bodies (BodyDeadlines). Of three reads at once, the two
    that stall are cut off at their own deadlines (within the sweep's period), the one that
    ends is left alone, and once nothing is being read no timer is left running; a second
    event loop (a test's, a restarted server's) gets its deadlines kept too."""
    deadlines = BodyDeadlines.for_timeout(0.1)
    assert deadlines.every_s == pytest.approx(0.025)

    async def timed(chunks: list[bytes], stall: bool, timeout_s: float,
                    ) -> tuple[bytes | int, float]:
        t0 = time.perf_counter()
        try:
            body: bytes | int = await receive_body(request(chunks, stall).receive, None, 6.0,
                                                   timeout_s, deadlines)
        except ClientError as exc:
            body = exc.status
        return body, time.perf_counter() - t0

    async def main() -> list[tuple[bytes | int, float]]:
        results = await asyncio.gather(timed([b"1,"], True, 0.1), timed([b"1,", b"2"], False, 0.1),
                                       timed([b"3,"], True, 0.3))
        await asyncio.sleep(2 * deadlines.every_s)
        assert deadlines._timer is None and not deadlines._due  # no sweep when idle
        return results

    for _ in range(2):  # two event loops, one after the other
        (short, t_short), (whole, _), (long, t_long) = asyncio.run(main())
        assert (short, whole, long) == (408, b"1,2", 408)
        assert 0.1 <= t_short < 0.1 + 0.025 + 0.2
        assert 0.3 <= t_long < 0.3 + 0.025 + 0.2


def test_a_sweep_left_armed_by_a_closed_loop_does_not_stop_the_next_loops_deadlines() -> None:
    deadlines = BodyDeadlines.for_timeout(0.1)

    async def read(stall: bool) -> bytes | int:
        try:
            return await receive_body(request([b"1,"], stall).receive, None, 6.0, 0.1,
                                      deadlines)
        except ClientError as exc:
            return exc.status

    assert asyncio.run(read(False)) == b"1,"  # the loop closes with its sweep still armed
    assert deadlines._timer is not None
    assert asyncio.run(asyncio.wait_for(read(True), 2)) == 408


def test_a_body_the_server_holds_whole_is_read_without_a_deadline() -> None:
    """``complete`` (the protocol's BODY_COMPLETE): one receive, no deadline kept. Should the
    first message say more is coming after all, the rest is read under the deadline, and a
    client gone or an oversize body still answer as without it."""
    deadlines = BodyDeadlines.for_timeout(0.1)

    def whole(body: bytes) -> object:
        async def receive() -> dict[str, object]:
            assert not deadlines._due  # no deadline while the body is received
            return {"type": "http.request", "body": body, "more_body": False}
        return receive

    async def main() -> None:
        assert await receive_body(whole(b"1,2"), None, 6.0, 0.1, deadlines, True) == b"1,2"
        assert deadlines._timer is None
        more = request([b"1,"], stall=True).receive  # more_body, then a stall
        with pytest.raises(ClientError) as caught:
            await receive_body(more, None, 6.0, 0.1, deadlines, True)
        assert caught.value.status == 408
        with pytest.raises(PayloadTooLarge):
            await receive_body(whole(b"x" * 2048), None, 0.001, 0.1, deadlines, True)

        async def gone() -> dict[str, object]:
            return {"type": "http.disconnect"}
        with pytest.raises(ClientDisconnect):
            await receive_body(gone, None, 6.0, 0.1, deadlines, True)

    asyncio.run(main())
