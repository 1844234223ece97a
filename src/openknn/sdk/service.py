"""openknn's SDK against ``openknn up`` (or any SageMaker API): ``Session()`` reads the
environment ``openknn env`` prints, as the real SDK's session does, and an ``Estimator`` /
``KNN`` / ``Model`` given ``sagemaker_session=Session()`` trains with CreateTrainingJob,
deploys with CreateModel, CreateEndpointConfig and CreateEndpoint, and predicts with
InvokeEndpoint, instead of running local processes. The calls go through botocore, the client
library boto3 and the SDK use (``openknn[s3]`` brings it), so they are signed, retried and
configured exactly as theirs.

Locations are S3 here: channels, ``output_path`` and ``data_location`` are ``s3://`` (the
service reads and writes its own store); ``Session.upload`` puts a local file there. The
SDK's ``local`` instance types become the smallest SageMaker ones (``ml.m5.large``, and
``ml.p3.2xlarge`` for ``local_gpu``), since the service checks instance types as SageMaker
does."""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..errors import ClientError, MissingExtraError, ModelError

POLL_S = 0.2  # openknn up answers at once; the real SDK waits 5 s / 30 s between looks
TERMINAL = ("Completed", "Failed", "Stopped")
DEFAULT_ROLE = "arn:aws:iam::000000000000:role/SageMakerRole"
DEFAULT_IMAGE = "382416733822.dkr.ecr.us-east-1.amazonaws.com/knn:1"
INSTANCE_TYPES = {"local": "ml.m5.large", "local_gpu": "ml.p3.2xlarge"}
TRAINING_LOGS = "/aws/sagemaker/TrainingJobs"


class UnexpectedStatusException(ClientError):
    """A training job or endpoint ended Failed (the SDK's exception of the same name)."""


def instance_type(value: str) -> str:
    """A SageMaker instance type for the SDK's ``local`` / ``local_gpu``; others as given."""
    return INSTANCE_TYPES.get(value, value)


class Session:
    """A SageMaker session for the service at ``AWS_ENDPOINT_URL``, with the credentials
    and region botocore finds in the environment. Only the environment, as for the real SDK:
    s3fs, which moves openknn's data, reads the same variables."""

    def __init__(self) -> None:
        try:
            import botocore.session
        except ImportError:
            raise MissingExtraError("openknn.sdk.Session", "s3", "botocore") from None
        self.endpoint_url = os.environ.get("AWS_ENDPOINT_URL")
        if not self.endpoint_url:
            raise ClientError("openknn.sdk.Session() talks to openknn up, and AWS_ENDPOINT_URL "
                              "is not set; start the service (openknn up) and apply its "
                              "environment: eval \"$(openknn env)\"")
        self._botocore = botocore.session.get_session()
        self.region = self._botocore.get_config_variable("region") or "us-east-1"
        self._clients: dict[str, Any] = {}
        self._bucket: str | None = None

    def client(self, service: str) -> Any:
        if service not in self._clients:
            url = self.endpoint_url
            if service == "s3":
                url = os.environ.get("AWS_ENDPOINT_URL_S3") or url
            self._clients[service] = self._botocore.create_client(
                service, region_name=self.region, endpoint_url=url)
        return self._clients[service]

    def call(self, service: str, operation: str, **request: Any) -> dict[str, Any]:
        """One API call; the service's error is a ClientError with its code and message."""
        from botocore.exceptions import ClientError as BotoClientError
        from botocore.exceptions import EndpointConnectionError

        try:
            return dict(getattr(self.client(service), operation)(**request))
        except BotoClientError as exc:
            error = exc.response.get("Error", {})
            code, message = error.get("Code", "?"), error.get("Message", str(exc))
            if code == "ModelError":
                raise ModelError(message) from None
            raise ClientError(f"{operation}: {code}: {message}") from None
        except EndpointConnectionError as exc:
            raise ClientError(f"{operation}: no service answers at {self.endpoint_url} "
                              f"({exc}); start it with openknn up") from None

    def default_bucket(self) -> str:
        """``sagemaker-<region>-<account>``, as the SDK names it, made if missing."""
        if self._bucket is None:
            account = self.call("sts", "get_caller_identity")["Account"]
            bucket = f"sagemaker-{self.region}-{account}"
            names = [b["Name"] for b in self.call("s3", "list_buckets").get("Buckets", [])]
            if bucket not in names:
                self.call("s3", "create_bucket", Bucket=bucket)
            self._bucket = bucket
        return self._bucket

    def upload(self, path: str | os.PathLike[str], key_prefix: str,
               bucket: str | None = None) -> str:
        """Upload a local file, or every file under a local directory, to
        ``s3://bucket/key_prefix/`` (the default bucket unless given) the way every openknn
        output goes to S3 (``storage.staged_output``: s3fs, multipart for large files, the
        objects only once all are copied); the ``s3://`` prefix they are under."""
        from ..jobs.storage import staged_output

        root = Path(path)
        if not root.exists():
            raise ClientError(f"{str(root)!r} does not exist; give a file or directory")
        prefix = f"s3://{bucket or self.default_bucket()}/{key_prefix.strip('/')}/"
        with staged_output(prefix, "Session.upload") as staging:
            if root.is_dir():
                shutil.copytree(root, staging, dirs_exist_ok=True)
            else:
                shutil.copy2(root, staging / root.name)
        return prefix


