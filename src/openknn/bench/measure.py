"""The measuring side of ``openknn bench``: a real ``openknn serve`` process per model (always
stopped), the HTTP round trips, raw faiss on the same index, scikit-learn brute force on the
same points, faiss on GPU where there is one, and the figures they give."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faiss
import httpx
import numpy as np

from ..core import gpu as gpus
from ..core.index import faiss_search, knob_name
from ..core.model import KnnModel
from ..core.predict import vote
from ..core.tuning import recall_per_query
from ..errors import AlgorithmError, MissingExtraError
from ..formats.csv import encode_csv
from ..formats.json import parse_predictions_json
from ..formats.media import CSV, JSON
from ..serving import process
from .config import BenchConfig, Covtype, Fashion, Trained

log = logging.getLogger("openknn.bench.run")

NO_GPU = "no GPU (faiss GPU build not installed / no device)"
VERBOSE_JSON = f"{JSON}; verbose=true"
PLAIN_JSON = JSON
RECALL_AT = 10
KNOB_PARAM = {"nprobe": "nprobe", "efSearch": "ef_search"}  # the Content-Type parameter


# ---------------------------------------------------------------- the endpoint


@contextlib.contextmanager
def endpoint(model_tar: Path, threads: int, log_path: Path,
             gpu: int = 0) -> Iterator[httpx.Client]:
    """``openknn serve`` on a free loopback port (on the CPU, or on the GPU with ``gpu=1``),
    and a keep-alive client for it; the server is always stopped when the block ends."""
    port = process.free_port()
    proc = process.start([str(model_tar), "--host", "127.0.0.1", "--threads", str(threads),
                          "--gpus", str(gpu)], port, log_path)
    url = f"http://127.0.0.1:{port}"
    try:
        process.wait_ready(url, proc, log_path, timeout=300.0)
        with httpx.Client(base_url=url, timeout=600, trust_env=False) as client:  # no proxy
            yield client
    finally:
        process.stop(proc)


def content_type(model: KnnModel, value: int | None) -> str:
    """``text/csv``, with the per-request ``nprobe=`` / ``ef_search=`` override if given."""
    name = knob_name(model.index)
    if value is None or name is None:
        return CSV
    return f"{CSV}; {KNOB_PARAM[name]}={value}"


def post(client: httpx.Client, body: bytes, ctype: str, accept: str) -> tuple[bytes, float]:
    """One ``/invocations`` round trip: the response body and its seconds."""
    t0 = time.perf_counter()
    response = client.post("/invocations", content=body,
                           headers={"Content-Type": ctype, "Accept": accept})
    seconds = time.perf_counter() - t0
    if response.status_code != 200:
        raise AlgorithmError(f"the endpoint answered HTTP {response.status_code}: "
                             f"{response.text[:300]}")
    return response.content, seconds


def chunks(x: np.ndarray, rows: int) -> list[np.ndarray]:
    return [x[i:i + rows] for i in range(0, len(x), rows)]


def cycled(pool: np.ndarray, rows: int, count: int) -> list[np.ndarray]:
    """``count`` batches of ``rows`` consecutive rows of ``pool``, wrapping around."""
    idx = np.arange(rows * count) % len(pool)
    return [pool[idx[i * rows:(i + 1) * rows]] for i in range(count)]


def csv_bodies(x: np.ndarray, rows: int) -> list[bytes]:
    """``x`` as CSV request bodies of ``rows`` rows each (encoded once, sent many times)."""
    return [encode_csv(part) for part in chunks(x, rows)]


def endpoint_labels(client: httpx.Client, bodies: Sequence[bytes], ctype: str,
                    ) -> tuple[np.ndarray, float]:
    """The verbose neighbour labels of every row of the bodies and the seconds of the round
    trips (one untimed warm-up request first)."""
    post(client, bodies[0], ctype, VERBOSE_JSON)
    labels, seconds = [], 0.0
    for body in bodies:
        content, dt = post(client, body, ctype, VERBOSE_JSON)
        labels.append(parse_predictions_json(content)["labels"])
        seconds += dt
    return np.vstack(labels), seconds


def endpoint_ms(client: httpx.Client, batches: Sequence[np.ndarray]) -> np.ndarray:
    """Milliseconds of one plain-JSON CSV request per batch, after one warm-up."""
    bodies = [encode_csv(b) for b in batches]
    post(client, bodies[0], CSV, PLAIN_JSON)
    return np.array([post(client, body, CSV, PLAIN_JSON)[1] for body in bodies]) * 1e3


# ---------------------------------------------------------------- raw faiss and scikit-learn


def raw_ms(model: KnnModel, batches: Sequence[np.ndarray], k: int,
           index: Any = None) -> np.ndarray:
    """Milliseconds of raw ``index.search`` per prepared batch at the model's knob."""
    index = model.index if index is None else index
    prepared = [model.prepare_queries(np.asarray(b, np.float32)) for b in batches]
    faiss_search(index, prepared[0], k, model.meta.nprobe)
    times = []
    for q in prepared:
        t0 = time.perf_counter()
        faiss_search(index, q, k, model.meta.nprobe)
        times.append(time.perf_counter() - t0)
    return np.array(times) * 1e3


