"""Tests for openknn.formats.json: decision 31's request and response shapes, sparse instances,
the float32 text of every number, and every user-facing error."""

from __future__ import annotations

import numpy as np
import orjson
import pytest

from openknn.errors import DataError
from openknn.formats import NotQuick
from openknn.formats.json import (
    encode_json,
    encode_jsonlines,
    parse_json,
    parse_jsonlines,
    parse_predictions_json,
    parse_predictions_jsonlines,
)

# AWS's mixed two-instance request (decision 31), verbatim.
SPEC_REQUEST = (b'{"instances": [{"features": [3.0, 0.1, 0.04, 0.002]}, '
                b'{"data": {"features": {"values": [-3, -1, -4, 2]}}}]}')
SPEC_ROWS = np.array([[3.0, 0.1, 0.04, 0.002], [-3, -1, -4, 2]], np.float32)


def request(*instances: object) -> bytes:
    return orjson.dumps({"instances": list(instances)})


# --- requests: decision 31's forms -------------------------------------------------------


@pytest.mark.parametrize("feature_dim", [None, 4])
def test_spec_request_mixes_both_dense_forms(feature_dim):
    matrix = parse_json(SPEC_REQUEST, feature_dim)
    assert matrix.dtype == np.float32 and matrix.flags.c_contiguous
    np.testing.assert_array_equal(matrix, SPEC_ROWS)


def test_jsonlines_request_mixes_both_forms():
    body = (b'{"features": [3.0, 0.1, 0.04, 0.002]}\n'
            b'{"data": {"features": {"values": [-3, -1, -4, 2]}}}\n')
    np.testing.assert_array_equal(parse_jsonlines(body, 4), SPEC_ROWS)


@pytest.mark.parametrize("body", [
    b'{"features": [1, 2]}\n{"features": [3, 4]}',  # no final newline
    b'{"features": [1, 2]}\r\n{"features": [3, 4]}\r\n',
    b'\n{"features": [1, 2]}\n\n  \r\n{"features": [3, 4]}\n\n',  # blank lines skipped
    b'\xef\xbb\xbf{"features": [1, 2]}\n{"features": [3, 4]}\n',  # a UTF-8 byte-order mark
])
def test_jsonlines_line_ends_and_blank_lines(body):
    np.testing.assert_array_equal(parse_jsonlines(body, None), [[1, 2], [3, 4]])


def test_sparse_instances_are_densified_with_zeros():
    body = request({"data": {"features": {"keys": [0, 3], "shape": [4], "values": [1.5, 2.0]}}},
                   {"features": [1, 2, 3, 4]},
                   {"data": {"features": {"keys": [], "shape": [4], "values": []}}},
                   {"data": {"features": {"shape": [4], "values": []}}})
    np.testing.assert_array_equal(parse_json(body, None),
                                  [[1.5, 0, 0, 2], [1, 2, 3, 4], [0, 0, 0, 0], [0, 0, 0, 0]])


def test_sparse_shape_defaults_to_feature_dim_or_the_first_instance():
    sparse = {"data": {"features": {"keys": [1], "values": [7]}}}
    np.testing.assert_array_equal(parse_json(request(sparse), 3), [[0, 7, 0]])
    np.testing.assert_array_equal(parse_json(request({"features": [1, 2]}, sparse), None),
                                  [[1, 2], [0, 7]])


def test_configuration_and_unknown_keys_are_ignored():
    body = request({"features": [1, 2], "configuration": {"k": 3, "verbose": True}},
                   {"data": {"features": {"values": [3, 4]}, "extra": None}, "id": "x"})
    assert b"true" in body  # so the checked (not the one-asarray) path runs too
    np.testing.assert_array_equal(parse_json(body, 2), [[1, 2], [3, 4]])
    lines = b'{"features": [1, 2], "configuration": {}}\n{"features": [3, 4], "uid": false}\n'
    np.testing.assert_array_equal(parse_jsonlines(lines, 2), [[1, 2], [3, 4]])


def test_numbers_parse_as_float64_then_round_to_float32():
    body = request({"features": [0.1, 1, -0.0, 1e-50, 16777217, 3.4028234663852886e38]})
    got = parse_json(body, None)[0]
    want = np.array([0.1, 1, -0.0, 1e-50, 16777217, 3.4028234663852886e38]).astype(np.float32)
    np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32))


