"""The one finiteness check: its Python sum for small arrays answers what numpy answers."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from openknn.core import finite
from openknn.core.finite import PYTHON_CHECK_VALUES, first_non_finite


def numpy_answer(values: np.ndarray) -> int | None:
    """The check as numpy alone makes it: the oracle."""
    ok = np.isfinite(values)
    if ok.ndim > 1:
        ok = ok.all(axis=tuple(range(1, ok.ndim)))
    return None if ok.all() else int(np.argmax(~ok))


@settings(max_examples=300, deadline=None)
@given(hnp.arrays(st.sampled_from([np.float32, np.float64]),
                  hnp.array_shapes(min_dims=1, max_dims=2, max_side=40),
                  elements={"allow_nan": True, "allow_infinity": True}))
def test_the_small_check_answers_as_numpy(values: np.ndarray) -> None:
    assert first_non_finite(values) == numpy_answer(values)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_a_bad_value_is_found_in_its_row(bad: float) -> None:
    rows = np.ones((3, 54), np.float32)
    rows[2, 7] = bad
    assert first_non_finite(rows) == 2
    assert first_non_finite(rows[:2]) is None


def test_finite_values_whose_sum_overflows_are_finite() -> None:
    """1e308 + 1e308 is inf as a sum, yet both values are finite: numpy decides."""
    values = np.array([[1e308, 1e308], [-1e308, 1.0]])
    assert first_non_finite(values) is None
    assert first_non_finite(np.array([np.inf, -np.inf])) == 0  # their sum is NaN


@pytest.mark.parametrize("limit", [PYTHON_CHECK_VALUES, 0])
def test_both_paths_find_the_first_bad_row(monkeypatch: pytest.MonkeyPatch, limit: int) -> None:
    """Past PYTHON_CHECK_VALUES numpy checks alone (a Python list would cost more there)."""
    monkeypatch.setattr(finite, "PYTHON_CHECK_VALUES", limit)
    rows = np.ones((20, 30), np.float64)
    rows[[4, 9], [3, 0]] = np.nan, np.inf
    assert first_non_finite(rows) == 4
    assert first_non_finite(rows[5:]) == 4
    assert first_non_finite(rows[10:]) is None
