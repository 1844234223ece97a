"""The ``openknn`` command line: a thin click layer over the jobs. It alone configures
logging, and it turns every openknn error into one ``ClientError: ...`` line and an exit code."""

from __future__ import annotations

import functools
import logging
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass
from functools import wraps
from pathlib import Path
from typing import Any, TypeVar

import click

from .core import hyperparameters
from .errors import AlgorithmError, OpenKnnError
from .jobs.storage import join, local_location, staged_output

log = logging.getLogger("openknn")

F = TypeVar("F", bound=Callable[..., Any])
EXIT_CLIENT, EXIT_ALGORITHM = 1, 2


def setup_logging(verbose: bool) -> None:
    """SageMaker-style lines: ``[06/07/2021 20:39:12 INFO 140156949829440] message``."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(
        "[%(asctime)s %(levelname)s %(thread)d] %(message)s", datefmt="%m/%d/%Y %H:%M:%S"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    # faiss's loader logs each CPU-specific build it could not import; that is not news.
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request otherwise
    # boto's "Found credentials in environment variables." and the like, for every s3:// read
    for name in ("botocore", "aiobotocore", "s3fs", "fsspec"):
        logging.getLogger(name).setLevel(logging.WARNING)


def fail(exc: BaseException, failure_file: Callable[[str], None] | None = None) -> None:
    """Report an error in one line (no traceback) and exit non-zero."""
    err = exc if isinstance(exc, OpenKnnError) else AlgorithmError(
        f"{type(exc).__name__}: {exc}")
    if not isinstance(exc, OpenKnnError):
        log.debug("internal error", exc_info=exc)
    reason = err.failure_reason()
    if failure_file is not None:
        failure_file(reason)
    click.echo(reason, err=True)
    sys.exit(EXIT_ALGORITHM if isinstance(err, AlgorithmError) else EXIT_CLIENT)


def reports_errors(func: F) -> F:
    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except (click.ClickException, click.exceptions.Exit, click.Abort, SystemExit):
            raise
        except KeyboardInterrupt:
            click.echo("Stopped; no model was written.", err=True)
            sys.exit(143)
        except Exception as exc:  # every error becomes one line, never a traceback
            fail(exc)
    return wrapper  # type: ignore[return-value]


@click.group()
@click.option("-v", "--verbose", is_flag=True, help="Debug logging.")
@click.version_option(package_name="openknn")
def main(verbose: bool) -> None:
    """openknn: SageMaker's built-in k-NN algorithm, self-hosted."""
    setup_logging(verbose)


@main.command()
@click.option("--train", "train", help="Train channel: a directory, file or file:// / s3:// URI.")
@click.option("--test", "test", help="Optional test channel, scored after training.")
@click.option("--content-type", default=None,
              help="Channel content type (text/csv or application/x-recordio-protobuf); "
                   "default: by file name, else RecordIO-protobuf.")
@click.option("--train-content-type", default=None, help="Content type of the train channel.")
@click.option("--test-content-type", default=None, help="Content type of the test channel.")
@click.option("--train-data-type", type=click.Choice(["S3Prefix", "ManifestFile"]),
              default="S3Prefix", show_default=True,
              help="SageMaker's S3DataType: --train is a prefix (directory) of data files, or "
                   "a manifest that lists them ([{\"prefix\": P}, key, ...]).")
@click.option("--test-data-type", type=click.Choice(["S3Prefix", "ManifestFile"]),
              default="S3Prefix", show_default=True, help="The same for --test.")
@click.option("--hp", "hps", multiple=True, metavar="NAME=VALUE",
              help="A hyperparameter, repeatable: --hp k=10 --hp feature_dim=54 ...")
@click.option("--hyperparameters", "hp_file", type=click.Path(dir_okay=False),
              help="A hyperparameters.json (all-strings map); --hp values override it.")
@click.option("--output-dir", type=click.Path(file_okay=False), default="out",
              show_default=True, help="Where model.tar.gz and metrics.json are written: a "
                   "directory, file:// URI or s3:// prefix.")
