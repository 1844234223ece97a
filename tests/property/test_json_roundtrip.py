"""Hypothesis round trips for openknn.formats.json: requests in any mix of the instance forms
parse to the same float32 matrix, predictions encode and read back bit for bit, and any bytes
or JSON value either parse or raise DataError."""

from __future__ import annotations

import numpy as np
import orjson
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from openknn.errors import DataError
from openknn.formats.json import (
    encode_json,
    encode_jsonlines,
    parse_json,
    parse_jsonlines,
    parse_predictions_json,
    parse_predictions_jsonlines,
)

finite32 = st.floats(width=32, allow_nan=False, allow_infinity=False)
# Whole numbers too, so the byte-matrix writer of class ids is exercised.
values32 = finite32 | st.integers(0, 99).map(float) | st.sampled_from([0.0, -0.0, 1.0])
matrices = arrays(np.float32, st.tuples(st.integers(1, 12), st.integers(1, 8)), elements=values32)


def assert_bits_equal(got: np.ndarray, want: np.ndarray) -> None:
    assert got.dtype == np.float32 and got.shape == want.shape
    np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32))


def instance(row: np.ndarray, form: str, text: str) -> dict[str, object]:
    """One instance of ``row`` in the given form; numbers as float32 shortest text (numpy)
    or as the float64 of the same value (a Python list)."""
    values: object = row if text == "float32" else row.tolist()
    if form == "features":
        return {"features": values}
    if form == "data":
        return {"data": {"features": {"values": values}}, "configuration": {"k": 1}}
    keys = np.flatnonzero(row.view(np.uint32) != 0)  # every value but +0.0, -0.0 kept
    return {"data": {"features": {"keys": keys.tolist(), "shape": [row.size],
                                  "values": row[keys] if text == "float32" else
                                  row[keys].tolist()}}}


forms = st.sampled_from(["features", "data", "sparse"])
texts = st.sampled_from(["float32", "float64"])


@given(matrices, st.data())
def test_json_request_parses_to_the_matrix(matrix, data):
    instances = [instance(row, data.draw(forms), data.draw(texts)) for row in matrix]
    body = orjson.dumps({"instances": instances}, option=orjson.OPT_SERIALIZE_NUMPY)
    feature_dim = data.draw(st.sampled_from([None, matrix.shape[1]]))
    assert_bits_equal(parse_json(body, feature_dim), matrix)


@given(matrices, st.data())
def test_jsonlines_request_parses_to_the_matrix(matrix, data):
    lines = []
    for row in matrix:
        lines += [b""] * data.draw(st.integers(0, 2))  # blank lines
        lines.append(orjson.dumps(instance(row, data.draw(forms), data.draw(texts)),
                                  option=orjson.OPT_SERIALIZE_NUMPY))
    newline = data.draw(st.sampled_from([b"\n", b"\r\n"]))
    body = newline.join(lines) + data.draw(st.sampled_from([b"", newline]))
    feature_dim = data.draw(st.sampled_from([None, matrix.shape[1]]))
    assert_bits_equal(parse_jsonlines(body, feature_dim), matrix)




def columns(n: int) -> st.SearchStrategy[np.ndarray | None]:
    """None, any float32 (n, k), or whole numbers of one digit count (class ids), which are
    written by a byte matrix instead of orjson."""
    shape = st.tuples(st.just(n), st.integers(0, 6))
    whole = st.integers(1, 7).flatmap(lambda d: arrays(
        np.float32, shape, elements=st.integers(10 ** (d - 1) if d > 1 else 0, 10**d - 1)))
    return st.none() | arrays(np.float32, shape, elements=values32) | whole


predictions = st.integers(0, 12).flatmap(lambda n: st.tuples(
    arrays(np.float32, n, elements=values32), columns(n), columns(n)))


