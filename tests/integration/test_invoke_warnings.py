"""`openknn invoke` writes nothing to stderr but its answer's errors: no deprecation warning
(it used Starlette's TestClient, which warns on every run), even with every warning shown.
Real processes (``PYTHONWARNINGS`` and import-time warnings are a process's own), the two run
side by side."""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from openknn.jobs import artifact

from .test_serving_http import make_model


def invoke(model: Path, body: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONWARNINGS": "default"}  # every warning, once per place
    return subprocess.run([sys.executable, "-m", "openknn", "invoke", str(model)], input=body,
                          capture_output=True, text=True, timeout=120, env=env)


def test_invoke_prints_no_warning(tmp_path: Path) -> None:
    model = tmp_path / "model.tar.gz"
    artifact.write_model_tar(make_model(), model)
    with ThreadPoolExecutor(2) as pool:
        ok, bad = pool.map(lambda body: invoke(model, body),
                           ["0.1,0.2,0.3,0.4,0.5,0.6\n", "1,2,3"])
    assert ok.returncode == 0 and ok.stdout.startswith('{"predictions":')
    assert ok.stderr == ""
    assert bad.returncode == 1
    assert bad.stderr.strip().splitlines() == [bad.stderr.strip()]  # one line: the error
    assert bad.stderr.startswith("ClientError: HTTP 400:")
