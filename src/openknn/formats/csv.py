"""The ``text/csv`` format: training channel files and request bodies to float32 matrices
(labels in the leading ``label_size`` columns, no header), and matrices back to CSV text."""

from __future__ import annotations

import codecs
import csv
import functools
import gzip
import os
import re
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from typing import IO, Any, TypeVar, Union

import numpy as np
import numpy.typing as npt
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from ..errors import DataError, UnsupportedMediaType
from . import NotQuick
from .media import shown

Matrix = npt.NDArray[np.float32]
PathOrFile = Union[str, "os.PathLike[str]", IO[bytes]]
_T = TypeVar("_T")

_BOM = codecs.BOM_UTF8
_GZIP_MAGIC = b"\x1f\x8b"
_FIRST_RECORD = re.compile(rb"[^\r\n]+")  # pyarrow skips empty lines, so records are the rest
_ARROW_BLOCK = 1 << 20  # pyarrow's parse unit: a 16 MiB block splits over both cores
_READ_ERRORS = (OSError, EOFError, zlib.error, pa.ArrowException)
_NO_HEADER = "openknn's CSV has no header row and every field must be a number"
# label_size columns cost as much to parse as feature columns: a request may name up to
# this many (or feature_dim, if larger), never a million (decision 32).
MAX_LABEL_SIZE = 64
# Text encodings a body may be sent in (Python's codec names): the ASCII-compatible
# single-byte sets, UTF-16/32 and the common CJK sets. Not the bytes-to-bytes codecs (hex,
# base64, zlib, rot13), nor those that produce surrogates or are not charsets at all
# (utf-7, unicode_escape, idna, punycode).
TEXT_CHARSETS = frozenset({
    "ascii", "utf-8", "utf-8-sig", "utf-16", "utf-16-le", "utf-16-be", "utf-32",
    "utf-32-le", "utf-32-be", *(f"iso8859-{i}" for i in (*range(1, 12), *range(13, 17))),
    *(f"cp{i}" for i in (437, 850, 852, 866, *range(1250, 1259))), "koi8-r", "koi8-u",
    "mac-roman", "shift_jis", "cp932", "euc_jp", "gb2312", "gbk", "gb18030", "big5",
    "cp949", "cp950", "euc_kr",
})
_CHARSET_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,39}")


@dataclass(frozen=True)
class _Layout:
    """How many columns every record has, and where that number came from (for messages)."""

    label_size: int
    columns: int
    why: str


def iter_csv_blocks(
    path_or_file: PathOrFile,
    *,
    source: str,
    label_size: int,
    feature_dim: int | None,
    block_bytes: int = 16 << 20,
    compression: str | None = "infer",
) -> Iterator[tuple[Matrix, Matrix | None, int]]:
    """Stream a CSV file as ``(features, labels, records_before)`` blocks of about
    ``block_bytes`` of text each. ``labels`` is None when ``label_size`` is 0. The file is
    gzip-compressed when ``compression`` is ``"gzip"``, or ``"infer"`` and the name ends in
    ``.gz`` or the data starts with the gzip magic bytes. A file object is read, not closed.
    Memory: about two blocks (the next one is read ahead in a worker thread)."""
    _check_sizes(label_size, feature_dim, source)
    if block_bytes < 1:
        raise ValueError(f"block_bytes must be at least 1, got {block_bytes}")
    layout = None if feature_dim is None else _fixed_layout(label_size, feature_dim)
    records = 0
    stream, owned = _open(path_or_file, _codec(path_or_file, compression))
    try:
        blocks = _parsed_blocks(stream, block_bytes, layout, label_size, source)
        for data, block_layout, table in _ahead(blocks):
            if isinstance(table, pa.ArrowException):
                raise _locate_error(data, block_layout, source=source, first_record=records,
                                    cause=table) from table
            features, labels = _to_matrices(table, label_size)
            if len(features):
                yield features, labels, records
            records += len(features)
    except _READ_ERRORS as exc:  # parse errors are DataErrors by now: these come from reading
        raise DataError(
            f"{source}: cannot read the file after record {records}: {exc}; check that it is "
            "complete, and that it is gzip-compressed only if its name ends in .gz"
        ) from exc
    finally:
        if owned:
            stream.close()


