"""Per-host job steps as Ray tasks: one task per host (``algo-1`` … ``algo-W``), results
through the object store, a dead worker turned into an AlgorithmError naming its host."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from ..errors import AlgorithmError, OpenKnnError
from . import connect

log = logging.getLogger(__name__)

T = TypeVar("T")
TASK_RETRIES = 1  # Ray retries a task whose worker died once, then the job fails


class _Lines(logging.Handler):
    """Keeps a task's log lines, to travel back with its result."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


def _on_host(host: str, threads: int, fn: Callable[..., T], *args: Any,
             ) -> tuple[T, list[str]]:
    """Run one host's step inside a Ray worker; its log lines, tagged with the host name,
    come back with the result (Ray's own log forwarding is asynchronous and may arrive after
    the job has ended)."""
    from ..core.index import set_threads

    handler = _Lines()
    handler.setFormatter(logging.Formatter(
        f"[%(asctime)s %(levelname)s {host}] %(message)s", datefmt="%m/%d/%Y %H:%M:%S"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    set_threads(threads)
    return fn(*args), handler.lines


class RayRunner:
    """Runs each host's step as a Ray task, spread over the cluster's nodes.

    With no address (and no ``RAY_ADDRESS``) a local Ray instance is started for the job and
    shut down by ``close``; with one, the job joins that cluster and leaves it running.
    """

    def __init__(self, address: str | None = None, num_cpus: int | None = None) -> None:
        self.ray, self._owns = connect(address, num_cpus)
        cpus = int(self.ray.cluster_resources().get("CPU", 1))
        self._cpus = max(1, cpus)

    def map(self, fn: Callable[..., T], args: Sequence[tuple[Any, ...]]) -> list[T]:
        ray = self.ray
        task = ray.remote(max_retries=TASK_RETRIES, num_cpus=1)(_on_host)
        threads = max(1, self._cpus // max(1, len(args)))
        hosts = [f"algo-{rank + 1}" for rank in range(len(args))]
        refs = [task.options(name=f"{fn.__name__}[{host}]", scheduling_strategy="SPREAD")
                .remote(host, threads, fn, *a) for host, a in zip(hosts, args)]
        results = []
        for host, ref in zip(hosts, refs):
            try:
                result, lines = ray.get(ref)
                for line in lines:
                    log.info("%s", line)
                results.append(result)
            except ray.exceptions.RayTaskError as exc:
                cause = exc.cause if isinstance(getattr(exc, "cause", None), Exception) else exc
                if isinstance(cause, OpenKnnError):
                    raise cause from None
                raise AlgorithmError(f"{host} failed in {fn.__name__}: {cause}") from None
            except (ray.exceptions.WorkerCrashedError, ray.exceptions.RayError) as exc:
                for other in refs:
                    ray.cancel(other, force=True)
                raise AlgorithmError(
                    f"{host} died in {fn.__name__} (retried {TASK_RETRIES} time(s)): "
                    f"{type(exc).__name__}; no model was written") from None
        return results

    def close(self) -> None:
        if self._owns and self.ray.is_initialized():
            self.ray.shutdown()
