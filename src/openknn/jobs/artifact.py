"""Model files (decision 8): ``model_algo-1`` (faiss index), ``model_algo-1.labels`` (raw
float32), ``model_algo-1.json``; written atomically, packed as ``model.tar.gz``, loaded safely."""

from __future__ import annotations

import gzip
import io
import logging
import lzma
import os
import tarfile
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import IO

from ..core.model import KnnModel, from_files, model_bytes
from ..core.model_files import (
    INDEX_FILE,
    LABELS_FILE,
    MAX_META_BYTES,
    META_FILE,
    MODEL_FILES,
    ModelMeta,
    check_present,
    check_size,
    file_limit,
    read_meta,
)
from ..errors import ModelError
from .outputs import atomic_write
from .storage import is_remote, local_location, open_remote

log = logging.getLogger(__name__)


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


# Loading checks sizes before it reads: a member's size comes from its tar header
# (or the file's stat) and is held against what model_algo-1.json says the model can take
# (openknn.core.model_files: points x dimension per index type) before a byte of it is read.
MAX_MEMBERS = 64
MAX_HEADER_BYTES = 1 << 20  # a pax or GNU long-name header, which tarfile reads whole
EXPANSION_FLOOR = 64 << 20
EXPANSION_RATIO = 128
"""Before model_algo-1.json is read (openknn packs it first; other archives may hold it anywhere),
the members may declare at most max(EXPANSION_FLOOR, EXPANSION_RATIO x the archive's size) bytes
in all. Measured with gzip -1: covtype and Fashion-MNIST indexes compress 3-10x, 1 %-dense
binary data 76x, zeros 229x (gzip -9: 1,029x), so a small archive declaring gigabytes is refused
from its headers."""
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


class _TarReader:
    """One pass over a model.tar.gz's members (``tarfile.next``, never ``getmembers``), each
    member's declared size checked before a byte of it is read; nothing is extracted."""

    def __init__(self, source: str, stream: IO[bytes], size: int) -> None:
        self.source, self.stream, self.size = source, stream, size
        self.budget = max(EXPANSION_FLOOR, EXPANSION_RATIO * size)
        self.expanded = 0
        self.files: dict[str, bytes] = {}
        self.meta: ModelMeta | None = None

    def read(self) -> dict[str, bytes]:
        try:
            with tarfile.open(fileobj=self.stream, mode="r:*", tarinfo=_BoundedTarInfo) as tar:
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
        if wanted and file_limit(name, self.meta) is not None:
            check_size(name, member.size, self.meta, self.source)
        else:
            self._expand(name, member.size)
        if not wanted:
            return  # skipped: tarfile seeks past it, reading nothing into memory
        f = tar.extractfile(member)
        self.files[name] = f.read() if f is not None else b""
        if name == META_FILE:
            self.meta = read_meta(self.files[name], f"{self.source}/{META_FILE}")
            for other, data in self.files.items():  # read before the JSON was
                check_size(other, len(data), self.meta, self.source)

    def _expand(self, name: str, size: int) -> None:
        self.expanded += size
        if self.expanded > self.budget:
            raise ModelError(
                f"{self.source}: member {name!r} declares {size} bytes, and the archive would "
                f"expand to {self.expanded} before {META_FILE} bounds it: more than "
                f"{self.budget} (the larger of {EXPANSION_FLOOR} and {EXPANSION_RATIO}x the "
                f"archive's {self.size} bytes). Model files do not compress "
                f"like that; if this is a real model, pack it with {META_FILE} first")


def _read_tar(path: Path) -> dict[str, bytes]:
    """Read the model members into memory, sizes checked first; nothing is extracted, so no
    path can escape."""
    with open(path, "rb") as stream:
        return _TarReader(str(path), stream, path.stat().st_size).read()


def _read_file(path: Path, limit: int | None, name: str, meta: ModelMeta | None) -> bytes:
    """A model file whose size (stat, then what is read) is within ``limit``."""
    size = path.stat().st_size
    check_size(name, size, meta, str(path.parent))
    with open(path, "rb") as f:
        data = f.read() if limit is None else f.read(min(size, limit) + 1)
    check_size(name, len(data), meta, str(path.parent))
    return data


def _read_dir(path: Path) -> dict[str, bytes]:
    """The three files, the JSON first, each refused by its size before it is read."""
    check_present([name for name in MODEL_FILES if (path / name).is_file()], str(path))
    files = {META_FILE: _read_file(path / META_FILE, MAX_META_BYTES, META_FILE, None)}
    meta = read_meta(files[META_FILE], f"{path}/{META_FILE}")
    for name in (INDEX_FILE, LABELS_FILE):
        files[name] = _read_file(path / name, file_limit(name, meta), name, meta)
    return files




def load(path: str | os.PathLike[str]) -> KnnModel:
    """Load a model from a directory or a ``model.tar.gz``; edits of ``k``/``predictor_type``
    in the JSON take effect. A model that cannot answer fails here with a ``ModelError``
    naming the file and the field, before anything larger than the JSON allows is read.
    An ``s3://`` URI names a ``model.tar.gz`` object (SageMaker's ModelDataUrl), read in
    place, never copied to a local path."""
    if is_remote(path):
        source = os.fspath(path)
        stream, size = open_remote(source, "Model location")
        with stream:
            return from_files(_TarReader(source, stream, size).read(), source)
    p = local_location(path, "Model location")
    if not p.exists():
        raise ModelError(f"Model path {str(p)!r} does not exist; give a model directory or "
                         "model.tar.gz")
    files = _read_dir(p) if p.is_dir() else _read_tar(p)
    return from_files(files, str(p))