@click.option("--sm-root", type=click.Path(file_okay=False),
              help="Run as a SageMaker training container rooted here (e.g. /opt/ml).")
@click.option("--threads", type=int, default=None, help="faiss threads (default: all CPUs).")
@click.option("--instance-count", type=int, default=1, show_default=True,
              help="Hosts (SageMaker's instance_count); more than 1 runs them as Ray tasks.")
@click.option("--distribution", type=click.Choice(["FullyReplicated", "ShardedByS3Key"]),
              default="FullyReplicated", show_default=True,
              help="How the train channel's files are spread over the hosts.")
@click.option("--ray-address", default=None,
              help="Join this Ray cluster (default: RAY_ADDRESS, else a local Ray for the job).")
@click.option("--runner", type=click.Choice(["ray", "local"]), default="ray",
              show_default=True, help="With several hosts: Ray tasks, or all hosts' steps "
              "one after another in this process (same model, no Ray needed).")
def train(train: str | None, test: str | None, content_type: str | None,
          train_content_type: str | None, test_content_type: str | None,
          train_data_type: str, test_data_type: str, hps: tuple[str, ...],
          hp_file: str | None, output_dir: str, sm_root: str | None, threads: int | None,
          instance_count: int, distribution: str, ray_address: str | None,
          runner: str) -> None:
    """Train a k-NN model (SageMaker's training job)."""
    from .jobs import container, training

    # StopTrainingJob sends SIGTERM: unwind like Ctrl-C, so temporary files are removed and
    # no model is left half-written.
    signal.signal(signal.SIGTERM, _terminated)

    if sm_root is not None:
        root = Path(sm_root)
        try:
            spec = container.spec_from_root(root, threads)
            training.run(spec)
        except KeyboardInterrupt:
            click.echo("Stopped; no model was written.", err=True)
            sys.exit(143)
        except Exception as exc:
            fail(exc, lambda reason: container.write_failure(root, reason))
        return
    types = (train_content_type or content_type, test_content_type or content_type)
    hosts = Hosts(instance_count, distribution, ray_address, runner)
    _train_local(train, test, types, hps, hp_file, output_dir, threads, hosts,
                 (train_data_type, test_data_type))


@dataclass(frozen=True)
class Hosts:
    """Where a training job's host steps run."""

    count: int = 1
    distribution: str = "FullyReplicated"
    ray_address: str | None = None
    runner: str = "ray"


