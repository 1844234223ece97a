"""Scale-out serving on Ray (marker `ray`): a sharded Flat index answers as the whole one,
a dead shard actor makes /ping unhealthy until Ray restarts it, and Ray Serve replicas
answer the same as the plain server."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from openknn.formats import json as json_format
from openknn.jobs import artifact

from ..conftest import AppClient
from .test_serving_http import QUERIES, make_model, request_body, start_server, stop

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def model_tar(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("ray")
    path = tmp_path_factory.mktemp("model") / "model.tar.gz"
    artifact.write_model_tar(make_model(), path)
    return path


def verbose_answer(url: str) -> dict[str, np.ndarray]:
    r = httpx.post(f"{url}/invocations", content=request_body("text/csv", QUERIES),
                   headers={"Content-Type": "text/csv",
                            "Accept": "application/json; verbose=true"}, timeout=60)
    assert r.status_code == 200, r.text
    return json_format.parse_predictions_json(r.content)


def expected() -> dict[str, np.ndarray]:
    model = make_model()
    distances, labels = model.neighbors(QUERIES)
    return {"predicted_label": model.predict(QUERIES), "labels": labels,
            "distances": distances}


def assert_same(got: dict[str, np.ndarray]) -> None:
    want = expected()
    np.testing.assert_array_equal(got["predicted_label"], want["predicted_label"])
    np.testing.assert_array_equal(got["labels"], want["labels"])
    np.testing.assert_allclose(got["distances"], want["distances"], rtol=1e-6)


def test_sharded_server_equals_unsharded(model_tar: Path) -> None:
    proc, url = start_server([str(model_tar), "--shards", "2"])
    try:
        assert_same(verbose_answer(url))
    finally:
        stop(proc)


@pytest.fixture()
def ray_shards() -> Iterator[object]:
    from openknn.distributed.serving import RayShards

    shards = RayShards(make_model(), 3)
    yield shards
    shards.close()


def shard_app(shards: object) -> AppClient:
    from openknn.serving.app import create_app

    model = make_model()
    model.index = shards.index  # type: ignore[attr-defined]
    return AppClient(create_app(model, health=shards.healthy))  # type: ignore[attr-defined]


def test_dead_shard_is_restarted_and_answers_again(ray_shards: object) -> None:
    shards = ray_shards
    ray = shards.ray  # type: ignore[attr-defined]
    actor = shards.actors[1]  # type: ignore[attr-defined]
    pid = ray.get(actor.ping.remote())
    with shard_app(shards) as client:  # type: ignore[attr-defined]
        assert client.get("/ping").status_code == 200
        ray.kill(actor, no_restart=False)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if client.get("/ping").status_code == 200:
                try:
                    if ray.get(actor.ping.remote(), timeout=5) != pid:
                        break
                except Exception:
                    pass
            time.sleep(0.2)
        assert ray.get(actor.ping.remote()) != pid  # a new process: Ray restarted it
        assert client.get("/ping").status_code == 200
        r = client.post("/invocations", content=request_body("text/csv", QUERIES),
                        headers={"Content-Type": "text/csv",
                                 "Accept": "application/json; verbose=true"})
        assert_same(json_format.parse_predictions_json(r.content))


def test_dead_shard_makes_ping_unhealthy(ray_shards: object) -> None:
    shards = ray_shards
    with shard_app(shards) as client:  # type: ignore[attr-defined]
        assert client.get("/ping").status_code == 200
        shards.ray.kill(shards.actors[0], no_restart=True)  # type: ignore[attr-defined]
        deadline = time.monotonic() + 30
        while client.get("/ping").status_code == 200 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert client.get("/ping").status_code == 503
        r = client.post("/invocations", content=b"1,2,3,4,5,6",
                        headers={"Content-Type": "text/csv"})
        assert r.status_code == 500 and "Traceback" not in r.text


def test_replicas_answer_like_the_plain_server(model_tar: Path) -> None:
    proc, url = start_server([str(model_tar), "--replicas", "2"])
    try:
        assert_same(verbose_answer(url))
    finally:
        stop(proc)
    assert proc.returncode is not None
