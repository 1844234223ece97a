"""Load benchmark of the inference endpoint (`openknn serve`) beside raw faiss, loopback only.

Four sections, printed side by side in one run on the same seeded data (200,000 x 54 float32,
covtype-shaped, k=10):

(a) raw faiss in-process throughput on the Flat index for batches of 1, 16, 256 and 581 rows;
(b) the endpoint's single-row ``application/json`` throughput and p50/p90/p99 latency at
    concurrency 1, 8 and 32, with the micro-batch size the server formed (from its
    ``openknn_batch_rows`` histogram) and raw faiss at that batch size (target: endpoint/raw
    >= 0.8 at concurrency 32);
(c) a 581-row ``text/csv`` request beside the raw search of the same rows (target <= 1.15x),
    with SageMaker's published 162.5 ms (ml.c5.xlarge, decision 34) for context;
(d) an IVFFlat model (nlist = round(sqrt(n)), nprobe 5): single-row latency at concurrency 1
    (target p50 <= 5 ms) beside raw faiss single-query latency.

The server is a real ``openknn serve`` subprocess on a free 127.0.0.1 port, loading the model
from a temporary ``model.tar.gz`` written by openknn itself; this process is the client (one
httpx ``AsyncClient``, keep-alive). Client and server share the machine's CPUs, so the
client's own CPU use is printed beside each phase. Every phase stops after a fixed number of
requests or ``--seconds``, whichever comes first.

    .venv/bin/python benchmarks/bench_serving.py [--rows 200000] [--threads N] [--seconds 8]
    .venv/bin/python benchmarks/bench_serving.py --quick
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import math
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import faiss
import httpx
import numpy as np
import orjson

from openknn.core import index as fi
from openknn.core.model import KnnModel, ModelMeta
from openknn.jobs import artifact
from openknn.serving import process
from openknn.settings import ServingSettings, from_env

K = 10
DIM = 54
CLASSES = 7
RAW_BATCHES = (1, 16, 256, 581)
CSV_ROWS = 581
JSON_HEADERS = {"Content-Type": "application/json", "Accept": "application/json"}
CSV_HEADERS = {"Content-Type": "text/csv", "Accept": "application/json"}
TARGET_RATIO_C32 = 0.8  # endpoint req/s over raw faiss q/s at the formed batch size
TARGET_BATCH_RATIO = 1.15  # 581-row request time over the raw search of the same rows
TARGET_IVF_P50_MS = 5.0
NOISY_OTHER_CPU = 0.25  # other processes used over a quarter core: the figure is suspect
# decision 34: flat_l2 (200k, k=100) and ivfpq_l2 on ml.c5.xlarge, client-side round trips, ms
SAGEMAKER_FLAT = {"batch581": 162.5, "mean": 15.1, "p90": 17.2, "p99": 21.2}
SAGEMAKER_IVFPQ = {"batch581": 57.9, "mean": 7.3, "p90": 8.1, "p99": 11.6}


# --- configuration ------------------------------------------------------------------------


def all_cpus() -> int:
    affinity = getattr(os, "sched_getaffinity", None)
    return len(affinity(0)) if affinity else (os.cpu_count() or 1)


@dataclass(frozen=True)
class BenchConfig:
    """Sizes and caps of one run (``quick()`` gives the small one a test can afford)."""

    rows: int = 200_000
    threads: int = field(default_factory=all_cpus)
    seconds: float = 8.0  # cap per endpoint phase
    max_requests: int = 3000  # cap per endpoint phase
    raw_seconds: float = 1.5  # cap per raw faiss measurement
    raw_calls: int = 2000  # cap per raw faiss measurement
    csv_requests: int = 30
    concurrencies: tuple[int, ...] = (1, 8, 32)
    lean_check: bool = True  # also run the highest concurrency with the lean client
    batch_window_ms: float | None = None  # None: the server's default (or its env)
    max_batch_rows: int | None = None
    seed: int = 0

    @classmethod
    def quick(cls, **changes: Any) -> BenchConfig:
        base = cls(rows=20_000, seconds=1.5, max_requests=300, raw_seconds=0.3,
                   raw_calls=200, csv_requests=8)
        return replace(base, **{k: v for k, v in changes.items() if v is not None})

    def server_settings(self) -> ServingSettings:
        """What the server subprocess will run with (it inherits this environment)."""
        return from_env().with_(threads=self.threads, batch_window_ms=self.batch_window_ms,
                                max_batch_rows=self.max_batch_rows)


# --- data and models ----------------------------------------------------------------------


def make_data(rows: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Seeded covtype-shaped data: ``rows`` x 54 float32 features and labels 1..7."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((rows, DIM), dtype=np.float32)
    y = rng.integers(1, CLASSES + 1, rows).astype(np.float32)
    return x, y


def make_queries(n: int, seed: int = 1) -> np.ndarray:
    """Query rows from the data's distribution, rounded to 4 decimals (as sent over HTTP)."""
    q = np.random.default_rng(seed).standard_normal((n, DIM))
    return np.round(q, 4).astype(np.float32)


