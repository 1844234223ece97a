"""The console's pages: for each, the template and what it shows, read from the service's state
(the documents the Describe calls answer) and its live workers, shaped by ``views``. A page
may also name its live parts: the fragments its script fetches again (``?part=``) while the
thing shown can still change."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from openknn.core import gpu
from openknn.errors import OpenKnnError
from openknn.service.console import testset, views
from openknn.service.endpoints import Endpoints
from openknn.service.hosting import CONFIG, MODEL, Hosting
from openknn.service.runtime import Runtime
from openknn.service.s3.codes import S3Error
from openknn.service.s3.store import Marker, Store
from openknn.service.state import State
from openknn.service.training_jobs import KIND as TRAINING
from openknn.service.training_jobs import TrainingJobs
from openknn.service.transform_jobs import KIND as TRANSFORM
from openknn.service.transform_jobs import TransformJobs

ENDPOINT = "endpoint"
LOG_LINES = 2000  # the newest lines a log view shows at first (CloudWatch Logs has them all)
S3_PAGE = 500


class NotFound(Exception):
    """No such resource: the page says so, with a link back to its list."""

    def __init__(self, what: str, name: str, back: str) -> None:
        super().__init__(f"No {what} named {name!r} here.")
        self.back = back


@dataclass
class Parts:
    """What of the service the console reads and calls: the same objects its API uses."""

    state: State
    training_jobs: TrainingJobs
    hosting: Hosting
    endpoints: Endpoints
    runtime: Runtime
    store: Store | None  # None: the service uses another S3 (--s3-endpoint)
    transform_jobs: TransformJobs | None = None
    clock: Callable[[], float] = time.time

    @cached_property
    def gpus(self) -> int:
        """GPUs faiss sees here (asked once: it does not change while the service runs)."""
        return gpu.visible()

    def gpu_type(self, instance_type: str) -> bool:
        return gpu.for_instance_type(instance_type) != 0

    def device_facts(self, *configs: Mapping[str, Any] | None) -> dict[str, bool]:
        return {str(v.get("InstanceType")): self.gpu_type(str(v.get("InstanceType", "")))
                for c in configs if c for v in c.get("ProductionVariants", [])}

    def docs(self, kind: str) -> list[dict[str, Any]]:
        return self.state.resources(kind)

    def by_name(self, kind: str, field_name: str) -> dict[str, dict[str, Any]]:
        return {str(d[field_name]): d for d in self.state.resources(kind)}


@dataclass
class Page:
    template: str
    context: dict[str, Any]
    parts: tuple[str, ...] = ()  # the fragments (templates/parts/<name>.html) it refreshes


Query = Mapping[str, str]


def home(p: Parts, q: Query) -> Page:
    jobs, endpoints = p.docs(TRAINING), p.docs(ENDPOINT)
    transforms = p.docs(TRANSFORM)
    now = p.clock()
    return Page("home.html", {
        "section": "home",
        "job_counts": views.counts(jobs, "TrainingJobStatus"),
        "endpoint_counts": views.counts(endpoints, "EndpointStatus"),
        "transform_counts": views.counts(transforms, "TransformJobStatus"),
        "models": len(p.docs(MODEL)), "configs": len(p.docs(CONFIG)),
        "buckets": len(p.store.list_buckets()) if p.store else None,
        "jobs": views.training_rows(views.newest(jobs), now),
        "endpoints": views.endpoint_rows(views.newest(endpoints), p.by_name(
            CONFIG, "EndpointConfigName")),
        "running": any(views.is_running(d["TrainingJobStatus"]) for d in jobs) or any(
            views.is_running(d["EndpointStatus"]) for d in endpoints)}, ("home_body",))


def training_jobs(p: Parts, q: Query) -> Page:
    docs = p.docs(TRAINING)
    status, name = q.get("status", ""), q.get("name", "")
    order = "asc" if q.get("order") == "asc" else "desc"
    rows = views.training_rows(docs, p.clock(), status, name, order)
    return Page("training_jobs.html", {
        "section": "training-jobs", "rows": rows, "status": status, "name": name,
        "order": order, "total": len(docs),
        "statuses": ("InProgress", "Completed", "Failed", "Stopping", "Stopped"),
        "running": any(views.is_running(r["status"]) for r in rows)}, ("training_rows",))


def _log(p: Parts, group: str, prefix: str, q: Query) -> dict[str, Any]:
    """A log view: its streams, the newest LOG_LINES events (of one stream, if asked), and
    where its tail continues."""
    streams = [s for s, _ in p.state.streams(group, prefix)]
    chosen = q.get("stream", "")
    shown = [chosen] if chosen in streams else streams
    events, hidden = p.state.tail(group, shown, LOG_LINES)
    return {"group": group, "prefix": prefix, "streams": streams,
            "stream": chosen if chosen in streams else "", "rows": views.log_rows(events),
            "hidden": hidden, "last": events[-1].id if events else 0}


def training_job(p: Parts, name: str, q: Query) -> Page:
    doc = p.state.get(TRAINING, name)
    if doc is None:
        raise NotFound("training job", name, f"{views.PREFIX}/training-jobs")
    job = views.training_detail(doc, p.clock(), p.store is not None)
    serving = _endpoints_of(p, job["model"])
    return Page("training_job.html", {
        "section": "training-jobs", "job": job, "serving": serving,
        "log": None if "part" in q else _log(p, *views.training_log(name), q)},
        ("job_summary",))


def _endpoints_of(p: Parts, model_data: str) -> list[str]:
    """The endpoints whose config serves a model of ``model_data``."""
    models = {n for n, m in p.by_name(MODEL, "ModelName").items()
              if m.get("PrimaryContainer", {}).get("ModelDataUrl") == model_data}
    configs = {n for n, c in p.by_name(CONFIG, "EndpointConfigName").items()
               if any(v.get("ModelName") in models for v in c.get("ProductionVariants", []))}
    return [e["EndpointName"] for e in p.docs(ENDPOINT) if e.get("EndpointConfigName") in configs]


def models(p: Parts, q: Query) -> Page:
    return Page("models.html", {"section": "models", "rows": views.model_rows(p.docs(MODEL)),
                                "deleted": q.get("deleted", "")})


def model(p: Parts, name: str, q: Query) -> Page:
    doc = p.state.get(MODEL, name)
    if doc is None:
        raise NotFound("model", name, f"{views.PREFIX}/models")
    return Page("model.html", {"section": "models", "model": views.model_detail(
        doc, p.docs(TRAINING), p.docs(CONFIG), p.store is not None)})


def configs(p: Parts, q: Query) -> Page:
    return Page("endpoint_configs.html", {"section": "endpoint-configs",
                                          "rows": views.config_rows(p.docs(CONFIG)),
                                          "deleted": q.get("deleted", "")})


def config(p: Parts, name: str, q: Query) -> Page:
    doc = p.state.get(CONFIG, name)
    if doc is None:
        raise NotFound("endpoint configuration", name, f"{views.PREFIX}/endpoint-configs")
    return Page("endpoint_config.html", {"section": "endpoint-configs", "config":
                views.config_detail(doc, p.by_name(MODEL, "ModelName"), p.docs(TRAINING),
                                    p.docs(ENDPOINT), p.device_facts(doc), p.gpus)})


def endpoints(p: Parts, q: Query) -> Page:
    rows = views.endpoint_rows(p.docs(ENDPOINT), p.by_name(CONFIG, "EndpointConfigName"))
    return Page("endpoints.html", {"section": "endpoints", "rows": rows,
                                   "deleted": q.get("deleted", ""),
                                   "running": any(views.is_running(r["status"]) for r in rows)},
                ("endpoint_rows",))


def _workers(p: Parts, name: str) -> dict[str, tuple[int, int]]:
    live = p.endpoints.live(name)
    if live is None:
        return {}
    return {v.name: (sum(w.ready for w in v.workers), len(v.workers))
            for v in live.variants.values()}


def endpoint(p: Parts, name: str, q: Query) -> Page:
    doc = p.state.get(ENDPOINT, name)
    if doc is None:
        raise NotFound("endpoint", name, f"{views.PREFIX}/endpoints")
    config_doc = p.state.get(CONFIG, str(doc.get("EndpointConfigName")))
    models_by_name = p.by_name(MODEL, "ModelName")
    jobs = p.docs(TRAINING)
    detail = views.endpoint_detail(doc, config_doc, models_by_name, jobs, _workers(p, name),
                                   p.device_facts(config_doc), p.gpus)
    job_names = [v["job"] for v in detail["variants"] if v["job"]]
    job_doc = p.state.get(TRAINING, job_names[0]) if job_names else None
    test = views.test_channel(job_doc) if p.store else None
    whole = "part" not in q  # a live part's poll reads only what the part shows
    return Page("endpoint.html", {
        "section": "endpoints", "endpoint": detail, "test": test,
        "sample": _sample(p, test) if whole else "",
        "k": (job_doc or {}).get("HyperParameters", {}).get("k", ""),
        "predictor": (job_doc or {}).get("HyperParameters", {}).get("predictor_type", ""),
        "log": _log(p, *views.endpoint_log(name), q) if whole else None},
        ("endpoint_summary",))


def _sample(p: Parts, test: dict[str, str] | None, rows: int = 3) -> str:
    """A few rows of the test channel's features, to try the endpoint with ('' without)."""
    if test is None or p.store is None:
        return ""
    try:
        found = testset.read(p.store, test["uri"], test["content_type"] or None, rows)
    except (OpenKnnError, S3Error):
        return ""  # the channel's data is gone or unreadable: the box starts empty
    return str(found.to_json()["csv"])


