"""The ``application/json`` and ``application/jsonlines`` formats: request instances to
float32 matrices, and predictions (verbose or not) to response bodies and back."""

from __future__ import annotations

import codecs
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson

from ..errors import DataError
from . import NotQuick

Matrix = npt.NDArray[np.float32]
Label = Callable[[int], str]  # the 0-based instance index to "instance 3" / "line 7"

_BOM = codecs.BOM_UTF8
_NUMPY = orjson.OPT_SERIALIZE_NUMPY
_FORMS = ('{"features": [...]} or {"data": {"features": {"values": [...]}}} (sparse: '
          '{"data": {"features": {"keys": [...], "shape": [d], "values": [...]}}})')
_JSON_HINT = f'send {{"instances": [instance, ...]}} as UTF-8 JSON, each instance {_FORMS}'
_LINES_HINT = f"send one instance per line as UTF-8 JSON, each {_FORMS}"
_MAX_SIZE = 2**31  # a sparse shape beyond this is not a feature vector (and guards np.zeros)


# --- requests -----------------------------------------------------------------------------


def parse_json(body: bytes, feature_dim: int | None, *, source: str = "<body>",
               quick: bool = False) -> Matrix:
    """``{"instances": [instance, ...]}`` to a float32 ``(n, d)`` matrix. Each instance is
    ``{"features": [...]}`` or ``{"data": {"features": {"values": [...]}}}`` (with ``keys``
    and ``shape``: sparse, densified with zeros); other keys are ignored. ``feature_dim``
    None takes ``d`` from the first instance. Numbers beyond float32 become ±inf. ``quick``:
    raise NotQuick where the one-``np.asarray`` path does not apply."""
    _check_dim(feature_dim, source)
    data = _bytes(body)
    doc = _loads(data, source, None, _JSON_HINT)
    instances = doc.get("instances") if type(doc) is dict else None
    if type(instances) is not list:
        found = (_show(doc) if type(doc) is not dict else f'"instances" holding {_show(instances)}'
                 if "instances" in doc else 'an object without an "instances" key')
        raise DataError(f'{source}: expected a JSON object {{"instances": [...]}}, found '
                        f"{found}; {_JSON_HINT}")
    return _matrix(instances, feature_dim, source, lambda i: f"instance {i + 1}", data,
                   _JSON_HINT, quick)


def parse_jsonlines(body: bytes, feature_dim: int | None, *, source: str = "<body>",
                    quick: bool = False) -> Matrix:
    """One instance object per line (forms as in :func:`parse_json`) to a float32 ``(n, d)``
    matrix; blank lines are skipped, ``\\r\\n`` and a missing final newline are fine."""
    _check_dim(feature_dim, source)
    data = _bytes(body)
    instances: list[Any] = []
    numbers: list[int] = []
    for number, line in enumerate(data.split(b"\n"), start=1):
        if line.strip():
            instances.append(_loads(line, source, number, _LINES_HINT))
            numbers.append(number)
    return _matrix(instances, feature_dim, source, lambda i: f"line {numbers[i]}", data,
                   _LINES_HINT, quick)


def _check_dim(feature_dim: int | None, source: str) -> None:
    if feature_dim is not None and feature_dim < 1:
        raise DataError(f"{source}: feature_dim must be at least 1, got {feature_dim}; "
                        "set it to the number of features per instance")


def _bytes(body: bytes) -> bytes:
    data = body if type(body) is bytes else bytes(body)
    return data[3:] if data.startswith(_BOM) else data


