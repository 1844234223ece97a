"""Two S3 servers on 127.0.0.1, each on a free port: moto's S3 server (the reference) and the
embedded store under uvicorn in a thread. Every conformance test runs against both and
compares what a client sees; ``store_only`` tests (persistence) run against the store alone."""

from __future__ import annotations

import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

boto3 = pytest.importorskip("boto3")
pytest.importorskip("s3fs")
pytest.importorskip("moto.server")

START_TIMEOUT_S = 20.0


@dataclass
class Server:
    name: str
    endpoint: str
    root: Path | None = None  # the store's folder (store only)

    def client(self, *, retries: bool = True) -> Any:
        """boto3's client as users configure it; ``retries=False`` for tests of errors that
        botocore retries with back-off (BadDigest, 500s), which would only slow them down."""
        from botocore.config import Config

        config = None if retries else Config(retries={"total_max_attempts": 1})
        return boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1",
                            aws_access_key_id="test", aws_secret_access_key="test",
                            config=config)

    def fs(self) -> Any:
        import s3fs

        return s3fs.S3FileSystem(client_kwargs={"endpoint_url": self.endpoint}, key="test",
                                 secret="test", skip_instance_cache=True, use_listings_cache=False)


class UvicornThread:
    """An ASGI app under uvicorn in a daemon thread, on a socket bound here to 127.0.0.1:0."""

    def __init__(self, app: Any) -> None:
        import uvicorn

        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        config = uvicorn.Config(app, log_level="warning", lifespan="off")
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


@pytest.fixture(scope="session")
def moto_server() -> Iterator[Server]:
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield Server("moto", f"http://{host}:{port}")
    finally:
        server.stop()


@pytest.fixture(scope="session")
def store_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    from openknn.service.s3 import create_app

    root = tmp_path_factory.mktemp("s3store")
    with UvicornThread(create_app(root)) as running:
        yield Server("store", f"http://127.0.0.1:{running.port}", root)


@pytest.fixture(params=["moto", "store"])
def server(request: pytest.FixtureRequest) -> Server:
    return request.getfixturevalue(f"{request.param}_server")  # type: ignore[no-any-return]


@pytest.fixture
def s3(server: Server) -> Any:
    return server.client(retries=False)


@pytest.fixture
def bucket(s3: Any) -> str:
    name = f"conf-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name)
    return name