def parse_csv(
    body: bytes,
    *,
    label_size: int = 0,
    feature_dim: int | None = None,
    source: str = "<body>",
    encoding: str = "utf-8",
    quick: bool = False,
) -> tuple[Matrix, Matrix | None]:
    """Parse one in-memory body (a request) into ``(features, labels)``; ``labels`` is None
    when ``label_size`` is 0. ``encoding`` is the Content-Type's charset. ``quick``: raise
    NotQuick instead of searching for the record that fails (a few parses more)."""
    _check_sizes(label_size, feature_dim, source)
    data = _as_utf8(body, encoding, source)
    layout = (
        _first_record_layout(data, label_size, source)
        if feature_dim is None
        else _fixed_layout(label_size, feature_dim)
    )
    small = None if layout is None else _parse_small(data, layout.columns)
    if small is not None:  # it holds a record
        return _split_small(small, label_size)
    if layout is None or _FIRST_RECORD.search(data) is None:  # no record: pyarrow would fail
        empty = np.empty((0, feature_dim or 0), np.float32)
        return empty, (np.empty((0, label_size), np.float32) if label_size else None)
    try:
        table = _read_table(data, layout.columns)
    except pa.ArrowException as exc:
        if quick:
            raise NotQuick from exc
        raise _locate_error(data, layout, source=source, first_record=0, cause=exc) from exc
    return _to_matrices(table, label_size)


# A small body of plain decimal numbers (a request of a few rows) is parsed without pyarrow,
# whose read_csv costs about 0.37 ms whatever the size (its set-up). Where every field is also
# a JSON number (``-?(0|[1-9]d*)(.d+)?([eE][+-]?d+)?``, what encoders write), orjson parses
# the rows in C, about 1 us for covtype's 54 columns against 9 us for Python's float (on 2
# cores, issue 15); the rest (``+1``, ``.5``, ``5.``, ``01``) is parsed by float. Both round
# correctly, as pyarrow does, so the numbers are the same: orjson's value of a JSON number is
# float's, bit for bit (checked on 660,000 numbers: shortest and 17-digit forms of random
# doubles, 40-digit mantissas, exponents to +-400, halfway cases), save "-0", which orjson
# reads as the integer 0 and float as -0.0; a body with that field is left to float.
# Anything else (nan, inf, spaces, quotes, a short row) takes pyarrow's path and its errors.
# "Plain decimal": only these bytes, and a carriage return only before a line feed; then
# float() takes exactly the decimals ``[+-](d+[.d*]|.d+)[(e|E)[+-]d+]`` (its other forms
# need letters, underscores or spaces), and a CR is the whitespace it strips at a line's end
# (JSON's whitespace too). A check of the bytes instead of a regular expression, which cost
# half of the parse.
SMALL_CSV_BYTES = 4096
FLOAT32_MAX = float(np.finfo(np.float32).max)
_PLAIN = b"0123456789.,eE+-\r\n"
_NEGATIVE_ZERO = re.compile(rb"(?<![eE])-0(?:[,\r\]]|$)")  # the field -0, in _json_rows' text


def _json_rows(lines: list[bytes]) -> list[Any] | None:
    """The lines' numbers as orjson reads them, when every field is a JSON number (and none
    is ``-0``); None for anything else. The bytes are plain decimal (``_PLAIN``), so a row
    can hold numbers only, never a nested value."""
    joined = b"],[".join(lines)
    if b"-0" in joined and _NEGATIVE_ZERO.search(joined):
        return None
    try:
        rows: list[Any] = orjson.loads(b"[[" + joined + b"]]")
    except orjson.JSONDecodeError:  # "+1", ".5", "5.", "01", an empty field; 1e400 (inf)
        return None
    return rows


def _parse_small(data: bytes, columns: int) -> np.ndarray | None:
    """The float32 rows of a body of at most SMALL_CSV_BYTES that holds only plain decimal
    numbers, ``columns`` to every non-empty line; None for any other body. Each number
    rounds once to a double (orjson, or Python's float) and once from it to float32, as
    pyarrow's doubles are cast; one beyond float32's range becomes ±inf, as in
    ``_to_matrices``. Checks are made on the Python numbers, not with numpy: in the server
    a numpy call on a small array costs several microseconds (docs/serving.md)."""
    if (len(data) > SMALL_CSV_BYTES or data.translate(None, _PLAIN)
            or data.count(b"\r") != data.count(b"\r\n")):
        return None
    lines = [line for line in data.split(b"\n") if line and line != b"\r"]
    if not lines:
        return None
    values = _json_rows(lines)
    if values is None:
        rows = [line.split(b",") for line in lines]
        if any(len(row) != columns for row in rows):
            return None
        try:
            values = [[float(value) for value in row] for row in rows]
        except ValueError:  # an empty field, a lone sign or dot, "1-2", "1e"
            return None
    elif any(len(row) != columns for row in values):
        return None
    # numpy takes a Python int or float to float32 through a double (the tests hold it to
    # pyarrow on an integer where going straight would round the other way)
    if all(-FLOAT32_MAX <= min(row) and max(row) <= FLOAT32_MAX for row in values):
        return np.array(values, np.float32)  # nothing overflows: no np.errstate (~2 us)
    with np.errstate(over="ignore"):  # 1e39 becomes inf, as in _to_matrices
        return np.array(values, np.float32)


