"""Tests for openknn.formats.recordio: decision 33's vectors, the protobuf runtime and the SDK's
writers as references, dmlc multi-part records, every error, and fast path == general path."""

from __future__ import annotations

import io
import struct
from typing import Any

import numpy as np
import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from openknn.errors import DataError
from openknn.formats import _protobuf_wire, _record_batch, recordio
from openknn.formats.recordio import (
    MAGIC,
    Record,
    Tensor,
    decode_features,
    decode_record,
    dense_to_bytes,
    encode_label_records,
    encode_record,
    frame,
    iter_feature_blocks,
    iter_payloads,
    read_records,
    write_dense,
    write_sparse,
)

# ---------------------------------------------------------------- references


def _runtime_record_class() -> Any:
    """The Record schema (decision 33) built with descriptor_pb2 here, independently of the
    module's own."""
    fdp = descriptor_pb2.FieldDescriptorProto
    schema = descriptor_pb2.FileDescriptorProto(
        name="test_aialgs.proto", package="aialgs.data", syntax="proto2")
    for name, kind in (("Float32Tensor", fdp.TYPE_FLOAT), ("Float64Tensor", fdp.TYPE_DOUBLE),
                       ("Int32Tensor", fdp.TYPE_INT32)):
        msg = schema.message_type.add(name=name)
        for number, field, ftype in ((1, "values", kind), (2, "keys", fdp.TYPE_UINT64),
                                     (3, "shape", fdp.TYPE_UINT64)):
            msg.field.add(name=field, number=number, type=ftype,
                          label=fdp.LABEL_REPEATED).options.packed = True
    raw = schema.message_type.add(name="Bytes")
    raw.field.add(name="value", number=1, type=fdp.TYPE_BYTES, label=fdp.LABEL_REPEATED)
    raw.field.add(name="content_type", number=2, type=fdp.TYPE_STRING, label=fdp.LABEL_OPTIONAL)
    value = schema.message_type.add(name="Value")
    value.oneof_decl.add(name="value")
    for number, field, type_name in ((2, "float32_tensor", "Float32Tensor"),
                                     (3, "float64_tensor", "Float64Tensor"),
                                     (7, "int32_tensor", "Int32Tensor"), (9, "bytes", "Bytes")):
        value.field.add(name=field, number=number, type=fdp.TYPE_MESSAGE,
                        label=fdp.LABEL_OPTIONAL, type_name=f".aialgs.data.{type_name}",
                        oneof_index=0)
    record = schema.message_type.add(name="Record")
    for number, field in ((1, "features"), (2, "label")):
        entry = record.nested_type.add(name=field.title() + "Entry")
        entry.options.map_entry = True
        entry.field.add(name="key", number=1, type=fdp.TYPE_STRING, label=fdp.LABEL_OPTIONAL)
        entry.field.add(name="value", number=2, type=fdp.TYPE_MESSAGE, label=fdp.LABEL_OPTIONAL,
                        type_name=".aialgs.data.Value")
        record.field.add(name=field, number=number, type=fdp.TYPE_MESSAGE,
                         label=fdp.LABEL_REPEATED, type_name=f".aialgs.data.Record.{entry.name}")
    for number, field in ((3, "uid"), (4, "metadata"), (5, "configuration")):
        record.field.add(name=field, number=number, type=fdp.TYPE_STRING,
                         label=fdp.LABEL_OPTIONAL)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(schema)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("aialgs.data.Record"))


PB = _runtime_record_class()
_KIND = {np.dtype(np.float32): "float32_tensor", np.dtype(np.float64): "float64_tensor",
         np.dtype(np.int32): "int32_tensor"}


def _sdk_write_recordio(f: io.BytesIO, data: bytes) -> None:
    """sagemaker.amazon.common._write_recordio."""
    length = len(data)
    f.write(struct.pack("I", 0xCED7230A))
    f.write(struct.pack("I", length))
    pad = (((length + 3) >> 2) << 2) - length
    f.write(data)
    f.write(b"\x00" * pad)