def ivf_nlist(rows: int) -> int:
    return max(1, round(math.sqrt(rows)))


def build_model(x: np.ndarray, labels: np.ndarray, index_type: str = "faiss.Flat") -> KnnModel:
    """A model built through openknn's own index step, so the files are the real format."""
    nlist = ivf_nlist(len(x)) if index_type != "faiss.Flat" else None
    config = fi.IndexConfig(index_type=index_type, nlist=nlist or "auto")
    center = fi.center_of(x, config.metric)  # as training does (the L2 shift)
    idx = fi.build(x, K, config, center=center)
    meta = ModelMeta(k=K, predictor_type="classifier", feature_dim=DIM, index_dim=DIM,
                     index_type=index_type, num_points=len(x), faiss_index_ivf_nlists=nlist,
                     center=None if center is None else center.tolist())
    return KnnModel(meta, idx, labels)


def write_model(model: KnnModel, directory: Path) -> Path:
    path = directory / "model.tar.gz"
    artifact.write_model_tar(model, path)
    return path


# --- raw faiss ----------------------------------------------------------------------------


def search_params(index: Any, nprobe: int = 5) -> Any:
    if isinstance(index, faiss.IndexIVF):
        return faiss.SearchParametersIVF(nprobe=nprobe)  # type: ignore[call-arg]
    return None


def raw_search_times(index: Any, queries: np.ndarray, batch: int, *, seconds: float = 1.5,
                     max_calls: int = 2000, min_calls: int = 3, nprobe: int = 5,
                     ) -> np.ndarray:
    """Seconds per ``index.search`` of ``batch`` rows (k=10), cycling through ``queries``;
    one untimed warm-up call, then until ``max_calls`` or ``seconds``, at least ``min_calls``."""
    params = search_params(index, nprobe)
    batches = _query_batches(queries, batch)
    index.search(batches[0], K, params=params)
    times: list[float] = []
    deadline = time.perf_counter() + seconds
    while len(times) < max_calls and (len(times) < min_calls or time.perf_counter() < deadline):
        q = batches[len(times) % len(batches)]
        t0 = time.perf_counter()
        index.search(q, K, params=params)
        times.append(time.perf_counter() - t0)
    return np.array(times)


