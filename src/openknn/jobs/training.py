"""The training job: sample the train channel, reduce, build the faiss index, score the test
channel and write the model artifact — one named step after another."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from ..core import gpu, hyperparameters, tuning
from ..core import index as faiss_index
from ..core.evaluate import Score
from ..core.model import KnnModel
from ..core.model_files import MODEL_FILES, ModelMeta
from ..core.reduction import Projection, make_projection
from ..core.sampling import HostSample, KeyedSample, merge, record_ids, worker_sample_size
from ..errors import ChannelError
from . import artifact, outputs
from .data import Channel, iter_blocks, require_files
from .progress import Progress
from .runner import LocalRunner, Runner
from .storage import S3_PREFIX, DataFile, staged_output

log = logging.getLogger(__name__)
F = TypeVar("F")

TRAIN, TEST = "train", "test"
REPLICATED, SHARDED = "FullyReplicated", "ShardedByS3Key"
METRICS_FILE = "metrics.json"
MODEL_TAR = "model.tar.gz"


@dataclass
class TrainingJobSpec:
    """A training job independent of where it runs (CLI, /opt/ml container, SDK)."""

    hyperparameters: Mapping[str, object]
    channels: Mapping[str, Channel]
    output_dir: Path | None = None  # writes model.tar.gz and metrics.json
    model_dir: Path | None = None  # writes the three model files (SageMaker's /opt/ml/model)
    metrics_dir: Path | None = None  # metrics.json; defaults to output_dir
    host: str = "algo-1"
    threads: int | None = None
    instance_count: int = 1
    lock_dir: Path | None = None  # held for the whole job; default: each output directory
    # Told each step's name as it starts ("Downloading", "Training", "Uploading"): the
    # local service's SecondaryStatus transitions.
    on_stage: Callable[[str], None] | None = None


@dataclass
class TrainingResult:
    model: KnnModel
    metrics: dict[str, Any]
    timings: dict[str, float] = field(default_factory=dict)


def resolve(spec: TrainingJobSpec) -> dict[str, Any]:
    """Step 1: validated hyperparameters and a present, non-empty train channel."""
    hp = hyperparameters.parse(spec.hyperparameters)
    if TRAIN not in spec.channels:
        raise ChannelError("Must provide train channel.")
    unknown = sorted(set(spec.channels) - {TRAIN, TEST})
    if unknown:
        raise ChannelError(f"Unknown channel(s) {unknown}; k-NN reads only 'train' and 'test'")
    # An impossible _num_gpus fails here, before any data is read.
    gpu.resolve(hp["_num_gpus"], hp["index_type"], gpu.visible(), gpu.gpu_build())
    return hp


def sample_shard(channel: Channel, files: Sequence[DataFile], ordinals: Sequence[int],
                 hp: Mapping[str, Any], sample: KeyedSample, rank: int = 0) -> HostSample:
    """Step 2 (per host): stream files (the channel's ``ordinals``-th in its order)
    into a sample; a record's id, hence its key, is its file's ordinal and its place there."""
    ordinal_of = {f.uri: o for f, o in zip(files, ordinals)}
    with Progress(f"reading {channel.name}") as progress:
        for block in iter_blocks(channel, hp["feature_dim"], hp["mini_batch_size"],
                                 progress=progress, files=files):
            assert block.labels is not None  # iter_blocks requires labels
            ids = record_ids(ordinal_of[block.source], block.first_record, len(block))
            sample.add(ids, block.features, block.labels)
        log.info("#throughput_metric: host=algo-%d, train throughput=%.2f records/second",
                 rank + 1, progress.rate)
    return sample.result()


def projection_for(hp: Mapping[str, Any]) -> Projection | None:
    """Step 3: the seeded projection, its target raised to a multiple of pq_m for IVFPQ."""
    if hp["dimension_reduction_type"] is None:
        return None
    target = hp["dimension_reduction_target"]
    if hp["index_type"] == "faiss.IVFPQ":
        m = hp["faiss_index_pq_m"] or faiss_index.default_pq_m(target)
        raised = -(-target // m) * m
        if raised != target:
            log.info("Raising dimension_reduction_target from %d to %d, a multiple of "
                     "faiss_index_pq_m=%d", target, raised, m)
        target = raised
    return make_projection(hp["dimension_reduction_type"], hp["feature_dim"], target, hp["_seed"])


def index_config(hp: Mapping[str, Any]) -> faiss_index.IndexConfig:
    return faiss_index.IndexConfig(
        index_type=hp["index_type"], metric=hp["index_metric"],
        nlist=hp["faiss_index_ivf_nlists"], pq_m=hp["faiss_index_pq_m"],
        nprobe=(hp["_hnsw_ef_search"] if hp["index_type"] == faiss_index.HNSW
                else hp["_faiss_index_nprobe"]),
        hnsw_m=hp["_hnsw_m"], hnsw_ef_construction=hp["_hnsw_ef_construction"],
    )


def build_model(features: np.ndarray, labels: np.ndarray, hp: Mapping[str, Any]) -> KnnModel:
    """Step 4 (leader): reduce the merged sample and index it."""
    projection = projection_for(hp)
    vectors = projection.apply(features) if projection is not None else features
    config = index_config(hp)
    log.info("Building %s (%s) over data %s", config.index_type, config.metric, vectors.shape)
    gpus = gpu.resolve(hp["_num_gpus"], config.index_type, gpu.visible(), gpu.gpu_build())
    center = faiss_index.center_of(vectors, config.metric)
    index, searcher = gpu.build(vectors, hp["k"], config, hp["_seed"], gpus,
                                strict=hp["_num_gpus"] != gpu.AUTO, center=center)
    d = vectors.shape[1]
    tuned = None
    if hp["_target_recall"] is not None:
        prepared = faiss_index.prepare(vectors, config.metric, faiss_index.index_dim(d, config),
                                       center)
        tuned = tuning.tune(index, prepared, hp["k"], hp["_target_recall"],
                            np.random.default_rng([hp["_seed"], 1 << 20]))
        if tuned is not None:
            config = replace(config, nprobe=tuned.value)
    meta = ModelMeta(
        k=hp["k"], predictor_type=hp["predictor_type"], feature_dim=hp["feature_dim"],
        index_dim=faiss_index.index_dim(d, config), index_type=config.index_type,
        index_metric=config.metric, nprobe=config.nprobe,
        dimension_reduction=projection.to_json() if projection else None,
        normalize=config.metric == "COSINE", sampling_seed=hp["_seed"],
        num_points=int(index.ntotal),
        faiss_index_ivf_nlists=int(index.nlist) if hasattr(index, "nlist") else None,
        faiss_index_pq_m=int(index.pq.M) if hasattr(index, "pq") else None,
        tuning=tuned.to_json() if tuned is not None else None,
        center=None if center is None else center.tolist(),
    )
    return KnnModel(meta=meta, index=index, labels=labels, projection=projection,
                    searcher=searcher)


def score_shard(model: KnnModel, channel: Channel, files: Sequence[DataFile] | None,
                hp: Mapping[str, Any]) -> Score:
    """Step 5: the test metric over every record of some test files (all by default)."""
    score = Score(hp["predictor_type"])
    with Progress(f"scoring {channel.name}") as progress:
        for block in iter_blocks(channel, hp["feature_dim"], hp["mini_batch_size"],
                                 progress=progress, files=files):
            assert block.labels is not None
            score.add(model.predict(block.features), block.labels)
    return score


def metrics_json(hp: Mapping[str, Any], records: int, model: KnnModel, score: Score | None,
                 timings: Mapping[str, float]) -> dict[str, Any]:
    out: dict[str, Any] = {
        "records_read": records, "points_indexed": model.meta.num_points,
        "device": gpu.describe(model.searcher),
        "hyperparameters": hyperparameters.to_strings(hp),
        "timings_seconds": dict(timings),
    }
    if model.meta.tuning is not None:
        out["tuning"] = model.meta.tuning
    if score is not None:
        out[f"test:{score.name}"] = score.value
        out["test"] = {"metric": score.name, "value": score.value, "rows": score.rows,
                       "total": score.total}
    return out


def write_outputs(spec: TrainingJobSpec, result: TrainingResult) -> None:
    """Step 6: the model (atomically) and metrics.json."""
    if spec.model_dir is not None:
        artifact.write_model_dir(result.model, spec.model_dir)
    if spec.output_dir is not None:
        artifact.write_model_tar(result.model, spec.output_dir / MODEL_TAR)
    metrics_dir = spec.metrics_dir or spec.output_dir
    if metrics_dir is not None:
        metrics_dir.mkdir(parents=True, exist_ok=True)
        data = json.dumps(result.metrics, indent=2, sort_keys=True).encode() + b"\n"
        outputs.atomic_write(metrics_dir / METRICS_FILE, data)


def host_name(rank: int) -> str:
    """SageMaker's host names: ``algo-1`` is the leader."""
    return f"algo-{rank + 1}"


def shard(files: Sequence[F], rank: int, workers: int, distribution: str) -> list[F]:
    """Host ``rank``'s files: every ``workers``-th in the channel's order (sorted keys, or a
    manifest's order) for ShardedByS3Key, or all of them (FullyReplicated)."""
    if distribution == SHARDED:
        return list(files[rank::workers])
    if distribution == REPLICATED:
        return list(files)
    raise ChannelError(f"S3DataDistributionType {distribution!r} is not one of "
                       f"{REPLICATED}, {SHARDED}")


def host_sample(hp: Mapping[str, Any], distribution: str, rank: int,
                workers: int) -> KeyedSample:
    """Host ``rank``'s sample. FullyReplicated: every host reads every record and ranks its
    key against the whole ``sample_size``, but keeps only its records (stream ordinal
    ``rank`` mod W), so the W disjoint parts are exactly the one-host sample whatever W.
    ShardedByS3Key: a host samples its own files into its ``sample_size / W``."""
    if distribution == REPLICATED:
        return KeyedSample(hp["sample_size"], hp["feature_dim"], hp["_seed"], rank, workers)
    return KeyedSample(worker_sample_size(hp["sample_size"], workers, rank),
                       hp["feature_dim"], hp["_seed"])


def sample_host(channel: Channel, files: Sequence[DataFile], hp: Mapping[str, Any], rank: int,
                workers: int) -> HostSample:
    """One host's part of step 2 (run on that host), given all the channel's files in
    the channel's order (sorted keys, or a manifest's order): its shard of them into its
    sample."""
    ordinals = shard(range(len(files)), rank, workers, channel.distribution)
    mine = [files[o] for o in ordinals]
    if workers > 1:
        part = (f", keeping records {rank} mod {workers}"
                if channel.distribution == REPLICATED else "")
        log.info("%s: sampling %d file(s)%s", host_name(rank), len(mine), part)
    return sample_shard(channel, mine, ordinals, hp,
                        host_sample(hp, channel.distribution, rank, workers), rank)


def score_host(model: KnnModel, channel: Channel, files: Sequence[DataFile],
               hp: Mapping[str, Any]) -> Score:
    """One host's part of step 5: its share of the test files."""
    return score_shard(model, channel, files, hp)


def output_targets(spec: TrainingJobSpec) -> dict[Path, set[str]]:
    """Each directory the job writes into, with the names it writes there."""
    out: dict[Path, set[str]] = {}
    if spec.model_dir is not None:
        out.setdefault(spec.model_dir, set()).update(MODEL_FILES)
    if spec.output_dir is not None:
        out.setdefault(spec.output_dir, set()).add(MODEL_TAR)
    metrics_dir = spec.metrics_dir or spec.output_dir
    if metrics_dir is not None:
        out.setdefault(metrics_dir, set()).add(METRICS_FILE)
    return out


@contextlib.contextmanager
def claim_outputs(spec: TrainingJobSpec) -> Iterator[None]:
    """Step 0: hold the job's output location for the whole job (a second job writing there
    fails at once) and sweep the temporaries a killed job left in it."""
    targets = output_targets(spec)
    held = [spec.lock_dir] if spec.lock_dir is not None else sorted(targets)
    held = sorted({d.resolve(): d for d in held}.values())  # one lock per directory
    started = time.time()
    with contextlib.ExitStack() as stack:
        for directory in held:
            stack.enter_context(outputs.hold_output(directory))
        for directory, names in targets.items():
            outputs.sweep_temporaries(directory, names, started)
        yield


def train(train: str | os.PathLike[str], test: str | os.PathLike[str] | None = None, *,
          hyperparameters: Mapping[str, object], output_dir: str | os.PathLike[str],
          content_types: tuple[str | None, str | None] = (None, None),
          data_types: tuple[str, str] = (S3_PREFIX, S3_PREFIX),
          threads: int | None = None, instance_count: int = 1,
          distribution: str = "FullyReplicated", runner: Runner | None = None,
          on_stage: Callable[[str], None] | None = None) -> TrainingResult:
    """``openknn train`` as a function: the ``train`` (and ``test``) channel, each a directory,
    file or ``file://`` URI of CSV or RecordIO-protobuf (``content_types`` where the names do
    not say) — or, where ``data_types`` says ``ManifestFile``, a SageMaker manifest listing
    them — trained with SageMaker's ``hyperparameters`` (strings or values) into
    ``output_dir``/model.tar.gz and metrics.json (a directory, ``file://`` URI or ``s3://``
    prefix, where both objects appear only when the job succeeds: ``storage.staged_output``);
    ``instance_count`` hosts sample the train channel, split by ``distribution``, in this
    process unless a ``runner`` is given; ``on_stage`` is told each step as it starts."""
    channels = {TRAIN: Channel(TRAIN, os.fspath(train), content_types[0], distribution,
                               data_types[0])}
    if test is not None:
        channels[TEST] = Channel(TEST, os.fspath(test), content_types[1],
                                 data_type=data_types[1])
    with staged_output(output_dir, "--output-dir", last=(MODEL_TAR,)) as output:
        return run(TrainingJobSpec(hyperparameters, channels, output_dir=output,
                                   threads=threads, instance_count=instance_count,
                                   on_stage=on_stage), runner)


def run(spec: TrainingJobSpec, runner: Runner | None = None) -> TrainingResult:
    """Run a whole training job on ``spec.instance_count`` hosts (in process by default),
    holding its output location throughout."""
    with claim_outputs(spec):
        return _run_job(spec, runner)


def _run_job(spec: TrainingJobSpec, runner: Runner | None = None) -> TrainingResult:
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    hp = resolve(spec)
    stage = spec.on_stage or (lambda name: None)
    stage("Downloading")
    workers = spec.instance_count
    runner = runner or LocalRunner()
    faiss_index.set_threads(spec.threads)
    train = spec.channels[TRAIN]
    train_files = require_files(train)
    log.info("Using per-worker sample size = %d (number of workers = %d)",
             worker_sample_size(hp["sample_size"], workers, 0), workers)
    samples = runner.map(sample_host, [(train, train_files, hp, r, workers)
                                       for r in range(workers)])
    feats, labels = merge(samples)
    seen = sum(s.records for s in samples)  # each train record once, whatever W
    log.info("Got reservoir sample: data=%s, labels=%s from %d records read",
             feats.shape, labels.shape, seen)
    if seen == 0:
        raise ChannelError(f"Channel 'train' at {train.location!r} has no records; "
                           "it must hold at least k labelled records")
    timings["sample"] = time.perf_counter() - t0
    stage("Training")
    t1 = time.perf_counter()
    model = build_model(feats, labels, hp)
    timings["build_index"] = time.perf_counter() - t1
    score = None
    if TEST in spec.channels:
        t2 = time.perf_counter()
        test = spec.channels[TEST]
        test_files = require_files(test)
        # Every test record is scored once: the test files are split over the hosts.
        parts = runner.map(score_host, [(model, test, shard(test_files, r, workers, SHARDED),
                                         hp) for r in range(workers)])
        score = Score(hp["predictor_type"])
        for part in parts:
            score.merge(part)
        timings["score_test"] = time.perf_counter() - t2
        for line in score.log_lines(spec.host):
            log.info(line)
    timings["total"] = time.perf_counter() - t0
    result = TrainingResult(model, metrics_json(hp, seen, model, score, timings), timings)
    stage("Uploading")
    write_outputs(spec, result)
    return result
