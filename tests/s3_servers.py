"""S3 servers for tests, each on 127.0.0.1 and a free port: moto's S3 server (the reference
nobody here wrote) and openknn's embedded store under uvicorn in a thread."""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

START_TIMEOUT_S = 20.0


class UvicornThread:
    """An ASGI app under uvicorn in a daemon thread, on a socket bound here to 127.0.0.1:0
    (``options``: more ``uvicorn.Config`` keywords)."""

    def __init__(self, app: Any, **options: Any) -> None:
        import uvicorn

        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        config = uvicorn.Config(app, log_level="warning", lifespan="off", **options)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]},
                                       daemon=True)

    def __enter__(self) -> UvicornThread:
        self.thread.start()
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.sock.close()


@contextlib.contextmanager
def moto_s3() -> Iterator[str]:
    """moto's S3 server (objects in memory); yields its endpoint URL."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@contextlib.contextmanager
def store_s3(root: Path) -> Iterator[str]:
    """openknn's embedded store with its objects under ``root``; yields its endpoint URL."""
    from openknn.service.s3 import create_app

    with UvicornThread(create_app(root)) as running:
        yield f"http://127.0.0.1:{running.port}"
