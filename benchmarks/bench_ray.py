"""Ray scale-out on this machine, side by side in one run, with Ray's overhead stated:

- training wall time and records/s on a synthetic covtype-shaped set (4 RecordIO files):
  the plain single-process job, then W=1 and W=2 Ray tasks (ShardedByS3Key), with the time
  to start the local Ray instance shown apart;
- endpoint throughput and p50 latency for single-row JSON requests at concurrency 16: the
  plain uvicorn server, 2 Ray Serve replicas, and the index in 2 Ray shard actors.

    .venv/bin/python benchmarks/bench_ray.py [--rows 522910] [--model-rows 200000] [--requests 1500]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_training import covtype_like  # noqa: E402

from openknn.core import index as fi  # noqa: E402
from openknn.core.model import KnnModel, ModelMeta  # noqa: E402
from openknn.formats import recordio  # noqa: E402
from openknn.jobs import artifact, training  # noqa: E402
from openknn.jobs.data import Channel  # noqa: E402
from openknn.jobs.runner import LocalRunner  # noqa: E402
from openknn.serving import process  # noqa: E402

HP = {"feature_dim": "54", "k": "10", "sample_size": "200000", "predictor_type": "classifier"}


def write_train(root: Path, rows: int) -> Path:
    x, y = covtype_like(rows, np.random.default_rng(0))
    for i, part in enumerate(np.array_split(np.arange(rows), 4)):
        (root / "train").mkdir(parents=True, exist_ok=True)
        with open(root / "train" / f"part-{i}.pbr", "wb") as f:
            recordio.write_dense(f, x[part], y[part])
    return root / "train"


def job(train: Path, out: Path, workers: int, runner: object) -> float:
    spec = training.TrainingJobSpec(HP, {"train": Channel("train", str(train), None,
                                                          "ShardedByS3Key")},
                                    output_dir=out, instance_count=workers)
    t0 = time.perf_counter()
    training.run(spec, runner)  # type: ignore[arg-type]
    return time.perf_counter() - t0


def bench_training(rows: int, root: Path) -> list[tuple[str, float, float]]:
    from openknn.distributed.runner import RayRunner

    train = write_train(root, rows)
    out = [("single process (no Ray)", job(train, root / "o0", 1, LocalRunner()), 0.0)]
    t0 = time.perf_counter()
    ray_runner = RayRunner()
    start = time.perf_counter() - t0
    try:
        for workers in (1, 2):
            seconds = job(train, root / f"o{workers}", workers, ray_runner)
            out.append((f"Ray, W={workers} tasks", seconds, start))
    finally:
        ray_runner.close()
    return out


def write_model(path: Path, rows: int) -> None:
    x, _ = covtype_like(rows, np.random.default_rng(1))
    x = x.astype(np.float32)
    labels = np.random.default_rng(2).integers(1, 8, rows).astype(np.float32)
    index = fi.build(x, 10, fi.IndexConfig())
    meta = ModelMeta(k=10, predictor_type="classifier", feature_dim=54, index_dim=54,
                     num_points=rows)
    artifact.write_model_tar(KnnModel(meta, index, labels), path)


async def load(url: str, bodies: list[bytes], concurrency: int) -> tuple[float, np.ndarray]:
    latencies: list[float] = []
    queue = list(bodies)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60) as client:
        async def worker() -> None:
            while queue:
                body = queue.pop()
                t0 = time.perf_counter()
                r = await client.post("/invocations", content=body,
                                      headers={"Content-Type": "application/json"})
                r.raise_for_status()
                latencies.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        total = time.perf_counter() - t0
    return len(bodies) / total, np.array(latencies) * 1000


def bench_endpoint(model: Path, extra: list[str], bodies: list[bytes],
                   concurrency: int) -> tuple[float, float]:
    port = process.free_port()
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    log = model.parent / f"serve-{port}.log"
    proc = process.start([str(model), *extra], port, log, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        process.wait_ready(url, proc, log, timeout=180)
        asyncio.run(load(url, bodies[:50], concurrency))  # warm up
        qps, lat = asyncio.run(load(url, bodies, concurrency))
    finally:
        process.stop(proc)
    return qps, float(np.percentile(lat, 50))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=522_910)
    parser.add_argument("--model-rows", type=int, default=200_000)
    parser.add_argument("--requests", type=int, default=1500)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        trained = bench_training(args.rows, root)
        write_model(root / "model.tar.gz", args.model_rows)
        queries = np.random.default_rng(3).integers(0, 7000, (args.requests, 54))
        bodies = [orjson.dumps({"instances": [{"features": q}]}) for q in queries.tolist()]
        served = [(name, *bench_endpoint(root / "model.tar.gz", extra, bodies,
                                         args.concurrency))
                  for name, extra in (("plain uvicorn (default)", []),
                                      ("Ray Serve, 2 replicas", ["--replicas", "2"]),
                                      ("Ray, index in 2 shard actors", ["--shards", "2"]))]
    print(f"machine: {os.cpu_count()} CPUs; training set {args.rows} x 54 in 4 RecordIO files, "
          "sample_size 200000, Flat, no test channel")
    print(f"{'training':34}{'seconds':>10}{'records/s':>12}{'Ray start s':>13}")
    for name, seconds, start in trained:
        print(f"{name:34}{seconds:>10.2f}{args.rows / seconds:>12,.0f}"
              f"{(f'{start:.2f}' if start else '-'):>13}")
    print(f"endpoint: Flat {args.model_rows} x 54, {args.requests} single-row JSON requests at "
          f"concurrency {args.concurrency}")
    print(f"{'endpoint':34}{'requests/s':>12}{'p50 ms':>10}")
    for name, qps, p50 in served:
        print(f"{name:34}{qps:>12,.0f}{p50:>10.2f}")


if __name__ == "__main__":
    main()
