"""The ``application/x-recordio-protobuf`` format, byte-compatible with the SageMaker Python SDK:
framing, ``aialgs.data.Record`` coding, and fast decoding of training data to float32 arrays."""

from __future__ import annotations

import math
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, BinaryIO

import numpy as np
from google.protobuf.message import DecodeError

from ..errors import DataError
from . import NotQuick, _record_batch
from . import _protobuf_wire as wire

MAGIC = 0xCED7230A

Buffer = bytes | bytearray | memoryview

HEADER = struct.Struct("<II")  # the magic, then the length word
MAX_LENGTH = (1 << 29) - 1  # dmlc keeps the top 3 bits of the length word for cflag
_MAGIC_BYTES = HEADER.pack(MAGIC, 0)[:4]
_WRITE_BYTES = 16 << 20  # how much of an array the writers encode at a time
_BATCH_RECORDS, _BATCH_BYTES = 32768, 1 << 20  # records decoded together in lock step
# Records of one request that may take the protobuf runtime's per-record path (about 10 us
# each): those not laid out as the SDKs write them. More is refused, so that a 6 MB body
# of odd records cannot cost seconds of CPU. Training data has no such bound.
REQUEST_GENERAL_RECORDS = 1000


@dataclass(eq=False)
class Tensor:
    """A ``Float32Tensor`` / ``Float64Tensor`` / ``Int32Tensor``: the dtype of ``values`` picks
    which. Non-empty ``keys`` (uint64) make it sparse: ``values[i]`` sits at ``keys[i]`` of a
    tensor of ``shape``. Decoding gives None for empty keys and shape."""

    values: np.ndarray
    keys: np.ndarray | None = None
    shape: np.ndarray | None = None

    def __eq__(self, other: object) -> bool:
        """Wire equality: the same kind and bytes (NaN equals NaN, 0.0 differs from -0.0)."""
        if not isinstance(other, Tensor):
            return NotImplemented
        pairs = ((self.values, other.values), (self.keys, other.keys), (self.shape, other.shape))
        return all(_same(a, b) for a, b in pairs)

    __hash__ = None  # type: ignore[assignment]


def _same(a: np.ndarray | None, b: np.ndarray | None) -> bool:
    if a is None or b is None or a.size == 0 or b.size == 0:
        return (a is None or a.size == 0) and (b is None or b.size == 0)
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


@dataclass
class Record:
    """One ``aialgs.data.Record``: named feature and label tensors and optional strings."""

    features: dict[str, Tensor] = field(default_factory=dict)
    label: dict[str, Tensor] = field(default_factory=dict)
    uid: str | None = None
    metadata: str | None = None
    configuration: str | None = None


# ---------------------------------------------------------------- framing


def frame(payload: bytes) -> bytes:
    """Magic, length, payload and zero padding to a multiple of 4 bytes, as the SDK writes."""
    return _frame_rows(wire.Rows.const(1, bytes(payload)))


def _frame_rows(payloads: wire.Rows) -> bytes:
    """Every payload framed as :func:`frame` frames one, back to back: the one framer, which
    the writers and :func:`frame` share."""
    sizes = payloads.lengths()
    if sizes.size and int(sizes.max()) > MAX_LENGTH:
        raise ValueError(f"a RecordIO payload must be under 512 MiB, got {int(sizes.max())} "
                         "bytes")
    header = np.empty((payloads.n, 2), "<u4")
    header[:, 0], header[:, 1] = MAGIC, sizes
    pads = -sizes % 4
    head = wire.Rows(payloads.n, [(header.view(np.uint8).ravel(), np.full(payloads.n, 8))])
    tail = wire.Rows(payloads.n, [(np.zeros(int(pads.sum()), np.uint8), pads)])
    return (head + payloads + tail).join()


def _where(source: str, number: int) -> str:
    return f"{source}, record {number}"


