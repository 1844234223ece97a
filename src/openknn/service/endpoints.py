"""SageMaker endpoints on the service: CreateEndpoint starts openknn's real serving stack
(``openknn serve`` worker processes, ``InitialInstanceCount`` of them per variant) for the
config's models, and the endpoint goes Creating → InService once every worker answers
``/ping`` (Failed, with the worker's own error as FailureReason, when a model cannot load).
DescribeEndpoint, ListEndpoints, UpdateEndpoint (the new config's workers start beside the
old, traffic switches when they are ready, the old ones drain and stop: no request fails) and
DeleteEndpoint (the workers stop) complete the set; ``service.runtime`` forwards
InvokeEndpoint to a ready worker.

Workers log to ``/aws/sagemaker/Endpoints/<name>``, stream ``<variant>/<instance id>``. A
worker that dies is started again and the endpoint's log says so; one that keeps dying fails
the endpoint. Every worker watches the service's pid (``--owner-pid``), so none outlives it,
even a kill -9 of the service. When the service starts again, endpoints that were InService
start their workers again and stay InService."""

from __future__ import annotations

import asyncio
import collections
import functools
import itertools
import logging
import os
import random
import secrets
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from openknn.core import gpu
from openknn.service import validate
from openknn.service.api import Caller, Handler, validation
from openknn.service.forward import Upstream
from openknn.service.hosting import CONFIG, MODEL, arn, not_found
from openknn.service.state import Doc, State

log = logging.getLogger(__name__)

KIND = "endpoint"
LOG_GROUP_PREFIX = "/aws/sagemaker/Endpoints/"
READY_TIMEOUT_S = 120.0  # a model loading from S3; the SDK's first poll is at 30 s
DRAIN_TIMEOUT_S = 60.0  # an old config's requests in flight after UpdateEndpoint
RESTARTS_PER_MINUTE = 5  # a worker that dies more often fails its endpoint
STATUSES = ("OutOfService", "Creating", "Updating", "SystemUpdating", "RollingBack",
            "InService", "Deleting", "Failed", "UpdateRollbackFailed")


def log_group(endpoint: str) -> str:
    return LOG_GROUP_PREFIX + endpoint


class WorkerFailed(Exception):
    """A worker that exited, or did not answer /ping in time, before it was ready."""


@dataclass
class Worker:
    """One ``openknn serve`` process of a variant: the 'instance' SageMaker would run."""

    endpoint: str
    variant: str
    model_data: str
    args: list[str]
    env: dict[str, str]
    state: State
    instance: str = field(default_factory=lambda: "i-" + secrets.token_hex(8))
    proc: subprocess.Popen[str] | None = None
    url: str = ""
    upstream: Upstream | None = None  # the runtime's connections to it, made on its loop
    ready: bool = False
    served: bool = False  # was ready once: a later exit is a death, not a failed start
    stopping: bool = False
    deaths: list[float] = field(default_factory=list)  # monotonic times, for the restart cap
    tail: collections.deque[str] = field(default_factory=lambda: collections.deque(maxlen=8))
    on_exit: Callable[[Worker, int], None] | None = None

    @property
    def stream(self) -> str:
        return f"{self.variant}/{self.instance}"

    def say(self, message: str) -> None:
        """A line of the service's own in this worker's log stream."""
        self.state.append_logs(log_group(self.endpoint), self.stream,
                               [(int(time.time() * 1000), message)])

    def start(self) -> None:
        from openknn.serving.process import free_port

        port = free_port()
        self.url, self.ready = f"http://127.0.0.1:{port}", False
        self.upstream = Upstream("127.0.0.1", port)
        # A session of its own: a Ctrl-C at openknn up's terminal reaches the service, which
        # stops its workers itself, in order.
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "openknn", "serve", self.model_data, "--port", str(port),
             "--owner-pid", str(os.getpid()), *self.args], stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True, env=self.env,
            start_new_session=True)
        threading.Thread(target=self._pump, args=(self.proc,), daemon=True,
                         name=f"endpoint {self.endpoint} {self.instance}").start()

    def _pump(self, proc: subprocess.Popen[str]) -> None:
        """The worker's output into its stream until it exits; then tell ``on_exit``."""
        assert proc.stdout is not None
        group = log_group(self.endpoint)
        for line in proc.stdout:
            text = line.rstrip("\n")
            self.tail.append(text)
            self.state.append_logs(group, self.stream, [(int(time.time() * 1000), text)])
        status = proc.wait()
        self.ready = False
        if self.on_exit is not None and self.served and not self.stopping and (
                proc is self.proc):
            self.on_exit(self, status)

    def wait_ready(self, timeout: float = READY_TIMEOUT_S) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        with httpx.Client(trust_env=False, timeout=2.0) as client:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    time.sleep(0.2)  # the pump's last lines
                    raise WorkerFailed(self.reason(f"exited with status {self.proc.returncode}"))
                try:
                    if client.get(f"{self.url}/ping").status_code == 200:
                        self.ready = self.served = True
                        return
                except httpx.HTTPError:
                    pass
                time.sleep(0.05)
        self.stop()
        raise WorkerFailed(self.reason(f"did not answer /ping within {timeout:g} s"))

    def reason(self, what: str) -> str:
        lines = [t for t in self.tail if t.strip()]
        errors = [t for t in lines if "Error" in t or "error" in t]
        said = (errors or lines or ["(no output)"])[-1].strip()
        return f"the worker serving {self.model_data} {what}: {said}"

    def stop(self, timeout: float = 10.0) -> None:
        self.stopping, self.ready = True, False
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@dataclass
class Variant:
    name: str
    weight: float
    workers: list[Worker]
    turn: itertools.count[int] = field(default_factory=itertools.count)

    def pick(self) -> Worker | None:
        ready = [w for w in self.workers if w.ready]
        return ready[next(self.turn) % len(ready)] if ready else None