def _query_batches(queries: np.ndarray, batch: int) -> list[np.ndarray]:
    reps = -(-batch // len(queries))
    pool = np.ascontiguousarray(np.tile(queries, (reps, 1)) if reps > 1 else queries)
    starts = range(0, max(1, len(pool) - batch + 1), batch)
    return [np.ascontiguousarray(pool[s:s + batch]) for s in starts]


def raw_qps(index: Any, queries: np.ndarray, batch: int, **kwargs: Any) -> float:
    """Queries per second of raw faiss at ``batch`` rows per search."""
    times = raw_search_times(index, queries, batch, **kwargs)
    return batch * len(times) / float(times.sum())


# --- the server ---------------------------------------------------------------------------



@dataclass
class Server:
    url: str
    proc: subprocess.Popen[bytes]
    log: Path

    def cpu_seconds(self) -> float | None:
        """The server process's user + system CPU time (Linux), for CPU per request."""
        try:
            fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return None
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def running_server(model_path: Path, settings: ServingSettings, timeout: float = 120.0,
                   launcher: Sequence[str] | None = None) -> Iterator[Server]:
    """``openknn serve`` on a free loopback port until the block ends; always stopped.
    ``launcher`` replaces ``python -m openknn`` (e.g. a script trying a change)."""
    port = process.free_port()
    args = [str(model_path), "--threads", str(settings.threads or all_cpus()),
            "--batch-window-ms", str(settings.batch_window_ms),
            "--max-batch-rows", str(settings.max_batch_rows)]
    log = model_path.parent / f"server-{port}.log"
    proc = process.start(args, port, log, launcher=launcher)
    server = Server(f"http://127.0.0.1:{port}", proc, log)
    try:
        process.wait_ready(server.url, proc, log, timeout)
        yield server
    finally:
        process.stop(proc)


def machine_busy_seconds() -> float | None:
    """CPU seconds all processes have used since boot (Linux ``/proc/stat``), to tell how
    much of a phase's CPU went to other work on the machine."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    except OSError:
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


class OtherCpu:
    """A ``with`` block's share of a core used by other processes (None off Linux)."""

    def __enter__(self) -> OtherCpu:
        self._busy, self._own, self._wall = machine_busy_seconds(), time.process_time(), \
            time.perf_counter()
        self.share: float | None = None
        return self

    def __exit__(self, *exc: object) -> None:
        busy = machine_busy_seconds()
        if busy is not None and self._busy is not None:
            other = busy - self._busy - (time.process_time() - self._own)
            self.share = max(0.0, other) / (time.perf_counter() - self._wall)


METRIC_LINE = re.compile(rb"^(openknn_\w+) ([0-9.eE+-]+|NaN)$", re.M)


def parse_metrics(text: bytes) -> dict[str, float]:
    """Unlabelled Prometheus samples by name (``openknn_batch_rows_sum`` and the like)."""
    return {m[1].decode(): float(m[2]) for m in METRIC_LINE.finditer(text)}


async def scrape(client: httpx.AsyncClient, url: str) -> dict[str, float]:
    response = await client.get(f"{url}/metrics")
    response.raise_for_status()
    return parse_metrics(response.content)


def _delta_mean(before: dict[str, float], after: dict[str, float], name: str) -> float:
    count = after.get(f"{name}_count", 0.0) - before.get(f"{name}_count", 0.0)
    total = after.get(f"{name}_sum", 0.0) - before.get(f"{name}_sum", 0.0)
    return total / count if count > 0 else math.nan


# --- load phases --------------------------------------------------------------------------


@dataclass
class PhaseResult:
    """One load phase as the client saw it, plus the server's own counters."""

    concurrency: int
    latencies_s: np.ndarray
    elapsed_s: float
    errors: int
    mean_batch_rows: float
    server_latency_s: float  # mean, measured inside the server (openknn_request_latency)
    server_cpu_s: float | None
    client_cpu_s: float
    other_cpu_s: float | None  # CPU used by neither the server nor this client (noise)
    lean: bool = False

    @property
    def requests_per_s(self) -> float:
        return len(self.latencies_s) / self.elapsed_s

    def ms(self, q: float) -> float:
        return float(np.percentile(self.latencies_s, q) * 1e3)

    @property
    def mean_ms(self) -> float:
        return float(self.latencies_s.mean() * 1e3)


async def _load(client: httpx.AsyncClient, url: str, bodies: Sequence[bytes],
                headers: dict[str, str], concurrency: int, max_requests: int,
                seconds: float) -> tuple[list[float], int, float]:
    latencies: list[float] = []
    state = {"sent": 0, "errors": 0}
    deadline = time.perf_counter() + seconds
    first_error: list[str] = []

    async def worker() -> None:
        while state["sent"] < max_requests and time.perf_counter() < deadline:
            body = bodies[state["sent"] % len(bodies)]
            state["sent"] += 1
            t0 = time.perf_counter()
            response = await client.post(f"{url}/invocations", content=body, headers=headers)
            elapsed = time.perf_counter() - t0
            if response.status_code == 200:
                latencies.append(elapsed)
            else:
                state["errors"] += 1
                first_error[:] = first_error or [f"{response.status_code} {response.text}"]

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall = time.perf_counter() - t0
    if state["errors"] and not latencies:
        raise RuntimeError(f"every request failed, e.g. {first_error[0]}")
    return latencies, state["errors"], wall


CONTENT_LENGTH = re.compile(rb"(?i)\r\ncontent-length: *(\d+)")


async def _lean_load(url: str, bodies: Sequence[bytes], headers: dict[str, str],
                     concurrency: int, max_requests: int, seconds: float,
                     ) -> tuple[list[float], int, float]:
    """The same loop as :func:`_load` over bare keep-alive asyncio streams (HTTP/1.1 by
    hand): a client that costs far less CPU than httpx, to tell the server's limits from
    the client's on a machine they share."""
    host, port = url.removeprefix("http://").split(":")
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    requests = [(f"POST /invocations HTTP/1.1\r\nHost: {host}:{port}\r\n{head}"
                 f"Content-Length: {len(body)}\r\n\r\n").encode() + body for body in bodies]
    latencies: list[float] = []
    state = {"sent": 0, "errors": 0}
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            while state["sent"] < max_requests and time.perf_counter() < deadline:
                request = requests[state["sent"] % len(requests)]
                state["sent"] += 1
                t0 = time.perf_counter()
                writer.write(request)
                status_head = await reader.readuntil(b"\r\n\r\n")
                found = CONTENT_LENGTH.search(status_head)
                length = int(found[1]) if found else 0
                await reader.readexactly(length)
                elapsed = time.perf_counter() - t0
                if status_head.startswith(b"HTTP/1.1 200"):
                    latencies.append(elapsed)
                else:
                    state["errors"] += 1
        finally:
            writer.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies, state["errors"], time.perf_counter() - t0


async def _phase(server: Server, bodies: Sequence[bytes], headers: dict[str, str],
                 concurrency: int, max_requests: int, seconds: float,
                 warmup: int, lean: bool = False) -> PhaseResult:
    limits = httpx.Limits(max_connections=concurrency + 1,
                          max_keepalive_connections=concurrency + 1)
    async with httpx.AsyncClient(limits=limits, timeout=120.0) as client:
        await _load(client, server.url, bodies, headers, concurrency, warmup, 60.0)
        before = await scrape(client, server.url)
        cpu0, client0, busy0 = server.cpu_seconds(), time.process_time(), \
            machine_busy_seconds()
        if lean:
            latencies, errors, wall = await _lean_load(server.url, bodies, headers,
                                                       concurrency, max_requests, seconds)
        else:
            latencies, errors, wall = await _load(client, server.url, bodies, headers,
                                                  concurrency, max_requests, seconds)
        cpu1, client1, busy1 = server.cpu_seconds(), time.process_time(), \
            machine_busy_seconds()
        after = await scrape(client, server.url)
    server_cpu = None if cpu0 is None or cpu1 is None else cpu1 - cpu0
    other = None if server_cpu is None or busy0 is None or busy1 is None else max(
        0.0, busy1 - busy0 - server_cpu - (client1 - client0))
    return PhaseResult(
        concurrency, np.array(latencies), wall, errors,
        _delta_mean(before, after, "openknn_batch_rows"),
        _delta_mean(before, after, "openknn_request_latency_seconds"),
        server_cpu, client1 - client0, other, lean)


def endpoint_phase(server: Server, bodies: Sequence[bytes], headers: dict[str, str],
                   concurrency: int, max_requests: int, seconds: float,
                   warmup: int | None = None, lean: bool = False) -> PhaseResult:
    """Run ``concurrency`` request loops over ``bodies`` (one keep-alive httpx client, or
    bare asyncio streams when ``lean``) until ``max_requests`` or ``seconds``, after
    ``warmup`` untimed requests (default 2 per loop)."""
    warm = 2 * concurrency if warmup is None else warmup
    return asyncio.run(_phase(server, bodies, headers, concurrency, max_requests, seconds,
                              warm, lean))


def json_bodies(queries: np.ndarray) -> list[bytes]:
    """One single-row ``{"instances": [{"features": [...]}]}`` body per query row."""
    return [orjson.dumps({"instances": [{"features": row}]})
            for row in np.round(queries.astype(np.float64), 4).tolist()]


def csv_body(queries: np.ndarray) -> tuple[bytes, np.ndarray]:
    """A CSV body of the rows, and the float32 rows the server will parse from it."""
    text = io.StringIO()
    np.savetxt(text, queries, fmt="%.4f", delimiter=",")
    body = text.getvalue().encode()
    parsed = np.loadtxt(io.StringIO(text.getvalue()), delimiter=",", dtype=np.float32)
    return body, np.ascontiguousarray(parsed.reshape(-1, queries.shape[1]))


# --- the four sections --------------------------------------------------------------------


@dataclass
class Row:
    """One compared figure: openknn's value, the baseline's, their ratio, and the target."""

    figure: str
    value: float
    baseline: float | None
    unit: str
    target: str = ""
    met: bool | None = None
    note: str = ""

    @property
    def ratio(self) -> float | None:
        return None if self.baseline in (None, 0) else self.value / self.baseline


def bench_raw(index: Any, queries: np.ndarray, cfg: BenchConfig,
              batches: Sequence[int] = RAW_BATCHES) -> dict[int, np.ndarray]:
    """(a) Seconds per search for each batch size."""
    return {b: raw_search_times(index, queries, b, seconds=cfg.raw_seconds,
                                max_calls=cfg.raw_calls) for b in batches}


def bench_endpoint(server: Server, index: Any, queries: np.ndarray, cfg: BenchConfig,
                   ) -> list[tuple[PhaseResult, int, float, float | None]]:
    """(b) Each concurrency's phase, the formed batch size (int >= 1), raw faiss q/s at
    that size measured right after the phase, and other processes' CPU share meanwhile.
    With ``cfg.lean_check`` the highest concurrency runs again with the lean client
    (:func:`_lean_load`), to show the server's own limit where the httpx client's CPU use
    is what bounds the figure."""
    bodies = json_bodies(queries)
    out = []
    runs = [(c, False) for c in cfg.concurrencies]
    if cfg.lean_check:
        runs.append((max(cfg.concurrencies), True))
    for conc, lean in runs:
        phase = endpoint_phase(server, bodies, JSON_HEADERS, conc, cfg.max_requests,
                               cfg.seconds, lean=lean)
        batch = max(1, round(phase.mean_batch_rows)) if not math.isnan(
            phase.mean_batch_rows) else 1
        with OtherCpu() as other:
            qps = raw_qps(index, queries, batch, seconds=cfg.raw_seconds,
                          max_calls=cfg.raw_calls)
        out.append((phase, batch, qps, other.share))
    return out


def bench_batch_csv(server: Server, index: Any, cfg: BenchConfig, rows: int = CSV_ROWS,
                    ) -> tuple[PhaseResult, np.ndarray, int, float | None]:
    """(c) ``csv_requests`` requests of ``rows`` rows at concurrency 1, the raw search
    times of the same rows (same count), the body size, and other processes' CPU share
    during the raw searches."""
    body, parsed = csv_body(make_queries(rows, seed=cfg.seed + 2))
    phase = endpoint_phase(server, [body], CSV_HEADERS, 1, cfg.csv_requests, 1e9, warmup=2)
    with OtherCpu() as other:
        raw = raw_search_times(index, parsed, rows, seconds=1e9, max_calls=cfg.csv_requests,
                               min_calls=cfg.csv_requests)
    return phase, raw, len(body), other.share


def bench_ivf(server: Server, index: Any, queries: np.ndarray, cfg: BenchConfig,
              ) -> tuple[PhaseResult, np.ndarray, float | None]:
    """(d) Single-row requests at concurrency 1 on the IVF model, raw single-query search
    times (nprobe 5) on the same index, and other processes' CPU share during those."""
    phase = endpoint_phase(server, json_bodies(queries), JSON_HEADERS, 1, cfg.max_requests,
                           cfg.seconds)
    with OtherCpu() as other:
        raw = raw_search_times(index, queries, 1, seconds=cfg.raw_seconds,
                               max_calls=cfg.raw_calls, nprobe=5)
    return phase, raw, other.share


# --- the run and its report ---------------------------------------------------------------


def run(cfg: BenchConfig, out: Any = sys.stdout) -> dict[str, Any]:
    """Every section, printed as it finishes; returns the measured figures."""
    def say(*lines: str) -> None:
        print(*lines, sep="\n", file=out, flush=True)

    faiss.omp_set_num_threads(cfg.threads)
    settings = cfg.server_settings()
    say(f"machine: os.cpu_count()={os.cpu_count()} (usable {all_cpus()}); faiss "
        f"{faiss.__version__}, numpy {np.__version__}, Python {sys.version.split()[0]}",
        f"server: openknn serve --threads {cfg.threads}, batch window "
        f"{settings.batch_window_ms:g} ms, max batch rows {settings.max_batch_rows}; "
        f"client: httpx AsyncClient in this process; raw faiss: omp_set_num_threads("
        f"{cfg.threads}), k={K}",
        f"data: {cfg.rows:,} x {DIM} float32 (seeded standard normal), {CLASSES} classes; "
        f"phases capped at {cfg.max_requests} requests or {cfg.seconds:g} s",
        f"load average at start: {_loadavg()}", "")
    x, y = make_data(cfg.rows, cfg.seed)
    queries = make_queries(1024, cfg.seed + 1)
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-serving-") as tmp:
        t0 = time.perf_counter()
        flat = build_model(x, y, "faiss.Flat")
        flat_path = write_model(flat, Path(tmp) / "flat")
        say(f"Flat model built and written in {time.perf_counter() - t0:.1f} s "
            f"({flat_path.stat().st_size / 2**20:.0f} MiB)")

        with OtherCpu() as other:
            results["raw"] = raw = bench_raw(flat.index, queries, cfg)
        say("", *section_a(raw), _other_line("raw faiss measurements", other.share))
        with running_server(flat_path, settings) as server:
            results["endpoint"] = phases = bench_endpoint(server, flat.index, queries, cfg)
            say("", *section_b(phases))
            results["csv"] = csv = bench_batch_csv(server, flat.index, cfg)
            say("", *section_c(*csv))
        del flat

        t0 = time.perf_counter()
        ivf = build_model(x, y, "faiss.IVFFlat")
        ivf_path = write_model(ivf, Path(tmp) / "ivf")
        say("", f"IVFFlat model (nlist {ivf_nlist(cfg.rows)}) built and written in "
            f"{time.perf_counter() - t0:.1f} s")
        with running_server(ivf_path, settings) as server:
            results["ivf"] = ivf_res = bench_ivf(server, ivf.index, queries, cfg)
            say("", *section_d(*ivf_res, nlist=ivf_nlist(cfg.rows)))
    say("", f"load average at end: {_loadavg()}")
    return results


def _loadavg() -> str:
    try:
        return " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "-"


def _num(v: float | None, digits: int = 1) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{v:,.{digits}f}"


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """Rows under a header, the first column left-aligned and the others right-aligned."""
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows)]

    def line(cells: Sequence[str]) -> str:
        return " | ".join(str(c).rjust(w) if i else str(c).ljust(w)
                          for i, (c, w) in enumerate(zip(cells, widths)))

    return [line(header), "-+-".join("-" * w for w in widths), *map(line, rows)]


