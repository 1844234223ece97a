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

from openknn.formats import recordio


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


def _general_only(data: bytes, sample: int) -> float:
    """Seconds per record of the per-record decoder (each record alone: no runs to find)."""
    payloads = list(recordio.iter_payloads(data))[:sample]
    start = time.perf_counter()
    for payload in payloads:
        recordio.decode_features(recordio.frame(payload), 54)
    return (time.perf_counter() - start) / len(payloads)


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

    rows = [("write_dense", write_s)]
    rows += [("decode_features", _best(one_shot, args.repeat)),
             ("iter_feature_blocks (16 MiB chunks)", _best(streamed, args.repeat))]
    print(f"{args.rows:,} records x 54 float64 + float64 label, {mb:.1f} MB, one thread")
    print(f"{'operation':<38}{'seconds':>10}{'records/s':>14}{'MB/s':>10}")
    for name, secs in rows:
        print(f"{name:<38}{secs:>10.3f}{args.rows / secs:>14,.0f}{mb / secs:>10.0f}")
    per = _general_only(data, 2000)
    print(f"{'per-record decoder alone (2,000)':<38}{'':>10}{1 / per:>14,.0f}{484e-6 / per:>10.1f}")


if __name__ == "__main__":
    main()
