"""CSV read speed: openknn's iter_csv_blocks on the covtype tutorial's shape (522,910 rows of
1 label + 54 features), plain and gzip, integer and 3-decimal data, beside pyarrow's whole-file
read_csv and numpy.loadtxt on a 20,000-row slice.

    python benchmarks/bench_csv.py [--rows N] [--repeat R] [--block-mib B]
"""

from __future__ import annotations

import argparse
import gzip
import os
import tempfile
import time
from collections.abc import Callable
from functools import partial

import numpy as np
import pyarrow.csv as pacsv

from openknn.formats.csv import encode_csv, iter_csv_blocks

LOADTXT_ROWS = 20_000


def covtype_like(rows: int, rng: np.random.Generator) -> np.ndarray:
    """Integers shaped like covtype: a class 1-7, 10 measurements, 44 one-hot columns."""
    highs = [3859, 361, 67, 1398, 602, 7118, 255, 255, 255, 7174]
    measures = np.column_stack([rng.integers(0, high, rows) for high in highs])
    wilderness = np.eye(4, dtype=np.int64)[rng.integers(0, 4, rows)]
    soil = np.eye(40, dtype=np.int64)[rng.integers(0, 40, rows)]
    return np.column_stack([rng.integers(1, 8, rows), measures, wilderness, soil])


def decimals(rows: int, rng: np.random.Generator) -> np.ndarray:
    """A class label and 54 normal floats rounded to 3 decimals."""
    return np.column_stack([rng.integers(1, 8, rows), rng.normal(size=(rows, 54)).round(3)])


def write(directory: str, name: str, matrix: np.ndarray) -> tuple[str, str]:
    plain = os.path.join(directory, f"{name}.csv")
    with open(plain, "wb") as file:
        file.writelines(encode_csv(matrix[start:start + 100_000])
                        for start in range(0, len(matrix), 100_000))
    with open(plain, "rb") as src, gzip.open(plain + ".gz", "wb", compresslevel=6) as dst:
        dst.write(src.read())
    return plain, plain + ".gz"


def best_of(repeat: int, run: Callable[[], int]) -> tuple[float, int]:
    times, rows = [], 0
    for _ in range(repeat):
        start = time.perf_counter()
        rows = run()
        times.append(time.perf_counter() - start)
    return min(times), rows


def openknn_rows(path: str, block_bytes: int) -> int:
    return sum(len(features) for features, _, _ in iter_csv_blocks(
        path, source=os.path.basename(path), label_size=1, feature_dim=54,
        block_bytes=block_bytes))


def pyarrow_rows(path: str) -> int:
    table = pacsv.read_csv(path, pacsv.ReadOptions(autogenerate_column_names=True))
    return int(table.num_rows)


def loadtxt_rows(path: str) -> int:
    with open(path, "rb") as file:
        head = [next(file) for _ in range(LOADTXT_ROWS)]
    return len(np.loadtxt(head, delimiter=",", dtype=np.float32))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=522_910)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--block-mib", type=int, default=16)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    print(f"{'data':<10} {'reader':<34} {'MB':>7} {'seconds':>8} {'MB/s':>7} {'records/s':>11}")
    with tempfile.TemporaryDirectory() as directory:
        for name, make in (("integers", covtype_like), ("decimals", decimals)):
            plain, packed = write(directory, name, make(args.rows, rng))
            megabytes = os.path.getsize(plain) / 1e6
            slice_mb = megabytes * min(1.0, LOADTXT_ROWS / args.rows)
            runs = [
                ("openknn iter_csv_blocks .csv", megabytes,
                 partial(openknn_rows, plain, args.block_mib << 20)),
                ("openknn iter_csv_blocks .csv.gz", megabytes,
                 partial(openknn_rows, packed, args.block_mib << 20)),
                ("pyarrow read_csv, whole .csv", megabytes, partial(pyarrow_rows, plain)),
                (f"numpy.loadtxt, {LOADTXT_ROWS:,} rows", slice_mb, partial(loadtxt_rows, plain)),
            ]
            for label, size, run in runs:
                seconds, rows = best_of(args.repeat, run)
                print(f"{name:<10} {label:<34} {size:>7.1f} {seconds:>8.3f} "
                      f"{size / seconds:>7.1f} {rows / seconds:>11,.0f}")


if __name__ == "__main__":
    main()