def raw_ids(model: KnnModel, x: np.ndarray, k: int, knob: int, rows: int,
            index: Any = None) -> tuple[np.ndarray, float]:
    """Raw faiss ids of every row of ``x`` searched ``rows`` at a time, and the seconds."""
    index = model.index if index is None else index
    prepared = [model.prepare_queries(np.asarray(b, np.float32)) for b in chunks(x, rows)]
    faiss_search(index, prepared[0], k, knob)
    out, seconds = [], 0.0
    for q in prepared:
        t0 = time.perf_counter()
        out.append(faiss_search(index, q, k, knob)[1])
        seconds += time.perf_counter() - t0
    return np.vstack(out), seconds


def sklearn_classifier(x: np.ndarray, y: np.ndarray, k: int) -> tuple[Any, float]:
    """``KNeighborsClassifier(algorithm="brute")`` fitted on ``x``; and the fit seconds."""
    try:
        from sklearn.neighbors import KNeighborsClassifier
    except ImportError:
        raise MissingExtraError("openknn bench's baseline", "dev", "sklearn") from None
    t0 = time.perf_counter()
    clf = KNeighborsClassifier(n_neighbors=k, algorithm="brute").fit(x, y)
    return clf, time.perf_counter() - t0


@contextlib.contextmanager
def sklearn_threads(threads: int) -> Iterator[None]:
    """scikit-learn's BLAS / OpenMP pools at faiss's thread count."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        yield
        return
    with threadpool_limits(threads):
        yield


def sklearn_ms(clf: Any, batches: Sequence[np.ndarray]) -> np.ndarray:
    times = []
    for b in batches:
        t0 = time.perf_counter()
        clf.predict(b)
        times.append(time.perf_counter() - t0)
    return np.array(times) * 1e3


# ---------------------------------------------------------------- GPU


def _no_gpu(index_type: str) -> str | None:
    """Why ``index_type`` cannot be measured on GPU 0 here, or None where it can."""
    if gpus.visible() == 0:
        return NO_GPU
    if index_type not in gpus.GPU_INDEX_TYPES:
        return f"faiss has no GPU {index_type} index"
    return None


def gpu_index(model: KnnModel) -> Any:
    """The model's index copied to GPU 0, its knob set; a string says why there is none."""
    if (why := _no_gpu(model.meta.index_type)) is not None:
        return why
    try:
        index = gpus.clone_to_gpu(model.index)
        if knob_name(model.index) == "nprobe":
            faiss.GpuParameterSpace().set_index_parameter(index, "nprobe", model.meta.nprobe)
        return index
    except Exception as exc:  # report it in the table, keep measuring the rest
        return f"GPU copy failed: {' '.join(str(exc).split())[:80]}"


def gpu_endpoint(t: Trained, batches: Sequence[np.ndarray], singles: Sequence[np.ndarray],
                 cfg: BenchConfig, workdir: Path) -> Latency | str:
    """The endpoint serving on GPU 0 (``--gpus 1``); a string says why there is none."""
    if (why := _no_gpu(t.spec.index_type)) is not None:
        return why
    log_path = workdir / f"serve-covtype-{t.spec.name}-gpu.log"
    with endpoint(t.tar, cfg.threads, log_path, gpu=1) as client:
        return Latency.of(endpoint_ms(client, batches), endpoint_ms(client, singles),
                          cfg.batch_rows)


# ---------------------------------------------------------------- measurements


@dataclass(frozen=True)
class Latency:
    """Batch and single-row milliseconds of one serving path."""

    batch_ms: float
    mean_ms: float
    p90_ms: float
    p99_ms: float
    batch_rows: int

    @property
    def qps(self) -> float:
        return self.batch_rows / self.batch_ms * 1e3

    @classmethod
    def of(cls, batch_ms: np.ndarray, single_ms: np.ndarray, rows: int) -> Latency:
        return cls(float(batch_ms.mean()), float(single_ms.mean()),
                   float(np.percentile(single_ms, 90)), float(np.percentile(single_ms, 99)),
                   rows)