def _met(ok: bool | None) -> str:
    return "" if ok is None else ("met" if ok else "NOT met")


def section_a(raw: dict[int, np.ndarray]) -> list[str]:
    one = 1 / float(raw[min(raw)].mean())
    rows = []
    for batch, times in raw.items():
        qps = batch / float(times.mean())
        rows.append([f"batch {batch}", _num(qps), _num(times.mean() * 1e3, 2),
                     str(len(times)), f"{qps / one:.2f}x"])
    return ["(a) raw faiss, Flat, in process",
            *table(["figure", "queries/s", "ms/search", "searches", "vs batch 1"], rows)]


def _other_line(what: str, share: float | None) -> str:
    text = "-" if share is None else f"{share * 100:.0f}%"
    noisy = share is not None and share > NOISY_OTHER_CPU
    return f"other processes' CPU during the {what}: {text}" + (
        f" (over {NOISY_OTHER_CPU:.0%} of a core: shared machine, rerun)" if noisy else "")


def _pct(seconds: float | None, phase: PhaseResult) -> str:
    return "-" if seconds is None else f"{seconds / phase.elapsed_s * 100:.0f}%"


def _noisy(phase: PhaseResult) -> bool:
    return phase.other_cpu_s is not None and \
        phase.other_cpu_s / phase.elapsed_s > NOISY_OTHER_CPU


