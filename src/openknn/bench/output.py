"""The written side of ``openknn bench``: report.md, the PNG plots (matplotlib, Agg, imported
only here and only when called) and the printed summary, all from one run's measurements."""

from __future__ import annotations

import datetime
import math
import os
import platform
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from ..core.gpu import visible
from ..errors import MissingExtraError
from .measure import (
    NO_GPU,
    Baseline,
    BenchResult,
    CovtypeReport,
    CovtypeResult,
    FashionReport,
    FashionResult,
    Latency,
    Pass,
)

NA = "n/a"
ACCURACY_PNG, LATENCY_PNG, CURVES_PNG = "accuracy_vs_k.png", "latency.png", "recall_vs_qps.png"
REPORT_MD = "report.md"
SPEC = "docs/decisions.md, decision 34"
# SageMaker's published Part 2 figures (ml.c5.xlarge, 2018, UCI covtype, decision 34): context in
# report.md only, never drawn in the plots.
PUBLISHED = (("flat_l2", "95.0", "93.8", "92.2", "162.5", "15.1", "17.2", "21.2"),
             ("ivfpq_l2", "90.8", "90.5", "89.8", "57.9", "7.3", "8.1", "11.6"),
             ("flat_l2_large", "96.5", "96.9", "96.2", "357.6", "24.8", "28.3", "34.1"),
             ("ivfpq_l2_large", "93.3", "93.7", "93.4", "65.2", "8.1", "9.5", "16.2"))


# ---------------------------------------------------------------- numbers as text


def num(value: float | None, digits: int = 1) -> str:
    if value is None or not math.isfinite(value):
        return NA
    return f"{value:,.{digits}f}"


def pct(value: float | None) -> str:
    return NA if value is None else num(100 * value, 1)


def md_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """A Markdown table; an empty cell is written as n/a, never left blank."""
    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(c.strip() or NA for c in cells) + " |"
    return [line(header), "|" + "|".join("---" for _ in header) + "|", *map(line, rows), ""]


def text_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """Columns padded to width, the first left-aligned, the rest right-aligned."""
    widths = [max(len(c) for c in col) for col in zip(header, *rows)]

    def line(cells: Sequence[str]) -> str:
        return " | ".join(c.rjust(w) if i else c.ljust(w)
                          for i, (c, w) in enumerate(zip(cells, widths)))
    return [line(header), "-+-".join("-" * w for w in widths), *map(line, rows)]


def both(a: str, b: str) -> str:
    return f"{a} / {b}"


# ---------------------------------------------------------------- the machine


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_gib() -> str:
    try:
        return f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB"
    except (ValueError, OSError, AttributeError):
        return "unknown"


