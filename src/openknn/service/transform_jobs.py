"""SageMaker batch transform jobs on the service: CreateTransformJob runs openknn's real batch
transform (``openknn transform``'s, over S3) in a worker process (``service.transform_worker``)
with the model a CreateModel named, and DescribeTransformJob reports it as SageMaker does:
TransformJobStatus InProgress → Completed, or Failed with FailureReason, or Stopping → Stopped
after StopTransformJob; TransformStartTime and TransformEndTime. The worker's log goes to
``/aws/sagemaker/TransformJobs``, stream ``<job>/i-<16 hex>-<epoch>``; ListTransformJobs
completes the set (decision 39).

Each job's Describe document lives in the state; a pump thread per running job reads the
worker's events (stdout) and log (stderr) and updates it. A job left InProgress by a service
that stopped or died is marked Failed, saying so, when the service starts again."""

from __future__ import annotations

import functools
import logging
import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from openknn.service import hosting, validate
from openknn.service.api import ApiError, Caller, Handler, validation
from openknn.service.job_workers import JobWorkers
from openknn.service.state import Doc, State

log = logging.getLogger(__name__)

KIND = "transform-job"
LOG_GROUP = "/aws/sagemaker/TransformJobs"
STATUSES = ("InProgress", "Completed", "Failed", "Stopping", "Stopped")
EVENTS = ("started", "done", "failure", "stopped")  # what the worker says on stdout
RUNNING = ("InProgress", "Stopping")
MAX_PAYLOAD_MB = 100  # SageMaker's limit, for MaxPayloadInMB × MaxConcurrentTransforms too
IDENTITY_FILTER = (None, "$")


def arn(caller: Caller, name: str) -> str:
    return hosting.arn(caller, KIND, name)


def _not_found() -> ApiError:
    return validation("Requested resource not found.")


def _struct(body: dict[str, Any], name: str) -> dict[str, Any]:
    value = body.get(name)
    if not isinstance(value, dict):
        raise validation(f"{name} is required")
    return value


def _input(body: dict[str, Any]) -> dict[str, Any]:
    """TransformInput, checked, with SageMaker's defaults (SplitType and CompressionType
    None). ContentType is the algorithm's to judge: k-NN fails the job on one it cannot
    read, as on SageMaker."""
    given = _struct(body, "TransformInput")
    source = (given.get("DataSource") or {}).get("S3DataSource")
    if not isinstance(source, dict):
        raise validation("TransformInput.DataSource.S3DataSource is required; openknn reads "
                         "transform input from S3 only")
    where = "transformInput.dataSource.s3DataSource"
    data_type = validate.enum(source.get("S3DataType"), f"{where}.s3DataType",
                              ("ManifestFile", "S3Prefix", "AugmentedManifestFile", "Converse"))
    if data_type not in ("S3Prefix", "ManifestFile"):
        raise validation(f"S3DataType {data_type!r} is not one the k-NN algorithm reads; give "
                         "S3Prefix or ManifestFile")
    uri = validate.s3_uri(validate.required_str(source, "S3Uri", where), f"{where}.s3Uri")
    content_type = given.get("ContentType")
    if content_type is not None and not isinstance(content_type, str):
        raise validation("TransformInput.ContentType must be a string, e.g. text/csv")
    return {**given, "SplitType": validate.enum(given.get("SplitType", "None"),
                                                "transformInput.splitType",
                                                ("None", "Line", "RecordIO", "TFRecord")),
            "CompressionType": validate.enum(given.get("CompressionType", "None"),
                                             "transformInput.compressionType",
                                             ("None", "Gzip")),
            "DataSource": {"S3DataSource": {"S3DataType": data_type, "S3Uri": uri}}}


