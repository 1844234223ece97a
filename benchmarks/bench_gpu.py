"""CPU beside GPU in one run, on Fashion-MNIST (60,000 x 784, the 10,000 test queries, exact
ground truth): openknn's index build (``training.build_model`` with ``_num_gpus`` 0 and 1),
recall@10, queries/s of the whole query set and single-query latency, for Flat, IVFFlat
tuned to recall 0.95 and IVFPQ (m=56); and the covtype training job (Kaggle rows, k=10,
Flat and the tutorial's IVFPQ m=8) with its test accuracy, on each device. Without a GPU
the GPU cells say so and the CPU figures still print.

    python benchmarks/bench_gpu.py [--path DIR] [--covtype FILE] [--threads N] [--single 1000]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_ann import DEFAULT, recall  # noqa: E402

from openknn.core import gpu, hyperparameters  # noqa: E402
from openknn.core.index import set_threads  # noqa: E402
from openknn.core.model import KnnModel  # noqa: E402
from openknn.core.search import search  # noqa: E402
from openknn.jobs import datasets, training
from openknn.jobs.data import Channel  # noqa: E402
from openknn.jobs.datasets import fashion_mnist, read_ivecs  # noqa: E402

COVTYPE = (Path(__file__).resolve().parents[2] / "shared" / "data" / "covtype"
           / "kaggle-forest-cover-type-prediction_train.csv.gz")
FASHION_MODELS = (("flat", {"index_type": "faiss.Flat"}),
                  ("ivfflat", {"index_type": "faiss.IVFFlat", "_target_recall": "0.95"}),
                  ("ivfpq_m56", {"index_type": "faiss.IVFPQ", "faiss_index_pq_m": "56"}))
COVTYPE_MODELS = (("flat", {"index_type": "faiss.Flat"}),
                  ("ivfpq_m8", {"index_type": "faiss.IVFPQ", "faiss_index_pq_m": "8"}))


def searcher(model: KnnModel) -> Any:
    return model.index if model.searcher is None else model.searcher


def fashion_row(model: KnnModel, queries: np.ndarray, truth: np.ndarray, single: int,
                build_s: float) -> list[str]:
    index, knob = searcher(model), model.meta.nprobe
    search(index, queries[:100], 10, "L2", knob)  # warm-up
    t0 = time.perf_counter()
    _, ids = search(index, queries, 10, "L2", knob)
    qps = len(queries) / (time.perf_counter() - t0)
    lat = []
    for q in queries[:single]:
        t1 = time.perf_counter()
        search(index, q[None, :], 10, "L2", knob)
        lat.append(time.perf_counter() - t1)
    return [f"{build_s:.2f}", f"{recall(ids, truth):.4f}", f"{qps:,.0f}",
            f"{np.median(lat) * 1e3:.3f}"]


def fashion(path: Path, single: int) -> list[list[str]]:
    data = fashion_mnist(path)
    truth = read_ivecs(path / "t10k-vs-train_knn100_ids.ivecs.gz")[:, :10]
    rows = []
    for name, extra in FASHION_MODELS:
        for device in ("0", "1"):
            hp = hyperparameters.parse({"feature_dim": "784", "k": "10", "sample_size": "60000",
                                        "predictor_type": "classifier", "_num_gpus": device,
                                        **extra})
            label = f"{name} ({'GPU' if device == '1' else 'CPU'})"
            if device == "1" and not usable(hp["index_type"]):
                rows.append([label, "no GPU", "", "", "", ""])
                continue
            t0 = time.perf_counter()
            model = training.build_model(data["train_images"], data["train_labels"], hp)
            build_s = time.perf_counter() - t0
            queries = model.prepare_queries(data["test_images"])
            knob = "exact" if name == "flat" else str(model.meta.nprobe)
            rows.append([label, knob, *fashion_row(model, queries, truth, single, build_s)])
    return rows


def covtype(path: Path, workdir: Path) -> list[list[str]]:
    split = datasets.tutorial_split(datasets.load_covtype(path))
    channels = datasets.write_channels(workdir / "covtype", split, ("recordio",))
    rows = []
    for name, extra in COVTYPE_MODELS:
        for device in ("0", "1"):
            label = f"{name} ({'GPU' if device == '1' else 'CPU'})"
            if device == "1" and not usable(extra["index_type"]):
                rows.append([label, "no GPU", "", ""])
                continue
            hp = {"feature_dim": "54", "k": "10", "predictor_type": "classifier",
                  "sample_size": "200000", "_num_gpus": device, **extra}
            result = training.run(training.TrainingJobSpec(
                hp, {"train": Channel("train", str(channels["train_recordio"])),
                     "test": Channel("test", str(channels["test_recordio"]))}))
            t = result.timings
            rows.append([label, f"{t['build_index']:.2f}", f"{t['score_test']:.2f}",
                         f"{result.metrics['test:accuracy']:.4f}"])
    return rows


def usable(index_type: str) -> bool:
    return gpu.resolve("auto", index_type, gpu.visible(), gpu.gpu_build()) == 1


def table(header: list[str], rows: list[list[str]]) -> None:
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(row) + " |")
    print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--path", type=Path, default=DEFAULT)
    parser.add_argument("--covtype", type=Path, default=COVTYPE)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--single", type=int, default=1000)
    args = parser.parse_args()
    threads = set_threads(args.threads)
    print(f"faiss GPU build: {gpu.gpu_build()}; GPUs visible to faiss: {gpu.visible()}; "
          f"CPU threads: {threads}\n")
    print("Fashion-MNIST, 10,000 queries, k=10 (build: training.build_model; single: "
          f"median of {args.single} one-row searches)\n")
    table(["model (device)", "knob", "build s", "recall@10", "queries/s", "single ms"],
          fashion(args.path, args.single))
    if args.covtype.exists():
        with tempfile.TemporaryDirectory() as tmp:
            print("covtype (Kaggle rows, 13,608 train / 1,512 test), the training job\n")
            table(["model (device)", "build index s", "score test s", "test accuracy"],
                  covtype(args.covtype, Path(tmp)))
    else:
        print(f"covtype skipped: {args.covtype} not found")


if __name__ == "__main__":
    main()