def _version(module: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(module)
    except PackageNotFoundError:
        return "not installed"


def machine(threads: int) -> str:
    gpu = f"{visible()} GPU(s) visible to faiss" if visible() else NO_GPU
    return (f"{_cpu_model()}; {os.cpu_count()} CPUs ({threads} faiss threads for the server "
            f"and for raw faiss); {_memory_gib()} RAM; {platform.system()} "
            f"{platform.release()}; Python {platform.python_version()}, faiss "
            f"{faiss.__version__}, numpy {np.__version__}, scikit-learn "
            f"{_version('scikit-learn')}, httpx {_version('httpx')}; {gpu}")


# ---------------------------------------------------------------- covtype tables


def _sample(r: CovtypeResult) -> str:
    return f"{r.trained.spec.sample_size:,} → {r.trained.model.meta.num_points:,}"


def covtype_models_table(rep: CovtypeReport) -> list[str]:
    rows = []
    for r in rep.results:
        meta = r.trained.model.meta
        rows.append([r.trained.spec.name, r.trained.spec.index_type, _sample(r),
                     str(meta.faiss_index_ivf_nlists or "none"),
                     str(meta.faiss_index_pq_m or "none"), r.trained.knob,
                     num(r.recall, 4), f"{r.trained.index_bytes:,}",
                     num(r.trained.train_s, 2), pct(r.trained.job_accuracy),
                     "yes" if r.agrees else "NO"])
    for b in rep.baselines:
        rows.append([b.name, "brute force", f"{b.points:,}", "none", "none", "exact",
                     "reference", f"{b.data_bytes:,}", num(b.fit_s, 2), "no training job",
                     "reference"])
    return md_table(["model", "index", "sample_size → points", "nlist", "pq_m",
                     "search knob", "recall@10 vs exact", "index bytes", "training s",
                     f"job test accuracy % (k={_k(rep)})", "endpoint = in-process"], rows)


def _k(rep: CovtypeReport) -> int:
    return int(rep.results[0].trained.model.meta.k) if rep.results else 0


def covtype_accuracy_table(rep: CovtypeReport, max_k: int) -> list[str]:
    rows = [[r.trained.spec.name, "endpoint (verbose labels)", *map(pct, r.accuracy)]
            for r in rep.results]
    rows += [[b.name, "scikit-learn", *map(pct, b.accuracy)] for b in rep.baselines]
    return md_table(["model", "answered by", *[f"k={k}" for k in range(1, max_k + 1)]], rows)


def _latency_cells(lat: Latency | str) -> list[str]:
    if isinstance(lat, str):
        return [lat, NA, NA, NA, NA]
    return [num(lat.batch_ms, 2), num(lat.mean_ms, 2), num(lat.p90_ms, 2), num(lat.p99_ms, 2),
            num(lat.qps, 0)]


def covtype_latency_table(rep: CovtypeReport) -> list[str]:
    rows = []
    for r in rep.results:
        name = r.trained.spec.name
        rows += [[name, "endpoint (HTTP, loopback)", *_latency_cells(r.endpoint)],
                 [name, "raw faiss, CPU, in process", *_latency_cells(r.raw)],
                 [name, "endpoint on GPU (HTTP, loopback)", *_latency_cells(r.gpu_endpoint)],
                 [name, "raw faiss, GPU", *_latency_cells(r.gpu)]]
    rows += [[b.name, "scikit-learn predict", *_latency_cells(b.latency)]
             for b in rep.baselines]
    rows_581 = rep.results[0].endpoint.batch_rows if rep.results else 0
    return md_table(["model", "path", f"batch {rows_581} rows ms", "single mean ms",
                     "single p90 ms", "single p99 ms", f"queries/s @{rows_581}"], rows)


def published_table() -> list[str]:
    return md_table(["endpoint (ml.c5.xlarge)", "acc k=1 %", "acc k=5 %", "acc k=10 %",
                     "batch 581 ms", "single mean ms", "single p90 ms", "single p99 ms"],
                    [list(row) for row in PUBLISHED])


# ---------------------------------------------------------------- Fashion-MNIST tables


def _pass_cells(p: Pass | str) -> list[str]:
    if isinstance(p, str):
        return [p, NA, NA]
    return [num(p.recall, 4), num(p.qps, 0), pct(p.accuracy)]


def fashion_table(rep: FashionReport) -> list[str]:
    rows = []
    for r in rep.results:
        t = r.trained
        info = [f"{t.index_bytes:,}", num(t.train_s, 2)]
        rows += [[t.spec.name, "endpoint (HTTP, loopback)", t.knob, *_pass_cells(r.endpoint),
                  *info],
                 [t.spec.name, "raw faiss, CPU, in process", t.knob, *_pass_cells(r.raw), *info],
                 [t.spec.name, "raw faiss, GPU", t.knob, *_pass_cells(r.gpu), *info]]
    b = rep.baseline
    rows.append(["scikit-learn brute", "KNeighborsClassifier.kneighbors", "exact",
                 *_pass_cells(b.pass_), f"{b.data_bytes:,}", num(b.fit_s, 2)])
    return md_table(["model", "path", "search knob", "recall@10", "queries/s",
                     "accuracy % (k=10)", "index bytes", "training s"], rows)


def curve_table(rep: FashionReport) -> list[str]:
    rows = []
    for r in rep.results:
        for p in r.curve:
            rows.append([r.trained.spec.name, f"{r.knob}={p.value}", num(p.endpoint.recall, 4),
                         num(p.endpoint.qps, 0), num(p.raw.recall, 4), num(p.raw.qps, 0)])
    return md_table(["model", "knob", "recall@10 endpoint", "queries/s endpoint",
                     "recall@10 raw faiss", "queries/s raw faiss"], rows)


# ---------------------------------------------------------------- plots


def pyplot() -> Any:
    """matplotlib.pyplot on the Agg backend, imported on first use."""
    try:
        import matplotlib
    except ImportError:
        raise MissingExtraError("openknn bench's plots", "dev", "matplotlib") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


STYLES = (("o", "-", 9), ("s", "--", 8), ("^", "-.", 7), ("v", ":", 6), ("D", "-", 5),
          ("x", "--", 4))  # marker, line, size: identical curves stay visible on each other


def _plain_log_axis(axis: Any) -> None:
    """A log axis labelled 20, 50, 100 rather than 2 x 10^1."""
    from matplotlib.ticker import FuncFormatter

    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(FuncFormatter(lambda v, _: ""))


def _save(fig: Any, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    pyplot().close(fig)


def _message(path: Path, title: str, text: str) -> None:
    fig, ax = pyplot().subplots(figsize=(7, 3))
    ax.set_axis_off()
    ax.set_title(title)
    ax.text(0.5, 0.5, text, ha="center", va="center", wrap=True)
    _save(fig, path)


def plot_accuracy(rep: CovtypeReport | str, path: Path) -> None:
    if isinstance(rep, str):
        return _message(path, "covtype accuracy vs k", rep)
    fig, ax = pyplot().subplots(figsize=(8, 5))
    for i, r in enumerate(rep.results):
        marker, line, size = STYLES[i % len(STYLES)]
        ks = range(1, len(r.accuracy) + 1)
        ax.plot(ks, [100 * a for a in r.accuracy], marker=marker, linestyle=line,
                markersize=size, label=r.trained.spec.name)
    for i, b in enumerate(rep.baselines):
        ks = range(1, len(b.accuracy) + 1)
        ax.plot(ks, [100 * a for a in b.accuracy], linestyle=(0, (4, 2 + 2 * i)),
                color="black", alpha=0.7, label=b.name)
    ax.set(xlabel="k (vote over the first k of the verbose labels)", ylabel="accuracy %",
           title=f"covtype accuracy vs k ({len(rep.data.test_y):,} test rows)")
    ax.set_xticks(list(range(1, len(rep.results[0].accuracy) + 1)))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    _save(fig, path)


def _bars(ax: Any, names: Sequence[str], series: dict[str, list[float | None]],
          ylabel: str) -> None:
    width = 0.8 / max(1, len(series))
    for i, (label, values) in enumerate(series.items()):
        xs = [j + i * width for j, v in enumerate(values) if v is not None]
        ax.bar(xs, [v for v in values if v is not None], width, label=label)
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(names))], names, rotation=30,
                  ha="right", fontsize=8)
    ax.set_yscale("log")
    _plain_log_axis(ax.yaxis)
    ax.set_ylabel(ylabel)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)


