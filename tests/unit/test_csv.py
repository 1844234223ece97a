"""Tests for openknn.formats.csv: splits, streaming blocks, gzip, line ends, and every error."""

from __future__ import annotations

import gzip
import io
import threading
from pathlib import Path

import numpy as np
import pytest

from openknn.errors import DataError, UnsupportedMediaType
from openknn.formats import NotQuick
from openknn.formats.csv import (
    MAX_LABEL_SIZE,
    encode_csv,
    iter_csv_blocks,
    parse_csv,
    text_codec,
)

SHARED_DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
ROWS = np.array([[1, 2, 3, 4], [5, 6, 7, 8], [9, 10, 11, 12]], np.float32)
ROWS_CSV = b"1,2,3,4\n5,6,7,8\n9,10,11,12\n"


def read_all(path_or_file, **kwargs):
    """Concatenate every block of a file, and return the records_before of each block."""
    kwargs.setdefault("source", "data.csv")
    kwargs.setdefault("feature_dim", None)
    blocks = list(iter_csv_blocks(path_or_file, **kwargs))
    if not blocks:
        return None, None, []
    features = np.concatenate([block[0] for block in blocks])
    labels = None if blocks[0][1] is None else np.concatenate([block[1] for block in blocks])
    return features, labels, [block[2] for block in blocks]


def random_csv(rows: int, columns: int, seed: int = 0) -> tuple[np.ndarray, bytes]:
    matrix = np.random.default_rng(seed).normal(size=(rows, columns)).astype(np.float32)
    return matrix, encode_csv(matrix)


# --- label splits ----------------------------------------------------------------------


@pytest.mark.parametrize("label_size", [0, 1, 2])
def test_parse_csv_splits_leading_label_columns(label_size):
    features, labels = parse_csv(ROWS_CSV, label_size=label_size)
    assert features.dtype == np.float32 and features.flags.c_contiguous
    np.testing.assert_array_equal(features, ROWS[:, label_size:])
    if label_size == 0:
        assert labels is None
    else:
        assert labels.dtype == np.float32 and labels.shape == (3, label_size)
        np.testing.assert_array_equal(labels, ROWS[:, :label_size])


@pytest.mark.parametrize("label_size", [0, 1, 2])
def test_iter_csv_blocks_splits_leading_label_columns(tmp_path, label_size):
    path = tmp_path / "train.csv"
    path.write_bytes(ROWS_CSV)
    features, labels, starts = read_all(path, label_size=label_size, feature_dim=4 - label_size)
    np.testing.assert_array_equal(features, ROWS[:, label_size:])
    assert (labels is None) == (label_size == 0)
    if labels is not None:
        np.testing.assert_array_equal(labels, ROWS[:, :label_size])
    assert starts == [0]


def test_feature_dim_none_takes_the_first_record():
    features, labels = parse_csv(b"1,2,3\n4,5,6\n", label_size=1)
    assert features.shape == (2, 2) and labels.shape == (2, 1)


# --- files: gzip, blocks, file objects ---------------------------------------------------


def test_gzip_file_equals_plain_file(tmp_path):
    _, text = random_csv(3000, 6)
    plain, packed = tmp_path / "a.csv", tmp_path / "a.csv.gz"
    plain.write_bytes(text)
    packed.write_bytes(gzip.compress(text))
    want = read_all(plain, label_size=1, feature_dim=5)
    got = read_all(packed, label_size=1, feature_dim=5)
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])


def test_gzip_without_gz_name_by_magic_or_by_argument(tmp_path):
    path = tmp_path / "part-0000"
    path.write_bytes(gzip.compress(ROWS_CSV))
    for compression in ("infer", "gzip"):
        features, _, _ = read_all(path, label_size=0, compression=compression)
        np.testing.assert_array_equal(features, ROWS)


def test_multi_member_gzip_reads_every_member(tmp_path):
    path = tmp_path / "a.csv.gz"
    path.write_bytes(gzip.compress(b"1,2\n3,4\n") + gzip.compress(b"5,6\n"))
    features, _, _ = read_all(path, label_size=0)
    np.testing.assert_array_equal(features, [[1, 2], [3, 4], [5, 6]])


