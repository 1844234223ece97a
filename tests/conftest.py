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
