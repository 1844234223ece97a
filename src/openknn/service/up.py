"""``openknn up``: the service in the foreground under uvicorn, one process, one port,
loopback by default. One service per home directory (an flock held while it runs), because two
would write the same state. SIGTERM and Ctrl-C stop it cleanly: uvicorn's handlers finish the
requests in flight, the service's lifespan shuts down what it started, and uvicorn then lets the
signal end the process (its exit status says SIGTERM, as for any process it stops). With
``--auth FILE`` only requests signed with the file's key pairs are served (``service.auth``);
without it, any credentials are, which a non-loopback bind warns about."""

from __future__ import annotations

import fcntl
import ipaddress
import logging
import os
import socket
from pathlib import Path

import uvicorn

from openknn.errors import ClientError
from openknn.service import auth, env, sigv4
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


def exposure_warning(host: str, keys: auth.Keys | None) -> str | None:
    """What a bind to ``host`` should warn about: others reaching a service that takes any
    credentials."""
    if _is_loopback(host) or keys is not None:
        return None
    return (f"openknn up listens on {host}, which is not loopback, and accepts any "
            "credentials: anyone who can reach this port can use it (give --auth FILE to "
            "require your key pairs)")


def run(host: str, port: int, home: Path, s3_endpoint: str | None = None,
        auth_file: Path | None = None) -> None:
    """Serve until SIGTERM or Ctrl-C; prints the URL and the ``openknn env`` line first."""
    keys = None
    if auth_file is not None:
        sigv4.botocore()  # the [s3] extra's install hint now, not at the first request
        keys = auth.load_keys(auth_file.expanduser().resolve())
    home = home.expanduser().resolve()
    lock = _hold_home(home)
    sock = _bind(host, port)
    try:
        bound = sock.getsockname()[1]
        url = f"http://{'[' + host + ']' if ':' in host else host}:{bound}"
        local = "127.0.0.1" if host in ("0.0.0.0", "") else ("::1" if host == "::" else host)
        own = f"http://{'[' + local + ']' if ':' in local else local}:{bound}"
        service = Service(ServiceConfig(home, s3_endpoint, own, keys))
        env.write_config(home, env.default_bucket())
        env.write_auth(home, None if keys is None else (keys.source, keys.first.profile))
        print(f"openknn up: {url} (home {home})", flush=True)
        print(f'Point the SageMaker SDK and boto3 here: eval "$(openknn env --endpoint-url '
              f'{url})"', flush=True)
        if keys is not None:
            count = len(keys.pairs)
            print(f"openknn up: --auth: only requests signed with the {count} key "
                  f"pair{'s' * (count > 1)} of {keys.source} are served", flush=True)
        warning = exposure_warning(host, keys)
        if warning is not None:
            log.warning("%s", warning)
        # No proxy-headers middleware: nothing here reads the client's address, and it is a
        # layer on every InvokeEndpoint.
        config = uvicorn.Config(service, log_level="warning", lifespan="on",
                                timeout_graceful_shutdown=5, proxy_headers=False)
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        sock.close()
        os.close(lock)
