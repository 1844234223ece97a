"""Model files (decision 8): ``model_algo-1`` (faiss index), ``model_algo-1.labels`` (raw
float32), ``model_algo-1.json``; written atomically, packed as ``model.tar.gz``, loaded safely."""

from __future__ import annotations

import gzip
import io
import json
import os
import tarfile
import tempfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from . import index as faiss_index
from .errors import ModelError
from .model import KnnModel, ModelMeta
from .reduction import Projection

HOST = "algo-1"
INDEX_FILE = f"model_{HOST}"
LABELS_FILE = f"{INDEX_FILE}.labels"
META_FILE = f"{INDEX_FILE}.json"
MODEL_FILES = (INDEX_FILE, LABELS_FILE, META_FILE)  # the JSON last: it marks a complete model
NPY_MAGIC = b"\x93NUMPY"


def model_bytes(model: KnnModel) -> dict[str, bytes]:
    """The three files' contents."""
    meta = json.dumps(model.meta.to_json(), indent=2, sort_keys=True).encode()
    return {
        INDEX_FILE: faiss_index.serialize(model.index),
        LABELS_FILE: model.labels.astype("<f4").tobytes(),
        META_FILE: meta + b"\n",
    }


def atomic_write(path: Path, data: bytes) -> None:
    """Write to a temporary file beside ``path`` and rename it into place."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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


def _read_tar(path: Path) -> dict[str, bytes]:
    """Read the model members into memory; nothing is extracted, so no path can escape."""
    out: dict[str, bytes] = {}
    try:
        with tarfile.open(path, mode="r:*") as tar:
            for member in tar.getmembers():
                name = os.path.normpath(member.name)
                if name in MODEL_FILES and member.isfile():
                    f = tar.extractfile(member)
                    if f is not None:
                        out[name] = f.read()
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise ModelError(f"{path}: not a readable model.tar.gz ({exc})") from None
    return out


def unpack(path: str | os.PathLike[str], directory: str | os.PathLike[str]) -> None:
    """Extract a ``model.tar.gz`` into ``directory``, refusing members that would escape it."""
    try:
        with tarfile.open(path, mode="r:*") as tar:
            tar.extractall(directory, filter="data")
    except tarfile.FilterError as exc:
        raise ModelError(f"{path}: unsafe archive member refused ({exc})") from None
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise ModelError(f"{path}: not a readable model.tar.gz ({exc})") from None


def _read_dir(path: Path) -> dict[str, bytes]:
    return {name: (path / name).read_bytes() for name in MODEL_FILES if (path / name).is_file()}


def read_labels(data: bytes, source: str) -> np.ndarray:
    """Raw little-endian float32, or a ``.npy`` array (also accepted, decision 8)."""
    if data.startswith(NPY_MAGIC):
        labels: np.ndarray = np.load(io.BytesIO(data), allow_pickle=False)
        return labels.astype(np.float32).ravel()
    if len(data) % 4:
        raise ModelError(f"{source}: {len(data)} bytes is not a whole number of float32 labels")
    return np.frombuffer(data, dtype="<f4").astype(np.float32)


def from_files(files: Mapping[str, bytes], source: str = "<model>") -> KnnModel:
    """A model from the three files' contents (the inverse of ``model_bytes``)."""
    missing = [name for name in MODEL_FILES if name not in files]
    if missing:
        raise ModelError(f"{source}: the model is missing {', '.join(missing)}; expected the "
                         f"files {', '.join(MODEL_FILES)} as written by openknn train")
    try:
        meta_obj = json.loads(files[META_FILE])
    except ValueError as exc:
        raise ModelError(f"{source}/{META_FILE}: not valid JSON ({exc})") from None
    meta = ModelMeta.from_json(meta_obj, f"{source}/{META_FILE}")
    try:
        index = faiss_index.deserialize(files[INDEX_FILE])
    except RuntimeError as exc:
        raise ModelError(f"{source}/{INDEX_FILE}: not a faiss index ({exc})") from None
    labels = read_labels(files[LABELS_FILE], f"{source}/{LABELS_FILE}")
    if labels.shape[0] != index.ntotal:
        raise ModelError(f"{source}: {labels.shape[0]} labels for {index.ntotal} indexed "
                         "points; the labels file must hold one float32 per index id")
    projection = (Projection.from_json(meta.dimension_reduction)
                  if meta.dimension_reduction else None)
    return KnnModel(meta=meta, index=index, labels=labels, projection=projection)


def load(path: str | os.PathLike[str]) -> KnnModel:
    """Load a model from a directory or a ``model.tar.gz``; edits of ``k``/``predictor_type``
    in the JSON take effect."""
    p = Path(path)
    if not p.exists():
        raise ModelError(f"Model path {str(p)!r} does not exist; give a model directory or "
                         "model.tar.gz")
    files = _read_dir(p) if p.is_dir() else _read_tar(p)
    return from_files(files, str(p))