def _sdk_type(dtype: np.dtype[Any]) -> str:
    if dtype == np.dtype(int):
        return "int32_tensor"
    return {"float64": "float64_tensor", "float32": "float32_tensor"}[dtype.name]


def sdk_write_dense(array: np.ndarray, labels: np.ndarray | None = None) -> bytes:
    """sagemaker.amazon.common.write_numpy_to_dense_tensor, on the runtime's Record."""
    f, record = io.BytesIO(), PB()
    for index, vector in enumerate(array):
        record.Clear()
        getattr(record.features["values"], _sdk_type(array.dtype)).values.extend(vector)
        if labels is not None:
            getattr(record.label["values"], _sdk_type(labels.dtype)).values.extend(
                [labels[index]])
        _sdk_write_recordio(f, record.SerializeToString())
    return f.getvalue()


def sdk_write_sparse(matrix: Any, labels: np.ndarray | None = None) -> bytes:
    """sagemaker.amazon.common.write_spmatrix_to_sparse_tensor, on the runtime's Record."""
    f, record = io.BytesIO(), PB()
    csr = matrix.tocsr()
    kind = _sdk_type(csr.dtype)
    for row_idx in range(csr.shape[0]):
        record.Clear()
        row = csr.getrow(row_idx)
        tensor = getattr(record.features["values"], kind)
        tensor.values.extend(row.data)
        tensor.keys.extend(row.indices.astype(np.uint64))
        if labels is not None:
            getattr(record.label["values"], _sdk_type(labels.dtype)).values.extend(
                [labels[row_idx]])
        tensor.shape.extend([csr.shape[1]])
        _sdk_write_recordio(f, record.SerializeToString())
    return f.getvalue()


def _runtime(record: Record) -> Any:
    msg = PB()
    for target, tensors in ((msg.features, record.features), (msg.label, record.label)):
        for key, t in tensors.items():
            tensor = getattr(target[key], _KIND[t.values.dtype])
            tensor.SetInParent()
            tensor.values.extend(t.values.tolist())
            for name, arr in (("keys", t.keys), ("shape", t.shape)):
                if arr is not None:
                    getattr(tensor, name).extend(arr.tolist())
    for name in ("uid", "metadata", "configuration"):
        if getattr(record, name) is not None:
            setattr(msg, name, getattr(record, name))
    return msg


def _random_record(rng: np.random.Generator, max_keys: int) -> Record:
    def tensor() -> Tensor:
        dtype = rng.choice([np.float32, np.float64, np.int32])
        n = int(rng.integers(0, 6))
        if dtype == np.int32:
            values = rng.integers(-(2**31), 2**31, n).astype(np.int32)
        else:
            values = rng.standard_normal(n).astype(dtype) * 10.0 ** rng.integers(-30, 30)
        if rng.random() < 0.5:
            return Tensor(values)
        keys = rng.integers(0, 2**63, n, dtype=np.uint64) >> rng.integers(0, 63, n,
                                                                           dtype=np.uint64)
        return Tensor(values, keys, np.array([int(rng.integers(1, 2**40))], np.uint64))

    def tensors() -> dict[str, Tensor]:
        names = sorted({str(rng.choice(["values", "a", "é", "", "x" * 200]))
                        for _ in range(int(rng.integers(0, max_keys + 1)))})
        return {name: tensor() for name in names}

    texts = [None if rng.random() < 0.5 else str(rng.choice(["", "id-1", "ünï"]))
             for _ in range(3)]
    return Record(tensors(), tensors(), *texts)


def _hand_record(rows: np.ndarray, labels: np.ndarray | None) -> bytes:
    out = b""
    for i, row in enumerate(rows):
        label = {} if labels is None else {"values": Tensor(labels[i:i + 1])}
        out += frame(encode_record(Record({"values": Tensor(row)}, label)))
    return out


# ---------------------------------------------------------------- decision 33 vectors