NOISE_NOTE = (f"* other processes used over {NOISY_OTHER_CPU:.0%} of a core during this "
              "phase: the machine was shared, rerun for a clean figure")


def section_b(phases: list[tuple[PhaseResult, int, float, float | None]]) -> list[str]:
    rows = []
    for phase, batch, qps, raw_other in phases:
        raw_noisy = raw_other is not None and raw_other > NOISY_OTHER_CPU
        ratio = phase.requests_per_s / qps
        target = f">= {TARGET_RATIO_C32}" if phase.concurrency == 32 else ""
        cpu = "-" if phase.server_cpu_s is None else \
            f"{phase.server_cpu_s / len(phase.latencies_s) * 1e3:.2f}"
        client = "lean" if phase.lean else "httpx"
        rows.append([
            f"c={phase.concurrency} {client}", _num(phase.requests_per_s),
            _num(phase.ms(50), 2), _num(phase.ms(90), 2), _num(phase.ms(99), 2),
            _num(phase.server_latency_s * 1e3, 2), _num(phase.mean_batch_rows, 2),
            f"{_num(qps)} @{batch}" + (" *" if raw_noisy else ""), f"{ratio:.3f}", target,
            _met(ratio >= TARGET_RATIO_C32) if target else "",
            f"{len(phase.latencies_s)}/{phase.errors}", cpu,
            _pct(phase.client_cpu_s, phase),
            _pct(phase.other_cpu_s, phase) + (" *" if _noisy(phase) else "")])
    sm = SAGEMAKER_FLAT
    return ["(b) endpoint, Flat, single-row application/json (Accept application/json); "
            "ratio = req/s over raw faiss q/s at the mean batch the server formed",
            *table(["figure", "req/s", "p50 ms", "p90 ms", "p99 ms", "in-server ms",
                    "mean batch", "raw q/s @batch", "ratio", "target", "", "ok/err",
                    "server CPU ms/req", "client CPU", "other CPU"], rows),
            "client CPU / other CPU: this process's / every other process's CPU time over the "
            "phase's wall time (100% = one core); 'lean' = bare asyncio HTTP/1.1 client, a "
            "cross-check of the server's own limit",
            f"context: SageMaker flat_l2 (200k, k=100) ml.c5.xlarge single-row mean "
            f"{sm['mean']} / p90 {sm['p90']} / p99 {sm['p99']} ms (docs/decisions.md, decision 34)",
            *([NOISE_NOTE] if any(_noisy(p) or (o or 0) > NOISY_OTHER_CPU
                                  for p, _, _, o in phases) else [])]


