"""openknn on Ray (the ``[ray]`` extra): the only package that imports Ray."""

from __future__ import annotations

import os
from typing import Any

from ..errors import MissingExtraError


def import_ray() -> Any:
    """Ray, or a clear install hint at first use."""
    # Every host's log lines reach the job log, as SageMaker's do: Ray would otherwise fold
    # algo-2's lines into algo-1's "repeated 2x across cluster". Read when Ray is imported.
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    try:
        import ray
    except ImportError:
        raise MissingExtraError("Training or serving on several hosts", "ray", "ray") from None
    return ray
