"""Tests for openknn.core.reduction: seeded sign / fjlt projections."""

from __future__ import annotations

import json

import numpy as np
import pytest

from openknn.core import reduction
from openknn.core.reduction import REDUCTION_TYPES, Projection, dense_matrix, fwht, make_projection
from openknn.errors import DataError, HyperparameterError, ModelError


def _points(n: int, d: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, d))


@pytest.mark.parametrize("kind", REDUCTION_TYPES)
def test_same_seed_identical_bytes_different_seed_differs(kind: str) -> None:
    x = _points(20, 37)
    a = make_projection(kind, 37, 8, seed=3).apply(x)
    reduction._dense_matrix.cache_clear()
    reduction._fjlt_parts.cache_clear()
    b = make_projection(kind, 37, 8, seed=3).apply(x)
    c = make_projection(kind, 37, 8, seed=4).apply(x)
    assert a.tobytes() == b.tobytes()
    assert not np.array_equal(a, c)


@pytest.mark.parametrize("kind", REDUCTION_TYPES)
@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.int64])
def test_shape_and_float32_c_contiguous(kind: str, dtype: type) -> None:
    x = np.asfortranarray(_points(11, 20).astype(dtype))
    y = make_projection(kind, 20, 5, seed=1).apply(x)
    assert y.shape == (11, 5)
    assert y.dtype == np.float32
    assert y.flags.c_contiguous
    assert make_projection(kind, 20, 5, seed=1).apply(np.empty((0, 20))).shape == (0, 5)


def test_sign_equals_documented_matrix() -> None:
    d, t, seed = 30, 7, 12
    r = 2 * np.random.default_rng(seed).integers(0, 2, size=(d, t)) - 1
    x = _points(9, d)
    expected = x @ r / np.sqrt(t)
    got = make_projection("sign", d, t, seed).apply(x)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_fjlt_equals_documented_construction() -> None:
    d, t, seed = 20, 6, 5
    p = 32
    rng = np.random.default_rng(seed)
    signs = 2 * rng.integers(0, 2, size=p) - 1
    coords = rng.choice(p, size=t, replace=False)
    h = np.array([[1.0]])
    while h.shape[0] < p:
        h = np.block([[h, h], [h, -h]])
    x = _points(4, d)
    padded = np.zeros((4, p))
    padded[:, :d] = x
    expected = np.sqrt(p / t) * ((padded * signs) @ (h / np.sqrt(p)))[:, coords]
    got = make_projection("fjlt", d, t, seed).apply(x)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("p", [1, 2, 16, 64, 256])
def test_fwht_matches_hadamard_matrix(p: int) -> None:
    block = _points(3, p).astype(np.float32)
    h = np.array([[1.0]])
    while h.shape[0] < p:
        h = np.block([[h, h], [h, -h]])
    expected = block.astype(np.float64) @ h
    np.testing.assert_allclose(fwht(block.copy()), expected, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("d", [5, 100, 128, 1000])  # padded and already a power of two
def test_fjlt_fast_path_equals_dense(d: int) -> None:
    proj = make_projection("fjlt", d, min(d, 24), seed=7)
    x = _points(50, d).astype(np.float32)
    fast = reduction._fjlt_fast(proj, x)
    dense = x @ dense_matrix(proj)
    np.testing.assert_allclose(fast, dense, rtol=1e-5, atol=1e-5)


def test_fjlt_large_uses_fast_path(monkeypatch: pytest.MonkeyPatch) -> None:
    proj = make_projection("fjlt", 64, 16, seed=2)
    x = _points(10, 64)
    dense = proj.apply(x)
    monkeypatch.setattr(reduction, "DENSE_LIMIT", 0)
    monkeypatch.setattr(reduction, "dense_matrix", None)  # the fast path must not need it
    np.testing.assert_allclose(proj.apply(x), dense, rtol=1e-5, atol=1e-5)


def test_fjlt_power_of_two_has_no_padding() -> None:
    proj = make_projection("fjlt", 64, 64, seed=0)
    m = dense_matrix(proj).astype(np.float64)
    # t = p = d: the transform is orthonormal, so M is orthogonal.
    np.testing.assert_allclose(m @ m.T, np.eye(64), atol=1e-5)


def _pairwise_sq(x: np.ndarray) -> np.ndarray:
    sq = (x * x).sum(axis=1)
    dist = sq[:, None] + sq[None, :] - 2 * x @ x.T
    return dist[np.triu_indices(x.shape[0], k=1)]


@pytest.mark.parametrize("kind", REDUCTION_TYPES)
def test_johnson_lindenstrauss_distances_preserved(kind: str) -> None:
    x = _points(500, 512, seed=1)
    y = make_projection(kind, 512, 128, seed=9).apply(x).astype(np.float64)
    ratio = _pairwise_sq(y) / _pairwise_sq(x)
    assert np.mean(np.abs(ratio - 1) <= 0.3) >= 0.95
    assert abs(ratio.mean() - 1) <= 0.05


@pytest.mark.parametrize("kind", REDUCTION_TYPES)
def test_json_round_trip_identical_transform(kind: str) -> None:
    proj = make_projection(kind, 20, 10, seed=3)
    obj = json.loads(json.dumps(proj.to_json()))
    assert obj == {"type": kind, "seed": 3, "target_dim": 10, "input_dim": 20}
    again = Projection.from_json(obj)
    assert again == proj
    x = _points(5, 20)
    assert again.apply(x).tobytes() == proj.apply(x).tobytes()


def test_wrong_width_raises_data_error_naming_both() -> None:
    proj = make_projection("sign", 20, 10, seed=3)
    with pytest.raises(DataError, match=r"width 20.*shape \(4, 21\)"):
        proj.apply(np.zeros((4, 21)))
    with pytest.raises(DataError, match=r"width 20.*shape \(20,\)"):
        proj.apply(np.zeros(20))


GOOD = {"type": "sign", "seed": 3, "target_dim": 10, "input_dim": 20}


@pytest.mark.parametrize(
    ("obj", "pattern"),
    [
        ({k: v for k, v in GOOD.items() if k != "seed"}, "missing the key 'seed'"),
        ({k: v for k, v in GOOD.items() if k != "type"}, "missing the key 'type'"),
        ({**GOOD, "type": "pca"}, "'type' must be one of .*'pca'"),
        ({**GOOD, "type": 3}, "key 'type' must be a string"),
        ({**GOOD, "seed": "3"}, "key 'seed' must be an integer, got '3'"),
        ({**GOOD, "input_dim": 2.5}, "key 'input_dim' must be an integer"),
        ({**GOOD, "target_dim": True}, "key 'target_dim' must be an integer"),
        ({**GOOD, "target_dim": 30}, "'target_dim' must be between 1 and input_dim=20"),
        ({**GOOD, "seed": -1}, "'seed' must be a non-negative integer"),
        ([1, 2], "must be an object"),
    ],
)
def test_malformed_json_raises_model_error(obj: object, pattern: str) -> None:
    with pytest.raises(ModelError, match=pattern):
        Projection.from_json(obj)  # type: ignore[arg-type]


def test_bad_parameters_raise_hyperparameter_error() -> None:
    with pytest.raises(HyperparameterError, match="one of .*'none'"):
        make_projection("none", 20, 10, seed=0)
    with pytest.raises(HyperparameterError, match="'target_dim' must be between 1"):
        make_projection("fjlt", 20, 0, seed=0)
