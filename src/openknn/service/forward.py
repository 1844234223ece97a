"""Keep-alive HTTP/1.1 to an endpoint's worker, on asyncio streams: the one request the
runtime forwards (``POST /invocations`` with a body) and its answer.

Written here rather than taken from httpx, which the rest of openknn uses, because this is
the hot path of every InvokeEndpoint and the issue gives the service 0.3 ms per request over
calling the worker directly: httpx's async client alone spent about 1 ms per request here
(benchmarks/service_invoke.py). The peer is always openknn's own worker (uvicorn on
127.0.0.1), so the subset is small: a request with Content-Length, an answer with
Content-Length or chunked encoding, connections kept alive and reused."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Iterable
from dataclasses import dataclass, field
from typing import TypeVar

T = TypeVar("T")

IDLE_LIMIT = 64  # kept-alive connections per worker


class UpstreamError(Exception):
    """The worker could not be reached, or closed or broke the connection mid-answer."""


class _Stale(Exception):
    """A connection closed before any of the answer arrived: the request may go again."""


@dataclass
class Answer:
    status: int
    headers: dict[bytes, bytes]
    body: bytes


@dataclass
class Upstream:
    """The connections to one worker at ``host:port``."""

    host: str
    port: int
    idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = field(default_factory=list)

    async def post(self, path: str, body: bytes, headers: Iterable[tuple[bytes, bytes]],
                   timeout: float) -> Answer:
        """POST ``body`` to ``path``. A kept-alive connection the worker closed meanwhile
        (its keep-alive timeout) is dropped and the request sent on the next, or on a new
        one: nothing was answered on it."""
        head = _request_head(path, self.host, self.port, len(body), headers)
        while self.idle:
            reader, writer = self.idle.pop()
            try:
                return await _within(timeout, self._exchange(reader, writer, head, body), writer)
            except _Stale:
                writer.close()
            except BaseException:
                writer.close()
                raise
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(self.host, self.port), min(timeout, 5.0))
        except (OSError, asyncio.TimeoutError) as exc:
            raise UpstreamError(f"cannot connect to the worker: {exc}") from None
        try:
            return await _within(timeout, self._exchange(reader, writer, head, body), writer)
        except _Stale as exc:
            writer.close()
            raise UpstreamError(f"the worker closed the connection: {exc}") from None
        except BaseException:
            writer.close()
            raise

    async def _exchange(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                        head: bytes, body: bytes) -> Answer:
        try:
            writer.write(head + body)
            await writer.drain()
            raw = await reader.readuntil(b"\r\n\r\n")
        except (ConnectionError, asyncio.IncompleteReadError) as exc:
            if isinstance(exc, asyncio.IncompleteReadError) and exc.partial:
                raise UpstreamError(f"the worker broke off its answer: {exc}") from None
            raise _Stale(str(exc) or type(exc).__name__) from None
        except asyncio.LimitOverrunError:
            raise UpstreamError("the worker's answer head is too long") from None
        status, headers = _parse_head(raw)
        try:
            if headers.get(b"transfer-encoding", b"").lower() == b"chunked":
                content = await _read_chunked(reader)
            else:
                content = await reader.readexactly(int(headers.get(b"content-length", b"0")))
        except (ConnectionError, asyncio.IncompleteReadError) as exc:
            raise UpstreamError(f"the worker broke off its answer: {exc}") from None
        if headers.get(b"connection", b"").lower() == b"close" or len(self.idle) >= IDLE_LIMIT:
            writer.close()
        else:
            self.idle.append((reader, writer))
        return Answer(status, headers, content)

    def close(self) -> None:
        for _, writer in self.idle:
            writer.close()
        self.idle.clear()


async def _within(seconds: float, step: Awaitable[T],
                  writer: asyncio.StreamWriter) -> T:
    """``step`` on ``writer``'s connection, which is aborted after ``seconds`` (an
    UpstreamError). A timer that aborts the transport, not ``asyncio.timeout`` or
    ``wait_for``: this is the hot path, and those cost it tens of microseconds a request."""
    timer = asyncio.get_running_loop().call_later(seconds, writer.transport.abort)
    try:
        return await step
    except (ConnectionError, asyncio.IncompleteReadError, UpstreamError, _Stale) as exc:
        if timer.cancelled() or timer.when() > asyncio.get_running_loop().time():
            raise
        raise UpstreamError(f"the worker did not answer within {seconds:g} s") from exc
    finally:
        timer.cancel()


def _request_head(path: str, host: str, port: int, length: int,
                  headers: Iterable[tuple[bytes, bytes]]) -> bytes:
    lines = [f"POST {path} HTTP/1.1\r\nhost: {host}:{port}\r\ncontent-length: {length}\r\n"
             .encode()]
    lines += [name + b": " + value + b"\r\n" for name, value in headers]
    return b"".join(lines) + b"\r\n"


def _parse_head(raw: bytes) -> tuple[int, dict[bytes, bytes]]:
    lines = raw[:-4].split(b"\r\n")
    parts = lines[0].split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
        raise UpstreamError(f"not an HTTP answer: {lines[0][:80]!r}")
    headers: dict[bytes, bytes] = {}
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip()
    return int(parts[1]), headers


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    parts: list[bytes] = []
    while True:
        size_line = await reader.readuntil(b"\r\n")
        size = int(size_line.split(b";")[0].strip() or b"0", 16)
        if size == 0:
            await reader.readuntil(b"\r\n")  # no trailers from uvicorn: the last CRLF
            return b"".join(parts)
        parts.append(await reader.readexactly(size))
        await reader.readexactly(2)
