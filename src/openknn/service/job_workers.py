"""The worker processes of one kind of job (training jobs, transform jobs): each started as
``python -m <module> <job.json>`` in the job's folder, in a session of its own; its stdout
read as the protocol (one JSON event per line, for the job's document) and its stderr as the
job's log (into its CloudWatch stream), by a pump thread that reports the worker's exit;
SIGTERM to stop one, and at shutdown to all of them, then SIGKILL. One implementation for
both kinds of job: what differs (the events, the document) is the caller's."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Collection, Mapping
from pathlib import Path
from typing import IO, Any

from openknn.service.state import State

OnEvent = Callable[[dict[str, Any]], None]
OnEnd = Callable[[int], None]


def now_ms() -> int:
    return int(time.time() * 1000)


def event_of(line: str, known: Collection[str]) -> dict[str, Any] | None:
    """A worker's stdout line as a protocol event (a JSON object with one of ``known``'s
    keys), or None: a library's own print, which belongs to the log."""
    try:
        event = json.loads(line)
    except ValueError:
        return None
    return event if isinstance(event, dict) and any(k in event for k in known) else None


class JobWorkers:
    """The running workers of one kind of job, by job name."""

    def __init__(self, state: State, module: str, jobs_dir: Path, log_group: str,
                 events: Collection[str], worker_env: Callable[[], dict[str, str]],
                 thread_name: str) -> None:
        self.state = state
        self.module, self.jobs_dir, self.log_group = module, jobs_dir, log_group
        self.events, self.worker_env, self.thread_name = events, worker_env, thread_name
        self._workers: dict[str, subprocess.Popen[str]] = {}
        self._lock = threading.Lock()

    def start(self, name: str, job: Mapping[str, Any], stream: str, on_event: OnEvent,
              on_end: OnEnd, env: Mapping[str, str] | None = None) -> None:
        """Write the job's description and start its worker; ``on_event`` gets each event,
        ``on_end`` the exit status once its output is all read."""
        folder = self.jobs_dir / name
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "job.json").write_text(json.dumps(job))
        environment = {**os.environ, **self.worker_env(), "PYTHONUNBUFFERED": "1",
                       **(env or {})}
        proc = subprocess.Popen([sys.executable, "-m", self.module, str(folder / "job.json")],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                stdin=subprocess.DEVNULL, text=True, env=environment,
                                cwd=folder, start_new_session=True)
        with self._lock:
            self._workers[name] = proc
        threading.Thread(target=self._pump, args=(name, proc, stream, on_event, on_end),
                         daemon=True, name=f"{self.thread_name} {name}").start()

    def stop(self, name: str) -> None:
        """SIGTERM to the job's worker, if it runs: it unwinds and uploads nothing."""
        with self._lock:
            proc = self._workers.get(name)
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)

    def shutdown(self, timeout: float = 10.0) -> list[str]:
        """Stop every worker (SIGTERM, then SIGKILL after ``timeout``); the jobs they ran."""
        with self._lock:
            workers = dict(self._workers)
        for proc in workers.values():
            if proc.poll() is None:
                proc.terminate()
        deadline = time.monotonic() + timeout
        for proc in workers.values():
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        return list(workers)

    def _pump(self, name: str, proc: subprocess.Popen[str], stream: str, on_event: OnEvent,
              on_end: OnEnd) -> None:
        """Until the worker exits: its log into the job's stream, its events to
        ``on_event``; then its exit status to ``on_end``."""
        assert proc.stdout is not None and proc.stderr is not None
        log_thread = threading.Thread(target=self._copy_log, args=(proc.stderr, stream),
                                      daemon=True)
        log_thread.start()
        for line in proc.stdout:
            event = event_of(line, self.events)
            if event is None:  # a library's print: the log's, not the protocol's
                self.state.append_logs(self.log_group, stream, [(now_ms(), line.rstrip("\n"))])
            else:
                on_event(event)
        status = proc.wait()
        log_thread.join(timeout=10)
        with self._lock:
            self._workers.pop(name, None)
        on_end(status)

    def _copy_log(self, stderr: IO[str], stream: str) -> None:
        for line in stderr:
            self.state.append_logs(self.log_group, stream, [(now_ms(), line.rstrip("\n"))])
