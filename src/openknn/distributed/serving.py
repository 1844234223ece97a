"""Scale-out serving on Ray: the index split over shard actors behind the one app (a model
larger than one machine), or the whole app replicated by Ray Serve behind one address."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ..core.index import deserialize, nlist_of, serialize, set_threads
from ..core.model import KnnModel
from ..core.sharding import Parts, ShardedIndex, shard_search, split
from ..jobs import artifact
from ..serving import server
from ..serving.process import pid_alive
from ..settings import ServingSettings
from . import connect

log = logging.getLogger(__name__)

PING_TIMEOUT_S = 1.0


class _Shard:
    """One actor's slice of the index (rebuilt from bytes if Ray restarts the actor)."""

    def __init__(self, index_bytes: bytes, offset: int, threads: int) -> None:
        set_threads(threads)
        self.index = deserialize(index_bytes)
        self.offset = offset

    def search(self, queries: np.ndarray, k: int, nprobe: int) -> tuple[np.ndarray, np.ndarray]:
        return shard_search(self.index, self.offset, queries, k, nprobe)

    def ping(self) -> int:
        return os.getpid()


class RayShards:
    """``shards`` Ray actors holding the model's index; a ShardedIndex fans out to them."""

    def __init__(self, model: KnnModel, shards: int, address: str | None = None,
                 threads: int = 1) -> None:
        self.ray, self._owns = connect(address)
        actor = self.ray.remote(max_restarts=-1, max_task_retries=0, num_cpus=0)(_Shard)
        parts = split(model.index, shards)
        # Kept referenced: Ray re-runs a restarted actor's constructor with these objects.
        self._refs = [self.ray.put(serialize(sub)) for sub, _ in parts]
        self.actors = [actor.remote(ref, offset, threads)
                       for ref, (_, offset) in zip(self._refs, parts)]
        self.ray.get([a.ping.remote() for a in self.actors])
        self.index = ShardedIndex(self._fanout, int(model.index.ntotal),
                                  model.meta.index_metric, nlist_of(model.index))
        log.info("Index split over %d Ray shard actors: %s points each", shards,
                 [int(sub.ntotal) for sub, _ in parts])

    def _fanout(self, queries: np.ndarray, k: int, nprobe: int) -> Parts:
        ref = self.ray.put(queries)
        parts: Parts = self.ray.get([a.search.remote(ref, k, nprobe) for a in self.actors])
        return parts

    def healthy(self) -> bool:
        """Every shard answers; false while Ray restarts a dead one."""
        try:
            self.ray.get([a.ping.remote() for a in self.actors], timeout=PING_TIMEOUT_S)
        except Exception:  # an actor dead or restarting: report unhealthy, do not raise
            return False
        return True

    def close(self) -> None:
        for a in self.actors:
            self.ray.kill(a)
        if self._owns:
            self.ray.shutdown()


def sharded_model(path: Path | str, shards: int, address: str | None = None,
                  ) -> tuple[KnnModel, RayShards]:
    """The model with its index replaced by Ray shard actors (labels stay in front)."""
    model = artifact.load(path)
    ray_shards = RayShards(model, shards, address)
    model.index = ray_shards.index
    return model, ray_shards


def serve_sharded(path: Path | str, settings: ServingSettings, shards: int,
                  address: str | None = None, owner_pid: int | None = None) -> None:
    """``openknn serve --shards N``: the one-process server, its index in ``shards`` Ray
    actors."""
    server.serve(path, settings, owner_pid,
                 loader=lambda location: sharded_model(location, shards, address))


def serve_replicas(path: Path | str, settings: ServingSettings, replicas: int,
                   address: str | None = None, ready: Callable[[], None] | None = None,
                   stop: threading.Event | None = None, owner_pid: int | None = None) -> None:
    """Serve ``replicas`` copies of the app through Ray Serve's proxy at host:port."""
    from ray import serve

    from ..serving.app import create_app

    ray, owns = connect(address)
    app = create_app(lambda: artifact.load(path), settings)
    deployment: Any = serve.deployment(num_replicas=replicas,
                                       ray_actor_options={"num_cpus": 0})(serve.ingress(app)(
                                           type("OpenKnnEndpoint", (), {})))
    serve.start(http_options={"host": settings.host, "port": settings.port})
    serve.run(deployment.bind(), name="openknn", route_prefix="/")
    log.info("Serving %s from %d Ray Serve replicas on http://%s:%d", path, replicas,
             settings.host, settings.port)
    if ready is not None:
        ready()
    stop = stop or threading.Event()
    try:
        while not stop.wait(0.5):  # a timed wait, so SIGTERM/Ctrl-C are handled promptly
            if owner_pid is not None and not pid_alive(owner_pid):
                log.warning("Owner process %d is gone; shutting the replicas down", owner_pid)
                break
    except KeyboardInterrupt:
        pass
    finally:
        serve.shutdown()  # type: ignore[no-untyped-call]
        if owns:
            ray.shutdown()
