"""Every location openknn writes to or reads a model from is a local path, a ``file://`` URI or
(for training, transform and dataset outputs, models and the SDK's locations,
tests/integration/test_s3_channels.py and test_sdk_s3.py) an ``s3://`` prefix; the outputs
that are not written to S3 yet (bench's report), and any other scheme, fail at once
with one ClientError line naming it, and nothing is written, least of all a local directory
named ``s3:`` that the user would take for their S3 bucket (``Path("s3://bucket/out")`` is the
local path ``s3:/bucket/out``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import openknn
from openknn.cli import EXIT_CLIENT

from ..conftest import write_csv
from .cli_helpers import openknn as run

HP = {"feature_dim": 4, "k": 3, "sample_size": 60, "predictor_type": "classifier"}
GS = ("--output-dir 'gs://bucket/out/': gs:// is not a scheme openknn reads or writes; give a "
      "local path or file:// URI. Nothing was written")


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("trained")
    rng = np.random.default_rng(0)
    write_csv(root / "train" / "train.csv", rng.normal(size=(60, 4)), rng.integers(0, 2, 60))
    openknn.train(root / "train", output_dir=root / "out", hyperparameters=HP)
    return root


def fails_writing_nothing(cwd: Path, *args: str) -> str:
    """Runs ``openknn ARGS`` in ``cwd``; its one stderr line, checked to change nothing."""
    before = sorted(p.relative_to(cwd) for p in cwd.rglob("*"))
    ran = run(*args, cwd=cwd)
    assert ran.returncode == EXIT_CLIENT, (ran.stdout, ran.stderr)
    assert sorted(p.relative_to(cwd) for p in cwd.rglob("*")) == before
    assert not (cwd / "s3:").exists()
    return ran.stderr.strip()


def test_train_to_another_scheme_writes_no_local_directory(trained: Path) -> None:
    line = fails_writing_nothing(trained, "train", "--train", "train", "--output-dir",
                                 "gs://bucket/out/", "--hp", "feature_dim=4", "--hp", "k=3",
                                 "--hp", "sample_size=60", "--hp", "predictor_type=classifier")
    assert line == f"ClientError: {GS}"
    assert not (trained / "gs:").exists()


@pytest.mark.parametrize("args", [
    ("bench", "--quick", "--output", "s3://bucket/report/"),
])
def test_every_output_option_refuses_s3_before_any_work(trained: Path,
                                                        args: tuple[str, ...]) -> None:
    line = fails_writing_nothing(trained, *args)
    assert line == (f"ClientError: --output {args[-1]!r}: openknn takes this as a local path "
                    "or file:// URI only (s3:// is not supported here yet); give a local path. "
                    "Nothing was written")


@pytest.mark.parametrize("command", [("serve",), ("invoke",),
                                     ("transform", "--input", "train", "--output", "t")])
def test_a_model_location_of_another_scheme_is_refused_not_read_from_a_local_directory(
        trained: Path, command: tuple[str, ...]) -> None:
    decoy = trained / "gs:" / "bucket"  # what Path("gs://bucket/...") would have read
    decoy.mkdir(parents=True)
    try:
        (decoy / "model.tar.gz").hardlink_to(trained / "out" / "model.tar.gz")
        ran = run(command[0], "gs://bucket/model.tar.gz", *command[1:], cwd=trained,
                  input=b"0,0,0,0\n")
        assert ran.returncode == EXIT_CLIENT
        assert ran.stderr.strip() == (
            "ClientError: Model location 'gs://bucket/model.tar.gz': gs:// is not a scheme "
            "openknn reads or writes; give a local path or file:// URI. Nothing was written")
        assert not (trained / "t").exists()
    finally:
        (decoy / "model.tar.gz").unlink()
        decoy.rmdir()
        decoy.parent.rmdir()


def test_other_schemes_and_remote_file_uris_are_refused(trained: Path) -> None:
    line = fails_writing_nothing(trained, "transform", "out/model.tar.gz", "--input", "train",
                                 "--output", "gs://bucket/t/")
    assert line == ("ClientError: --output 'gs://bucket/t/': gs:// is not a scheme openknn "
                    "reads or writes; give a local path or file:// URI. Nothing was written")
    line = fails_writing_nothing(trained, "invoke", "file://otherhost/out/model.tar.gz")
    assert line == ("ClientError: Model location 'file://otherhost/out/model.tar.gz': a file:// "
                    "URI names a path on this machine, not on host 'otherhost'; write "
                    "file:///absolute/path")


def test_the_api_refuses_the_same_and_takes_file_uris(trained: Path, tmp_path: Path) -> None:
    with pytest.raises(openknn.ClientError, match=r"^--output-dir 'gs://b/o': "):
        openknn.train(trained / "train", output_dir="gs://b/o", hyperparameters=HP)
    with pytest.raises(openknn.ClientError, match=r"^Model location 'gs://b/m.tar.gz': "):
        openknn.load_model("gs://b/m.tar.gz")
    openknn.train(trained / "train", output_dir=f"file://{tmp_path}/o", hyperparameters=HP)
    assert openknn.load_model(f"file://{tmp_path}/o/model.tar.gz").meta.k == 3
    sdk = openknn.KNN(role=None, instance_count=1, instance_type="local", k=3,
                      sample_size=60, predictor_type="classifier", output_path="gs://b/out",
                      data_location=str(tmp_path / "data"))
    x = np.zeros((10, 4), np.float32)
    with pytest.raises(openknn.ClientError, match=r"^output_path 'gs://b/out': gs:// is not a "
                       r"scheme openknn reads or writes; give a local path or file:// URI\. "
                       r"Nothing was written$"):
        sdk.fit(sdk.record_set(x, np.zeros(10, np.float32)))
