"""Serializers and deserializers with the SageMaker Python SDK's names and behaviour, over
openknn's one codec per format."""

from __future__ import annotations

from collections.abc import Iterable
from typing import IO, Any

import numpy as np
import orjson

from ..errors import DataError
from ..formats import recordio
from ..formats._protobuf_wire import record_class
from ..formats.media import CSV, JSON, JSONLINES, RECORDIO


def _require_rows(data: Any, who: str, accepted: str) -> np.ndarray:
    rows = _rows(data)
    if rows is None:
        raise DataError(f"{who} cannot serialize {type(data).__name__}; pass {accepted}")
    return rows


def _rows(data: Any) -> np.ndarray | None:
    """A numeric array as 2-D rows (a 1-D vector is one row), or None for other data."""
    if isinstance(data, (str, bytes, dict)):
        return None
    array = np.asarray(data)
    if array.dtype.kind not in "iuf":
        return None
    return array.reshape(1, -1) if array.ndim == 1 else array


class BaseSerializer:
    CONTENT_TYPE = "application/octet-stream"

    @property
    def content_type(self) -> str:
        return self.CONTENT_TYPE

    def serialize(self, data: Any) -> bytes:
        """Bytes and text pass through as they are (already in the format); the rest is
        encoded by the subclass."""
        if isinstance(data, bytes):
            return data
        if isinstance(data, str):
            return data.encode()
        return self._encode(data)

    def _encode(self, data: Any) -> bytes:
        raise NotImplementedError

    def __call__(self, data: Any) -> bytes:  # SDK v1 serializers were plain functions
        return self.serialize(data)


class CSVSerializer(BaseSerializer):
    """Rows joined by ``\\n``, values by ``,`` (no trailing newline), as the SDK writes them."""

    CONTENT_TYPE = CSV

    def _encode(self, data: Any) -> bytes:
        rows = _require_rows(data, "CSVSerializer",
                             "a numpy array, a list of rows, or CSV text")
        return "\n".join(",".join(repr(v) for v in row) for row in rows.tolist()).encode()


class JSONSerializer(BaseSerializer):
    """Arrays become ``{"instances": [{"features": row}, ...]}``; dicts and lists are dumped."""

    CONTENT_TYPE = JSON

    def _encode(self, data: Any) -> bytes:
        rows = _rows(data)
        if rows is not None:
            return orjson.dumps({"instances": [{"features": r} for r in rows.tolist()]})
        return orjson.dumps(data, option=orjson.OPT_SERIALIZE_NUMPY)


class JSONLinesSerializer(BaseSerializer):
    """One JSON object per line; array rows become ``{"features": row}``."""

    CONTENT_TYPE = JSONLINES

    def _encode(self, data: Any) -> bytes:
        rows = _rows(data)
        items: Iterable[Any] = ([{"features": r} for r in rows.tolist()] if rows is not None
                                else data)
        return b"".join(orjson.dumps(item, option=orjson.OPT_SERIALIZE_NUMPY) + b"\n"
                        for item in items)


class RecordSerializer(BaseSerializer):
    """RecordIO-protobuf via ``write_numpy_to_dense_tensor`` (a 1-D array is one row)."""

    CONTENT_TYPE = RECORDIO

    def _encode(self, data: Any) -> bytes:
        return recordio.dense_to_bytes(_require_rows(data, "RecordSerializer",
                                                     "a numpy array"))


class BaseDeserializer:
    ACCEPT: tuple[str, ...] = ("*/*",)

    def deserialize(self, stream: IO[bytes], content_type: str) -> Any:
        raise NotImplementedError

    def __call__(self, stream: IO[bytes], content_type: str) -> Any:
        return self.deserialize(stream, content_type)


class BytesDeserializer(BaseDeserializer):
    def deserialize(self, stream: IO[bytes], content_type: str) -> bytes:
        return stream.read()


class JSONDeserializer(BaseDeserializer):
    ACCEPT = (JSON,)

    def deserialize(self, stream: IO[bytes], content_type: str) -> Any:
        return orjson.loads(stream.read())


class JSONLinesDeserializer(BaseDeserializer):
    ACCEPT = (JSONLINES,)

    def deserialize(self, stream: IO[bytes], content_type: str) -> list[Any]:
        return [orjson.loads(line) for line in stream.read().splitlines() if line.strip()]


class CSVDeserializer(BaseDeserializer):
    ACCEPT = (CSV,)

    def deserialize(self, stream: IO[bytes], content_type: str) -> list[list[str]]:
        return [line.split(",") for line in stream.read().decode().splitlines() if line]


class RecordDeserializer(BaseDeserializer):
    """A list of protobuf ``Record`` messages, as the SDK's ``read_records`` returns."""

    ACCEPT = (RECORDIO,)

    def deserialize(self, stream: IO[bytes], content_type: str) -> list[Any]:
        return read_records(stream)


def read_records(file: IO[bytes] | bytes) -> list[Any]:
    """Every record of a RecordIO stream as an SDK-compatible protobuf ``Record``
    (``record.label["predicted_label"].float32_tensor.values[0]``)."""
    data = file if isinstance(file, bytes) else file.read()
    cls = record_class()
    return [cls.FromString(payload) for payload in recordio.iter_payloads(data)]


def write_numpy_to_dense_tensor(file: IO[bytes], array: np.ndarray,
                                labels: np.ndarray | None = None) -> None:
    """The SageMaker SDK's function: one Record per row, the same bytes."""
    recordio.write_dense(file, array, labels)  # type: ignore[arg-type]


def write_spmatrix_to_sparse_tensor(file: IO[bytes], array: Any,
                                    labels: np.ndarray | None = None) -> None:
    """The SageMaker SDK's function for scipy sparse matrices."""
    recordio.write_sparse(file, array, labels)  # type: ignore[arg-type]


# SDK v1 names (``from sagemaker.predictor import csv_serializer, json_deserializer``).
csv_serializer = CSVSerializer()
json_serializer = JSONSerializer()
json_deserializer = JSONDeserializer()

# The protobuf message class, as ``sagemaker.amazon.record_pb2.Record``.
Record = record_class()


__all__ = ["BaseDeserializer", "BaseSerializer", "BytesDeserializer", "CSVDeserializer",
           "CSVSerializer", "JSONDeserializer", "JSONLinesDeserializer", "JSONLinesSerializer",
           "JSONSerializer", "Record", "RecordDeserializer", "RecordSerializer", "csv_serializer",
           "json_deserializer", "json_serializer",
           "read_records", "write_numpy_to_dense_tensor", "write_spmatrix_to_sparse_tensor"]
