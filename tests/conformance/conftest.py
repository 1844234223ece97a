"""Two S3 servers on 127.0.0.1, each on a free port: moto's S3 server (the reference) and the
embedded store under uvicorn in a thread. Every conformance test runs against both and
compares what a client sees; ``store_only`` tests (persistence) run against the store alone."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

boto3 = pytest.importorskip("boto3")
pytest.importorskip("s3fs")
pytest.importorskip("moto.server")

from ..s3_servers import moto_s3, store_s3  # noqa: E402


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


@pytest.fixture(scope="session")
def moto_server() -> Iterator[Server]:
    with moto_s3() as endpoint:
        yield Server("moto", endpoint)


@pytest.fixture(scope="session")
def store_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("s3store")
    with store_s3(root) as endpoint:
        yield Server("store", endpoint, root)


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
