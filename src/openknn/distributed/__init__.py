"""openknn on Ray (the ``[ray]`` extra): the only package that imports Ray."""

from __future__ import annotations

import os
from typing import Any

from ..errors import MissingExtraError

ADDRESS_ENV = "RAY_ADDRESS"


def import_ray() -> Any:
    """Ray, or a clear install hint at first use."""
    try:
        import ray
    except ImportError:
        raise MissingExtraError("Training or serving on several hosts", "ray", "ray") from None
    return ray


def connect(address: str | None = None, num_cpus: int | None = None) -> tuple[Any, bool]:
    """Ray, initialised: joins ``address`` (or ``RAY_ADDRESS``), else starts a local instance.
    Returns Ray and whether this call started it (and so should shut it down).

    The local instance is asked for as ``address="local"``: a bare ``ray.init()`` would
    instead join whatever cluster ``ray start`` (or Ray's test ``Cluster``) last recorded in
    ``/tmp/ray/ray_current_cluster`` on this machine, where ``num_cpus`` is refused and
    the cluster's owner may shut it down under the job. ``address="auto"`` still joins that
    one, on request."""
    ray = import_ray()
    if ray.is_initialized():
        return ray, False
    address = address or os.environ.get(ADDRESS_ENV) or None
    if address is None:
        os.environ.pop(ADDRESS_ENV, None)  # an empty RAY_ADDRESS would confuse ray.init
        ray.init(address="local", num_cpus=num_cpus, include_dashboard=False,
                 log_to_driver=False, configure_logging=False)
        return ray, True
    ray.init(address=address, log_to_driver=False, configure_logging=False)
    return ray, False