def _output(body: dict[str, Any]) -> dict[str, Any]:
    given = _struct(body, "TransformOutput")
    path = validate.required_str(given, "S3OutputPath", "transformOutput")
    validate.s3_uri(path, "transformOutput.s3OutputPath")
    accept = given.get("Accept")
    if accept is not None and not isinstance(accept, str):
        raise validation("TransformOutput.Accept must be a string, e.g. application/jsonlines")
    if "AssembleWith" in given:
        validate.enum(given["AssembleWith"], "transformOutput.assembleWith", ("None", "Line"))
    return given


def _resources(body: dict[str, Any]) -> dict[str, Any]:
    given = _struct(body, "TransformResources")
    count = given.get("InstanceCount")
    if not isinstance(count, int) or isinstance(count, bool) or count < 1:
        raise validation(f"1 validation error detected: Value {count!r} at "
                         "'transformResources.instanceCount' failed to satisfy constraint: "
                         "Member must have value greater than or equal to 1")
    validate.instance_type(given.get("InstanceType"), "transformResources.instanceType",
                           "TransformInstanceType")
    return given


def _count(body: dict[str, Any], name: str, low: int) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        where = name[0].lower() + name[1:]
        raise validation(f"1 validation error detected: Value {value!r} at '{where}' failed "
                         f"to satisfy constraint: Member must have value greater than or "
                         f"equal to {low}")
    return value


def _batching(body: dict[str, Any]) -> None:
    """BatchStrategy, MaxPayloadInMB and MaxConcurrentTransforms as SageMaker bounds them;
    MaxPayloadInMB 0 (streaming) is refused, as built-in algorithms do not stream."""
    if "BatchStrategy" in body:
        validate.enum(body["BatchStrategy"], "batchStrategy", ("MultiRecord", "SingleRecord"))
    payload = _count(body, "MaxPayloadInMB", 0)
    concurrent = _count(body, "MaxConcurrentTransforms", 0) or 1
    if payload == 0:
        raise validation("MaxPayloadInMB 0 asks for streamed (HTTP chunked) requests, which "
                         "the k-NN algorithm does not take; give 1 to 100 (default 6)")
    if payload is not None and payload * concurrent > MAX_PAYLOAD_MB:
        raise validation(f"MaxPayloadInMB ({payload}) times MaxConcurrentTransforms "
                         f"({concurrent}) must not exceed {MAX_PAYLOAD_MB} MB")
    client = body.get("ModelClientConfig")
    if client is not None and not isinstance(client, dict):
        raise validation("ModelClientConfig must be an object")
    env = body.get("Environment") or {}
    if not isinstance(env, dict) or not all(isinstance(v, str) for v in env.values()):
        raise validation("Environment must map names to strings")


def _refused(body: dict[str, Any]) -> None:
    """What SageMaker's platform does around the container and openknn up does not: refused
    with the reason, never ignored (identity DataProcessing passes)."""
    processing = body.get("DataProcessing") or {}
    if not isinstance(processing, dict):
        raise validation("DataProcessing must be an object")
    odd = [f"{k} {processing.get(k)!r}" for k in ("InputFilter", "OutputFilter")
           if processing.get(k) not in IDENTITY_FILTER]
    if processing.get("JoinSource") not in (None, "None"):
        odd.append(f"JoinSource {processing['JoinSource']!r}")
    if odd:
        raise validation(f"DataProcessing ({', '.join(odd)}) is not applied by openknn up: "
                         "it answers whole records and writes the predictions only. Leave "
                         "DataProcessing out (or give InputFilter and OutputFilter '$', "
                         "JoinSource None)")
    if body.get("DataCaptureConfig"):
        raise validation("DataCaptureConfig is not served by openknn up; leave it out (the "
                         "job's outputs and log are under TransformOutput.S3OutputPath and "
                         f"{LOG_GROUP})")


