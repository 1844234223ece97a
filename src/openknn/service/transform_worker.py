"""A transform job's worker process: ``python -m openknn.service.transform_worker JOB.json``,
started by the service for each CreateTransformJob, with the training worker's life
(``worker.main``: SIGTERM unwinds it, it stops itself when the service is gone, SageMaker's log
lines on stderr) and its events on stdout: ``{"started": t}`` once the model is loaded, then
``{"done": {...}}``, ``{"failure": "ClientError: ..."}`` or ``{"stopped": true}``.

The job is ``openknn transform``'s: the model from its ``ModelDataUrl``, each input object
split, batched and answered by ``serving.transform.transform_file`` into ``<key>.out`` (the
key relative to the input prefix, or to a manifest's prefix), so an output equals what
``openknn transform`` writes for the same file. As on SageMaker, an object that fails has no
output, the others' outputs are uploaded, and the job fails naming the first that failed;
a stopped job uploads nothing."""

from __future__ import annotations

import contextlib
import gzip
import logging
import sys
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, cast

from openknn import settings
from openknn.errors import ClientError, DataError, OpenKnnError
from openknn.jobs import storage
from openknn.jobs.outputs import atomic_file
from openknn.jobs.progress import Progress
from openknn.service.worker import EXIT_STOPPED, emit, failed, main
from openknn.serving.transform import TransformSpec, transform_file

log = logging.getLogger(__name__)
OUT = ".out"
STRATEGIES = {"MULTI_RECORD": "MultiRecord", "SINGLE_RECORD": "SingleRecord"}


def spec_of(job: dict[str, Any]) -> TransformSpec:
    """The job's split, batch and assemble settings. BatchStrategy and MaxPayloadInMB left
    out of the request are the container's (``/execution-parameters``: its environment, the
    model's and the job's Environment included), as SageMaker asks the container for them."""
    served = settings.from_env()
    strategy = job["batch_strategy"] or STRATEGIES.get(served.batch_strategy.upper(),
                                                       served.batch_strategy)
    payload = job["max_payload_mb"] or served.max_payload_mb
    return TransformSpec(job["input"]["content_type"] or "", job["output"]["accept"] or "",
                         job["input"]["split_type"], strategy, job["output"]["assemble_with"],
                         float(payload))


def output_names(files: list[storage.DataFile], location: str, data_type: str) -> list[str]:
    """Each input object's output name under S3OutputPath: its key relative to the input
    prefix (a manifest's own prefix for ManifestFile) with ``.out`` added, as SageMaker
    names them; an S3Uri naming one object gives its base name."""
    root = location
    if data_type == storage.MANIFEST_FILE:
        data = storage.read_bytes(location, "Manifest", storage.MANIFEST_LIMIT) or b""
        root, _ = storage.parse_manifest(data, location)
    names = [(f.uri[len(root):].lstrip("/") if f.uri.startswith(root) and f.uri != root
              else f.name) + OUT for f in files]
    twice = {n for n in names if names.count(n) > 1}
    if twice:
        raise ClientError(f"Input objects {sorted(twice)} would be written to one output "
                          "name; give each input object its own key")
    return names


@contextlib.contextmanager
def _opened(file: storage.DataFile, compression: str) -> Iterator[IO[bytes]]:
    """An input object's bytes, gunzipped for CompressionType Gzip (SageMaker unpacks the
    object before it splits it); a damaged or plain object is the user's error."""
    with storage.open_binary(file) as raw:
        if compression != "Gzip":
            yield raw
            return
        try:
            with gzip.GzipFile(fileobj=raw, mode="rb") as unpacked:
                yield cast(IO[bytes], unpacked)
        except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
            raise DataError(f"{file.uri}: CompressionType is Gzip, but the object is not "
                            f"whole gzip data ({exc}); upload it gzipped or give "
                            "CompressionType None") from None


def _transform_each(model: Any, files: list[storage.DataFile], names: list[str], staging: Path,
                    spec: TransformSpec, compression: str) -> list[OpenKnnError]:
    """Answer every object into ``staging/<name>``; the errors of those that failed (they
    leave no file there)."""
    failures: list[OpenKnnError] = []
    with Progress("transform") as progress:
        for file, name in zip(files, names):
            target = staging / name
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                with _opened(file, compression) as stream, atomic_file(target) as out:
                    transform_file(model, stream, out, spec, file.uri, progress)
            except OpenKnnError as exc:
                log.error("%s (this object has no output)", exc)
                failures.append(exc)
    log.info("Transformed %d records from %d of %d input objects in %.1f s",
             progress.records, len(files) - len(failures), len(files), progress.elapsed)
    return failures


def _failure(failures: list[OpenKnnError], total: int) -> str:
    first = failures[0]
    if total == 1:
        return first.failure_reason()
    return (f"{first.prefix}: {len(failures)} of {total} input objects failed and have no "
            f"output (the other {total - len(failures)} were written); the first: {first}")


def transform(job: dict[str, Any]) -> int:
    """Run one transform job as the service describes it; the process's exit status."""
    from openknn.core import gpu
    from openknn.jobs import artifact

    source = job["input"]
    try:
        spec = spec_of(job)
        spec.check()
        files = storage.list_channel(source["uri"], source["data_type"])
        if not files:
            raise ClientError(f"No S3 objects found under S3 URL {source['uri']!r} given in "
                              "input data source; put the input objects there or correct "
                              "the S3Uri")
        names = output_names(files, source["uri"], source["data_type"])
        model = artifact.load(job["model"])
        model.searcher = gpu.attach(model.index, model.meta.index_type,
                                    gpu.for_instance_type(job["instance_type"]))
        where = gpu.describe(model.searcher)
        log.info("Instance %s (%s): transforming %d input objects from %s with the model %s, "
                 "searching on %s", job["instance"], job["instance_type"], len(files),
                 source["uri"], job["model"], "the CPU" if where == "CPU" else where)
        if job["instance_count"] > 1:
            log.info("InstanceCount %d: this one worker transforms every instance's share of "
                     "the input objects, one object after another", job["instance_count"])
        emit(started=time.time())
        with storage.staged_output(job["output"]["uri"], "TransformOutput.S3OutputPath") as out:
            failures = _transform_each(model, files, names, out, spec, source["compression"])
            log.info("Uploading %d outputs to %s", len(files) - len(failures),
                     job["output"]["uri"])
    except KeyboardInterrupt:
        log.info("Stopped by StopTransformJob; no output was written")
        emit(stopped=True)
        return EXIT_STOPPED
    except Exception as exc:
        return failed(exc)
    if failures:
        emit(failure=_failure(failures, len(files)))
        return 1
    emit(done={"objects": len(files)}, time=time.time())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:], transform))