@given(predictions, st.booleans())
def test_encode_then_parse_predictions_is_the_identity(columns, lines):
    predicted, distances, labels = columns
    encode, parse = ((encode_jsonlines, parse_predictions_jsonlines) if lines else
                     (encode_json, parse_predictions_json))
    body = encode(predicted, distances, labels)
    got = parse(body)
    assert_bits_equal(got.pop("predicted_label"), predicted)
    if predicted.size:  # with no rows there is no object to hold distances or labels
        for key, want in (("distances", distances), ("labels", labels)):
            if want is not None:
                assert_bits_equal(got.pop(key), want)
    assert not got
    # The encoding is the one orjson gives each row's float32 values.
    rows = [{"predicted_label": p} for p in predicted]
    for key, array in (("distances", distances), ("labels", labels)):
        if array is not None:
            for row, values in zip(rows, array):
                row[key] = values
    compact = orjson.dumps(rows, option=orjson.OPT_SERIALIZE_NUMPY)
    if not lines:
        assert body == b'{"predictions":' + compact + b"}"
    else:
        assert body == b"".join(orjson.dumps(row, option=orjson.OPT_SERIALIZE_NUMPY) + b"\n"
                                for row in rows)


def check_outcome(parse, body: bytes, feature_dim: int | None) -> None:
    try:
        matrix = parse(body, feature_dim)
    except DataError:
        return
    assert matrix.dtype == np.float32 and matrix.ndim == 2 and matrix.shape[0] >= 1
    assert feature_dim is None or matrix.shape[1] == feature_dim


tokens = st.lists(st.sampled_from(
    [b"{", b"}", b"[", b"]", b":", b",", b'"instances"', b'"features"', b'"data"', b'"values"',
     b'"keys"', b'"shape"', b'"configuration"', b"1", b"-2.5", b"0", b"3", b"1e400", b"1e39",
     b"-0", b"true", b"false", b"null", b'"x"', b"\n", b"\r\n", b" ", b"\xff", b"\xc3",
     b"\xef\xbb\xbf", b"18446744073709551616", b"2147483648", b"NaN"]),
    max_size=40).map(b"".join)
dims = st.none() | st.integers(1, 4)


@settings(max_examples=300)
@given(tokens | st.binary(max_size=60), dims)
def test_any_bytes_parse_or_raise_data_error(body, feature_dim):
    check_outcome(parse_json, body, feature_dim)
    check_outcome(parse_jsonlines, body, feature_dim)


numbers = (st.integers(-(2**63), 2**64 - 1) | st.floats(allow_nan=False)
           | st.sampled_from([0, 1, 3, -1, 2**31, 2**64 - 1]))
leaves = st.none() | st.booleans() | numbers | st.text(max_size=5)
json_values = st.recursive(
    leaves,
    lambda inner: (st.lists(inner, max_size=5)
                   | st.dictionaries(st.sampled_from(["features", "data", "values", "keys",
                                                      "shape", "instances", "x"]) | st.text(),
                                     inner, max_size=4)),
    max_leaves=30)
# Near-valid instances: the right keys holding random values, so the checks deep inside run.
instances = st.one_of(
    json_values,
    st.builds(lambda v: {"features": v}, json_values | st.lists(numbers | leaves, max_size=5)),
    st.builds(lambda v, k, s: {"data": {"features": {"values": v, "keys": k, "shape": s}}},
              json_values | st.lists(numbers, max_size=5),
              json_values | st.lists(st.integers(-2, 5), max_size=5),
              json_values | st.lists(st.integers(-1, 5), max_size=2)),
)


@settings(max_examples=300)
@given(st.lists(instances, max_size=4), st.booleans(), dims)
def test_any_json_value_parses_or_raises_data_error(values, wrap, feature_dim):
    dumped = [orjson.dumps(v) for v in values]
    body = orjson.dumps({"instances": values}) if wrap else b"".join(dumped[:1])
    check_outcome(parse_json, body, feature_dim)
    check_outcome(parse_jsonlines, b"\n".join(dumped), feature_dim)
