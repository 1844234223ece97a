"""What the console's pages show, shaped from the service's documents: pure functions from the
Describe documents in the state (and a few facts passed in: the time, the live workers, the
GPUs faiss sees) to the plain rows and fields the templates print. No I/O here, so every page's
content is tested without a server; escaping is the templates' (Jinja2's autoescape)."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any
from urllib.parse import quote

from openknn.service.endpoints import LOG_GROUP_PREFIX as ENDPOINT_LOG_GROUP_PREFIX
from openknn.service.state import Doc, LogEvent
from openknn.service.training_jobs import LOG_GROUP as TRAINING_LOG_GROUP
from openknn.service.transform_jobs import LOG_GROUP as TRANSFORM_LOG_GROUP

PREFIX = "/_openknn/console"
RUNNING = ("InProgress", "Stopping", "Creating", "Updating", "SystemUpdating", "RollingBack",
           "Deleting")
GOOD = ("Completed", "InService")
BAD = ("Failed", "UpdateRollbackFailed", "OutOfService")
HIGHLIGHTS = ("#test_score", "<score>=")  # the test metric's lines (training.md)


# -- small formats -------------------------------------------------------------------------------

def when(epoch: float | None) -> str:
    """A document's time (seconds since the epoch) as local date and time, '' if absent."""
    if epoch is None:
        return ""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(epoch)))


def when_ms(epoch_ms: int) -> str:
    """A log event's time (ms since the epoch) to the millisecond."""
    seconds, ms = divmod(int(epoch_ms), 1000)
    return f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(seconds))}.{ms:03d}"


def duration(start: float | None, end: float | None, now: float) -> str:
    """How long from ``start`` to ``end`` (to ``now`` while it runs): '42 s', '3 min 05 s',
    '2 h 07 min'; '' without a start."""
    if start is None:
        return ""
    seconds = max(0, int((end if end is not None else now) - float(start)))
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def size(count: int) -> str:
    """Bytes as people read them: '812 B', '1.5 KiB', '3.2 MiB'."""
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"  # pragma: no cover - the loop returns at GiB


def badge(status: str) -> str:
    """The CSS class of a status badge: good, bad, running or idle (Stopped, Deleted)."""
    if status in GOOD:
        return "good"
    if status in BAD:
        return "bad"
    return "running" if status in RUNNING else "idle"


def is_running(status: str) -> bool:
    """Whether a resource in ``status`` may still change by itself (so its page polls)."""
    return status in RUNNING


def counts(docs: Iterable[Doc], field: str) -> list[tuple[str, int]]:
    """(status, how many) of ``docs`` by ``field``, most first, then by name."""
    found = Counter(str(d.get(field, "")) for d in docs)
    return sorted(found.items(), key=lambda item: (-item[1], item[0]))


def newest(docs: Sequence[Doc], count: int = 5) -> list[Doc]:
    return sorted(docs, key=lambda d: float(d.get("CreationTime", 0)), reverse=True)[:count]


# -- links -----------------------------------------------------------------------------------

def link(kind: str, name: str) -> str:
    """The console page of one resource: ``kind`` is its list's path (training-jobs, …)."""
    return f"{PREFIX}/{kind}/{quote(name, safe='')}"


def s3_parts(uri: str) -> tuple[str, str] | None:
    """(bucket, key) of an ``s3://`` URI, or None for anything else."""
    if not uri.startswith("s3://"):
        return None
    bucket, _, key = uri[5:].partition("/")
    return (bucket, key) if bucket else None


def s3_link(uri: str, embedded: bool, prefix: bool = False) -> str | None:
    """Where the console shows ``uri``: the object's download, or the listing of a prefix
    (``prefix``, or a key ending in '/'); None when the service uses another S3 (nothing to
    show here)."""
    parts = s3_parts(uri) if embedded else None
    if parts is None:
        return None
    bucket, key = parts
    if prefix or not key or key.endswith("/"):
        return f"{PREFIX}/s3/{quote(bucket, safe='')}" + (f"?prefix={quote(key)}" if key else "")
    return f"{PREFIX}/s3/{quote(bucket, safe='')}/{quote(key)}"


