"""`openknn serve` beside the floor: a bare ASGI app under the same uvicorn doing the same
work (parse the CSV, search the same faiss index, vote, orjson), on the Kaggle covtype rows,
for Flat, IVFFlat, IVFPQ and HNSW, from one run (issue 15).

The models are trained by openknn on the tutorial's split (k=10, classifier). The bare app
(``BARE_APP``) loads the same model.tar.gz with openknn's loader but then uses only the
faiss index and the labels: ``np.array`` of the body's floats, ``index.search`` with the
model's nprobe or efSearch (one OpenMP thread for one row; faiss's BLAS path from 16 rows,
which is faster here than its default), a ``bincount`` vote, ``orjson``. It skips what
openknn does on top (content negotiation, limits and timeouts, micro-batching, the exact
float64 re-ranking of decision 1, checks for NaN, metrics), so it is a floor, not a rival.
Both serve on 127.0.0.1 under uvicorn with uvloop and httptools, one process each, with the
machine's threads for faiss. The load is wrk (Debian's package) with one keep-alive
connection (concurrency 1) or 32 (two wrk threads), POSTing the same body for ``--seconds``
each:

- ``single c1``, ``single c32``: one test row as ``text/csv``;
- ``581 c1``: 581 test rows (the tutorial's batch) as ``text/csv``.

Printed: requests/s and wrk's p50 / p99 latency for each server, and openknn's requests/s as a
fraction of the floor's; then, for single rows at concurrency 32, openknn's requests/s beside
raw faiss's queries/s for batches of 32 test rows (``index.search`` in this process, the
model's knob, every thread). The issue's goals: single c1 >= 0.7x the floor, 581 c1 >= 0.8x
the floor, single c32 >= 0.8x raw faiss batch-32.

    .venv/bin/python benchmarks/serving_floor.py [--path covtype.csv.gz] [--seconds 5]
        [--index faiss.Flat ...]
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import faiss
import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from openknn.jobs import artifact, datasets, training  # noqa: E402
from openknn.serving.process import free_port  # noqa: E402

DEFAULT_DATA = (Path(__file__).resolve().parents[2] / "shared" / "data" / "covtype"
                / "kaggle-forest-cover-type-prediction_train.csv.gz")
INDEXES = {"faiss.Flat": {}, "faiss.IVFFlat": {"faiss_index_ivf_nlists": "auto"},
           "faiss.IVFPQ": {"faiss_index_ivf_nlists": "auto", "faiss_index_pq_m": "8"},
           "faiss.HNSW": {}}
BARE_APP = """
import sys
import numpy as np, orjson, uvicorn, faiss
from openknn.jobs import artifact

model = artifact.load(sys.argv[1])
index, labels, k = model.index, model.labels, model.meta.k
if hasattr(index, "nprobe"):
    index.nprobe = model.meta.nprobe
elif hasattr(index, "hnsw"):
    index.hnsw.efSearch = model.meta.nprobe  # the model's efSearch, as openknn searches
else:  # Flat: faiss's BLAS path from 16 rows (openknn.core.index.BLAS_MIN_ROWS) is faster
    faiss.cvar.distance_compute_blas_threshold = 16 * index.d  # here than its default

async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    rows = [line.split(b",") for line in body.split(b"\\n") if line]
    x = np.array([[float(v) for v in row] for row in rows], np.float32)
    faiss.omp_set_num_threads(1 if len(x) < 2 else 2)
    _, ids = index.search(model.prepare_queries(x), k)  # IVFPQ pads to its index_dim
    near = labels[ids].astype(np.int64)
    votes = [int(np.bincount(row).argmax()) for row in near]
    out = orjson.dumps({"predictions": [{"predicted_label": float(v)} for v in votes]})
    await send({"type": "http.response.start", "status": 200, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(out)).encode())]})
    await send({"type": "http.response.body", "body": out})

uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[2]), log_level="warning",
            lifespan="off")
"""
LUA = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "text/csv"
wrk.headers["Accept"] = "application/json"
local f = io.open("{body}", "rb")
wrk.body = f:read("*a")
f:close()
"""


def wait_ready(url: str, proc: subprocess.Popen[bytes], probe: bytes) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the server exited"
        try:
            if httpx.post(url, content=probe, headers={"content-type": "text/csv"},
                          timeout=2, trust_env=False).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer")


def wrk(url: str, script: Path, connections: int, seconds: float) -> tuple[float, float, float]:
    """requests/s, p50 ms, p99 ms."""
    threads = 1 if connections == 1 else 2
    ran = subprocess.run(["wrk", "-t", str(threads), "-c", str(connections), "-d",
                          f"{seconds:g}s", "--latency", "-s", str(script), url],
                         capture_output=True, text=True, timeout=seconds + 60, check=True)
    out = ran.stdout
    rps = float(re.search(r"Requests/sec:\s+([0-9.]+)", out).group(1))  # type: ignore[union-attr]

    def pct(p: str) -> float:
        value, unit = re.search(rf"\s{p}%\s+([0-9.]+)(us|ms|s)", out).groups()  # type: ignore[union-attr]
        return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]

    if "Non-2xx" in out:
        raise RuntimeError(f"{url}: errors under load:\n{out}")
    return rps, pct("50"), pct("99")


