"""`openknn serve`'s connection limits and timeouts, over raw loopback sockets: idle and
half-open connections cannot starve real ones (also under ``ulimit -n 256``), a head or a body
that stops is cut off by its timeout, an over-limit head is refused, keep-alive still works.

These live in uvicorn's protocol (``openknn.serving.connections``), so they need a process.
Its three configurations (``SERVERS``) start together when the module starts, and each test
waits only for the one it uses; their timeouts are short, each with at least 0.5 s more than
what a test must do before it expires."""

from __future__ import annotations

import os
import resource
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from openknn.core import index as fi
from openknn.core.model import KnnModel, ModelMeta
from openknn.jobs import artifact

from .test_serving_http import Launched, free_ports, stop_all

# The shared server's (under ulimit -n 256, so its cap is 192 connections). A head's 0.75 s
# leave 0.55 s beyond what must happen before one expires: the 0.2 s pause inside the head of
# test_a_small_head_split_..., and the 0.2 s (measured) in which the ulimit test opens 300
# connections and pings 5 times. A body's 0.5 s is all for a body sent at once.
HEAD_TIMEOUT_S, BODY_TIMEOUT_S, NOFILE = 0.75, 0.5, 256
# the connection caps' servers': the requests a test holds in flight must still be when it
# has opened its other connections and pinged, at most 0.45 s after they start
CAP_BODY_TIMEOUT_S = 1.0
PING = b"GET /ping HTTP/1.1\r\nHost: openknn\r\n\r\n"
SERVERS: dict[str, tuple[dict[str, str], int | None]] = {  # name: (environment, ulimit -n)
    "shared": ({"OPENKNN_HEADER_TIMEOUT_S": str(HEAD_TIMEOUT_S),
                "OPENKNN_BODY_TIMEOUT_S": str(BODY_TIMEOUT_S)}, NOFILE),
    "cap_5": ({"OPENKNN_MAX_CONNECTIONS": "5",
               "OPENKNN_BODY_TIMEOUT_S": str(CAP_BODY_TIMEOUT_S)}, None),
    "cap_3": ({"OPENKNN_MAX_CONNECTIONS": "3",
               "OPENKNN_BODY_TIMEOUT_S": str(CAP_BODY_TIMEOUT_S)}, None),
}


@pytest.fixture(scope="module")
def model_tar(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rng = np.random.default_rng(3)
    x = rng.standard_normal((50, 4)).astype(np.float32)
    meta = ModelMeta(k=3, predictor_type="classifier", feature_dim=4, index_dim=4,
                     index_type="faiss.Flat", num_points=50)
    model = KnnModel(meta, fi.build(x, 3, fi.IndexConfig(index_type="faiss.Flat")),
                     rng.integers(0, 2, 50).astype(np.float32))
    path = tmp_path_factory.mktemp("limits") / "model.tar.gz"
    artifact.write_model_tar(model, path)
    return path


def launch(model: Path, port: int, env: dict[str, str], nofile: int | None = None,
           ) -> Launched:
    """``openknn serve`` with limits from the environment (which versions without them
    ignore, so the same test shows the defect there), optionally under ``ulimit -n``;
    started, not yet waited for."""
    log = Path(tempfile.mkdtemp(prefix="openknn-limits-")) / "serve.log"

    def limit_fds() -> None:
        if nofile is not None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

    with open(log, "wb") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-m", "openknn", "serve", str(model), "--port", str(port),
             "--threads", "1"], stdout=sink, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, env={**os.environ, **env}, preexec_fn=limit_fds)
    return Launched(proc, port, log)


@pytest.fixture(scope="module")
def servers(model_tar: Path) -> Iterator[dict[str, Launched]]:
    """Every server of ``SERVERS``, all started at once (their imports and model loads
    overlap); each test waits for the one it uses (``.ready()``); stopped with the module."""
    started: dict[str, Launched] = {}
    try:
        for (name, (env, nofile)), port in zip(SERVERS.items(), free_ports(len(SERVERS))):
            started[name] = launch(model_tar, port, env, nofile)
        yield started
    finally:
        stop_all(server.proc for server in started.values())


