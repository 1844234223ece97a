"""Local endpoints: `openknn serve` processes on free loopback ports, recorded in a registry
directory so any process (or `openknn endpoints`) can list and delete them by name.

An endpoint watches the process that deployed it and exits when that owner dies, so none
outlives a crashed notebook; the registry entry it leaves is detected as stale and removed.
"""

from __future__ import annotations

import json
import os
import signal
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx

from ..errors import ClientError
from ..serving import process
from ..serving.server import pid_alive
from ..settings import HOME as REGISTRY_ENV

READY_TIMEOUT_S = 120.0


class EndpointNotFound(ClientError, LookupError):
    """No live endpoint of that name (never created, deleted, or its process died)."""


@dataclass
class EndpointInfo:
    """One registry entry."""

    name: str
    url: str
    pid: int
    owner_pid: int
    model_data: str
    created: float

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])


def registry_dir() -> Path:
    """``$OPENKNN_HOME/endpoints`` (default ``~/.openknn/endpoints``)."""
    home = os.environ.get(REGISTRY_ENV) or str(Path.home() / ".openknn")
    path = Path(home) / "endpoints"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _entry(name: str) -> Path:
    return registry_dir() / f"{name}.json"


def _healthy(info: EndpointInfo) -> bool:
    if not pid_alive(info.pid):
        return False
    try:
        return httpx.get(f"{info.url}/ping", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _read(path: Path) -> EndpointInfo | None:
    try:
        return EndpointInfo(**json.loads(path.read_text()))
    except (OSError, ValueError, TypeError):
        return None


def list_endpoints() -> list[EndpointInfo]:
    """Live endpoints; stale entries (process gone or not answering) are removed."""
    live = []
    for path in sorted(registry_dir().glob("*.json")):
        info = _read(path)
        if info is not None and _healthy(info):
            live.append(info)
        else:
            if info is not None and pid_alive(info.pid):
                _terminate(info.pid)
            path.unlink(missing_ok=True)
    return live


def describe(name: str) -> EndpointInfo:
    """The live endpoint called ``name``, or EndpointNotFound (a stale entry is removed)."""
    info = _read(_entry(name))
    if info is None or not pid_alive(info.pid):
        _entry(name).unlink(missing_ok=True)
        raise EndpointNotFound(f"Could not find endpoint {name!r}: it was deleted or its "
                               "process ended; deploy the model again")
    return info


def create(name: str, model_data: str, threads: int | None = None,
           replicas: int = 1, gpus: int | str | None = None) -> EndpointInfo:
    """Start ``openknn serve`` for ``model_data`` (``replicas`` > 1: Ray Serve replicas) and
    wait until ``/ping`` answers 200."""
    existing = _read(_entry(name))
    if existing is not None and pid_alive(existing.pid):
        raise ClientError(f"Endpoint {name!r} already exists at {existing.url}; delete it "
                          "first or choose another endpoint_name")
    port = process.free_port()
    log = registry_dir() / f"{name}.log"
    args = [str(model_data), "--owner-pid", str(os.getpid())]
    if threads:
        args += ["--threads", str(threads)]
    if replicas > 1:
        args += ["--replicas", str(replicas)]
    if gpus is not None:
        args += ["--gpus", str(gpus)]
    # A session of its own: the endpoint outlives a Ctrl-C in the notebook, not its owner.
    proc = process.start(args, port, log, new_session=True)
    url = f"http://127.0.0.1:{port}"
    process.wait_ready(url, proc, log, READY_TIMEOUT_S)
    info = EndpointInfo(name, url, proc.pid, os.getpid(), str(model_data), time.time())
    _entry(name).write_text(json.dumps(asdict(info)))
    return info


def _terminate(pid: int, timeout: float = 10.0) -> None:
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:  # reap it if it is our child, so it does not linger as a zombie
            if os.waitpid(pid, os.WNOHANG)[0] == pid:
                return
        except ChildProcessError:
            if not pid_alive(pid):
                return
        time.sleep(0.05)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def delete(name: str) -> None:
    """Stop the endpoint's process, free its port and remove its entry."""
    info = describe(name)
    _terminate(info.pid)
    _entry(name).unlink(missing_ok=True)