def test_file_objects_are_read_and_left_open():
    for raw, compression in ((ROWS_CSV, "infer"), (gzip.compress(ROWS_CSV), "gzip"),
                             (gzip.compress(ROWS_CSV), "infer")):
        file = io.BytesIO(raw)
        features, _, _ = read_all(file, label_size=0, compression=compression)
        np.testing.assert_array_equal(features, ROWS)
        assert not file.closed


class Pipe(io.RawIOBase):
    """A stream that cannot seek, like a socket or a SageMaker Pipe-mode FIFO."""

    def __init__(self, data: bytes) -> None:
        self.data = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        chunk = self.data.read(min(len(buffer), 5))
        buffer[:len(chunk)] = chunk
        return len(chunk)


def test_unseekable_streams_plain_and_gzip():
    features, _, _ = read_all(Pipe(ROWS_CSV), label_size=0, block_bytes=8)
    np.testing.assert_array_equal(features, ROWS)
    features, _, _ = read_all(Pipe(gzip.compress(ROWS_CSV)), label_size=0, compression="gzip")
    np.testing.assert_array_equal(features, ROWS)


def test_plain_compression_none_reads_the_bytes_as_they_are(tmp_path):
    path = tmp_path / "a.csv"
    path.write_bytes(ROWS_CSV)
    features, _, _ = read_all(path, label_size=0, compression=None)
    np.testing.assert_array_equal(features, ROWS)


@pytest.mark.parametrize("block_bytes", [1, 7, 100, 4096])
def test_small_blocks_give_the_same_arrays_and_record_numbers(tmp_path, block_bytes):
    matrix, text = random_csv(500, 5, seed=1)
    path = tmp_path / "a.csv"
    path.write_bytes(text.replace(b"\n", b"\r\n", 40) + b"\n\n")  # mixed line ends, blanks
    whole = read_all(path, label_size=1, feature_dim=4)
    blocks = list(iter_csv_blocks(path, source="a.csv", label_size=1, feature_dim=4,
                                  block_bytes=block_bytes))
    assert whole[2] == [0] and len(blocks) > 1
    np.testing.assert_array_equal(np.concatenate([b[0] for b in blocks]), matrix[:, 1:])
    np.testing.assert_array_equal(np.concatenate([b[1] for b in blocks]), matrix[:, :1])
    sizes = [len(b[0]) for b in blocks]
    assert [b[2] for b in blocks] == list(np.cumsum([0] + sizes[:-1]))


def test_stopping_early_releases_the_reader_thread(tmp_path):
    _, text = random_csv(2000, 3)
    path = tmp_path / "a.csv"
    path.write_bytes(text)
    before = threading.active_count()
    blocks = iter_csv_blocks(path, source="a.csv", label_size=0, feature_dim=3, block_bytes=500)
    next(blocks)
    blocks.close()
    assert threading.active_count() == before


def test_empty_and_blank_files_yield_nothing(tmp_path):
    for name, text in (("empty.csv", b""), ("blank.csv", b"\n\r\n\n")):
        path = tmp_path / name
        path.write_bytes(text)
        assert list(iter_csv_blocks(path, source=name, label_size=1, feature_dim=None)) == []


def test_leading_blank_lines_in_a_file_before_the_first_record(tmp_path):
    path = tmp_path / "a.csv"
    path.write_bytes(b"\n\n\n" + ROWS_CSV)
    features, _, starts = read_all(path, label_size=0, block_bytes=2)
    np.testing.assert_array_equal(features, ROWS)
    assert starts[0] == 0


# --- bodies: line ends, blank lines, empty, nan --------------------------------------------


@pytest.mark.parametrize("body", [
    b"1,2,3,4\n5,6,7,8\n9,10,11,12",          # the SDK's CSVSerializer: no trailing newline
    b"1,2,3,4\n5,6,7,8\n9,10,11,12\n",
    b"1,2,3,4\r\n5,6,7,8\r\n9,10,11,12\r\n",
    b"\n1,2,3,4\n\n\n5,6,7,8\r\n\r\n9,10,11,12\n\n",
    b"1,2,3,4\r5,6,7,8\r9,10,11,12",
    b"\xef\xbb\xbf1,2,3,4\n5,6,7,8\n9,10,11,12",  # a UTF-8 byte-order mark
    b"1, 2,3 ,4\n5,6,7,8\n9,10,11,\"12\"",        # spaces and quotes around numbers
])
def test_body_line_ends_and_blank_lines(body):
    features, labels = parse_csv(body)
    np.testing.assert_array_equal(features, ROWS)
    assert labels is None