def test_numbers_beyond_float32_become_inf_and_beyond_double_are_an_error():
    np.testing.assert_array_equal(parse_json(request({"features": [1e39, -1e300]}), 2),
                                  [[np.inf, -np.inf]])
    with pytest.raises(DataError, match=r"<body>: not valid JSON at line 1, column \d+: number "
                                        r"is infinity .*within double range"):
        parse_json(b'{"instances": [{"features": [1e400]}]}', 1)


def test_bytearray_and_memoryview_bodies():
    for body in (bytearray(SPEC_REQUEST), memoryview(SPEC_REQUEST)):
        np.testing.assert_array_equal(parse_json(body, 4), SPEC_ROWS)


def test_a_covtype_sized_body_parses_exactly():
    matrix = np.random.default_rng(0).normal(size=(581, 54)).astype(np.float32)
    body = orjson.dumps({"instances": [{"features": row} for row in matrix]},
                        option=orjson.OPT_SERIALIZE_NUMPY)
    np.testing.assert_array_equal(parse_json(body, 54), matrix)
    lines = b"".join(orjson.dumps({"features": row.tolist()}) + b"\n" for row in matrix)
    np.testing.assert_array_equal(parse_jsonlines(lines, 54), matrix)


# --- requests: errors --------------------------------------------------------------------


