"""The SDK's RecordIO helpers against decision 33's test vectors, and the serializers'
SageMaker behaviour."""

from __future__ import annotations

import io

import numpy as np
import orjson
import pytest

from openknn.errors import DataError
from openknn.sdk import (
    CSVSerializer,
    JSONDeserializer,
    JSONLinesDeserializer,
    JSONLinesSerializer,
    JSONSerializer,
    Record,
    RecordDeserializer,
    RecordSerializer,
    csv_serializer,
    read_records,
    write_numpy_to_dense_tensor,
    write_spmatrix_to_sparse_tensor,
)

VECTOR_1 = ("0a23d7ce34000000" "0a1e0a0676616c756573121412120a100000c03f00008041000060410000b841"
            "12120a0676616c756573120812060a0400008040")
VECTOR_2 = ("0a23d7ce1f000000" "0a1d0a0676616c756573121312110a080000803f00000040120200031a0104"
            "00")
VECTOR_4_PAYLOAD = ("0a120a0676616c756573120812060a040000003f120f0a0676616c75657312053a030a"
                    "0107")


def written(array: np.ndarray, labels: np.ndarray | None = None) -> bytes:
    buf = io.BytesIO()
    write_numpy_to_dense_tensor(buf, array, labels)
    return buf.getvalue()


def test_spec_vector_1_float32() -> None:
    data = written(np.array([[1.5, 16.0, 14.0, 23.0]], np.float32), np.array([4.0], np.float32))
    assert data.hex() == VECTOR_1
    [record] = read_records(io.BytesIO(data))
    assert list(record.features["values"].float32_tensor.values) == [1.5, 16.0, 14.0, 23.0]
    assert list(record.label["values"].float32_tensor.values) == [4.0]


def test_spec_vector_4_int64_labels_become_int32() -> None:
    data = written(np.array([[0.5]], np.float32), np.array([7], np.int64))
    assert data[8:].hex().startswith(VECTOR_4_PAYLOAD)
    [record] = read_records(data)
    assert record.label["values"].WhichOneof("value") == "int32_tensor"
    assert list(record.label["values"].int32_tensor.values) == [7]


def test_float64_covtype_row_is_484_bytes_and_int64_features_are_int32() -> None:
    row = np.arange(54, dtype=np.float64)[None, :]
    data = written(row, np.array([5.0]))
    assert len(data) == 484
    [record] = read_records(data)
    assert list(record.features["values"].float64_tensor.values) == list(range(54))
    [record] = read_records(written(np.array([[1, 2, 3]], np.int64)))
    assert list(record.features["values"].int32_tensor.values) == [1, 2, 3]
    assert len(record.label) == 0


def test_spec_vector_2_sparse() -> None:
    sparse = pytest.importorskip("scipy.sparse")
    buf = io.BytesIO()
    write_spmatrix_to_sparse_tensor(buf, sparse.csr_matrix(np.array([[1.0, 0, 0, 2.0]],
                                                                    np.float32)))
    assert buf.getvalue().hex() == VECTOR_2


def test_record_class_round_trip() -> None:
    record = Record()
    record.label["predicted_label"].float32_tensor.values.append(2.0)
    payload = record.SerializeToString()
    assert payload.hex() == "121b0a0f7072656469637465645f6c6162656c120812060a0400000040"


def test_serializers() -> None:
    x = np.array([[1.0, 2.5], [3.0, 4.0]])
    assert CSVSerializer().serialize(x) == b"1.0,2.5\n3.0,4.0"
    assert csv_serializer(x[0]) == b"1.0,2.5"  # v1 serializers are callables
    assert orjson.loads(JSONSerializer().serialize(x)) == {
        "instances": [{"features": [1.0, 2.5]}, {"features": [3.0, 4.0]}]}
    assert JSONSerializer().serialize({"instances": []}) == b'{"instances":[]}'
    assert JSONLinesSerializer().serialize(x).splitlines() == [b'{"features":[1.0,2.5]}',
                                                              b'{"features":[3.0,4.0]}']
    assert RecordSerializer().serialize(x[0]) == written(x[:1])
    with pytest.raises(DataError, match=r"CSVSerializer cannot serialize object"):
        CSVSerializer().serialize(object())


def test_deserializers() -> None:
    assert JSONDeserializer().deserialize(io.BytesIO(b'{"a": 1}'), "application/json") == {
        "a": 1}
    assert JSONLinesDeserializer().deserialize(io.BytesIO(b'{"a":1}\n{"a":2}\n'), "") == [
        {"a": 1}, {"a": 2}]
    records = RecordDeserializer().deserialize(io.BytesIO(written(np.ones((2, 3)))), "")
    assert len(records) == 2 and list(records[1].features["values"].float64_tensor.values) == [
        1.0, 1.0, 1.0]
