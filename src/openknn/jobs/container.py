"""SageMaker's ``/opt/ml`` container contract as an adapter over a plain TrainingJobSpec:
config files in, model files and the failure file out."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from ..errors import ClientError, DataError
from . import outputs
from .data import Channel
from .training import TrainingJobSpec

DEFAULT_ROOT = Path("/opt/ml")

log = logging.getLogger(__name__)


def _read_json(path: Path, default: Any) -> Any:
    if not path.exists():
        return default
    try:
        return json.loads(path.read_text())
    except ValueError as exc:
        raise DataError(f"{path}: not valid JSON ({exc}); SageMaker writes this file as a "
                        "JSON object") from None


def channels(root: Path, config: dict[str, Any]) -> dict[str, Channel]:
    """Channels from ``input/data/<name>`` (File mode) or the ``<name>_0`` FIFO (Pipe mode)."""
    data = root / "input" / "data"
    names = set(config) | ({p.name for p in data.iterdir() if p.is_dir()} if data.is_dir()
                           else set())
    out = {}
    for name in sorted(names):
        cfg = config.get(name, {})
        pipe = cfg.get("TrainingInputMode") == "Pipe"
        location = data / (f"{name}_0" if pipe else name)
        out[name] = Channel(name, str(location), cfg.get("ContentType"))
    return out


def spec_from_root(root: Path = DEFAULT_ROOT, threads: int | None = None) -> TrainingJobSpec:
    """Read ``input/config/*.json`` into a job that writes ``model/`` (SageMaker tars it).
    The job holds the whole root, so a second job on it fails before it writes anything, its
    failure file included."""
    config = root / "input" / "config"
    hp = _read_json(config / "hyperparameters.json", {})
    data_config = _read_json(config / "inputdataconfig.json", {})
    resources = _read_json(config / "resourceconfig.json", {})
    hosts = resources.get("hosts", ["algo-1"])
    if len(hosts) > 1:
        raise ClientError(
            f"resourceconfig.json lists {len(hosts)} hosts {hosts}; multi-instance training "
            "runs through openknn's distributed runner (openknn[ray]), not this single-host "
            "container entry point; use one host"
        )
    return TrainingJobSpec(
        hyperparameters=hp, channels=channels(root, data_config),
        model_dir=root / "model", metrics_dir=root / "output" / "data",
        host=resources.get("current_host", "algo-1"), threads=threads, lock_dir=root,
    )


def write_failure(root: Path, reason: str) -> None:
    """``/opt/ml/output/failure``: its first 1024 characters become the FailureReason. Not
    written while another job holds the root: that job's outcome is not this one's."""
    try:
        with outputs.hold_output(root):
            out = root / "output"
            out.mkdir(parents=True, exist_ok=True)
            outputs.atomic_write(out / "failure", reason.encode() + b"\n")
    except outputs.OutputInUse:
        log.warning("Not writing %s: another job holds %s", root / "output" / "failure", root)
