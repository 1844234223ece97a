"""The one finiteness check: NaN and ±inf are refused in training records, request rows and
model labels, naming the first bad one.

It is in core, the lowest layer its users share: the data layer (``jobs.data``), inference
(``serving.inference``) and the model files' labels (``core.model_files``)."""

from __future__ import annotations

import math

import numpy as np

from ..errors import DataError

# Up to this many values, the usual case (all finite) is found in Python: where the sum of
# the values as Python floats is finite, every value is (a NaN or an infinity makes any sum
# NaN or infinite); otherwise (those, or a sum that overflows) numpy decides. In the server
# that took about 4 us of a single row's request against 9 to 11 for np.isfinite and .all(),
# whose code the request's other work has pushed out of the caches (issue 15,
# docs/serving.md).
PYTHON_CHECK_VALUES = 1024


def first_non_finite(values: np.ndarray) -> int | None:
    """The 0-based index of the first row of ``values`` holding NaN or ±inf (of a 1-D array,
    the first such value), or None where every value is finite."""
    if values.size <= PYTHON_CHECK_VALUES and math.isfinite(sum(values.ravel().tolist())):
        return None
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
