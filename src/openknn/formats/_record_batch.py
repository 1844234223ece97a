"""Many framed ``aialgs.data.Record`` payloads decoded at once with numpy, for the layout the
SDKs write: ``features["values"]`` a Float32 / Float64 / Int32 tensor, dense or sparse (keys
and an optional one-number shape), then optionally ``label["values"]`` holding one number,
and nothing else. Every record is checked field by field in lock step with the others; a
record laid out any other way, or not valid, is marked for the protobuf runtime, which
decodes it or says what is wrong with it. So the answer is the runtime's, at numpy speed."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

U8 = npt.NDArray[np.uint8]
I64 = npt.NDArray[np.int64]
Mask = npt.NDArray[np.bool_]

_KEY = np.frombuffer(b"\x0a\x06values", np.uint8)  # map entry field 1: the key "values"
_TENSOR_TAGS = (0x12, 0x1A, 0x3A)  # Value's float32_tensor, float64_tensor, int32_tensor
_WIDTH = {0x12: 4, 0x1A: 8}  # bytes per value of the fixed-width kinds
_SHIFTS = np.arange(10, dtype=np.uint64) * np.uint64(7)
_MAX_LENGTH_BYTES = 5  # 2**35: more than any RecordIO record (2**29) can hold


@dataclass
class Batch:
    """Which records were decoded here, and their rows and labels (in record order)."""

    ok: Mask
    features: npt.NDArray[np.float32]
    labels: npt.NDArray[np.float32] | None


def _byte(raw: U8, pos: I64) -> U8:
    return raw[np.minimum(pos, raw.size - 1)]


def _length(raw: U8, pos: I64, limit: I64) -> tuple[I64, I64, Mask]:
    """The length varint at each ``pos``: its value, the position after it, and whether it
    is a valid one of at most 5 bytes that ends by ``limit``."""
    value = np.zeros(pos.size, np.int64)
    after = pos.copy()
    going = np.ones(pos.size, bool)
    for j in range(_MAX_LENGTH_BYTES):  # one pass per byte of the longest length
        byte = _byte(raw, pos + j)
        value |= np.where(going, (byte & 0x7F).astype(np.int64) << (7 * j), 0)
        ends = going & (byte < 0x80)
        after[ends] = pos[ends] + j + 1
        going &= ~ends
        if not going.any():
            break
    return value, after, ~going & (after <= limit)


def _field(raw: U8, pos: I64, limit: I64, tag: int | U8, ok: Mask) -> tuple[I64, I64, Mask]:
    """A length-delimited field with ``tag`` at ``pos``: its content ``[start, end)`` and
    ``ok`` narrowed to the records where it is there and ends by ``limit``."""
    ok = ok & (pos < limit) & (_byte(raw, pos) == tag)
    size, start, good = _length(raw, pos + 1, limit)
    end = start + size
    ok &= good & (end <= limit)
    return np.where(ok, start, 0), np.where(ok, end, 0), ok


def _key_is_values(raw: U8, pos: I64, limit: I64, ok: Mask) -> Mask:
    window = raw[np.minimum(pos[:, None] + np.arange(_KEY.size), raw.size - 1)]
    same: Mask = (window == _KEY).all(axis=1)
    return ok & (pos + _KEY.size <= limit) & same


def _tensor(raw: U8, pos: I64, limit: I64, ok: Mask) -> tuple[U8, I64, I64, Mask]:
    """``key "values", Value {tensor}`` filling ``[pos, limit)``: the tensor's tag and
    content ``[start, end)``."""
    ok = _key_is_values(raw, pos, limit, ok)
    value_start, value_end, ok = _field(raw, pos + _KEY.size, limit, 0x12, ok)
    ok &= value_end == limit
    tag = _byte(raw, value_start)
    ok &= np.isin(tag, _TENSOR_TAGS)
    start, end, ok = _field(raw, value_start, value_end, tag, ok)
    return tag, start, end, ok & (end == value_end)


def _packed(raw: U8, start: I64, end: I64, ok: Mask) -> tuple[list[tuple[I64, I64]], Mask]:
    """The spans of a tensor's values (1), keys (2) and shape (3) fields, each optional and in
    that order, filling ``[start, end)``; an absent field has an empty span."""
    spans = []
    pos = start
    for tag in (0x0A, 0x12, 0x1A):
        here = ok & (pos < end) & (_byte(raw, pos) == tag)
        a, b, good = _field(raw, pos, end, tag, here)
        ok = ok & (~here | good)
        spans.append((np.where(good, a, 0), np.where(good, b, 0)))
        pos = np.where(good, b, pos)
    return spans, ok & (pos == end)


def _gather(raw: U8, start: I64, end: I64) -> tuple[U8, I64]:
    """The bytes of every span back to back, and each span's size."""
    sizes = end - start
    offsets = np.repeat(start - (np.cumsum(sizes) - sizes), sizes)
    return raw[offsets + np.arange(offsets.size)], sizes


