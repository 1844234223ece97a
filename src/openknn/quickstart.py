"""``openknn quickstart``: the whole SageMaker flow in one command — data, training job,
endpoint, predictions in 100 CSV batches, accuracy and latency, endpoint deleted. Locally
(processes on this machine), or with ``service=True`` through ``openknn up``: the channels
uploaded to its S3, the job and the endpoint its own, the requests InvokeEndpoint calls."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import ClientError
from .jobs import datasets
from .sdk import Estimator, Predictor, Session
from .sdk.serializers import CSVSerializer, JSONDeserializer

log = logging.getLogger(__name__)


@dataclass
class Data:
    name: str
    train: Path
    test: Path
    feature_dim: int
    test_labels: np.ndarray
    test_features: np.ndarray


def covtype(workdir: Path, path: str | None) -> Data:
    """The tutorial's split of covtype (downloaded, or a local copy)."""
    split = datasets.tutorial_split(datasets.load_covtype(datasets.covtype_file(path)))
    channels = datasets.write_channels(workdir / "data", split, ("recordio",))
    return Data("covtype", channels["train_recordio"], channels["test_recordio"], 54,
                split[3], split[2])


def digits(workdir: Path) -> Data:
    """scikit-learn's bundled digits, split 90/10 the same way."""
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise ClientError("No covtype data (no network, no --path) and scikit-learn is not "
                          "installed for the digits fallback; pass --path to covtype data "
                          "or pip install scikit-learn") from None
    x, y = load_digits(return_X_y=True)
    raw = np.column_stack([x, y]).astype(np.float64)
    split = datasets.tutorial_split(raw)
    channels = datasets.write_channels(workdir / "data", split, ("recordio",))
    return Data("digits", channels["train_recordio"], channels["test_recordio"], 64,
                split[3], split[2])


def load_data(workdir: Path, path: str | None) -> Data:
    try:
        return covtype(workdir, path)
    except ClientError as exc:
        if path is not None:
            raise
        print(f"covtype could not be downloaded ({str(exc).split(';')[0]}); using "
              "scikit-learn's bundled digits set instead (pass --path for covtype)")
        return digits(workdir)


def predict_in_batches(predictor: Predictor, features: np.ndarray) -> tuple[np.ndarray, float]:
    """The notebook's loop: 100 CSV requests; returns the predictions and seconds taken."""
    start = time.perf_counter()
    out = []
    for batch in np.array_split(features, 100):
        if len(batch):
            result = predictor.predict(batch)
            out.append([p["predicted_label"] for p in result["predictions"]])
    return np.concatenate(out), time.perf_counter() - start


def single_row_latency(predictor: Predictor, features: np.ndarray, n: int) -> np.ndarray:
    """Milliseconds of ``n`` one-row requests, one after another."""
    times = []
    for row in features[:n]:
        t0 = time.perf_counter()
        predictor.predict(row[None, :])
        times.append((time.perf_counter() - t0) * 1000)
    return np.array(times)


def run(workdir: Path, path: str | None, k: int = 10, single_rows: int = 200,
        service: bool = False) -> dict[str, float]:
    """Run the flow; print what the tutorial prints; never leave the endpoint running."""
    session = Session() if service else None  # before any work: names a missing service
    data = load_data(workdir, path)
    train, test, output = str(data.train), str(data.test), str(workdir / "output")
    if session is not None:
        train = session.upload(data.train, "openknn-quickstart/train")
        test = session.upload(data.test, "openknn-quickstart/test")
        output = f"s3://{session.default_bucket()}/openknn-quickstart/output"
        print(f"service: {session.endpoint_url}")
    print(f"data: {data.name}, train {train}, test {test}")
    est = Estimator("openknn/knn:1", output_path=output, sagemaker_session=session)
    est.set_hyperparameters(feature_dim=data.feature_dim, k=k, sample_size=200000,
                            predictor_type="classifier")
    est.fit({"train": train, "test": test}, logs=False)
    print(f"training job {est.latest_training_job.name if est.latest_training_job else ''}: "
          f"test accuracy {est.metrics['test:accuracy']:.4f}")
    predictor = est.deploy(1, "local", serializer=CSVSerializer(),
                           deserializer=JSONDeserializer())
    try:
        predictions, seconds = predict_in_batches(predictor, data.test_features)
        latency = single_row_latency(predictor, data.test_features, single_rows)
    finally:
        predictor.delete_endpoint()
    accuracy = float(np.mean(predictions == data.test_labels))
    n = len(data.test_labels)
    print(f"time required for predicting {n} data point: {seconds:.2f} seconds")
    print(f"accuracy of model: {accuracy * 100:.1f}%")
    print(f"single-row latency over {len(latency)} requests: mean {latency.mean():.2f} ms, "
          f"p50 {np.percentile(latency, 50):.2f} ms, p99 {np.percentile(latency, 99):.2f} ms")
    print(f"endpoint {predictor.endpoint_name} deleted")
    return {"accuracy": accuracy, "job_accuracy": float(est.metrics["test:accuracy"]),
            "seconds": seconds, "p50_ms": float(np.percentile(latency, 50))}