def _loads(data: bytes, source: str, line: int | None, hint: str,
           empty: str = "no instances") -> Any:
    """orjson's parse, its errors as DataErrors that say where (``line`` for JSON Lines)."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        if line is None and not data.strip():
            raise _no_instances(source, hint, empty) from None
        try:
            data.decode("utf-8")
        except UnicodeDecodeError as bad:
            at = line or data.count(b"\n", 0, bad.start) + 1
            raise DataError(
                f"{source}: line {at}: the body is not valid UTF-8 ({bad.reason} at byte "
                f"{bad.start}{' of the line' if line else ''}, found "
                f"{data[bad.start:bad.end]!r}); encode it as UTF-8, the only encoding of JSON"
            ) from None
        where = f"line {exc.lineno}, column {exc.colno}" if line is None else (
            f"line {line}, column {exc.colno}")
        note = " (numbers must be within double range)" if "number" in exc.msg else ""
        raise DataError(f"{source}: not valid JSON at {where}: {exc.msg}{note}; {hint}") from None


def _no_instances(source: str, hint: str, empty: str = "no instances") -> DataError:
    return DataError(f"{source}: {empty}: the body is empty or lists none; {hint}")


def _matrix(instances: list[Any], feature_dim: int | None, source: str, label: Label,
            body: bytes, hint: str, quick: bool = False) -> Matrix:
    """Every instance's features as one float32 matrix: the common all-number, same-length
    case goes through one ``np.asarray``; otherwise each row is checked to name the fault."""
    if not instances:
        raise _no_instances(source, hint)
    expected = f"the model expects {feature_dim}"
    rows = [_row(instances[0], 0, feature_dim, expected, source, label)]
    dim = len(rows[0]) if feature_dim is None else feature_dim
    if dim == 0:
        raise DataError(f"{source}: {label(0)} has no features; send at least one number "
                        "per instance")
    expected = expected if feature_dim is not None else f"{label(0)} has {dim}"
    rows += [_row(x, i, dim, expected, source, label) for i, x in enumerate(instances[1:], 1)]
    matrix = _fast_matrix(rows, dim, body)
    if matrix is None:
        if quick:
            raise NotQuick
        _check_rows(rows, dim, expected, source, label)
        matrix = np.array(rows, np.float64)
    with np.errstate(over="ignore"):  # beyond float32: inf, which the server rejects by row
        return matrix.astype(np.float32)


def _fast_matrix(rows: list[Any], dim: int, body: bytes) -> np.ndarray | None:
    """One ``np.asarray`` when it gives a numeric ``(n, dim)`` matrix; None to check rows.
    numpy reads true/false as numbers, so a body spelling either takes the checked path."""
    if b"true" in body or b"false" in body:
        return None
    try:
        matrix = np.asarray(rows)
    except (ValueError, TypeError, OverflowError):
        return None
    ok = matrix.ndim == 2 and matrix.shape[1] == dim and matrix.dtype.kind in "fiu"
    return matrix if ok else None


def _check_rows(rows: list[Any], dim: int, expected: str, source: str, label: Label) -> None:
    """Raise for the first instance whose features are not ``dim`` numbers."""
    for i, row in enumerate(rows):
        if type(row) is list:
            _check_numbers(row, f"{source}: {label(i)}", "feature")
        if len(row) != dim:
            raise _count_error(f"{source}: {label(i)}", len(row), dim, expected)


def _count_error(where: str, count: int, dim: int, expected: str) -> DataError:
    return DataError(f"{where} has {count} features; {expected}; send exactly {dim} numbers "
                     "in every instance")


def _check_numbers(values: list[Any], where: str, what: str) -> None:
    for j, value in enumerate(values):
        if type(value) is not float and type(value) is not int:
            raise DataError(f"{where}, {what} {j + 1}: expected a number, found "
                            f"{_show(value)}; send plain JSON numbers (not strings, booleans, "
                            "null or lists)")


def _row(instance: Any, i: int, dim: int | None, expected: str, source: str,
         label: Label) -> Any:
    """The instance's feature list (unchecked) or its densified sparse row."""
    if type(instance) is dict:
        features = instance.get("features")
        if type(features) is list:
            return features
        data = instance.get("data")
        if features is None and type(data) is dict and type(data.get("features")) is dict:
            return _tensor(data["features"], f"{source}: {label(i)}", dim, expected)
    raise _form_error(instance, f"{source}: {label(i)}")


def _form_error(instance: Any, where: str) -> DataError:
    if type(instance) is not dict:
        found = _show(instance)
    elif "features" in instance:
        found = f'"features" holding {_show(instance["features"])}'
    elif "data" in instance:
        data = instance["data"]
        found = (f'"data" holding {_show(data)}' if type(data) is not dict else
                 f'"data" with "features" holding {_show(data.get("features"))}')
    else:
        found = f"an object with keys {sorted(instance)[:8]}"
    return DataError(f"{where}: expected an instance {_FORMS}, found {found}; "
                     "give every instance one of these forms")


