"""The SageMaker k-NN covtype flow written against the real SageMaker Python SDK v3
(``sagemaker==3.*``) and boto3, as a v3 user writes it. Run it against AWS, or against
``openknn up`` with nothing but the environment ``openknn env`` prints. Nothing here imports
openknn.

    openknn up &
    eval "$(openknn env --write-role-metadata)"
    .venv-sagemaker-v3/bin/python tests/sdk/sdk_v3_flow.py \\
        --path ../shared/data/covtype/kaggle-forest-cover-type-prediction_train.csv.gz

v3 has no ``Estimator``, ``KNN`` or ``record_set``, so: the image comes from
``sagemaker.core.image_uris.retrieve("knn", region)``; the tutorial's data (the seed-0 shuffle,
90 % train, 10 % test) go up with boto3 as CSV channels, the label first (``text/csv``: v3's
``sagemaker.core.serializers.utils.write_numpy_to_dense_tensor``, and ``RecordSerializer``
with it, only raise ``NotImplementedError`` in 3.27); a ``ModelTrainer`` trains with k=10;
a ``ModelBuilder`` builds a model from the trainer and deploys an ``Endpoint`` on
ml.m5.large, which is invoked with CSV batches (and once verbose) and deleted, with its
endpoint config and model (v3's ``Endpoint.delete`` leaves those, as on SageMaker).

``--results FILE`` writes the predictions, the resources' names and the timings as JSON (the
repository's SDK v3 test reads it).
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import time
from typing import Any

import boto3
import numpy as np
from sagemaker.core import image_uris
from sagemaker.core.helper.session_helper import Session, get_execution_role
from sagemaker.core.resources import EndpointConfig, Model
from sagemaker.core.shapes import OutputDataConfig
from sagemaker.serve import ModelBuilder
from sagemaker.train import ModelTrainer
from sagemaker.train.configs import Compute, InputData

INSTANCE_TYPE = "ml.m5.large"


def load_covtype(path: str) -> np.ndarray:
    """(N, 55) float64 with the label last: UCI's covtype.data[.gz], or Kaggle's
    train.csv[.gz] (a header and an Id column)."""
    opener: Any = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt") as f:
        kaggle = f.readline().startswith("Id,")
    raw = np.loadtxt(path, delimiter=",", skiprows=1 if kaggle else 0)
    return raw[:, 1:] if kaggle else raw


def csv_text(rows: np.ndarray) -> str:
    buf = io.StringIO()
    np.savetxt(buf, rows, delimiter=",", fmt="%.17g")
    return buf.getvalue()


def upload(features: np.ndarray, labels: np.ndarray, bucket: str, key: str) -> str:
    """One CSV object, the label in the first column, as k-NN's ``text/csv`` channels are."""
    body = io.BytesIO(csv_text(np.column_stack([labels, features])).encode())
    boto3.client("s3").upload_fileobj(body, bucket, key)
    return f"s3://{bucket}/{key}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--path", required=True,
                        help="covtype.data[.gz] (UCI) or Kaggle's train.csv[.gz]")
    parser.add_argument("--prefix", default="knn-sdk-v3")
    parser.add_argument("--batches", type=int, default=10)
    parser.add_argument("--results", default=None, help="write what was measured here")
    args = parser.parse_args()
    started = time.time()
    results: dict[str, Any] = {}

    session = Session()
    region = session.boto_region_name
    bucket = session.default_bucket()
    role = get_execution_role(session)  # /opt/ml/metadata's role, as on a notebook instance
    image = image_uris.retrieve("knn", region)
    print(f"image {image}, bucket {bucket}, role {role}")

    raw = load_covtype(args.path)
    np.random.seed(0)
    np.random.shuffle(raw)
    cut = int(0.9 * raw.shape[0])
    train, test = raw[:cut], raw[cut:]
    print(f"train {train.shape}, test {test.shape}")
    s3_train = upload(train[:, :-1], train[:, -1], bucket, f"{args.prefix}/train/data.csv")
    s3_test = upload(test[:, :-1], test[:, -1], bucket, f"{args.prefix}/test/data.csv")

    trainer = ModelTrainer(
        training_image=image, role=role, base_job_name="knn-v3",
        compute=Compute(instance_type=INSTANCE_TYPE, instance_count=1),
        hyperparameters={"feature_dim": 54, "k": 10, "sample_size": 200000,
                         "predictor_type": "classifier"},
        output_data_config=OutputDataConfig(s3_output_path=f"s3://{bucket}/{args.prefix}/output"))
    clock = time.time()
    trainer.train(input_data_config=[
        InputData(channel_name="train", data_source=s3_train, content_type="text/csv"),
        InputData(channel_name="test", data_source=s3_test, content_type="text/csv"),
    ], wait=True, logs=True)
    job = trainer._latest_training_job
    results["train_seconds"] = time.time() - clock
    results["training_job"] = job.training_job_name
    print(f"training job {job.training_job_name}: {job.training_job_status}")

    clock = time.time()
    builder = ModelBuilder(model=trainer, image_uri=image, role_arn=role,
                           instance_type=INSTANCE_TYPE)
    model = builder.build()
    results["build_seconds"] = time.time() - clock
    endpoint_name = f"knn-v3-{int(time.time() * 1000)}"
    clock = time.time()
    endpoint = builder.deploy(endpoint_name=endpoint_name, initial_instance_count=1)
    results["deploy_seconds"] = time.time() - clock
    print(f"endpoint {endpoint.endpoint_name}: {endpoint.endpoint_status}")

    clock, predictions = time.time(), []
    for batch in np.array_split(test[:, :-1], args.batches):
        answer = endpoint.invoke(body=csv_text(batch), content_type="text/csv",
                                 accept="application/json")
        body = json.loads(answer.body.read())
        predictions.extend(p["predicted_label"] for p in body["predictions"])
    results["invoke_seconds"] = time.time() - clock
    accuracy = float(np.mean(np.array(predictions) == test[:, -1]))
    print(f"accuracy of model: {100 * accuracy:.1f}%")
    answer = endpoint.invoke(body=csv_text(test[:5, :-1]), content_type="text/csv",
                             accept="application/json; verbose=true")
    verbose = json.loads(answer.body.read())["predictions"]
    print(f"verbose answer for the first row: {verbose[0]}")

    config_name = endpoint.endpoint_config_name
    endpoint.delete()
    endpoint.wait_for_delete()
    EndpointConfig.get(endpoint_config_name=config_name).delete()
    Model.get(model_name=model.model_name).delete()
    print(f"deleted endpoint {endpoint_name}, its config {config_name} and model "
          f"{model.model_name}")
    results.update(predictions=predictions, accuracy=accuracy, verbose=verbose,
                   endpoint_name=endpoint_name,
                   endpoint_config_name=config_name, model_name=model.model_name,
                   image=image, wall_seconds=time.time() - started)
    print(f"the whole flow took {results['wall_seconds']:.1f} s")
    if args.results:
        with open(args.results, "w") as f:
            json.dump(results, f)


if __name__ == "__main__":
    main()
