"""Real data sets on disk: Fashion-MNIST IDX files and ``.ivecs`` ground truth readers."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

from .errors import DataError

# Debian's dataset-fashion-mnist package installs the IDX files here.
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
FASHION_FILES = {
    "train_images": "train-images-idx3-ubyte.gz", "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz", "test_labels": "t10k-labels-idx1-ubyte.gz",
}


def _open(path: Path) -> bytes:
    with gzip.open(path) if path.suffix == ".gz" else open(path, "rb") as f:
        return f.read()


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (big-endian header: magic 0x0000080X with X dims, then uint8 data)."""
    data = _open(path)
    if len(data) < 4 or data[:2] != b"\x00\x00" or data[2] != 0x08:
        raise DataError(f"{path}: not a uint8 IDX file (magic {data[:4].hex()})")
    ndim = data[3]
    shape = tuple(int(v) for v in np.frombuffer(data, ">u4", ndim, 4))
    body = np.frombuffer(data, np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(shape)):
        raise DataError(f"{path}: header says {shape} but holds {body.size} values")
    return body.reshape(shape)


def read_ivecs(path: Path) -> np.ndarray:
    """A texmex ``.ivecs`` file: per row an int32 count k, then k int32 values."""
    raw = np.frombuffer(_open(path), "<i4")
    k = int(raw[0])
    return raw.reshape(-1, k + 1)[:, 1:]


def fashion_mnist(directory: Path | None = None) -> dict[str, np.ndarray]:
    """Fashion-MNIST as float32 rows of 784 pixels and float32 labels."""
    root = directory or DEBIAN_FASHION_MNIST
    missing = [name for name in FASHION_FILES.values() if not (root / name).exists()]
    if missing:
        raise DataError(f"Fashion-MNIST not found in {root} (missing {', '.join(missing)}); "
                        "pass --path to a folder with the IDX files, or install Debian's "
                        "dataset-fashion-mnist package")
    out = {key: read_idx(root / name) for key, name in FASHION_FILES.items()}
    for key in ("train_images", "test_images"):
        out[key] = out[key].reshape(out[key].shape[0], -1).astype(np.float32)
    for key in ("train_labels", "test_labels"):
        out[key] = out[key].astype(np.float32)
    return out
