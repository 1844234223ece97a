"""The ``aialgs.data.Record`` schema on the wire: the protobuf runtime's message class (built
in code, no protoc) for decoding records one at a time, a locator of the value bytes that lets
runs of same-layout dense records be read as numpy views, and a vectorised encoder that builds
many records with a few numpy operations."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

U8 = npt.NDArray[np.uint8]
I64 = npt.NDArray[np.int64]
U64 = npt.NDArray[np.uint64]

# Value's oneof field number -> the dtype of the tensor's values (9, Bytes, is no tensor).
TENSOR_DTYPES: dict[int, np.dtype[Any]] = {
    2: np.dtype("<f4"), 3: np.dtype("<f8"), 7: np.dtype("<i4"),
}
KIND_OF_DTYPE = {dtype: kind for kind, dtype in TENSOR_DTYPES.items()}
TENSOR_FIELDS: dict[str, np.dtype[Any]] = {
    "float32_tensor": np.dtype("<f4"), "float64_tensor": np.dtype("<f8"),
                 "int32_tensor": np.dtype("<i4")}


class WireError(ValueError):
    """The bytes are not protobuf wire format the locator understands."""


# ---------------------------------------------------------------- the runtime's message class


@functools.cache
def record_class() -> Any:
    """``aialgs.data.Record`` of the protobuf runtime, in a private pool so that it never
    clashes with the SageMaker SDK's own ``record_pb2`` in the default pool."""
    proto = descriptor_pb2.FieldDescriptorProto
    repeated, optional = proto.LABEL_REPEATED, proto.LABEL_OPTIONAL
    schema = descriptor_pb2.FileDescriptorProto(
        name="openknn/aialgs_data_record.proto", package="aialgs.data", syntax="proto2")
    for name, kind in (("Float32Tensor", proto.TYPE_FLOAT), ("Float64Tensor", proto.TYPE_DOUBLE),
                       ("Int32Tensor", proto.TYPE_INT32)):
        tensor = schema.message_type.add(name=name)
        for number, fname, ftype in ((1, "values", kind), (2, "keys", proto.TYPE_UINT64),
                                     (3, "shape", proto.TYPE_UINT64)):
            tensor.field.add(name=fname, number=number, type=ftype,
                             label=repeated).options.packed = True
    raw = schema.message_type.add(name="Bytes")
    raw.field.add(name="value", number=1, type=proto.TYPE_BYTES, label=repeated)
    raw.field.add(name="content_type", number=2, type=proto.TYPE_STRING, label=optional)
    value = schema.message_type.add(name="Value")
    value.oneof_decl.add(name="value")
    for number, fname, type_name in ((2, "float32_tensor", "Float32Tensor"),
                                     (3, "float64_tensor", "Float64Tensor"),
                                     (7, "int32_tensor", "Int32Tensor"), (9, "bytes", "Bytes")):
        value.field.add(name=fname, number=number, type=proto.TYPE_MESSAGE, label=optional,
                        type_name=f".aialgs.data.{type_name}", oneof_index=0)
    record = schema.message_type.add(name="Record")
    for number, fname in ((1, "features"), (2, "label")):
        entry = record.nested_type.add(name=f"{fname.title()}Entry")
        entry.options.map_entry = True
        entry.field.add(name="key", number=1, type=proto.TYPE_STRING, label=optional)
        entry.field.add(name="value", number=2, type=proto.TYPE_MESSAGE, label=optional,
                        type_name=".aialgs.data.Value")
        record.field.add(name=fname, number=number, type=proto.TYPE_MESSAGE, label=repeated,
                         type_name=f".aialgs.data.Record.{entry.name}")
    for number, fname in ((3, "uid"), (4, "metadata"), (5, "configuration")):
        record.field.add(name=fname, number=number, type=proto.TYPE_STRING, label=optional)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(schema)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("aialgs.data.Record"))


# ---------------------------------------------------------------- locating value bytes


