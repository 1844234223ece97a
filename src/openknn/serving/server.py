"""Run the endpoint under uvicorn: one process, the model loaded once, in the foreground."""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import re
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import uvicorn

from .. import artifact, gpu
from ..model import KnnModel
from ..settings import ENDPOINT_TOKEN, ServingSettings
from . import connections
from .app import create_app

log = logging.getLogger(__name__)

CONTAINER_MODEL_DIR = Path("/opt/ml/model")
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


def model_location(path: Path) -> Path:
    """A model directory, or the ``model.tar.gz`` inside one that holds only the archive."""
    if path.is_dir() and not (path / artifact.META_FILE).exists():
        packed = path / "model.tar.gz"
        if packed.exists():
            return packed
    return path


def pid_alive(pid: int) -> bool:
    """Whether a process exists (signal 0 checks without touching it)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


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


def serve(path: Path, settings: ServingSettings, owner_pid: int | None = None,
          shards: int = 1, ray_address: str | None = None, token: str | None = None) -> None:
    """Serve until interrupted; a model that fails to load stops the server with its error.
    With ``shards`` > 1 the index lives in that many Ray actors (``openknn[ray]``). With a
    ``token`` (default: ``$OPENKNN_ENDPOINT_TOKEN``) /ping proves who it is (``identity``)."""
    token = os.environ.get(ENDPOINT_TOKEN) if token is None else token
    location = model_location(path)
    backends: list[Any] = []

    def load() -> KnnModel:
        if shards <= 1:
            model = artifact.load(location)
            model.searcher = gpu.attach(model.index, model.meta.index_type, settings.gpus)
            return model
        from ..distributed.serving import sharded_model

        model, ray_shards = sharded_model(location, shards, ray_address)
        backends.append(ray_shards)
        return model

    def healthy() -> bool:
        return all(b.healthy() for b in backends)

    config = uvicorn.Config(None, host=settings.host, port=settings.port,  # type: ignore[arg-type]
                            log_level="info", access_log=False, lifespan="on",
                            **connections.uvicorn_options(settings))
    server = uvicorn.Server(config)

    def stop(exc: BaseException) -> None:
        server.should_exit = True

    app = create_app(load, settings, on_load_error=stop,
                     health=healthy if shards > 1 else None)
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
