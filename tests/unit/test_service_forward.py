"""The runtime's keep-alive HTTP/1.1 to a worker (service/forward.py), against asyncio servers
on 127.0.0.1 that answer as uvicorn does, or misbehave: connections are reused, a connection
the server closed while idle is replaced without the request failing, chunked answers are
read whole, and an answer broken off, or nothing listening, is an UpstreamError."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from openknn.service.forward import Upstream, UpstreamError

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length"))
    return await reader.readexactly(length)


def run(handler: Handler, client: Callable[[Upstream], Awaitable[None]]) -> None:
    async def main() -> None:
        server = await asyncio.start_server(handler, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            await client(Upstream("127.0.0.1", port))
        finally:
            server.close()

    asyncio.run(main())


def echo(connections: list[int], close_after: int | None = None) -> Handler:
    """Answers each request with its body upper-cased; closes after ``close_after``."""
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(1)
        served = 0
        try:
            while close_after is None or served < close_after:
                body = (await read_request(reader)).upper()
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n"
                             b"content-length: %d\r\n\r\n%s" % (len(body), body))
                await writer.drain()
                served += 1
        except asyncio.IncompleteReadError:
            pass
        writer.close()

    return handle


def test_connections_are_kept_alive_and_reused() -> None:
    connections: list[int] = []

    async def client(upstream: Upstream) -> None:
        for i in range(5):
            answer = await upstream.post("/invocations", b"row %d" % i,
                                         [(b"content-type", b"text/csv")], 5)
            assert (answer.status, answer.body) == (200, b"ROW %d" % i)
            assert answer.headers[b"content-type"] == b"text/plain"

    run(echo(connections), client)
    assert len(connections) == 1


def test_a_connection_closed_while_idle_is_replaced() -> None:
    connections: list[int] = []

    async def client(upstream: Upstream) -> None:
        for i in range(4):  # the server closes each connection after one answer
            answer = await upstream.post("/invocations", b"x%d" % i, [], 5)
            assert answer.body == b"X%d" % i
            await asyncio.sleep(0.05)

    run(echo(connections, close_after=1), client)
    assert len(connections) == 4


def test_a_chunked_answer_is_read_whole() -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 400 Bad Request\r\ntransfer-encoding: chunked\r\n\r\n"
                     b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
        await writer.drain()
        writer.close()

    async def client(upstream: Upstream) -> None:
        answer = await upstream.post("/invocations", b"x", [], 5)
        assert (answer.status, answer.body) == (400, b"hello world")

    run(handle, client)


def test_an_answer_broken_off_is_an_upstream_error() -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nonly part")
        await writer.drain()
        writer.close()

    async def client(upstream: Upstream) -> None:
        with pytest.raises(UpstreamError, match="broke off its answer"):
            await upstream.post("/invocations", b"x", [], 5)

    run(handle, client)


def test_nothing_listening_is_an_upstream_error() -> None:
    async def main() -> None:
        with pytest.raises(UpstreamError, match="cannot connect to the worker"):
            await Upstream("127.0.0.1", 9).post("/invocations", b"x", [], 5)

    asyncio.run(main())


def test_a_worker_that_does_not_answer_times_out() -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        await asyncio.sleep(5)  # never answers in time
        writer.close()

    async def client(upstream: Upstream) -> None:
        started = asyncio.get_running_loop().time()
        with pytest.raises(UpstreamError, match=r"the worker did not answer within 0.2 s"):
            await upstream.post("/invocations", b"x", [], 0.2)
        assert asyncio.get_running_loop().time() - started < 2

    run(handle, client)