@pytest.mark.parametrize(("body", "feature_dim", "message"), [
    (b"", None, r"<body>: no instances"),
    (b" \n\t", 3, r"<body>: no instances"),
    (b'{"instances": []}', None, r"<body>: no instances.*send \{\"instances\""),
    (b'{"instances": [{"features": [1, 2]}', None,
     r"<body>: not valid JSON at line 1, column 36: unexpected end of data; send"),
    (b'{\n"instances": [{"features": [1, x]}]}', None,
     r"<body>: not valid JSON at line 2, column 32: unexpected character, expected a JSON value"),
    (b'{"instances": [{"features": [1]}]}\n\xff', None,
     r"<body>: line 2: the body is not valid UTF-8 \(invalid start byte at byte 35, "
     r"found b'\\xff'\); encode it as UTF-8"),
    (b"[[1, 2], [3, 4]]", None,
     r'expected a JSON object \{"instances": \[...\]\}, found \[\[1,2\],\[3,4\]\] \(a list\); '
     r'send \{"instances": \[instance, ...\]\} as UTF-8 JSON, each instance \{"features"'),
    (b'{"features": [1, 2]}', None, r'found an object without an "instances" key'),
    (b'{"instances": {"features": [1]}}', None, r'found "instances" holding \{"features":\[1\]\}'),
    (b'{"instances": [{"features": [1, 2]}, [1, 2]]}', None,
     r"<body>: instance 2: expected an instance \{\"features\": \[...\]\} or \{\"data\".*, "
     r"found \[1,2\] \(a list\); give every instance one of these forms"),
    (b'{"instances": [{"feature": [1, 2]}]}', None,
     r"instance 1: expected an instance .*found an object with keys \['feature'\]"),
    (b'{"instances": [{"features": "1,2"}]}', None,
     r'instance 1: expected an instance .*found "features" holding "1,2" \(a string\)'),
    (b'{"instances": [{"data": {"features": [1, 2]}}]}', None,
     r'instance 1: expected an instance .*found "data" with "features" holding \[1,2\]'),
    (b'{"instances": [{"data": {"features": {"values": "1"}}}]}', None,
     r'instance 1: "data.features.values" must be a list of numbers, found "1" \(a string\)'),
    (b'{"instances": [{"features": [1, 2]}, {"features": [1, true]}]}', None,
     r"<body>: instance 2, feature 2: expected a number, found true \(a boolean\); send plain "
     r"JSON numbers"),
    (b'{"instances": [{"features": [1, "2"]}]}', None,
     r'instance 1, feature 2: expected a number, found "2" \(a string\)'),
    (b'{"instances": [{"features": [null, 2]}]}', None,
     r"instance 1, feature 1: expected a number, found null;"),
    (b'{"instances": [{"features": [1, [2, 3]]}]}', None,
     r"instance 1, feature 2: expected a number, found \[2,3\] \(a list\)"),
    (b'{"instances": [{"features": [[1, 2], [3, 4]]}]}', None,
     r"instance 1, feature 1: expected a number, found \[1,2\] \(a list\)"),
    (b'{"instances": [{"features": [1, {}]}]}', None,
     r"instance 1, feature 2: expected a number, found \{\} \(an object\)"),
    (b'{"instances": [{"features": [1, 2]}, {"features": [3, 4]}, {"features": [5]}]}', 2,
     r"<body>: instance 3 has 1 features; the model expects 2; send exactly 2 numbers"),
    (b'{"instances": [{"features": [1, 2]}, {"features": [3, 4, 5]}]}', None,
     r"<body>: instance 2 has 3 features; instance 1 has 2; send exactly 2 numbers"),
    (b'{"instances": [{"features": []}]}', None,
     r"<body>: instance 1 has no features; send at least one number"),
    (b'{"instances": [{"data": {"features": {"keys": [0, 4], "shape": [4], "values": [1, 2]}}}]}',
     None, r"instance 1: sparse key 4 is outside the 4 features; keys must be from 0 to 3"),
    (b'{"instances": [{"data": {"features": {"keys": [-1], "shape": [4], "values": [1]}}}]}',
     None, r"instance 1: sparse key -1 is outside the 4 features"),
    (b'{"instances": [{"data": {"features": {"keys": [0, 1], "shape": [4], "values": [1]}}}]}',
     None, r"instance 1: the sparse instance has 2 keys for 1 values; give one key per value"),
    (b'{"instances": [{"data": {"features": {"keys": [0.0], "shape": [4], "values": [1]}}}]}',
     None, r'instance 1: sparse "keys" must be a list of integers, found 0.0; give the 0-based'),
    (b'{"instances": [{"data": {"features": {"keys": [true], "shape": [4], "values": [1]}}}]}',
     None, r'sparse "keys" must be a list of integers, found true \(a boolean\)'),
    (b'{"instances": [{"data": {"features": {"keys": [0], "shape": [4], "values": ["a"]}}}]}',
     None, r'instance 1, sparse value 1: expected a number, found "a" \(a string\)'),
    (b'{"instances": [{"data": {"features": {"keys": [0], "values": [1]}}}]}', None,
     r'instance 1: a sparse instance needs "shape": \[feature_dim\] .*found null'),
    (b'{"instances": [{"data": {"features": {"keys": [0], "shape": [0], "values": [1]}}}]}',
     None, r'a sparse instance needs "shape": \[feature_dim\] with a positive integer'),
    (b'{"instances": [{"data": {"features": {"keys": [0], "shape": [99999999999], '
     b'"values": [1]}}}]}', None, r"positive integer below 2147483648, found \[99999999999\]"),
    (b'{"instances": [{"data": {"features": {"keys": [0], "shape": [5], "values": [1]}}}]}', 4,
     r"instance 1 has 5 features; the model expects 4"),
    (b'{"instances": [{"data": {"features": {"keys": [0], "shape": [2147483647], '
     b'"values": [1]}}}]}', 4, r"instance 1 has 2147483647 features; the model expects 4"),
    (b'{"instances": [{"features": [1, 2]}, {"data": {"features": {"keys": [0], '
     b'"shape": [2000000000], "values": [1]}}}]}', None,
     r"instance 2 has 2000000000 features; instance 1 has 2; send exactly 2 numbers"),
])
def test_parse_json_errors(body, feature_dim, message):
    with pytest.raises(DataError, match=message):
        parse_json(body, feature_dim)


@pytest.mark.parametrize(("body", "message"), [
    (b"", r"<body>: no instances: the body is empty or lists none; send one instance per line"),
    (b"\n\r\n  \n", r"<body>: no instances"),
    (b'{"features": [1, 2]}\n\n{"features": [1, 2}\n',
     r"<body>: not valid JSON at line 3, column 19: unexpected character.*send one instance "
     r"per line"),
    (b'{"features": [1, 2]}\n{"features": [1, "\xc3("]}\n',
     r"<body>: line 2: the body is not valid UTF-8 \(invalid continuation byte at byte 18 of "
     r"the line"),
    (b'{"features": [1, 2]}\n{"features": [1, 2]}\n{"features": [1]}\n',
     r"<body>: line 3 has 1 features; line 1 has 2; send exactly 2 numbers"),
    (b'\n{"features": [1, 2]}\n{"features": [1, false]}\n',
     r"<body>: line 3, feature 2: expected a number, found false \(a boolean\)"),
    (b'{"features": [1, 2]}\n[1, 2]\n', r"<body>: line 2: expected an instance .*found \[1,2\]"),
    (b'{"instances": [{"features": [1, 2]}]}\n',
     r'line 1: expected an instance .*found an object with keys \[\'instances\'\]'),
])
def test_parse_jsonlines_errors(body, message):
    with pytest.raises(DataError, match=message):
        parse_jsonlines(body, None)


