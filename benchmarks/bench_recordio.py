"""RecordIO-protobuf decode speed on the covtype tutorial's shape: 522,910 records of 54 float64
features and a float64 label (484 bytes each), written by ``write_dense`` into memory.

Usage: python benchmarks/bench_recordio.py [--rows N] [--repeat R]
"""

from __future__ import annotations

import argparse
import io
import time
from collections.abc import Callable

import numpy as np

from openknn.formats import _protobuf_wire, recordio


def _single_thread() -> None:
    try:
        import faiss

        faiss.omp_set_num_threads(1)
    except ImportError:
        pass


def _best(fn: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def _general_only(data: bytes, records: int) -> float:
    """Records/s of the per-record decoder (the protobuf runtime) with runs switched off."""
    original = _protobuf_wire.DenseLayout.__dict__["of"]
    _protobuf_wire.DenseLayout.of = classmethod(lambda cls, framed, payload: None)  # type: ignore
    try:
        start = time.perf_counter()
        recordio.decode_features(data[:records * 484], 54)
        return records / (time.perf_counter() - start)
    finally:
        _protobuf_wire.DenseLayout.of = original  # type: ignore[method-assign]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=522_910)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    _single_thread()
    rng = np.random.default_rng(0)
    features = rng.integers(0, 4000, (args.rows, 54)).astype(np.float64)  # covtype: integers
    labels = rng.integers(1, 8, args.rows).astype(np.float64)

    out = io.BytesIO()
    write_s = _best(lambda: recordio.write_dense(io.BytesIO(), features, labels), 1)
    recordio.write_dense(out, features, labels)
    data = out.getvalue()
    assert len(data) == args.rows * 484
    mb = len(data) / 1e6

    def one_shot() -> None:
        got, _ = recordio.decode_features(data, 54)
        assert got.shape == (args.rows, 54)

    def streamed() -> None:
        n = sum(len(f) for f, _, _ in recordio.iter_feature_blocks(
            io.BytesIO(data), 54, source="bench"))
        assert n == args.rows

    f32 = recordio.dense_to_bytes(features.astype(np.float32), labels.astype(np.int64))

    def float32_int_labels() -> None:
        recordio.decode_features(f32, 54)

    rows = [("write_dense", write_s, mb),
            ("decode_features", _best(one_shot, args.repeat), mb),
            ("iter_feature_blocks (16 MiB chunks)", _best(streamed, args.repeat), mb),
            ("decode_features, float32 + Int32 label", _best(float32_int_labels, args.repeat),
             len(f32) / 1e6)]
    print(f"{args.rows:,} records x 54 float64 + float64 label, {mb:.1f} MB, one thread")
    print(f"{'operation':<42}{'seconds':>9}{'records/s':>14}{'MB/s':>8}")
    for name, secs, size in rows:
        print(f"{name:<42}{secs:>9.3f}{args.rows / secs:>14,.0f}{size / secs:>8.0f}")
    general = _general_only(data, min(args.rows, 20_000))
    print(f"{'per-record path alone (20,000 records)':<42}{'':>9}{general:>14,.0f}"
          f"{general * 484e-6:>8.1f}")


if __name__ == "__main__":
    main()
