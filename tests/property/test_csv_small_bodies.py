"""The small-body CSV path (Python's float for a few rows of plain decimal numbers) against
pyarrow's, which every other body takes: on generated bodies of numbers written every way a
decimal can be (signs, no integer part, no fraction, exponents, leading zeros, huge and tiny
values, CRLF and blank lines), both give the same float32 features and labels, bit for bit;
and a body the small path does not take (nan, spaces, a short row) gives what it gave before."""

from __future__ import annotations

import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from openknn.errors import DataError
from openknn.formats import csv as csv_format

digits = st.text("0123456789", min_size=1, max_size=12)


@st.composite
def numbers(draw: st.DrawFn) -> str:
    sign = draw(st.sampled_from(["", "+", "-"]))
    shape = draw(st.sampled_from(["int", "frac", "dot", "lead-dot"]))
    whole, part = draw(digits), draw(digits)
    body = {"int": whole, "frac": f"{whole}.{part}", "dot": f"{whole}.",
            "lead-dot": f".{part}"}[shape]
    if draw(st.booleans()):
        body += draw(st.sampled_from(["e", "E"])) + draw(st.sampled_from(["", "+", "-"])) + \
            str(draw(st.integers(0, 400)))
    return sign + body


@st.composite
def bodies(draw: st.DrawFn) -> tuple[bytes, int, int]:
    columns = draw(st.integers(1, 8))
    label_size = draw(st.integers(0, min(2, columns - 1)))
    rows = [",".join(draw(numbers()) for _ in range(columns))
            for _ in range(draw(st.integers(1, 6)))]
    newline = draw(st.sampled_from(["\n", "\r\n"]))
    text = newline.join(rows)
    if draw(st.booleans()):
        text += newline
    if draw(st.booleans()):
        text = newline + text  # a blank first line, which pyarrow skips
    return text.encode(), columns - label_size, label_size


def both(body: bytes, feature_dim: int, label_size: int) -> tuple[object, object]:
    small = csv_format.parse_csv(body, feature_dim=feature_dim, label_size=label_size)
    table = csv_format._read_table(body, feature_dim + label_size)
    arrow = csv_format._to_matrices(table, label_size)
    return small, arrow


@settings(max_examples=300, deadline=None)
@given(case=bodies())
def test_small_bodies_parse_as_pyarrow_parses_them(case: tuple[bytes, int, int]) -> None:
    body, feature_dim, label_size = case
    assert csv_format._parse_small(body, feature_dim + label_size) is not None
    (features, labels), (arrow_features, arrow_labels) = both(body, feature_dim, label_size)
    assert features.dtype == np.float32 and features.flags.c_contiguous
    assert features.tobytes() == arrow_features.tobytes()
    assert (labels is None) == (arrow_labels is None)
    if labels is not None:
        assert labels.tobytes() == arrow_labels.tobytes()


@pytest.mark.parametrize("body", [b"nan,1\n", b"1, 2\n", b'"1",2\n', b"1,2\n3\n", b"inf,1\n",
                                  b"1,,2\n", b"0x1,2\n", b"\r1,2\n", b"1,2\r", b"1\r,2\n",
                                  b"1_0,2\n", b"+,2\n", b".,2\n", b"1e,2\n", b"1-2,3\n",
                                  b"1,2,\n", b"1.2.3,4\n"])
def test_other_small_bodies_take_pyarrows_path(body: bytes) -> None:
    assert csv_format._parse_small(body, 2) is None
    try:
        features, _ = csv_format.parse_csv(body, feature_dim=2)
    except DataError as exc:
        assert "record" in str(exc)
    else:
        assert features.shape[1] == 2  # nan and inf are numbers to pyarrow too


# The grammar the small path took before issue 15 replaced its regular expression by a check
# of the bytes and float() itself: the oracle for which bodies it takes.
_NUMBER = rb"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?"
_ROW = _NUMBER + rb"(?:," + _NUMBER + rb")*"
PLAIN_BODY = re.compile(rb"(?:(?:" + _ROW + rb")?\r?\n)*(?:" + _ROW + rb")?")