V1 = ("0a23d7ce34000000" "0a1e0a0676616c756573121412120a100000c03f00008041000060410000b841"
      "12120a0676616c756573120812060a0400008040")
V2 = "0a23d7ce1f000000" "0a1d0a0676616c756573121312110a080000803f00000040120200031a0104" "00"
V3 = "0a23d7ce1d000000" "121b0a0f7072656469637465645f6c6162656c120812060a0400000040" "000000"
V4 = "0a120a0676616c756573120812060a040000003f120f0a0676616c75657312053a030a0107"


def test_vector_1_dense_float32_with_label() -> None:
    f = io.BytesIO()
    write_dense(f, np.array([[1.5, 16.0, 14.0, 23.0]], np.float32), np.array([4.0], np.float32))
    assert f.getvalue().hex() == V1
    features, labels = decode_features(bytes.fromhex(V1), 4)
    assert features.tolist() == [[1.5, 16.0, 14.0, 23.0]] and labels.tolist() == [4.0]


def test_vector_2_sparse() -> None:
    scipy_sparse = pytest.importorskip("scipy.sparse")
    f = io.BytesIO()
    write_sparse(f, scipy_sparse.csr_matrix(np.array([[1.0, 0, 0, 2.0]], np.float32)))
    assert f.getvalue().hex() == V2
    assert encode_record(Record({"values": Tensor(np.array([1.0, 2.0], np.float32),
                                                  np.array([0, 3], np.uint64),
                                                  np.array([4], np.uint64))})) \
        == bytes.fromhex(V2)[8:-1]
    features, labels = decode_features(bytes.fromhex(V2), None)
    assert features.tolist() == [[1.0, 0.0, 0.0, 2.0]] and labels is None


def test_vector_3_response_record() -> None:
    assert encode_label_records({"predicted_label": np.array([2.0])}).hex() == V3
    (record,) = read_records(bytes.fromhex(V3))
    assert record == Record({}, {"predicted_label": Tensor(np.array([2.0], np.float32))})


def test_vector_4_int64_label_becomes_int32_tensor() -> None:
    data = dense_to_bytes(np.array([[0.5]], np.float32), np.array([7], np.int64))
    assert data[8:8 + len(V4) // 2].hex() == V4
    assert read_records(data)[0].label["values"] == Tensor(np.array([7], np.int32))


def test_covtype_row_frames_to_484_bytes() -> None:
    data = dense_to_bytes(np.arange(54, dtype=np.float64)[None, :], np.array([3.0]))
    assert len(data) == 484 and struct.unpack_from("<I", data, 4)[0] == 476


# ---------------------------------------------------------------- the protobuf runtime


def test_encode_record_matches_the_runtime_byte_for_byte() -> None:
    rng = np.random.default_rng(0)
    for i in range(400):
        # The runtime orders map entries its own way, so bytes are compared with one entry
        # per map and messages with several.
        record = _random_record(rng, 1 if i % 2 else 3)
        ours = encode_record(record)
        if i % 2:
            assert ours == _runtime(record).SerializeToString()
        parsed = PB()
        parsed.ParseFromString(ours)
        assert parsed == _runtime(record)
        assert decode_record(_runtime(record).SerializeToString()) == record
        assert decode_record(ours) == record


def test_decode_record_reads_runtime_bytes_in_any_map_order() -> None:
    msg = PB()
    for key in ("b", "a", "c"):
        msg.label[key].float32_tensor.values.append(1.5)
    msg.features["values"].int32_tensor.values.extend([-1, 300, 2**31 - 1])
    record = decode_record(msg.SerializeToString())
    assert set(record.label) == {"a", "b", "c"}
    assert record.features["values"] == Tensor(np.array([-1, 300, 2**31 - 1], np.int32))


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int64])
@pytest.mark.parametrize("label_dtype", [None, np.float32, np.float64, np.int64])
def test_writers_match_the_sdk(dtype: Any, label_dtype: Any) -> None:
    rng = np.random.default_rng(1)
    array = (rng.standard_normal((40, 7)) * 1000).astype(dtype)
    labels = None if label_dtype is None else (rng.standard_normal(40) * 300).astype(label_dtype)
    expected = sdk_write_dense(array, labels)
    f = io.BytesIO()
    write_dense(f, array, labels)
    assert f.getvalue() == expected == dense_to_bytes(array, labels)


