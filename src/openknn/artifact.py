"""Model files (decision 8): ``model_algo-1`` (faiss index), ``model_algo-1.labels`` (raw
float32), ``model_algo-1.json``; written atomically, packed as ``model.tar.gz``, loaded safely."""

from __future__ import annotations

import contextlib
import fcntl
import gzip
import io
import json
import logging
import lzma
import os
import re
import secrets
import stat
import tarfile
import zlib
from collections.abc import Collection, Iterable, Iterator, Mapping
from pathlib import Path
from typing import BinaryIO

import numpy as np

from . import index as faiss_index
from . import model_check
from .errors import ClientError, ModelError
from .model import KnnModel, ModelMeta
from .reduction import Projection

HOST = "algo-1"
INDEX_FILE = f"model_{HOST}"
LABELS_FILE = f"{INDEX_FILE}.labels"
META_FILE = f"{INDEX_FILE}.json"
MODEL_FILES = (INDEX_FILE, LABELS_FILE, META_FILE)  # the JSON last: it marks a complete model
NPY_MAGIC = b"\x93NUMPY"
# atomic_file's temporaries: ".<target>.<8 random>.tmp" (tempfile.mkstemp's names alike)
TEMPORARY = re.compile(r"\.(?P<target>.+)\.[a-z0-9_]{8}\.tmp")

log = logging.getLogger(__name__)


class OutputInUse(ClientError):
    """Another job is writing into the same output location right now."""


def model_bytes(model: KnnModel) -> dict[str, bytes]:
    """The three files' contents."""
    meta = json.dumps(model.meta.to_json(), indent=2, sort_keys=True).encode()
    return {
        INDEX_FILE: faiss_index.serialize(model.index),
        LABELS_FILE: model.labels.astype("<f4").tobytes(),
        META_FILE: meta + b"\n",
    }


def _temporary(path: Path) -> tuple[int, Path]:
    """A new file beside ``path`` named by TEMPORARY, created as ``open()`` creates files
    (mode 0o666 less the umask, default ACLs applied), never through an existing name."""
    while True:
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        try:
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
            return os.open(tmp, flags, 0o666), tmp
        except FileExistsError:
            continue


@contextlib.contextmanager
def atomic_file(path: Path) -> Iterator[BinaryIO]:
    """A file to write ``path`` through: a temporary beside it, renamed into place whole when
    the block ends, removed if it raises (a kill -9 leaves it for ``sweep_temporaries``)."""
    fd, tmp = _temporary(path)
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


def write_model_dir(model: KnnModel, directory: str | os.PathLike[str]) -> None:
    """Write the three files into ``directory`` (SageMaker's ``/opt/ml/model``).

    Each file is renamed into place whole, the JSON last, and the loader requires the JSON,
    so a killed job never leaves a model that loads half-written.
    """
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    for name, data in model_bytes(model).items():
        atomic_write(out / name, data)