@settings(max_examples=2000, deadline=None)
@given(st.text("0123456789.,eE+-\r\n_ ", max_size=40).map(str.encode))
def test_the_small_path_takes_exactly_the_plain_decimal_bodies(body: bytes) -> None:
    """On any string of these characters, the small path takes a body exactly when the
    regular expression of plain decimals matches it and every line has the same width; what
    it takes parses as pyarrow parses it."""
    lines = [line for line in body.split(b"\n") if line and line != b"\r"]
    columns = len(lines[0].split(b",")) if lines else 1
    want = bool(lines) and PLAIN_BODY.fullmatch(body) is not None and all(
        len(line.split(b",")) == columns for line in lines)
    got = csv_format._parse_small(body, columns)
    assert (got is not None) == want
    if got is not None:
        table = csv_format._read_table(body, columns)
        arrow, _ = csv_format._to_matrices(table, 0)
        assert csv_format._split_small(got, 0)[0].tobytes() == arrow.tobytes()


@st.composite
def json_numbers(draw: st.DrawFn) -> str:
    """Numbers as encoders write them, every one a JSON number too (orjson's path): integers
    of up to 30 digits, fractions, exponents to +-400 (1e400 is no JSON double), and -0."""
    sign = draw(st.sampled_from(["", "-"]))
    whole = draw(st.sampled_from(["0", ""])) or (
        draw(st.sampled_from("123456789")) + draw(st.text("0123456789", max_size=29)))
    body = whole
    if draw(st.booleans()):
        body += "." + draw(digits)
    if draw(st.booleans()):
        body += draw(st.sampled_from(["e", "E"])) + draw(st.sampled_from(["", "+", "-"])) + \
            str(draw(st.integers(0, 400)))
    return sign + body


@settings(max_examples=500, deadline=None)
@given(columns=st.integers(1, 8), data=st.data())
def test_json_shaped_numbers_parse_as_pyarrow_parses_them(columns: int,
                                                            data: st.DataObject) -> None:
    """Bodies whose every field is a JSON number take orjson's path (unless a field is -0 or
    beyond a double) and give pyarrow's float32 values, bit for bit (-0.0 included)."""
    rows = data.draw(st.lists(st.lists(json_numbers(), min_size=columns, max_size=columns),
                              min_size=1, max_size=6))
    newline = data.draw(st.sampled_from(["\n", "\r\n"]))
    body = newline.join(",".join(row) for row in rows).encode() + newline.encode()
    lines = [line for line in body.split(b"\n") if line]
    fields = [value for row in rows for value in row]
    by_json = csv_format._json_rows(lines)
    assert (by_json is not None) == ("-0" not in fields
                                     and all(abs(float(v)) != float("inf") for v in fields))
    got = csv_format._parse_small(body, columns)
    assert got is not None
    table = csv_format._read_table(body, columns)
    arrow, _ = csv_format._to_matrices(table, 0)
    assert got.tobytes() == arrow.tobytes()


@pytest.mark.parametrize("body", [
    # 2**60 + 2**36 + 1, and its negative: straight from the integer, float32 would round
    # away from zero; through a double, as pyarrow goes, it rounds toward it
    b"1152921573326323713,1\n", b"-1152921573326323713,1\n",
    b"340282346638528859811704183484516925440,1\n",  # float32's largest value
    b"340282347906179460039933584981220130816,1\n",  # 2**100 above it, yet rounds to it
    b"340282356779733661637539395458142568448,1\n",  # halfway above it: inf
    b"1e39,1\n", b"-0,1\n", b"1,-0\n-0,2\n", b"0e-0,-0.0\n"])
def test_edge_numbers_parse_as_pyarrow_parses_them(body: bytes) -> None:
    small = csv_format._parse_small(body, 2)
    assert small is not None
    arrow, _ = csv_format._to_matrices(csv_format._read_table(body, 2), 0)
    assert small.tobytes() == arrow.tobytes()