def test_write_sparse_matches_the_sdk() -> None:
    scipy_sparse = pytest.importorskip("scipy.sparse")
    rng = np.random.default_rng(2)
    for dtype in (np.float32, np.float64, np.int64):
        matrix = scipy_sparse.random(30, 300, density=0.05, format="csr", random_state=3,
                                     dtype=np.float64)
        matrix = (matrix * 1000).astype(dtype)
        labels = rng.integers(0, 5, 30)
        f = io.BytesIO()
        write_sparse(f, matrix, labels)
        assert f.getvalue() == sdk_write_sparse(matrix, labels)
        features, got = decode_features(f.getvalue(), 300)
        np.testing.assert_array_equal(features, matrix.toarray().astype(np.float32))
        np.testing.assert_array_equal(got, labels.astype(np.float32))


def test_writer_errors_word_as_the_sdk() -> None:
    with pytest.raises(ValueError, match="Unsupported dtype int32 on array"):
        dense_to_bytes(np.zeros((2, 2), np.int32))
    with pytest.raises(ValueError, match="Unsupported dtype float16 on array"):
        dense_to_bytes(np.zeros((2, 2)), np.zeros(2, np.float16))
    with pytest.raises(ValueError, match=r"Label shape \(3,\) not compatible with array shape"):
        dense_to_bytes(np.zeros((2, 4)), np.zeros(3))
    with pytest.raises(ValueError, match="Array must be a Matrix"):
        dense_to_bytes(np.zeros(4))
    with pytest.raises(ValueError, match="Labels must be a Vector"):
        dense_to_bytes(np.zeros((2, 2)), np.zeros((2, 1)))
    with pytest.raises(ValueError, match="Value out of range"):
        dense_to_bytes(np.array([[2**31]]))
    with pytest.raises(TypeError, match="Array must be sparse"):
        write_sparse(io.BytesIO(), np.zeros((2, 2)))
    with pytest.raises(ValueError, match="float32, float64 or int32"):
        encode_record(Record({"values": Tensor(np.zeros(2, np.int64))}))


# ---------------------------------------------------------------- framing


def _dmlc_part(part: bytes, cflag: int) -> bytes:
    return struct.pack("<II", MAGIC, cflag << 29 | len(part)) + part + bytes(-len(part) % 4)


def test_multi_part_records_are_rejoined() -> None:
    magic_float = np.frombuffer(struct.pack("<I", MAGIC), np.float32)[0]
    row = np.array([magic_float, 1.0, magic_float, 2.0], np.float32)
    payload = encode_record(Record({"values": Tensor(row)}, {"values": Tensor(row[1:2])}))
    first = payload.find(struct.pack("<I", MAGIC))
    second = payload.find(struct.pack("<I", MAGIC), first + 4)
    assert first % 4 == 0 and second % 4 == 0  # where the dmlc writer splits
    two = _dmlc_part(payload[:first], 1) + _dmlc_part(payload[first + 4:], 3)
    three = (_dmlc_part(payload[:first], 1) + _dmlc_part(payload[first + 4:second], 2)
             + _dmlc_part(payload[second + 4:], 3))
    plain = dense_to_bytes(np.array([[5.0, 6, 7, 8]] * 20, np.float32), np.ones(20, np.float32))
    for split in (two, three):
        assert list(iter_payloads(split)) == [payload]
        features, labels = decode_features(plain + split + plain, 4)
        fill = np.full((20, 4), [5.0, 6, 7, 8])
        expected = np.vstack([fill, row, fill])
        np.testing.assert_array_equal(features, expected.astype(np.float32))
        assert labels.tolist() == [1.0] * 41
    with pytest.raises(DataError, match="record 1: a dmlc continuation flag 3 is out of sequence"):
        list(iter_payloads(_dmlc_part(payload, 3)))


