"""Training speed on a synthetic covtype-shaped set, beside the raw steps done by hand.

522,910 train rows and 58,102 test rows of 54 float64 features and a float64 label, written
as the tutorial writes them (RecordIO-protobuf via write_numpy_to_dense_tensor) and as CSV.
Prints, side by side from one run:

- RecordIO-protobuf decoding, records/s on one core (SageMaker's log: 536,420 records/s on an
  8-vCPU ml.m5.2xlarge);
- CSV reading, MB/s;
- the whole training job (read, sample 200,000, Flat index, score the test channel) against
  the raw steps: numpy loading the same rows from .npy, a numpy random choice of 200,000 rows,
  faiss IndexFlatL2 add + search of the test rows, a numpy vote.

    .venv/bin/python benchmarks/bench_training.py [--rows 522910] [--test-rows 58102]
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

import faiss
import numpy as np

from openknn.core.index import set_threads
from openknn.core.predict import vote
from openknn.formats import csv as csv_format
from openknn.formats import recordio
from openknn.jobs import training
from openknn.jobs.data import Channel

K, SAMPLE = 10, 200_000


def covtype_like(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Integer-valued float64 rows shaped like covtype: 10 quantities and 44 one-hot flags."""
    x = np.zeros((n, 54))
    x[:, :10] = rng.integers(0, 7000, (n, 10))
    x[np.arange(n), 10 + rng.integers(0, 4, n)] = 1
    x[np.arange(n), 14 + rng.integers(0, 40, n)] = 1
    return x, rng.integers(1, 8, n).astype(np.float64)


def write_files(root: Path, rows: int, test_rows: int) -> dict[str, Path]:
    rng = np.random.default_rng(0)
    x, y = covtype_like(rows, rng)
    xt, yt = covtype_like(test_rows, rng)
    paths = {"train_pbr": root / "train" / "train.pbr", "test_pbr": root / "test" / "test.pbr",
             "train_csv": root / "csv" / "train.csv", "train_npy": root / "train.npy",
             "test_npy": root / "test.npy"}
    for p in paths.values():
        p.parent.mkdir(parents=True, exist_ok=True)
    with open(paths["train_pbr"], "wb") as f:
        recordio.write_dense(f, x, y)
    with open(paths["test_pbr"], "wb") as f:
        recordio.write_dense(f, xt, yt)
    np.savetxt(paths["train_csv"], np.column_stack([y, x]), delimiter=",", fmt="%d")
    np.save(paths["train_npy"], np.column_stack([x, y]))
    np.save(paths["test_npy"], np.column_stack([xt, yt]))
    return paths


def time_recordio(path: Path) -> tuple[float, int]:
    t0 = time.perf_counter()
    n = 0
    with open(path, "rb") as f:
        for feats, _, _ in recordio.iter_feature_blocks(f, 54, source=str(path)):
            n += feats.shape[0]
    return time.perf_counter() - t0, n


def time_csv(path: Path) -> tuple[float, int]:
    t0 = time.perf_counter()
    n = 0
    with open(path, "rb") as f:
        for feats, _, _ in csv_format.iter_csv_blocks(f, source=str(path), label_size=1,
                                                      feature_dim=54, compression=None):
            n += feats.shape[0]
    return time.perf_counter() - t0, n


def time_job(paths: dict[str, Path], out: Path) -> tuple[float, float]:
    t0 = time.perf_counter()
    result = training.run(training.TrainingJobSpec(
        hyperparameters={"feature_dim": "54", "k": str(K), "sample_size": str(SAMPLE),
                         "predictor_type": "classifier"},
        channels={"train": Channel("train", str(paths["train_pbr"].parent)),
                  "test": Channel("test", str(paths["test_pbr"].parent))},
        output_dir=out))
    return time.perf_counter() - t0, float(result.metrics["test:accuracy"])


def time_raw(paths: dict[str, Path]) -> tuple[float, float]:
    t0 = time.perf_counter()
    train, test = np.load(paths["train_npy"]), np.load(paths["test_npy"])
    rows = np.random.default_rng(0).choice(train.shape[0], min(SAMPLE, train.shape[0]),
                                           replace=False)
    base = np.ascontiguousarray(train[rows, :-1], dtype=np.float32)
    labels = train[rows, -1].astype(np.float32)
    index = faiss.IndexFlatL2(54)
    index.add(base)
    _, ids = index.search(np.ascontiguousarray(test[:, :-1], dtype=np.float32), K)
    accuracy = float(np.mean(vote(labels[ids]) == test[:, -1]))
    return time.perf_counter() - t0, accuracy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=522_910)
    parser.add_argument("--test-rows", type=int, default=58_102)
    parser.add_argument("--rounds", type=int, default=3,
                        help="job and raw steps alternate this many times; best of each kept "
                             "(this shared machine's timings vary by up to 1.5x run to run)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    threads = set_threads()
    with tempfile.TemporaryDirectory() as tmp:
        paths = write_files(Path(tmp), args.rows, args.test_rows)
        pbr_mb = paths["train_pbr"].stat().st_size / 1e6
        csv_mb = paths["train_csv"].stat().st_size / 1e6
        rio_s, rio_n = time_recordio(paths["train_pbr"])
        csv_s, csv_n = time_csv(paths["train_csv"])
        raws, jobs = [], []
        for _ in range(args.rounds):
            raws.append(time_raw(paths))
            jobs.append(time_job(paths, Path(tmp) / "out"))
        raw_s, raw_acc = min(raws)
        job_s, job_acc = min(jobs)
    print(f"synthetic covtype-shaped set: {args.rows} train / {args.test_rows} test rows, "
          f"54 float64 features; faiss threads {threads}")
    print(f"{'what':44}{'figure':>16}{'target / baseline':>34}")
    print(f"{'RecordIO-protobuf decode (one core)':44}{rio_n / rio_s:>12,.0f} r/s"
          f"{'>= 1,000,000 r/s (SageMaker 536,420)':>34}")
    print(f"{'  (' + f'{pbr_mb:.0f} MB in {rio_s:.2f} s' + ')':44}{pbr_mb / rio_s:>11,.0f} MB/s")
    print(f"{'CSV read':44}{csv_mb / csv_s:>11,.0f} MB/s{'>= 100 MB/s':>34}")
    print(f"{'  (' + f'{csv_mb:.0f} MB, {csv_n} records in {csv_s:.2f} s' + ')':44}"
          f"{csv_n / csv_s:>12,.0f} r/s")
    print(f"{'raw steps by hand (npy, choice, Flat, vote)':44}{raw_s:>14.2f} s"
          f"{'accuracy ' + format(raw_acc, '.4f'):>34}")
    print(f"{'openknn training job':44}{job_s:>14.2f} s"
          f"{'accuracy ' + format(job_acc, '.4f'):>34}")
    print(f"{'job / raw (best of ' + str(args.rounds) + ' rounds each)':44}"
          f"{job_s / raw_s:>15.3f}x{'<= 1.3x':>34}")
    print("all rounds, raw / job seconds: "
          + ", ".join(f"{r[0]:.2f} / {j[0]:.2f}" for r, j in zip(raws, jobs)))


if __name__ == "__main__":
    main()
