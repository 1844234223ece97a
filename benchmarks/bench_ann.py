"""Recall@10 and queries/s of openknn's Flat, IVFFlat and IVFPQ indexes on Fashion-MNIST
(60,000 base, 10,000 queries, exact 100-NN ground truth), beside raw faiss on the same index.

The indexes are built by the training job's own step (`training.build_model`) with the
default hyperparameters (nlist=auto, _faiss_index_nprobe=5); recall is measured against the
shipped exact ground truth and against openknn's own Flat answers.

    .venv/bin/python benchmarks/bench_ann.py [--path ../shared/data/fashion-mnist] [--pq-m 56]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from openknn.core import hyperparameters
from openknn.core.index import set_threads
from openknn.jobs import training
from openknn.jobs.datasets import fashion_mnist, read_ivecs

DEFAULT = Path(__file__).resolve().parents[2] / "shared" / "data" / "fashion-mnist"
K = 10


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    hits = [len(set(a) & set(b)) for a, b in zip(found[:, :K].tolist(), truth[:, :K].tolist())]
    return float(np.sum(hits)) / (K * found.shape[0])


def run(path: Path, pq_m: int, threads: int | None) -> list[dict[str, object]]:
    data = fashion_mnist(path)
    truth = read_ivecs(path / "t10k-vs-train_knn100_ids.ivecs.gz")
    x, y, q = data["train_images"], data["train_labels"], data["test_images"]
    set_threads(threads)
    rows, flat_ids = [], None
    for index_type, extra in [("faiss.Flat", {}), ("faiss.IVFFlat", {}),
                              ("faiss.IVFPQ", {"faiss_index_pq_m": str(pq_m)})]:
        hp = hyperparameters.parse({"feature_dim": "784", "k": str(K), "sample_size": "60000",
                                    "predictor_type": "classifier", "index_type": index_type,
                                    **extra})
        t0 = time.perf_counter()
        model = training.build_model(x, y, hp)
        build_s = time.perf_counter() - t0
        t1 = time.perf_counter()
        dist, labels = model.neighbors(q)
        ours_s = time.perf_counter() - t1
        # the same search through openknn's index step, ids kept for recall
        from openknn.core.search import search
        queries = model.prepare_queries(q)
        _, ids = search(model.index, queries, K, "L2", model.meta.nprobe)
        t2 = time.perf_counter()
        params = None
        if hasattr(model.index, "nprobe"):
            import faiss
            params = faiss.SearchParametersIVF(nprobe=model.meta.nprobe)
        model.index.search(queries, K, params=params)
        raw_s = time.perf_counter() - t2
        flat_ids = ids if flat_ids is None else flat_ids
        accuracy = float(np.mean(model.predict(q) == data["test_labels"]))
        rows.append({"index": index_type, "nlist": model.meta.faiss_index_ivf_nlists or "-",
                     "nprobe": model.meta.nprobe if model.meta.faiss_index_ivf_nlists else "-",
                     "pq_m": model.meta.faiss_index_pq_m or "-",
                     "recall_truth": recall(ids, truth), "recall_flat": recall(ids, flat_ids),
                     "qps": len(q) / ours_s, "raw_qps": len(q) / raw_s, "build_s": build_s,
                     "accuracy": accuracy})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--path", type=Path, default=DEFAULT)
    parser.add_argument("--pq-m", type=int, default=56)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    rows = run(args.path, args.pq_m, args.threads)
    print(f"Fashion-MNIST 60,000 x 784 base, 10,000 queries, k={K}")
    head = ("index", "nlist", "nprobe", "pq_m", "recall@10 truth", "recall@10 vs Flat",
            "openknn q/s", "raw faiss q/s", "build s", "accuracy")
    print(" | ".join(head))
    for r in rows:
        print(" | ".join([str(r["index"]), str(r["nlist"]), str(r["nprobe"]), str(r["pq_m"]),
                          f"{r['recall_truth']:.4f}", f"{r['recall_flat']:.4f}",
                          f"{r['qps']:,.0f}", f"{r['raw_qps']:,.0f}", f"{r['build_s']:.1f}",
                          f"{r['accuracy']:.4f}"]))


if __name__ == "__main__":
    main()