class ServiceTrainingJob:
    """A training job on the service, read back as the local ``TrainingJob`` is."""

    def __init__(self, session: Session, name: str) -> None:
        self.session, self.name = session, name
        self._metrics: dict[str, Any] | None = None

    def describe(self) -> dict[str, Any]:
        return self.session.call("sagemaker", "describe_training_job", TrainingJobName=self.name)

    @property
    def model_data(self) -> str:
        return str(self.describe()["ModelArtifacts"]["S3ModelArtifacts"])

    def wait(self, logs: bool = True) -> None:
        """Until the job ends, printing its log as it grows; UnexpectedStatusException if it
        failed (the SDK's words)."""
        token: str | None = None
        while True:
            job = self.describe()
            if logs:
                token = self._print_log(token)
            if job["TrainingJobStatus"] in TERMINAL:
                break
            time.sleep(POLL_S)
        if logs:
            self._print_log(token)
        if job["TrainingJobStatus"] == "Failed":
            raise UnexpectedStatusException(f"Error for Training job {self.name}: Failed. "
                                            f"Reason: {job.get('FailureReason', '')}")

    def _print_log(self, token: str | None) -> str | None:
        try:
            streams = self.session.call("logs", "describe_log_streams",
                                        logGroupName=TRAINING_LOGS,
                                        logStreamNamePrefix=f"{self.name}/")["logStreams"]
        except ClientError as exc:
            if "ResourceNotFoundException" not in str(exc):
                raise
            return token  # no log yet: the job's first line makes the group, as on AWS
        if not streams:
            return token
        request: dict[str, Any] = {"logGroupName": TRAINING_LOGS, "startFromHead": True,
                                   "logStreamName": streams[0]["logStreamName"]}
        while True:
            if token:
                request["nextToken"] = token
            page = self.session.call("logs", "get_log_events", **request)
            for event in page.get("events", []):
                sys.stdout.write(event["message"] + "\n")
            sys.stdout.flush()
            if not page.get("events") or page.get("nextForwardToken") == token:
                return page.get("nextForwardToken", token)
            token = page.get("nextForwardToken")

    def metrics(self) -> dict[str, Any]:
        """The job's metrics.json from S3 (empty until it is there)."""
        if self._metrics is None:
            location = self.model_data.rsplit("/", 1)[0] + "/metrics.json"
            bucket, key = location[len("s3://"):].split("/", 1)
            try:
                body = self.session.call("s3", "get_object", Bucket=bucket, Key=key)["Body"]
            except ClientError:
                return {}
            self._metrics = dict(json.loads(body.read()))
        return self._metrics


