"""The lock-step RecordIO decoder (formats/_record_batch.py) against the protobuf runtime's
per-record path: on SDK-written streams, dense and sparse, of every tensor kind, and on the
same streams with bytes changed, both give the same features and labels, or the same
DataError. And its cost: 150,000 one-key sparse records decode in well under a second."""

from __future__ import annotations

import io
import time
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from openknn.errors import DataError
from openknn.formats import _protobuf_wire, _record_batch, recordio
from openknn.formats.recordio import (
    Record,
    Tensor,
    decode_features,
    dense_to_bytes,
    encode_record,
    frame,
    write_sparse,
)

from ..conftest import Csr


def sparse_bytes(dense: np.ndarray, labels: np.ndarray | None = None) -> bytes:
    buf = io.BytesIO()
    write_sparse(buf, Csr(dense), labels)
    return buf.getvalue()


def _outcome(data: bytes, dim: int | None, **kwargs: Any) -> Any:
    try:
        features, labels = decode_features(data, dim, **kwargs)
    except DataError as exc:
        return ("error", str(exc))
    return ("ok", _bits(features), features.shape, None if labels is None else _bits(labels))


def _bits(values: np.ndarray) -> bytes:
    """The array's bytes with every NaN made the one quiet NaN: a damaged byte can make a
    signalling NaN, which a path through float64 (the runtime's Python floats) quiets and a
    float32 copy keeps; both are the same value to a reader."""
    if values.dtype.kind == "f":
        values = np.where(np.isnan(values), np.nan, values).astype(values.dtype)
    return values.tobytes()


def _paths(data: bytes, dim: int | None) -> list[Any]:
    """The outcome with every path, with the batch decoder only, with the runtime only."""
    outcomes = [_outcome(data, dim)]
    with pytest.MonkeyPatch.context() as m:
        m.setattr(_protobuf_wire.DenseLayout, "of", classmethod(lambda cls, f, p: None))
        outcomes.append(_outcome(data, dim))
        real = _record_batch.decode

        def nothing(raw: Any, start: Any, end: Any, d: int, has: bool) -> Any:
            batch = real(raw, start, end, d, has)
            return _record_batch.Batch(np.zeros_like(batch.ok), batch.features[:0],
                                       None if batch.labels is None else batch.labels[:0])

        m.setattr(_record_batch, "decode", nothing)
        outcomes.append(_outcome(data, dim))
    return outcomes


KINDS = [np.float32, np.float64, np.int64]


@st.composite
def streams(draw: st.DrawFn) -> tuple[bytes, int]:
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    dim = draw(st.integers(1, 9))
    parts = []
    labelled = draw(st.booleans())
    for _ in range(draw(st.integers(1, 4))):
        n = draw(st.integers(1, 30))
        kind = draw(st.sampled_from(KINDS))
        x = rng.standard_normal((n, dim)) * 10 ** draw(st.integers(-2, 12))
        x[rng.random((n, dim)) < draw(st.floats(0, 1))] = 0
        x = x.astype(kind) if kind != np.int64 else np.clip(x, -2**31, 2**31 - 1).astype(kind)
        labels = None
        if labelled:
            label_kind = draw(st.sampled_from(KINDS))
            labels = rng.integers(-2**31, 2**31 - 1, n).astype(label_kind)
        if draw(st.booleans()):
            parts.append(sparse_bytes(x, labels))
        else:
            parts.append(dense_to_bytes(x, labels))
    if draw(st.booleans()):  # a record the runtime writes with a uid: not the SDK layout
        parts.insert(draw(st.integers(0, len(parts))), frame(encode_record(Record(
            {"values": Tensor(np.ones(dim, np.float32))},
            {"values": Tensor(np.ones(1, np.float32))} if labelled else {}, uid="u"))))
    return b"".join(parts), dim


@settings(max_examples=150, deadline=None)
@given(case=streams(), dim_given=st.booleans())
def test_batch_decoder_equals_the_runtime(case: tuple[bytes, int], dim_given: bool) -> None:
    data, dim = case
    outcomes = _paths(data, dim if dim_given else None)
    assert outcomes[0] == outcomes[1] == outcomes[2]
    assert outcomes[0][0] == "ok", outcomes[0]


@settings(max_examples=300, deadline=None)
@given(case=streams(), data=st.data())
def test_damaged_streams_agree_with_the_runtime(case: tuple[bytes, int],
                                                data: st.DataObject) -> None:
    raw, dim = case
    damaged = bytearray(raw)
    for _ in range(data.draw(st.integers(1, 6))):
        at = data.draw(st.integers(0, len(damaged) - 1))
        damaged[at] = data.draw(st.sampled_from([0, 1, 0x7F, 0x80, 0xFF, 0x0A, 0x12, 0x1A,
                                                 damaged[at] ^ 1, damaged[at] + 1 & 0xFF]))
    given_dim = data.draw(st.sampled_from([None, dim, dim + 1]))
    outcomes = _paths(bytes(damaged), given_dim)
    assert outcomes[0] == outcomes[1] == outcomes[2]