def _split(buf: Buffer, pos: int, where: str, final: bool) -> tuple[bytes, int, bool] | None:
    """The payload of the record at ``pos`` (dmlc parts re-joined with the magic between), the
    position after it, and whether it was one plain part; None where ``buf`` ends inside it
    and more may come (``final`` False)."""
    end = len(buf)
    parts: list[bytes] = []
    flags: list[int] = []
    while True:
        if end - pos < 8:
            if not final:
                return None
            raise DataError(f"{where}: the record header is cut short: expected 8 bytes, "
                            f"{end - pos} remain; the data is truncated (re-upload or re-send it)")
        magic, lrec = HEADER.unpack_from(buf, pos)
        if magic != MAGIC:
            found = bytes(buf[pos:pos + 4])
            raise DataError(
                f"{where}: expected the RecordIO magic number 0xced7230a (bytes 0a 23 d7 ce) but "
                f"found {found.hex(' ')} ({found!r}). The data may not be RecordIO-protobuf; if "
                "it is CSV, declare it as text/csv (no content type means RecordIO-protobuf)")
        length, cflag = lrec & MAX_LENGTH, lrec >> 29
        stop = pos + 8 + length
        padded = stop + (-length % 4)
        if padded > end and not final:
            return None
        if stop > end:
            raise DataError(f"{where}: the payload is cut short: the header says {length} bytes, "
                            f"{end - pos - 8} remain; the data is truncated (re-upload or "
                            "re-send it)")
        if cflag not in ((2, 3) if parts else (0, 1)):
            raise DataError(f"{where}: a dmlc continuation flag {cflag} is out of sequence; "
                            "a split record is damaged")
        parts.append(bytes(buf[pos + 8:stop]))
        flags.append(cflag)
        pos = min(end, padded)  # a missing final padding is tolerated, as by the SDK
        if cflag in (0, 3):
            return _MAGIC_BYTES.join(parts), pos, flags == [0] and pos == padded


def iter_payloads(buf: Buffer, *, source: str = "<body>") -> Iterator[bytes]:
    """The record payloads of a RecordIO stream, dmlc multi-part records re-joined."""
    pos, number = 0, 1
    while pos < len(buf):
        got = _split(buf, pos, _where(source, number), final=True)
        assert got is not None  # final=True raises instead
        payload, pos, _ = got
        yield payload
        number += 1


# ---------------------------------------------------------------- records


def _parse(message: Any, payload: bytes, where: str) -> Any:
    try:
        message.ParseFromString(payload)
    except DecodeError:
        raise DataError(f"{where}: the payload is not a valid aialgs.data.Record protobuf; "
                        "the data is corrupt or not RecordIO-protobuf") from None
    return message


def _tensor(value: Any, what: str) -> Tensor:
    kind = value.WhichOneof("value")
    dtype = wire.TENSOR_FIELDS.get(kind or "")
    if dtype is None:
        held = "a Bytes value" if kind == "bytes" else "no tensor"
        raise DataError(f"{what} holds {held}; only Float32Tensor, Float64Tensor and "
                        "Int32Tensor are supported")
    tensor = getattr(value, kind)
    keys, shape = tensor.keys, tensor.shape
    return Tensor(np.array(tensor.values, dtype), np.array(keys, np.uint64) if keys else None,
                  np.array(shape, np.uint64) if shape else None)


def _text(value: Any, where: str) -> str:
    if isinstance(value, bytes):  # the runtime hands back proto2 strings that are not UTF-8
        raise DataError(f"{where}: a string field or map key is not UTF-8")
    return str(value)


def _to_record(payload: bytes, where: str) -> Record:
    msg = _parse(wire.record_class()(), payload, where)
    # The runtime's maps iterate in a per-process hash order: sort for a stable result.
    maps = [{_text(k, where): _tensor(m[k], f"{where}: {name}[{k!r}]") for k in sorted(m, key=str)}
            for name, m in (("features", msg.features), ("label", msg.label))]
    texts = [_text(getattr(msg, f), where) if msg.HasField(f) else None
             for f in ("uid", "metadata", "configuration")]
    return Record(maps[0], maps[1], *texts)


