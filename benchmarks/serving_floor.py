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
machine's threads for faiss, both started before any load. The load is wrk (Debian's
package) with one keep-alive connection (concurrency 1) or 32 (two wrk threads), POSTing the
same body for ``--seconds``, ``--rounds`` times per server, the two servers taking turns, so
that each ratio compares windows seconds apart (a shared machine's slow spells last seconds):

- ``single c1``, ``single c32``: one test row as ``text/csv``;
- ``581 c1``: 581 test rows (the tutorial's batch) as ``text/csv``.

Printed: each server's requests/s and wrk's p50 / p99 latency (medians over its windows), and
the median of openknn's requests/s as a fraction of the floor's in the same round, with each
round's; then, for single rows at concurrency 32, openknn's requests/s beside
raw faiss's queries/s for batches of 32 test rows (``index.search`` in this process, the
model's knob, every thread). The issue's goals: single c1 >= 0.7x the floor, 581 c1 >= 0.8x
the floor, single c32 >= 0.8x raw faiss batch-32.

With ``--data fashion`` the models index Fashion-MNIST's 60,000 training images (784-d;
the training job's index step, the test images as requests): there faiss's own work is a
larger share of a request, as in ``openknn bench``'s Fashion-MNIST table.

    .venv/bin/python benchmarks/serving_floor.py [--data covtype|fashion] [--path P]
        [--seconds 1] [--rounds 7] [--index faiss.Flat ...]
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import re
import shutil
import statistics
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
from openknn.core import hyperparameters as hp_module  # noqa: E402
from openknn.jobs import artifact, datasets, training  # noqa: E402
from openknn.serving.process import free_port  # noqa: E402

DEFAULT_DATA = (Path(__file__).resolve().parents[2] / "shared" / "data" / "covtype"
                / "kaggle-forest-cover-type-prediction_train.csv.gz")
DEFAULT_FASHION = Path(__file__).resolve().parents[2] / "shared" / "data" / "fashion-mnist"
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


@dataclasses.dataclass
class Measured:
    """One load on one index: (requests/s, p50, p99) per server, medians over the windows,
    and openknn's requests/s over the floor's in each round."""

    index_type: str
    load: str
    servers: list[tuple[float, float, float]]
    ratios: list[float]

    @property
    def ratio(self) -> float:
        return statistics.median(self.ratios)


def taking_turns(urls: list[str], script: Path, connections: int, seconds: float, rounds: int,
                 ) -> tuple[list[tuple[float, float, float]], list[float]]:
    """wrk on each server in turn, ``rounds`` times (the order reversed every other round):
    each server's median requests/s, p50 and p99, and the first's requests/s over the
    second's, round by round. A shared machine's slow spells last seconds: windows side by
    side compare the servers under the same spell, where one long window each did not."""
    runs: list[list[tuple[float, float, float]]] = [[] for _ in urls]
    for r in range(rounds):
        order = range(len(urls)) if r % 2 == 0 else reversed(range(len(urls)))
        for i in order:
            runs[i].append(wrk(urls[i], script, connections, seconds))
    medians = [(statistics.median(r[0] for r in server), statistics.median(r[1] for r in server),
                statistics.median(r[2] for r in server)) for server in runs]
    ratios = [a[0] / b[0] for a, b in zip(runs[0], runs[1])]
    return medians, ratios


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


def hyperparameters(index_type: str, feature_dim: int) -> dict[str, str]:
    """The training job's hyperparameters for one model of the set (k=10, a classifier)."""
    return {"feature_dim": str(feature_dim), "k": "10", "sample_size": "200000",
            "predictor_type": "classifier", "index_type": index_type, **INDEXES[index_type]}


def train_models(root: Path, split: datasets.Split, index_types: list[str]) -> dict[str, Path]:
    """openknn's model.tar.gz for each index type, trained on the tutorial's split."""
    (root / "train").mkdir(exist_ok=True)
    with open(root / "train" / "train.csv", "w") as f:
        for label, row in zip(split.train_y, split.train_x):
            f.write(f"{label:g}," + ",".join(f"{v:g}" for v in row) + "\n")
    models = {}
    for index_type in index_types:
        training.train(root / "train", hyperparameters=hyperparameters(index_type, 54),
                       output_dir=root / index_type)
        models[index_type] = root / index_type / "model.tar.gz"
    return models


def build_models(root: Path, split: datasets.Split, index_types: list[str]) -> dict[str, Path]:
    """The training job's index step over a split too big to write as CSV here (Fashion-MNIST's
    60,000 x 784), each model saved as model.tar.gz."""
    models = {}
    for index_type in index_types:
        hp = hp_module.parse(hyperparameters(index_type, split.train_x.shape[1]))
        models[index_type] = root / index_type / "model.tar.gz"
        artifact.write_model_tar(training.build_model(split.train_x, split.train_y, hp),
                                 models[index_type])
    return models


@dataclasses.dataclass
class Setup:
    """The benchmarks' inputs: the split, its request bodies, the trained models, a probe."""

    split: datasets.Split
    bodies: dict[str, tuple[Path, Path]]
    models: dict[str, Path]
    probe: bytes


def set_up(root: Path, data: Path, index_types: list[str], fashion: bool = False) -> Setup:
    """wrk is there; the split's one-row and 581-row bodies and each index's model, under
    ``root``: the covtype tutorial's split of the rows at ``data``, or (``fashion``) the
    Fashion-MNIST files in the folder ``data``."""
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: apt-get install -y wrk")
    split = (datasets.fashion_mnist_split(data) if fashion
             else datasets.tutorial_split(datasets.load_covtype(data)))
    bodies = write_bodies(root, {"single": split.test_x[:1], "581": split.test_x[:581]})
    models = (build_models if fashion else train_models)(root, split, index_types)
    return Setup(split, bodies, models, bodies["single"][0].read_bytes())


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
    parser.add_argument("--data", choices=["covtype", "fashion"], default="covtype",
                        help="the Kaggle covtype rows (54-d, 13,608 points), or Fashion-MNIST "
                             "(784-d, 60,000 points), where faiss's own cost weighs more")
    parser.add_argument("--path", type=Path,
                        help="the covtype .csv.gz or the Fashion-MNIST folder (default: "
                             "../shared/data)")
    parser.add_argument("--seconds", type=float, default=1.0,
                        help="each wrk window (one server, one load)")
    parser.add_argument("--rounds", type=int, default=7,
                        help="windows per server and load, the two servers taking turns")
    parser.add_argument("--index", action="append", choices=list(INDEXES))
    args = parser.parse_args()
    index_types = args.index or list(INDEXES)
    results: list[Measured] = []
    raw = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        fashion = args.data == "fashion"
        data = args.path or (DEFAULT_FASHION if fashion else DEFAULT_DATA)
        setup = set_up(root, data, index_types, fashion)
        split, bodies, models, probe = setup.split, setup.bodies, setup.models, setup.probe
        for index_type in index_types:
            model = models[index_type]
            with contextlib.ExitStack() as stack:
                urls = [stack.enter_context(serving(command, root / f"{name}-{index_type}.log",
                                                    probe))
                        for name, command in (("openknn", openknn_command(model)),
                                              ("floor", [sys.executable, "-c", BARE_APP,
                                                         str(model)]))]
                for shape, connections in (("single", 1), ("single", 32), ("581", 1)):
                    results.append(Measured(index_type, f"{shape} c{connections}", *taking_turns(
                        urls, bodies[shape][1], connections, args.seconds, args.rounds)))
            raw[index_type] = raw_batch_qps(model, split.test_x[:4096])
    print(f"{args.data}: {len(split.train_y)} train rows of {split.train_x.shape[1]}; "
          f"{args.rounds} wrk windows of {args.seconds:g} s per server and row, in turns")
    print(f"{'index':<15}{'load':<12}{'openknn r/s':>12}{'p50':>8}{'p99':>8}"
          f"{'floor r/s':>11}{'p50':>8}{'p99':>8}{'ratio':>7}   ratio by window")
    for m in results:
        (o, f) = m.servers
        print(f"{m.index_type:<15}{m.load:<12}{o[0]:12.0f}{o[1]:8.2f}{o[2]:8.2f}"
              f"{f[0]:11.0f}{f[1]:8.2f}{f[2]:8.2f}{m.ratio:7.2f}   "
              + " ".join(f"{r:.2f}" for r in m.ratios))
    print("(medians over the windows: requests/s, p50 / p99 in ms; ratio = the median of "
          "openknn's requests/s over the floor's in the same round; goals: single c1 >= 0.7, "
          "581 c1 >= 0.8)")
    print(f"\n{'index':<15}{'openknn single c32 r/s':>24}{'raw faiss batch-32 q/s':>24}"
          f"{'ratio':>7}")
    for m in results:
        if m.load == "single c32":
            c32 = m.servers[0][0]
            print(f"{m.index_type:<15}{c32:24.0f}{raw[m.index_type]:24.0f}"
                  f"{c32 / raw[m.index_type]:7.2f}")
    print("(goal: >= 0.8)")


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
