"""What ``openknn`` declares public imports, is the object its home module defines, loads
lazily (``import openknn`` pulls in no faiss, numpy or server stack), and works end to end:
``train`` writes the model that ``load_model`` reads and ``KnnModel.predict`` answers with."""

from __future__ import annotations

import importlib
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest

import openknn
from openknn import errors, sdk

from ..conftest import write_csv


def test_every_public_name_imports_from_its_home() -> None:
    error_names = {n for n in openknn.__all__ if n not in openknn._LAZY and n != "__version__"}
    for name in error_names:  # the rest: openknn.errors' classes, loaded with the package
        assert getattr(openknn, name) is getattr(errors, name)
        assert issubclass(getattr(openknn, name), errors.OpenKnnError)
    for name in openknn.__all__:
        value = getattr(openknn, name)
        if name in openknn._LAZY:
            module, attribute = openknn._LAZY[name]
            assert value is getattr(importlib.import_module(module), attribute), name
    assert set(sdk.__all__) <= set(openknn.__all__)  # the whole SDK surface
    assert set(openknn._LAZY) <= set(openknn.__all__)
    for name in ("train", "serve", "load_model", "KnnModel", "ClientError", "AlgorithmError"):
        assert name in openknn.__all__ and name in dir(openknn)
    assert openknn.ClientError is errors.ClientError and openknn.ModelError is errors.ModelError


def test_star_import_gives_exactly_all() -> None:
    namespace: dict[str, object] = {}
    exec("from openknn import *", namespace)
    assert set(namespace) - {"__builtins__"} == set(openknn.__all__)


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match=r"module 'openknn' has no attribute 'trian'"):
        openknn.trian  # noqa: B018


def test_import_openknn_loads_nothing_heavy() -> None:
    code = ("import openknn, sys; print(sorted(m for m in ('faiss', 'numpy', 'uvicorn', "
            "'starlette', 'ray', 'httpx') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=60)
    assert out.stdout.strip() == "[]"


def test_train_then_load_model_then_predict(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 5))
    y = (x[:, 0] > 0).astype(np.float64)
    write_csv(tmp_path / "train" / "train.csv", x[:150], y[:150])
    write_csv(tmp_path / "test" / "test.csv", x[150:], y[150:])
    result = openknn.train(tmp_path / "train", tmp_path / "test", output_dir=tmp_path / "out",
                           hyperparameters={"feature_dim": 5, "k": 3, "sample_size": 150,
                                            "predictor_type": "classifier"})
    with tarfile.open(tmp_path / "out" / "model.tar.gz") as tar:
        assert sorted(tar.getnames()) == ["model_algo-1", "model_algo-1.json",
                                          "model_algo-1.labels"]
    model = openknn.load_model(tmp_path / "out" / "model.tar.gz")
    assert isinstance(model, openknn.KnnModel)
    predicted = model.predict(x[150:].astype(np.float32))
    np.testing.assert_array_equal(predicted, result.model.predict(x[150:].astype(np.float32)))
    # the job's own test score is the accuracy of these predictions
    assert result.metrics["test:accuracy"] == pytest.approx(float(np.mean(predicted == y[150:])))


def test_train_refuses_what_openknn_train_refuses(tmp_path: Path) -> None:
    with pytest.raises(openknn.ChannelError, match=r"Channel location '.*absent' does not "
                       r"exist; give a directory or file that holds the channel's data"):
        openknn.train(tmp_path / "absent", output_dir=tmp_path / "out",
                      hyperparameters={"feature_dim": 5, "k": 3, "sample_size": 10,
                                       "predictor_type": "classifier"})
    assert not (tmp_path / "out" / "model.tar.gz").exists()