def read_varint(buf: bytes, pos: int, end: int) -> tuple[int, int]:
    """The varint at ``pos`` and the position after it."""
    result = shift = 0
    while pos < end and shift < 70:
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7
    raise WireError("a varint is cut short or longer than 10 bytes")


def fields(buf: bytes, start: int, end: int) -> list[tuple[int, int, int, int]]:
    """``(field number, wire type, a, b)`` for each field of the message in ``buf[start:end]``:
    its bytes are ``buf[a:b]``, except that a varint's value is ``a``."""
    out = []
    pos = start
    while pos < end:
        key, pos = read_varint(buf, pos, end)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = read_varint(buf, pos, end)
            out.append((number, 0, value, pos))
            continue
        if wire == 2:
            size, pos = read_varint(buf, pos, end)
        elif wire in (1, 5):
            size = 8 if wire == 1 else 4
        else:
            raise WireError(f"field {number} has wire type {wire}")
        if number == 0 or pos + size > end:
            raise WireError(f"field {number} is malformed or runs past its message")
        out.append((number, wire, pos, pos + size))
        pos += size
    return out


@dataclass
class TensorSpans:
    """Where one ``Value``'s tensor lies in a payload: its oneof member and its fields' spans
    ``(wire type, a, b)``."""

    kind: int = 0
    values: list[tuple[int, int, int]] = field(default_factory=list)
    keys: list[tuple[int, int, int]] = field(default_factory=list)
    shape: list[tuple[int, int, int]] = field(default_factory=list)


def _value_spans(buf: bytes, a: int, b: int, spans: TensorSpans) -> TensorSpans:
    for number, wire, x, y in fields(buf, a, b):
        if wire == 2 and number in (2, 3, 7, 9):
            if number != spans.kind:  # a oneof keeps the last member set; repeats merge
                spans = TensorSpans(number)
            for sub, sub_wire, p, q in fields(buf, x, y) if number != 9 else []:
                if sub in (1, 2, 3):
                    (spans.values, spans.keys, spans.shape)[sub - 1].append((sub_wire, p, q))
    return spans


def locate(buf: bytes) -> tuple[dict[str, TensorSpans], dict[str, TensorSpans]]:
    """The features and label maps of one ``Record`` payload, as spans (later keys win)."""
    maps: tuple[dict[str, TensorSpans], dict[str, TensorSpans]] = ({}, {})
    for number, wire, a, b in fields(buf, 0, len(buf)):
        if number in (1, 2) and wire == 2:
            key, spans = "", TensorSpans()
            for sub, sub_wire, x, y in fields(buf, a, b):
                if sub == 1 and sub_wire == 2:
                    key = buf[x:y].decode("utf-8", "replace")
                elif sub == 2 and sub_wire == 2:
                    spans = _value_spans(buf, x, y, spans)
            maps[number - 1][key] = spans
    return maps


def _packed_span(spans: TensorSpans | None,
                 kinds: tuple[int, ...]) -> tuple[int, int, np.dtype[Any] | None] | None:
    """Where a dense tensor's one packed values field lies in the framed record, and its dtype
    (None for Int32 varints); None if the tensor is anything else."""
    if spans is None or spans.kind not in kinds or spans.keys or len(spans.values) != 1 \
            or spans.values[0][0] != 2:
        return None
    _, a, b = spans.values[0]
    return 8 + a, 8 + b, None if spans.kind == 7 else TENSOR_DTYPES[spans.kind]