# -- training jobs ---------------------------------------------------------------------------

def training_rows(docs: Iterable[Doc], now: float, status: str = "", name: str = "",
                  order: str = "desc") -> list[dict[str, Any]]:
    """The training jobs list: filtered by status and by a part of the name (any case), by
    creation time, newest first unless ``order`` is 'asc'."""
    picked = [d for d in docs if (not status or d["TrainingJobStatus"] == status)
              and name.lower() in d["TrainingJobName"].lower()]
    picked.sort(key=lambda d: float(d["CreationTime"]), reverse=order != "asc")
    return [{"name": d["TrainingJobName"], "link": link("training-jobs", d["TrainingJobName"]),
             "created": when(d["CreationTime"]),
             "duration": duration(d["CreationTime"], d.get("TrainingEndTime"), now),
             "status": d["TrainingJobStatus"], "secondary": d.get("SecondaryStatus", ""),
             "badge": badge(d["TrainingJobStatus"])} for d in picked]


def transitions(doc: Doc, now: float) -> list[dict[str, str]]:
    """SecondaryStatusTransitions as the status history: status, start, end, how long, and
    SageMaker's message."""
    return [{"status": t["Status"], "start": when(t.get("StartTime")),
             "end": when(t.get("EndTime")),
             "took": duration(t.get("StartTime"), t.get("EndTime"), now),
             "message": str(t.get("StatusMessage", ""))}
            for t in doc.get("SecondaryStatusTransitions", [])]


def channels(doc: Doc, embedded: bool) -> list[dict[str, Any]]:
    """Each input channel: name, S3 URI (with its console link), data type, distribution,
    content type, compression, record wrapper and input mode."""
    out = []
    mode = doc.get("AlgorithmSpecification", {}).get("TrainingInputMode", "File")
    for channel in doc.get("InputDataConfig", []):
        source = channel.get("DataSource", {}).get("S3DataSource", {})
        uri = str(source.get("S3Uri", ""))
        data_type = source.get("S3DataType", "S3Prefix")
        out.append({"name": channel.get("ChannelName", ""), "uri": uri,
                    "link": s3_link(uri, embedded, prefix=data_type == "S3Prefix"),
                    "data_type": data_type,
                    "distribution": source.get("S3DataDistributionType", "FullyReplicated"),
                    "content_type": channel.get("ContentType") or "(by the files' names)",
                    "compression": channel.get("CompressionType", "None"),
                    "wrapper": channel.get("RecordWrapperType", "None"),
                    "input_mode": channel.get("InputMode") or mode})
    return out


def metrics(doc: Doc) -> list[dict[str, str]]:
    return [{"name": str(m["MetricName"]), "value": f"{float(m['Value']):.6g}",
             "time": when(m.get("Timestamp"))} for m in doc.get("FinalMetricDataList", [])]