def test_missing_final_padding_is_tolerated() -> None:
    data = bytes.fromhex(V3)
    assert list(iter_payloads(data[:-3])) == list(iter_payloads(data))


# ---------------------------------------------------------------- errors


def _five_rows() -> bytes:
    return dense_to_bytes(np.arange(15, dtype=np.float32).reshape(5, 3), np.arange(5.0))


def test_bad_magic_names_the_bytes_and_suggests_csv() -> None:
    with pytest.raises(DataError, match=r"train.csv, record 1: expected the RecordIO magic number "
                                        r"0xced7230a .* found 31 2e 30 2c .*text/csv"):
        decode_features(b"1.0,2.0,3.0\n4.0,5.0,6.0\n", None, source="train.csv")
    with pytest.raises(DataError, match="record 6: expected the RecordIO magic"):
        decode_features(_five_rows() + b"\x00" * 8, 3)


def test_truncated_header_and_payload_name_the_record() -> None:
    data = _five_rows()
    with pytest.raises(DataError, match="x, record 6: the record header is cut short: expected 8 "
                                        "bytes, 5 remain"):
        decode_features(data + data[:5], 3, source="x")
    stride = len(data) // 5
    with pytest.raises(DataError, match=rf"record 3: the payload is cut short: the header says "
                                        rf"{stride - 8} bytes, 10 remain"):
        decode_features(data[:2 * stride + 18], 3)
    with pytest.raises(DataError, match="record 3: the payload is cut short"):
        list(iter_feature_blocks(io.BytesIO(data[:2 * stride + 18]), 3, source="f",
                                 chunk_bytes=7))
    with pytest.raises(DataError, match="record 3: the payload is cut short"):
        read_records(data[:2 * stride + 18])


def test_garbage_payload_is_a_data_error() -> None:
    bad = frame(b"\xff\xff\xff\xff\xff")
    with pytest.raises(DataError, match="record 6: the payload is not a valid aialgs.data.Record"):
        decode_features(_five_rows() + bad, 3)
    with pytest.raises(DataError, match="record 1: the payload is not a valid"):
        read_records(bad)
    with pytest.raises(DataError, match="not a valid aialgs.data.Record"):
        decode_record(b"\x0a\x05\x01")


def test_feature_count_mismatch_names_the_record_and_both_counts() -> None:
    data = _five_rows() + dense_to_bytes(np.zeros((1, 4), np.float32), np.zeros(1))
    with pytest.raises(DataError, match=r"d.pbr, record 6: the record has 4 features, expected 3 "
                                        r"\(as in the first record\)"):
        decode_features(data, None, source="d.pbr")
    with pytest.raises(DataError, match=r"record 11: the record has 3 features, expected 5 "
                                        r"\(feature_dim\)"):
        decode_features(_five_rows(), 5, first_record=10)


def test_missing_features_unsupported_kinds_and_label_mix() -> None:
    with pytest.raises(DataError, match=r"record 1: the record has no features\['values'\]"):
        decode_features(encode_label_records({"predicted_label": np.ones(2)}), None)
    msg = PB()
    msg.features["values"].bytes.value.append(b"abc")
    with pytest.raises(DataError, match=r"features\['values'\] holds a Bytes value"):
        decode_features(frame(msg.SerializeToString()), None)
    with pytest.raises(DataError, match=r"features\['values'\] holds a Bytes value"):
        decode_record(msg.SerializeToString())
    unlabelled = dense_to_bytes(np.zeros((2, 3), np.float32))
    with pytest.raises(DataError, match="record 3: the record has label.*label every record"):
        decode_features(unlabelled + _five_rows(), 3)
    with pytest.raises(DataError, match="record 6: the record has no label.*label every record"):
        decode_features(_five_rows() + unlabelled, 3)
    two = encode_record(Record({"values": Tensor(np.ones(3, np.float32))},
                               {"values": Tensor(np.ones(2, np.float32))}))
    with pytest.raises(DataError, match=r"label\['values'\] holds 2 values"):
        decode_features(frame(two), 3)


