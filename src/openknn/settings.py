"""Serving settings from an injected mapping (the environment by default); every
environment-variable name is defined here once."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from .errors import ClientError

BIND_TO_PORT = "SAGEMAKER_BIND_TO_PORT"
MAX_PAYLOAD_IN_MB = "SAGEMAKER_MAX_PAYLOAD_IN_MB"
BATCH_STRATEGY = "SAGEMAKER_BATCH_STRATEGY"
MAX_CONCURRENT_TRANSFORMS = "SAGEMAKER_MAX_CONCURRENT_TRANSFORMS"
BATCH_WINDOW_MS = "OPENKNN_BATCH_WINDOW_MS"
MAX_BATCH_ROWS = "OPENKNN_MAX_BATCH_ROWS"
THREADS = "OPENKNN_THREADS"
NUM_GPUS = "OPENKNN_NUM_GPUS"  # 'auto' or a count, like the _num_gpus hyperparameter
# connection limits and timeouts (docs/serving.md, "Connection limits and timeouts")
MAX_CONNECTIONS = "OPENKNN_MAX_CONNECTIONS"
MAX_HEADER_KB = "OPENKNN_MAX_HEADER_KB"
HEADER_TIMEOUT_S = "OPENKNN_HEADER_TIMEOUT_S"
BODY_TIMEOUT_S = "OPENKNN_BODY_TIMEOUT_S"
KEEP_ALIVE_S = "OPENKNN_KEEP_ALIVE_S"
HOME = "OPENKNN_HOME"  # the SDK's endpoint registry lives under it
ENDPOINT_TOKEN = "OPENKNN_ENDPOINT_TOKEN"  # a secret per endpoint, set by the SDK's deploy
CACHE = "OPENKNN_CACHE"  # downloaded data sets
COVTYPE_URLS = "OPENKNN_COVTYPE_URLS"  # comma-separated; replaces the covtype download URLs

DEFAULT_PORT = 8080


@dataclass(frozen=True)
class ServingSettings:
    """How the endpoint runs. ``batch_window_ms`` caps how long a search waits for more rows."""

    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    max_payload_mb: float = 6.0
    batch_window_ms: float = 2.0
    max_batch_rows: int = 4096
    threads: int | None = None
    batch_strategy: str = "MULTI_RECORD"
    max_concurrent_transforms: int = 1
    gpus: int | str = "auto"  # search on a GPU copy of the index (openknn.core.gpu)
    # open connections at most (lowered to stay under ``ulimit -n``); a request head's size
    # and deadline; the whole body's deadline; how long an idle kept-alive connection stays
    max_connections: int = 512
    max_header_kb: int = 16
    header_timeout_s: float = 5.0
    body_timeout_s: float = 30.0
    keep_alive_s: int = 5

    def with_(self, **changes: Any) -> ServingSettings:
        """A copy with the non-None ``changes`` applied (CLI options over the environment)."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})


def _number(env: Mapping[str, str], name: str, cast: type, default: Any) -> Any:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = cast(raw)
    except ValueError:
        raise ClientError(f"Environment variable {name}={raw!r} is not a valid "
                          f"{cast.__name__}; unset it or give a number") from None
    if value < 0:
        raise ClientError(f"Environment variable {name}={raw!r} must not be negative")
    return value


def _limit(env: Mapping[str, str], name: str, cast: type, default: Any) -> Any:
    """A limit or timeout: a finite number above zero."""
    value = _number(env, name, cast, default)
    if not 0 < value < float("inf"):
        raise ClientError(f"Environment variable {name}={env.get(name)!r} must be a number "
                          "above 0")
    return value


def parse_gpus(raw: str, name: str) -> int | str:
    """``auto`` or a non-negative GPU count, from an option or environment variable."""
    text = raw.strip().lower()
    if text == "auto":
        return "auto"
    if not text.isdigit():
        raise ClientError(f"{name}={raw!r} is not 'auto' or a GPU count; give auto, 0 (CPU "
                          "only) or 1")
    return int(text)


def from_env(env: Mapping[str, str] | None = None) -> ServingSettings:
    """Settings from environment variables (SageMaker's names where SageMaker has one)."""
    env = os.environ if env is None else env
    d = ServingSettings()
    return ServingSettings(
        port=_number(env, BIND_TO_PORT, int, d.port),
        max_payload_mb=_number(env, MAX_PAYLOAD_IN_MB, float, d.max_payload_mb),
        batch_window_ms=_number(env, BATCH_WINDOW_MS, float, d.batch_window_ms),
        max_batch_rows=max(1, _number(env, MAX_BATCH_ROWS, int, d.max_batch_rows)),
        threads=_number(env, THREADS, int, None) or None,
        batch_strategy=env.get(BATCH_STRATEGY, d.batch_strategy),
        max_concurrent_transforms=_number(env, MAX_CONCURRENT_TRANSFORMS, int,
                                          d.max_concurrent_transforms),
        gpus=parse_gpus(env[NUM_GPUS], NUM_GPUS) if env.get(NUM_GPUS) else d.gpus,
        max_connections=_limit(env, MAX_CONNECTIONS, int, d.max_connections),
        max_header_kb=_limit(env, MAX_HEADER_KB, int, d.max_header_kb),
        header_timeout_s=_limit(env, HEADER_TIMEOUT_S, float, d.header_timeout_s),
        body_timeout_s=_limit(env, BODY_TIMEOUT_S, float, d.body_timeout_s),
        keep_alive_s=_limit(env, KEEP_ALIVE_S, int, d.keep_alive_s),
    )