def test_sparse_keys_and_shapes_the_runtime_would_refuse() -> None:
    bad = [
        Record({"values": Tensor(np.ones(2, np.float32), np.array([0, 6], np.uint64),
                                 np.array([6], np.uint64))}),  # key beyond the shape
        Record({"values": Tensor(np.ones(2, np.float32), np.array([0], np.uint64),
                                 np.array([6], np.uint64))}),  # two values, one key
        Record({"values": Tensor(np.ones(1, np.float32), np.array([0], np.uint64),
                                 np.array([7], np.uint64))}),  # shape other than feature_dim
        Record({"values": Tensor(np.ones(1, np.float32), np.array([2**63], np.uint64),
                                 np.array([2**40], np.uint64))}),  # wild key and shape
    ]
    good = sparse_bytes(np.eye(6, dtype=np.float32))
    for record in bad:
        data = good + frame(encode_record(record)) + good
        outcomes = _paths(data, 6)
        assert outcomes[0] == outcomes[1] == outcomes[2]
        assert outcomes[0][0] == "error" and "record 7" in outcomes[0][1], outcomes[0]


def test_duplicate_sparse_keys_keep_the_last_value_as_the_runtime() -> None:
    record = Record({"values": Tensor(np.array([1, 2, 3], np.float32),
                                      np.array([4, 4, 1], np.uint64), np.array([6], np.uint64))})
    data = frame(encode_record(record)) * 3
    outcomes = _paths(data, 6)
    assert outcomes[0] == outcomes[1] == outcomes[2]
    assert decode_features(data, 6)[0][0].tolist() == [0, 3, 0, 0, 2, 0]


def test_150000_one_key_sparse_records_decode_in_well_under_a_second() -> None:
    """Issue 10: every sparse record took the per-record path, 9.2 s of CPU for these 5.4 MB
    (2.4 s here before the batch decoder)."""
    n = 150_000
    dense = np.zeros((n, 6), np.float32)
    dense[np.arange(n), np.arange(n) % 6] = np.arange(n) % 97 + 1
    data = sparse_bytes(dense)
    assert len(data) == 5_400_000
    best = float("inf")
    for _ in range(3):
        start = time.process_time()
        features, _ = decode_features(data, 6,
                                      general_limit=recordio.REQUEST_GENERAL_RECORDS)
        best = min(best, time.process_time() - start)
    np.testing.assert_array_equal(features, dense)
    assert best < 0.4, best


def odd_record(i: int) -> bytes:
    """A record neither fast path reads: six ones that carry their own uid."""
    return frame(encode_record(Record({"values": Tensor(np.ones(6, np.float32))},
                                      uid=f"{i:06d}")))


def odd_records(n: int) -> list[bytes]:
    """``odd_record(i)`` for i < n, without encoding each: the uid is a fixed-width string,
    so every record is the encoder's bytes of record 0 with its six digits replaced (checked
    against the encoder on a spread of them). Encoding 50,000 took about 6 s."""
    template = odd_record(0)
    assert template.count(b"000000") == 1
    at = template.index(b"000000")
    head, tail = template[:at], template[at + 6:]
    records = [b"%s%06d%s" % (head, i, tail) for i in range(n)]
    for i in {1, 9, 999, 1000, 1001, 12_345, n // 2, n - 1}:
        assert records[i] == odd_record(i), i
    return records


def test_a_request_of_odd_records_is_refused_at_the_cost_bound() -> None:
    """Records neither fast path reads (here: each carries its own uid) take the runtime's
    path, about 10 us each; a request may hold REQUEST_GENERAL_RECORDS of them."""
    odd = odd_records(50_000)
    limit = recordio.REQUEST_GENERAL_RECORDS
    features, _ = decode_features(b"".join(odd[:limit]), 6, general_limit=limit)
    assert features.shape == (limit, 6)
    start = time.perf_counter()
    with pytest.raises(DataError, match=rf"record {limit + 1}: more than {limit} records of "
                                        r"this request are not laid out as the SageMaker SDK"):
        decode_features(b"".join(odd), 6, general_limit=limit)
    assert time.perf_counter() - start < 0.5
    training = decode_features(b"".join(odd[:limit + 1]), 6)  # training data: no bound
    assert training[0].shape == (limit + 1, 6)