def training_detail(doc: Doc, now: float, embedded: bool) -> dict[str, Any]:
    """Everything the training job's page shows, SageMaker's sections in its order."""
    algorithm = doc.get("AlgorithmSpecification", {})
    resources = doc.get("ResourceConfig", {})
    model = str(doc.get("ModelArtifacts", {}).get("S3ModelArtifacts", ""))
    status = doc["TrainingJobStatus"]
    return {
        "name": doc["TrainingJobName"], "arn": doc.get("TrainingJobArn", ""),
        "status": status, "badge": badge(status), "running": is_running(status),
        "secondary": doc.get("SecondaryStatus", ""),
        "failure": doc.get("FailureReason", ""),
        "created": when(doc.get("CreationTime")), "modified": when(doc.get("LastModifiedTime")),
        "started": when(doc.get("TrainingStartTime")), "ended": when(doc.get("TrainingEndTime")),
        "duration": duration(doc.get("CreationTime"), doc.get("TrainingEndTime"), now),
        "training_seconds": doc.get("TrainingTimeInSeconds", ""),
        "billable_seconds": doc.get("BillableTimeInSeconds", ""),
        "role": doc.get("RoleArn", ""),
        "image": algorithm.get("TrainingImage", ""),
        "input_mode": algorithm.get("TrainingInputMode", "File"),
        "instance_type": resources.get("InstanceType", ""),
        "instance_count": resources.get("InstanceCount", 1),
        "volume_gb": resources.get("VolumeSizeInGB", ""),
        "max_runtime": doc.get("StoppingCondition", {}).get("MaxRuntimeInSeconds", ""),
        "history": transitions(doc, now),
        "hyperparameters": sorted(doc.get("HyperParameters", {}).items()),
        "channels": channels(doc, embedded),
        "output_path": doc.get("OutputDataConfig", {}).get("S3OutputPath", ""),
        "kms_key": doc.get("OutputDataConfig", {}).get("KmsKeyId", ""),
        # the artifact exists once the job completed (a failed or stopped job wrote none)
        "model": model, "model_link": s3_link(model, embedded) if status == "Completed" else None,
        "metrics": metrics(doc),
        "tags": [(t.get("Key", ""), t.get("Value", "")) for t in doc.get("Tags", [])],
    }


def test_channel(doc: Doc | None) -> dict[str, str] | None:
    """The job's 'test' channel (URI and content type): the default test set of the plots,
    the data the job's own test metric came from."""
    for channel in (doc or {}).get("InputDataConfig", []):
        if channel.get("ChannelName") == "test":
            source = channel.get("DataSource", {}).get("S3DataSource", {})
            return {"uri": str(source.get("S3Uri", "")),
                    "content_type": str(channel.get("ContentType") or "")}
    return None


# -- logs ------------------------------------------------------------------------------------

def is_highlight(message: str) -> bool:
    """Whether a log line reports the test metric (``#test_score …``, ``… <score>=…``)."""
    return any(mark in message for mark in HIGHLIGHTS)


def log_rows(events: Iterable[LogEvent]) -> list[dict[str, Any]]:
    return [{"id": e.id, "stream": e.stream, "time": when_ms(e.timestamp), "message": e.message,
             "highlight": is_highlight(e.message)} for e in events]


def training_log(name: str) -> tuple[str, str]:
    """The log group and stream prefix of a training job's streams (every host's)."""
    return TRAINING_LOG_GROUP, f"{name}/"


def endpoint_log(name: str) -> tuple[str, str]:
    return ENDPOINT_LOG_GROUP_PREFIX + name, ""


def transform_log(name: str) -> tuple[str, str]:
    return TRANSFORM_LOG_GROUP, f"{name}/"


# -- models, configs, endpoints ------------------------------------------------------------------

def job_for_model(model_data: str, jobs: Iterable[Doc]) -> str | None:
    """The training job whose artifact a model serves (its ModelDataUrl), if one here did."""
    for job in jobs:
        if job.get("ModelArtifacts", {}).get("S3ModelArtifacts") == model_data:
            return str(job["TrainingJobName"])
    return None


def model_rows(docs: Iterable[Doc]) -> list[dict[str, Any]]:
    listed = list(docs)
    return [{"name": d["ModelName"], "link": link("models", d["ModelName"]),
             "arn": d.get("ModelArn", ""), "created": when(d.get("CreationTime")),
             "data": d.get("PrimaryContainer", {}).get("ModelDataUrl", "")}
            for d in newest(listed, len(listed))]


