"""A local ``openknn serve`` child process: a free loopback port, the process started with
its output in a log file, a wait for ``/ping``, and a stop that always ends it. Shared by the
SDK's endpoints, ``openknn bench``, the benchmarks and the tests."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import httpx

from ..errors import ClientError


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start(args: Sequence[str], port: int, log: Path, *, new_session: bool = False,
          launcher: Sequence[str] | None = None,
          env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """``openknn serve ARGS --port PORT`` with stdout and stderr in ``log`` (a file, never a
    pipe nobody reads, which would stall a chatty server)."""
    prefix = list(launcher) if launcher else [sys.executable, "-m", "openknn"]
    with open(log, "wb") as sink:
        return subprocess.Popen([*prefix, "serve", *args, "--port", str(port)], stdout=sink,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=new_session, env=env)


def wait_ready(url: str, proc: subprocess.Popen[bytes], log: Path,
               timeout: float = 120.0) -> None:
    """Until ``/ping`` answers 200; a process that exits first, or a timeout, stops it and
    raises with the log's last line (the server's own error)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log.read_text(errors="replace").strip().splitlines()[-1:] or ["(no output)"]
            raise ClientError(f"The endpoint process exited before it was ready: {tail[0]}")
        try:
            if httpx.get(f"{url}/ping", timeout=1, trust_env=False).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    stop(proc)
    raise ClientError(f"The endpoint at {url} was not ready within {timeout:g} s; see {log}")


def stop(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    """SIGTERM, then SIGKILL after ``timeout``; the process is reaped either way."""
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