def _split_small(rows: np.ndarray, label_size: int) -> tuple[Matrix, Matrix | None]:
    if not label_size:
        return rows, None
    return (np.ascontiguousarray(rows[:, label_size:]),
            np.ascontiguousarray(rows[:, :label_size]))


def encode_csv(values: npt.ArrayLike) -> bytes:
    """A 1-D array as one value per line, a 2-D array as comma-separated rows; every line
    ends in ``\\n``. Floats use the shortest text that reads back to the same value."""
    array = np.asarray(values)
    if array.dtype.kind not in "fiu":  # bools and objects: as numbers, not "True"
        array = array.astype(np.float64)
    if array.ndim > 2:
        raise ValueError(f"encode_csv takes a 1-D or 2-D array, got shape {array.shape}")
    if array.size == 0:
        return b""
    # numpy's float-to-str cast is the shortest round-trip repr (Dragon4), done in C.
    text = np.atleast_1d(array).astype(str)
    lines = text.tolist() if text.ndim == 1 else [",".join(row) for row in text.tolist()]
    return ("\n".join(lines) + "\n").encode("ascii")


# --- reading ---------------------------------------------------------------------------


def _codec(path_or_file: PathOrFile, compression: str | None) -> str | None:
    if compression not in ("infer", "gzip", None):
        raise ValueError(f"compression must be 'infer', 'gzip' or None, got {compression!r}")
    if compression != "infer":
        return compression
    if _name(path_or_file).lower().endswith(".gz") or _peek(path_or_file, 2) == _GZIP_MAGIC:
        return "gzip"
    return None


def _name(path_or_file: PathOrFile) -> str:
    if isinstance(path_or_file, (str, os.PathLike)):
        return os.fspath(path_or_file)
    name = getattr(path_or_file, "name", "")
    return name if isinstance(name, str) else ""


def _peek(path_or_file: PathOrFile, size: int) -> bytes:
    """The first bytes, without consuming them (b"" where that cannot be done)."""
    if isinstance(path_or_file, (str, os.PathLike)):
        with open(path_or_file, "rb") as file:
            return file.read(size)
    if not path_or_file.seekable():
        return b""
    where = path_or_file.tell()
    head = path_or_file.read(size)
    path_or_file.seek(where)
    return head


def _open(path_or_file: PathOrFile, codec: str | None) -> tuple[Any, bool]:
    """A readable stream and whether this module owns (and so closes) it."""
    if isinstance(path_or_file, (str, os.PathLike)):
        # Arrow's C++ gzip reader is faster than Python's gzip module.
        return pa.input_stream(os.fspath(path_or_file), compression=codec), True
    if codec == "gzip":
        # Not pyarrow here: its Python-file wrapper closes the caller's file.
        return gzip.GzipFile(fileobj=path_or_file, mode="rb"), True
    return path_or_file, False


def _line_blocks(stream: Any, block_bytes: int) -> Iterator[bytes]:
    """Whole lines, about ``block_bytes`` at a time: a block never splits a record, so
    every block parses alone and its records can be counted exactly."""
    carry = b""
    first = True
    while chunk := stream.read(block_bytes):
        data = carry + chunk if carry else chunk
        cut = (data.rfind(b"\n") + 1) or (data.rfind(b"\r") + 1)  # "\r"-only files too
        if cut == 0:
            carry = data
            continue
        block, carry = data[:cut], data[cut:]
        if first:
            block, first = _strip_bom(block), False
        yield block
    if carry:
        yield _strip_bom(carry) if first else carry


def _parsed_blocks(stream: Any, block_bytes: int, layout: _Layout | None, label_size: int,
                   source: str) -> Iterator[tuple[bytes, _Layout, Any]]:
    """Each block's text, layout and pyarrow table, or the ArrowException it raised: the
    record numbers that the error message needs are only known to the consumer."""
    for data in _line_blocks(stream, block_bytes):
        layout = layout or _first_record_layout(data, label_size, source)
        if layout is None:  # only blank lines so far
            continue
        try:
            table = _read_table(data, layout.columns)
        except pa.ArrowException as exc:
            table = exc
        yield data, layout, table


