"""The service's state in one SQLite file under its home (the standard library's sqlite3):
SageMaker resources (training jobs, models, endpoint configs, endpoints, transform jobs) as the
JSON documents their Describe call answers, and the CloudWatch log streams and events.

Why documents. Each Describe answer is a document with optional, nested fields that grow with
the API; keeping it whole (and the few columns listing needs beside it) means a restart answers
exactly what was answered before. Every change is one transaction, so a crash leaves the
state before or after it, never between (WAL journal, synchronous=NORMAL: a power cut may lose
the last commits, never corrupt the file). One connection, shared by the service's threads
under a lock: the writes are small and few."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS resources (
    kind TEXT NOT NULL, name TEXT NOT NULL, created REAL NOT NULL, doc TEXT NOT NULL,
    PRIMARY KEY (kind, name));
CREATE TABLE IF NOT EXISTS log_streams (
    grp TEXT NOT NULL, stream TEXT NOT NULL, created INTEGER NOT NULL,
    PRIMARY KEY (grp, stream));
CREATE TABLE IF NOT EXISTS log_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT, grp TEXT NOT NULL, stream TEXT NOT NULL,
    ts INTEGER NOT NULL, ingested INTEGER NOT NULL, message TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS log_events_by_stream ON log_events (grp, stream, id);
"""
DB_FILE = "state.db"

Doc = dict[str, Any]


@dataclass(frozen=True)
class LogEvent:
    id: int
    stream: str
    timestamp: int  # ms since the epoch, as CloudWatch's events carry it
    ingestion_time: int
    message: str


class State:
    """Resources and logs in ``home/state.db``; safe to share between threads."""

    def __init__(self, home: Path) -> None:
        home.mkdir(parents=True, exist_ok=True)
        self.path = home / DB_FILE
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._lock = threading.RLock()
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    # -- resources ---------------------------------------------------------------------------

    def insert(self, kind: str, name: str, doc: Doc) -> bool:
        """Add a resource; False (and nothing written) when one of that kind and name exists."""
        with self._transaction() as db:
            try:
                db.execute("INSERT INTO resources (kind, name, created, doc) VALUES (?,?,?,?)",
                           (kind, name, time.time(), json.dumps(doc)))
            except sqlite3.IntegrityError:
                return False
        return True

    def get(self, kind: str, name: str) -> Doc | None:
        with self._lock:
            row = self._db.execute("SELECT doc FROM resources WHERE kind=? AND name=?",
                                   (kind, name)).fetchone()
        return None if row is None else dict(json.loads(row[0]))

    def update(self, kind: str, name: str, change: Callable[[Doc], Doc | None]) -> Doc | None:
        """Read, change and write one resource in one transaction; ``change`` returns the new
        document (or None to leave it). The document as it now is, or None if absent."""
        with self._transaction() as db:
            row = db.execute("SELECT doc FROM resources WHERE kind=? AND name=?",
                             (kind, name)).fetchone()
            if row is None:
                return None
            doc = dict(json.loads(row[0]))
            new = change(doc)
            if new is None:
                return doc
            db.execute("UPDATE resources SET doc=? WHERE kind=? AND name=?",
                       (json.dumps(new), kind, name))
            return new

    def delete(self, kind: str, name: str) -> bool:
        with self._transaction() as db:
            return db.execute("DELETE FROM resources WHERE kind=? AND name=?",
                              (kind, name)).rowcount > 0

    def resources(self, kind: str) -> list[Doc]:
        """Every resource of ``kind``, oldest first."""
        with self._lock:
            rows = self._db.execute("SELECT doc FROM resources WHERE kind=? ORDER BY created, "
                                    "name", (kind,)).fetchall()
        return [dict(json.loads(r[0])) for r in rows]

    # -- logs --------------------------------------------------------------------------------

    def append_logs(self, group: str, stream: str, lines: Iterable[tuple[int, str]]) -> None:
        """Events (ms timestamp, message) at the end of a stream, made if it is new."""
        now = int(time.time() * 1000)
        with self._transaction() as db:
            db.execute("INSERT OR IGNORE INTO log_streams (grp, stream, created) VALUES (?,?,?)",
                       (group, stream, now))
            db.executemany("INSERT INTO log_events (grp, stream, ts, ingested, message) "
                           "VALUES (?,?,?,?,?)",
                           [(group, stream, ts, now, message) for ts, message in lines])

    def streams(self, group: str, prefix: str = "") -> list[tuple[str, int]]:
        """(name, creation ms) of the group's streams starting with ``prefix``, by name."""
        with self._lock:
            rows = self._db.execute(
                "SELECT stream, created FROM log_streams WHERE grp=? AND substr(stream, 1, ?)=? "
                "ORDER BY stream", (group, len(prefix), prefix)).fetchall()
        return [(r[0], int(r[1])) for r in rows]

    def group_exists(self, group: str) -> bool:
        with self._lock:
            return self._db.execute("SELECT 1 FROM log_streams WHERE grp=? LIMIT 1",
                                    (group,)).fetchone() is not None

    def tail(self, group: str, streams: Iterable[str], count: int) -> tuple[list[LogEvent], int]:
        """The newest ``count`` events of ``streams``, in the order they came, and how many
        came before them (a log view shows the end of a long log without reading it all)."""
        names = list(streams)
        if not names:
            return [], 0
        marks = ",".join("?" * len(names))
        where = f"grp=? AND stream IN ({marks})"
        with self._lock:
            total = int(self._db.execute(f"SELECT COUNT(*) FROM log_events WHERE {where}",
                                         [group, *names]).fetchone()[0])
            rows = self._db.execute(
                f"SELECT id, stream, ts, ingested, message FROM log_events WHERE {where} "
                "ORDER BY id DESC LIMIT ?", [group, *names, count]).fetchall()
        events = [LogEvent(int(r[0]), r[1], int(r[2]), int(r[3]), r[4]) for r in rows[::-1]]
        return events, total - len(events)

    def events(self, group: str, streams: Iterable[str], after_id: int = 0,
               start_time: int | None = None, end_time: int | None = None,
               limit: int = 10000) -> list[LogEvent]:
        """Events of ``streams`` with ids above ``after_id``, in the order they came."""
        names = list(streams)
        if not names:
            return []
        marks = ",".join("?" * len(names))
        sql = (f"SELECT id, stream, ts, ingested, message FROM log_events WHERE grp=? AND "
               f"stream IN ({marks}) AND id>?")
        args: list[Any] = [group, *names, after_id]
        if start_time is not None:
            sql += " AND ts>=?"
            args.append(start_time)
        if end_time is not None:
            sql += " AND ts<?"
            args.append(end_time)
        sql += " ORDER BY id LIMIT ?"
        args.append(limit)
        with self._lock:
            rows = self._db.execute(sql, args).fetchall()
        return [LogEvent(int(r[0]), r[1], int(r[2]), int(r[3]), r[4]) for r in rows]