def _terminated(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


@reports_errors
def _train_local(train: str | None, test: str | None, types: tuple[str | None, str | None],
                 hps: tuple[str, ...], hp_file: str | None, output_dir: str,
                 threads: int | None, hosts: Hosts = Hosts(),
                 data_types: tuple[str, str] = ("S3Prefix", "S3Prefix")) -> None:
    import json

    from .errors import ChannelError, ClientError, HyperparameterError
    from .jobs import training

    if train is None:
        raise ChannelError("Must provide train channel: pass --train PATH (or --sm-root)")
    raw: dict[str, object] = {}
    if hp_file is not None:
        try:
            raw.update(json.loads(Path(hp_file).read_text()))
        except (OSError, ValueError) as exc:
            raise HyperparameterError(f"--hyperparameters {hp_file}: cannot read a JSON "
                                      f"object from it ({exc})") from None
    raw.update(hyperparameters.parse_assignments(hps))
    if hosts.count < 1:
        raise ClientError(f"--instance-count {hosts.count}: give 1 or more hosts")
    run = functools.partial(training.train, train, test, hyperparameters=raw,
                            output_dir=output_dir, content_types=types, data_types=data_types,
                            threads=threads,
                            instance_count=hosts.count, distribution=hosts.distribution)
    if hosts.count > 1 and hosts.runner == "ray":
        from .distributed.runner import RayRunner

        ray_runner = RayRunner(hosts.ray_address)
        try:
            result = run(runner=ray_runner)
        finally:
            ray_runner.close()
    else:
        result = run()
    click.echo(f"model: {join(output_dir, training.MODEL_TAR)}")
    for key, value in result.metrics.items():
        if key.startswith("test:"):
            click.echo(f"{key} = {value}")


@main.command(name="hyperparameters")
@click.option("--markdown", is_flag=True, help="Print docs/hyperparameters.md.")
def hyperparameters_cmd(markdown: bool) -> None:
    """List the hyperparameters (the one table every check uses)."""
    if markdown:
        click.echo(hyperparameters.markdown(), nl=False)
        return
    for spec in hyperparameters.TABLE:
        default = "" if spec.default is None else f" (default {spec.default})"
        req = " [required]" if spec.required else ""
        click.echo(f"{spec.name}{req}: {spec.allowed()}{default}")


@main.command()
@click.argument("model", required=False, type=click.Path())
@click.option("--host", default=None, help="Bind address (default 127.0.0.1; 0.0.0.0 in "
              "container mode).")
@click.option("--port", type=int, default=None,
              help="Port (default: SAGEMAKER_BIND_TO_PORT, else 8080).")
@click.option("--max-payload-mb", type=float, default=None,
              help="Largest request body (default: SAGEMAKER_MAX_PAYLOAD_IN_MB, else 6).")
@click.option("--batch-window-ms", type=float, default=None,
              help="Longest wait to gather concurrent rows into one search (default 2).")
@click.option("--max-batch-rows", type=int, default=None, help="Rows per search at most.")
@click.option("--threads", type=int, default=None, help="faiss threads (default: all CPUs).")
@click.option("--gpus", default=None, metavar="auto|N",
              help="Search on a GPU (faiss GPU build): auto uses one where faiss sees one, "
                   "0 never (default: OPENKNN_NUM_GPUS, else auto).")
@click.option("--max-connections", type=click.IntRange(min=1), default=None,
              help="Open connections at most, kept under ulimit -n; an idle one is closed to "
                   "make room (default: OPENKNN_MAX_CONNECTIONS, else 512).")
@click.option("--max-header-kb", type=click.IntRange(min=1), default=None,
              help="Largest request head in KiB, else 431 (default: OPENKNN_MAX_HEADER_KB, "
                   "else 16).")
@click.option("--header-timeout-s", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Seconds a connection has to send its request head (default: "
                   "OPENKNN_HEADER_TIMEOUT_S, else 5).")
@click.option("--body-timeout-s", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Seconds the whole request body has to arrive, else 408 (default: "
                   "OPENKNN_BODY_TIMEOUT_S, else 30).")
@click.option("--keep-alive-s", type=click.IntRange(min=1), default=None,
              help="Seconds an idle connection stays open between requests (default: "
                   "OPENKNN_KEEP_ALIVE_S, else 5).")
@click.option("--owner-pid", type=int, default=None, hidden=True,
              help="Exit when this process ends (set by the SDK's deploy).")
@click.option("--shards", type=int, default=1, show_default=True,
              help="Split the index over this many Ray actors (openknn[ray]).")
@click.option("--replicas", type=int, default=1, show_default=True,
              help="Serve this many copies of the endpoint through Ray Serve (openknn[ray]).")
@click.option("--ray-address", default=None,
              help="Join this Ray cluster (default: RAY_ADDRESS, else a local Ray).")
@reports_errors
def serve(model: str | None, host: str | None, port: int | None,
          max_payload_mb: float | None, batch_window_ms: float | None,
          max_batch_rows: int | None, threads: int | None, gpus: str | None,
          owner_pid: int | None, shards: int, replicas: int, ray_address: str | None,
          **limits: float | None) -> None:
    """Serve a model over HTTP (SageMaker's endpoint). Without MODEL: /opt/ml/model."""
    from . import settings as serving_settings
    from .errors import ClientError
    from .serving import server

    container = model is None
    settings = serving_settings.from_env().with_(
        host=host or ("0.0.0.0" if container else "127.0.0.1"), port=port,
        max_payload_mb=max_payload_mb, batch_window_ms=batch_window_ms,
        max_batch_rows=max_batch_rows, threads=threads,
        gpus=None if gpus is None else serving_settings.parse_gpus(gpus, "--gpus"),
        **limits)  # --max-connections ... --keep-alive-s
    path = model or server.CONTAINER_MODEL_DIR  # server.model_location checks it
    if shards < 1 or replicas < 1:
        raise ClientError(f"--shards {shards} / --replicas {replicas}: give 1 or more")
    if (shards > 1 or replicas > 1) and settings.gpus not in ("auto", 0):
        raise ClientError(f"--gpus {settings.gpus} cannot be combined with --shards or "
                          "--replicas yet (Ray shards and replicas search on the CPU); "
                          "drop one")
    if replicas > 1:
        if shards > 1:
            raise ClientError("--replicas and --shards cannot be combined yet; choose one")
        from .distributed import import_ray
        from .distributed.serving import serve_replicas

        import_ray()  # fail at once with the install hint
        signal.signal(signal.SIGTERM, _terminated)
        location = server.model_location(path)

        def ready() -> None:  # Ray Serve takes over logging; say it plainly
            click.echo(f"Serving {location} from {replicas} Ray Serve replicas on "
                       f"http://{settings.host}:{settings.port}", err=True)

        serve_replicas(location, settings, replicas, ray_address, ready=ready,
                       owner_pid=owner_pid)
        return
    if shards > 1:
        from .distributed import import_ray
        from .distributed.serving import serve_sharded

        import_ray()
        serve_sharded(path, settings, shards, ray_address, owner_pid)
        return
    server.serve(path, settings, owner_pid)


@main.command()
@click.argument("model", type=click.Path())
@click.option("--content-type", default="text/csv", show_default=True,
              help="Media type of the request read from standard input (or --input).")
@click.option("--accept", default="application/json", show_default=True,
              help="Media type of the response, e.g. 'application/json; verbose=true'.")
@click.option("--input", "input_path", type=click.Path(dir_okay=False), default=None,
              help="Read the request body from this file instead of standard input.")
@reports_errors
def invoke(model: str, content_type: str, accept: str, input_path: str | None) -> None:
    """Answer one request through the endpoint's app, without opening a port."""
    import asyncio

    import httpx

    from .errors import ClientError
    from .jobs import artifact
    from .serving.app import create_app

    body = Path(input_path).read_bytes() if input_path else sys.stdin.buffer.read()
    app = create_app(artifact.load(model))

    async def post() -> httpx.Response:  # in process, with the app's startup and shutdown
        async with app.router.lifespan_context(app), httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://openknn") as client:
            return await client.post("/invocations", content=body, headers={
                "Content-Type": content_type, "Accept": accept})

    response = asyncio.run(post())
    if response.status_code != 200:
        message = response.json()["error"]["message"]
        raise ClientError(f"HTTP {response.status_code}: {message}")
    sys.stdout.buffer.write(response.content)
    sys.stdout.buffer.flush()


@main.command()
@click.argument("model", type=click.Path())
@click.option("--input", "input_location", required=True,
              help="A file or directory of input files (or a file:// / s3:// URI).")
@click.option("--output", "output_dir", required=True, type=click.Path(file_okay=False),
              help="Directory (or s3:// prefix) for one <name>.out per input file.")
@click.option("--content-type", default="application/jsonlines", show_default=True)
@click.option("--accept", default="application/jsonlines", show_default=True)
@click.option("--split-type", type=click.Choice(["Line", "RecordIO", "None"]), default="Line",
              show_default=True)
@click.option("--batch-strategy", type=click.Choice(["MultiRecord", "SingleRecord"]),
              default="MultiRecord", show_default=True)
@click.option("--assemble-with", type=click.Choice(["Line", "None"]), default="Line",
              show_default=True)
@click.option("--max-payload-mb", type=float, default=6.0, show_default=True)
@click.option("--threads", type=int, default=None, help="faiss threads (default: all CPUs).")
@click.option("--gpus", default="auto", show_default=True, metavar="auto|N",
              help="Search on a GPU (faiss GPU build): auto uses one where faiss sees one.")
@reports_errors
def transform(model: str, input_location: str, output_dir: str, content_type: str,
              accept: str, split_type: str, batch_strategy: str, assemble_with: str,
              max_payload_mb: float, threads: int | None, gpus: str) -> None:
    """Batch transform: answer every input file into <name>.out (SageMaker's transform job)."""
    from .core import gpu
    from .core.index import set_threads
    from .jobs import artifact
    from .serving import transform as transform_job
    from .settings import parse_gpus

    set_threads(threads)
    request = parse_gpus(gpus, "--gpus")
    spec = transform_job.TransformSpec(content_type, accept, split_type, batch_strategy,
                                       assemble_with, max_payload_mb)
    loaded = artifact.load(model)
    loaded.searcher = gpu.attach(loaded.index, loaded.meta.index_type, request)
    with staged_output(output_dir, "--output") as staging:  # s3://: uploaded when all is done
        written = transform_job.run(loaded, input_location, staging, spec)
    for path in written:
        click.echo(join(output_dir, path.name))


# ---------------------------------------------------------------- openknn datasets


@main.group(name="datasets")
def datasets_group() -> None:
    """Fetch real data sets and write them as train/test channels for `openknn train`."""


def _formats_option(ctx: click.Context, param: click.Parameter, value: str) -> tuple[str, ...]:
    from .jobs.datasets import FORMATS

    names = tuple(dict.fromkeys(v.strip() for v in value.split(",") if v.strip()))
    unknown = [name for name in names if name not in FORMATS]
    if unknown or not names:
        raise click.BadParameter(f"{value!r}: give a comma-separated subset of "
                                 f"{','.join(FORMATS)}")
    return names


_FORMATS_OPTION = click.option(
    "--formats", default="csv,recordio", show_default=True, callback=_formats_option,
    help="Channel formats to write, comma-separated: csv (label first, no header) and/or "
         "recordio (RecordIO-protobuf, as write_numpy_to_dense_tensor writes it).")


def _report_channels(split: Any, channels: dict[str, str], feature_dim: int) -> None:
    for line in split.describe():
        click.echo(line)
    rows = {"train": len(split.train_y), "test": len(split.test_y)}
    for name, directory in channels.items():
        click.echo(f"{name}: {directory} ({rows[name.split('_', 1)[0]]} rows)")
    fmt = "recordio" if "train_recordio" in channels else "csv"
    click.echo(f"train with: openknn train --train {channels[f'train_{fmt}']} "
               f"--test {channels[f'test_{fmt}']} --hp feature_dim={feature_dim} --hp k=10 "
               "--hp sample_size=200000 --hp predictor_type=classifier")


@datasets_group.command(name="covtype")
@click.option("--path", default=None,
              help="A local UCI covtype.data[.gz] or Kaggle train.csv[.gz]; without it, "
                   "UCI's covtype.data.gz is downloaded (and cached).")
@click.option("--output", type=click.Path(file_okay=False), default="data/covtype",
              show_default=True, help="Where the train/ and test/ channels are written.")
@click.option("--cache-dir", type=click.Path(file_okay=False), default=None,
              help="Download cache (default: $OPENKNN_CACHE, else ~/.cache/openknn).")
@_FORMATS_OPTION
@reports_errors
def datasets_covtype(path: str | None, output: str, cache_dir: str | None,
                     formats: tuple[str, ...]) -> None:
    """Covertype as the tutorial prepares it: seed 0 shuffle, 90/10 split."""
    from .jobs import datasets

    # --output is checked before minutes of download and parsing; s3:// is uploaded at the end
    split, channels = datasets.write_dataset(output, lambda: datasets.tutorial_split(
        datasets.load_covtype(datasets.covtype_file(path, cache_dir))), formats)
    _report_channels(split, channels, 54)


@datasets_group.command(name="fashion-mnist")
@click.option("--path", type=click.Path(), default=None,
              help="A folder with the four IDX files (default: Debian's "
                   "/usr/share/datasets/fashion-mnist).")
@click.option("--output", type=click.Path(file_okay=False), default="data/fashion-mnist",
              show_default=True, help="Where the train/ and test/ channels are written.")
@_FORMATS_OPTION
@reports_errors
def datasets_fashion_mnist(path: str | None, output: str, formats: tuple[str, ...]) -> None:
    """Fashion-MNIST's 60,000 / 10,000 split, float32 pixels and labels."""
    from .jobs import datasets

    split, channels = datasets.write_dataset(
        output, lambda: datasets.fashion_mnist_split(Path(path) if path else None), formats)
    _report_channels(split, channels, 784)


@main.group()
def endpoints() -> None:
    """Local endpoints started by the SDK's deploy(): list them, delete them by name."""


@endpoints.command(name="list")
@reports_errors
def endpoints_list() -> None:
    """Endpoints and their status; entries whose process is gone (a crashed owner) or is not
    the endpoint are removed on the way, and no process is signalled."""
    from .sdk import endpoints as registry

    for info in registry.list_endpoints():
        click.echo(f"{info.name}\t{info.status}\t{info.url or '-'}\tpid {info.pid or '-'}\t"
                   f"{info.model_data}")


@endpoints.command(name="delete")
@click.argument("name")
@reports_errors
def endpoints_delete(name: str) -> None:
    """Stop an endpoint and free its port (only a process proven to be that endpoint is
    signalled)."""
    from .sdk import endpoints as registry

    registry.delete(name)
    click.echo(f"deleted {name}")


@main.command()
@click.option("--path", default=None,
              help="A local covtype.data(.gz) or Kaggle train.csv(.gz); default: download "
                   "UCI's covtype, else fall back to scikit-learn's digits.")
@click.option("--workdir", type=click.Path(file_okay=False), default="openknn-quickstart",
              show_default=True, help="Where the data, the model and the logs go.")
@click.option("--k", type=int, default=10, show_default=True)
@click.option("--service", is_flag=True,
              help="Run the job and the endpoint on openknn up (the service AWS_ENDPOINT_URL "
                   "names: eval \"$(openknn env)\"), the data uploaded to its S3.")
@reports_errors
def quickstart(path: str | None, workdir: str, k: int, service: bool) -> None:
    """Data → training job → endpoint → predictions → accuracy and latency → endpoint deleted."""
    from . import quickstart as flow

    flow.run(Path(workdir), path, k, service=service)


# ---------------------------------------------------------------- openknn bench


@main.command()
@click.option("--quick", is_flag=True,
              help="A few-minute smoke run: subsampled test rows, requests and Fashion-MNIST.")
@click.option("--output", type=click.Path(file_okay=False), default="bench-report",
              show_default=True, help="Where report.md and the PNG plots are written.")
@click.option("--covtype-path", type=click.Path(dir_okay=False), default=None,
              help="A local covtype.data[.gz] or Kaggle train.csv[.gz]; default: UCI's "
                   "covtype (cached or downloaded).")
@click.option("--fashion-path", type=click.Path(file_okay=False), default=None,
              help="A folder with Fashion-MNIST's IDX files (and its exact 100-NN ground "
                   "truth); default: Debian's /usr/share/datasets/fashion-mnist.")
@click.option("--threads", type=int, default=None,
              help="faiss threads for the server and raw faiss (default: all CPUs).")
@reports_errors
def bench(quick: bool, output: str, covtype_path: str | None, fashion_path: str | None,
          threads: int | None) -> None:
    """Benchmark report: the tutorial's Part 2 models and HNSW / IVFFlat through the real
    endpoint, beside raw faiss and scikit-learn; writes report.md and PNG plots."""
    import shlex

    from .bench import config as bench_config
    from .bench import run as bench_run

    if not click.get_current_context().find_root().params.get("verbose"):
        logging.getLogger("openknn").setLevel(logging.WARNING)  # the jobs' own log lines
        logging.getLogger(bench_run.__name__).setLevel(logging.INFO)  # progress
    given = [("--output", output), ("--covtype-path", covtype_path),
             ("--fashion-path", fashion_path), ("--threads", threads)]
    command = shlex.join(["openknn", "bench", *(["--quick"] if quick else []),
                          *[str(p) for name, value in given if value is not None
                            for p in (name, value)]])
    cfg = bench_config.BenchConfig.make(quick, threads)
    click.echo(bench_run.run(cfg, local_location(output, "--output"),
                             Path(covtype_path) if covtype_path else None,
                             Path(fashion_path) if fashion_path else None, command))


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on; anything but loopback lets others use the service.")
@click.option("--port", type=int, default=8000, show_default=True,
              help="The one port of every API (0: a free one, printed).")
@click.option("--home", type=click.Path(file_okay=False), default=None,
              help="Where state and S3 objects live (default: $OPENKNN_HOME or ~/.openknn).")
@click.option("--s3-endpoint", default=None,
              help="Use this S3 (AWS, MinIO, Ceph) instead of the embedded store.")
@click.option("--auth", "auth_file", type=click.Path(dir_okay=False), default=None,
              metavar="FILE",
              help="Serve only requests SigV4-signed with a key pair of FILE, an AWS "
                   "shared-credentials file ([name] sections with aws_access_key_id and "
                   "aws_secret_access_key); default: any credentials.")
@reports_errors
def up(host: str, port: int, home: str | None, s3_endpoint: str | None,
       auth_file: str | None) -> None:
    """A local SageMaker: the SageMaker API, Runtime, CloudWatch Logs, STS and an S3 store on
    one port, for the real SageMaker SDK and boto3 (see `openknn env`)."""
    from .service import up as service_up

    service_up.run(host, port, Path(home) if home else service_up.default_home(), s3_endpoint,
                   Path(auth_file) if auth_file else None)


@main.command(name="env")
@click.option("--endpoint-url", default=None,
              help="The service's URL (default: http://127.0.0.1:8000).")
@click.option("--home", type=click.Path(file_okay=False), default=None,
              help="Where the SDK's config file goes when the service does not answer "
                   "(default: the running service's home, else $OPENKNN_HOME or ~/.openknn).")
@click.option("--write-role-metadata", is_flag=True,
              help="Also write /opt/ml/metadata/resource-metadata.json, so that the SDK's "
                   "get_execution_role() answers offline.")
@click.option("--auth", "auth_file", type=click.Path(dir_okay=False), default=None,
              metavar="FILE",
              help="The service's --auth file: clients read their keys from it (its first "
                   "profile) instead of the dummy ones (default: the file the running "
                   "service was given, if any).")
@reports_errors
def env_cmd(endpoint_url: str | None, home: str | None, write_role_metadata: bool,
            auth_file: str | None) -> None:
    """Print the export lines that point the SageMaker SDK, boto3, s3fs and the AWS CLI at
    `openknn up` (use: eval "$(openknn env)")."""
    import httpx

    from .service import auth as service_auth
    from .service import env as service_env
    from .service import up as service_up

    url = (endpoint_url or service_env.DEFAULT_URL).rstrip("/")
    status: dict[str, Any] = {}
    try:
        answer = httpx.get(f"{url}/_openknn/health", timeout=2, trust_env=False)
        status = answer.json() if answer.status_code == 200 else {}
    except (httpx.HTTPError, ValueError):
        click.echo(f"# openknn env: no service answers at {url} yet; start it with openknn up",
                   err=True)
    where = Path(home) if home else Path(status.get("home") or service_up.default_home())
    config = where.expanduser() / service_env.CONFIG_FILE  # openknn up writes it
    if not config.exists():
        service_env.write_config(where.expanduser(), service_env.default_bucket())
    if write_role_metadata:
        path = service_env.write_role_metadata()
        click.echo(f"# wrote {path}", err=True)
    credentials = service_env.read_auth(where.expanduser()) if status else None
    if auth_file is not None:
        keys = service_auth.load_keys(Path(auth_file).expanduser().resolve())
        credentials = keys.source, keys.first.profile
    click.echo(service_env.export_lines(service_env.variables(
        url, config, status.get("s3_endpoint"), credentials=credentials)), nl=False)
