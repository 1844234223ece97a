"""Hypothesis round trips for openknn.formats.recordio: dense, sparse and response records, and
damaged streams that must fail as DataError and nothing else."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from openknn.errors import DataError
from openknn.formats.recordio import (
    Record,
    Tensor,
    decode_features,
    dense_to_bytes,
    encode_label_records,
    encode_record,
    frame,
    iter_feature_blocks,
    read_records,
    write_dense,
    write_sparse,
)

from ..conftest import Csr

INT32 = st.integers(-(2**31), 2**31 - 1)


def _elements(dtype: Any, nan: bool = True) -> st.SearchStrategy[Any]:
    if dtype == np.int64:
        return INT32
    return st.floats(width=32 if dtype == np.float32 else 64, allow_nan=nan)


@st.composite
def dense_sets(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray | None]:
    dtype = draw(st.sampled_from([np.float32, np.float64, np.int64]))
    shape = (draw(st.integers(0, 40)), draw(st.integers(1, 12)))
    array = draw(arrays(dtype, shape, elements=_elements(dtype)))
    label_dtype = draw(st.sampled_from([None, np.float32, np.float64, np.int64]))
    if label_dtype is None:
        return array, None
    return array, draw(arrays(label_dtype, shape[0], elements=_elements(label_dtype)))




@settings(max_examples=150, deadline=None)
@given(dense_sets(), st.integers(1, 600))
def test_dense_round_trip(case: tuple[np.ndarray, np.ndarray | None], chunk: int) -> None:
    array, labels = case
    data = dense_to_bytes(array, labels)
    f = io.BytesIO()
    write_dense(f, array, labels)
    assert f.getvalue() == data
    one_by_one = b"".join(
        frame(encode_record(Record(
            {"values": Tensor(row.astype(np.int32) if row.dtype == np.int64 else row)},
            {} if labels is None else {"values": Tensor(
                labels[i:i + 1].astype(np.int32) if labels.dtype == np.int64
                else labels[i:i + 1])})))
        for i, row in enumerate(array))
    assert data == one_by_one
    with np.errstate(over="ignore"):
        expected = array.astype(np.float32)
        expected_labels = None if labels is None else labels.astype(np.float32)
    features, got = decode_features(data, array.shape[1])
    np.testing.assert_array_equal(features, expected)
    if labels is None or not len(labels):
        assert got is None if labels is None or not len(array) else got.size == 0
    else:
        np.testing.assert_array_equal(got, expected_labels)  # type: ignore[arg-type]
    blocks = list(iter_feature_blocks(io.BytesIO(data), array.shape[1], source="p",
                                      chunk_bytes=chunk))
    if blocks:
        np.testing.assert_array_equal(np.vstack([b[0] for b in blocks]), expected)


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 30), st.integers(1, 300), st.data())
def test_sparse_round_trip(rows: int, cols: int, data: st.DataObject) -> None:
    dtype = data.draw(st.sampled_from([np.float32, np.float64, np.int64]))
    dense = data.draw(arrays(dtype, (rows, cols), elements=st.one_of(
        st.just(0), _elements(dtype, nan=False))))
    labels = data.draw(arrays(np.float64, rows, elements=st.floats(-1e6, 1e6)))
    f = io.BytesIO()
    write_sparse(f, Csr(dense), labels)
    features, got = decode_features(f.getvalue(), cols)
    with np.errstate(over="ignore"):
        np.testing.assert_array_equal(features, dense.astype(np.float32))
    np.testing.assert_array_equal(got, labels.astype(np.float32))  # type: ignore[arg-type]
    for record, row in zip(read_records(f.getvalue()), dense):
        tensor = record.features["values"]
        assert tensor.shape is not None and tensor.shape.tolist() == [cols]
        keys = [] if tensor.keys is None else tensor.keys.tolist()
        assert keys == np.flatnonzero(row).tolist()


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 20), st.data())
def test_label_records_round_trip(rows: int, data: st.DataObject) -> None:
    names = data.draw(st.lists(st.text(min_size=1, max_size=20), max_size=4, unique=True))
    columns = {}
    for name in names:
        shape = (rows,) if data.draw(st.booleans()) else (rows, data.draw(st.integers(0, 5)))
        columns[name] = data.draw(arrays(np.float32, shape, elements=_elements(np.float32)))
    records = read_records(encode_label_records(columns))
    assert len(records) == (rows if names else 0)
    for i, record in enumerate(records):
        assert record.features == {}
        assert record.label == {k: Tensor(np.atleast_1d(v[i])) for k, v in columns.items()}


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_damaged_streams_fail_only_with_data_error(data: st.DataObject) -> None:
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    base = bytearray(dense_to_bytes(rng.standard_normal((6, 3)), rng.integers(0, 300, 6)))
    for _ in range(data.draw(st.integers(1, 4))):
        base[data.draw(st.integers(0, len(base) - 1))] = data.draw(st.integers(0, 255))
    damaged = bytes(base[:data.draw(st.integers(0, len(base)))])
    for decode in (lambda: decode_features(damaged, data.draw(st.sampled_from([None, 3]))),
                   lambda: read_records(damaged),
                   lambda: list(iter_feature_blocks(io.BytesIO(damaged), None, source="d",
                                                    chunk_bytes=data.draw(st.integers(1, 64))))):
        try:
            decode()
        except DataError:
            pass
