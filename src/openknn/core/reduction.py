"""Seeded random-projection dimension reduction (``sign`` and ``fjlt``, decision 13)."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from openknn.errors import DataError, HyperparameterError, ModelError

REDUCTION_TYPES = ("sign", "fjlt")
DENSE_LIMIT = 4 * 1024 * 1024
"""fjlt materialises its dense ``input_dim x target_dim`` matrix when it has at most this many
entries; above it, ``apply`` runs the fast Walsh-Hadamard transform instead."""
_BASE = 64  # fwht does its first log2(64) stages as one small matmul


@dataclass(frozen=True)
class Projection:
    """A random projection rebuilt from ``seed`` alone, so training and serving agree bit-for-bit.

    sign: ``R = 2 * rng.integers(0, 2, (input_dim, target_dim)) - 1``; ``y = x R / sqrt(t)``.
    fjlt: ``p`` = next power of two >= ``input_dim``; draw first ``signs = 2 *
    rng.integers(0, 2, p) - 1``, then ``coords = rng.choice(p, target_dim, replace=False)``;
    ``y = sqrt(p/t) * (WHT(pad(x) * signs) / sqrt(p))[:, coords]``, i.e. the unnormalised
    transform's chosen coordinates divided by ``sqrt(t)``. ``rng = numpy.random.default_rng(seed)``.
    """

    type: str
    seed: int
    input_dim: int
    target_dim: int

    def __post_init__(self) -> None:
        _validate(self.type, self.seed, self.input_dim, self.target_dim, HyperparameterError)

    def apply(self, x: np.ndarray) -> np.ndarray:
        """Project ``(n, input_dim)`` rows to a C-contiguous ``(n, target_dim)`` float32 array."""
        x = np.asarray(x)
        if x.ndim != 2 or x.shape[1] != self.input_dim:
            raise DataError(
                f"dimension reduction expects rows of width {self.input_dim} (input_dim), "
                f"got an array of shape {x.shape}; send vectors with {self.input_dim} features"
            )
        x32 = np.ascontiguousarray(x, dtype=np.float32)
        if self.type == "sign" or self.input_dim * self.target_dim <= DENSE_LIMIT:
            return np.ascontiguousarray(x32 @ dense_matrix(self))
        return _fjlt_fast(self, x32)

    def to_json(self) -> dict[str, object]:
        """The model JSON's ``"dimension_reduction"`` field (decision 8)."""
        return {
            "type": self.type,
            "seed": self.seed,
            "target_dim": self.target_dim,
            "input_dim": self.input_dim,
        }

    @classmethod
    def from_json(cls, obj: Mapping[str, object]) -> Projection:
        """Rebuild from the model JSON; a malformed object raises ``ModelError``."""
        if not isinstance(obj, Mapping):
            raise ModelError(f"model JSON 'dimension_reduction' must be an object, got {obj!r}")
        kind = _field(obj, "type")
        if not isinstance(kind, str):
            raise ModelError(
                f"model JSON 'dimension_reduction' key 'type' must be a string, got {kind!r}"
            )
        seed, d, t = (_int_field(obj, key) for key in ("seed", "input_dim", "target_dim"))
        _validate(kind, seed, d, t, ModelError)
        return cls(kind, seed, d, t)


def _field(obj: Mapping[str, object], key: str) -> object:
    if key not in obj:
        raise ModelError(f"model JSON 'dimension_reduction' is missing the key {key!r}")
    return obj[key]


def _int_field(obj: Mapping[str, object], key: str) -> int:
    value = _field(obj, key)
    if not isinstance(value, int) or isinstance(value, bool):
        raise ModelError(
            f"model JSON 'dimension_reduction' key {key!r} must be an integer, got {value!r}"
        )
    return value


def make_projection(type: str, input_dim: int, target_dim: int, seed: int) -> Projection:
    """The ``type`` projection from ``input_dim`` to ``target_dim`` dims, seeded by ``seed``."""
    return Projection(type=type, seed=seed, input_dim=input_dim, target_dim=target_dim)


