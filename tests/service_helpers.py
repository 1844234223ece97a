"""`openknn up` as a process for tests: started on a free port with its own home, ready when
its health answers, stopped with SIGTERM; and the environment `openknn env` prints for it."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import httpx

START_TIMEOUT_S = 30.0
URL_LINE = re.compile(r"openknn up: (http://127\.0\.0\.1:\d+) \(home (.+)\)")


@contextmanager
def service(home: Path, log: Path, args: Sequence[str] = ()
            ) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """`openknn up --port 0 --home HOME [ARGS]`, ready (its health answers); stopped after."""
    with open(log, "wb") as sink:
        proc = subprocess.Popen([sys.executable, "-m", "openknn", "up", "--port", "0",
                                 "--home", str(home), *args], stdout=sink,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        deadline, url = time.monotonic() + START_TIMEOUT_S, None
        while url is None:
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            found = URL_LINE.search(log.read_text())
            url = found.group(1) if found else None
            time.sleep(0.05)
        while True:
            try:
                if httpx.get(f"{url}/_openknn/health", timeout=1, trust_env=False).is_success:
                    break
            except httpx.HTTPError:
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.05)
        yield proc, url
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def environment(url: str, home: Path) -> dict[str, str]:
    ran = subprocess.run([sys.executable, "-m", "openknn", "env", "--endpoint-url", url],
                         capture_output=True, text=True, timeout=60, check=True)
    values = dict(re.findall(r"^export (\w+)=(\S+)$", ran.stdout, re.M))
    assert values["SAGEMAKER_USER_CONFIG_OVERRIDE"] == str(home / "sagemaker-config.yaml")
    return values


