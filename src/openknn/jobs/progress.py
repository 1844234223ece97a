"""Progress of long reads: a bar on a terminal, plain periodic log lines elsewhere."""

from __future__ import annotations

import logging
import sys
import time
from types import TracebackType
from typing import Any

log = logging.getLogger(__name__)


class Progress:
    """Counts records read; shows them as a tqdm counter or a log line every ``every`` s."""

    def __init__(self, what: str, every: float = 10.0, bar: bool | None = None) -> None:
        self.what = what
        self.records = 0
        self.start = time.perf_counter()
        self._every = every
        self._last = self.start
        use_bar = sys.stderr.isatty() if bar is None else bar
        self._bar: Any = None
        if use_bar:
            from tqdm import tqdm

            self._bar = tqdm(unit=" records", unit_scale=True, desc=what, leave=False)

    def update(self, records: int) -> None:
        self.records += records
        if self._bar is not None:
            self._bar.update(records)
            return
        now = time.perf_counter()
        if now - self._last >= self._every:
            self._last = now
            log.info("%s: %d records read (%.0f records/s)", self.what, self.records, self.rate)

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    @property
    def rate(self) -> float:
        return self.records / max(self.elapsed, 1e-9)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
