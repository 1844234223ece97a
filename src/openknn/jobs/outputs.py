"""Writing into an output location: files renamed into place whole (``atomic_file``), one
job at a time per location (``hold_output``), and the sweep of what a killed job left.

Apart from ``artifact`` (which packs models and loads them with faiss) so that what only
writes files (``datasets``, the SDK's endpoint registry) does not import faiss."""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
import secrets
import stat
from collections.abc import Collection, Iterator
from pathlib import Path
from typing import BinaryIO

from ..errors import ClientError

log = logging.getLogger(__name__)

# atomic_file's temporaries: ".<target>.<8 random>.tmp" (tempfile.mkstemp's names alike)
TEMPORARY = re.compile(r"\.(?P<target>.+)\.[a-z0-9_]{8}\.tmp")

class OutputInUse(ClientError):
    """Another job is writing into the same output location right now."""


def _temporary(path: Path, mode: int) -> tuple[int, Path]:
    """A new file beside ``path`` named by TEMPORARY, created as ``open()`` creates files
    (``mode`` less the umask, default ACLs applied), never through an existing name."""
    while True:
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        try:
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
            return os.open(tmp, flags, mode), tmp
        except FileExistsError:
            continue


@contextlib.contextmanager
def atomic_file(path: Path, mode: int = 0o666) -> Iterator[BinaryIO]:
    """A file to write ``path`` through: a temporary beside it, renamed into place whole when
    the block ends, removed if it raises (a kill -9 leaves it for ``sweep_temporaries``).
    ``mode``: as ``os.open``'s, less the umask (0o600 for a private file).

    openknn's one atomic write: model files, metrics, failure files, transform outputs,
    downloads and data-set channels (``datasets``), and the SDK's endpoint registry entries.
    It lives in the jobs layer, the lowest one that writes files, beside the output lock and
    the sweep that know its temporaries' names; serving and the SDK import it."""
    fd, tmp = _temporary(path, mode)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write(path: Path, data: bytes) -> None:
    """Write to a temporary file beside ``path`` and rename it into place."""
    with atomic_file(path) as f:
        f.write(data)


@contextlib.contextmanager
def hold_output(directory: Path) -> Iterator[None]:
    """Hold ``directory`` for one job: a second job holding it fails at once. An flock on the
    directory itself, so nothing is added to what is written there (SageMaker tars
    ``/opt/ml/model``); the kernel releases it when the job ends, even by kill -9."""
    directory.mkdir(parents=True, exist_ok=True)
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise OutputInUse(f"Output location {directory} is in use: another openknn job is "
                              "writing there now; wait for it to finish or give this job "
                              "another output location") from None
        yield
    finally:
        os.close(fd)


def sweep_temporaries(directory: Path, targets: Collection[str], before: float) -> list[Path]:
    """Remove the temporaries of ``targets`` that a killed job left in ``directory``: only
    regular files of this user named by TEMPORARY and last written before ``before`` (the
    job's start); nothing else is touched. Call it while holding the directory."""
    removed: list[Path] = []
    try:
        entries = list(os.scandir(directory))
    except FileNotFoundError:
        return removed
    for entry in entries:
        match = TEMPORARY.fullmatch(entry.name)
        if match is None or match["target"] not in targets:
            continue
        try:
            st = entry.stat(follow_symlinks=False)
        except FileNotFoundError:
            continue
        if stat.S_ISREG(st.st_mode) and st.st_uid == os.geteuid() and st.st_mtime < before:
            Path(entry.path).unlink(missing_ok=True)
            removed.append(Path(entry.path))
            log.info("Removed %s (%d bytes), left by a job stopped while writing",
                     entry.path, st.st_size)
    return removed