def test_sparse_errors() -> None:
    def sparse(keys: list[int], values: list[float], shape: list[int] | None) -> bytes:
        tensor = Tensor(np.array(values, np.float32), np.array(keys, np.uint64),
                        None if shape is None else np.array(shape, np.uint64))
        return frame(encode_record(Record({"values": tensor})))

    with pytest.raises(DataError, match="sparse key 7 is outside the 4 features"):
        decode_features(sparse([1, 7], [1, 2], [4]), None)
    with pytest.raises(DataError, match="without a shape, feature_dim"):
        decode_features(sparse([1], [1], None), None)
    with pytest.raises(DataError, match="record 1: the record has 4 features, expected 5"):
        decode_features(sparse([1], [1], [4]), 5)
    with pytest.raises(DataError, match=r"shape below 2\*\*31 features \(got 1099511627776\)"):
        decode_features(sparse([1], [1], [2**40]), None)
    features, _ = decode_features(sparse([1], [3], None) + sparse([], [], [3]), 3)
    assert features.tolist() == [[0, 3, 0], [0, 0, 0]]


# ---------------------------------------------------------------- fast path == general path


def _general_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Neither the dense template nor the lock-step batch decoder: the runtime, per record."""
    monkeypatch.setattr(_protobuf_wire.DenseLayout, "of", classmethod(lambda cls, f, p: None))
    monkeypatch.setattr(_record_batch, "decode", lambda raw, start, end, dim, has_label:
                        _record_batch.Batch(np.zeros(start.size, bool),
                                            np.zeros((0, dim), np.float32),
                                            np.zeros(0, np.float32) if has_label else None))


def _streams() -> dict[str, bytes]:
    rng = np.random.default_rng(5)
    f64 = rng.standard_normal((300, 6))
    ints = rng.integers(-300, 300, 300)
    labelled_first = encode_record(Record(label={"values": Tensor(np.array([9.0]))})) \
        + encode_record(Record({"values": Tensor(np.arange(6.0))}))  # label entry first
    odd = [encode_record(Record({"values": Tensor(r)}, uid="u")) for r in f64[:3]]
    padded = frame(odd[1])[:-1] + b"\xff"  # non-zero padding: valid, not the template
    return {
        "f64+f64": dense_to_bytes(f64, f64[:, 0]),
        "f32": dense_to_bytes(f64.astype(np.float32)),
        "f32+int labels of every varint size": dense_to_bytes(f64.astype(np.float32), ints),
        "int features": dense_to_bytes(ints.reshape(-1, 6)),
        "f64 with one same-length record laid out differently":
            dense_to_bytes(f64[:100], f64[:100, 0]) + frame(labelled_first)
            + dense_to_bytes(f64[100:], f64[100:, 0]),
        "mixed f32 and f64": dense_to_bytes(f64[:50].astype(np.float32), ints[:50])
            + dense_to_bytes(f64[50:], ints[50:]),
        "padding": frame(odd[0]) * 5 + padded + frame(odd[2]) * 5,
    }


@pytest.mark.parametrize("name", list(_streams()))
def test_fast_path_equals_general_path(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    data = _streams()[name]
    fast = decode_features(data, 6)
    blocks = list(iter_feature_blocks(io.BytesIO(data), 6, source="s", chunk_bytes=333))
    _general_only(monkeypatch)
    slow = decode_features(data, 6)
    np.testing.assert_array_equal(fast[0], slow[0])
    np.testing.assert_array_equal(fast[1], slow[1])  # type: ignore[arg-type]
    np.testing.assert_array_equal(np.vstack([b[0] for b in blocks]), slow[0])


def test_same_length_record_with_two_label_varints_is_caught() -> None:
    rows = np.ones((20, 2), np.float32)
    twin = encode_record(Record({"values": Tensor(rows[0])},
                                {"values": Tensor(np.array([1, 2], np.int32))}))
    data = dense_to_bytes(rows[:10], np.full(10, 200)) + frame(twin) \
        + dense_to_bytes(rows[10:], np.full(10, 200))
    assert len(data) == 21 * len(dense_to_bytes(rows[:1], np.array([200])))
    with pytest.raises(DataError, match=r"record 11: label\['values'\] holds 2 values"):
        decode_features(data, 2)


def test_fast_path_catches_a_changed_tag_byte() -> None:
    data = bytearray(dense_to_bytes(np.ones((30, 2)), np.ones(30)))  # float64 d=2
    stride = len(data) // 30
    record = bytearray(encode_record(Record({"values": Tensor(np.ones(4, np.float32))},
                                            {"values": Tensor(np.ones(1))})))
    assert len(frame(bytes(record))) == stride  # float32 x 4 has float64 x 2's length
    data[12 * stride:13 * stride] = frame(bytes(record))
    with pytest.raises(DataError, match="record 13: the record has 4 features, expected 2"):
        decode_features(bytes(data), None)


def test_covtype_shaped_data_takes_the_fast_path(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    general = recordio._FeatureDecoder._general
    monkeypatch.setattr(recordio._FeatureDecoder, "_general",
                        lambda self, *a: calls.append(1) or general(self, *a))
    data = dense_to_bytes(np.ones((3000, 54)), np.ones(3000))
    features, _ = decode_features(data, 54)
    assert features.shape == (3000, 54) and len(calls) == 1
    blocks = list(iter_feature_blocks(io.BytesIO(data), 54, source="f", chunk_bytes=100_000))
    assert len(blocks) == len(calls) - 1 == 15  # one record decoded the slow way per chunk


def test_non_utf8_strings_are_data_errors() -> None:
    bad_key = bytes.fromhex("0a0e0a06ff616c756573120412020a00")
    with pytest.raises(DataError, match="not UTF-8"):
        decode_record(bad_key)


@pytest.mark.parametrize("chunk", [1, 7, 100, 484, 485, 5000])
def test_iter_feature_blocks_equals_one_shot(chunk: int) -> None:
    rng = np.random.default_rng(6)
    data = dense_to_bytes(rng.standard_normal((50, 54)), rng.integers(1, 8, 50).astype(float))
    features, labels = decode_features(data, 54)
    blocks = list(iter_feature_blocks(io.BytesIO(data), 54, source="f", chunk_bytes=chunk))
    np.testing.assert_array_equal(np.vstack([b[0] for b in blocks]), features)
    np.testing.assert_array_equal(np.concatenate([b[1] for b in blocks]), labels)  # type: ignore
    assert [b[2] for b in blocks] == np.cumsum([0] + [len(b[0]) for b in blocks[:-1]]).tolist()


def test_hand_built_records_equal_the_vectorised_writer() -> None:
    rng = np.random.default_rng(7)
    rows = rng.standard_normal((10, 5)).astype(np.float32)
    labels = rng.integers(-5, 5, 10).astype(np.int32)
    assert _hand_record(rows, labels) == dense_to_bytes(rows, labels.astype(np.int64))


def test_empty_inputs() -> None:
    features, labels = decode_features(b"", 4)
    assert features.shape == (0, 4) and labels is None
    assert list(iter_feature_blocks(io.BytesIO(b""), 4, source="f")) == []
    assert dense_to_bytes(np.zeros((0, 3))) == b"" == encode_label_records({})
    assert read_records(io.BytesIO(b"")) == []


def test_response_columns_round_trip() -> None:
    distances = np.arange(6, dtype=np.float32).reshape(2, 3)
    body = encode_label_records({"predicted_label": np.array([0.0, 2.0]),
                                 "distances": distances, "labels": distances + 1})
    records = read_records(io.BytesIO(body))
    assert [list(r.label) for r in records] == [["distances", "labels", "predicted_label"]] * 2
    assert records[1].label["distances"] == Tensor(distances[1])
    assert records[1].features == {}