def test_empty_body_gives_no_rows():
    features, labels = parse_csv(b"")
    assert features.shape == (0, 0) and features.dtype == np.float32 and labels is None
    features, labels = parse_csv(b"\n\r\n", label_size=2, feature_dim=3)
    assert features.shape == (0, 3) and labels.shape == (0, 2)


def test_nan_and_inf_are_numbers_here():
    features, _ = parse_csv(b"nan,inf\n-inf,NaN\n1e50,-nan")
    assert np.isnan(features[0, 0]) and np.isnan(features[1, 1]) and np.isnan(features[2, 1])
    assert features[0, 1] == np.inf and features[1, 0] == -np.inf and features[2, 0] == np.inf


def test_values_are_float64_rounded_to_float32_like_the_other_codecs():
    # Just below a float32 midpoint: rounding the text straight to float32 gives 1 + 2**-23,
    # but via float64 (as JSON's Python floats and RecordIO's float64 tensors go) 1 + 2**-22.
    text = "1.00000017881393432617187499,0.1,16777217,0.30000000000000004"
    features, _ = parse_csv(text.encode())
    want = np.array([float(v) for v in text.split(",")], np.float64).astype(np.float32)
    np.testing.assert_array_equal(features[0], want)
    assert features[0, 0] == np.float32(1 + 2**-22)


@pytest.mark.parametrize("encoding", ["latin-1", "utf-16", "UTF8", "ascii"])
def test_body_in_another_charset(encoding):
    features, _ = parse_csv(ROWS_CSV.decode().encode(encoding), encoding=encoding)
    np.testing.assert_array_equal(features, ROWS)


# --- errors -----------------------------------------------------------------------------


def test_wrong_column_count_on_record_3_of_a_file(tmp_path):
    path = tmp_path / "train.csv"
    good = ",".join(["1"] * 55)
    path.write_text(f"{good}\n{good}\n{','.join(['1'] * 54)}\n{good}\n")
    with pytest.raises(DataError, match=r"train\.csv: record 3 has 54 columns; expected 55 "
                       r"columns \(label_size 1 \+ feature_dim 54\)"):
        list(iter_csv_blocks(path, source="train.csv", label_size=1, feature_dim=54))


def test_wrong_column_count_without_feature_dim_names_record_1_as_the_rule():
    with pytest.raises(DataError, match=r"<body>: record 3 has 2 columns; expected 3 columns "
                       r"\(label_size 1 \+ 2 features, as in record 1\)"):
        parse_csv(b"1,2,3\n\n4,5,6\n7,8\n", label_size=1)


def test_first_record_with_the_wrong_count_for_feature_dim():
    with pytest.raises(DataError, match=r"record 1 has 3 columns; expected 4 columns "
                       r"\(label_size 0 \+ feature_dim 4\)"):
        parse_csv(b"1,2,3", feature_dim=4)


def test_blank_lines_do_not_count_as_records():
    with pytest.raises(DataError, match=r"record 2 has 1 columns"):
        parse_csv(b"\n\n1,2\n\n\n3\n")


def test_header_row_is_named_with_a_hint():
    with pytest.raises(DataError, match=r"<body>: record 1, column 1: expected a number, "
                       r"found 'label'; openknn's CSV has no header row"):
        parse_csv(b"label,f1,f2\n1,2,3\n", label_size=1)


@pytest.mark.parametrize("value, shown", [("abc", "'abc'"), ("", "''"), ("NA", "'NA'"),
                                          ("1_000", "'1_000'"), ("0x10", "'0x10'")])
def test_a_value_that_is_not_a_number(value, shown):
    with pytest.raises(DataError, match=rf"record 2, column 3: expected a number, found {shown}"):
        parse_csv(f"1,2,3\n4,5,{value}\n".encode())


