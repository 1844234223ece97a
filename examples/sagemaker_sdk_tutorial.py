"""The SageMaker k-NN covtype tutorial, Part 1 and Part 2, written against the real SageMaker
Python SDK v2 and boto3: run it against AWS, or against `openknn up` with nothing but the
environment `openknn env` prints. Nothing here imports openknn.

    openknn up &                                   # one terminal, or in the background
    eval "$(openknn env --write-role-metadata)"    # the SDK and boto3 now talk to openknn
    .venv-sagemaker/bin/python examples/sagemaker_sdk_tutorial.py \\
        --path ../shared/data/covtype/kaggle-forest-cover-type-prediction_train.csv.gz

Part 1 is the tutorial's calls: the seed-0 90/10 split, the RecordIO channels uploaded with
``upload_fileobj`` to ``default_bucket()``, an ``Estimator`` of ``get_image_uri(..., "knn")``
with ``get_execution_role()`` trained with k=10 (``fit`` prints the job's log, its test
accuracy line among them), ``deploy`` on ml.m4.xlarge, 100 CSV ``predict`` batches and their
accuracy, one row, verbose labels, and boto3's ``delete_endpoint``. The one change SDK v2
needs is the import of ``csv_serializer`` and ``json_deserializer`` from
``sagemaker.base_predictor`` (the notebook's ``sagemaker.predictor`` no longer has them).

Part 2 trains a k=100 IVFPQ model (``faiss_index_pq_m`` 8), deploys it on ml.p2.xlarge (a GPU
type: openknn searches on a GPU where faiss sees one, and on the CPU otherwise, saying so in
the endpoint's log), reads the 100 verbose labels of every test row to find the accuracy for
each k from 1 to 12, times single-row requests, and deletes the endpoint, its config and model
with the predictor's own calls (``delete_model`` first: it looks the model up through the
endpoint, so after ``delete_endpoint`` it fails, on SageMaker as here).

``--results FILE`` writes what was measured as JSON (the repository's SDK test reads it).
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import os
import time
from typing import Any

import boto3
import numpy as np
import sagemaker
import sagemaker.amazon.common as smac
from sagemaker import get_execution_role
from sagemaker.amazon.amazon_estimator import get_image_uri
from sagemaker.base_predictor import csv_serializer, json_deserializer  # SDK v2's home of them


def load_covtype(path: str) -> np.ndarray:
    """The tutorial's raw array, (N, 55) float64 with the label last: UCI's covtype.data[.gz]
    as the notebook reads it, or Kaggle's train.csv[.gz] (a header and an Id column)."""
    opener: Any = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt") as f:
        first = f.readline()
    kaggle = first.startswith("Id,")
    raw = np.loadtxt(path, delimiter=",", skiprows=1 if kaggle else 0)
    return raw[:, 1:] if kaggle else raw


def trained_estimator_from_hyperparams(s3_train_data: str, hyperparams: dict[str, Any],
                                       output_path: str, s3_test_data: str | None = None
                                       ) -> Any:
    """Create an Estimator from the given hyperparams, fit to training data, and return it
    (the tutorial's function, with get_image_uri for its table of images)."""
    knn = sagemaker.estimator.Estimator(
        get_image_uri(boto3.Session().region_name, "knn"),
        get_execution_role(),
        train_instance_count=1,
        train_instance_type="ml.m5.2xlarge",
        output_path=output_path,
        sagemaker_session=sagemaker.Session())
    knn.set_hyperparameters(**hyperparams)
    fit_input = {"train": s3_train_data}
    if s3_test_data is not None:
        fit_input["test"] = s3_test_data
    knn.fit(fit_input)
    return knn


def predictor_from_estimator(knn_estimator: Any, estimator_name: str, instance_type: str,
                             endpoint_name: str | None = None) -> Any:
    knn_predictor = knn_estimator.deploy(initial_instance_count=1, instance_type=instance_type,
                                         endpoint_name=endpoint_name)
    knn_predictor.content_type = "text/csv"
    knn_predictor.serializer = csv_serializer
    knn_predictor.deserializer = json_deserializer
    return knn_predictor


def delete_endpoint(predictor: Any) -> None:
    try:
        boto3.client("sagemaker").delete_endpoint(EndpointName=predictor.endpoint)
        print("Deleted {}".format(predictor.endpoint))
    except Exception:
        print("Already deleted: {}".format(predictor.endpoint))


def upload(features: np.ndarray, labels: np.ndarray, bucket: str, prefix: str,
           channel: str, key: str = "recordio-pb-data") -> str:
    buf = io.BytesIO()
    smac.write_numpy_to_dense_tensor(buf, features, labels)
    buf.seek(0)
    boto3.resource("s3").Bucket(bucket).Object(
        os.path.join(prefix, channel, key)).upload_fileobj(buf)
    location = "s3://{}/{}/{}/{}".format(bucket, prefix, channel, key)
    print("uploaded {} data location: {}".format(channel, location))
    return location


