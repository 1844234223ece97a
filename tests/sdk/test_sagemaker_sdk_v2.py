"""The real SageMaker Python SDK v2 (``sagemaker==2.257.*``, in its own venv,
``.venv-sagemaker``) runs the tutorial against ``openknn up`` on 127.0.0.1 with nothing but
``openknn env``'s environment: ``examples/sagemaker_sdk_tutorial.py``, Part 1 and Part 2,
under a guard that refuses and records any connection or name lookup that would leave the
machine. Checked against scikit-learn on the same Kaggle covtype rows: the 100 batches'
predictions, the accuracy the job's log prints, the verbose labels; Part 2's IVFPQ model on
ml.p2.xlarge answers, on the CPU here, and its log says so. Behind the ``sdk`` marker (about
two minutes: the SDK itself waits 30 s before its first look at a new endpoint)."""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from openknn.jobs import datasets

from ..conftest import shared_file
from ..service_helpers import service

pytestmark = pytest.mark.sdk
REPO = Path(__file__).resolve().parents[2]
SDK_PYTHON = Path(os.environ.get("OPENKNN_SAGEMAKER_PYTHON",
                                 REPO / ".venv-sagemaker" / "bin" / "python"))
COVTYPE = ("covtype", "kaggle-forest-cover-type-prediction_train.csv.gz")
TIMEOUT_S = 900


@pytest.fixture(scope="module")
def sdk_python() -> Path:
    if not SDK_PYTHON.exists():
        pytest.skip(f"no SageMaker SDK venv at {SDK_PYTHON}: python3 -m venv .venv-sagemaker "
                    "&& .venv-sagemaker/bin/pip install -e '.[sagemaker-v2]' (README)")
    return SDK_PYTHON


def run_tutorial(python: Path, tmp_path: Path, *args: str) -> tuple[dict, str, str, Path]:
    """The example under the loopback guard against a fresh ``openknn up``; its results, its
    output, the service's log and the service's home."""
    data = shared_file(*COVTYPE)
    home = tmp_path / "home"
    with service(home, tmp_path / "up.log") as (_, url):
        ran = subprocess.run([sys.executable, "-m", "openknn", "env", "--endpoint-url", url,
                              "--write-role-metadata"], capture_output=True, text=True,
                             timeout=60)
        if ran.returncode != 0 and "(Permission denied)" in ran.stderr:  # not root
            pytest.skip(f"cannot write the SDK's role metadata file: {ran.stderr.strip()}")
        assert ran.returncode == 0, ran.stderr
        values = dict(re.findall(r"^export (\w+)=(\S+)$", ran.stdout, re.M))
        # The user's environment, less anything that could point a client elsewhere.
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("AWS_", "SAGEMAKER_", "BOTO"))}
        env.update(values, PYTHONUNBUFFERED="1")
        results, report = tmp_path / "results.json", tmp_path / "refused.json"
        started = time.monotonic()
        tutorial = subprocess.run(
            [str(python), str(REPO / "tests" / "sdk" / "loopback_guard.py"), str(report),
             str(REPO / "examples" / "sagemaker_sdk_tutorial.py"), "--path", str(data),
             "--results", str(results), *args], capture_output=True, text=True, env=env,
            cwd=tmp_path, timeout=TIMEOUT_S)
        wall = time.monotonic() - started
        output = tutorial.stdout + tutorial.stderr
        assert tutorial.returncode == 0, output[-4000:]
    print(f"SDK v2 tutorial wall time: {wall:.1f} s")
    assert json.loads(report.read_text()) == [], "a request left the machine"
    return json.loads(results.read_text()), output, (tmp_path / "up.log").read_text(), home


def test_the_tutorial_runs_unchanged_on_the_real_sdk(sdk_python: Path, tmp_path: Path) -> None:
    from sklearn.neighbors import KNeighborsClassifier

    results, output, _, home = run_tutorial(sdk_python, tmp_path)
    x, y, xt, yt = datasets.tutorial_split(datasets.load_covtype(shared_file(*COVTYPE)))
    knn = KNeighborsClassifier(n_neighbors=10, algorithm="brute").fit(x, y)
    expected = knn.predict(xt)
    predictions = np.array(results["predictions"])
    assert len(predictions) == len(yt)
    agree = float(np.mean(predictions == expected))
    print(f"Part 1: accuracy {results['accuracy']:.4f} (scikit-learn "
          f"{np.mean(expected == yt):.4f}), agreement with scikit-learn {agree:.4f}; fit "
          f"{results['fit_seconds']:.1f} s, deploy {results['deploy_seconds']:.1f} s, 100 "
          f"predict batches {results['predict_seconds']:.2f} s; whole tutorial "
          f"{results['wall_seconds']:.1f} s")
    assert agree >= 0.999  # float32 ties may flip a vote; anything more is a wrong answer
    assert abs(results["accuracy"] - float(np.mean(expected == yt))) <= 0.001
    # fit(logs=True) printed the job's log: its test score line, the job's own accuracy
    score = re.search(r"#test_score \(algo-1\) : \('accuracy', ([0-9.]+)\)", output)
    assert score is not None, output[-3000:]
    assert abs(float(score.group(1)) - results["accuracy"]) < 1e-6
    assert "Completed - Training job completed" in output
    assert "accuracy of model: " in output and "Deleted knn-ml-m4-xlarge-" in output
    # verbose labels: the labels of each row's 10 nearest training rows, as scikit-learn has
    _, index = knn.kneighbors(xt[:5])
    for row, near in zip(results["verbose"], index):
        assert len(row["labels"]) == 10 and len(row["distances"]) == 10
        assert sorted(row["labels"]) == sorted(y[near].tolist())
    # Part 2: IVFPQ on a GPU type, served on the CPU here (faiss-cpu)
    part2 = results["part2"]
    by_k = {int(k): v for k, v in part2["accuracy_by_k"].items()}
    print("Part 2 (IVFPQ, ml.p2.xlarge): accuracy by k "
          + ", ".join(f"{k}: {a:.3f}" for k, a in by_k.items())
          + f"; single row p50 {part2['single_row_ms_p50']:.1f} ms, p99 "
            f"{part2['single_row_ms_p99']:.1f} ms (through the SDK)")
    exact = float(np.mean(expected == yt))
    assert by_k[10] > exact - 0.1  # an approximate index, well short of a wrong one
    with sqlite3.connect(home / "state.db") as db:  # the endpoint's log, kept by the service
        lines = [m for (m,) in db.execute(
            "SELECT message FROM log_events WHERE grp = ?",
            (f"/aws/sagemaker/Endpoints/{part2['endpoint_name']}",))]
    from openknn.core import gpu

    where = "searching on GPU 0" if gpu.visible() else "searching on the CPU"
    assert any("(ml.p2.xlarge) of variant AllTraffic: a GPU instance type" in m and
               m.endswith(where) for m in lines), lines[:5]