@pytest.mark.parametrize("gzipped", [False, True])
@pytest.mark.parametrize("block_bytes", [4096, 16 << 20])
def test_non_number_in_the_middle_of_a_big_file_names_the_exact_record(
        tmp_path, gzipped, block_bytes):
    rows = np.random.default_rng(2).integers(0, 1000, (20_000, 8)).astype(str)
    rows[13_777, 4] = "abc"
    text = ("\n".join(",".join(row) for row in rows) + "\n").encode()
    path = tmp_path / ("big.csv.gz" if gzipped else "big.csv")
    path.write_bytes(gzip.compress(text) if gzipped else text)
    blocks = iter_csv_blocks(path, source=path.name, label_size=1, feature_dim=7,
                             block_bytes=block_bytes)
    with pytest.raises(DataError, match=rf"{path.name}: record 13778, column 5: expected a "
                       r"number, found 'abc'"):
        for _ in blocks:
            pass


def test_invalid_utf8_body():
    with pytest.raises(DataError, match=r"<body>: record 2: the body is not valid utf-8 "
                       r"\(invalid start byte at byte 6, found b'\\xff'\)"):
        parse_csv(b"1,2\n3,\xff4\n")


def test_invalid_utf8_in_a_file_is_a_bad_value(tmp_path):
    path = tmp_path / "a.csv"
    path.write_bytes(b"1,2\n3,4\xff\n")
    with pytest.raises(DataError, match=r"a\.csv: record 2, column 2: expected a number, "
                       r"found '4\\\\xff'"):
        list(iter_csv_blocks(path, source="a.csv", label_size=0, feature_dim=2))


def test_unknown_charset():
    with pytest.raises(UnsupportedMediaType, match=r"charset='klingon' is an unknown charset"):
        parse_csv(b"1,2", encoding="klingon")


@pytest.mark.parametrize("charset", ["hex", "rot13", "base64", "zlib", "utf-7",
                                     "unicode_escape", "raw_unicode_escape", "idna",
                                     "punycode", "undefined", "../encodings/hex", "x" * 41])
def test_charsets_that_are_no_text_encoding_are_415(charset):
    """Issue 10: these were LookupError or UnicodeError (500), or decoded to surrogates."""
    with pytest.raises(UnsupportedMediaType, match=r"send the body as utf-8"):
        parse_csv(b"+2AA-,1", encoding=charset)


def test_text_charsets_by_any_of_their_names():
    assert {text_codec(n) for n in ("latin-1", "ISO-8859-1", "l1", "latin1")} == {"iso8859-1"}
    assert text_codec("UTF8") == text_codec("utf_8") == "utf-8"
    assert text_codec("windows-1252") == "cp1252"


def test_lone_surrogates_in_a_utf16_body_are_data_errors():
    body = "1,\ud800".encode("utf-16-le", "surrogatepass")
    with pytest.raises(DataError, match=r"record 1: the body is not valid utf-16-le"):
        parse_csv(body, encoding="utf-16-le")


def test_label_size_is_bounded_before_any_column_is_made():
    """Issue 10: label_size=1000000 built a million columns (28.5 s, 5.7 GB)."""
    with pytest.raises(DataError, match=rf"label_size=1000000 is more than the {MAX_LABEL_SIZE} "
                                        r"leading label columns"):
        parse_csv(b"1,2\n", label_size=1_000_000, feature_dim=1)
    with pytest.raises(DataError, match=r"label_size=101 is more than the 100 leading"):
        parse_csv(b"1,2\n", label_size=101, feature_dim=100)  # feature_dim, if larger
    features, labels = parse_csv(b",".join([b"7"] * 65) + b"\n", label_size=64, feature_dim=1)
    assert features.tolist() == [[7.0]] and labels.shape == (1, 64)


def test_quick_parse_leaves_the_error_search_to_the_full_parse():
    assert parse_csv(b"1,2\n3,4\n", feature_dim=2, quick=True)[0].tolist() == [[1, 2], [3, 4]]
    with pytest.raises(NotQuick):
        parse_csv(b"1,2\n3,x\n", feature_dim=2, quick=True)
    with pytest.raises(DataError, match=r"record 2, column 2: expected a number, found 'x'"):
        parse_csv(b"1,2\n3,x\n", feature_dim=2)