def raw_batch_qps(model_path: Path, rows: np.ndarray, batch: int = 32,
                  seconds: float = 2.0) -> float:
    """Raw faiss queries/s for batches of ``batch`` of ``rows``, in this process, with the
    model's nprobe or efSearch and every thread: the c32 goal's baseline."""
    model = artifact.load(model_path)
    index = model.index
    if hasattr(index, "nprobe"):
        index.nprobe = model.meta.nprobe
    elif hasattr(index, "hnsw"):
        index.hnsw.efSearch = model.meta.nprobe
    faiss.omp_set_num_threads(os.cpu_count() or 1)
    queries = [np.ascontiguousarray(model.prepare_queries(rows[a:a + batch]), np.float32)
               for a in range(0, len(rows) - batch + 1, batch)]
    done, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        index.search(queries[done % len(queries)], model.meta.k)
        done += 1
    return done * batch / (time.perf_counter() - t0)


def write_bodies(root: Path, rows_by_name: dict[str, np.ndarray]) -> dict[str, tuple[Path, Path]]:
    """Each named set of rows as a CSV body and a wrk script that POSTs it."""
    bodies = {}
    for name, rows in rows_by_name.items():
        path = root / f"{name}.csv"
        path.write_text("".join(",".join(f"{v:g}" for v in row) + "\n" for row in rows))
        script = root / f"{name}.lua"
        script.write_text(LUA.format(body=path))
        bodies[name] = (path, script)
    return bodies


def train_models(root: Path, split: datasets.Split, index_types: list[str]) -> dict[str, Path]:
    """openknn's model.tar.gz for each index type, trained on the tutorial's split."""
    (root / "train").mkdir(exist_ok=True)
    with open(root / "train" / "train.csv", "w") as f:
        for label, row in zip(split.train_y, split.train_x):
            f.write(f"{label:g}," + ",".join(f"{v:g}" for v in row) + "\n")
    models = {}
    for index_type in index_types:
        hp = {"feature_dim": "54", "k": "10", "sample_size": "200000",
              "predictor_type": "classifier", "index_type": index_type,
              **INDEXES[index_type]}
        training.train(root / "train", hyperparameters=hp, output_dir=root / index_type)
        models[index_type] = root / index_type / "model.tar.gz"
    return models


@dataclasses.dataclass
class Setup:
    """The benchmarks' inputs: the split, its request bodies, the trained models, a probe."""

    split: datasets.Split
    bodies: dict[str, tuple[Path, Path]]
    models: dict[str, Path]
    probe: bytes


def set_up(root: Path, data: Path, index_types: list[str]) -> Setup:
    """wrk is there; the covtype split's one-row and 581-row bodies and each index's model,
    under ``root``."""
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: apt-get install -y wrk")
    split = datasets.tutorial_split(datasets.load_covtype(data))
    bodies = write_bodies(root, {"single": split.test_x[:1], "581": split.test_x[:581]})
    return Setup(split, bodies, train_models(root, split, index_types),
                 bodies["single"][0].read_bytes())


@contextlib.contextmanager
def serving(command: list[str], log_path: Path, probe: bytes) -> Iterator[str]:
    """A server started with ``command`` (its port last), answering; its /invocations URL."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    port = free_port()
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([*command, str(port)], env=env, stdout=log, stderr=log)
        url = f"http://127.0.0.1:{port}/invocations"
        try:
            try:
                wait_ready(url, proc, probe)
            except (RuntimeError, AssertionError):
                log.flush()
                print(log_path.read_text()[-3000:])
                raise
            yield url
        finally:
            proc.terminate()
            proc.wait(10)


def openknn_command(model: Path) -> list[str]:
    return [sys.executable, "-m", "openknn", "serve", str(model), "--port"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--path", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--index", action="append", choices=list(INDEXES))
    args = parser.parse_args()
    index_types = args.index or list(INDEXES)
    results, raw = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        setup = set_up(root, args.path, index_types)
        split, bodies, models, probe = setup.split, setup.bodies, setup.models, setup.probe
        for index_type in index_types:
            model = models[index_type]
            for server in ("openknn", "floor"):
                command = (openknn_command(model) if server == "openknn"
                           else [sys.executable, "-c", BARE_APP, str(model)])
                with serving(command, root / f"{server}-{index_type}.log", probe) as url:
                    for shape, connections in (("single", 1), ("single", 32), ("581", 1)):
                        rps, p50, p99 = wrk(url, bodies[shape][1], connections, args.seconds)
                        results.append((index_type, f"{shape} c{connections}", server, rps,
                                        p50, p99))
            raw[index_type] = raw_batch_qps(model, split.test_x[:4096])
    print(f"covtype rows: {len(split.train_y)} train; wrk {args.seconds:g} s per row")
    print(f"{'index':<15}{'load':<12}{'openknn r/s':>12}{'p50':>8}{'p99':>8}"
          f"{'floor r/s':>11}{'p50':>8}{'p99':>8}{'ratio':>7}")
    table = {(i, load, s): (r, a, b) for i, load, s, r, a, b in results}
    for index_type in index_types:
        for load in ("single c1", "single c32", "581 c1"):
            o, f = table[(index_type, load, "openknn")], table[(index_type, load, "floor")]
            print(f"{index_type:<15}{load:<12}{o[0]:12.0f}{o[1]:8.2f}{o[2]:8.2f}"
                  f"{f[0]:11.0f}{f[1]:8.2f}{f[2]:8.2f}{o[0] / f[0]:7.2f}")
    print("(p50 / p99 in ms; ratio = openknn's requests/s over the floor's; goals: single c1 "
          ">= 0.7, 581 c1 >= 0.8)")
    print(f"\n{'index':<15}{'openknn single c32 r/s':>24}{'raw faiss batch-32 q/s':>24}"
          f"{'ratio':>7}")
    for index_type in index_types:
        c32 = table[(index_type, "single c32", "openknn")][0]
        print(f"{index_type:<15}{c32:24.0f}{raw[index_type]:24.0f}{c32 / raw[index_type]:7.2f}")
    print("(goal: >= 0.8)")


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