def test_errors_name_the_source_and_feature_dim_is_checked():
    with pytest.raises(DataError, match=r"^s3://b/k.jsonl: line 1 has 2 features; the model "
                                        r"expects 3"):
        parse_jsonlines(b'{"features": [1, 2]}', 3, source="s3://b/k.jsonl")
    with pytest.raises(DataError, match=r"<body>: feature_dim must be at least 1, got 0"):
        parse_json(SPEC_REQUEST, 0)


def test_long_values_are_cut_in_messages():
    body = request({"features": [1, "x" * 100]})
    with pytest.raises(DataError, match=r'found "x{36}\.\.\. \(a string\)'):
        parse_json(body, None)


def test_deep_nesting_is_a_data_error():
    deep = b'{"instances": [{"features": [1, ' + b"[" * 300 + b"]" * 300 + b"]}]}"
    with pytest.raises(DataError, match=r"instance 1, feature 2: expected a number, found "
                                        r"\.\.\. \(a list\)"):
        parse_json(deep, None)
    with pytest.raises(DataError, match=r"not valid JSON at line 1, column 1026: depth limit"):
        parse_json(b"[" * 2000 + b"]" * 2000, None)


# --- responses ---------------------------------------------------------------------------


def test_encode_json_spec_shape():
    assert (encode_json(np.array([0.0, 2.0]))
            == b'{"predictions":[{"predicted_label":0.0},{"predicted_label":2.0}]}')
    assert encode_json(np.array([], np.float32)) == b'{"predictions":[]}'


def test_encode_json_verbose_keys_in_order():
    distances = np.array([[3.11792408, 3.89746071, 6.32548437]], np.float32)
    body = encode_json([2], distances, np.array([[2, 2, 0]]))
    assert body == (b'{"predictions":[{"predicted_label":2.0,"distances":[3.117924,3.8974607,'
                    b'6.3254843],"labels":[2.0,2.0,0.0]}]}')
    assert list(orjson.loads(body)["predictions"][0]) == ["predicted_label", "distances", "labels"]
    assert (encode_json([1], labels=[[1, 2]])
            == b'{"predictions":[{"predicted_label":1.0,"labels":[1.0,2.0]}]}')
    assert (encode_json([1], [[0.5]])
            == b'{"predictions":[{"predicted_label":1.0,"distances":[0.5]}]}')


def test_encode_jsonlines_lines():
    assert encode_jsonlines([0.0, 2.0]) == b'{"predicted_label":0.0}\n{"predicted_label":2.0}\n'
    assert encode_jsonlines([1, 0], [[0.5], [1.5]], [[1], [0]]) == (
        b'{"predicted_label":1.0,"distances":[0.5],"labels":[1.0]}\n'
        b'{"predicted_label":0.0,"distances":[1.5],"labels":[0.0]}\n')
    assert encode_jsonlines([]) == b""


def test_numbers_are_float32_shortest_text_and_always_floats():
    body = encode_json(np.array([0.1, 2, 16777216, 1e20, -0.0, 1e-45], np.float32))
    assert body == (b'{"predictions":[{"predicted_label":0.1},{"predicted_label":2.0},'
                    b'{"predicted_label":16777216.0},{"predicted_label":1e+20},'
                    b'{"predicted_label":-0.0},{"predicted_label":1e-45}]}')
    assert all(isinstance(row["predicted_label"], float)
               for row in orjson.loads(body)["predictions"])


@pytest.mark.parametrize("labels", [
    np.arange(10.0).reshape(2, 5),  # one digit: written as a byte matrix
    np.arange(10.0, 20.0).reshape(2, 5),  # two digits
    np.array([[1234567.0, 9999999.0]]),  # seven digits
    np.array([[1.0, 10.0]]),  # mixed digit counts: orjson
    np.array([[1.0, -0.0]]), np.array([[1.0, -2.0]]), np.array([[1.0, 1.5]]),
    np.array([[1.0, 1e7]]), np.array([[np.nan, 1.0]]), np.zeros((2, 0)),
])
def test_whole_number_rows_are_written_as_orjson_writes_float32(labels):
    rows = len(labels)
    want = orjson.dumps({"predictions": [
        {"predicted_label": np.float32(1), "labels": row} for row in labels.astype(np.float32)]},
        option=orjson.OPT_SERIALIZE_NUMPY)
    assert encode_json(np.ones(rows), labels=labels) == want