def decode_record(payload: bytes) -> Record:
    """One ``Record`` from its protobuf payload; map entries come back sorted by key."""
    return _to_record(bytes(payload), "<payload>")


def read_records(buf: Buffer | BinaryIO, *, source: str = "<body>") -> list[Record]:
    """Every record of a RecordIO stream (bytes or a binary file), like the SDK's."""
    data = buf.read() if hasattr(buf, "read") else buf
    return [_to_record(p, _where(source, i + 1))
            for i, p in enumerate(iter_payloads(data, source=source))]


def _tensor_rows(tensor: Tensor) -> wire.Rows:
    kind = wire.KIND_OF_DTYPE.get(tensor.values.dtype.newbyteorder("<"))
    if kind is None:
        raise ValueError(f"Tensor values must be float32, float64 or int32, "
                         f"not {tensor.values.dtype}")
    one = np.ones(1, np.int64)
    parts = [np.ravel(np.asarray(a, np.uint64 if a is not tensor.values else a.dtype))
             for a in (tensor.values, tensor.keys, tensor.shape) if a is not None]
    return wire.tensor_value(kind, *(wire.packed(a, one * a.size) for a in parts))


def encode_record(record: Record) -> bytes:
    """The protobuf payload of one ``Record`` (fields and map entries in order)."""
    rows = wire.map_field(1, 0x0A, [(k, _tensor_rows(t)) for k, t in record.features.items()])
    rows += wire.map_field(1, 0x12, [(k, _tensor_rows(t)) for k, t in record.label.items()])
    for tag, text in ((0x1A, record.uid), (0x22, record.metadata), (0x2A, record.configuration)):
        if text is not None:
            raw = text.encode("utf-8")
            rows += wire.Rows.const(1, bytes([tag]) + wire.varint_bytes(len(raw)) + raw)
    return rows.join()


# ---------------------------------------------------------------- writers (SDK compatible)


def _resolve_type(dtype: np.dtype[Any]) -> np.dtype[Any]:
    """The SDK's ``_resolve_type``: int (int64) -> Int32, float64, float32, else an error."""
    if dtype == np.dtype(int):
        return np.dtype(np.int32)
    if dtype in (np.dtype(np.float64), np.dtype(np.float32)):
        return dtype
    raise ValueError(f"Unsupported dtype {dtype} on array")


def _check(shape: tuple[int, ...], labels: np.ndarray | None) -> np.dtype[Any] | None:
    """The SDK's shape checks; the labels' tensor dtype."""
    if len(shape) != 2:
        raise ValueError("Array must be a Matrix")
    if labels is None:
        return None
    if labels.ndim != 1:
        raise ValueError("Labels must be a Vector")
    if labels.shape[0] != shape[0]:  # stricter than the SDK, which lets n_cols labels through
        raise ValueError(f"Label shape {labels.shape} not compatible with array shape {shape}")
    return _resolve_type(labels.dtype)


def _cast(values: np.ndarray, dtype: np.dtype[Any]) -> np.ndarray:
    if dtype == np.int32 and values.size and (values.min() < -(2**31) or values.max() >= 2**31):
        raise ValueError("Value out of range: integer arrays are written as Int32Tensor, so "
                         "every value must fit in int32")
    return values.astype(dtype, copy=False)


def _records(features: wire.Rows, labels: np.ndarray | None, label_type: Any) -> bytes:
    payload = wire.map_field(features.n, 0x0A, [("values", features)])
    if labels is not None:
        value = wire.packed(_cast(labels, label_type), np.ones(labels.shape[0], np.int64))
        kind = wire.KIND_OF_DTYPE[label_type.newbyteorder("<")]
        payload += wire.map_field(features.n, 0x12, [("values", wire.tensor_value(kind, value))])
    return _frame_rows(payload)


