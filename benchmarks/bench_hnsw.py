"""HNSW tuned to recall@10 >= 0.95 on Fashion-MNIST: recall on the 10,000 test queries
against the exact ground truth, and single-row endpoint latency at concurrency 1 (p50 target
<= 2 ms) beside raw faiss's single-query latency on the same index and efSearch.

    .venv/bin/python benchmarks/bench_hnsw.py [--path DIR] [--requests 1000]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "integration"))

from bench_ann import DEFAULT, recall  # noqa: E402
from test_serving_http import start_server, stop  # noqa: E402

from openknn.core import hyperparameters  # noqa: E402
from openknn.core.index import faiss_search, set_threads  # noqa: E402
from openknn.core.search import search  # noqa: E402
from openknn.jobs import artifact, training
from openknn.jobs.datasets import fashion_mnist, read_ivecs  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--path", type=Path, default=DEFAULT)
    parser.add_argument("--requests", type=int, default=1000)
    args = parser.parse_args()
    set_threads(1)  # the same single thread the endpoint is given below
    data = fashion_mnist(args.path)
    truth = read_ivecs(args.path / "t10k-vs-train_knn100_ids.ivecs.gz")
    hp = hyperparameters.parse({"feature_dim": "784", "k": "10", "sample_size": "60000",
                                "predictor_type": "classifier", "index_type": "faiss.HNSW",
                                "_target_recall": "0.95"})
    model = training.build_model(data["train_images"], data["train_labels"], hp)
    ef = model.meta.nprobe
    queries = model.prepare_queries(data["test_images"])
    _, ids = search(model.index, queries, 10, "L2", ef)
    raw = []
    for q in queries[: args.requests]:
        t0 = time.perf_counter()
        faiss_search(model.index, q[None, :], 10, ef)
        raw.append(time.perf_counter() - t0)
    with tempfile.TemporaryDirectory() as tmp:
        artifact.write_model_tar(model, Path(tmp) / "model.tar.gz")
        proc, url = start_server([str(Path(tmp) / "model.tar.gz")])
        lat = []
        try:
            with httpx.Client(base_url=url) as client:
                for row in data["test_images"][: args.requests + 100].tolist():
                    body = orjson.dumps({"instances": [{"features": row}]})
                    t0 = time.perf_counter()
                    r = client.post("/invocations", content=body,
                                    headers={"Content-Type": "application/json"})
                    lat.append(time.perf_counter() - t0)
                    r.raise_for_status()
        finally:
            stop(proc)
    endpoint = np.array(lat[100:]) * 1000  # the first 100 warm the connection up
    direct = np.array(raw) * 1000
    print(f"HNSW (M=32, efConstruction=40) on Fashion-MNIST 60,000 x 784; tuned efSearch={ef} "
          f"(tuning-slice recall {model.meta.tuning['recall']:.4f})")  # type: ignore[index]
    print(f"recall@10 on the 10,000 test queries vs exact ground truth: {recall(ids, truth):.4f}")
    print(f"{'single row, concurrency 1':34}{'p50 ms':>9}{'p90 ms':>9}{'p99 ms':>9}")
    for name, v in (("endpoint (JSON over HTTP)", endpoint), ("raw faiss search", direct)):
        p50, p90, p99 = np.percentile(v, [50, 90, 99])
        print(f"{name:34}{p50:>9.3f}{p90:>9.3f}{p99:>9.3f}")
    print("target: endpoint p50 <= 2 ms")


if __name__ == "__main__":
    main()