def test_non_finite_values_are_written_as_null_and_read_back_as_nan():
    body = encode_json([np.nan], [[np.inf, 1.0]])
    assert body == b'{"predictions":[{"predicted_label":null,"distances":[null,1.0]}]}'
    got = parse_predictions_json(body)
    assert np.isnan(got["predicted_label"][0]) and np.isnan(got["distances"][0, 0])


@pytest.mark.parametrize(("args", "message"), [
    (([[1.0]],), r"predicted must be 1-D, got shape \(1, 1\)"),
    (([1.0], [1.0]), r"distances must be \(n, k\) with n = 1 rows of predicted, got shape \(1,\)"),
    (([1.0], None, [[1.0], [2.0]]), r"labels must be \(n, k\) with n = 1 rows"),
])
def test_encode_shape_errors(args, message):
    for encode in (encode_json, encode_jsonlines):
        with pytest.raises(ValueError, match=message):
            encode(*args)


def test_parse_predictions_inverts_encode():
    predicted = np.array([1.0, 0.1], np.float32)
    distances = np.array([[0.1, 0.2], [0.3, 1e-8]], np.float32)
    labels = np.array([[1, 0], [0, 1]], np.float32)
    for encode, parse in ((encode_json, parse_predictions_json),
                          (encode_jsonlines, parse_predictions_jsonlines)):
        got = parse(encode(predicted, distances, labels))
        assert list(got) == ["predicted_label", "distances", "labels"]
        for key, want in zip(got, (predicted, distances, labels)):
            assert got[key].dtype == np.float32
            np.testing.assert_array_equal(got[key], want)
        assert list(parse(encode(predicted))) == ["predicted_label"]
    assert parse_predictions_json(b'{"predictions":[]}')["predicted_label"].shape == (0,)
    assert parse_predictions_jsonlines(b"")["predicted_label"].shape == (0,)


@pytest.mark.parametrize(("body", "message"), [
    (b'{"predictions": 1}', r'<response>: expected \{"predictions": \[...\]\}, found'),
    (b'[1]', r'<response>: expected \{"predictions"'),
    (b'{"predictions": [{"label": 1}]}', r"<response>: not a k-NN prediction response"),
    (b'{"predictions": [{"predicted_label": 1, "distances": [1]}, {"predicted_label": 1}]}',
     r"not a k-NN prediction response \(KeyError\('distances'\)\)"),
    (b'{"predictions": [{"predicted_label": 1, "labels": [1]}, '
     b'{"predicted_label": 1, "labels": [1, 2]}]}', r"not a k-NN prediction response"),
    (b'{"predictions": [{"predicted_label": [1]}]}', r"predicted_label has shape \(1, 1\)"),
    (b'{"predictions": [{"predicted_label": 1, "labels": 1}]}', r"labels has shape \(1,\)"),
    (b'{"predictions": [', r"<response>: not valid JSON at line 1"),
    (b" ", r"<response>: no predictions: the body is empty"),
])
def test_parse_predictions_errors(body, message):
    with pytest.raises(DataError, match=message):
        parse_predictions_json(body)


@pytest.mark.parametrize("body", [
    b'{"instances": [{"features": [1, "\\ud800"]}]}',  # a lone surrogate escape
    '{"instances": [{"features": [1, "\udcff"]}]}'.encode("utf-8", "surrogatepass"),
])
def test_surrogates_are_data_errors(body: bytes) -> None:
    with pytest.raises(DataError, match=r"<body>: (not valid JSON|line 1: the body is not valid"
                                        r" UTF-8)"):
        parse_json(body, 2)


def test_quick_parse_leaves_the_checked_path_to_the_full_parse() -> None:
    good = request({"features": [1, 2]}, {"features": [3, 4]})
    assert parse_json(good, 2, quick=True).tolist() == [[1, 2], [3, 4]]
    bad = request({"features": [1, 2]}, {"features": [3, "4"]})
    with pytest.raises(NotQuick):
        parse_json(bad, 2, quick=True)
    with pytest.raises(NotQuick):
        parse_jsonlines(b'{"features": [1, 2]}\n{"features": [true, 2]}', 2, quick=True)
    with pytest.raises(DataError, match=r"instance 2, feature 2: expected a number"):
        parse_json(bad, 2)
