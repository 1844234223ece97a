"""A training job's worker process: ``python -m openknn.service.worker JOB.json``, started by
the service for each CreateTrainingJob. Its own process, so that StopTrainingJob is a SIGTERM,
a crash or a kill -9 is the job's failure and never the service's, and faiss's OpenMP threads
never share a process with the server.

It speaks to the service in two streams: stdout carries one JSON event per line
(``{"stage": "Training"}``, then ``{"metrics": {...}}`` or ``{"failure": "ClientError: ..."}``
or ``{"stopped": true}``), stderr carries the job's log, SageMaker's lines, for the job's
CloudWatch stream. The job reads and writes S3 through s3fs with the environment the service
gives it (AWS_ENDPOINT_URL_S3 and credentials)."""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from openknn.errors import AlgorithmError, OpenKnnError

LOG_FORMAT = "[%(asctime)s %(levelname)s %(thread)d] %(message)s"  # SageMaker's log lines
LOG_DATE = "%m/%d/%Y %H:%M:%S"
EXIT_STOPPED = 143


def emit(**event: Any) -> None:
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


def failed(exc: Exception) -> int:
    """Report a job's failure (its FailureReason event) and give the worker's exit status:
    1 for the caller's error, 2 for the algorithm's; anything not openknn's own is the
    algorithm's fault, in SageMaker's words, logged with its traceback."""
    if isinstance(exc, OpenKnnError):
        emit(failure=exc.failure_reason())
        return 2 if isinstance(exc, AlgorithmError) else 1
    logging.getLogger(__name__).error("internal error", exc_info=exc)
    emit(failure=AlgorithmError(f"{type(exc).__name__}: {exc}").failure_reason())
    return 2


def _setup_logging() -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(LOG_FORMAT, datefmt=LOG_DATE))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    for name in ("faiss.loader", "httpx", "botocore", "aiobotocore", "s3fs", "fsspec"):
        logging.getLogger(name).setLevel(logging.WARNING)


def _stopped(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # unwinds: staged outputs are removed, nothing is uploaded


def run(job: dict[str, Any]) -> int:
    """Run one job as described by the service; the process's exit status."""
    from openknn.jobs import training

    channels = job["channels"]
    test = channels.get("test")
    runner = None
    if job["instance_count"] > 1 and os.environ.get("RAY_ADDRESS"):
        from openknn.distributed.runner import RayRunner

        runner = RayRunner(os.environ["RAY_ADDRESS"])
    try:
        result = training.train(
            channels["train"]["uri"], test["uri"] if test else None,
            hyperparameters=job["hyperparameters"], output_dir=job["output"],
            content_types=(channels["train"].get("content_type"),
                           test.get("content_type") if test else None),
            data_types=(channels["train"].get("data_type", "S3Prefix"),
                        test.get("data_type", "S3Prefix") if test else "S3Prefix"),
            instance_count=job["instance_count"],
            distribution=channels["train"].get("distribution", "FullyReplicated"),
            runner=runner, on_stage=lambda name: emit(stage=name, time=time.time()))
    except KeyboardInterrupt:
        logging.getLogger(__name__).info("Stopped by StopTrainingJob; no model was written")
        emit(stopped=True)
        return EXIT_STOPPED
    except Exception as exc:
        return failed(exc)
    finally:
        if runner is not None:
            runner.close()
    emit(metrics=result.metrics, time=time.time())
    return 0


def _watch_service(every: float = 0.5) -> None:
    """Stop this worker, as StopTrainingJob would, when the service that started it is gone
    (killed with -9): a job nobody can describe must not go on to upload a model."""
    service = os.getppid()

    def loop() -> None:
        while os.getppid() == service:
            time.sleep(every)
        os.kill(os.getpid(), signal.SIGTERM)  # unwinds: staged files removed, none uploaded

    threading.Thread(target=loop, name="openknn-service-watch", daemon=True).start()


def main(argv: list[str], job_runner: Callable[[dict[str, Any]], int] | None = None) -> int:
    """A worker's life around ``job_runner`` (``run``, a training job; the transform worker
    passes its own): SIGTERM unwinds it, it stops when the service is gone, SageMaker's log
    lines on stderr."""
    signal.signal(signal.SIGTERM, _stopped)
    _watch_service()
    _setup_logging()
    return (job_runner or run)(json.loads(Path(argv[0]).read_text()))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
