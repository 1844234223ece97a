"""``openknn bench``: the tutorial's Part 2 model set on covtype and the ANN figures on
Fashion-MNIST, each model served by a real ``openknn serve`` process and measured beside raw
faiss on the same index and scikit-learn on the same data, in one run.

This module holds the run: data, training and the order of the steps; ``config`` holds the
types the steps share, ``measure`` measures one model, ``output`` writes report.md, the PNG
plots and the printed summary."""

from __future__ import annotations

import logging
import os
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

import faiss
import numpy as np

from ..core import hyperparameters
from ..core.index import serialize, set_threads
from ..errors import ChannelError, ClientError, DataError, MissingExtraError
from ..jobs import artifact, datasets, training
from ..jobs.data import Channel
from .config import (
    FLAT,
    BenchConfig,
    Covtype,
    Fashion,
    ModelSpec,
    Trained,
    covtype_specs,
    fashion_specs,
)
from .measure import (
    RECALL_AT,
    BenchResult,
    CovtypeReport,
    FashionReport,
    covtype_baseline,
    fashion_baseline,
    measure_covtype,
    measure_fashion,
)

log = logging.getLogger(__name__)

FASHION_TRUTH = "t10k-vs-train_knn100_ids.ivecs.gz"


# ---------------------------------------------------------------- data


def covtype_file(path: Path | None) -> tuple[Path | None, str]:
    """``--covtype-path``, else UCI's file (cached or downloaded)."""
    if path is not None:
        return datasets.covtype_file(path), f"{path} (--covtype-path)"
    try:
        return datasets.covtype_file(None, timeout=30), "UCI covtype.data.gz (581,012 rows)"
    except ClientError as exc:
        reason = str(exc).split(";")[0]
    return None, (f"no covtype data ({reason}): pass --covtype-path, e.g. Kaggle's "
                  "forest-cover-type train.csv.gz")


def load_covtype(path: Path, source: str, cfg: BenchConfig) -> Covtype:
    split = datasets.tutorial_split(datasets.load_covtype(path))
    n_test = len(split.test_y) if cfg.covtype_test_rows is None else \
        min(cfg.covtype_test_rows, len(split.test_y))
    data = Covtype(source, split.train_x, split.train_y, split.test_x[:n_test],
                   split.test_y[:n_test], split.test_x)
    data.notes.append(f"covtype: {source}; tutorial split (seed 0 shuffle, 90/10): "
                      f"{len(split.train_y):,} train / {len(split.test_y):,} test rows, "
                      f"{n_test:,} test rows evaluated")
    for size in sorted(set(cfg.sample_sizes)):
        if size > len(split.train_y):
            data.notes.append(f"sample_size {size:,} exceeds the {len(split.train_y):,} train "
                              f"rows, so that model keeps all of them (the cap)")
    if all(size >= len(split.train_y) for size in cfg.sample_sizes):
        data.notes.append("both sample sizes keep every train row, so each *_large model "
                          "holds the same points as its smaller twin")
    return data


def fashion_dir(path: Path | None) -> Path | None:
    """``--fashion-path`` (checked when read), else Debian's copy where it is installed."""
    if path is not None:
        return path
    candidate = datasets.DEBIAN_FASHION_MNIST
    return candidate if (candidate / datasets.FASHION_FILES["train_images"]).exists() else None


def load_fashion(path: Path, cfg: BenchConfig) -> Fashion:
    raw = datasets.fashion_mnist(path)
    nb = min(cfg.fashion_base or len(raw["train_images"]), len(raw["train_images"]))
    nq = min(cfg.fashion_queries or len(raw["test_images"]), len(raw["test_images"]))
    base, queries = raw["train_images"][:nb], raw["test_images"][:nq]
    note = f"Fashion-MNIST {path}: {nb:,} base x {nq:,} queries, 784-d, k={cfg.fashion_k}"
    if nb == len(raw["train_images"]) and (path / FASHION_TRUTH).exists():
        truth = datasets.read_ivecs(path / FASHION_TRUTH)[:nq, :RECALL_AT]
        note += f"; recall against the shipped exact ground truth ({FASHION_TRUTH})"
    else:
        exact = faiss.IndexFlatL2(base.shape[1])
        exact.add(base)
        truth = exact.search(queries, RECALL_AT)[1]
        note += (f"; recall against exact faiss IndexFlatL2 over the {nb:,}-row base (the "
                 "shipped ground truth covers all 60,000)")
    return Fashion(str(path), base, raw["train_labels"][:nb], queries,
                   raw["test_labels"][:nq], truth, [note])


# ---------------------------------------------------------------- training


def base_hp(spec: ModelSpec, feature_dim: int, k: int) -> dict[str, str]:
    return {"feature_dim": str(feature_dim), "k": str(k), "predictor_type": "classifier",
            "sample_size": str(spec.sample_size), "index_type": spec.index_type,
            "_num_gpus": "0", **spec.extra}  # CPU figures; the GPU rows are measured apart