def pack(files: Mapping[str, bytes]) -> bytes:
    """A ``model.tar.gz`` holding ``files`` at its top level (as SageMaker tars /opt/ml/model)."""
    buf = io.BytesIO()
    # Level 1: float vectors barely compress, and level 9 costs seconds per 100 MB. mtime 0
    # in the gzip header (as in the members): the same model gives the same bytes. The JSON
    # first, so that a loader holds the larger members to the sizes it implies.
    ordered = sorted(files.items(), key=lambda item: item[0] != META_FILE)
    with gzip.GzipFile(fileobj=buf, mode="wb", compresslevel=1, mtime=0) as gz, \
            tarfile.open(fileobj=gz, mode="w") as tar:
        for name, data in ordered:
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def write_model_tar(model: KnnModel, path: str | os.PathLike[str]) -> None:
    """Write ``model.tar.gz`` atomically."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(target, pack(model_bytes(model)))


# Loading checks sizes before it reads (issue 10): a member's size comes from its tar header
# (or the file's stat) and is held against what model_algo-1.json says the model can take
# (openknn.model_check: points x dimension per index type) before a byte of it is read.
MAX_META_BYTES = 32 << 20  # model_algo-1.json; its largest field, center, is index_dim numbers
MAX_MEMBERS = 64
MAX_HEADER_BYTES = 1 << 20  # a pax or GNU long-name header, which tarfile reads whole
EXPANSION_FLOOR = 64 << 20
EXPANSION_RATIO = 128
"""Before model_algo-1.json is read (openknn's archives hold it last), the members may declare
at most max(EXPANSION_FLOOR, EXPANSION_RATIO x the archive's size) bytes in all. Measured with
gzip -1: covtype and Fashion-MNIST indexes compress 3-10x, 1 %-dense binary data 76x, zeros
229x (gzip -9: 1,029x), so a small archive declaring gigabytes is refused from its headers."""
_EXTENDED_HEADERS = (tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK, tarfile.XHDTYPE,
                     tarfile.XGLTYPE, tarfile.SOLARIS_XHDTYPE)
_DECOMPRESSION_ERRORS = (tarfile.TarError, OSError, EOFError, zlib.error, lzma.LZMAError)


class _Refused(Exception):
    """A tar header refused inside tarfile's own reading; reported as a ModelError."""


class _BoundedTarInfo(tarfile.TarInfo):
    """Refuses a pax or GNU long-name header over MAX_HEADER_BYTES before tarfile reads it."""

    def _proc_member(self, archive: tarfile.TarFile) -> tarfile.TarInfo:
        if self.type in _EXTENDED_HEADERS and self.size > MAX_HEADER_BYTES:
            raise _Refused(f"an extended tar header declares {self.size} bytes; at most "
                           f"{MAX_HEADER_BYTES} are read")
        member: tarfile.TarInfo = super()._proc_member(archive)  # type: ignore[misc]
        return member


def _limit(name: str, meta: ModelMeta | None) -> int | None:
    """The most bytes model file ``name`` may hold; None where nothing bounds it yet."""
    if name == META_FILE:
        return MAX_META_BYTES
    if meta is None:
        return None
    if name == INDEX_FILE:
        return model_check.index_bytes_limit(meta)
    return model_check.labels_bytes_limit(meta)


def _check_size(name: str, size: int, meta: ModelMeta | None, source: str) -> None:
    limit = _limit(name, meta)
    if limit is None or size <= limit:
        return
    if meta is None:
        raise ModelError(f"{source}/{name}: {size} bytes, more than the {limit} a model JSON "
                         "may take")
    raise ModelError(
        f"{source}/{name}: {size} bytes, more than the {limit} that a {meta.index_type} model "
        f"of num_points={meta.num_points} and index_dim={meta.index_dim} (its {META_FILE}) "
        "can take; the file is corrupt or belongs to another model")


class _TarReader:
    """One pass over a model.tar.gz's members (``tarfile.next``, never ``getmembers``), each
    member's declared size checked before a byte of it is read; nothing is extracted."""

    def __init__(self, path: Path) -> None:
        self.path, self.source = path, str(path)
        self.budget = max(EXPANSION_FLOOR, EXPANSION_RATIO * path.stat().st_size)
        self.expanded = 0
        self.files: dict[str, bytes] = {}
        self.meta: ModelMeta | None = None

    def read(self) -> dict[str, bytes]:
        try:
            with tarfile.open(self.path, mode="r:*", tarinfo=_BoundedTarInfo) as tar:
                for count, member in enumerate(tar, 1):
                    if count > MAX_MEMBERS:
                        raise ModelError(f"{self.source}: more than {MAX_MEMBERS} archive "
                                         f"members; a model.tar.gz holds {len(MODEL_FILES)}")
                    self._member(tar, member)
        except _Refused as exc:
            raise ModelError(f"{self.source}: {exc}") from None
        except _DECOMPRESSION_ERRORS as exc:
            raise ModelError(f"{self.source}: not a readable model.tar.gz ({exc})") from None
        return self.files

    def _member(self, tar: tarfile.TarFile, member: tarfile.TarInfo) -> None:
        name = os.path.normpath(member.name)
        wanted = name in MODEL_FILES and member.isreg() and not member.issparse()
        if wanted and name in self.files:
            raise ModelError(f"{self.source}: the archive holds {name} twice")
        if wanted and _limit(name, self.meta) is not None:
            _check_size(name, member.size, self.meta, self.source)
        else:
            self._expand(name, member.size)
        if not wanted:
            return  # skipped: tarfile seeks past it, reading nothing into memory
        f = tar.extractfile(member)
        self.files[name] = f.read() if f is not None else b""
        if name == META_FILE:
            self.meta = _meta(self.files[name], f"{self.source}/{META_FILE}")
            for other, data in self.files.items():  # read before the JSON was
                _check_size(other, len(data), self.meta, self.source)

    def _expand(self, name: str, size: int) -> None:
        self.expanded += size
        if self.expanded > self.budget:
            raise ModelError(
                f"{self.source}: member {name!r} declares {size} bytes, and the archive would "
                f"expand to {self.expanded} before {META_FILE} bounds it: more than "
                f"{self.budget} (the larger of {EXPANSION_FLOOR} and {EXPANSION_RATIO}x the "
                f"archive's {self.path.stat().st_size} bytes). Model files do not compress "
                f"like that; if this is a real model, pack it with {META_FILE} first")


def _read_tar(path: Path) -> dict[str, bytes]:
    """Read the model members into memory, sizes checked first; nothing is extracted, so no
    path can escape."""
    return _TarReader(path).read()


def unpack(path: str | os.PathLike[str], directory: str | os.PathLike[str]) -> None:
    """Extract a ``model.tar.gz`` into ``directory``, refusing members that would escape it."""
    try:
        with tarfile.open(path, mode="r:*") as tar:
            tar.extractall(directory, filter="data")
    except tarfile.FilterError as exc:
        raise ModelError(f"{path}: unsafe archive member refused ({exc})") from None
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise ModelError(f"{path}: not a readable model.tar.gz ({exc})") from None


def _missing(names: Iterable[str], source: str) -> None:
    present = set(names)
    missing = [name for name in MODEL_FILES if name not in present]
    if missing:
        raise ModelError(f"{source}: the model is missing {', '.join(missing)}; expected the "
                         f"files {', '.join(MODEL_FILES)} as written by openknn train")


def _read_file(path: Path, limit: int | None, name: str, meta: ModelMeta | None) -> bytes:
    """A model file whose size (stat, then what is read) is within ``limit``."""
    size = path.stat().st_size
    _check_size(name, size, meta, str(path.parent))
    with open(path, "rb") as f:
        data = f.read() if limit is None else f.read(min(size, limit) + 1)
    _check_size(name, len(data), meta, str(path.parent))
    return data


def _read_dir(path: Path) -> dict[str, bytes]:
    """The three files, the JSON first, each refused by its size before it is read."""
    _missing([name for name in MODEL_FILES if (path / name).is_file()], str(path))
    files = {META_FILE: _read_file(path / META_FILE, MAX_META_BYTES, META_FILE, None)}
    meta = _meta(files[META_FILE], f"{path}/{META_FILE}")
    for name in (INDEX_FILE, LABELS_FILE):
        files[name] = _read_file(path / name, _limit(name, meta), name, meta)
    return files


def _meta(data: bytes, source: str) -> ModelMeta:
    try:
        obj = json.loads(data)
    except (ValueError, RecursionError) as exc:  # RecursionError: nested thousands deep
        raise ModelError(f"{source}: not valid JSON ({exc})") from None
    return ModelMeta.from_json(obj, source)


def read_labels(data: bytes, source: str, points: int | None = None) -> np.ndarray:
    """Raw little-endian float32, or a ``.npy`` array of numbers (also accepted, decision 8);
    with ``points``, checked to be finite and one per indexed point."""
    if data.startswith(NPY_MAGIC):
        labels = model_check.npy_labels(data, source)
    elif len(data) % 4:
        raise ModelError(f"{source}: {len(data)} bytes is not a whole number of float32 labels")
    else:
        labels = np.frombuffer(data, dtype="<f4")
    if points is None:
        return labels.astype(np.float32).ravel()
    return model_check.check_labels(labels, points, source)


def from_files(files: Mapping[str, bytes], source: str = "<model>") -> KnnModel:
    """A model from the three files' contents (the inverse of ``model_bytes``), every field
    and size checked: a model that loads can answer."""
    _missing(files, source)
    meta = _meta(files[META_FILE], f"{source}/{META_FILE}")
    for name in (INDEX_FILE, LABELS_FILE):
        _check_size(name, len(files[name]), meta, source)
    index = model_check.deserialize_index(files[INDEX_FILE], f"{source}/{INDEX_FILE}")
    model_check.check_index(meta, index, f"{source}/{INDEX_FILE}")
    labels = read_labels(files[LABELS_FILE], f"{source}/{LABELS_FILE}", int(index.ntotal))
    projection = (Projection.from_json(meta.dimension_reduction)
                  if meta.dimension_reduction else None)
    return KnnModel(meta=meta, index=index, labels=labels, projection=projection)


def load(path: str | os.PathLike[str]) -> KnnModel:
    """Load a model from a directory or a ``model.tar.gz``; edits of ``k``/``predictor_type``
    in the JSON take effect. A model that cannot answer fails here with a ``ModelError``
    naming the file and the field, before anything larger than the JSON allows is read."""
    p = Path(path)
    if not p.exists():
        raise ModelError(f"Model path {str(p)!r} does not exist; give a model directory or "
                         "model.tar.gz")
    files = _read_dir(p) if p.is_dir() else _read_tar(p)
    return from_files(files, str(p))