def _ahead(items: Iterator[_T]) -> Iterator[_T]:
    """The same items, the next one made in a worker thread while the caller uses this one:
    pyarrow and zlib release the GIL, so reading and parsing overlap the float32 copies and
    whatever the consumer does with a block (measured 10-35% faster on 2 cores)."""
    with ThreadPoolExecutor(1, thread_name_prefix="openknn-csv") as pool:
        pending = pool.submit(next, items, None)
        while (item := pending.result()) is not None:
            pending = pool.submit(next, items, None)
            yield item


def _strip_bom(data: bytes) -> bytes:
    return data.removeprefix(_BOM)


@functools.lru_cache(maxsize=256)  # a pure function of the name, asked on every body
def text_codec(charset: str) -> str:
    """Python's name for a Content-Type ``charset`` that is a text encoding openknn reads
    (:data:`TEXT_CHARSETS`), or UnsupportedMediaType (415) naming it."""
    name = None
    if _CHARSET_NAME.fullmatch(charset):
        try:
            name = codecs.lookup(charset).name
        except LookupError:
            pass
    if name not in TEXT_CHARSETS:
        kind = "an unknown charset" if name is None else "not a text encoding openknn reads"
        raise UnsupportedMediaType(
            f"Content-Type charset={shown(charset)} is {kind}; send the body as utf-8 "
            "(charset=utf-8, the default) or, for text/csv, name its real text encoding "
            "(ascii, latin-1, cp1252, utf-16, shift_jis, ...)")
    return name


def _as_utf8(body: bytes, encoding: str, source: str) -> bytes:
    """The body as UTF-8 bytes without a byte-order mark, for pyarrow."""
    codec = text_codec(encoding)
    if codec in ("utf-8", "ascii", "utf-8-sig") and body.isascii():  # nothing to decode
        return body
    try:
        text = body.decode(codec)
    except UnicodeDecodeError as exc:
        raise DataError(
            f"{source}: record {_record_at(body, exc.start)}: the body is not valid "
            f"{encoding} ({exc.reason} at byte {exc.start}, found {body[exc.start:exc.end]!r}); "
            "encode the body as that charset, or name its real charset in the Content-Type "
            "(text/csv; charset=...)"
        ) from exc
    if codec == "utf-8":  # valid UTF-8 holds no surrogates
        return _strip_bom(body)
    try:
        return text.lstrip("\ufeff").encode("utf-8")
    except UnicodeEncodeError as exc:  # a lone surrogate decoded from UTF-16 / UTF-32
        raise DataError(
            f"{source}: the body decodes as {encoding} to a lone surrogate "
            f"({text[exc.start]!r}), which is no character; send text, as utf-8"
        ) from None


def _record_at(data: bytes, offset: int) -> int:
    """The 1-based record holding byte ``offset`` (error path only)."""
    before = data[:offset]
    records = sum(1 for line in before.splitlines() if line)
    at_line_start = not before or before.endswith((b"\n", b"\r"))
    return records + 1 if at_line_start else records


# --- parsing ---------------------------------------------------------------------------


def max_label_size(feature_dim: int | None) -> int:
    """The most leading label columns a body may declare."""
    return max(MAX_LABEL_SIZE, feature_dim or 0)


def _check_sizes(label_size: int, feature_dim: int | None, source: str) -> None:
    if label_size < 0:
        raise DataError(f"{source}: label_size must be 0 or more, got {label_size}; "
                        "set it to the number of leading label columns")
    if label_size > max_label_size(feature_dim):
        raise DataError(f"{source}: label_size={label_size} is more than the "
                        f"{max_label_size(feature_dim)} leading label columns a record may "
                        "have; label_size is the number of label columns before the features "
                        "(usually 0 or 1): fix it or drop the parameter")
    if feature_dim is not None and feature_dim < 1:
        raise DataError(f"{source}: feature_dim must be at least 1, got {feature_dim}; "
                        "set it to the number of feature columns")


@lru_cache(maxsize=64)  # one per request shape, not an f-string per request
def _fixed_layout(label_size: int, feature_dim: int) -> _Layout:
    return _Layout(label_size, label_size + feature_dim,
                   f"label_size {label_size} + feature_dim {feature_dim}")


def _first_record_layout(data: bytes, label_size: int, source: str) -> _Layout | None:
    """Without a feature_dim the first record decides the column count (None: no record)."""
    match = _FIRST_RECORD.search(data)
    if match is None:
        return None
    columns = len(_fields(match.group()))
    if columns <= label_size:
        raise DataError(
            f"{source}: record 1 has {columns} column(s); expected at least {label_size + 1} "
            f"(label_size {label_size} + at least 1 feature); check label_size, or the "
            "file's delimiter (openknn's CSV is comma-separated)"
        )
    return _Layout(label_size, columns,
                   f"label_size {label_size} + {columns - label_size} features, as in record 1")


