"""Shared fixtures: where the real data sets are, and small channel writers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def shared_file(*parts: str) -> Path:
    """A file of ../shared/data, or a clean skip where it is absent."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real data set not present: {path}")
    return path


def write_csv(path: Path, features: np.ndarray, labels: np.ndarray) -> Path:
    """A training CSV: label first, no header."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = np.column_stack([labels, features])
    np.savetxt(path, rows, delimiter=",", fmt="%.9g")
    return path


class Csr:
    """Just enough of a CSR matrix for ``recordio.write_sparse``, without scipy."""

    def __init__(self, dense: np.ndarray) -> None:
        self.shape, self.dtype = dense.shape, dense.dtype
        mask = dense != 0
        self.data, self.indices = dense[mask], np.nonzero(mask)[1].astype(np.int32)
        self.indptr = np.concatenate(([0], np.cumsum(mask.sum(axis=1))))

    def tocsr(self) -> Csr:
        return self