@pytest.fixture
def port(servers: dict[str, Launched]) -> int:
    """The shared server's port (``HEAD_TIMEOUT_S``, ``BODY_TIMEOUT_S``, ``NOFILE``)."""
    return servers["shared"].ready().port


@pytest.fixture
def sockets() -> Iterator[list[socket.socket]]:
    """Every client socket a test opens, closed after it."""
    opened: list[socket.socket] = []
    yield opened
    for s in opened:
        s.close()


def connect(port: int, opened: list[socket.socket], timeout: float = 5.0) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    opened.append(s)
    return s


def response(s: socket.socket, timeout: float = 5.0) -> bytes:
    """What the server sends until it closes the connection (then ``<closed>`` or
    ``<reset>`` is appended) or ``timeout`` passes."""
    s.settimeout(timeout)
    data = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            chunk = s.recv(65536)
        except TimeoutError:
            break
        except ConnectionResetError:
            return data + b"<reset>"
        if not chunk:
            return data + b"<closed>"
        data += chunk
    return data


def status(s: socket.socket, timeout: float = 5.0) -> int:
    """The status code of the next response (reads only its first line)."""
    s.settimeout(timeout)
    data = b""
    while b"\r\n" not in data:
        chunk = s.recv(4096)
        if not chunk:
            raise ConnectionError(f"closed after {data!r}")
        data += chunk
    return int(data.split(b" ", 2)[1])


def timed_ping(port: int, opened: list[socket.socket]) -> tuple[int, float]:
    """A new connection's /ping: (status, seconds from connect to the status line)."""
    t0 = time.perf_counter()
    s = connect(port, opened, timeout=3)
    s.sendall(PING)
    return status(s, timeout=3), time.perf_counter() - t0


def closed_by_server(s: socket.socket, timeout: float) -> bool:
    return response(s, timeout).endswith((b"<closed>", b"<reset>"))


def closed_within(opened: list[socket.socket], timeout: float) -> int:
    """How many of ``opened`` the server closes within ``timeout`` seconds from now (one
    deadline for all: those still open wait it out together, not one after another)."""
    deadline = time.monotonic() + timeout
    return sum(closed_by_server(s, max(0.01, deadline - time.monotonic())) for s in opened)


def test_the_connection_cap_stays_under_the_fd_limit() -> None:
    from openknn.serving import connections

    assert connections.connection_cap(512, nofile=256) == 192
    assert connections.connection_cap(512, nofile=20_000) == 512
    assert connections.connection_cap(512, nofile=40) == 20
    assert connections.connection_cap(512, nofile=1) == 1


def test_ping_answers_quickly_beside_300_idle_connections_under_ulimit_256(
        port: int, sockets: list[socket.socket]) -> None:
    """The defect: 239 idle connections under ``ulimit -n 256`` made every new request fail.
    Now the cap (192 there) closes the longest-idle one to make room."""
    if resource.getrlimit(resource.RLIMIT_NOFILE)[0] < 400:
        pytest.skip("the test process itself needs 400 file descriptors")
    idle = [connect(port, sockets) for _ in range(250)]
    idle += [connect(port, sockets) for _ in range(50)]
    for s in idle[250:]:
        s.sendall(b"GET /ping HTTP/1.1\r\nHost: slow")  # half a head, never finished
    time.sleep(0.2)
    pings = [timed_ping(port, sockets) for _ in range(5)]
    assert [code for code, _ in pings] == [200] * 5
    assert max(seconds for _, seconds in pings) < 1.0, pings
    # and the idle ones are all closed by the header timeout (HEAD_TIMEOUT_S) soon after
    assert closed_within(idle, 6) == len(idle)