def _whole(flat: U8, sizes: I64) -> Mask:
    """Which spans end where a varint ends (an empty span does)."""
    empty: Mask = sizes == 0
    if not flat.size:
        return empty
    ends: Mask = flat[np.maximum(np.cumsum(sizes) - 1, 0)] < 0x80
    return empty | ends


def _varints(raw: U8, start: I64, end: I64, ok: Mask,
             ) -> tuple[npt.NDArray[np.uint64], I64, Mask]:
    """The packed varints of each span where ``ok``: all values back to back, the count per
    span (0 where not ok), and ``ok`` narrowed to spans of whole varints of at most 64 bits."""
    flat, sizes = _gather(raw, np.where(ok, start, 0), np.where(ok, end, 0))
    good = _whole(flat, sizes)
    if not good.all():  # a cut varint would run into the next span: leave it out
        ok = ok & good
        flat, sizes = _gather(raw, np.where(ok, start, 0), np.where(ok, end, 0))
    last = np.flatnonzero(flat < 0x80)
    first = np.concatenate(([0], last[:-1] + 1))[:last.size]
    width = last - first + 1
    long = (width > 10) | ((width == 10) & (flat[last] > 1))
    if long.any():  # more than 64 bits: the runtime decides
        owner = np.searchsorted(np.cumsum(sizes), last[long], side="right")
        ok = ok.copy()
        ok[owner] = False
        return _varints(raw, start, end, ok)
    terms = (flat & 0x7F).astype(np.uint64) << _SHIFTS[np.arange(flat.size)
                                                       - np.repeat(first, width)]
    values = np.add.reduceat(terms, first) if first.size else np.zeros(0, np.uint64)
    ends = np.concatenate(([0], np.cumsum(flat < 0x80)))
    stops = np.cumsum(sizes)
    counts = ends[stops] - ends[stops - sizes]
    return values, counts, ok


def _numbers(raw: U8, tag: int, start: I64, end: I64, ok: Mask,
             ) -> tuple[npt.NDArray[np.float32], I64, Mask]:
    """Each span's packed values of one tensor kind as float32, their counts (0 where not
    ok), and ``ok`` narrowed to valid spans (a whole number of fixed-width values, or of
    varints for Int32)."""
    if tag in _WIDTH:
        width = _WIDTH[tag]
        ok = ok & ((end - start) % width == 0)
        flat, sizes = _gather(raw, np.where(ok, start, 0), np.where(ok, end, 0))
        values = flat.view("<f4" if width == 4 else "<f8").astype(np.float32)
        return values, sizes // width, ok
    varints, counts, ok = _varints(raw, start, end, ok)
    as_int32 = (varints & np.uint64(0xFFFFFFFF)).astype(np.uint32).view(np.int32)
    return as_int32.astype(np.float32), counts, ok


def _ramp(counts: I64) -> I64:
    """0, 1, ..., counts[i] - 1 for each i, back to back."""
    return np.arange(int(counts.sum())) - np.repeat(np.cumsum(counts) - counts, counts)