def transform_jobs(p: Parts, q: Query) -> Page:
    rows = views.transform_rows(p.docs(TRANSFORM), p.clock())
    return Page("transform_jobs.html", {"section": "transform-jobs", "rows": rows,
                                        "running": any(views.is_running(r["status"])
                                                    for r in rows)}, ("transform_rows",))


def transform_job(p: Parts, name: str, q: Query) -> Page:
    doc = p.state.get(TRANSFORM, name)
    if doc is None:
        raise NotFound("transform job", name, f"{views.PREFIX}/transform-jobs")
    return Page("transform_job.html", {
        "section": "transform-jobs",
        "job": views.transform_detail(doc, p.clock(), p.store is not None),
        "log": None if "part" in q else _log(p, *views.transform_log(name), q)},
        ("transform_summary",))


def compare(p: Parts, q: Query) -> Page:
    """The endpoint comparison: every InService endpoint, and a default test set (the test
    channel of the first one's training job)."""
    jobs = p.docs(TRAINING)
    models_by_name = p.by_name(MODEL, "ModelName")
    configs_by_name = p.by_name(CONFIG, "EndpointConfigName")
    rows, default = [], None
    for e in views.newest(p.docs(ENDPOINT), 10**6):
        if e["EndpointStatus"] != "InService":
            continue
        c = configs_by_name.get(str(e.get("EndpointConfigName")))
        variants = views.config_variants(c, models_by_name, jobs, {}, 0) if c else []
        job = next((v["job"] for v in variants if v["job"]), None)
        rows.append({"name": e["EndpointName"], "job": job,
                     "instance_types": views.instance_types(c)})
        if default is None and job and p.store:
            default = views.test_channel(p.state.get(TRAINING, job))
    return Page("compare.html", {"section": "compare", "rows": rows, "test": default,
                                 "default_rows": testset.DEFAULT_ROWS})