def test_idle_connections_and_half_heads_are_closed_by_the_header_timeout(
        port: int, sockets: list[socket.socket]) -> None:
    silent = [connect(port, sockets) for _ in range(20)]
    partial = [connect(port, sockets) for _ in range(20)]
    for s in partial:
        s.sendall(b"POST /invocations HTTP/1.1\r\nContent-Type: text/csv\r\n")
    t0 = time.monotonic()
    assert all(response(s, 4).endswith((b"<closed>", b"<reset>")) for s in silent)
    answers = [response(s, 4) for s in partial]
    assert time.monotonic() - t0 < HEAD_TIMEOUT_S + 3
    assert all(a.startswith(b"HTTP/1.1 408 ") and a.endswith(b"<closed>") for a in answers)


def test_a_head_sent_slowly_byte_by_byte_is_cut_off_at_the_deadline(
        port: int, sockets: list[socket.socket]) -> None:
    """The deadline is for the whole head, not a pause between bytes (slowloris)."""
    s = connect(port, sockets)
    s.sendall(b"GET /ping HTTP/1.1\r\nX-Slow: ")
    t0 = time.monotonic()
    with pytest.raises(OSError):
        for _ in range(100):  # one byte every 0.1 s: never a 1 s pause
            s.sendall(b"a")
            time.sleep(0.1)
    assert time.monotonic() - t0 < HEAD_TIMEOUT_S + 2


def test_a_half_sent_body_is_answered_408_and_its_connection_closed(
        port: int, sockets: list[socket.socket]) -> None:
    s = connect(port, sockets)
    s.sendall(b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: text/csv\r\n"
              b"Content-Length: 1000\r\n\r\n0.1,0.2,")
    t0 = time.monotonic()
    answer = response(s, 5)
    assert b" 408 " in answer.split(b"\r\n", 1)[0], answer
    assert b"did not all arrive within %g s" % BODY_TIMEOUT_S in answer
    assert answer.endswith(b"<closed>")
    assert BODY_TIMEOUT_S - 0.2 < time.monotonic() - t0 < BODY_TIMEOUT_S + 3


def test_an_early_413_closes_the_connection_instead_of_reading_the_body(
        port: int, sockets: list[socket.socket]) -> None:
    s = connect(port, sockets)
    s.sendall(b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: text/csv\r\n"
              b"Content-Length: 99000000\r\n\r\n0.1,")
    answer = response(s, 2)  # at once, not after keep-alive's 5 s
    assert answer.startswith(b"HTTP/1.1 413 ") and answer.endswith(b"<closed>")


def test_a_64_mb_header_is_refused_431(port: int, sockets: list[socket.socket]) -> None:
    """The defect: a 64 MB header was read whole and answered 200."""
    s = connect(port, sockets)
    s.sendall(b"GET /ping HTTP/1.1\r\nHost: x\r\nX-Big: ")
    sent, chunk = 0, b"a" * 65536
    try:
        while sent < 64 * 2**20:  # the server stops reading at 16 KiB and closes
            s.sendall(chunk)
            sent += len(chunk)
        s.sendall(b"\r\n\r\n")
    except OSError:
        pass
    answer = response(s, 5)
    assert answer.startswith(b"HTTP/1.1 431 ") or answer == b"<reset>", answer[:100]
    assert sent < 64 * 2**20
    assert timed_ping(port, sockets)[0] == 200