@lru_cache(maxsize=64)
def _options(columns: int) -> tuple[Any, Any, Any]:
    names = [f"c{i}" for i in range(columns)]
    read = pacsv.ReadOptions(column_names=names, block_size=_ARROW_BLOCK)
    parse = pacsv.ParseOptions(delimiter=",", ignore_empty_lines=True)
    # float64 then float32, as the JSON and RecordIO codecs do, so one request gives the same
    # features in every format (and pyarrow parses float64 no slower than float32). No null
    # spellings: "" and "NA" are errors while "nan" and "inf" stay numbers.
    convert = pacsv.ConvertOptions(column_types={name: pa.float64() for name in names},
                                   null_values=[], strings_can_be_null=False,
                                   quoted_strings_can_be_null=False)
    return read, parse, convert


def _read_table(data: bytes, columns: int) -> Any:
    read, parse, convert = _options(columns)
    return pacsv.read_csv(pa.py_buffer(data), read_options=read, parse_options=parse,
                          convert_options=convert)


def _to_matrices(table: Any, label_size: int) -> tuple[Matrix, Matrix | None]:
    """Cast the float64 columns into row-major float32 matrices, one pyarrow batch (about
    1 MiB of text) at a time so the strided writes stay in cache; no per-row Python."""
    rows = table.num_rows
    labels = np.empty((rows, label_size), np.float32)
    features = np.empty((rows, table.num_columns - label_size), np.float32)
    start = 0
    with np.errstate(over="ignore"):  # 1e39 becomes inf: the data layer names non-finite rows
        for batch in table.to_batches():
            stop = start + batch.num_rows
            for j, column in enumerate(batch.columns):
                target = labels[:, j] if j < label_size else features[:, j - label_size]
                target[start:stop] = column.to_numpy(zero_copy_only=False)
            start = stop
    return features, (labels if label_size else None)


# --- the error path: find the exact record pyarrow failed on ----------------------------


def _locate_error(data: bytes, layout: _Layout, *, source: str, first_record: int,
                  cause: Exception) -> DataError:
    """Bisect the block's records with pyarrow itself until one record fails alone, then
    say what is wrong with it. Each step parses half the rest: about one extra parse."""
    records = [line for line in data.splitlines() if line]  # same line ends as pyarrow
    lo, hi = 0, len(records)
    while hi - lo > 1:  # records[lo:hi] fails; keep the half holding the first failure
        mid = (lo + hi) // 2
        if _fails(records[lo:mid], layout.columns):
            hi = mid
        else:
            lo = mid
    number = first_record + lo + 1
    if records and _fails(records[lo:lo + 1], layout.columns):
        found = _describe(records[lo], layout, source=source, number=number)
        if found is not None:
            return found
    return DataError(
        f"{source}: records {first_record + 1} to {first_record + len(records)}: cannot "
        f"read them as numbers ({cause}); {_NO_HEADER}, comma-separated, one record per line"
    )


def _fails(records: list[bytes], columns: int) -> bool:
    try:
        _read_table(b"\n".join(records), columns)
    except pa.ArrowException:
        return True
    return False


def _describe(record: bytes, layout: _Layout, *, source: str, number: int) -> DataError | None:
    """What is wrong with one record that pyarrow rejects (None if this cannot tell)."""
    fields = _fields(record)
    if len(fields) != layout.columns:
        return DataError(
            f"{source}: record {number} has {len(fields)} columns; expected "
            f"{layout.columns} columns ({layout.why}); give every record the same number "
            "of comma-separated values, or fix label_size / feature_dim"
        )
    for column, value in enumerate(fields, start=1):
        if not _is_number(value):
            return DataError(
                f"{source}: record {number}, column {column}: expected a number, found "
                f"{value!r}; {_NO_HEADER}: remove any header line and fix or drop this record"
            )
    return None


def _fields(record: bytes) -> list[str]:
    if b'"' not in record:  # the common case, and the one that needs no csv module
        return record.decode("utf-8", "backslashreplace").split(",")
    try:
        return next(csv.reader([record.decode("utf-8", "backslashreplace")]), [])
    except csv.Error:
        return [record.decode("utf-8", "backslashreplace")]


def _is_number(value: str) -> bool:
    """pyarrow's own float grammar; its CSV reader trims spaces and tabs first."""
    try:
        pc.cast(pa.array([value.strip(" \t")]), pa.float64())
    except pa.ArrowException:
        return False
    return True
