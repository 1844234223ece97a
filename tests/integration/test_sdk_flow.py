"""The SDK flow with real processes on loopback: record_set → fit → deploy → predict in every
serializer pair → delete_endpoint, the generic Estimator path, the endpoint registry, and
bad use failing early and clearly. Training jobs and endpoints are processes, as the SDK
starts them; `openknn endpoints` runs in this process (click's CliRunner)."""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from openknn.errors import ClientError, HyperparameterError
from openknn.jobs import artifact
from openknn.sdk import (
    KNN,
    CSVSerializer,
    EndpointNotFound,
    Estimator,
    JSONDeserializer,
    JSONLinesDeserializer,
    JSONLinesSerializer,
    JSONSerializer,
    KNNModel,
    ModelError,
    RecordDeserializer,
    RecordSerializer,
    UnexpectedStatusException,
    list_endpoints,
)
from openknn.sdk import endpoints as registry

from ..conftest import write_csv
from .cli_helpers import openknn

sklearn = pytest.importorskip("sklearn")
from sklearn.datasets import load_digits  # noqa: E402

X, Y = load_digits(return_X_y=True)
X, Y = X.astype(np.float32), Y.astype(np.float32)
TRAIN, TEST = slice(0, 1500), slice(1500, None)
PR_SET_CHILD_SUBREAPER = 36  # linux/prctl.h


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setenv("OPENKNN_HOME", str(tmp_path / "home"))
    yield tmp_path
    for info in list_endpoints():  # never leave a server behind, even when a test fails
        registry.delete(info.name)


@pytest.fixture(scope="module")
def small_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Flat model of 300 digits (k=3) as model.tar.gz, written once for the module."""
    from openknn.core import index as fi
    from openknn.core.model import KnnModel, ModelMeta

    meta = ModelMeta(k=3, predictor_type="classifier", feature_dim=64, index_dim=64,
                     num_points=300)
    tar = tmp_path_factory.mktemp("small") / "model.tar.gz"
    artifact.write_model_tar(KnnModel(meta, fi.build(X[:300], 3, fi.IndexConfig()), Y[:300]),
                             tar)
    return tar


@contextlib.contextmanager
def adopting_orphans() -> Iterator[None]:
    """This process as the child subreaper (Linux ``prctl``): a descendant orphaned meanwhile
    is re-parented here rather than to init, so the moment it exits is seen here (``reap``)
    instead of whenever init reaps it (seconds, under some container inits)."""
    libc = ctypes.CDLL(None, use_errno=True) if sys.platform == "linux" else None
    adopted = libc is not None and libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    try:
        yield
    finally:
        if adopted:
            libc.prctl(PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)  # type: ignore[union-attr]


def reap(pid: int) -> None:
    """Collect ``pid``'s exit status if it is (now) this process's child and has exited."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def port_closed(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def predicted(answer: object) -> np.ndarray:
    """predicted_label out of any deserializer's answer."""
    if isinstance(answer, dict):
        return np.array([p["predicted_label"] for p in answer["predictions"]], np.float32)
    items = list(answer)  # type: ignore[call-overload]
    if items and isinstance(items[0], dict):
        return np.array([p["predicted_label"] for p in items], np.float32)
    return np.array([r.label["predicted_label"].float32_tensor.values[0] for r in items],
                    np.float32)


