"""A local ``openknn serve`` child process: a free loopback port, the process started with
its output in a log file, a wait for ``/ping``, and a stop that always ends it; whether a pid
is alive, and the /ping proof of which process an endpoint is. Shared by the server, the SDK's
endpoints, the Ray replicas, ``openknn bench``, the benchmarks and the tests. Imports no server
stack (uvicorn, starlette), so the SDK can use it."""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import httpx

from ..errors import ClientError

# /ping's proof of identity: a client sends a fresh challenge; the endpoint started with a
# token (ENDPOINT_TOKEN) answers its pid and HMAC-SHA256(token, "challenge:pid").
CHALLENGE_HEADER, PROOF_HEADER, PID_HEADER = ("X-Openknn-Challenge", "X-Openknn-Proof",
                                              "X-Openknn-Pid")
_CHALLENGE = re.compile(r"[0-9A-Za-z]{16,128}")


def proof(token: str, challenge: str, pid: int) -> str:
    """What an endpoint holding ``token`` answers to ``challenge``."""
    return hmac.new(token.encode(), f"{challenge}:{pid}".encode(), hashlib.sha256).hexdigest()


def identity(token: str) -> Callable[[Mapping[str, str]], dict[str, str]]:
    """The /ping headers proving this process holds ``token`` (none without a challenge)."""
    def headers(request: Mapping[str, str]) -> dict[str, str]:
        challenge = request.get(CHALLENGE_HEADER.lower(), "")
        if not _CHALLENGE.fullmatch(challenge):
            return {}
        pid = os.getpid()
        return {PID_HEADER: str(pid), PROOF_HEADER: proof(token, challenge, pid)}

    return headers


def pid_alive(pid: int) -> bool:
    """Whether a process exists (signal 0 checks without touching it)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


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