# -- S3 ----------------------------------------------------------------------------------------

def buckets(p: Parts, q: Query) -> Page:
    listed = p.store.list_buckets() if p.store else []
    return Page("s3_buckets.html", {"section": "s3", "embedded": p.store is not None,
                                    "buckets": [{"name": b.name, "created": views.when(b.created),
                                                 "region": b.region} for b in listed]})


def bucket(p: Parts, name: str, q: Query) -> Page:
    if p.store is None:
        raise NotFound("bucket", name, f"{views.PREFIX}/s3")
    prefix = q.get("prefix", "")
    after = q.get("after")
    try:
        listing = p.store.list_objects(name, prefix=prefix, delimiter="/", max_keys=S3_PAGE,
                                       marker=Marker(after, after.endswith("/"))
                                       if after else None)
    except S3Error as exc:
        if exc.code == "NoSuchBucket":
            raise NotFound("bucket", name, f"{views.PREFIX}/s3") from None
        raise
    crumbs, at = [], ""
    for segment in prefix.split("/")[:-1]:  # the folders the prefix is in
        at += segment + "/"
        crumbs.append({"name": segment, "prefix": at})
    return Page("s3_bucket.html", {
        "section": "s3", "bucket": name, "prefix": prefix, "crumbs": crumbs,
        "prefixes": [{"name": x[len(prefix):], "prefix": x} for x in listing.prefixes],
        "objects": [{"name": o.key[len(prefix):], "key": o.key, "size": views.size(o.size),
                     "bytes": o.size, "modified": views.when(o.last_modified),
                     "link": views.s3_link(f"s3://{name}/{o.key}", True)}
                    for o in listing.objects],
        "more": listing.next_marker.value if listing.truncated and listing.next_marker
        else None})