@dataclass
class Live:
    """The workers serving one endpoint with one config; requests in flight counted, so an
    update can stop the old workers once they are idle."""

    config: str
    variants: dict[str, Variant]
    inflight: int = 0
    retired: bool = False

    def workers(self) -> list[Worker]:
        return [w for v in self.variants.values() for w in v.workers]

    def choose(self, wanted: str | None) -> Variant | None:
        """The variant a request goes to: the one named (X-Amzn-SageMaker-Target-Variant),
        else one drawn by weight."""
        if wanted is not None:
            return self.variants.get(wanted)
        if len(self.variants) == 1:
            return next(iter(self.variants.values()))
        variants = [v for v in self.variants.values() if v.weight > 0]
        return random.choices(variants, [v.weight for v in variants])[0]

    async def worker(self, variant: Variant, timeout: float) -> Worker | None:
        """A ready worker of ``variant``, waiting (bounded) while one restarts."""
        deadline = time.monotonic() + timeout
        while True:
            worker = variant.pick()
            if worker is not None or time.monotonic() > deadline or self.retired:
                return worker
            await asyncio.sleep(0.02)

    def stop(self) -> None:
        self.retired = True
        for worker in self.workers():
            worker.stopping = True
        threads = [threading.Thread(target=w.stop) for w in self.workers()]
        for t in threads:
            t.start()
        for t in threads:
            t.join()


def _variant_summary(variant: dict[str, Any], image: str, now: float) -> dict[str, Any]:
    count = variant["InitialInstanceCount"]
    return {"VariantName": variant["VariantName"],
            "DeployedImages": [{"SpecifiedImage": image, "ResolvedImage": image,
                                "ResolutionTime": now}],
            "CurrentWeight": variant["InitialVariantWeight"],
            "DesiredWeight": variant["InitialVariantWeight"],
            "CurrentInstanceCount": count, "DesiredInstanceCount": count}