def section_c(phase: PhaseResult, raw: np.ndarray, body_bytes: int,
              raw_other: float | None = None) -> list[str]:
    raw_mean, raw_p50 = float(raw.mean() * 1e3), float(np.median(raw) * 1e3)
    mean_ratio = phase.mean_ms / raw_mean
    rows = [["581-row CSV mean ms", _num(phase.mean_ms, 2), _num(raw_mean, 2),
             f"{mean_ratio:.2f}", f"<= {TARGET_BATCH_RATIO}",
             _met(mean_ratio <= TARGET_BATCH_RATIO), _num(SAGEMAKER_FLAT["batch581"])],
            ["581-row CSV p50 ms", _num(phase.ms(50), 2), _num(raw_p50, 2),
             f"{phase.ms(50) / raw_p50:.2f}", "", "", ""],
            ["in-server mean ms", _num(phase.server_latency_s * 1e3, 2), _num(raw_mean, 2),
             f"{phase.server_latency_s * 1e3 / raw_mean:.2f}", "", "", ""]]
    return [f"(c) endpoint, Flat, one {CSV_ROWS}-row text/csv request ({body_bytes / 1024:.0f}"
            f" KiB) at concurrency 1, {len(phase.latencies_s)} requests; baseline: raw "
            f"faiss search of the same rows, {len(raw)} searches",
            *table(["figure", "openknn", "raw faiss", "ratio", "target", "",
                    "SageMaker c5.xlarge"], rows),
            f"other processes' CPU during the endpoint phase: {_pct(phase.other_cpu_s, phase)}",
            *([NOISE_NOTE] if _noisy(phase) else []),
            _other_line("raw searches", raw_other)]