def _tensor(tensor: dict[str, Any], where: str, dim: int | None, expected: str) -> Any:
    """``data.features``: its ``values`` list, or with ``keys`` (or only a ``shape``) a dense
    float64 row of zeros with the values at the keys."""
    values, keys, shape = tensor.get("values"), tensor.get("keys"), tensor.get("shape")
    if type(values) is not list:
        raise DataError(f'{where}: "data.features.values" must be a list of numbers, found '
                        f"{_show(values)}; {_FORMS}")
    if keys is None and (shape is None or values):
        return values
    size = _sparse_size(shape, where, dim)
    if dim is not None and size != dim:  # before np.zeros(size): shapes can be huge
        raise _count_error(where, size, dim, expected)
    keys = [] if keys is None else keys
    if type(keys) is not list or not all(type(k) is int for k in keys):
        bad = keys if type(keys) is not list else next(k for k in keys if type(k) is not int)
        raise DataError(f'{where}: sparse "keys" must be a list of integers, found '
                        f"{_show(bad)}; give the 0-based position of each value")
    _check_numbers(values, where, "sparse value")
    if len(keys) != len(values):
        raise DataError(f"{where}: the sparse instance has {len(keys)} keys for "
                        f"{len(values)} values; give one key per value")
    for key in keys:
        if not 0 <= key < size:
            raise DataError(f"{where}: sparse key {key} is outside the {size} features; keys "
                            f"must be from 0 to {size - 1}")
    row = np.zeros(size, np.float64)
    row[np.array(keys, np.intp)] = np.array(values, np.float64)
    return row


def _sparse_size(shape: Any, where: str, dim: int | None) -> int:
    if shape is None and dim is not None:
        return dim
    if (type(shape) is not list or not shape
            or not all(type(s) is int and s > 0 for s in shape)
            or math.prod(shape) >= _MAX_SIZE):
        raise DataError(f'{where}: a sparse instance needs "shape": [feature_dim] with a '
                        f"positive integer below {_MAX_SIZE}, found {_show(shape)}; give "
                        "the feature count")
    return math.prod(shape)


def _show(value: Any) -> str:
    """A JSON value for a message: its text (cut at 40 characters) and its kind."""
    kind = {bool: " (a boolean)", str: " (a string)", list: " (a list)", dict: " (an object)"}
    try:
        text = orjson.dumps(value).decode()
    except orjson.JSONEncodeError:  # nested beyond orjson's dump limit
        text = "..."
    return (text if len(text) <= 40 else text[:37] + "...") + kind.get(type(value), "")


# --- responses ----------------------------------------------------------------------------


def encode_json(predicted: npt.ArrayLike, distances: npt.ArrayLike | None = None,
                labels: npt.ArrayLike | None = None) -> bytes:
    """``{"predictions": [{"predicted_label": 2.0}, ...]}``; with ``(n, k)`` distances
    and/or labels (verbose) each object also has them, keys in that order. Numbers are
    float32 written as the shortest text that reads back the same (non-finite: null)."""
    return orjson.dumps({"predictions": _objects(predicted, distances, labels)}, option=_NUMPY)


def encode_jsonlines(predicted: npt.ArrayLike, distances: npt.ArrayLike | None = None,
                     labels: npt.ArrayLike | None = None) -> bytes:
    """The objects of :func:`encode_json`, one per line, each line ending in ``\\n``."""
    objects = _objects(predicted, distances, labels)
    if not objects:
        return b""
    # One dump, then the commas between objects become newlines: no "}" is inside one.
    return orjson.dumps(objects, option=_NUMPY)[1:-1].replace(b"},{", b"}\n{") + b"\n"