def model_detail(doc: Doc, jobs: Iterable[Doc], configs: Iterable[Doc],
                 embedded: bool) -> dict[str, Any]:
    container = doc.get("PrimaryContainer", {})
    data = str(container.get("ModelDataUrl", ""))
    name = doc["ModelName"]
    return {"name": name, "arn": doc.get("ModelArn", ""), "created": when(doc.get("CreationTime")),
            "image": container.get("Image", ""), "mode": container.get("Mode", "SingleModel"),
            "data": data, "data_link": s3_link(data, embedded),
            "environment": sorted(container.get("Environment", {}).items()),
            "role": doc.get("ExecutionRoleArn", ""),
            "isolation": bool(doc.get("EnableNetworkIsolation", False)),
            "job": job_for_model(data, jobs),
            "configs": [c["EndpointConfigName"] for c in configs if any(
                v.get("ModelName") == name for v in c.get("ProductionVariants", []))]}


def config_rows(docs: Iterable[Doc]) -> list[dict[str, Any]]:
    listed = list(docs)
    return [{"name": d["EndpointConfigName"], "link": link("endpoint-configs",
                                                           d["EndpointConfigName"]),
             "arn": d.get("EndpointConfigArn", ""), "created": when(d.get("CreationTime")),
             "variants": len(d.get("ProductionVariants", [])),
             "instance_types": instance_types(d)} for d in newest(listed, len(listed))]


def instance_types(config: Doc | None) -> str:
    """The instance types of a config's variants, as one short text."""
    types = [str(v.get("InstanceType", "")) for v in (config or {}).get("ProductionVariants", [])]
    return ", ".join(dict.fromkeys(t for t in types if t))


def device(gpu_type: bool, gpus: int) -> str:
    """Where an instance type's worker searches here (decision 38): a GPU type on GPU 0 where
    faiss sees one, everything else on the CPU."""
    if not gpu_type:
        return "CPU"
    return "GPU 0" if gpus > 0 else "CPU (a GPU instance type; faiss sees no GPU here)"


def config_variants(config: Doc, models: Mapping[str, Doc], jobs: Iterable[Doc],
                    gpu_types: Mapping[str, bool], gpus: int) -> list[dict[str, Any]]:
    """A config's variants: model (and the training job behind it), instance type → local
    device, instance count, weight."""
    job_list = list(jobs)
    out = []
    for v in config.get("ProductionVariants", []):
        model = models.get(str(v.get("ModelName")))
        data = str((model or {}).get("PrimaryContainer", {}).get("ModelDataUrl", ""))
        instance_type = str(v.get("InstanceType", ""))
        out.append({"name": v.get("VariantName", ""), "model": v.get("ModelName", ""),
                    "model_exists": model is not None,
                    "job": job_for_model(data, job_list) if data else None,
                    "instance_type": instance_type,
                    "device": device(gpu_types.get(instance_type, False), gpus),
                    "count": v.get("InitialInstanceCount", 1),
                    "weight": v.get("InitialVariantWeight", 1.0)})
    return out


def config_detail(doc: Doc, models: Mapping[str, Doc], jobs: Iterable[Doc],
                  endpoints: Iterable[Doc], gpu_types: Mapping[str, bool],
                  gpus: int) -> dict[str, Any]:
    name = doc["EndpointConfigName"]
    return {"name": name, "arn": doc.get("EndpointConfigArn", ""),
            "created": when(doc.get("CreationTime")),
            "variants": config_variants(doc, models, jobs, gpu_types, gpus),
            "kms_key": doc.get("KmsKeyId", ""),
            "data_capture": bool(doc.get("DataCaptureConfig")),
            "endpoints": [e["EndpointName"] for e in endpoints
                          if e.get("EndpointConfigName") == name]}


def endpoint_rows(docs: Iterable[Doc], configs: Mapping[str, Doc]) -> list[dict[str, Any]]:
    listed = list(docs)
    return [{"name": d["EndpointName"], "link": link("endpoints", d["EndpointName"]),
             "status": d["EndpointStatus"], "badge": badge(d["EndpointStatus"]),
             "instance_types": instance_types(configs.get(str(d.get("EndpointConfigName")))),
             "created": when(d.get("CreationTime")),
             "modified": when(d.get("LastModifiedTime"))}
            for d in newest(listed, len(listed))]


