"""Run the endpoint under uvicorn: one process, the model loaded once, in the foreground."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import uvicorn

from ..core import gpu
from ..core.model import KnnModel
from ..core.model_files import META_FILE
from ..jobs import artifact
from ..jobs.storage import is_remote, local_location
from ..settings import ENDPOINT_TOKEN, ServingSettings, from_env
from . import connections
from .app import create_app
from .process import identity, pid_alive

log = logging.getLogger(__name__)

CONTAINER_MODEL_DIR = Path("/opt/ml/model")


def model_location(path: str | os.PathLike[str]) -> Path | str:
    """A model directory, or the ``model.tar.gz`` inside one that holds only the archive; an
    ``s3://`` URI (a model.tar.gz object) as it is."""
    if is_remote(path):
        return os.fspath(path)
    path = local_location(path, "Model location")
    if path.is_dir() and not (path / META_FILE).exists():
        packed = path / "model.tar.gz"
        if packed.exists():
            return packed
    return path


def _watch_owner(owner_pid: int, server: uvicorn.Server, every: float = 1.0) -> None:
    """Stop the server when the process that deployed it is gone (a crashed notebook)."""
    stopped = threading.Event()

    def loop() -> None:
        while not stopped.wait(every):
            if not pid_alive(owner_pid):
                log.warning("Owner process %d is gone; shutting the endpoint down", owner_pid)
                server.should_exit = True
                return

    threading.Thread(target=loop, name="openknn-owner-watch", daemon=True).start()


class Backend(Protocol):
    """What holds a model's index outside this process (Ray shard actors): /ping asks it."""

    def healthy(self) -> bool: ...

    def close(self) -> None: ...


Loader = Callable[[Path | str], "tuple[KnnModel, Backend]"]
"""Loads the model at a location with its index held elsewhere (``openknn.distributed``)."""


def serve(path: str | os.PathLike[str], settings: ServingSettings | None = None,
          owner_pid: int | None = None, token: str | None = None,
          loader: Loader | None = None) -> None:
    """Serve the model at ``path`` (a directory or model.tar.gz) until interrupted, with
    ``settings`` (default: from the environment, as ``openknn serve`` reads them); a model
    that fails to load stops the server with its error.
    By default the model loads into this process; a ``loader`` (Ray shards, from
    ``openknn.distributed.serving``) returns it with the backend /ping checks. With a
    ``token`` (default: ``$OPENKNN_ENDPOINT_TOKEN``) /ping proves who it is (``identity``)."""
    settings = from_env() if settings is None else settings
    token = os.environ.get(ENDPOINT_TOKEN) if token is None else token
    location = model_location(path)
    backends: list[Backend] = []

    def load() -> KnnModel:
        if loader is None:
            model = artifact.load(location)
            model.searcher = gpu.attach(model.index, model.meta.index_type, settings.gpus)
            return model
        model, backend = loader(location)
        backends.append(backend)
        return model

    def healthy() -> bool:
        return all(b.healthy() for b in backends)

    in_flight = connections.InFlight()
    config = uvicorn.Config(None, host=settings.host, port=settings.port,  # type: ignore[arg-type]
                            log_level="info", access_log=False, lifespan="on",
                            **connections.uvicorn_options(settings, in_flight))
    server = uvicorn.Server(config)

    def stop(exc: BaseException) -> None:
        server.should_exit = True

    app = create_app(load, settings, on_load_error=stop,
                     health=healthy if loader is not None else None, company=in_flight.others)
    if token:
        app.state.identify = identity(token)
    config.app = app
    if owner_pid is not None:
        _watch_owner(owner_pid, server)
    log.info("Serving %s on http://%s:%d", location, settings.host, settings.port)
    try:
        server.run()
    finally:
        for backend in backends:
            backend.close()
    error = app.state.endpoint.load_error
    if error is not None:
        raise error
