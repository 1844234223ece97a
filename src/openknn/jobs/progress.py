"""Progress of long reads and transfers: a bar on a terminal, plain periodic log lines
elsewhere (a job's log, CI), so that a long S3 upload or channel read is never silent."""

from __future__ import annotations

import logging
import sys
import time
from types import TracebackType
from typing import Any

log = logging.getLogger(__name__)


MIB = float(1 << 20)


class Progress:
    """Counts records read (or, with ``total_bytes``, bytes moved); shows them as a tqdm bar
    or a log line every ``every`` s."""

    def __init__(self, what: str, every: float = 10.0, bar: bool | None = None,
                 total_bytes: int | None = None) -> None:
        self.what = what
        self.records = 0  # records, or bytes when total_bytes is given
        self.start = time.perf_counter()
        self._every = every
        self._last = self.start
        self._total = total_bytes
        use_bar = sys.stderr.isatty() if bar is None else bar
        self._bar: Any = None
        if use_bar:
            from tqdm import tqdm

            if total_bytes is None:
                self._bar = tqdm(unit=" records", unit_scale=True, desc=what, leave=False)
            else:
                self._bar = tqdm(unit="B", unit_scale=True, unit_divisor=1024, desc=what,
                                 total=total_bytes, leave=False)

    def update(self, records: int) -> None:
        self.records += records
        if self._bar is not None:
            self._bar.update(records)
            return
        now = time.perf_counter()
        if now - self._last >= self._every:
            self._last = now
            if self._total is None:
                log.info("%s: %d records read (%.0f records/s)", self.what, self.records,
                         self.rate)
            else:
                log.info("%s: %.1f of %.1f MiB (%.1f MiB/s)", self.what, self.records / MIB,
                         self._total / MIB, self.rate / MIB)

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
