"""The one finiteness check: NaN and ±inf are refused in training records, request rows and
model labels, naming the first bad one.

It is in core, the lowest layer its users share: the data layer (``jobs.data``), inference
(``serving.inference``) and the model files' labels (``core.model_files``)."""

from __future__ import annotations

import numpy as np

from ..errors import DataError


def first_non_finite(values: np.ndarray) -> int | None:
    """The 0-based index of the first row of ``values`` holding NaN or ±inf (of a 1-D array,
    the first such value), or None where every value is finite."""
    finite = np.isfinite(values)
    if finite.all():  # the usual case, in one pass
        return None
    if finite.ndim > 1:
        finite = finite.all(axis=tuple(range(1, finite.ndim)))
    return int(np.argmax(~finite))


def check_features(features: np.ndarray, source: str, unit: str, remedy: str,
                   first: int = 0) -> None:
    """A DataError ``"<source>, <unit> <n>: features contain NaN or infinity ...; <remedy>"``
    for the first row of ``features`` that is not all finite, numbered ``first + 1`` up."""
    row = first_non_finite(features)
    if row is not None:
        raise DataError(f"{source}, {unit} {first + row + 1}: features contain NaN or infinity "
                        f"(or a value beyond float32 range); {remedy}")