def _dense_chunks(array: Any, labels: Any) -> Iterator[bytes]:
    array = np.asarray(array)
    labels = None if labels is None else np.asarray(labels)
    label_type = _check(array.shape, labels)
    value_type = _resolve_type(array.dtype)
    kind = wire.KIND_OF_DTYPE[value_type.newbyteorder("<")]
    n, d = array.shape
    step = max(1, _WRITE_BYTES // max(1, 8 * d))
    for lo in range(0, n, step):
        rows = _cast(array[lo:lo + step], value_type)
        values = wire.packed(rows, np.full(rows.shape[0], d, np.int64))
        yield _records(wire.tensor_value(kind, values),
                       None if labels is None else labels[lo:lo + step], label_type)


def dense_to_bytes(array: Any, labels: Any = None) -> bytes:
    """The bytes :func:`write_dense` writes, as one ``bytes``."""
    return b"".join(_dense_chunks(array, labels))


def write_dense(fileobj: BinaryIO, array: Any, labels: Any = None) -> None:
    """The SDK's ``write_numpy_to_dense_tensor``, byte for byte and vectorised: a record per
    row of the 2-D ``array`` with ``label["values"]`` from the optional 1-D ``labels``."""
    fileobj.writelines(_dense_chunks(array, labels))


def write_sparse(fileobj: BinaryIO, matrix: Any, labels: Any = None) -> None:
    """The SDK's ``write_spmatrix_to_sparse_tensor`` for anything with ``.tocsr()``."""
    if not hasattr(matrix, "tocsr"):
        raise TypeError("Array must be sparse")
    labels = None if labels is None else np.asarray(labels)
    label_type = _check(tuple(matrix.shape), labels)
    value_type = _resolve_type(np.dtype(matrix.dtype))
    csr = matrix.tocsr()
    n, d = csr.shape
    counts = np.diff(np.asarray(csr.indptr)).astype(np.int64)
    tensor = wire.tensor_value(
        wire.KIND_OF_DTYPE[value_type.newbyteorder("<")],
        wire.packed(_cast(np.asarray(csr.data), value_type), counts),
        wire.packed(np.asarray(csr.indices).astype(np.uint64), counts),
        wire.packed(np.full(n, d, np.uint64), np.ones(n, np.int64)))
    fileobj.write(_records(tensor, labels, label_type))


def encode_label_records(columns: dict[str, np.ndarray]) -> bytes:
    """Response bodies: record ``i`` has no features and ``label[name]`` = a Float32Tensor of
    ``columns[name][i]`` (one value for a 1-D column, ``m`` for an ``(n, m)`` one)."""
    arrays = [(k, np.asarray(v, np.float32)) for k, v in columns.items()]
    arrays = [(k, v.reshape(-1, 1) if v.ndim == 1 else v) for k, v in arrays]
    sizes = {v.shape[0] for _, v in arrays}
    if len(sizes) > 1 or any(v.ndim != 2 for _, v in arrays):
        raise ValueError("label columns must be 1-D or 2-D and have the same number of rows")
    n = sizes.pop() if sizes else 0
    entries = [(k, wire.tensor_value(2, wire.packed(v, np.full(n, v.shape[1], np.int64))))
               for k, v in arrays]
    return _frame_rows(wire.map_field(n, 0x12, entries))


# ---------------------------------------------------------------- training data to arrays


def _plain_length(buf: Buffer, pos: int) -> int | None:
    """The payload length of the record at ``pos`` if it is one whole, padded part."""
    if pos + 8 > len(buf):
        return None
    magic, length = HEADER.unpack_from(buf, pos)
    if magic != MAGIC or length > MAX_LENGTH or pos + 8 + length + (-length % 4) > len(buf):
        return None
    return int(length)


def _frames(raw: np.ndarray, pos: int) -> tuple[np.ndarray, np.ndarray, int]:
    """The starts and payload lengths of the whole, padded, one-part records from ``pos`` on
    (up to a batch of them), and the position after the last: the headers are found as
    magic words in a window of the buffer, and the chain of lengths from ``pos`` is followed
    over them."""
    window = raw[pos:pos + _BATCH_BYTES + 8]
    words = window[:window.size // 4 * 4].view("<u4")
    heads = np.flatnonzero(words[:-1] == MAGIC)
    lengths = words[heads + 1].astype(np.int64)
    after = pos + 4 * (heads + 2) + lengths + (-lengths % 4)  # each record's padded end
    if not heads.size or heads[0] != 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), pos
    whole = (lengths <= MAX_LENGTH) & (after <= raw.size)
    slot = np.full(words.size + 1, -1)  # the header at each word, if any
    slot[heads] = np.arange(heads.size)
    successor = np.where(whole, slot[np.minimum((after - pos) // 4, words.size)], -2)
    # Records one after the other are the rule; a magic word inside a payload is a header
    # the chain skips, followed one step at a time from the first.
    breaks = np.flatnonzero(successor != np.arange(1, heads.size + 1))
    i = together = min(int(breaks[0]) if breaks.size else heads.size, _BATCH_RECORDS)
    chain: list[int] = []
    if i < heads.size and together < _BATCH_RECORDS:
        steps = successor.tolist()
        while i >= 0 and steps[i] != -2 and together + len(chain) < _BATCH_RECORDS:
            chain.append(i)
            i = steps[i]
    picked = np.concatenate([np.arange(together), np.array(chain, np.int64)]).astype(np.int64)
    if not picked.size:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), pos
    return pos + 4 * heads[picked], lengths[picked], int(after[picked[-1]])


class _FeatureDecoder:
    """RecordIO bytes to float32 feature rows and labels, one per stream: it keeps the record
    count, the feature dimension and whether records carry labels across calls."""

    def __init__(self, feature_dim: int | None, source: str, first_record: int,
                 general_limit: int | None = None, quick: bool = False) -> None:
        self.dim, self.dim_given = feature_dim, feature_dim is not None
        self.source, self.count = source, first_record
        self.has_label: bool | None = None
        self.message = wire.record_class()()
        self.skip = self.backoff = 0  # probe less where runs keep failing (sparse, mixed)
        self.general_left = general_limit
        self.general_limit = general_limit
        self.quick = quick  # the dense template path only, else NotQuick
        self.pieces: list[tuple[np.ndarray, np.ndarray | None]] = []
        self.rows: list[np.ndarray] = []
        self.labels: list[float] = []

    def decode(self, buf: Buffer, final: bool) -> tuple[np.ndarray, np.ndarray | None, int]:
        """Features and labels of the complete records in ``buf``, and the bytes they span.
        A record decoded one at a time is a template: the run of records after it that match
        it byte for byte outside the values is read in one go. Other records are decoded
        a batch at a time in lock step (``_record_batch``), and the rest one at a time."""
        self.pieces, self.rows, self.labels = [], [], []
        with np.errstate(over="ignore", invalid="ignore"):  # beyond float32: inf; NaNs stay;
            pos = self._decode(buf, final)  # the caller's finiteness check names the record
            pieces = [p for p in [*self.pieces, self._stack()] if p[0].shape[0]]
        self.pieces, self.rows, self.labels = [], [], []
        features = [f for f, _ in pieces] or [np.zeros((0, self.dim or 0), np.float32)]
        label_arrays = [np.zeros(0, np.float32)] + [lab for _, lab in pieces if lab is not None]
        return (features[0] if len(features) == 1 else np.concatenate(features),
                np.concatenate(label_arrays) if self.has_label else None, pos)

    def _decode(self, buf: Buffer, final: bool) -> int:
        raw = np.frombuffer(buf, np.uint8)
        pos = 0
        while pos < raw.size:
            length = _plain_length(buf, pos)
            if length is None and self.quick:
                raise NotQuick
            if length is None:  # a multi-part, damaged or cut record: the general path says which
                got = _split(buf, pos, _where(self.source, self.count + 1), final)
                if got is None:
                    break
                payload, pos, _ = got
                self._general(payload)
                continue
            first_end = pos + 8 + length + (-length % 4)
            layout = self._layout(raw[pos:first_end], buf, pos, length)
            if layout is None and self.quick:
                raise NotQuick
            if layout is None:
                starts, lengths, stop = _frames(raw, pos)
                self._batch(raw, starts, lengths)
                pos = stop
                continue
            self._general(bytes(buf[pos + 8:pos + 8 + length]))
            pos = first_end
            run = self._run_length(raw, pos, layout)
            if run:
                stride = layout.template.size
                self._add(layout.extract(raw[pos:pos + run * stride].reshape(run, stride)))
                pos, self.count = pos + run * stride, self.count + run
        return pos

    def _add(self, piece: tuple[np.ndarray, np.ndarray | None]) -> None:
        if self.rows:
            self.pieces.append(self._stack())
            self.rows, self.labels = [], []
        self.pieces.append(piece)

    def _stack(self) -> tuple[np.ndarray, np.ndarray]:
        features = np.array(self.rows, np.float32).reshape(len(self.rows), self.dim or 0)
        return features, np.array(self.labels, np.float32)

    def _layout(self, framed: np.ndarray, buf: Buffer, pos: int,
                length: int) -> wire.DenseLayout | None:
        if self.skip:
            self.skip -= 1
            return None
        layout = wire.DenseLayout.of(framed, bytes(buf[pos + 8:pos + 8 + length]))
        if layout is None:
            self._back_off(False)
        return layout

    def _back_off(self, worked: bool) -> None:
        self.backoff = 0 if worked else min(2 * self.backoff + 1, 64)
        self.skip = self.backoff

    def _run_length(self, raw: np.ndarray, pos: int, layout: wire.DenseLayout) -> int:
        done = layout.run_length(raw, pos)
        self._back_off(done > 0)
        return done

    def _batch(self, raw: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> None:
        """Decode records in lock step; those it leaves, one at a time in their place."""
        begin = starts + 8
        end = begin + lengths
        if begin.size and (self.dim is None or self.has_label is None):
            self._general(raw[begin[0]:end[0]].tobytes())  # the first record sets both
            begin, end = begin[1:], end[1:]
        if not begin.size:
            return
        assert self.dim is not None and self.has_label is not None
        batch = _record_batch.decode(raw, begin, end, self.dim, self.has_label)
        done = previous = 0  # rows of the batch used; the record after the last one left
        for record in [*np.flatnonzero(~batch.ok).tolist(), begin.size]:
            size = record - previous
            if size:
                labels = None if batch.labels is None else batch.labels[done:done + size]
                self._add((batch.features[done:done + size], labels))
                done, self.count = done + size, self.count + size
            if record < begin.size:
                self._general(raw[begin[record]:end[record]].tobytes())
            previous = record + 1

    def _general(self, payload: bytes) -> None:
        """Decode one record with the protobuf runtime, appending its row and label."""
        where = _where(self.source, self.count + 1)
        if self.general_left is not None:
            self.general_left -= 1
            if self.general_left < 0:
                raise DataError(
                    f"{where}: more than {self.general_limit} records of this request are not "
                    "laid out as the SageMaker SDK writes them (features['values'] first, then "
                    "an optional one-number label['values'], nothing else), and each would "
                    "take the slow per-record path; write the records with the SDK's "
                    "RecordSerializer (or openknn.formats.recordio.write_dense / "
                    "write_sparse), or send fewer per request")
        msg = _parse(self.message, payload, where)
        if "values" not in msg.features:
            raise DataError(f"{where}: the record has no features['values'] tensor; every "
                            "record needs its feature vector under the key 'values'")
        self.rows.append(self._dense(_tensor(msg.features["values"],
                                             f"{where}: features['values']"), where))
        present = "values" in msg.label
        if self.has_label is None:
            self.has_label = present
        elif present != self.has_label:
            has, others = ("has", "do not") if present else ("has no", "do")
            raise DataError(f"{where}: the record {has} label['values'] but earlier records "
                            f"{others}; label every record or none")
        if present:
            values = _tensor(msg.label["values"], f"{where}: label['values']").values
            if values.size != 1:
                raise DataError(f"{where}: label['values'] holds {values.size} values; a label "
                                "is one number")
            self.labels.append(float(values[0]))
        self.count += 1

    def _dense(self, tensor: Tensor, where: str) -> np.ndarray:
        values, keys, shape = tensor.values, tensor.keys, tensor.shape
        if keys is None and (shape is None or values.size):
            self._check_dim(values.size, where)
            return values.astype(np.float32)
        size = math.prod(shape.tolist()) if shape is not None else self.dim
        if size is None or size >= 2**31:  # guard the allocation below against a wild shape
            raise DataError(f"{where}: a sparse record needs a shape below 2**31 features "
                            f"(got {size}) or, without a shape, feature_dim")
        self._check_dim(size, where)
        keys = np.zeros(0, np.uint64) if keys is None else keys
        if keys.size != values.size:
            raise DataError(f"{where}: the sparse tensor has {keys.size} keys for "
                            f"{values.size} values; each value needs its key")
        if keys.size and int(keys.max()) >= size:
            raise DataError(f"{where}: sparse key {int(keys.max())} is outside the {size} "
                            "features; keys must be below feature_dim")
        row = np.zeros(size, np.float32)
        row[keys.astype(np.intp)] = values
        return row

    def _check_dim(self, count: int, where: str) -> None:
        if self.dim is None:
            self.dim = count
        elif count != self.dim:
            expected = "feature_dim" if self.dim_given else "as in the first record"
            raise DataError(f"{where}: the record has {count} features, expected {self.dim} "
                            f"({expected}); every record needs exactly that many (check "
                            "feature_dim against the data)")


def decode_features(buf: Buffer, feature_dim: int | None, *, source: str = "<body>",
                    first_record: int = 0, general_limit: int | None = None,
                    quick: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
    """Float32 features ``(n, d)`` from ``features["values"]`` (sparse ones densified) and
    float32 labels ``(n,)`` from ``label["values"]``, None where no record has one.
    ``feature_dim`` None takes it from the first record; ``first_record`` records come before
    ``buf`` in its source (for the record numbers in errors). ``general_limit`` bounds how
    many records may need the protobuf runtime's per-record path (a request's cost bound:
    :data:`REQUEST_GENERAL_RECORDS`); None: no bound. ``quick``: raise NotQuick unless the
    records are one run of same-layout dense ones (the path that costs microseconds)."""
    decoder = _FeatureDecoder(feature_dim, source, first_record, general_limit, quick)
    features, labels, _ = decoder.decode(buf, True)
    return features, labels


def iter_feature_blocks(fileobj: BinaryIO, feature_dim: int | None, *, source: str,
                        chunk_bytes: int = 16 << 20,
                        ) -> Iterator[tuple[np.ndarray, np.ndarray | None, int]]:
    """Stream a RecordIO file ``chunk_bytes`` at a time as ``(features, labels, first)``
    blocks, ``first`` being the 0-based number of the block's first record in the file."""
    decoder = _FeatureDecoder(feature_dim, source, 0)
    carry = b""
    while True:
        data = fileobj.read(max(chunk_bytes, len(carry)))  # grows when a record outgrows it
        buf = carry + data if carry else data
        first = decoder.count
        features, labels, used = decoder.decode(buf, final=not data)
        if features.shape[0]:
            yield features, labels, first
        carry = buf[used:]
        if not data:
            return