@dataclass
class DenseLayout:
    """The bytes of one framed dense record (8 header bytes, then the payload). Records whose
    other bytes equal ``template`` exactly have their values at the same offsets, so a run of
    them is checked and read as strided views of a (records x bytes) array."""

    template: np.ndarray  # uint8
    checks: list[tuple[int, int]]  # the byte ranges that must equal the template
    features: tuple[int, int, np.dtype[Any]]
    label: tuple[int, int, np.dtype[Any] | None] | None  # dtype None: one Int32 varint

    @classmethod
    def of(cls, framed: np.ndarray, payload: bytes) -> DenseLayout | None:
        """The layout of a record whose features are one packed float array (and whose label,
        if any, one packed scalar); None for others, which take the general path."""
        try:
            features, label = (tensors.get("values") for tensors in locate(payload))
        except WireError:
            return None
        feature_span = _packed_span(features, (2, 3))
        label_span = None if label is None else _packed_span(label, (2, 3, 7))
        if feature_span is None or (label is not None and label_span is None):
            return None
        keep = np.ones(framed.size + 2, bool)  # byte i at i + 1, between two False sentinels
        keep[[0, -1]] = False
        for a, b, _ in filter(None, (feature_span, label_span)):
            keep[a + 1:b + 1] = False
        edges = np.flatnonzero(np.diff(keep)).tolist()
        a, b, dtype = feature_span
        assert dtype is not None  # kinds 2 and 3 are fixed width
        return cls(framed, list(zip(edges[::2], edges[1::2])), (a, b, dtype), label_span)

    def matches(self, block: np.ndarray) -> np.ndarray:
        """Which rows of ``block`` (records x bytes) are laid out exactly like the template."""
        ok = np.ones(block.shape[0], bool)
        for a, b in self.checks:
            ok &= (block[:, a:b] == self.template[a:b]).all(axis=1)
        if self.label is not None and self.label[2] is None:  # exactly one varint
            a, b, _ = self.label
            ok &= (block[:, a:b - 1] >= 0x80).all(axis=1) & (block[:, b - 1] < 0x80)
        return ok

    def run_length(self, raw: np.ndarray, pos: int) -> int:
        """How many records of ``raw`` (uint8) from ``pos`` on match, checked in windows that
        grow eightfold so that a short run costs little and a long one few numpy calls."""
        stride = self.template.size
        avail, done, window = (raw.size - pos) // stride, 0, 8
        while done < avail:
            size = min(window, avail - done)
            ok = self.matches(raw[pos + done * stride:pos + (done + size) * stride]
                              .reshape(size, stride))
            if not ok.all():
                return done + int(np.argmin(ok))
            done, window = done + size, window * 8
        return done

    def extract(self, block: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        a, b, dtype = self.features
        features = block[:, a:b].view(dtype).astype(np.float32)
        if self.label is None:
            return features, None
        a, b, label_type = self.label
        if label_type is not None:
            return features, block[:, a:b].view(label_type)[:, 0].astype(np.float32)
        shifts = np.arange(b - a, dtype=np.uint64) * np.uint64(7)
        value = ((block[:, a:b] & 0x7F).astype(np.uint64) << shifts).sum(axis=1, dtype=np.uint64)
        return features, value.view(np.int64).astype(np.int32).astype(np.float32)


# ---------------------------------------------------------------- vectorised building


def encode_varints(values: U64) -> tuple[U8, I64]:
    """The varint bytes of every value, back to back, and each value's byte count."""
    sizes = np.ones(values.shape, np.int64)
    for k in range(1, 10):
        sizes += values >= np.uint64(1 << (7 * k))
    if values.size == 0 or sizes.max() == 1:
        return values.astype(np.uint8), sizes
    out = np.empty(int(sizes.sum()), np.uint8)
    starts = np.cumsum(sizes) - sizes
    for j in range(int(sizes.max())):
        has = sizes > j
        byte = ((values[has] >> np.uint64(7 * j)) & np.uint64(0x7F)).astype(np.uint8)
        out[starts[has] + j] = byte | np.where(sizes[has] > j + 1, 0x80, 0).astype(np.uint8)
    return out, sizes


def varint_bytes(value: int) -> bytes:
    """One varint."""
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


@dataclass
class Rows:
    """One byte string per record for ``n`` records, kept as segments of (the bytes of all rows
    back to back, bytes per row) so that building and joining stay vectorised."""

    n: int
    segments: list[tuple[U8, I64]] = field(default_factory=list)

    @classmethod
    def const(cls, n: int, data: bytes) -> Rows:
        """The same bytes on every row."""
        flat = np.tile(np.frombuffer(data, np.uint8), n)
        return cls(n, [(flat, np.full(n, len(data), np.int64))])

    def lengths(self) -> I64:
        total = np.zeros(self.n, np.int64)
        for _, sizes in self.segments:
            total += sizes
        return total

    def __add__(self, other: Rows) -> Rows:
        return Rows(self.n, self.segments + other.segments)

    def join(self) -> bytes:
        """All rows, each the concatenation of its segments, back to back."""
        if not self.segments or self.n == 0:
            return b""
        sizes = np.stack([s for _, s in self.segments], axis=1)
        if (sizes == sizes[0]).all():  # every row alike: fill the columns of a 2-D array
            out = np.empty((self.n, int(sizes[0].sum())), np.uint8)
            col = 0
            for (flat, _), width in zip(self.segments, sizes[0].tolist()):
                out[:, col:col + width] = flat.reshape(self.n, width)
                col += width
            return out.tobytes()
        flat_sizes = sizes.ravel()
        starts = (np.cumsum(flat_sizes) - flat_sizes).reshape(sizes.shape)
        buf = np.empty(int(flat_sizes.sum()), np.uint8)
        for i, (flat, seg) in enumerate(self.segments):
            if flat.size:
                offsets = starts[:, i] - (np.cumsum(seg) - seg)
                buf[np.repeat(offsets, seg) + np.arange(flat.size)] = flat
        return buf.tobytes()


def length_delimited(tag: int, body: Rows, *, optional: bool = False) -> Rows:
    """Field ``tag`` (one byte) around ``body`` on each row; ``optional`` leaves it out on the
    rows where ``body`` is empty, as protobuf does for an empty packed array."""
    sizes = body.lengths()
    present = sizes > 0 if optional else np.ones(body.n, bool)
    flat, vsizes = encode_varints(sizes[present].astype(np.uint64))
    all_vsizes = np.zeros(body.n, np.int64)
    all_vsizes[present] = vsizes
    tags = np.full(int(present.sum()), tag, np.uint8)
    return Rows(body.n, [(tags, present.astype(np.int64)), (flat, all_vsizes)]) + body


def packed(values: np.ndarray, counts: I64) -> Rows:
    """Packed array bytes of ``values`` (all rows back to back, ``counts[i]`` on row ``i``):
    float32 / float64 fixed width, int32 and uint64 as varints (int32 sign-extended)."""
    values = values.ravel()
    if values.dtype.kind == "f":
        data = np.ascontiguousarray(values, values.dtype.newbyteorder("<")).view(np.uint8)
        return Rows(len(counts), [(data, counts * values.dtype.itemsize)])
    as_u64 = values.astype(np.int64).view(np.uint64) if values.dtype.kind == "i" else values
    flat, sizes = encode_varints(as_u64.astype(np.uint64))
    cum = np.concatenate(([0], np.cumsum(sizes)))
    bounds = np.concatenate(([0], np.cumsum(counts)))
    return Rows(len(counts), [(flat, cum[bounds[1:]] - cum[bounds[:-1]])])


def tensor_value(kind: int, values: Rows, keys: Rows | None = None,
                 shape: Rows | None = None) -> Rows:
    """A ``Value`` per row whose oneof member ``kind`` (2, 3 or 7) holds the tensor."""
    body = length_delimited(0x0A, values, optional=True)
    for tag, part in ((0x12, keys), (0x1A, shape)):
        if part is not None:
            body = body + length_delimited(tag, part, optional=True)
    return length_delimited(kind << 3 | 2, body)


def map_field(n: int, tag: int, entries: list[tuple[str, Rows]]) -> Rows:
    """A Record's features (tag 0x0A) or label (0x12) map, entries in the given order."""
    out = Rows(n)
    for key, value in entries:
        raw = key.encode("utf-8")
        entry = Rows.const(n, b"\x0a" + varint_bytes(len(raw)) + raw)
        out = out + length_delimited(tag, entry + length_delimited(0x12, value))
    return out
