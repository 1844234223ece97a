"""The tutorial as code: examples/covtype_tutorial.py and its notebook run to the end on the
real Kaggle covtype rows, print scikit-learn's brute-force accuracy, and delete the endpoint."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from openknn.jobs import datasets
from openknn.sdk import list_endpoints

from ..conftest import shared_file

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def sklearn_accuracy(path: Path) -> float:
    from sklearn.neighbors import KNeighborsClassifier

    x, y, xt, yt = datasets.tutorial_split(datasets.load_covtype(path))
    predicted = KNeighborsClassifier(10, algorithm="brute").fit(x, y).predict(xt)
    return float(np.mean(predicted == yt))


def check_output(out: str, path: Path) -> None:
    assert "train_features shape =  (13608, 54)" in out
    assert "uploaded training data location: " in out
    assert "#test_score (algo-1) : ('accuracy', " in out
    assert re.search(r"time required for predicting 1512 data point: [0-9.]+ seconds", out)
    exact = float(re.search(r"accuracy of model \(exact\): ([0-9.]+)", out).group(1))  # type: ignore[union-attr]
    assert exact == sklearn_accuracy(path)
    assert "Deleted knn-local-" in out
    assert list_endpoints() == []


@pytest.mark.slow
def test_covtype_tutorial_script(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("sklearn")
    path = shared_file("covtype", "kaggle-forest-cover-type-prediction_train.csv.gz")
    monkeypatch.setenv("OPENKNN_HOME", str(tmp_path / "home"))
    r = subprocess.run([sys.executable, str(EXAMPLES / "covtype_tutorial.py"), "--path",
                        str(path), "--workdir", str(tmp_path)], capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    check_output(r.stdout + r.stderr, path)


@pytest.mark.slow
def test_covtype_tutorial_notebook(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("sklearn")
    path = shared_file("covtype", "kaggle-forest-cover-type-prediction_train.csv.gz")
    notebook = json.loads((EXAMPLES / "covtype_tutorial.ipynb").read_text())
    code = "\n\n".join("".join(c["source"]) for c in notebook["cells"]
                       if c["cell_type"] == "code")
    env = {**os.environ, "COVTYPE_PATH": str(path), "COVTYPE_WORKDIR": str(tmp_path),
           "OPENKNN_HOME": str(tmp_path / "home")}
    monkeypatch.setenv("OPENKNN_HOME", env["OPENKNN_HOME"])
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=600, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    check_output(r.stdout + r.stderr, path)
