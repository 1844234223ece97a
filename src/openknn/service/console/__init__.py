"""The web console of ``openknn up``: what SageMaker's console shows (jobs, their logs and
metrics, models, endpoint configs, endpoints, transform jobs, S3), served by the service itself,
over the same state and through the same handlers as its API (docs/console.md)."""

from __future__ import annotations

from openknn.service.console.app import Console
from openknn.service.console.pages import Parts

__all__ = ["Console", "Parts"]