def accuracy_by_k(neighbor_labels: np.ndarray, truth: np.ndarray, max_k: int) -> list[float]:
    """Accuracy of the vote over the first k labels (ties to the smallest), k = 1..max_k."""
    return [float(np.mean(vote(neighbor_labels[:, :k]) == truth)) for k in range(1, max_k + 1)]


def recall_at(found: np.ndarray, truth: np.ndarray, k: int = RECALL_AT) -> float:
    return float(recall_per_query(found[:, :k], truth[:, :k]).mean())


@dataclass
class Baseline:
    """scikit-learn brute force over one covtype sample."""

    name: str
    points: int
    labels: np.ndarray  # the sample's labels, to tell which models share it
    ids: np.ndarray  # exact neighbour ids of the evaluated test rows (max_k columns)
    accuracy: list[float]
    latency: Latency
    fit_s: float
    data_bytes: int


@dataclass
class CovtypeResult:
    trained: Trained
    accuracy: list[float]  # through the endpoint's verbose labels
    agrees: bool  # endpoint labels == the in-process model's, every row
    endpoint: Latency
    raw: Latency
    gpu: Latency | str
    recall: float | None  # recall@10 of raw faiss against the baseline's exact ids
    gpu_endpoint: Latency | str = NO_GPU


def sampled_points(model: KnnModel) -> np.ndarray:
    """The points a Flat model holds, in the coordinates of the data it was trained on: the
    index stores them minus the L2 shift (decision 23), which adds back exactly in float32,
    and padded with zero columns past ``feature_dim``."""
    if model.projection is not None:
        raise AlgorithmError("the scikit-learn baseline needs a model without a projection")
    x = model.index.reconstruct_n(0, model.index.ntotal)
    if model.center is not None:
        x = x + model.center.astype(np.float32)
    return np.ascontiguousarray(x[:, :model.meta.feature_dim])


def covtype_baseline(flat: Trained, data: Covtype, cfg: BenchConfig) -> Baseline:
    """scikit-learn's KNeighborsClassifier on exactly the Flat model's sampled points."""
    log.info("covtype: scikit-learn brute force over %s's sample", flat.spec.name)
    x, y = sampled_points(flat.model), flat.model.labels
    test = np.asarray(data.test_x, np.float32)
    with sklearn_threads(cfg.threads):
        clf, fit_s = sklearn_classifier(x, y, cfg.covtype_k)
        ids = clf.kneighbors(test, n_neighbors=max(cfg.max_k, RECALL_AT),
                             return_distance=False)
        batch = sklearn_ms(clf, cycled(np.asarray(data.pool, np.float32), cfg.batch_rows,
                                       cfg.sklearn_batches))
        single = sklearn_ms(clf, cycled(test, 1, min(cfg.single_requests, cfg.sklearn_single)))
    return Baseline(f"scikit-learn brute ({flat.spec.name} sample)", len(y), y, ids,
                    accuracy_by_k(y[ids], data.test_y, cfg.max_k),
                    Latency.of(batch, single, cfg.batch_rows), fit_s, int(x.nbytes))


def measure_covtype(t: Trained, data: Covtype, base: Baseline, cfg: BenchConfig,
                    workdir: Path) -> CovtypeResult:
    """Accuracy by k through the endpoint, its latency beside raw faiss, recall@10."""
    log.info("covtype: serving %s", t.spec.name)
    batches = cycled(data.pool, cfg.batch_rows, cfg.batch_requests)
    singles = cycled(data.test_x, 1, cfg.single_requests)
    with endpoint(t.tar, cfg.threads, workdir / f"serve-covtype-{t.spec.name}.log") as client:
        labels, _ = endpoint_labels(client, csv_bodies(data.test_x, cfg.batch_rows),
                                    CSV)
        endpoint_lat = Latency.of(endpoint_ms(client, batches), endpoint_ms(client, singles),
                                  cfg.batch_rows)
    k = cfg.covtype_k
    in_process = t.model.neighbors(np.asarray(data.test_x, np.float32))[1]
    raw = Latency.of(raw_ms(t.model, batches, k), raw_ms(t.model, singles, k), cfg.batch_rows)
    recall = None
    if np.array_equal(t.model.labels, base.labels):  # the same sample, so the same ids
        found, _ = raw_ids(t.model, data.test_x, RECALL_AT, t.model.meta.nprobe, cfg.batch_rows)
        recall = recall_at(found, base.ids)
    return CovtypeResult(t, accuracy_by_k(labels, data.test_y, cfg.max_k),
                         bool(np.array_equal(labels, in_process)), endpoint_lat, raw,
                         gpu_latency(t.model, batches, singles, k), recall,
                         gpu_endpoint(t, batches, singles, cfg, workdir))


