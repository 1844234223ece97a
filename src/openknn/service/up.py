"""``openknn up``: the service in the foreground under uvicorn, one process, one port,
loopback by default. One service per home directory (an flock held while it runs), because two
would write the same state. SIGTERM and Ctrl-C stop it cleanly: uvicorn's handlers finish the
requests in flight, the service's lifespan shuts down what it started, and uvicorn then lets the
signal end the process (its exit status says SIGTERM, as for any process it stops)."""

from __future__ import annotations

import fcntl
import ipaddress
import logging
import os
import socket
from pathlib import Path

import uvicorn

from openknn.errors import ClientError
from openknn.service import env
from openknn.service.app import Service, ServiceConfig

log = logging.getLogger(__name__)
DEFAULT_HOME = Path("~/.openknn")
LOCK_FILE = "up.lock"


def default_home() -> Path:
    return Path(os.environ.get("OPENKNN_HOME", str(DEFAULT_HOME))).expanduser()


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def _hold_home(home: Path) -> int:
    home.mkdir(parents=True, exist_ok=True)
    fd = os.open(home / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise ClientError(f"--home {str(home)!r} is in use by another openknn up; stop it, "
                          "or give another --home") from None
    return fd


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ClientError(f"--port {port}: cannot listen on {host}:{port} ({exc.strerror}); "
                          "stop what uses it, or give another --port (0 picks a free one)"
                          ) from None
    return sock


def run(host: str, port: int, home: Path, s3_endpoint: str | None = None) -> None:
    """Serve until SIGTERM or Ctrl-C; prints the URL and the ``openknn env`` line first."""
    home = home.expanduser().resolve()
    lock = _hold_home(home)
    sock = _bind(host, port)
    try:
        bound = sock.getsockname()[1]
        url = f"http://{'[' + host + ']' if ':' in host else host}:{bound}"
        local = "127.0.0.1" if host in ("0.0.0.0", "") else ("::1" if host == "::" else host)
        own = f"http://{'[' + local + ']' if ':' in local else local}:{bound}"
        service = Service(ServiceConfig(home, s3_endpoint, own))
        env.write_config(home, env.default_bucket())
        print(f"openknn up: {url} (home {home})", flush=True)
        print(f'Point the SageMaker SDK and boto3 here: eval "$(openknn env --endpoint-url '
              f'{url})"', flush=True)
        if not _is_loopback(host):
            log.warning("openknn up listens on %s, which is not loopback, and accepts any "
                        "credentials: anyone who can reach this port can use it", host)
        config = uvicorn.Config(service, log_level="warning", lifespan="on",
                                timeout_graceful_shutdown=5)
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        sock.close()
        os.close(lock)