def part1(raw: np.ndarray, bucket: str, prefix: str, results: dict[str, Any]) -> tuple[
        Any, str, str, np.ndarray, np.ndarray]:
    np.random.seed(0)
    np.random.shuffle(raw)
    train_size = int(0.9 * raw.shape[0])
    train_features, train_labels = raw[:train_size, :-1], raw[:train_size, -1]
    test_features, test_labels = raw[train_size:, :-1], raw[train_size:, -1]
    print("train_features shape = ", train_features.shape)
    print("test_features shape = ", test_features.shape)
    s3_train_data = upload(train_features, train_labels, bucket, prefix, "train")
    s3_test_data = upload(test_features, test_labels, bucket, prefix, "test")

    hyperparams = {"feature_dim": 54, "k": 10, "sample_size": 200000,
                   "predictor_type": "classifier"}
    output_path = "s3://" + bucket + "/" + prefix + "/output"
    started = time.time()
    knn_estimator = trained_estimator_from_hyperparams(s3_train_data, hyperparams, output_path,
                                                       s3_test_data=s3_test_data)
    results["fit_seconds"] = time.time() - started

    instance_type = "ml.m4.xlarge"
    model_name = "knn_%s" % instance_type
    endpoint_name = "knn-ml-m4-xlarge-%s" % (str(time.time()).replace(".", "-"))
    print("setting up the endpoint..")
    started = time.time()
    predictor = predictor_from_estimator(knn_estimator, model_name, instance_type,
                                         endpoint_name=endpoint_name)
    results["deploy_seconds"] = time.time() - started

    batches = np.array_split(test_features, 100)
    print("data split into 100 batches, of size %d." % batches[0].shape[0])
    start_time = time.time()
    predictions = []
    for batch in batches:
        result = predictor.predict(batch)
        cur_predictions = np.array([result["predictions"][i]["predicted_label"]
                                    for i in range(len(result["predictions"]))])
        predictions.append(cur_predictions)
    predictions = np.concatenate(predictions)
    run_time = time.time() - start_time
    test_size = test_labels.shape[0]
    num_correct = sum(predictions == test_labels)
    accuracy = num_correct / float(test_size)
    print("time required for predicting %d data point: %.2f seconds" % (test_size, run_time))
    print("accuracy of model: %.1f%%" % (accuracy * 100))
    print("inference for one row: {}".format(predictor.predict(test_features[:1, ])))
    verbose = predictor.predict(test_features[:5], initial_args={
        "ContentType": "text/csv", "Accept": "application/json; verbose=true"})
    print("verbose answer for the first row: {}".format(verbose["predictions"][0]))
    results.update(predictions=predictions.tolist(), accuracy=accuracy,
                   predict_seconds=run_time, verbose=verbose["predictions"],
                   endpoint_name=endpoint_name, training_job=knn_estimator.latest_training_job.name)
    delete_endpoint(predictor)
    return knn_estimator, s3_train_data, s3_test_data, test_features, test_labels


def part2(s3_train_data: str, s3_test_data: str, test_features: np.ndarray,
          test_labels: np.ndarray, bucket: str, prefix: str, results: dict[str, Any],
          single_rows: int) -> None:
    hyperparams = {"feature_dim": 54, "k": 100, "sample_size": 200000,
                   "predictor_type": "classifier", "index_type": "faiss.IVFPQ",
                   "index_metric": "L2", "faiss_index_ivf_nlists": "auto",
                   "faiss_index_pq_m": "8"}
    output_path = "s3://" + bucket + "/" + prefix + "/output-part2"
    knn_estimator = trained_estimator_from_hyperparams(s3_train_data, hyperparams, output_path,
                                                       s3_test_data=s3_test_data)
    instance_type = "ml.p2.xlarge"
    endpoint_name = "knn-ivfpq-ml-p2-xlarge-%s" % (str(time.time()).replace(".", "-"))
    predictor = predictor_from_estimator(knn_estimator, "knn_ivfpq", instance_type,
                                         endpoint_name=endpoint_name)
    labels = []
    for batch in np.array_split(test_features, 100):
        result = predictor.predict(batch, initial_args={
            "ContentType": "text/csv", "Accept": "application/json; verbose=true"})
        labels.extend(row["labels"] for row in result["predictions"])
    neighbours = np.array(labels)  # (rows, 100): the labels of each row's 100 neighbours
    by_k = {}
    for k in range(1, 13):
        votes = [np.unique(row[:k], return_counts=True) for row in neighbours]
        predicted = np.array([values[np.argmax(counts)] for values, counts in votes])
        by_k[k] = float(np.mean(predicted == test_labels))
    print("accuracy by k: " + ", ".join("%d: %.1f%%" % (k, 100 * a) for k, a in by_k.items()))
    latencies = []
    for row in test_features[:single_rows]:
        started = time.perf_counter()
        predictor.predict(row.reshape(1, -1))
        latencies.append((time.perf_counter() - started) * 1000)
    print("single-row latency: p50 %.1f ms, p99 %.1f ms over %d requests" % (
        np.percentile(latencies, 50), np.percentile(latencies, 99), len(latencies)))
    results["part2"] = {"accuracy_by_k": by_k, "endpoint_name": endpoint_name,
                        "single_row_ms_p50": float(np.percentile(latencies, 50)),
                        "single_row_ms_p99": float(np.percentile(latencies, 99))}
    predictor.delete_model()  # before delete_endpoint: it finds the model through the endpoint
    predictor.delete_endpoint()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--path", required=True,
                        help="covtype.data[.gz] (UCI) or Kaggle's train.csv[.gz]")
    parser.add_argument("--prefix", default="knn-blog-2018-08-08")
    parser.add_argument("--single-rows", type=int, default=200,
                        help="Part 2's one-row requests (the notebook sends 2,000)")
    parser.add_argument("--skip-part2", action="store_true")
    parser.add_argument("--results", default=None, help="write the measured figures here")
    args = parser.parse_args()
    started = time.time()
    results: dict[str, Any] = {}
    bucket = sagemaker.Session().default_bucket()
    raw = load_covtype(args.path)
    _, s3_train, s3_test, test_features, test_labels = part1(raw, bucket, args.prefix, results)
    if not args.skip_part2:
        part2(s3_train, s3_test, test_features, test_labels, bucket, args.prefix, results,
              args.single_rows)
    results["wall_seconds"] = time.time() - started
    print("the whole tutorial took %.1f s" % results["wall_seconds"])
    if args.results:
        with open(args.results, "w") as f:
            json.dump(results, f)


if __name__ == "__main__":
    main()
