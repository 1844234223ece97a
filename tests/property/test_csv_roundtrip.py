"""Hypothesis round trips for openknn.formats.csv: encode then parse gives the same float32
values, and arbitrary bytes either parse or raise DataError."""

from __future__ import annotations

import io

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from openknn.errors import DataError
from openknn.formats.csv import encode_csv, iter_csv_blocks, parse_csv

floats32 = st.floats(width=32, allow_nan=True, allow_infinity=True)
matrices = arrays(np.float32, st.tuples(st.integers(1, 20), st.integers(1, 8)), elements=floats32)


def assert_same_float32(got: np.ndarray, want: np.ndarray) -> None:
    """Bit-equal, except that any NaN matches any NaN (CSV has one spelling of NaN)."""
    assert got.dtype == np.float32 and got.shape == want.shape
    nan = np.isnan(want)
    np.testing.assert_array_equal(np.isnan(got), nan)
    np.testing.assert_array_equal(got[~nan].view(np.uint32), want[~nan].view(np.uint32))


@given(matrices, st.data())
def test_encode_then_parse_is_the_identity(matrix, data):
    label_size = data.draw(st.integers(0, matrix.shape[1] - 1))
    features, labels = parse_csv(encode_csv(matrix), label_size=label_size)
    assert_same_float32(features, matrix[:, label_size:])
    if label_size:
        assert_same_float32(labels, matrix[:, :label_size])
    else:
        assert labels is None


@given(arrays(np.float32, st.integers(1, 50), elements=floats32))
def test_encode_then_parse_1d(vector):
    features, _ = parse_csv(encode_csv(vector), feature_dim=1)
    assert_same_float32(features[:, 0], vector)


@given(matrices, st.integers(1, 300), st.sampled_from([b"\n", b"\r\n"]))
def test_streamed_blocks_equal_one_parse(matrix, block_bytes, newline):
    text = encode_csv(matrix).replace(b"\n", newline)
    blocks = list(iter_csv_blocks(io.BytesIO(text), source="m.csv", label_size=0,
                                  feature_dim=matrix.shape[1], block_bytes=block_bytes))
    assert_same_float32(np.concatenate([b[0] for b in blocks]), matrix)
    assert [b[2] for b in blocks] == list(np.cumsum([0] + [len(b[0]) for b in blocks[:-1]]))


csvish = st.lists(st.sampled_from(
    [b"1", b"-2.5", b"1e3", b"nan", b"inf", b",", b",", b"\n", b"\r\n", b"\r", b"\"", b" ",
     b"abc", b"\xff", b"\xef\xbb\xbf", b"\x00", b"", b"0x1", b"\t"]), max_size=40).map(b"".join)


def check_outcome(run, label_size: int, feature_dim: int | None) -> None:
    try:
        features, labels = run()
    except DataError as exc:
        assert "record" in str(exc)
        return
    assert features.dtype == np.float32 and features.ndim == 2
    if feature_dim is not None:
        assert features.shape[1] == feature_dim
    assert (labels is None) == (label_size == 0)
    if labels is not None:
        assert labels.shape == (len(features), label_size)


@settings(max_examples=300)
@given(st.one_of(st.binary(max_size=200), csvish), st.integers(0, 2),
       st.none() | st.integers(1, 3))
def test_any_bytes_parse_or_raise_data_error(body, label_size, feature_dim):
    check_outcome(lambda: parse_csv(body, label_size=label_size, feature_dim=feature_dim),
                  label_size, feature_dim)


@settings(max_examples=200)
@given(st.one_of(st.binary(max_size=200), csvish), st.integers(0, 2),
       st.none() | st.integers(1, 3), st.integers(1, 64))
def test_any_file_streams_or_raises_data_error(body, label_size, feature_dim, block_bytes):
    def run():
        blocks = list(iter_csv_blocks(io.BytesIO(body), source="g.csv", label_size=label_size,
                                      feature_dim=feature_dim, block_bytes=block_bytes))
        if not blocks:
            return np.empty((0, feature_dim or 0), np.float32), (
                np.empty((0, label_size), np.float32) if label_size else None)
        labels = None if label_size == 0 else np.concatenate([b[1] for b in blocks])
        return np.concatenate([b[0] for b in blocks]), labels
    check_outcome(run, label_size, feature_dim)
