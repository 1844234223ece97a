"""Model files: round trip (directory and tar), JSON edits honoured, atomic writes, safe
unpacking, and clear errors for broken artifacts."""

from __future__ import annotations

import io
import json
import os
import stat
import tarfile
from pathlib import Path

import numpy as np
import pytest

from openknn.core import index as fi
from openknn.core.model import KnnModel, ModelMeta
from openknn.core.reduction import make_projection
from openknn.errors import ModelError
from openknn.jobs import artifact, outputs

RNG = np.random.default_rng(1)


def small_model(k: int = 3, predictor: str = "classifier", reduce: bool = False) -> KnnModel:
    x = RNG.standard_normal((100, 8)).astype(np.float32)
    labels = RNG.integers(0, 3, 100).astype(np.float32)
    projection = make_projection("sign", 8, 4, seed=7) if reduce else None
    vectors = projection.apply(x) if projection else x
    index = fi.build(vectors, k, fi.IndexConfig())
    meta = ModelMeta(k=k, predictor_type=predictor, feature_dim=8,
                     index_dim=vectors.shape[1], num_points=100,
                     dimension_reduction=projection.to_json() if projection else None)
    return KnnModel(meta, index, labels, projection)


@pytest.mark.parametrize("reduce", [False, True])
def test_round_trip_dir_and_tar(tmp_path: Path, reduce: bool) -> None:
    model = small_model(reduce=reduce)
    artifact.write_model_dir(model, tmp_path / "dir")
    artifact.write_model_tar(model, tmp_path / "model.tar.gz")
    q = RNG.standard_normal((20, 8)).astype(np.float32)
    for path in (tmp_path / "dir", tmp_path / "model.tar.gz"):
        loaded = artifact.load(path)
        assert loaded.meta == model.meta
        np.testing.assert_array_equal(loaded.predict(q), model.predict(q))
        np.testing.assert_array_equal(loaded.labels, model.labels)
    with tarfile.open(tmp_path / "model.tar.gz") as tar:
        assert sorted(tar.getnames()) == sorted(artifact.MODEL_FILES)
    meta = json.loads((tmp_path / "dir" / artifact.META_FILE).read_text())
    assert meta["version"] == "1.0" and meta["normalize"] is False
    assert (meta["dimension_reduction"] is not None) == reduce
    raw = (tmp_path / "dir" / artifact.LABELS_FILE).read_bytes()
    np.testing.assert_array_equal(np.frombuffer(raw, "<f4"), model.labels)


def test_edits_of_k_and_predictor_type_take_effect(tmp_path: Path) -> None:
    model = small_model(k=3)
    artifact.write_model_dir(model, tmp_path)
    meta_path = tmp_path / artifact.META_FILE
    meta = json.loads(meta_path.read_text())
    meta.update(k=7, predictor_type="regressor", unknown_future_key=1)
    meta_path.write_text(json.dumps(meta))
    loaded = artifact.load(tmp_path)
    assert loaded.meta.k == 7 and loaded.meta.predictor_type == "regressor"
    q = RNG.standard_normal((4, 8)).astype(np.float32)
    _, neighbor_labels = loaded.neighbors(q)
    assert neighbor_labels.shape == (4, 7)
    np.testing.assert_allclose(loaded.predict(q), neighbor_labels.mean(axis=1), rtol=1e-6)


def test_labels_as_npy_are_accepted(tmp_path: Path) -> None:
    model = small_model()
    artifact.write_model_dir(model, tmp_path)
    np.save(tmp_path / "x.npy", model.labels)
    (tmp_path / artifact.LABELS_FILE).write_bytes((tmp_path / "x.npy").read_bytes())
    np.testing.assert_array_equal(artifact.load(tmp_path).labels, model.labels)