def test_label_size_leaves_no_feature():
    with pytest.raises(DataError, match=r"record 1 has 2 column\(s\); expected at least 3 "
                       r"\(label_size 2 \+ at least 1 feature\)"):
        parse_csv(b"1,2\n", label_size=2)


def test_bad_sizes():
    with pytest.raises(DataError, match=r"label_size must be 0 or more, got -1"):
        parse_csv(b"1,2", label_size=-1)
    with pytest.raises(DataError, match=r"feature_dim must be at least 1, got 0"):
        parse_csv(b"1,2", feature_dim=0)


@pytest.mark.parametrize("damage", ["truncated", "corrupt"])
def test_damaged_gzip_file(tmp_path, damage):
    packed = gzip.compress(random_csv(2000, 4)[1])
    packed = packed[:-20] if damage == "truncated" else packed[:30] + b"\0" * 50 + packed[80:]
    path = tmp_path / "a.csv.gz"
    path.write_bytes(packed)
    with pytest.raises(DataError, match=r"a\.csv\.gz: cannot read the file after record \d+"):
        list(iter_csv_blocks(path, source="a.csv.gz", label_size=0, feature_dim=4))


def test_errors_are_data_errors_not_pyarrow_errors():
    for body in (b"a", b"1,2\n3", b"1,\"2\n3\",4", b"\x00\x01,\x02"):
        with pytest.raises(DataError) as caught:
            parse_csv(body, feature_dim=2)
        assert type(caught.value) is DataError and "record" in str(caught.value)


def test_error_messages_use_the_given_source():
    with pytest.raises(DataError, match=r"^s3://bucket/train/part-3\.csv: record 1, column 1"):
        parse_csv(b"x,1", source="s3://bucket/train/part-3.csv")


def test_real_kaggle_covtype_file_has_a_header_that_is_named(tmp_path):
    path = SHARED_DATA / "covtype" / "kaggle-forest-cover-type-prediction_train.csv.gz"
    if not path.exists():
        pytest.skip(f"{path} is not here")
    with pytest.raises(DataError, match=r"train\.csv\.gz: record 1, column 1: expected a "
                       r"number, found 'Id'; openknn's CSV has no header row"):
        list(iter_csv_blocks(path, source="train.csv.gz", label_size=1, feature_dim=None))
    # Without its header it reads whole: 15,120 records of Id + 54 features + Cover_Type.
    lines = gzip.decompress(path.read_bytes()).splitlines()[1:]
    body = tmp_path / "train.csv"
    body.write_bytes(b"\n".join(lines))
    features, labels, _ = read_all(body, label_size=1, feature_dim=55)
    assert features.shape == (15_120, 55) and np.all(labels[:, 0] >= 1)


# --- encode_csv -------------------------------------------------------------------------


def test_encode_1d_one_value_per_line():
    assert encode_csv(np.array([2.0, 0.5, 3], np.float32)) == b"2.0\n0.5\n3.0\n"


def test_encode_2d_shortest_round_trip():
    values = np.array([[0.1, 2.0], [1e-5, -np.inf], [np.nan, 3.4028235e38]], np.float32)
    assert encode_csv(values) == b"0.1,2.0\n1e-05,-inf\nnan,3.4028235e+38\n"
    assert encode_csv(np.array([[1, 2], [3, 4]])) == b"1,2\n3,4\n"
    assert encode_csv([True, False]) == b"1.0\n0.0\n"


def test_encode_empty_and_bad_shapes():
    assert encode_csv(np.zeros((0, 3), np.float32)) == b""
    assert encode_csv(np.float32(1.5)) == b"1.5\n"
    with pytest.raises(ValueError, match=r"1-D or 2-D array, got shape \(1, 1, 1\)"):
        encode_csv(np.zeros((1, 1, 1)))


def test_encode_then_parse_1d():
    values = np.array([0.1, 7.0, -2.5], np.float32)
    features, _ = parse_csv(encode_csv(values), feature_dim=1)
    np.testing.assert_array_equal(features[:, 0], values)