def section_d(phase: PhaseResult, raw: np.ndarray, raw_other: float | None = None, *,
              nlist: int) -> list[str]:
    raw_ms = {q: float(np.percentile(raw, q) * 1e3) for q in (50, 90, 99)}
    sm = SAGEMAKER_IVFPQ
    rows = [["single-row p50 ms", _num(phase.ms(50), 2), _num(raw_ms[50], 3),
             f"{phase.ms(50) / raw_ms[50]:.1f}", f"<= {TARGET_IVF_P50_MS} ms",
             _met(phase.ms(50) <= TARGET_IVF_P50_MS), f"mean {sm['mean']}"],
            ["single-row p90 ms", _num(phase.ms(90), 2), _num(raw_ms[90], 3),
             f"{phase.ms(90) / raw_ms[90]:.1f}", "", "", str(sm["p90"])],
            ["single-row p99 ms", _num(phase.ms(99), 2), _num(raw_ms[99], 3),
             f"{phase.ms(99) / raw_ms[99]:.1f}", "", "", str(sm["p99"])],
            ["in-server mean ms", _num(phase.server_latency_s * 1e3, 2),
             _num(float(raw.mean() * 1e3), 3), "", "", "", ""],
            ["req/s", _num(phase.requests_per_s), _num(1 / float(raw.mean())), "", "", "", ""]]
    return [f"(d) endpoint, IVFFlat (nlist {nlist}, nprobe 5), single-row application/json "
            f"at concurrency 1, {len(phase.latencies_s)} requests; baseline: raw faiss "
            f"single-query search, nprobe 5, {len(raw)} searches",
            *table(["figure", "openknn", "raw faiss", "ratio", "target", "",
                    "SageMaker ivfpq_l2 c5.xlarge"], rows),
            f"other processes' CPU during the endpoint phase: {_pct(phase.other_cpu_s, phase)}"
            f"; client CPU {_pct(phase.client_cpu_s, phase)}",
            *([NOISE_NOTE] if _noisy(phase) else []),
            _other_line("raw searches", raw_other)]


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=None, help="indexed rows (200000; "
                        "--quick: 20000)")
    parser.add_argument("--threads", type=int, default=None,
                        help="faiss threads, server and raw (default: all CPUs)")
    parser.add_argument("--seconds", type=float, default=None,
                        help="cap per endpoint phase in seconds (8; --quick: 1.5)")
    parser.add_argument("--max-requests", type=int, default=None,
                        help="cap per endpoint phase in requests (3000; --quick: 300)")
    parser.add_argument("--batch-window-ms", type=float, default=None,
                        help="the server's --batch-window-ms (default: the server's)")
    parser.add_argument("--max-batch-rows", type=int, default=None,
                        help="the server's --max-batch-rows (default: the server's)")
    parser.add_argument("--quick", action="store_true", help="a small, fast run")
    args = parser.parse_args(argv)
    changes = {"rows": args.rows, "threads": args.threads, "seconds": args.seconds,
               "max_requests": args.max_requests, "batch_window_ms": args.batch_window_ms,
               "max_batch_rows": args.max_batch_rows}
    # SIGTERM runs the finally blocks too, so the server subprocess never outlives us
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    if args.quick:
        cfg = BenchConfig.quick(**changes)
    else:
        cfg = replace(BenchConfig(), **{k: v for k, v in changes.items() if v is not None})
    return run(cfg)


if __name__ == "__main__":
    main()