def test_failed_write_leaves_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(files: object) -> bytes:
        raise RuntimeError("killed")
    monkeypatch.setattr(artifact, "pack", boom)
    with pytest.raises(RuntimeError):
        artifact.write_model_tar(small_model(), tmp_path / "model.tar.gz")
    assert list(tmp_path.iterdir()) == []


def test_missing_file_and_bad_json(tmp_path: Path) -> None:
    artifact.write_model_dir(small_model(), tmp_path)
    (tmp_path / artifact.META_FILE).write_text("{not json")
    with pytest.raises(ModelError, match=r"model_algo-1.json: not valid JSON"):
        artifact.load(tmp_path)
    (tmp_path / artifact.META_FILE).unlink()
    with pytest.raises(ModelError, match=r"the model is missing model_algo-1.json"):
        artifact.load(tmp_path)
    with pytest.raises(ModelError, match=r"does not exist"):
        artifact.load(tmp_path / "nope")


def test_bad_meta_values(tmp_path: Path) -> None:
    artifact.write_model_dir(small_model(), tmp_path)
    meta_path = tmp_path / artifact.META_FILE
    meta = json.loads(meta_path.read_text())
    meta_path.write_text(json.dumps({**meta, "k": 0}))
    with pytest.raises(ModelError, match=r"'k' must be an integer in \(0, 1024\], got 0"):
        artifact.load(tmp_path)
    meta_path.write_text(json.dumps({**meta, "predictor_type": "ranker"}))
    with pytest.raises(ModelError, match=r"'predictor_type' must be one of"):
        artifact.load(tmp_path)


def test_label_count_must_match_index(tmp_path: Path) -> None:
    artifact.write_model_dir(small_model(), tmp_path)
    (tmp_path / artifact.LABELS_FILE).write_bytes(np.zeros(5, "<f4").tobytes())
    with pytest.raises(ModelError, match=r"5 labels for 100 indexed points"):
        artifact.load(tmp_path)


def evil_tar(path: Path) -> None:
    with tarfile.open(path, "w:gz") as tar:
        info = tarfile.TarInfo("../../escaped.txt")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"bad"))


def test_a_path_traversal_member_is_never_written(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b"
    target.mkdir(parents=True)
    evil_tar(target / "evil.tar.gz")
    # load reads members in memory and never writes: the traversal member is just not a model
    with pytest.raises(ModelError, match=r"the model is missing"):
        artifact.load(target / "evil.tar.gz")
    assert not (tmp_path / "escaped.txt").exists()


def test_a_tar_extracted_as_sagemaker_does_loads_as_a_directory(tmp_path: Path) -> None:
    """SageMaker extracts model.tar.gz into /opt/ml/model; openknn loads that directory."""
    artifact.write_model_tar(small_model(), tmp_path / "model.tar.gz")
    with tarfile.open(tmp_path / "model.tar.gz") as tar:
        tar.extractall(tmp_path / "opt-ml-model", filter="data")
    assert artifact.load(tmp_path / "opt-ml-model").meta.k == 3


def test_not_a_tar(tmp_path: Path) -> None:
    (tmp_path / "model.tar.gz").write_bytes(b"garbage")
    with pytest.raises(ModelError, match=r"not a readable model.tar.gz"):
        artifact.load(tmp_path / "model.tar.gz")


# --- the write side: umask, temporaries of killed jobs, one job per output location ---

@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_written_files_honour_the_umask(tmp_path: Path, umask: int, mode: int) -> None:
    old = os.umask(umask)
    try:
        artifact.write_model_dir(small_model(), tmp_path / "dir")
        artifact.write_model_tar(small_model(), tmp_path / "model.tar.gz")
        outputs.atomic_write(tmp_path / "metrics.json", b"{}")
    finally:
        os.umask(old)
    written = [*(tmp_path / "dir").iterdir(), tmp_path / "model.tar.gz", tmp_path / "metrics.json"]
    assert {p.name: stat.S_IMODE(p.stat().st_mode) for p in written} == {
        p.name: mode for p in written}