def _lat(lat: Latency | str, attr: str) -> float | None:
    return None if isinstance(lat, str) else float(getattr(lat, attr))


def plot_latency(rep: CovtypeReport | str, path: Path) -> None:
    if isinstance(rep, str):
        return _message(path, "covtype latency", rep)
    names = [r.trained.spec.name for r in rep.results] + [b.name for b in rep.baselines]
    fig, axes = pyplot().subplots(1, 2, figsize=(13, 5))
    for ax, attr, title in ((axes[0], "batch_ms", "batch of {rows} rows, mean ms"),
                            (axes[1], "mean_ms", "single row, mean ms")):
        none: list[float | None] = [None] * len(rep.baselines)
        series = {"endpoint (HTTP)": [_lat(r.endpoint, attr) for r in rep.results] + none,
                  "raw faiss CPU": [_lat(r.raw, attr) for r in rep.results] + none,
                  "scikit-learn": [None] * len(rep.results)
                  + [_lat(b.latency, attr) for b in rep.baselines]}
        for label, gpu in (("endpoint GPU", [_lat(r.gpu_endpoint, attr) for r in rep.results]),
                           ("raw faiss GPU", [_lat(r.gpu, attr) for r in rep.results])):
            if any(v is not None for v in gpu):
                series[label] = gpu + none
        _bars(ax, names, series, "ms (log scale)")
        ax.set_title(title.format(rows=rep.results[0].endpoint.batch_rows))
    _save(fig, path)


