"""Batch transform written against the real SageMaker Python SDK v2 (``sagemaker==2.*``), as
a v2 user writes it: a ``Model`` of the k-NN image and a ``model.tar.gz`` already in S3, its
``transformer(...)``, and ``transform(..., wait=True, logs=True)`` over an S3 prefix of CSV
files; then a second transform over a prefix holding a bad row, which the SDK reports as
``UnexpectedStatusException`` with the job's FailureReason. Run it against AWS, or against
``openknn up`` with nothing but the environment ``openknn env`` prints. Nothing here imports
openknn.

    .venv-sagemaker/bin/python tests/sdk/sdk_v2_transform_flow.py --model-data S3URI \\
        --input S3PREFIX --bad-input S3PREFIX --output S3PREFIX --results results.json
"""

from __future__ import annotations

import argparse
import json
import time

import sagemaker
from sagemaker.exceptions import UnexpectedStatusException
from sagemaker.model import Model

ROLE = "arn:aws:iam::000000000000:role/SageMakerRole"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    for name in ("--model-data", "--input", "--bad-input", "--output", "--results"):
        parser.add_argument(name, required=True)
    args = parser.parse_args()
    session = sagemaker.Session()
    image = sagemaker.image_uris.retrieve("knn", session.boto_region_name)
    model = Model(image_uri=image, model_data=args.model_data, role=ROLE,
                  sagemaker_session=session)
    transformer = model.transformer(instance_count=1, instance_type="ml.m5.large",
                                    strategy="MultiRecord", assemble_with="Line",
                                    output_path=args.output, accept="application/jsonlines")
    started = time.monotonic()
    transformer.transform(args.input, content_type="text/csv", split_type="Line", wait=True,
                          logs=True)
    seconds = time.monotonic() - started
    job = transformer.latest_transform_job.name
    described = session.describe_transform_job(job)
    attached = sagemaker.transformer.Transformer.attach(job, sagemaker_session=session)

    failing = model.transformer(instance_count=1, instance_type="ml.m5.large",
                                output_path=args.output + "-bad",
                                accept="application/jsonlines", assemble_with="Line")
    try:
        failing.transform(args.bad_input, content_type="text/csv", split_type="Line",
                          wait=True, logs=True)
        error = None
    except UnexpectedStatusException as exc:
        error = str(exc)
    with open(args.results, "w") as f:
        json.dump({"job": job, "model": model.name, "seconds": seconds,
                   "status": described["TransformJobStatus"],
                   "output_path": attached.output_path, "accept": attached.accept,
                   "assemble_with": attached.assemble_with, "strategy": attached.strategy,
                   "error": error}, f)


if __name__ == "__main__":
    main()
