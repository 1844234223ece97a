"""Connection limits and timeouts for uvicorn's httptools protocol: a cap on open connections
(under the file-descriptor limit; an idle connection is closed to make room for a new one), a
bound on the request head's size and a deadline for it, and no reuse of a connection whose
response went out before its request body was read. It also marks a request whose whole
body is in (``BODY_COMPLETE``), which the app then reads without a deadline."""

from __future__ import annotations

import asyncio
import logging
import resource
from dataclasses import dataclass
from typing import Any, ClassVar

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from ..settings import ServingSettings

log = logging.getLogger(__name__)

RESERVED_FDS = 64  # for the model files, logs, the event loop and threads; measured use: 16
HEAD_END = b"\r\n\r\n"
# A scope key this protocol sets once a request's whole body is in its buffer (before the
# app runs, for a request that came in one read): receiving it then cannot wait.
BODY_COMPLETE = "openknn.body_complete"
WARN_EVERY_S = 10.0  # the log line for refused connections, at most this often


class InFlight:
    """How many requests have their head in and their response not yet sent, over all of a
    server's connections. The micro-batcher asks it whether a lone request may have company:
    requests read in the same turn of the event loop are counted here before their handlers
    run, so a lone request waits one turn for them only when there are any."""

    def __init__(self) -> None:
        self.count = 0

    def others(self) -> bool:
        """Whether a request besides the asking one is in flight."""
        return self.count > 1


@dataclass(frozen=True)
class Limits:
    """``max_connections`` open at once, a request head of at most ``max_header_bytes``
    that must be complete ``header_timeout_s`` after the connection (or its next request)
    starts."""

    max_connections: int
    max_header_bytes: int
    header_timeout_s: float