def plot_curves(rep: FashionReport | str, path: Path) -> None:
    if isinstance(rep, str):
        return _message(path, "recall vs queries/s", rep)
    fig, ax = pyplot().subplots(figsize=(8, 5.5))
    for i, r in enumerate(rep.results):
        name, color = r.trained.spec.name, f"C{i}"  # one colour per model, both paths
        if r.curve:
            ax.plot([p.endpoint.recall for p in r.curve], [p.endpoint.qps for p in r.curve],
                    marker="o", color=color, label=f"{name} endpoint ({r.knob})")
            ax.plot([p.raw.recall for p in r.curve], [p.raw.qps for p in r.curve], marker="x",
                    linestyle="--", color=color, label=f"{name} raw faiss")
        else:
            ax.scatter([r.endpoint.recall], [r.endpoint.qps], marker="o", s=60, color=color,
                       label=f"{name} endpoint")
            ax.scatter([r.raw.recall], [r.raw.qps], marker="x", s=60, color=color,
                       label=f"{name} raw faiss")
    b = rep.baseline.pass_
    ax.scatter([b.recall], [b.qps], marker="*", s=120, color="black",
               label="scikit-learn brute")
    ax.set_yscale("log")
    _plain_log_axis(ax.yaxis)
    ax.set(xlabel="recall@10", ylabel="queries/s (log scale)",
           title=f"Fashion-MNIST recall vs queries/s ({len(rep.data.base):,} base, "
                 f"{len(rep.data.queries):,} queries)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    _save(fig, path)


# ---------------------------------------------------------------- report.md and summary


def _figure(number: int, name: str, what: str, command: str) -> list[str]:
    return [f"![{what}]({name})", "",
            f"*Figure {number}: `{name}`, {what}; made by `{command}`.*", ""]


def covtype_section(res: BenchResult) -> list[str]:
    rep = res.covtype
    head = ["## covtype: the tutorial's Part 2 model set", ""]
    if isinstance(rep, str):
        return [*head, f"Skipped: {rep}.", ""]
    return [*head, *[f"- {note}" for note in rep.data.notes], "",
            "### Models", "", *covtype_models_table(rep),
            "### Accuracy % by k (vote over the first k verbose labels, ties to the "
            "smallest label)", "", *covtype_accuracy_table(rep, res.cfg.max_k),
            *_figure(1, ACCURACY_PNG, "covtype accuracy vs k per model", res.command),
            "### Latency", "", *covtype_latency_table(rep),
            *_figure(2, LATENCY_PNG, "latency per model, endpoint vs raw faiss",
                     res.command),
            f"### SageMaker's published Part 2 figures ({SPEC}; UCI covtype, 58,102 "
            "test rows, for context only)", "", *published_table()]


def fashion_section(res: BenchResult) -> list[str]:
    rep = res.fashion
    head = ["## Fashion-MNIST: recall@10 and queries/s", ""]
    if isinstance(rep, str):
        return [*head, f"Skipped: {rep}.", "",
                *_figure(3, CURVES_PNG, "recall vs queries/s (no data)", res.command)]
    return [*head, *[f"- {note}" for note in rep.data.notes],
            "- models are labelled by base row id, so the verbose labels of the endpoint are "
            "neighbour ids (as SageMaker's retrieval notebook does); accuracy is the vote "
            "of those ids' classes", "", *fashion_table(rep),
            "### Recall vs queries/s over the search knob (per-request `nprobe=` / "
            "`ef_search=` Content-Type parameter through the endpoint; the same value in "
            "raw faiss)", "", *curve_table(rep),
            *_figure(3, CURVES_PNG, "recall@10 vs queries/s over nprobe / efSearch",
                     res.command)]


def method_notes(res: BenchResult) -> list[str]:
    cfg = res.cfg
    mode = "quick (subsampled)" if cfg.quick else "full"
    return [f"- mode: {mode}; {cfg.batch_requests} batch requests of {cfg.batch_rows} rows "
            f"and {cfg.single_requests:,} single-row requests per covtype model",
            "- endpoint times are HTTP round trips of one keep-alive httpx client in this "
            "process to a real `openknn serve` subprocess on 127.0.0.1 (CSV in, JSON out; "
            "request encoding and response parsing not timed; one warm-up request first); "
            "client and server share the CPUs",
            "- raw faiss: `index.search` on the same index in this process, the queries "
            "already prepared, at the model's search knob and k",
            f"- scikit-learn: `KNeighborsClassifier(algorithm='brute')` on the same points, "
            f"{cfg.sklearn_batches} batches and {cfg.sklearn_single} single rows timed",
            "- training s: the training job's sampling and index building (covtype), or "
            "the index step with recall tuning (Fashion-MNIST); test scoring excluded",
            "- models are trained and the endpoint rows served on the CPU (`_num_gpus=0`, "
            "`--gpus 0`); GPU rows: "
            + (NO_GPU if not visible()
             else "the same models served with `--gpus 1`, and raw faiss on GPU 0"),
            ""]


def report_markdown(res: BenchResult) -> str:
    lines = ["# openknn bench report", "",
             f"- command: `{res.command}`",
             f"- date: {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}",
             f"- run time: {res.seconds:.0f} s",
             f"- load average (1 min) at start / end: {res.load_average} (above the "
             f"{res.cfg.threads} threads used, other processes shared the CPUs)",
             f"- machine: {machine(res.cfg.threads)}", "",
             "## How it was measured", "", *method_notes(res),
             *covtype_section(res), *fashion_section(res)]
    return "\n".join(lines).rstrip() + "\n"


def summary(res: BenchResult) -> str:
    lines = [f"openknn bench summary ({'quick' if res.cfg.quick else 'full'} run, "
             f"{res.seconds:.0f} s, {res.cfg.threads} threads, load average at start / end "
             f"{res.load_average})"]
    if isinstance(res.covtype, CovtypeReport):
        lines += ["", f"covtype ({len(res.covtype.data.test_y):,} test rows)",
                  *text_table(["model", "points", "acc% k=1", "acc% k=5", "acc% k=10",
                               "recall@10", "batch ms endpoint / faiss",
                               "single p99 ms endpoint / faiss", "index MiB", "train s"],
                              [*map(_covtype_line, res.covtype.results),
                               *map(_baseline_line, res.covtype.baselines)])]
    else:
        lines += ["", f"covtype skipped: {res.covtype}"]
    if isinstance(res.fashion, FashionReport):
        lines += ["", f"Fashion-MNIST ({len(res.fashion.data.base):,} base, "
                  f"{len(res.fashion.data.queries):,} queries)",
                  *text_table(["model", "knob", "recall@10 endpoint / faiss",
                               "q/s endpoint / faiss", "acc% k=10", "index MiB", "train s"],
                              [*map(_fashion_line, res.fashion.results),
                               _fashion_baseline_line(res.fashion)])]
    else:
        lines += ["", f"Fashion-MNIST skipped: {res.fashion}"]
    return "\n".join(lines)


def _mib(n: int) -> str:
    return num(n / 2**20, 2)


def _covtype_line(r: CovtypeResult) -> list[str]:
    acc = r.accuracy
    return [r.trained.spec.name, f"{r.trained.model.meta.num_points:,}", pct(acc[0]),
            pct(acc[4]), pct(acc[9]), num(r.recall, 4),
            both(num(r.endpoint.batch_ms, 2), num(r.raw.batch_ms, 2)),
            both(num(r.endpoint.p99_ms, 2), num(r.raw.p99_ms, 2)),
            _mib(r.trained.index_bytes), num(r.trained.train_s, 2)]


def _baseline_line(b: Baseline) -> list[str]:
    return [b.name, f"{b.points:,}", pct(b.accuracy[0]), pct(b.accuracy[4]),
            pct(b.accuracy[9]), "1.0000", num(b.latency.batch_ms, 2) + " (sklearn)",
            num(b.latency.p99_ms, 2) + " (sklearn)", _mib(b.data_bytes), num(b.fit_s, 2)]


def _fashion_line(r: FashionResult) -> list[str]:
    return [r.trained.spec.name, r.trained.knob,
            both(num(r.endpoint.recall, 4), num(r.raw.recall, 4)),
            both(num(r.endpoint.qps, 0), num(r.raw.qps, 0)), pct(r.endpoint.accuracy),
            _mib(r.trained.index_bytes), num(r.trained.train_s, 2)]


def _fashion_baseline_line(rep: FashionReport) -> list[str]:
    b = rep.baseline
    return ["scikit-learn brute", "exact", num(b.pass_.recall, 4) + " (sklearn)",
            num(b.pass_.qps, 0) + " (sklearn)", pct(b.pass_.accuracy), _mib(b.data_bytes),
            num(b.fit_s, 2)]


def write(res: BenchResult, output: Path) -> str:
    """report.md and the three PNGs into ``output``; the summary text."""
    plot_accuracy(res.covtype, output / ACCURACY_PNG)
    plot_latency(res.covtype, output / LATENCY_PNG)
    plot_curves(res.fashion, output / CURVES_PNG)
    (output / REPORT_MD).write_text(report_markdown(res), encoding="utf-8")
    return summary(res) + f"\n\nreport: {output / REPORT_MD}"