def dense_matrix(projection: Projection) -> np.ndarray:
    """The read-only float32 ``(input_dim, target_dim)`` matrix M with ``apply(x) == x @ M``."""
    p = projection
    return _dense_matrix(p.type, p.seed, p.input_dim, p.target_dim)


def fwht(block: np.ndarray) -> np.ndarray:
    """Unnormalised Walsh-Hadamard transform of every row of float32 ``block`` (n, p), in place.

    The first log2(min(p, 64)) stages run as one BLAS product with a small Hadamard matrix; the
    rest are vectorised in-place butterflies over the whole block: O(n p log p), no row loop.
    """
    n, p = block.shape
    h = min(p, _BASE)
    block[...] = (block.reshape(-1, h) @ _hadamard(h)).reshape(n, p)
    while h < p:
        view = block.reshape(n, p // (2 * h), 2, h)
        left = view[:, :, 0, :].copy()
        view[:, :, 0, :] += view[:, :, 1, :]
        np.subtract(left, view[:, :, 1, :], out=view[:, :, 1, :])
        h *= 2
    return block


@functools.lru_cache(maxsize=8)
def _hadamard(h: int) -> np.ndarray:
    """The unnormalised ``h x h`` Sylvester Hadamard matrix (float32, read-only)."""
    out = _hadamard_entries(np.arange(h), np.arange(h)).astype(np.float32)
    out.flags.writeable = False
    return out


def _hadamard_entries(rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """H[rows, cols] of the Sylvester Hadamard matrix: (-1) ** popcount(i & j), float64."""
    parity = np.bitwise_count(rows[:, None] & cols[None, :]) & 1
    out: np.ndarray = np.where(parity == 1, -1.0, 1.0)
    return out


def _validate(kind: str, seed: int, d: int, t: int, error: type[Exception]) -> None:
    if kind not in REDUCTION_TYPES:
        raise error(f"dimension reduction 'type' must be one of {REDUCTION_TYPES}, got {kind!r}")
    if seed < 0:
        raise error(f"dimension reduction 'seed' must be a non-negative integer, got {seed}")
    if d < 1:
        raise error(f"dimension reduction 'input_dim' must be at least 1, got {d}")
    if not 1 <= t <= d:
        raise error(
            f"dimension reduction 'target_dim' must be between 1 and input_dim={d}, got {t}"
        )


def _next_pow2(d: int) -> int:
    return 1 << (d - 1).bit_length()


@functools.lru_cache(maxsize=16)
def _fjlt_parts(seed: int, d: int, t: int) -> tuple[np.ndarray, np.ndarray]:
    """(signs, coords) in draw order: first the ±1 diagonal, then the coordinate choice."""
    rng = np.random.default_rng(seed)
    p = _next_pow2(d)
    signs = (2 * rng.integers(0, 2, size=p) - 1).astype(np.float32)
    coords = rng.choice(p, size=t, replace=False)
    signs.flags.writeable = False
    coords.flags.writeable = False
    return signs, coords


@functools.lru_cache(maxsize=16)
def _dense_matrix(kind: str, seed: int, d: int, t: int) -> np.ndarray:
    if kind == "sign":
        signs = 2 * np.random.default_rng(seed).integers(0, 2, size=(d, t)) - 1
        matrix = signs / np.sqrt(t)
    else:
        diag, coords = _fjlt_parts(seed, d, t)
        matrix = diag[:d, None] * _hadamard_entries(np.arange(d), coords) / np.sqrt(t)
    out = np.ascontiguousarray(matrix, dtype=np.float32)
    out.flags.writeable = False
    return out


def _fjlt_fast(projection: Projection, x32: np.ndarray) -> np.ndarray:
    """fjlt by the O(n p log p) transform over the whole block (no dense matrix)."""
    diag, coords = _fjlt_parts(projection.seed, projection.input_dim, projection.target_dim)
    block = np.zeros((x32.shape[0], diag.shape[0]), dtype=np.float32)
    np.multiply(x32, diag[: projection.input_dim], out=block[:, : projection.input_dim])
    fwht(block)
    scale = np.float32(1.0 / np.sqrt(projection.target_dim))
    return np.ascontiguousarray(block[:, coords] * scale)
