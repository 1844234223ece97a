"""SageMaker training jobs on the service: CreateTrainingJob runs openknn's real training job
in a worker process (``service.worker``), and DescribeTrainingJob reports it as SageMaker does
(spec sagemaker-api.md §2, §3): TrainingJobStatus, SecondaryStatus and its transitions
(Starting → Downloading → Training → Uploading → Completed, or Failed with FailureReason),
FinalMetricDataList, ModelArtifacts. The worker's log goes to ``/aws/sagemaker/TrainingJobs``,
stream ``<job>/algo-1-<epoch>``; ListTrainingJobs and StopTrainingJob complete the set.

Each job's Describe document lives in the state; a pump thread per running job reads the
worker's events (stdout) and log (stderr) and updates it. A job left InProgress by a service
that stopped or died is marked Failed, saying so, when the service starts again."""

from __future__ import annotations

import functools
import logging
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from openknn.service import validate
from openknn.service.api import ApiError, Caller, Handler, validation
from openknn.service.job_workers import JobWorkers
from openknn.service.state import Doc, State

log = logging.getLogger(__name__)

KIND = "training-job"
LOG_GROUP = "/aws/sagemaker/TrainingJobs"
MESSAGES = {  # SecondaryStatus → StatusMessage, as SageMaker words them (spec §3)
    "Starting": "Launching requested ML instances",
    "Downloading": "Downloading input data",
    "Training": "Training image download completed. Training in progress.",
    "Uploading": "Uploading generated training model",
    "Completed": "Training job completed",
    "Failed": "Training job failed",
    "Stopping": "Stopping the training job",
    "Stopped": "Training job stopped",
}
TERMINAL = ("Completed", "Failed", "Stopped")
KNN_IMAGE = re.compile(r"^(?:[^/]+/)+knn:[A-Za-z0-9._-]+$")
REPORTED_METRICS = ("test:accuracy", "test:mse")
EVENTS = ("stage", "metrics", "failure", "stopped")  # what the worker says on stdout


def arn(caller: Caller, name: str) -> str:
    return f"arn:aws:sagemaker:{caller.region}:{caller.account}:training-job/{name.lower()}"


def _not_found() -> ApiError:
    return validation("Requested resource not found.")


def _transition(doc: Doc, status: str, now: float, message: str | None = None) -> None:
    """Close the open transition and open ``status``'s (terminal ones close at once)."""
    transitions = doc.setdefault("SecondaryStatusTransitions", [])
    if transitions and "EndTime" not in transitions[-1]:
        transitions[-1]["EndTime"] = now
    entry: dict[str, Any] = {"Status": status, "StartTime": now,
                             "StatusMessage": message or MESSAGES[status]}
    if status in TERMINAL:
        entry["EndTime"] = now
    transitions.append(entry)
    doc["SecondaryStatus"] = status
    doc["LastModifiedTime"] = now


def _finish(doc: Doc, status: str, now: float, reason: str | None = None) -> None:
    doc["TrainingJobStatus"] = status
    _transition(doc, status, now)
    doc["TrainingEndTime"] = now
    start = float(doc.get("TrainingStartTime") or doc["CreationTime"])
    doc["TrainingTimeInSeconds"] = doc["BillableTimeInSeconds"] = max(1, int(now - start))
    if reason is not None:
        doc["FailureReason"] = reason[:1024]