def train_job(spec: ModelSpec, channels: Mapping[str, Path], workdir: Path,
              cfg: BenchConfig) -> Trained:
    """The real training job over RecordIO channels, scoring the test channel at k."""
    log.info("covtype: training %s (%s, sample_size %d)", spec.name, spec.index_type,
             spec.sample_size)
    out = workdir / "models" / f"covtype-{spec.name}"
    job = training.TrainingJobSpec(
        base_hp(spec, 54, cfg.covtype_k),
        {"train": Channel("train", str(channels["train_recordio"])),
         "test": Channel("test", str(channels["test_recordio"]))},
        output_dir=out, threads=cfg.threads)
    result = training.run(job)
    seconds = result.timings["sample"] + result.timings["build_index"]
    accuracy = result.metrics.get("test:accuracy")
    return Trained(spec, result.model, out / training.MODEL_TAR, seconds,
                   len(serialize(result.model.index)),
                   None if accuracy is None else float(accuracy))


def train_fashion(spec: ModelSpec, data: Fashion, workdir: Path, cfg: BenchConfig) -> Trained:
    """The training job's index step over the base, labelled by row id (as the SageMaker
    retrieval notebook does), so verbose answers carry neighbour ids for recall."""
    log.info("Fashion-MNIST: building %s (%s)", spec.name, spec.index_type)
    hp = hyperparameters.parse(base_hp(spec, data.base.shape[1], cfg.fashion_k))
    ids = np.arange(len(data.base), dtype=np.float32)
    t0 = time.perf_counter()
    model = training.build_model(data.base, ids, hp)
    seconds = time.perf_counter() - t0
    tar = workdir / "models" / f"fashion-{spec.name}" / training.MODEL_TAR
    artifact.write_model_tar(model, tar)
    return Trained(spec, model, tar, seconds, len(serialize(model.index)))


# ---------------------------------------------------------------- the run


def load_average() -> str:
    try:
        return f"{os.getloadavg()[0]:.2f}"
    except OSError:
        return "unknown"


def run_covtype(cfg: BenchConfig, path: Path | None, workdir: Path) -> CovtypeReport | str:
    found, source = covtype_file(path)
    if found is None:
        return source
    data = load_covtype(found, source, cfg)
    split = datasets.Split(data.train_x, data.train_y, data.test_x, data.test_y)
    channels = datasets.write_channels(workdir / "covtype", split, ("recordio",))
    trained = [train_job(spec, channels, workdir, cfg) for spec in covtype_specs(cfg)]
    flats = {t.spec.sample_size: t for t in trained if t.spec.index_type == FLAT}
    baselines = {size: covtype_baseline(flat, data, cfg) for size, flat in flats.items()}
    results = [measure_covtype(t, data, baselines[t.spec.sample_size], cfg, workdir)
               for t in trained]
    return CovtypeReport(data, results, list(baselines.values()))


def run_fashion(cfg: BenchConfig, path: Path | None, workdir: Path) -> FashionReport | str:
    found = fashion_dir(path)
    if found is None:
        return (f"Fashion-MNIST not found in {datasets.DEBIAN_FASHION_MNIST}: pass "
                "--fashion-path")
    data = load_fashion(found, cfg)
    baseline = fashion_baseline(data, cfg)
    results = []
    for spec in fashion_specs(cfg, len(data.base)):
        trained = train_fashion(spec, data, workdir, cfg)
        results.append(measure_fashion(trained, data, cfg, workdir))
    return FashionReport(data, results, baseline)


def check_extras() -> None:
    """matplotlib and scikit-learn (the ``dev`` extra): fail before minutes of work."""
    from .output import pyplot

    pyplot()
    try:
        import sklearn  # noqa: F401
    except ImportError:
        raise MissingExtraError("openknn bench's baseline", "dev", "sklearn") from None


def check_paths(covtype_path: Path | None, fashion_path: Path | None) -> None:
    """Given paths must hold their data: fail now, not after the other data set's minutes."""
    if covtype_path is not None and not covtype_path.is_file():
        raise ChannelError(f"--covtype-path {covtype_path}: no such file; give a local UCI "
                           "covtype.data[.gz] or Kaggle's forest-cover-type train.csv[.gz]")
    if fashion_path is not None:
        missing = [name for name in datasets.FASHION_FILES.values()
                   if not (fashion_path / name).is_file()]
        if missing:
            raise DataError(f"--fashion-path {fashion_path}: missing {', '.join(missing)}; "
                            "give a folder with Fashion-MNIST's four IDX files (and "
                            f"{FASHION_TRUTH} for recall)")


def run(cfg: BenchConfig, output: Path, covtype_path: Path | None = None,
        fashion_path: Path | None = None, command: str = "openknn bench") -> str:
    """Measure everything, write report.md and the plots into ``output``; the summary."""
    from .output import write

    check_extras()
    check_paths(covtype_path, fashion_path)
    start, load_start = time.perf_counter(), load_average()
    output.mkdir(parents=True, exist_ok=True)
    set_threads(cfg.threads)
    with tempfile.TemporaryDirectory(prefix="openknn-bench-") as tmp:
        covtype = run_covtype(cfg, covtype_path, Path(tmp))
        fashion = run_fashion(cfg, fashion_path, Path(tmp))
    if isinstance(covtype, str) and isinstance(fashion, str):
        raise ClientError(f"nothing to measure: {covtype}; {fashion}")
    result = BenchResult(cfg, command, covtype, fashion, time.perf_counter() - start,
                         f"{load_start} / {load_average()}")
    return write(result, output)