def connection_cap(requested: int, nofile: int | None = None) -> int:
    """``requested``, lowered to stay under the soft RLIMIT_NOFILE (``ulimit -n``) with
    room for the server's own files, so a flood of connections never runs it out of fds."""
    if nofile is None:
        nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if nofile == resource.RLIM_INFINITY or nofile <= 0:
        return requested
    return max(1, min(requested, nofile - min(RESERVED_FDS, nofile // 2)))


def uvicorn_options(settings: ServingSettings, in_flight: InFlight | None = None,
                    ) -> dict[str, Any]:
    """``uvicorn.Config`` keywords for ``settings``' limits (uvicorn's own where it has one),
    counting the requests in flight in ``in_flight`` when given."""
    cap = connection_cap(settings.max_connections)
    if cap < settings.max_connections:
        log.info("At most %d connections (ulimit -n is %d)", cap,
                 resource.getrlimit(resource.RLIMIT_NOFILE)[0])
    header_bytes = settings.max_header_kb * 1024
    limits = Limits(cap, header_bytes, settings.header_timeout_s)
    return {"http": protocol_class(limits, in_flight or InFlight()),
            "timeout_keep_alive": settings.keep_alive_s,
            "h11_max_incomplete_event_size": header_bytes}


def protocol_class(limits: Limits, in_flight: InFlight | None = None,
                   ) -> type[LimitedHttpToolsProtocol]:
    """The protocol class to give ``uvicorn.Config(http=...)``."""
    return type("LimitedHttpToolsProtocol", (LimitedHttpToolsProtocol,),
                {"limits": limits, "in_flight": in_flight or InFlight()})


def _reply(status: int, reason: str, message: str) -> bytes:
    body = message.encode()
    return (f"HTTP/1.1 {status} {reason}\r\ncontent-type: text/plain; charset=utf-8\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n\r\n").encode() + body


TOO_MANY = _reply(503, "Service Unavailable", "Too many connections; retry shortly")
HEAD_TOO_LARGE = _reply(431, "Request Header Fields Too Large",
                        "The request head is over the header size limit")
HEAD_TIMEOUT = _reply(408, "Request Timeout", "The request head did not arrive in time")


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the limits it lacks: it holds a connection that sends
    nothing (or half a head) forever and reads a head of any size."""

    limits: ClassVar[Limits]
    in_flight: ClassVar[InFlight]
    _warned_at: ClassVar[float] = float("-inf")

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._idle_since = self.loop.time()  # no request in flight since then
        self._busy = False
        self._in_head = True  # the next bytes belong to a request head
        self._head_bytes = 0
        self._head_tail = b""  # the last 3 bytes, in case the blank line spans two reads
        self._head_timer: asyncio.TimerHandle | None = None
        self._arm_head_timer()
        self._make_room()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        self._set_busy(False)
        super().connection_lost(exc)

    # The four callbacks below run for every request, each one Python frame over uvicorn's:
    # with helpers of their own they cost the floor app of benchmarks/serving_floor.py about
    # 10 us of its 0.17 ms of server CPU per single-row request on 2 cores (issue 15).

    def data_received(self, data: bytes) -> None:
        if self._in_head:  # most requests: a whole head in one read, well under the limit
            end = -1 if self._head_tail else data.find(HEAD_END)
            if end < 0 or self._head_bytes + end + len(HEAD_END) > self.limits.max_header_bytes:
                if not self._count_head(data):
                    self._refuse(HEAD_TOO_LARGE)
                    return
        super().data_received(data)  # also stops uvicorn's keep-alive timer
        if not self._busy:  # a head begun, or bytes that are no request yet: a deadline
            self._arm_head_timer()  # (a whole request in one read costs no timer)

    def on_headers_complete(self) -> None:
        self._in_head, self._head_bytes, self._head_tail = False, 0, b""
        if not self._busy:
            self.in_flight.count += 1
            self._busy = True
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._in_head = True
        # the whole body is in uvicorn's buffer: the app reads it with no deadline
        self.scope[BODY_COMPLETE] = True  # type: ignore[literal-required]

    def on_response_complete(self) -> None:
        cycle = self.cycle
        if not self.pipeline and cycle is not None and cycle.more_body:
            # answered before its body was read (413, a body timeout): the rest of the body
            # would stall or be misread, so the connection ends here
            self.transport.close()
        super().on_response_complete()
        self._set_busy(self.cycle is not None and not self.cycle.response_complete)
        self._idle_since = self.loop.time()

    def _set_busy(self, busy: bool) -> None:
        """A request in flight on this connection or not, counted in ``in_flight``."""
        if busy != self._busy:
            self.in_flight.count += 1 if busy else -1
            self._busy = busy

    # -- the head: its size and its deadline

    def _count_head(self, data: bytes) -> bool:
        """Add the head's part of ``data``; False once the head is over the limit."""
        window = self._head_tail + data if self._head_tail else data
        end = window.find(HEAD_END)
        used = len(data) if end < 0 else max(0, end + len(HEAD_END) - len(self._head_tail))
        self._head_bytes += used
        self._head_tail = window[-3:] if end < 0 else b""
        return self._head_bytes <= self.limits.max_header_bytes

    def _arm_head_timer(self) -> None:
        if self._head_timer is None:
            self._head_timer = self.loop.call_later(self.limits.header_timeout_s,
                                                    self._head_expired)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_expired(self) -> None:
        self._head_timer = None
        if self._busy or self.transport.is_closing():
            return
        if self._head_bytes:  # a head was started: say why it ends
            self._refuse(HEAD_TIMEOUT)
        else:
            self.transport.close()

    # -- the connection cap

    def _make_room(self) -> None:
        """Over the cap, close the connection idle the longest (a slow or silent client, or a
        kept-alive one), or this new one when every other has a request in flight."""
        cap = self.limits.max_connections
        if len(self.connections) <= cap:
            return
        open_ = [c for c in self.connections if not c.transport.is_closing()]
        if len(open_) <= cap:
            return
        idle = [c for c in open_ if isinstance(c, LimitedHttpToolsProtocol) and c is not self
                and not c._busy]
        if idle:
            min(idle, key=lambda c: c._idle_since).transport.close()
            return
        now = self.loop.time()
        if now - LimitedHttpToolsProtocol._warned_at >= WARN_EVERY_S:  # not once per refusal
            LimitedHttpToolsProtocol._warned_at = now
            log.warning("%d connections, each with a request in flight: refusing new ones "
                        "with 503 (--max-connections)", cap)
        self._refuse(TOO_MANY)

    def _refuse(self, reply: bytes) -> None:
        self._cancel_head_timer()
        if not self.transport.is_closing():
            self.transport.write(reply)
            self.transport.close()