def gpu_latency(model: KnnModel, batches: Sequence[np.ndarray], singles: Sequence[np.ndarray],
                k: int) -> Latency | str:
    index = gpu_index(model)
    if isinstance(index, str):
        return index
    return Latency.of(raw_ms(model, batches, k, index), raw_ms(model, singles, k, index),
                      len(batches[0]))


@dataclass(frozen=True)
class Pass:
    """One pass of every query: recall@10, queries/s, accuracy of the vote at k."""

    recall: float
    qps: float
    accuracy: float


@dataclass
class CurvePoint:
    value: int
    endpoint: Pass
    raw: Pass


@dataclass
class FashionResult:
    trained: Trained
    endpoint: Pass
    raw: Pass
    gpu: Pass | str
    knob: str | None  # nprobe / efSearch, None for Flat
    curve: list[CurvePoint]


def fashion_pass(ids: np.ndarray, seconds: float, data: Fashion, k: int) -> Pass:
    ids = ids.astype(np.int64)
    labels = data.base_labels[np.clip(ids[:, :k], 0, len(data.base_labels) - 1)]
    return Pass(recall_at(ids, data.truth), len(ids) / seconds,
                float(np.mean(vote(labels) == data.query_labels)))


def curve_values(model: KnnModel, cfg: BenchConfig) -> list[int]:
    name = knob_name(model.index)
    if name == "nprobe":
        nlist = int(model.index.nlist)
        return sorted({v for v in cfg.nprobe_curve if v <= nlist} | {model.meta.nprobe})
    if name == "efSearch":
        return sorted(set(cfg.ef_curve) | {model.meta.nprobe})
    return []


def measure_fashion(t: Trained, data: Fashion, cfg: BenchConfig,
                    workdir: Path) -> FashionResult:
    """recall@10 and queries/s through the endpoint beside raw faiss, at the model's own
    knob and along the curve of per-request overrides."""
    log.info("Fashion-MNIST: serving %s", t.spec.name)
    m, k, rows = t.model, cfg.fashion_k, cfg.batch_rows
    values = curve_values(m, cfg)
    bodies = csv_bodies(data.queries, rows)
    with endpoint(t.tar, cfg.threads, workdir / f"serve-fashion-{t.spec.name}.log") as client:
        own = endpoint_labels(client, bodies, content_type(m, None))
        over = [endpoint_labels(client, bodies, content_type(m, v)) for v in values]
    curve = [CurvePoint(v, fashion_pass(*e, data, k),
                        fashion_pass(*raw_ids(m, data.queries, k, v, rows), data, k))
             for v, e in zip(values, over)]
    gpu: Pass | str = gpu_index(m)
    if not isinstance(gpu, str):
        gpu = fashion_pass(*raw_ids(m, data.queries, k, m.meta.nprobe, rows, gpu), data, k)
    return FashionResult(t, fashion_pass(*own, data, k),
                         fashion_pass(*raw_ids(m, data.queries, k, m.meta.nprobe, rows), data, k),
                         gpu, knob_name(m.index), curve)


@dataclass
class FashionBaseline:
    pass_: Pass
    fit_s: float
    data_bytes: int


def fashion_baseline(data: Fashion, cfg: BenchConfig) -> FashionBaseline:
    log.info("Fashion-MNIST: scikit-learn brute force")
    with sklearn_threads(cfg.threads):
        clf, fit_s = sklearn_classifier(data.base, data.base_labels, cfg.fashion_k)
        t0 = time.perf_counter()
        ids = clf.kneighbors(data.queries, return_distance=False)
        seconds = time.perf_counter() - t0
    return FashionBaseline(fashion_pass(ids, seconds, data, cfg.fashion_k), fit_s,
                           int(data.base.nbytes))


# ---------------------------------------------------------------- one run's results


@dataclass
class CovtypeReport:
    data: Covtype
    results: list[CovtypeResult]
    baselines: list[Baseline]


@dataclass
class FashionReport:
    data: Fashion
    results: list[FashionResult]
    baseline: FashionBaseline


@dataclass
class BenchResult:
    cfg: BenchConfig
    command: str
    covtype: CovtypeReport | str  # a string says why the section was skipped
    fashion: FashionReport | str
    seconds: float = 0.0
    load_average: str = "unknown"