def endpoint_detail(doc: Doc, config: Doc | None, models: Mapping[str, Doc],
                    jobs: Iterable[Doc], workers: Mapping[str, tuple[int, int]],
                    gpu_types: Mapping[str, bool], gpus: int) -> dict[str, Any]:
    """The endpoint's page: status and reason, its config's variants with the local device and
    its workers (``workers``: variant → (ready, started)), the model and job behind each."""
    status = doc["EndpointStatus"]
    variants = config_variants(config, models, jobs, gpu_types, gpus) if config else []
    for v in variants:
        ready, started = workers.get(str(v["name"]), (0, 0))
        v["ready"], v["started"] = ready, started
    return {"name": doc["EndpointName"], "arn": doc.get("EndpointArn", ""), "status": status,
            "badge": badge(status), "running": is_running(status),
            "failure": doc.get("FailureReason", ""), "config": doc.get("EndpointConfigName", ""),
            "config_exists": config is not None, "pending": doc.get("PendingConfigName", ""),
            "created": when(doc.get("CreationTime")),
            "modified": when(doc.get("LastModifiedTime")), "variants": variants,
            "invocation": f"/endpoints/{quote(doc['EndpointName'], safe='')}/invocations"}


# -- transform jobs --------------------------------------------------------------------------

def transform_rows(docs: Iterable[Doc], now: float) -> list[dict[str, Any]]:
    listed = list(docs)
    return [{"name": d["TransformJobName"], "link": link("transform-jobs", d["TransformJobName"]),
             "status": d.get("TransformJobStatus", ""),
             "badge": badge(str(d.get("TransformJobStatus", ""))),
             "model": d.get("ModelName", ""), "created": when(d.get("CreationTime")),
             "duration": duration(d.get("CreationTime"), d.get("TransformEndTime"), now)}
            for d in newest(listed, len(listed))]


def transform_detail(doc: Doc, now: float, embedded: bool) -> dict[str, Any]:
    source = doc.get("TransformInput", {})
    s3 = source.get("DataSource", {}).get("S3DataSource", {})
    output = doc.get("TransformOutput", {})
    resources = doc.get("TransformResources", {})
    status = str(doc.get("TransformJobStatus", ""))
    uri, out = str(s3.get("S3Uri", "")), str(output.get("S3OutputPath", ""))
    return {"name": doc["TransformJobName"], "arn": doc.get("TransformJobArn", ""),
            "status": status, "badge": badge(status), "running": is_running(status),
            "failure": doc.get("FailureReason", ""), "model": doc.get("ModelName", ""),
            "created": when(doc.get("CreationTime")),
            "started": when(doc.get("TransformStartTime")),
            "ended": when(doc.get("TransformEndTime")),
            "duration": duration(doc.get("CreationTime"), doc.get("TransformEndTime"), now),
            "input": uri,
            "input_link": s3_link(uri, embedded, prefix=s3.get("S3DataType", "S3Prefix") ==
                                  "S3Prefix"),
            "data_type": s3.get("S3DataType", "S3Prefix"),
            "content_type": source.get("ContentType", ""),
            "split_type": source.get("SplitType", "None"),
            "compression": source.get("CompressionType", "None"),
            "output": out, "output_link": s3_link(out, embedded, prefix=True),
            "accept": output.get("Accept", ""), "assemble_with": output.get("AssembleWith", ""),
            "instance_type": resources.get("InstanceType", ""),
            "instance_count": resources.get("InstanceCount", 1),
            "strategy": doc.get("BatchStrategy", ""),
            "max_payload": doc.get("MaxPayloadInMB", ""),
            "environment": sorted(doc.get("Environment", {}).items())}
