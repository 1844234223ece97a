"""`openknn` commands run in this process by click's CliRunner (nothing is forked): the exit
code, stdout and stderr kept apart, shaped like ``subprocess.CompletedProcess``.

The command line sets process-wide state a subprocess would take with it: the root logger's
handler and level (``setup_logging``), SIGTERM's handler (``openknn train``), faiss's OpenMP
threads (``--threads``, default all CPUs), and ``cwd`` the working directory. ``openknn``
puts all of it back afterwards, and exceptions other than ``SystemExit`` are not caught:
where a real process would print a traceback, the test fails with the exception itself.

Tests whose point is the process itself (signals, kill -9, locks held by another process,
the ``python -m openknn`` entry, the umask) keep running ``sys.executable -m openknn``."""

from __future__ import annotations

import contextlib
import inspect
import logging
import os
import signal
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import faiss
from click.testing import CliRunner

from openknn import cli
from openknn.core import index as faiss_index

# loggers the CLI sets a level on (setup_logging, bench)
_LOGGERS = ("", "openknn", "faiss.loader", "httpx", "botocore", "aiobotocore", "s3fs", "fsspec")


@dataclass(frozen=True)
class Ran:
    """What a command did: ``returncode``, ``stdout`` / ``stderr`` as text, ``stdout_bytes``."""

    args: list[str]
    returncode: int
    stdout: str
    stderr: str
    stdout_bytes: bytes


@contextlib.contextmanager
def _process_state_restored() -> Iterator[None]:
    root = logging.getLogger()
    handlers = list(root.handlers)
    levels = {name: logging.getLogger(name).level for name in _LOGGERS}
    sigterm = signal.getsignal(signal.SIGTERM)
    omp, configured = faiss.omp_get_max_threads(), faiss_index._configured[0]
    cwd = Path.cwd()
    try:
        yield
    finally:
        os.chdir(cwd)
        faiss_index.set_threads(configured)
        faiss.omp_set_num_threads(omp)
        signal.signal(signal.SIGTERM, sigterm)
        root.handlers[:] = handlers
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)


def _runner() -> CliRunner:
    """stderr apart from stdout: always so in click >= 8.2, asked for in 8.1 (the floor)."""
    if "mix_stderr" in inspect.signature(CliRunner).parameters:
        return CliRunner(mix_stderr=False)  # type: ignore[call-arg]
    return CliRunner()


def openknn(*args: str, input: str | bytes | None = None,
            env: Mapping[str, str] | None = None, cwd: Path | None = None) -> Ran:
    """``openknn ARGS`` in this process: ``input`` on stdin, ``env`` over ``os.environ``
    (both put back afterwards), run in ``cwd``."""
    with _process_state_restored():
        if cwd is not None:
            os.chdir(cwd)
        result = _runner().invoke(cli.main, list(args), input=input,
                                  env=dict(env) if env else None, catch_exceptions=False)
    return Ran(list(args), result.exit_code, result.stdout, result.stderr,
               result.stdout_bytes)