class TransformJobs:
    """The transform jobs of one service: their documents in ``state``, their workers here."""

    def __init__(self, state: State, home: Path, worker_env: Callable[[], dict[str, str]]
                 ) -> None:
        self.state = state
        self.workers = JobWorkers(state, "openknn.service.transform_worker",
                                  home / "transform-jobs", LOG_GROUP, EVENTS, worker_env,
                                  "transform-job")

    # -- life of the service -----------------------------------------------------------------

    def recover(self) -> None:
        """Jobs a previous service left running are Failed now, with a reason saying so."""
        now = time.time()
        for doc in self.state.resources(KIND):
            if doc["TransformJobStatus"] in RUNNING:
                self.state.update(KIND, doc["TransformJobName"],
                                  functools.partial(self._interrupted, now=now))

    @staticmethod
    def _interrupted(doc: Doc, now: float) -> Doc:
        if doc["TransformJobStatus"] not in RUNNING:
            return doc
        _finish(doc, "Failed", now, "AlgorithmError: openknn up stopped while the transform "
                "job was running; the job did not finish and wrote no output. Run it again "
                "under a new name")
        return doc

    def shutdown(self, timeout: float = 10.0) -> None:
        """Stop every worker (SIGTERM, then SIGKILL) and mark its job Failed."""
        for name in self.workers.shutdown(timeout):
            self.state.update(KIND, name, functools.partial(self._interrupted, now=time.time()))

    # -- operations --------------------------------------------------------------------------

    def create(self, body: dict[str, Any], caller: Caller) -> dict[str, Any]:
        name = validate.resource_name(body.get("TransformJobName"), "transformJobName")
        model_name = hosting.model_name(body.get("ModelName"), "modelName")
        source, output, resources = _input(body), _output(body), _resources(body)
        _batching(body)
        _refused(body)
        model = self.state.get(hosting.MODEL, model_name)
        if model is None:
            raise hosting.not_found(hosting.MODEL, caller, model_name)
        now = time.time()
        job_arn = arn(caller, name)
        instance = "i-" + secrets.token_hex(8)
        doc: Doc = {
            "TransformJobName": name, "TransformJobArn": job_arn,
            "TransformJobStatus": "InProgress", "ModelName": model_name,
            "TransformInput": source, "TransformOutput": output,
            "TransformResources": resources, "Environment": body.get("Environment") or {},
            "CreationTime": now, "LastModifiedTime": now,
            "Tags": body.get("Tags") or [], "LogStream": f"{name}/{instance}-{int(now)}",
        }
        for optional in ("BatchStrategy", "MaxPayloadInMB", "MaxConcurrentTransforms",
                         "ModelClientConfig", "DataProcessing", "ExperimentConfig"):
            if body.get(optional) is not None:
                doc[optional] = body[optional]
        if not self.state.insert(KIND, name, doc):
            existing = self.state.get(KIND, name) or {}
            raise ApiError("ResourceInUse", "Transform job names must be unique within an AWS "
                           "account and region, and a transform job with this name already "
                           f"exists ({existing.get('TransformJobArn', job_arn)})")
        container = model["PrimaryContainer"]
        s3 = source["DataSource"]["S3DataSource"]
        job = {"name": name, "model": container["ModelDataUrl"], "instance": instance,
               "instance_type": resources["InstanceType"],
               "instance_count": resources["InstanceCount"],
               "input": {"uri": s3["S3Uri"], "data_type": s3["S3DataType"],
                         "content_type": source.get("ContentType"),
                         "split_type": source["SplitType"],
                         "compression": source["CompressionType"]},
               "output": {"uri": output["S3OutputPath"], "accept": output.get("Accept"),
                          "assemble_with": output.get("AssembleWith", "None")},
               "batch_strategy": body.get("BatchStrategy"),
               "max_payload_mb": body.get("MaxPayloadInMB")}
        env = {**container.get("Environment", {}), **doc["Environment"]}
        self._start(name, job, env, doc["LogStream"])
        return {"TransformJobArn": job_arn}

    def describe(self, body: dict[str, Any], caller: Caller) -> dict[str, Any]:
        name = body.get("TransformJobName")
        doc = self.state.get(KIND, name) if isinstance(name, str) else None
        if doc is None:
            raise _not_found()
        for internal in ("LogStream", "Tags", "LastModifiedTime"):
            doc.pop(internal, None)
        return doc

    def list(self, body: dict[str, Any], caller: Caller) -> dict[str, Any]:
        docs = self.state.resources(KIND)
        if body.get("LastModifiedTimeAfter") is not None:
            after = float(body["LastModifiedTimeAfter"])
            docs = [d for d in docs if d["LastModifiedTime"] > after]
        if body.get("LastModifiedTimeBefore") is not None:
            before = float(body["LastModifiedTimeBefore"])
            docs = [d for d in docs if d["LastModifiedTime"] < before]
        return validate.listing(docs, body, "TransformJobName", "TransformJobSummaries",
                               ("TransformJobName", "TransformJobArn", "CreationTime",
                                "TransformEndTime", "LastModifiedTime", "TransformJobStatus",
                                "FailureReason"), "TransformJobStatus", STATUSES)

    def stop(self, body: dict[str, Any], caller: Caller) -> dict[str, Any]:
        name = body.get("TransformJobName")
        doc = self.state.get(KIND, name) if isinstance(name, str) else None
        if doc is None or not isinstance(name, str):
            raise _not_found()
        if doc["TransformJobStatus"] != "InProgress":
            raise validation(f"The request was rejected because the transform job is in "
                             f"status {doc['TransformJobStatus']}.")

        def stopping(d: Doc) -> Doc:
            if d["TransformJobStatus"] == "InProgress":
                d["TransformJobStatus"] = "Stopping"
                d["LastModifiedTime"] = time.time()
            return d

        self.state.update(KIND, name, stopping)
        self.workers.stop(name)
        return {}

    def handlers(self) -> dict[str, Handler]:
        return {"CreateTransformJob": self.create, "DescribeTransformJob": self.describe,
                "ListTransformJobs": self.list, "StopTransformJob": self.stop}

    # -- the worker --------------------------------------------------------------------------

    def _start(self, name: str, job: dict[str, Any], env: dict[str, str], stream: str) -> None:
        """The job's worker: its start event moves the document on, its other events make
        the outcome, read with its exit status when it ends."""
        outcome: dict[str, Any] = {}

        def on_event(event: dict[str, Any]) -> None:
            if "started" in event:
                self.state.update(KIND, name, functools.partial(_started, now=time.time()))
            else:
                outcome.update(event)

        def on_end(status: int) -> None:
            self.state.update(KIND, name, lambda d: _ended(d, outcome, status, time.time()))

        self.workers.start(name, job, stream, on_event, on_end, env)


def _started(doc: Doc, now: float) -> Doc | None:
    if doc["TransformJobStatus"] not in RUNNING:
        return None
    doc["TransformStartTime"] = doc["LastModifiedTime"] = now
    return doc


def _finish(doc: Doc, status: str, now: float, reason: str | None = None) -> None:
    doc["TransformJobStatus"] = status
    doc["TransformEndTime"] = doc["LastModifiedTime"] = now
    if reason is not None:
        doc["FailureReason"] = reason[:1024]


def _ended(doc: Doc, outcome: dict[str, Any], status: int, now: float) -> Doc:
    """The job's document once its worker has exited with ``status``."""
    if doc["TransformJobStatus"] not in RUNNING:
        return doc
    if status == 0 and "done" in outcome:
        _finish(doc, "Completed", now)
    elif outcome.get("stopped") or doc["TransformJobStatus"] == "Stopping":
        _finish(doc, "Stopped", now)
    elif "failure" in outcome:
        _finish(doc, "Failed", now, str(outcome["failure"]))
    else:
        how = (f"was killed by signal {-status}" if status < 0
               else f"exited with status {status} before it reported an outcome")
        _finish(doc, "Failed", now, f"AlgorithmError: the transform worker {how}; the job "
                "wrote no output")
    return doc
