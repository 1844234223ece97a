"""How a job's per-host steps run: in this process one host after another (the default,
no Ray needed), or as Ray tasks (``openknn.distributed``) — the same functions either way."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol, TypeVar

T = TypeVar("T")


class Runner(Protocol):
    """Maps a per-host function over one argument tuple per host, results in host order."""

    def map(self, fn: Callable[..., T], args: Sequence[tuple[Any, ...]]) -> list[T]: ...


class LocalRunner:
    """Runs every host's step in this process, in rank order: what a W-host job computes,
    bit for bit, without Ray."""

    def map(self, fn: Callable[..., T], args: Sequence[tuple[Any, ...]]) -> list[T]:
        return [fn(*a) for a in args]
