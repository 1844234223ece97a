"""The ``openknn`` command line: a thin click layer over the jobs. It alone configures
logging, and it turns every openknn error into one ``ClientError: ...`` line and an exit code."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Any, TypeVar

import click

from . import hyperparameters
from .errors import AlgorithmError, OpenKnnError

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
            click.echo("Interrupted; no model was written.", err=True)
            sys.exit(130)
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
@click.option("--hp", "hps", multiple=True, metavar="NAME=VALUE",
              help="A hyperparameter, repeatable: --hp k=10 --hp feature_dim=54 ...")
@click.option("--hyperparameters", "hp_file", type=click.Path(dir_okay=False),
              help="A hyperparameters.json (all-strings map); --hp values override it.")
@click.option("--output-dir", type=click.Path(file_okay=False), default="out",
              show_default=True, help="Where model.tar.gz and metrics.json are written.")
@click.option("--sm-root", type=click.Path(file_okay=False),
              help="Run as a SageMaker training container rooted here (e.g. /opt/ml).")
@click.option("--threads", type=int, default=None, help="faiss threads (default: all CPUs).")
def train(train: str | None, test: str | None, content_type: str | None, hps: tuple[str, ...],
          hp_file: str | None, output_dir: str, sm_root: str | None, threads: int | None) -> None:
    """Train a k-NN model (SageMaker's training job)."""
    from . import container, training

    if sm_root is not None:
        root = Path(sm_root)
        try:
            spec = container.spec_from_root(root, threads)
            training.run(spec)
        except Exception as exc:
            fail(exc, lambda reason: container.write_failure(root, reason))
        return
    _train_local(train, test, content_type, hps, hp_file, Path(output_dir), threads)


@reports_errors
def _train_local(train: str | None, test: str | None, content_type: str | None,
                 hps: tuple[str, ...], hp_file: str | None, output_dir: Path,
                 threads: int | None) -> None:
    import json

    from . import training
    from .data import Channel
    from .errors import ChannelError

    if train is None:
        raise ChannelError("Must provide train channel: pass --train PATH (or --sm-root)")
    raw: dict[str, object] = {}
    if hp_file is not None:
        raw.update(json.loads(Path(hp_file).read_text()))
    raw.update(hyperparameters.parse_assignments(hps))
    channels = {"train": Channel("train", train, content_type)}
    if test is not None:
        channels["test"] = Channel("test", test, content_type)
    spec = training.TrainingJobSpec(raw, channels, output_dir=output_dir, threads=threads)
    result = training.run(spec)
    click.echo(f"model: {output_dir / training.MODEL_TAR}")
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
