"""openknn's own SDK targeting `openknn up`: with ``sagemaker_session=Session()`` (the
environment `openknn env` prints, in this process as in a notebook), ``KNN.record_set``
uploads to the service's default bucket, ``fit`` is a CreateTrainingJob whose log it prints,
``deploy`` makes the model, config and endpoint, ``predict`` is InvokeEndpoint; the answers
are those of the same flow run locally (the oracle), and the service's errors reach the user
as the SDK's exceptions."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from openknn.errors import ClientError, ModelError
from openknn.sdk import (
    KNN,
    CSVSerializer,
    Estimator,
    JSONDeserializer,
    Session,
    UnexpectedStatusException,
)

from ..service_helpers import environment, service

pytest.importorskip("botocore")
s3fs = pytest.importorskip("s3fs")

RNG = np.random.default_rng(8)
X = RNG.standard_normal((300, 6)).astype(np.float32)
Y = (X[:, 0] - X[:, 3] > 0).astype(np.float32)
TRAIN, TEST = slice(0, 250), slice(250, 300)
ARGS: dict[str, Any] = {"k": 5, "sample_size": 250, "predictor_type": "classifier",
                        "instance_type": "local"}


@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("sdk-service")
    with service(root / "home", root / "up.log") as (_, running):
        values = environment(running, root / "home")
        saved = {k: os.environ.get(k) for k in values}
        os.environ.update(values)
        s3fs.S3FileSystem.clear_instance_cache()
        try:
            yield running
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
            s3fs.S3FileSystem.clear_instance_cache()


def flow(session: Session | None, tmp_path: Path) -> tuple[dict[str, Any], Any, KNN]:
    """The SDK's k-NN flow; local locations without a session."""
    local = {} if session else {"output_path": str(tmp_path / "out"),
                                "data_location": str(tmp_path / "records")}
    knn = KNN(role=None, instance_count=1, sagemaker_session=session, **ARGS, **local)
    knn.fit([knn.record_set(X[TRAIN], Y[TRAIN]),
             knn.record_set(X[TEST], Y[TEST], channel="test")])
    predictor = knn.deploy(1, "local", serializer=CSVSerializer(),
                           deserializer=JSONDeserializer())
    try:
        answer = predictor.predict(X[TEST], initial_args={
            "ContentType": "text/csv", "Accept": "application/json; verbose=true"})
    except BaseException:
        predictor.delete_endpoint()
        raise
    return answer, predictor, knn


def test_the_sdk_on_the_service_answers_as_it_does_locally(url: str, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]
                                                          ) -> None:
    session = Session()
    answer, predictor, knn = flow(session, tmp_path)
    printed = capsys.readouterr().out
    local_answer, local_predictor, local_knn = flow(None, tmp_path)
    local_predictor.delete_endpoint()
    assert answer == local_answer and len(answer["predictions"]) == 50
    assert knn.metrics["test:accuracy"] == local_knn.metrics["test:accuracy"]
    assert f"#test_score (algo-1) : ('accuracy', {knn.metrics['test:accuracy']})" in printed
    job = knn.latest_training_job
    assert job is not None and knn.model_data.startswith(
        "s3://sagemaker-us-east-1-000000000000/")
    assert job.describe()["TrainingJobStatus"] == "Completed"
    with pytest.raises(ModelError, match=r"Received client error \(400\) from primary"):
        predictor.predict(X[TEST][:, :3])
    predictor.delete_model()
    predictor.delete_endpoint()
    with pytest.raises(ClientError, match="DescribeEndpoint|describe_endpoint"):
        session.call("sagemaker", "describe_endpoint", EndpointName=predictor.endpoint_name)


def test_a_failed_job_and_a_local_channel_are_the_sdks_errors(url: str, tmp_path: Path) -> None:
    session = Session()
    estimator = Estimator("openknn/knn:1", sagemaker_session=session,
                          hyperparameters={"feature_dim": 9, "k": 3, "sample_size": 100,
                                           "predictor_type": "classifier"})
    prefix = session.upload(_csv(tmp_path / "train.csv"), "sdk-service/train")
    with pytest.raises(UnexpectedStatusException, match=r"Error for Training job knn-.*: "
                                                        r"Failed\. Reason: ClientError: "):
        estimator.fit({"train": prefix}, logs=False)
    with pytest.raises(ClientError, match=r"Channel 'train' location '.*train.csv' is not in "
                                          r"S3; a Session trains on the service's S3"):
        estimator.fit({"train": str(tmp_path / "train.csv")})


def test_a_session_needs_the_services_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    with pytest.raises(ClientError, match=r"AWS_ENDPOINT_URL is not set; start the service "
                                          r"\(openknn up\) and apply its environment"):
        Session()


def _csv(path: Path) -> Path:
    path.write_text("".join(f"{y:g}," + ",".join(f"{v:.5g}" for v in x) + "\n"
                            for x, y in zip(X[TRAIN], Y[TRAIN])))
    return path