def _label(raw: U8, start: I64, end: I64, ok: Mask) -> tuple[npt.NDArray[np.float32], Mask]:
    """``label["values"]`` filling ``[start, end)``: a tensor of exactly one value."""
    entry_start, entry_end, ok = _field(raw, start, end, 0x12, ok)
    ok &= entry_end == end
    tag, t0, t1, ok = _tensor(raw, entry_start, entry_end, ok)
    v0, v1, ok = _field(raw, t0, t1, 0x0A, ok)
    ok &= v1 == t1
    labels = np.zeros(start.size, np.float32)
    for kind in _TENSOR_TAGS:
        these = np.flatnonzero(ok & (tag == kind))
        values, counts, good = _numbers(raw, kind, v0[these], v1[these],
                                        np.ones(these.size, bool))
        good &= counts == 1
        ok[these[~good]] = False
        labels[these[good]] = values[(np.cumsum(counts) - counts)[good]]
    return labels, ok


def decode(raw: U8, start: I64, end: I64, dim: int, has_label: bool) -> Batch:
    """The records whose payloads are ``raw[start[i]:end[i]]``: those laid out as the SDKs
    write them with ``dim`` features and a label iff ``has_label``, decoded."""
    ok = np.ones(start.size, bool)
    entry_start, entry_end, ok = _field(raw, start, end, 0x0A, ok)
    ok &= (entry_end < end) if has_label else (entry_end == end)
    tag, t0, t1, ok = _tensor(raw, entry_start, entry_end, ok)
    spans, ok = _packed(raw, t0, t1, ok)
    labels, ok = _label(raw, entry_end, end, ok) if has_label else (None, ok)
    shape, shape_counts, ok = _varints(raw, *spans[2], ok)
    ok &= shape_counts <= 1
    keys, key_counts, ok = _varints(raw, *spans[1], ok)
    sizes = np.full(start.size, dim, np.uint64)
    with_shape = np.flatnonzero(ok & (shape_counts == 1))
    sizes[with_shape] = shape[(np.cumsum(shape_counts) - 1)[with_shape]]
    return _rows(raw, tag, spans[0], (keys, key_counts), (sizes, shape_counts), labels, ok, dim)


def _rows(raw: U8, tag: U8, values_span: tuple[I64, I64],
          keys: tuple[npt.NDArray[np.uint64], I64], shape: tuple[npt.NDArray[np.uint64], I64],
          labels: npt.NDArray[np.float32] | None, ok: Mask, dim: int) -> Batch:
    """Dense rows where a tensor has no keys (and values, or no shape), as the runtime's
    decoder reads them; sparse rows densified, each key below the ``dim`` features."""
    key_values, key_counts = keys
    sizes, shape_counts = shape
    key_first = np.cumsum(key_counts) - key_counts
    row_of = np.cumsum(ok) - 1
    out = np.zeros((int(ok.sum()), dim), np.float32)
    ok = ok.copy()
    for kind in _TENSOR_TAGS:
        these = np.flatnonzero(ok & (tag == kind))
        values, counts, good = _numbers(raw, kind, values_span[0][these], values_span[1][these],
                                        np.ones(these.size, bool))
        nkeys = key_counts[these]
        dense = (nkeys == 0) & ((shape_counts[these] == 0) | (counts > 0))
        good &= np.where(dense, counts == dim, (counts == nkeys) & (sizes[these] == dim))
        sparse = np.flatnonzero(~dense & good)
        record_keys = key_values[np.repeat(key_first[these[sparse]], nkeys[sparse])
                                 + _ramp(nkeys[sparse])]
        beyond = record_keys >= dim
        if beyond.any():  # a key outside the features: the runtime path names it
            good[sparse[np.repeat(np.arange(sparse.size), nkeys[sparse])[beyond]]] = False
        ok[these[~good]] = False
        value_first = np.cumsum(counts) - counts
        dense_rows = np.flatnonzero(dense & good)
        out[row_of[these[dense_rows]]] = values[value_first[dense_rows][:, None]
                                                + np.arange(dim)]
        keep = np.repeat(good[sparse], nkeys[sparse])
        cells = np.repeat(row_of[these[sparse]], nkeys[sparse])
        picked = np.repeat(value_first[sparse], nkeys[sparse]) + _ramp(nkeys[sparse])
        out[cells[keep], record_keys[keep].astype(np.intp)] = values[picked[keep]]
    decoded = row_of[ok]
    return Batch(ok, out if decoded.size == out.shape[0] else out[decoded],
                 None if labels is None else labels[ok])
