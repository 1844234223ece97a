"""The SageMaker k-NN covtype tutorial (Part 1), step by step, on openknn.

Only the imports and the locations differ from the notebook: the data set is read from a
local file (or downloaded and checked where the network allows), "uploads" go to a local
directory, and the endpoint is a local process. Every print of the original is kept.

    python examples/covtype_tutorial.py [--path covtype.data.gz | Kaggle train.csv.gz]
                                        [--workdir /tmp/covtype]
"""

from __future__ import annotations

import argparse
import io
import os
import time

import numpy as np

from openknn.jobs import datasets
from openknn.sdk import Estimator, csv_serializer, image_uri, json_deserializer
from openknn.sdk import write_numpy_to_dense_tensor as write_numpy_to_dense_tensor


def upload(buf: io.BytesIO, location: str) -> None:
    """Stands in for boto3's upload_fileobj: the 'bucket' is a local directory."""
    os.makedirs(os.path.dirname(location), exist_ok=True)
    with open(location, "wb") as f:
        f.write(buf.getvalue())


def trained_estimator_from_hyperparams(s3_train_data, hyperparams, output_path,
                                       s3_test_data=None):  # type: ignore[no-untyped-def]
    """Create an Estimator from the given hyperparams, fit to training data, and return it."""
    knn = Estimator(image_uri("knn"), "role-not-needed",
                    train_instance_count=1, train_instance_type="local",
                    output_path=output_path)
    knn.set_hyperparameters(**hyperparams)
    fit_input = {"train": s3_train_data}
    if s3_test_data is not None:
        fit_input["test"] = s3_test_data
    knn.fit(fit_input)
    return knn


def predictor_from_estimator(knn_estimator, estimator_name, instance_type,
                             endpoint_name=None):  # type: ignore[no-untyped-def]
    knn_predictor = knn_estimator.deploy(initial_instance_count=1, instance_type=instance_type,
                                         endpoint_name=endpoint_name)
    knn_predictor.content_type = "text/csv"
    knn_predictor.serializer = csv_serializer
    knn_predictor.deserializer = json_deserializer
    return knn_predictor


def delete_endpoint(predictor) -> None:  # type: ignore[no-untyped-def]
    try:
        predictor.delete_endpoint()
        print("Deleted {}".format(predictor.endpoint))
    except Exception:
        print("Already deleted: {}".format(predictor.endpoint))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--path", default=None, help="a local covtype.data(.gz) or Kaggle "
                        "train.csv(.gz); default: download UCI's file (needs the network)")
    parser.add_argument("--workdir", default="/tmp/covtype")
    args = parser.parse_args()

    # 3-1. the data set
    raw_data_file = datasets.covtype_file(args.path)
    # 3-2. read and split 90/10, as the notebook does
    print("Reading raw data from {}".format(raw_data_file))
    raw = datasets.load_covtype(raw_data_file)
    np.random.seed(0)
    np.random.shuffle(raw)
    train_size = int(0.9 * raw.shape[0])
    train_features = raw[:train_size, :-1]
    train_labels = raw[:train_size, -1]
    test_features = raw[train_size:, :-1]
    test_labels = raw[train_size:, -1]

    # 3-3. RecordIO-protobuf, "uploaded" to a local bucket
    bucket = os.path.join(args.workdir, "bucket")
    prefix = "knn-blog-2018-08-08"
    key = "recordio-pb-data"
    print("train_features shape = ", train_features.shape)
    print("train_labels shape = ", train_labels.shape)
    buf = io.BytesIO()
    write_numpy_to_dense_tensor(buf, train_features, train_labels)
    buf.seek(0)
    s3_train_data = os.path.join(bucket, prefix, "train", key)
    upload(buf, s3_train_data)
    print("uploaded training data location: {}".format(s3_train_data))
    print("test_features shape = ", test_features.shape)
    print("test_labels shape = ", test_labels.shape)
    buf = io.BytesIO()
    write_numpy_to_dense_tensor(buf, test_features, test_labels)
    buf.seek(0)
    s3_test_data = os.path.join(bucket, prefix, "test", key)
    upload(buf, s3_test_data)
    print("uploaded test data location: {}".format(s3_test_data))

    # 3-4 / 3-5. training
    hyperparams = {"feature_dim": 54, "k": 10, "sample_size": 200000,
                   "predictor_type": "classifier"}
    output_path = os.path.join(bucket, prefix, "output")
    knn_estimator = trained_estimator_from_hyperparams(
        os.path.dirname(s3_train_data), hyperparams, output_path,
        s3_test_data=os.path.dirname(s3_test_data))

    # 3-6. the endpoint
    instance_type = "local"
    model_name = "knn_%s" % instance_type
    endpoint_name = "knn-local-%s" % (str(time.time()).replace(".", "-"))
    print("setting up the endpoint..")
    predictor = predictor_from_estimator(knn_estimator, model_name, instance_type,
                                         endpoint_name=endpoint_name)
    try:
        # 3-7. predictions over the test set in 100 CSV batches
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
        print("accuracy of model (exact): {!r}".format(float(accuracy)))

        start_time = time.time()
        test_features_work = test_features[:1, ]
        test_label_work = test_labels[:1, ]
        print("test features: {}".format(test_features_work))
        print("test label: {}".format(test_label_work))
        print("prediction: {}".format(predictor.predict(test_features_work)))
        print("time for one prediction: {} seconds".format(time.time() - start_time))
    finally:
        # 3-8. delete the endpoint, also when a step above failed
        delete_endpoint(predictor)


if __name__ == "__main__":
    main()