def _objects(predicted: npt.ArrayLike, distances: npt.ArrayLike | None,
             labels: npt.ArrayLike | None) -> list[dict[str, Any]]:
    """Each row's object for one orjson dump: float32 scalars and row views, which orjson
    writes as the shortest float32 text, or rows of whole numbers written beforehand."""
    first = np.ascontiguousarray(predicted, np.float32)
    if first.ndim != 1:
        raise ValueError(f"predicted must be 1-D, got shape {first.shape}")
    top = list(first)
    near = None if distances is None else _rows(distances, len(top), "distances")
    votes = None if labels is None else _rows(labels, len(top), "labels")
    if near is not None and votes is not None:
        return [{"predicted_label": p, "distances": d, "labels": v}
                for p, d, v in zip(top, near, votes)]
    if near is not None:
        return [{"predicted_label": p, "distances": d} for p, d in zip(top, near)]
    if votes is not None:
        return [{"predicted_label": p, "labels": v} for p, v in zip(top, votes)]
    return [{"predicted_label": p} for p in top]


def _rows(values: npt.ArrayLike, n: int, name: str) -> list[Any]:
    array = np.ascontiguousarray(values, np.float32)
    if array.ndim != 2 or array.shape[0] != n:
        raise ValueError(f"{name} must be (n, k) with n = {n} rows of predicted, got shape "
                         f"{array.shape}")
    return _whole_number_rows(array) or list(array)


def _whole_number_rows(array: np.ndarray) -> list[orjson.Fragment] | None:
    """Rows of whole numbers that all have the same digit count (labels 1..7, 0..9) as
    pre-written JSON, built as one byte matrix: orjson's float32 writer is 5x slower on
    whole numbers than this. None for anything else."""
    n, k = array.shape
    if not array.size or not 0 <= array.min() <= array.max() < 1e7:  # NaN: False
        return None
    digits = len(str(int(array.max())))
    if (array.min() < 10 ** (digits - 1) and digits > 1) or np.signbit(array).any() \
            or (array != np.floor(array)).any():
        return None
    row = b"[" + (b"0" * digits + b".0,") * k  # a row of zeros; the digits are added
    text = np.empty((n, len(row)), np.uint8)
    text[:] = np.frombuffer(row[:-1] + b"]", np.uint8)
    cells, rest = text[:, 1:].reshape(n, k, digits + 3), array.astype(np.uint32)
    for place in range(digits - 1, -1, -1):
        higher = rest // 10  # numpy divides by a constant fast, but its % is slow
        cells[:, :, place] += (rest - higher * 10).astype(np.uint8)
        rest = higher
    flat, size = text.tobytes(), text.shape[1]
    return [orjson.Fragment(flat[i * size:(i + 1) * size]) for i in range(n)]


def parse_predictions_json(body: bytes) -> dict[str, np.ndarray]:
    """The inverse of :func:`encode_json`: ``predicted_label`` ``(n,)`` and, if present,
    ``distances`` and ``labels`` ``(n, k)``, all float32 (null reads as NaN)."""
    doc = _loads(_bytes(body), "<response>", None, 'expected {"predictions": [...]}',
                 "no predictions")
    rows = doc.get("predictions") if type(doc) is dict else None
    if type(rows) is not list:
        raise DataError(f'<response>: expected {{"predictions": [...]}}, found {_show(doc)}')
    return _columns(rows)


def parse_predictions_jsonlines(body: bytes) -> dict[str, np.ndarray]:
    """The inverse of :func:`encode_jsonlines` (blank lines skipped)."""
    data = _bytes(body)
    return _columns([_loads(line, "<response>", number, "expected one object per line")
                     for number, line in enumerate(data.split(b"\n"), start=1)
                     if line.strip()])


def _columns(rows: list[Any]) -> dict[str, np.ndarray]:
    keys = ["predicted_label"] + [k for k in ("distances", "labels")
                                  if rows and type(rows[0]) is dict and k in rows[0]]
    try:
        columns = {k: np.array([row[k] for row in rows], np.float64) for k in keys}
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise DataError(f"<response>: not a k-NN prediction response ({exc!r}); expected "
                        'objects {"predicted_label": x, "distances": [...], "labels": [...]}'
                        ) from None
    for key, array in columns.items():
        if array.ndim != (1 if key == "predicted_label" else 2):
            raise DataError(f"<response>: {key} has shape {array.shape}; expected one "
                            f"{'number' if key == 'predicted_label' else 'list'} per row")
    with np.errstate(over="ignore"):
        return {k: a.astype(np.float32) for k, a in columns.items()}