@pytest.mark.parametrize(("size", "expected"), [(15 * 1024, 200), (17 * 1024, 431)])
def test_the_header_limit_is_16_kib_by_default(
        port: int, sockets: list[socket.socket], size: int, expected: int) -> None:
    s = connect(port, sockets)
    s.sendall(b"GET /ping HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"p" * size + b"\r\n\r\n")
    assert status(s) == expected


def test_a_small_head_split_at_its_blank_line_with_a_large_body_is_not_mistaken(
        port: int, sockets: list[socket.socket]) -> None:
    """The head ends in the next read, which also carries 100 KB of body: only the head
    counts towards the 16 KiB limit."""
    row = b"0.5,0.25,0.125,1\n"
    body = row * (100_000 // len(row))
    s = connect(port, sockets)
    s.sendall(b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: text/csv\r\n"
              b"Content-Length: " + str(len(body)).encode() + b"\r\n\r")
    time.sleep(0.2)
    s.sendall(b"\n" + body)
    assert status(s) == 200


def test_keep_alive_still_serves_many_requests_on_one_connection(
        port: int, sockets: list[socket.socket]) -> None:
    """Pauses between requests longer than the head timeout: those are keep-alive's (5 s)."""
    s = connect(port, sockets)
    for pause in (HEAD_TIMEOUT_S + 0.3, HEAD_TIMEOUT_S + 0.3, 0):
        s.sendall(PING)
        head = b""
        while b"\r\n\r\n" not in head:  # /ping's answer has no body
            head += s.recv(4096)
        assert head.startswith(b"HTTP/1.1 200 ")
        time.sleep(pause)


def test_stray_bytes_after_a_kept_alive_request_do_not_hold_the_connection(
        port: int, sockets: list[socket.socket]) -> None:
    """Any byte stops keep-alive's timer; a blank line is no request yet, so the head
    deadline takes over."""
    s = connect(port, sockets)
    s.sendall(PING)
    assert status(s) == 200
    s.sendall(b"\r\n")
    assert closed_by_server(s, HEAD_TIMEOUT_S + 2)


def test_over_the_cap_idle_connections_make_room_but_a_request_in_flight_is_kept(
        servers: dict[str, Launched], sockets: list[socket.socket]) -> None:
    port = servers["cap_5"].ready().port
    busy = connect(port, sockets)  # a request in flight: its body is still coming
    busy.sendall(b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: text/csv\r\n"
                 b"Content-Length: 100\r\n\r\n0.1,")
    time.sleep(0.2)
    idle = [connect(port, sockets) for _ in range(12)]
    time.sleep(0.2)
    assert timed_ping(port, sockets)[0] == 200
    assert closed_within(idle, 0.5) >= 8  # at most 5 open at once
    answer = response(busy, 5)  # not evicted: it gets its own answer, the body's 408
    assert answer.startswith(b"HTTP/1.1 408 "), answer[:100]


def test_at_the_cap_with_every_connection_busy_a_new_one_gets_503(
        servers: dict[str, Launched], sockets: list[socket.socket]) -> None:
    port = servers["cap_3"].ready().port
    busy = [connect(port, sockets) for _ in range(3)]
    for s in busy:
        s.sendall(b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: text/csv\r\n"
                  b"Content-Length: 100\r\n\r\n0.1,")
    time.sleep(0.3)
    extra = connect(port, sockets)
    answer = response(extra, 2)
    assert answer.startswith(b"HTTP/1.1 503 ") and answer.endswith(b"<closed>"), answer
    assert all(response(s, 5).startswith(b"HTTP/1.1 408 ") for s in busy)
    assert timed_ping(port, sockets)[0] == 200  # room again once they are answered


def test_the_protocol_marks_a_body_that_came_whole_before_the_app_ran() -> None:
    """``connections.BODY_COMPLETE``: set in the request's scope once the whole body is in
    the server's buffer. A request sent in one write has it before the app runs (so the app
    reads its body without a deadline); one whose body comes later has not, and its app
    reads the body under the deadline as before."""
    from openknn.serving import connections
    from openknn.settings import ServingSettings

    from ..s3_servers import UvicornThread

    async def app(scope: dict[str, object], receive: object, send: object) -> None:
        if scope["type"] != "http":
            return
        whole = connections.BODY_COMPLETE in scope
        while True:
            message = await receive()
            if not message.get("more_body"):
                break
        body = b"whole" if whole else b"later"
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

    head = b"POST /x HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\n"

    def answer(sock: socket.socket) -> bytes:
        got = b""
        while not got.endswith((b"whole", b"later")):  # both are 5 bytes: the whole answer
            chunk = sock.recv(4096)
            assert chunk, got
            got += chunk
        return got[-5:]

    with UvicornThread(app, **connections.uvicorn_options(ServingSettings())) as server:
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
            sock.sendall(head + b"1,2")
            assert answer(sock) == b"whole"
            sock.sendall(head)  # the same connection, kept alive: the body after a pause
            time.sleep(0.2)
            sock.sendall(b"1,2")
            assert answer(sock) == b"later"