def _channels(body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The job's channels as the worker reads them: URI, content type, data type and
    distribution (the channel names themselves are the algorithm's to judge: the job fails
    on one k-NN does not read, as on SageMaker)."""
    out: dict[str, dict[str, Any]] = {}
    configs = body.get("InputDataConfig") or []
    validate.is_list(configs, "inputDataConfig")
    for i, channel in enumerate(configs):
        where = f"inputDataConfig.{i + 1}.member"
        name = validate.required_str(channel, "ChannelName", where)
        source = (channel.get("DataSource") or {}).get("S3DataSource")
        if not isinstance(source, dict):
            raise validation(f"Channel {name!r}: DataSource.S3DataSource is required; openknn "
                             "reads channels from S3 only")
        uri = validate.required_str(source, "S3Uri", f"{where}.dataSource.s3DataSource")
        validate.s3_uri(uri, f"{where}.dataSource.s3DataSource.s3Uri")
        data_type = validate.enum(source.get("S3DataType", "S3Prefix"),
                                  f"{where}.dataSource.s3DataSource.s3DataType",
                                  ("S3Prefix", "ManifestFile", "AugmentedManifestFile",
                                   "Converse"))
        if data_type not in ("S3Prefix", "ManifestFile"):
            raise validation(f"Channel {name!r}: S3DataType {data_type!r} is not one the k-NN "
                             "algorithm reads; give S3Prefix or ManifestFile")
        distribution = validate.enum(
            source.get("S3DataDistributionType", "FullyReplicated"),
            f"{where}.dataSource.s3DataSource.s3DataDistributionType",
            ("FullyReplicated", "ShardedByS3Key"))
        if name in out:
            raise validation(f"Channel {name!r} is given twice; each channel name once")
        out[name] = {"uri": uri, "content_type": channel.get("ContentType"),
                     "data_type": data_type, "distribution": distribution,
                     "input_mode": channel.get("InputMode")}
    return out


class TrainingJobs:
    """The training jobs of one service: their documents in ``state``, their workers here."""

    def __init__(self, state: State, home: Path, worker_env: Callable[[], dict[str, str]]
                 ) -> None:
        self.state = state
        self.workers = JobWorkers(state, "openknn.service.worker", home / "training-jobs",
                                  LOG_GROUP, EVENTS, worker_env, "training-job")

    # -- life of the service -----------------------------------------------------------------

    def recover(self) -> None:
        """Jobs a previous service left running are Failed now, with a reason saying so."""
        now = time.time()
        for doc in self.state.resources(KIND):
            if doc["TrainingJobStatus"] in ("InProgress", "Stopping"):
                self.state.update(KIND, doc["TrainingJobName"],
                                  functools.partial(self._interrupted, now=now))

    @staticmethod
    def _interrupted(doc: Doc, now: float) -> Doc:
        if doc["TrainingJobStatus"] not in ("InProgress", "Stopping"):
            return doc
        _finish(doc, "Failed", now, "AlgorithmError: openknn up stopped while the job was "
                "running; the job did not finish and wrote no model. Run it again under a "
                "new name")
        return doc

    def shutdown(self, timeout: float = 10.0) -> None:
        """Stop every worker (SIGTERM, then SIGKILL) and mark its job Failed."""
        for name in self.workers.shutdown(timeout):
            self.state.update(KIND, name, functools.partial(self._interrupted, now=time.time()))

    # -- operations --------------------------------------------------------------------------

    def create(self, body: dict[str, Any], caller: Caller) -> dict[str, Any]:
        name = validate.resource_name(body.get("TrainingJobName"), "trainingJobName")
        algorithm = body.get("AlgorithmSpecification")
        if not isinstance(algorithm, dict):
            raise validation("AlgorithmSpecification is required")
        image = algorithm.get("TrainingImage")
        if not isinstance(image, str) or not KNN_IMAGE.match(image):
            raise validation(
                f"TrainingImage {image!r} is not the built-in k-NN algorithm's image "
                "(<registry>/knn:<tag>, as sagemaker.image_uris.retrieve('knn', region) "
                "returns); openknn up runs only the k-NN algorithm")
        validate.enum(algorithm.get("TrainingInputMode", "File"),
                      "algorithmSpecification.trainingInputMode", ("Pipe", "File", "FastFile"))
        validate.role_arn(body.get("RoleArn"), "roleArn")
        output = body.get("OutputDataConfig")
        if not isinstance(output, dict):
            raise validation("OutputDataConfig is required")
        output_path = validate.required_str(output, "S3OutputPath", "outputDataConfig")
        validate.s3_uri(output_path, "outputDataConfig.s3OutputPath")
        resources = body.get("ResourceConfig") or {}
        count = resources.get("InstanceCount", 1)
        if not isinstance(count, int) or count < 1:
            raise validation(f"1 validation error detected: Value {count!r} at "
                             "'resourceConfig.instanceCount' failed to satisfy constraint: "
                             "Member must have value greater than or equal to 1")
        validate.instance_type(resources.get("InstanceType"), "resourceConfig.instanceType",
                               "TrainingInstanceType")
        hps = body.get("HyperParameters") or {}
        if not isinstance(hps, dict) or not all(isinstance(v, str) for v in hps.values()):
            raise validation("HyperParameters must map names to strings")
        channels = _channels(body)
        now = time.time()
        job_arn = arn(caller, name)
        output = {"CompressionType": "GZIP", **output}
        model = f"{output_path.rstrip('/')}/{name}/output/model.tar.gz"
        doc: Doc = {
            "TrainingJobName": name, "TrainingJobArn": job_arn,
            "TrainingJobStatus": "InProgress", "SecondaryStatus": "Starting",
            "AlgorithmSpecification": algorithm, "RoleArn": body["RoleArn"],
            "InputDataConfig": body.get("InputDataConfig") or [],
            "OutputDataConfig": output,
            "ResourceConfig": {"InstanceCount": count, "VolumeSizeInGB": 30, **resources},
            "StoppingCondition": body.get("StoppingCondition") or
            {"MaxRuntimeInSeconds": 86400},
            "HyperParameters": hps, "CreationTime": now, "LastModifiedTime": now,
            "ModelArtifacts": {"S3ModelArtifacts": model},
            "EnableManagedSpotTraining": bool(body.get("EnableManagedSpotTraining", False)),
            "DebugRuleEvaluationStatuses": [],
            "Tags": body.get("Tags") or [],
            "LogStream": f"{name}/algo-1-{int(now)}",
        }
        _transition(doc, "Starting", now)
        if not self.state.insert(KIND, name, doc):
            existing = self.state.get(KIND, name) or {}
            raise ApiError("ResourceInUse", "Training job names must be unique within an AWS "
                           "account and region, and a training job with this name already "
                           f"exists ({existing.get('TrainingJobArn', job_arn)})")
        job = {"name": name, "channels": channels, "hyperparameters": hps,
               "output": model.rsplit("/", 1)[0] + "/", "instance_count": count}
        self._start(name, job, doc["LogStream"])
        return {"TrainingJobArn": job_arn}

    def describe(self, body: dict[str, Any], caller: Caller) -> dict[str, Any]:
        name = body.get("TrainingJobName")
        doc = self.state.get(KIND, name) if isinstance(name, str) else None
        if doc is None:
            raise _not_found()
        doc.pop("LogStream", None)
        doc.pop("Tags", None)
        return doc

    def list(self, body: dict[str, Any], caller: Caller) -> dict[str, Any]:
        return validate.listing(self.state.resources(KIND), body, "TrainingJobName",
                               "TrainingJobSummaries",
                               ("TrainingJobName", "TrainingJobArn", "CreationTime",
                                "TrainingEndTime", "LastModifiedTime", "TrainingJobStatus",
                                "SecondaryStatus"), "TrainingJobStatus",
                               ("InProgress", "Completed", "Failed", "Stopping", "Stopped",
                                "Deleting"), default_order="Ascending")

    def stop(self, body: dict[str, Any], caller: Caller) -> dict[str, Any]:
        name = body.get("TrainingJobName")
        doc = self.state.get(KIND, name) if isinstance(name, str) else None
        if doc is None or not isinstance(name, str):
            raise _not_found()
        if doc["TrainingJobStatus"] != "InProgress":
            raise validation(f"The request was rejected because the training job is in status "
                             f"{doc['TrainingJobStatus']}.")

        def stopping(d: Doc) -> Doc:
            if d["TrainingJobStatus"] == "InProgress":
                d["TrainingJobStatus"] = "Stopping"
                _transition(d, "Stopping", time.time())
            return d

        self.state.update(KIND, name, stopping)
        self.workers.stop(name)
        return {}

    def handlers(self) -> dict[str, Handler]:
        return {"CreateTrainingJob": self.create, "DescribeTrainingJob": self.describe,
                "ListTrainingJobs": self.list, "StopTrainingJob": self.stop}

    # -- the worker --------------------------------------------------------------------------

    def _start(self, name: str, job: dict[str, Any], stream: str) -> None:
        """The job's worker: its stage events move the document on, its other events make
        the outcome, read with its exit status when it ends."""
        outcome: dict[str, Any] = {}

        def on_event(event: dict[str, Any]) -> None:
            if "stage" in event:
                self._stage(name, str(event["stage"]))
            else:
                outcome.update(event)

        def on_end(status: int) -> None:
            self.state.update(KIND, name, lambda d: _ended(d, outcome, status, time.time()))

        self.workers.start(name, job, stream, on_event, on_end)

    def _stage(self, name: str, stage: str) -> None:
        def change(doc: Doc) -> Doc | None:
            if doc["TrainingJobStatus"] != "InProgress" or stage not in MESSAGES:
                return None
            now = time.time()
            if stage == "Downloading":
                doc["TrainingStartTime"] = now
            _transition(doc, stage, now)
            return doc

        self.state.update(KIND, name, change)


def _ended(doc: Doc, outcome: dict[str, Any], status: int, now: float) -> Doc:
    """The job's document once its worker has exited with ``status``."""
    if doc["TrainingJobStatus"] not in ("InProgress", "Stopping"):
        return doc
    if status == 0 and "metrics" in outcome:
        metrics = outcome["metrics"]
        doc["FinalMetricDataList"] = [
            {"MetricName": m, "Value": float(metrics[m]), "Timestamp": now}
            for m in REPORTED_METRICS if m in metrics]
        _finish(doc, "Completed", now)
    elif outcome.get("stopped") or doc["TrainingJobStatus"] == "Stopping":
        _finish(doc, "Stopped", now)
    elif "failure" in outcome:
        _finish(doc, "Failed", now, str(outcome["failure"]))
    else:
        how = (f"was killed by signal {-status}" if status < 0
               else f"exited with status {status} before it reported an outcome")
        _finish(doc, "Failed", now, f"AlgorithmError: the training worker {how}; the job "
                "wrote no model")
    return doc