class Endpoints:
    """The endpoints of one service: documents in ``state``, live workers here."""

    def __init__(self, state: State, worker_env: Callable[[], dict[str, str]]) -> None:
        self.state = state
        self.worker_env = worker_env
        self._live: dict[str, Live] = {}
        self._restoring: set[str] = set()  # InService before a restart, workers starting
        self._lock = threading.Lock()
        self._closing = False

    # -- what the runtime reads --------------------------------------------------------------

    def live(self, name: str) -> Live | None:
        return self._live.get(name)

    def names(self) -> list[str]:
        """The endpoints with live workers."""
        return list(self._live)

    def restoring(self, name: str) -> bool:
        """Whether ``name`` was InService when the service stopped and its workers are
        starting again: a request waits for them rather than failing."""
        return name in self._restoring

    # -- life of the service -----------------------------------------------------------------

    def recover(self) -> None:
        """Endpoints a previous service left serving start their workers again (their status
        stays InService); those it left Creating or Updating are brought up as they were
        asked; Deleting ones are gone."""
        for doc in self.state.resources(KIND):
            status, name = doc["EndpointStatus"], doc["EndpointName"]
            if status == "Deleting":
                self.state.delete(KIND, name)
            elif status in ("InService", "Creating", "Updating", "SystemUpdating"):
                config = str(doc.get("PendingConfigName", doc["EndpointConfigName"]))
                if status == "InService":
                    self._restoring.add(name)
                self._spawn(name, config, Caller(*_region_account(doc["EndpointArn"])),
                            "openknn up started again: starting the endpoint's workers",
                            restarting=status == "InService")

    def shutdown(self) -> None:
        """Stop every worker; documents stay as they are, so a restart brings them back."""
        self._closing = True
        with self._lock:
            lives = list(self._live.values())
            self._live.clear()
        for live in lives:
            live.stop()

    # -- operations --------------------------------------------------------------------------

    def create(self, body: dict[str, Any], caller: Caller) -> dict[str, Any]:
        name = validate.resource_name(body.get("EndpointName"), "endpointName")
        config = body.get("EndpointConfigName")
        validate.resource_name(config, "endpointConfigName")
        assert isinstance(config, str)
        if self.state.get(CONFIG, config) is None:
            raise not_found(CONFIG, caller, config)
        now = time.time()
        endpoint_arn = arn(caller, KIND, name)
        doc: Doc = {"EndpointName": name, "EndpointArn": endpoint_arn,
                    "EndpointConfigName": config, "EndpointStatus": "Creating",
                    "CreationTime": now, "LastModifiedTime": now,
                    "Tags": body.get("Tags") or []}
        if not self.state.insert(KIND, name, doc):
            raise validation(f'Cannot create already existing endpoint "{endpoint_arn}".')
        self._spawn(name, config, caller, f"Creating endpoint {name} with endpoint "
                    f"configuration {config}")
        return {"EndpointArn": endpoint_arn}

    def describe(self, body: dict[str, Any], caller: Caller) -> dict[str, Any]:
        name = body.get("EndpointName")
        doc = self.state.get(KIND, name) if isinstance(name, str) else None
        if doc is None:
            raise validation(f'Could not find endpoint "{arn(caller, KIND, str(name))}".')
        for private in ("Tags", "PendingConfigName"):
            doc.pop(private, None)
        return doc

    def list_endpoints(self, body: dict[str, Any], caller: Caller) -> dict[str, Any]:
        return validate.listing(self.state.resources(KIND), body, "EndpointName", "Endpoints",
                                ("EndpointName", "EndpointArn", "CreationTime",
                                 "LastModifiedTime", "EndpointStatus"), "EndpointStatus",
                                STATUSES)

    def update(self, body: dict[str, Any], caller: Caller) -> dict[str, Any]:
        name = body.get("EndpointName")
        doc = self.state.get(KIND, name) if isinstance(name, str) else None
        if doc is None or not isinstance(name, str):
            raise validation(f'Could not find endpoint "{arn(caller, KIND, str(name))}".')
        config = body.get("EndpointConfigName")
        validate.resource_name(config, "endpointConfigName")
        assert isinstance(config, str)
        if self.state.get(CONFIG, config) is None:
            raise not_found(CONFIG, caller, config)
        if doc["EndpointStatus"] != "InService":
            raise validation(f"Cannot update in-progress endpoint "
                             f"\"{doc['EndpointArn']}\": it is {doc['EndpointStatus']}; wait "
                             "until it is InService")

        def updating(d: Doc) -> Doc:
            d["EndpointStatus"], d["LastModifiedTime"] = "Updating", time.time()
            d["PendingConfigName"] = config
            d.pop("FailureReason", None)
            return d

        self.state.update(KIND, name, updating)
        self._spawn(name, config, caller, f"Updating endpoint {name} to endpoint "
                    f"configuration {config}", updating=True)
        return {"EndpointArn": doc["EndpointArn"]}

    def delete(self, body: dict[str, Any], caller: Caller) -> dict[str, Any]:
        name = body.get("EndpointName")
        doc = self.state.get(KIND, name) if isinstance(name, str) else None
        if doc is None or not isinstance(name, str):
            raise validation(f'Could not find endpoint "{arn(caller, KIND, str(name))}".')
        self.state.update(KIND, name, lambda d: {**d, "EndpointStatus": "Deleting",
                                                 "LastModifiedTime": time.time()})
        with self._lock:
            live = self._live.pop(name, None)
        if live is not None:
            live.stop()
        self.state.delete(KIND, name)
        return {}

    def handlers(self) -> dict[str, Handler]:
        return {"CreateEndpoint": self.create, "DescribeEndpoint": self.describe,
                "ListEndpoints": self.list_endpoints, "UpdateEndpoint": self.update,
                "DeleteEndpoint": self.delete}

    # -- bringing workers up -----------------------------------------------------------------

    def _spawn(self, name: str, config: str, caller: Caller, first_line: str,
               updating: bool = False, restarting: bool = False) -> None:
        threading.Thread(target=self._bring_up,
                         args=(name, config, caller, first_line, updating, restarting),
                         daemon=True, name=f"endpoint {name}").start()

    def _bring_up(self, name: str, config_name: str, caller: Caller, first_line: str,
                  updating: bool, restarting: bool) -> None:
        now = time.time()
        self.state.append_logs(log_group(name), "openknn", [(int(now * 1000), first_line)])
        try:
            live, summaries = self._start_workers(name, config_name, caller)
        except WorkerFailed as exc:
            self._failed(name, str(exc), updating)
            self._restoring.discard(name)
            return
        with self._lock:
            if self._closing or self.state.get(KIND, name) is None:  # deleted meanwhile
                live.stop()
                return
            old = self._live.get(name)
            self._live[name] = live
            self._restoring.discard(name)

        def in_service(d: Doc) -> Doc:
            d.update(EndpointStatus="InService", EndpointConfigName=config_name,
                     ProductionVariants=summaries, LastModifiedTime=time.time())
            d.pop("PendingConfigName", None)
            if not restarting:
                d.pop("FailureReason", None)
            return d

        self.state.update(KIND, name, in_service)
        self.state.append_logs(log_group(name), "openknn", [(int(time.time() * 1000),
                               f"Endpoint {name} is InService with {config_name} "
                               f"({len(live.workers())} workers, "
                               f"{time.time() - now:.2f} s)")])
        if old is not None:
            self._drain(old)

    def _start_workers(self, name: str, config_name: str, caller: Caller
                       ) -> tuple[Live, list[dict[str, Any]]]:
        config = self.state.get(CONFIG, config_name)
        if config is None:
            raise WorkerFailed(f'Could not find endpoint configuration '
                               f'"{arn(caller, CONFIG, config_name)}".')
        variants: dict[str, Variant] = {}
        summaries = []
        env = {**os.environ, **self.worker_env(), "PYTHONUNBUFFERED": "1"}
        cpus = os.cpu_count() or 1
        count = sum(v["InitialInstanceCount"] for v in config["ProductionVariants"])
        for spec in config["ProductionVariants"]:
            model = self.state.get(MODEL, spec["ModelName"])
            if model is None:
                missing = arn(caller, MODEL, spec["ModelName"])
                raise WorkerFailed(f'Could not find model "{missing}".')
            container = model["PrimaryContainer"]
            args = ["--threads", str(max(1, cpus // count)), "--gpus",
                    str(gpu.for_instance_type(spec["InstanceType"]))]
            workers = [Worker(name, spec["VariantName"], container["ModelDataUrl"], args,
                              {**env, **container.get("Environment", {})}, self.state)
                       for _ in range(spec["InitialInstanceCount"])]
            variants[spec["VariantName"]] = Variant(spec["VariantName"],
                                                    spec["InitialVariantWeight"], workers)
            summaries.append(_variant_summary(spec, container["Image"], time.time()))
        live = Live(config_name, variants)
        for variant, spec in zip(variants.values(), config["ProductionVariants"]):
            device = _device_line(spec["InstanceType"])
            for worker in variant.workers:
                worker.on_exit = functools.partial(self._worker_died, name, live)
                worker.say(f"Instance {worker.instance} ({spec['InstanceType']}) of variant "
                           f"{variant.name}: {device}")
                worker.start()
        try:
            errors: list[WorkerFailed] = []

            def wait(worker: Worker) -> None:
                try:
                    worker.wait_ready()
                except WorkerFailed as exc:
                    errors.append(exc)

            threads = [threading.Thread(target=wait, args=(w,)) for w in live.workers()]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            if errors:
                raise errors[0]
        except BaseException:
            live.stop()
            raise
        return live, summaries

    def _failed(self, name: str, reason: str, updating: bool) -> None:
        self.state.append_logs(log_group(name), "openknn", [(int(time.time() * 1000),
                                                            f"Failed: {reason}")])

        def failed(d: Doc) -> Doc:
            d.pop("PendingConfigName", None)
            d["LastModifiedTime"] = time.time()
            d["FailureReason"] = reason[:1024]
            # An update that fails leaves the endpoint on its old config, still serving.
            d["EndpointStatus"] = "InService" if updating and name in self._live else "Failed"
            return d

        self.state.update(KIND, name, failed)

    def _drain(self, old: Live) -> None:
        """The old config's workers, once its requests in flight are done (bounded)."""
        old.retired = True
        deadline = time.monotonic() + DRAIN_TIMEOUT_S
        time.sleep(0.2)  # requests that picked this set just before the switch
        while old.inflight > 0 and time.monotonic() < deadline:
            time.sleep(0.02)
        old.stop()

    # -- a worker that dies ------------------------------------------------------------------

    def _worker_died(self, name: str, live: Live, worker: Worker, status: int) -> None:
        if live.retired or self._closing:
            return
        how = f"was killed by signal {-status}" if status < 0 else f"exited with status {status}"
        recent = [t for t in worker.deaths if time.monotonic() - t < 60] + [time.monotonic()]
        worker.deaths = recent
        if len(recent) > RESTARTS_PER_MINUTE:
            worker.say(f"Worker {worker.instance} {how} {len(recent)} times within a minute; "
                       "not restarting it")
            self._failed(name, f"AlgorithmError: an endpoint worker {how} "
                         f"{len(recent)} times within a minute: {worker.reason('failed')}",
                         updating=False)
            with self._lock:
                if self._live.get(name) is live:
                    del self._live[name]
            live.stop()
            return
        worker.say(f"Worker {worker.instance} {how}; starting it again")
        threading.Thread(target=self._restart, args=(worker,), daemon=True).start()

    def _restart(self, worker: Worker) -> None:
        worker.start()
        try:
            worker.wait_ready()
        except WorkerFailed as exc:
            worker.say(f"The restarted worker failed: {exc}")
            return
        worker.say(f"Worker {worker.instance} is serving again at {worker.url}")


def _device_line(instance_type: str) -> str:
    """Where this instance type's worker searches: GPU types (ml.p*, ml.g*) on a GPU where
    faiss sees one, else on the CPU, saying so."""
    if gpu.for_instance_type(instance_type) == 0:
        return "searching on the CPU"
    if gpu.visible() > 0:
        return "a GPU instance type: searching on GPU 0 (faiss sees a GPU here)"
    return ("a GPU instance type, but faiss sees no GPU on this machine"
            f"{'' if gpu.gpu_build() else ' (faiss-cpu is installed)'}: searching on the CPU")


def _region_account(endpoint_arn: str) -> tuple[str, str]:
    parts = endpoint_arn.split(":")
    return parts[3], parts[4]