def train(session: Session, name: str, image: str | None, role: str | None,
          hyperparameters: Mapping[str, str], channels: Mapping[str, Any], output_path: str,
          instance: str, count: int) -> ServiceTrainingJob:
    """CreateTrainingJob for the estimator's settings (``channels``: TrainingInputs)."""
    inputs = []
    for channel, spec in channels.items():
        if not str(spec.s3_data).startswith("s3://"):
            raise ClientError(f"Channel {channel!r} location {spec.s3_data!r} is not in S3; a "
                              "Session trains on the service's S3: upload it first "
                              "(Session().upload(path, prefix)) or give record_set an "
                              "s3:// data_location")
        source = {"S3DataType": spec.s3_data_type, "S3Uri": spec.s3_data,
                  "S3DataDistributionType": spec.distribution}
        entry: dict[str, Any] = {"ChannelName": channel,
                                 "DataSource": {"S3DataSource": source}}
        if spec.content_type:
            entry["ContentType"] = spec.content_type
        inputs.append(entry)
    if not output_path.startswith("s3://"):
        output_path = f"s3://{session.default_bucket()}/"
    session.call("sagemaker", "create_training_job", TrainingJobName=name,
                 AlgorithmSpecification={"TrainingImage": _image(image),
                                         "TrainingInputMode": "File"},
                 RoleArn=role or DEFAULT_ROLE, InputDataConfig=inputs,
                 OutputDataConfig={"S3OutputPath": output_path},
                 ResourceConfig={"InstanceType": instance_type(instance),
                                 "InstanceCount": count, "VolumeSizeInGB": 30},
                 StoppingCondition={"MaxRuntimeInSeconds": 86400},
                 HyperParameters=dict(hyperparameters))
    return ServiceTrainingJob(session, name)


def _image(image: str | None) -> str:
    return image if image and image.rsplit("/", 1)[-1].startswith("knn:") else DEFAULT_IMAGE


def deploy(session: Session, name: str, model_data: str, image: str | None, role: str | None,
           instance: str, count: int) -> None:
    """CreateModel, CreateEndpointConfig and CreateEndpoint (all named ``name``, as SDK v2
    names its endpoint config), then until the endpoint is InService; a Failed endpoint is
    UnexpectedStatusException with its reason (the SDK's words)."""
    session.call("sagemaker", "create_model", ModelName=name, ExecutionRoleArn=role or
                 DEFAULT_ROLE, PrimaryContainer={"Image": _image(image),
                                                 "ModelDataUrl": model_data})
    session.call("sagemaker", "create_endpoint_config", EndpointConfigName=name,
                 ProductionVariants=[{"VariantName": "AllTraffic", "ModelName": name,
                                      "InitialInstanceCount": count,
                                      "InstanceType": instance_type(instance),
                                      "InitialVariantWeight": 1.0}])
    session.call("sagemaker", "create_endpoint", EndpointName=name, EndpointConfigName=name)
    while True:
        endpoint = session.call("sagemaker", "describe_endpoint", EndpointName=name)
        if endpoint["EndpointStatus"] not in ("Creating", "Updating"):
            break
        time.sleep(POLL_S)
    if endpoint["EndpointStatus"] != "InService":
        raise UnexpectedStatusException(
            f"Error hosting endpoint {name}: {endpoint['EndpointStatus']}. Reason: "
            f"{endpoint.get('FailureReason', '')}")


def invoke(session: Session, name: str, body: bytes, content_type: str,
           accept: str) -> tuple[bytes, str]:
    """InvokeEndpoint: the answer's body and Content-Type."""
    answer = session.call("sagemaker-runtime", "invoke_endpoint", EndpointName=name, Body=body,
                          ContentType=content_type, Accept=accept)
    return answer["Body"].read(), str(answer.get("ContentType", ""))


def delete_endpoint(session: Session, name: str, delete_config: bool = True) -> None:
    config = session.call("sagemaker", "describe_endpoint", EndpointName=name)[
        "EndpointConfigName"]
    session.call("sagemaker", "delete_endpoint", EndpointName=name)
    if delete_config:
        session.call("sagemaker", "delete_endpoint_config", EndpointConfigName=config)


def delete_model(session: Session, name: str) -> None:
    session.call("sagemaker", "delete_model", ModelName=name)
