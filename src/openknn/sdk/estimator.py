"""``Estimator`` / ``KNN`` / ``RecordSet`` / ``Model``: the SageMaker Python SDK's training
and deployment flow, running `openknn train` and `openknn serve` as local processes."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..core import gpu, hyperparameters
from ..errors import ClientError, DataError, MissingExtraError
from ..formats import recordio
from ..jobs.storage import (
    DATA_TYPES,
    MANIFEST_FILE,
    S3_PREFIX,
    is_remote,
    join,
    local_location,
    object_size,
    read_bytes,
    require_bucket,
    staged_output,
)
from . import endpoints, service
from .predictor import KNNPredictor, Predictor
from .serializers import BaseDeserializer, BaseSerializer
from .service import UnexpectedStatusException

DEFAULT_OUTPUT = "openknn-output"
DEFAULT_DATA_LOCATION = "openknn-record-sets"
MANIFEST = ".amazon.manifest"


def timestamp() -> str:
    """``YYYY-MM-DD-HH-MM-SS-mmm`` in UTC, as SageMaker names jobs."""
    now = time.time()
    return time.strftime("%Y-%m-%d-%H-%M-%S", time.gmtime(now)) + f"-{int(now * 1000) % 1000:03d}"


@dataclass
class TrainingInput:
    """One channel: where its data is (a local path, ``file://`` or ``s3://``), optionally its
    content type, and SageMaker's S3DataType: ``S3Prefix`` (every file under ``s3_data``) or
    ``ManifestFile`` (``s3_data`` is a manifest listing them)."""

    s3_data: str
    content_type: str | None = None
    distribution: str = "FullyReplicated"
    s3_data_type: str = S3_PREFIX


@dataclass
class RecordSet:
    """RecordIO-protobuf shards of an array, as ``KNN.record_set`` writes them: ``s3_data``
    is their manifest (``s3_data_type`` ManifestFile), as in the SDK."""

    s3_data: str
    num_records: int
    feature_dim: int
    s3_data_type: str = MANIFEST_FILE
    channel: str = "train"
    distribution: str = "ShardedByS3Key"

    def data_channel(self) -> dict[str, TrainingInput]:
        return {self.channel: TrainingInput(self.s3_data, None, self.distribution,
                                            self.s3_data_type)}


class TrainingJob:
    """A running or finished `openknn train` process and what it reported. ``output_dir`` is
    a local directory (``training.log`` is written there too) or an ``s3://`` prefix, where
    the job uploads ``model.tar.gz`` and ``metrics.json`` when it succeeds."""

    def __init__(self, name: str, output_dir: Path | str, proc: subprocess.Popen[str],
                 private_files: Sequence[Path] = ()) -> None:
        self.name = name
        self.output_dir = output_dir
        self._proc = proc
        self._lines: list[str] = []
        self._private_files = list(private_files)  # removed when the job ends
        self._metrics: dict[str, Any] | None = None

    @property
    def model_data(self) -> str:
        return join(self.output_dir, "model.tar.gz")

    def _pump(self, logs: bool) -> None:
        assert self._proc.stderr is not None
        for line in self._proc.stderr:
            self._lines.append(line)
            if logs:
                sys.stdout.write(line)
                sys.stdout.flush()
        self._proc.wait()
        for path in self._private_files:
            path.unlink(missing_ok=True)
        if isinstance(self.output_dir, Path):
            (self.output_dir / "training.log").write_text("".join(self._lines))

    def wait(self, logs: bool = True) -> None:
        """Block until the job ends; raise UnexpectedStatusException if it failed."""
        self._pump(logs)
        if self._proc.returncode != 0:
            raise UnexpectedStatusException(
                f"Error for Training job {self.name}: Failed. Reason: {self.failure_reason()}")

    def failure_reason(self) -> str:
        for line in reversed(self._lines):
            if line.startswith(("ClientError:", "AlgorithmError:")):
                return line.strip()
        return f"exit status {self._proc.returncode}"

    def metrics(self) -> dict[str, Any]:
        """The job's metrics.json (read from S3 for an ``s3://`` output, once the job has
        ended); empty while there is none."""
        if self._metrics is not None:
            return self._metrics
        ended = self._proc.poll() is not None
        data = read_bytes(join(self.output_dir, "metrics.json"), "metrics.json")
        metrics = dict(json.loads(data)) if data else {}
        if ended:
            self._metrics = metrics
        return metrics

    def describe(self) -> dict[str, Any]:
        """The fields of DescribeTrainingJob that a notebook reads."""
        code = self._proc.poll()
        status = "InProgress" if code is None else ("Completed" if code == 0 else "Failed")
        out: dict[str, Any] = {"TrainingJobName": self.name, "TrainingJobStatus": status,
                               "ModelArtifacts": {"S3ModelArtifacts": self.model_data}}
        if status == "Failed":
            out["FailureReason"] = self.failure_reason()
        metrics = self.metrics()
        out["FinalMetricDataList"] = [{"MetricName": k, "Value": v}
                                      for k, v in metrics.items() if k.startswith("test:")]
        return out


def _write_hyperparameters(path: Path, hp: Mapping[str, Any]) -> None:
    path.write_text(json.dumps({k: str(v) for k, v in hp.items() if v is not None}))


def _channels(inputs: Any) -> dict[str, TrainingInput]:
    """``fit``'s argument as channels: a dict of URIs / TrainingInputs, a RecordSet or a
    list of RecordSets, or one URI (the train channel)."""
    if isinstance(inputs, RecordSet):
        return inputs.data_channel()
    if isinstance(inputs, str):
        return {"train": TrainingInput(inputs)}
    if isinstance(inputs, Mapping):
        return {name: v if isinstance(v, TrainingInput) else TrainingInput(str(v))
                for name, v in inputs.items()}
    if isinstance(inputs, Sequence):
        out: dict[str, TrainingInput] = {}
        for item in inputs:
            out.update(_channels(item))
        return out
    raise ClientError(f"fit() cannot use {type(inputs).__name__}; pass a RecordSet, a list of "
                      "RecordSets, or a dict like {'train': path, 'test': path}")


def _channel_args(channels: Mapping[str, TrainingInput]) -> list[str]:
    """The channels as `openknn train` options. A local location must exist (checked here,
    before any job starts); an ``s3://`` one is passed on as it is, and the job itself names
    a missing bucket, prefix, manifest or key."""
    args: list[str] = []
    for channel, spec in channels.items():
        if channel not in ("train", "test"):
            raise ClientError(f"Unknown channel {channel!r}; k-NN reads 'train' and 'test'")
        if spec.s3_data_type not in DATA_TYPES:
            raise ClientError(f"Channel {channel!r}: s3_data_type {spec.s3_data_type!r} is not "
                              f"one k-NN reads; give {' or '.join(map(repr, DATA_TYPES))}")
        location = spec.s3_data
        if not is_remote(location):
            path = local_location(location, "TrainingInput")
            if not path.exists():
                raise ClientError(f"Channel {channel!r} location {spec.s3_data!r} does not "
                                  "exist; write the data there first or fix the path")
            location = str(path)
        args += [f"--{channel}", location, f"--{channel}-data-type", spec.s3_data_type]
        if spec.content_type:
            args += [f"--{channel}-content-type", spec.content_type]
    return args


class Estimator:
    """The generic estimator the covtype notebook uses: ``image_uri`` + hyperparameters."""

    base_job_name = "knn"

    def __init__(self, image_uri: str | None = None, role: str | None = None,
                 instance_count: int | None = 1, instance_type: str | None = "local",
                 output_path: str | None = None, sagemaker_session: Any = None,
                 base_job_name: str | None = None,
                 hyperparameters: Mapping[str, Any] | None = None, **kwargs: Any) -> None:
        self.image_uri = image_uri
        self.role = role
        # SDK v1 spelled these train_instance_count / train_instance_type
        self.instance_count = kwargs.pop("train_instance_count", None) or instance_count or 1
        self.instance_type = kwargs.pop("train_instance_type", None) or instance_type or "local"
        self.output_path = output_path or DEFAULT_OUTPUT
        self.base_job_name = base_job_name or self.base_job_name
        # a service.Session: train and deploy on openknn up; anything else: local processes
        self.sagemaker_session = sagemaker_session
        self._hyperparameters: dict[str, Any] = {}
        self.latest_training_job: TrainingJob | service.ServiceTrainingJob | None = None
        if hyperparameters:
            self.set_hyperparameters(**hyperparameters)

    def set_hyperparameters(self, **hp: Any) -> None:
        """Set hyperparameters; each value is checked at once against the one table."""
        hyperparameters.parse(hp, rules=())
        self._hyperparameters.update(hp)

    def hyperparameters(self) -> dict[str, str]:
        """The non-None values as strings, as the SDK sends them."""
        return {k: str(v) for k, v in self._hyperparameters.items() if v is not None}

    def _job_name(self, job_name: str | None) -> str:
        return job_name or f"{self.base_job_name}-{timestamp()}"

    def fit(self, inputs: Any = None, wait: bool = True, logs: bool = True,
            job_name: str | None = None, **kwargs: Any) -> None:
        """Run a training job over the channels; its model lands in
        ``output_path/<job_name>/output/model.tar.gz`` (a local directory or, uploaded when
        the job succeeds, an ``s3://`` prefix)."""
        channels = _channels(inputs) if inputs is not None else {}
        if "train" not in channels:
            raise DataError("Must provide train channel.")  # a ValueError, as in the SDK
        hyperparameters.parse(self._hyperparameters)  # fail before any job starts
        if isinstance(self.sagemaker_session, service.Session):
            self.latest_training_job = service.train(
                self.sagemaker_session, self._job_name(job_name), self.image_uri, self.role,
                self.hyperparameters(), channels, self.output_path, self.instance_type,
                self.instance_count)
            if wait:
                self.latest_training_job.wait(logs)
            return
        job_args = _channel_args(channels)
        if self.instance_count > 1:
            if importlib.util.find_spec("ray") is None:
                raise MissingExtraError(f"instance_count={self.instance_count}", "ray", "ray")
            job_args += ["--instance-count", str(self.instance_count), "--distribution",
                         channels["train"].distribution]
        name = self._job_name(job_name)
        # _num_gpus follows the instance type (ml.p* / ml.g* / local_gpu: a GPU) unless set.
        hp = {"_num_gpus": gpu.for_instance_type(self.instance_type), **self._hyperparameters}
        out, hp_file, private = self._job_output(name)
        args = [sys.executable, "-m", "openknn", "train", "--hyperparameters",
                str(hp_file), "--output-dir", str(out), *job_args]
        try:
            _write_hyperparameters(hp_file, hp)
            proc = subprocess.Popen(args, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                    stdin=subprocess.DEVNULL, text=True)
        except BaseException:
            for path in private:
                path.unlink(missing_ok=True)
            raise
        self.latest_training_job = TrainingJob(name, out, proc, private)
        if wait:
            self.latest_training_job.wait(logs)
        else:
            threading.Thread(target=self.latest_training_job._pump, args=(False,),
                             daemon=True).start()

    def _job_output(self, name: str) -> tuple[Path | str, Path, list[Path]]:
        """The job's output location, where its hyperparameters.json is written, and the
        private files to remove when it ends. A local ``output_path`` holds both
        (``<job>/output`` and ``<job>/hyperparameters.json``); for an ``s3://`` one the bucket
        is checked now, before any job starts, and the hyperparameters go to a private
        temporary file (mode 0600), never to S3 nor to a local path made of the URI."""
        if is_remote(self.output_path):
            out = f"{self.output_path.rstrip('/')}/{name}/output"
            require_bucket(out, "output_path")
            handle, hp_file = tempfile.mkstemp(prefix=f"openknn-{name}-", suffix=".json")
            os.close(handle)
            return out, Path(hp_file), [Path(hp_file)]
        local = local_location(self.output_path, "output_path") / name / "output"
        local.mkdir(parents=True, exist_ok=True)
        return local, local.parent / "hyperparameters.json", []

    @property
    def model_data(self) -> str:
        if self.latest_training_job is None:
            raise ClientError("No training job yet: call fit() before model_data or deploy()")
        return self.latest_training_job.model_data

    @property
    def metrics(self) -> dict[str, Any]:
        """The finished job's metrics.json (``test:accuracy`` or ``test:mse`` among them)."""
        return self.latest_training_job.metrics() if self.latest_training_job else {}

    def _predictor_class(self) -> type[Predictor]:
        return Predictor

    def deploy(self, initial_instance_count: int = 1, instance_type: str = "local",
               serializer: BaseSerializer | None = None,
               deserializer: BaseDeserializer | None = None,
               endpoint_name: str | None = None, **kwargs: Any) -> Predictor:
        """Start a local endpoint for the trained model and return its predictor."""
        job = self.latest_training_job
        if job is None or job.describe()["TrainingJobStatus"] != "Completed":
            raise ClientError("deploy() needs a completed training job; call fit() first")
        model = Model(job.model_data, self.image_uri, self.role,
                      predictor_cls=self._predictor_class(),
                      sagemaker_session=self.sagemaker_session)
        return model.deploy(initial_instance_count, instance_type, serializer, deserializer,
                            endpoint_name or job.name)


class Model:
    """A trained artifact that can be deployed (``KNNModel`` is the same with KNN defaults)."""

    def __init__(self, model_data: str, image_uri: str | None = None, role: str | None = None,
                 predictor_cls: type[Predictor] = Predictor, sagemaker_session: Any = None,
                 **kwargs: Any) -> None:
        self.model_data = model_data
        self.predictor_cls = predictor_cls
        self.image_uri, self.role = image_uri, role
        self.sagemaker_session = sagemaker_session

    def deploy(self, initial_instance_count: int = 1, instance_type: str = "local",
               serializer: BaseSerializer | None = None,
               deserializer: BaseDeserializer | None = None,
               endpoint_name: str | None = None, **kwargs: Any) -> Predictor:
        if isinstance(self.sagemaker_session, service.Session):
            name = endpoint_name or f"knn-{timestamp()}"
            service.deploy(self.sagemaker_session, name, self.model_data, self.image_uri,
                           self.role, instance_type, initial_instance_count)
            return self._predictor(name, serializer, deserializer)
        if initial_instance_count > 1 and importlib.util.find_spec("ray") is None:
            raise MissingExtraError(f"initial_instance_count={initial_instance_count}", "ray",
                                    "ray")
        model_data = self._checked_model_data()
        name = endpoint_name or f"knn-{timestamp()}"
        replicas = max(1, initial_instance_count)
        # Ray Serve replicas search on the CPU; one endpoint follows its instance type.
        endpoints.create(name, model_data, replicas=replicas,
                         gpus=gpu.for_instance_type(instance_type) if replicas == 1 else None)
        return self._predictor(name, serializer, deserializer)

    def _predictor(self, name: str, serializer: BaseSerializer | None,
                   deserializer: BaseDeserializer | None) -> Predictor:
        predictor = self.predictor_cls(name, sagemaker_session=self.sagemaker_session)
        if serializer is not None:
            predictor.serializer = serializer
        if deserializer is not None:
            predictor.deserializer = deserializer
        return predictor


    def _checked_model_data(self) -> str:
        """``model_data`` as the endpoint loads it: a local path that exists, or an
        ``s3://`` object (the endpoint reads it in place) that exists now, so a wrong URI
        fails here, named, rather than in the endpoint's log."""
        if is_remote(self.model_data):
            if object_size(self.model_data, "model_data") is None:
                raise ClientError(f"model_data {self.model_data!r} does not exist; give the "
                                  "s3:// URI of a model.tar.gz object (a training job's "
                                  "estimator.model_data)")
            return self.model_data
        path = local_location(self.model_data, "model_data")
        if not path.exists():
            raise ClientError(f"model_data {self.model_data!r} does not exist")
        return str(path)


class KNNModel(Model):
    def __init__(self, model_data: str, role: str | None = None, **kwargs: Any) -> None:
        super().__init__(model_data, role=role, predictor_cls=KNNPredictor, **kwargs)


KNN_ARGS = ("k", "sample_size", "predictor_type", "dimension_reduction_type",
            "dimension_reduction_target", "index_type", "index_metric",
            "faiss_index_ivf_nlists", "faiss_index_pq_m")


class KNN(Estimator):
    """The SDK's k-NN estimator: hyperparameters as arguments, RecordSet inputs."""

    def __init__(self, role: str | None = None, instance_count: int | None = 1,
                 instance_type: str | None = "local", k: int | None = None,
                 sample_size: int | None = None, predictor_type: str | None = None,
                 dimension_reduction_type: str | None = None,
                 dimension_reduction_target: int | None = None,
                 index_type: str | None = None, index_metric: str | None = None,
                 faiss_index_ivf_nlists: str | int | None = None,
                 faiss_index_pq_m: int | None = None, data_location: str | None = None,
                 **kwargs: Any) -> None:
        super().__init__(None, role, instance_count, instance_type, **kwargs)
        values = dict(zip(KNN_ARGS, (k, sample_size, predictor_type, dimension_reduction_type,
                                     dimension_reduction_target, index_type, index_metric,
                                     faiss_index_ivf_nlists, faiss_index_pq_m)))
        if dimension_reduction_type is not None and dimension_reduction_target is None:
            raise ClientError('"dimension_reduction_target" is required when '
                              '"dimension_reduction_type" is set.')
        self.set_hyperparameters(**{k: v for k, v in values.items() if v is not None})
        if data_location is None and isinstance(self.sagemaker_session, service.Session):
            data_location = f"s3://{self.sagemaker_session.default_bucket()}/" \
                            "sagemaker-record-sets/"  # the SDK's default
        self.data_location = data_location or DEFAULT_DATA_LOCATION

    def _predictor_class(self) -> type[Predictor]:
        return KNNPredictor

    def record_set(self, train: np.ndarray, labels: np.ndarray | None = None,
                   channel: str = "train", encrypt: bool = False,
                   distribution: str = "ShardedByS3Key") -> RecordSet:
        """Write ``train`` (and ``labels``) as ``instance_count`` RecordIO shards
        ``matrix_<i>.pbr`` plus the ``.amazon.manifest`` that lists them under
        ``data_location/KNN-<timestamp>/``, as the SDK's ``upload_numpy_to_s3_shards`` does;
        the RecordSet names the manifest (``ManifestFile``). For an ``s3://`` data_location
        the bucket is checked first and the objects are uploaded, the manifest last, once
        every shard is written."""
        shards = self.instance_count
        if train.ndim != 2:
            raise ClientError(f"record_set needs a 2-D array, got shape {train.shape}")
        if train.shape[0] < shards:
            raise ClientError("Array length is less than num shards")
        folder = f"{type(self).__name__}-{timestamp()}"
        if is_remote(self.data_location):
            prefix = f"{self.data_location.rstrip('/')}/{folder}/"
            with staged_output(prefix, "data_location", last=(MANIFEST,)) as staging:
                _write_record_set(staging, prefix, train, labels, shards)
            manifest = prefix + MANIFEST
        else:
            root = local_location(self.data_location, "data_location") / folder
            root.mkdir(parents=True, exist_ok=True)
            _write_record_set(root, f"{root.resolve()}/", train, labels, shards)
            manifest = str(root / MANIFEST)
        return RecordSet(manifest, int(train.shape[0]), int(train.shape[1]), channel=channel,
                         distribution=distribution)

    def fit(self, records: Any = None, mini_batch_size: int | None = None,  # type: ignore[override]
            wait: bool = True,
            logs: bool = True, job_name: str | None = None, **kwargs: Any) -> None:
        """Train on RecordSets; ``feature_dim`` comes from the train RecordSet."""
        items = records if isinstance(records, Sequence) else [records]
        train = [r for r in items if isinstance(r, RecordSet) and r.channel == "train"]
        if not train:
            raise DataError("Must provide train channel.")  # a ValueError, as in the SDK
        self._hyperparameters["feature_dim"] = train[0].feature_dim
        if mini_batch_size is not None:
            self.set_hyperparameters(mini_batch_size=mini_batch_size)
        super().fit(records, wait, logs, job_name)


def _write_record_set(root: Path, prefix: str, train: np.ndarray, labels: np.ndarray | None,
                      shards: int) -> None:
    """The SDK's shards (``_build_shards``: equal parts, the last one taking the remainder;
    names zero-padded to the count's width) and its manifest, ``[{"prefix": prefix},
    "matrix_0.pbr", ...]`` as ``json.dumps`` writes it, into the directory ``root``."""
    size = train.shape[0] // shards
    bounds = [i * size for i in range(shards)] + [train.shape[0]]
    width = len(str(shards))
    names = []
    for i in range(shards):
        name = f"matrix_{i:0{width}d}.pbr"
        with open(root / name, "wb") as f:
            part = slice(bounds[i], bounds[i + 1])
            recordio.write_dense(f, train[part], None if labels is None else labels[part])
        names.append(name)
    (root / MANIFEST).write_text(json.dumps([{"prefix": prefix}, *names]))


def image_uri(*args: Any, **kwargs: Any) -> str:
    """Stands in for ``sagemaker.image_uris.retrieve("knn", region)``: any value works here."""
    return "openknn/knn:1"