def test_knn_flow_every_serializer_pair(tmp_path: Path) -> None:
    knn = KNN(role="ignored", instance_count=1, instance_type="local", k=5, sample_size=5000,
              predictor_type="classifier", output_path=str(tmp_path / "out"),
              data_location=str(tmp_path / "data"))
    train = knn.record_set(X[TRAIN], Y[TRAIN])
    test = knn.record_set(X[TEST], Y[TEST], channel="test")
    # the SDK's shape: the RecordSet names the manifest beside the shards
    assert Path(train.s3_data).name == ".amazon.manifest" and Path(train.s3_data).is_file()
    assert train.s3_data_type == "ManifestFile"
    knn.fit([train, test], logs=False)
    job = knn.latest_training_job
    assert job is not None and job.name.startswith("knn-")
    assert knn.model_data == str(tmp_path / "out" / job.name / "output" / "model.tar.gz")
    assert job.describe()["TrainingJobStatus"] == "Completed"
    assert 0.9 < knn.metrics["test:accuracy"] <= 1.0
    expected = artifact.load(knn.model_data).predict(X[TEST][:40])

    predictor = knn.deploy(initial_instance_count=1, instance_type="local")
    info = registry.describe(predictor.endpoint_name)
    # the SDK's k-NN default: RecordIO both ways
    np.testing.assert_array_equal(predicted(predictor.predict(X[TEST][:40])), expected)
    pairs = [(CSVSerializer(), JSONDeserializer()), (JSONSerializer(), JSONDeserializer()),
             (JSONLinesSerializer(), JSONLinesDeserializer()),
             (RecordSerializer(), JSONDeserializer()), (CSVSerializer(), RecordDeserializer()),
             (JSONSerializer(), JSONLinesDeserializer())]
    for serializer, deserializer in pairs:
        predictor.serializer, predictor.deserializer = serializer, deserializer
        got = predicted(predictor.predict(X[TEST][:40]))
        np.testing.assert_array_equal(got, expected, err_msg=type(serializer).__name__)
    # per-call overrides, as the notebooks use them
    predictor.serializer, predictor.deserializer = CSVSerializer(), JSONDeserializer()
    body = predictor.predict(X[TEST][:3], initial_args={"Accept": "application/json; "
                                                                  "verbose=true"})
    assert len(body["predictions"][0]["labels"]) == 5
    with pytest.raises(ModelError, match=r"Received client error \(400\).*64"):
        predictor.predict(X[TEST][:2, :10])

    predictor.delete_endpoint()
    deadline = time.monotonic() + 10
    while registry.pid_alive(info.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not registry.pid_alive(info.pid) and port_closed(info.port)
    assert list_endpoints() == []
    with pytest.raises(EndpointNotFound, match=r"Could not find endpoint"):
        predictor.predict(X[TEST][:1])


def test_generic_estimator_with_csv_channels(tmp_path: Path) -> None:
    write_csv(tmp_path / "train" / "train.csv", X[TRAIN], Y[TRAIN])
    write_csv(tmp_path / "test" / "test.csv", X[TEST], Y[TEST])
    est = Estimator("openknn/knn:1", "role", instance_count=1, instance_type="local",
                    output_path=f"file://{tmp_path / 'out'}")
    est.set_hyperparameters(feature_dim=64, k=10, sample_size=200000,
                            predictor_type="classifier")
    est.fit({"train": str(tmp_path / "train"), "test": str(tmp_path / "test")}, logs=False)
    log = (Path(est.model_data).parent / "training.log").read_text()
    assert "#test_score (algo-1) : ('accuracy'," in log
    # "local" is a CPU instance type (local_gpu and ml.p* / ml.g* are GPU ones)
    written = json.loads((Path(est.model_data).parents[1] / "hyperparameters.json").read_text())
    assert written["_num_gpus"] == "0" and est.metrics["device"] == "CPU"
    predictor = est.deploy(1, "local", serializer=CSVSerializer(),
                           deserializer=JSONDeserializer())
    try:
        pid = registry.describe(predictor.endpoint_name).pid
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        assert cmdline[cmdline.index(b"--gpus") + 1] == b"0"
        got = predicted(predictor.predict(X[TEST][:20]))
        np.testing.assert_array_equal(got, artifact.load(est.model_data).predict(X[TEST][:20]))
        r = openknn("endpoints", "list")
        assert predictor.endpoint_name in r.stdout
    finally:
        r = openknn("endpoints", "delete", predictor.endpoint_name)
    assert r.returncode == 0 and list_endpoints() == []


def test_bad_use_fails_early(tmp_path: Path) -> None:
    with pytest.raises(HyperparameterError, match=r"Hyperparameter k: 0 is not in"):
        KNN(k=0, sample_size=10, predictor_type="classifier")
    with pytest.raises(Exception, match=r'"dimension_reduction_target" is required'):
        KNN(k=1, sample_size=10, predictor_type="classifier", dimension_reduction_type="sign")
    est = Estimator("knn", output_path=str(tmp_path))
    with pytest.raises(HyperparameterError, match=r"Extraneous hyperparameter found: kk"):
        est.set_hyperparameters(kk=3)
    est.set_hyperparameters(feature_dim=64, k=3, sample_size=10, predictor_type="classifier")
    with pytest.raises(ValueError, match=r"^Must provide train channel\.$"):
        est.fit({"test": str(tmp_path)})
    with pytest.raises(Exception, match=r"Channel 'train' location .*nope.* does not exist"):
        est.fit({"train": str(tmp_path / "nope")})
    est.set_hyperparameters(k=500)
    write_csv(tmp_path / "train" / "a.csv", X[:50], Y[:50])
    with pytest.raises(UnexpectedStatusException, match=r"Failed. Reason: ClientError: k=500 "
                       r"exceeds the 10 points sampled"):
        est.fit({"train": str(tmp_path / "train")}, logs=False)


def test_endpoint_does_not_outlive_a_crashed_owner(small_model: Path) -> None:
    script = ("import os, sys\n"
              "from openknn.sdk import KNNModel\n"
              "p = KNNModel(sys.argv[1]).deploy(1, 'local', endpoint_name='orphan')\n"
              "print(p.endpoint_name, flush=True)\n"
              "os._exit(1)  # a crash: no delete_endpoint\n")
    with adopting_orphans():  # the orphaned endpoint's exit is seen here, not init's reaping
        r = subprocess.run([sys.executable, "-c", script, str(small_model)],
                           capture_output=True, text=True, timeout=120, env=os.environ.copy())
        assert r.stdout.strip() == "orphan", r.stderr
        entry = Path(os.environ["OPENKNN_HOME"]) / "endpoints" / "orphan.json"
        assert entry.exists()
        pid = registry._read(entry).pid  # type: ignore[union-attr]
        deadline = time.monotonic() + 15
        while registry.pid_alive(pid) and time.monotonic() < deadline:
            reap(pid)
            time.sleep(0.02)
    assert not registry.pid_alive(pid)  # the server noticed its owner was gone and exited
    assert list_endpoints() == [] and not entry.exists()  # the stale entry is cleaned


def test_deploy_names_are_sagemaker_names_and_unique(small_model: Path) -> None:
    tar = small_model
    home = Path(os.environ["OPENKNN_HOME"])
    with pytest.raises(ClientError,
                       match=r"Value '\.\./\.\./x' at 'endpointName' failed to satisfy"):
        KNNModel(str(tar)).deploy(1, "local", endpoint_name="../../x")
    assert not (home.parent / "x.json").exists() and not (home / "x.json").exists()
    predictor = KNNModel(str(tar)).deploy(1, "local", endpoint_name="same",
                                          serializer=CSVSerializer(),
                                          deserializer=JSONDeserializer())
    try:
        with pytest.raises(ValueError, match=r'^Cannot create already existing endpoint '
                                             r'"arn:aws:sagemaker:local:000000000000:'
                                             r'endpoint/same"\.'):
            KNNModel(str(tar)).deploy(1, "local", endpoint_name="same")
        assert [info.name for info in list_endpoints()] == ["same"]
        got = predicted(predictor.predict(X[TEST][:5]))
        np.testing.assert_array_equal(got, artifact.load(tar).predict(X[TEST][:5]))
    finally:
        predictor.delete_endpoint()
    assert list_endpoints() == [] and not list((home / "endpoints").glob("same*"))


@pytest.mark.ray
def test_knn_instance_count_two_trains_on_ray(tmp_path: Path) -> None:
    pytest.importorskip("ray")
    knn = KNN(instance_count=2, k=5, sample_size=1000, predictor_type="classifier",
              output_path=str(tmp_path / "out"), data_location=str(tmp_path / "data"))
    train = knn.record_set(X[TRAIN], Y[TRAIN])
    assert sorted(p.name for p in Path(train.s3_data).parent.iterdir()) == [
        ".amazon.manifest", "matrix_0.pbr", "matrix_1.pbr"]
    knn.fit([train, knn.record_set(X[TEST], Y[TEST], channel="test")], logs=False)
    log = (Path(knn.model_data).parent / "training.log").read_text()
    assert "number of workers = 2" in log and "algo-2" in log
    assert artifact.load(knn.model_data).meta.num_points == 1000
    assert knn.metrics["test:accuracy"] > 0.9


@pytest.mark.ray
def test_deploy_with_two_instances_uses_replicas(tmp_path: Path) -> None:
    pytest.importorskip("ray")
    knn = KNN(k=5, sample_size=1000, predictor_type="classifier",
              output_path=str(tmp_path / "out"), data_location=str(tmp_path / "data"))
    knn.fit(knn.record_set(X[TRAIN], Y[TRAIN]), logs=False)
    predictor = knn.deploy(initial_instance_count=2, instance_type="local",
                           serializer=CSVSerializer(), deserializer=JSONDeserializer())
    info = registry.describe(predictor.endpoint_name)
    try:
        log = Path(os.environ["OPENKNN_HOME"]) / "endpoints" / f"{predictor.endpoint_name}.log"
        deadline = time.monotonic() + 30
        while "from 2 Ray Serve replicas" not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert "from 2 Ray Serve replicas" in log.read_text()
        np.testing.assert_array_equal(predicted(predictor.predict(X[TEST][:30])),
                                      artifact.load(knn.model_data).predict(X[TEST][:30]))
    finally:
        predictor.delete_endpoint()
    deadline = time.monotonic() + 30
    while registry.pid_alive(info.pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not registry.pid_alive(info.pid) and port_closed(info.port)
