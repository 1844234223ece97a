"""Batch transform's outputs (issue 10, part 8): one job per output directory, the
temporaries a killed job left swept (only those), and ``.out`` files that honour the umask."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest

from openknn.jobs import outputs
from openknn.serving import transform

from .test_serving_http import make_model
from .test_transform_invoke import ROWS, jsonl, predictions_of


@pytest.fixture()
def inputs(tmp_path: Path) -> Path:
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.jsonl").write_bytes(jsonl(ROWS[:50]))
    return tmp_path / "in"


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o077, 0o600)],
                         ids=["umask-022", "umask-077"])
def test_outputs_honour_the_umask(tmp_path: Path, inputs: Path, umask: int,
                                  mode: int) -> None:
    old = os.umask(umask)
    try:
        [out] = transform.run(make_model(), str(inputs), tmp_path / "out",
                              transform.TransformSpec())
    finally:
        os.umask(old)
    assert out.stat().st_mode & 0o777 == mode
    np.testing.assert_array_equal(predictions_of(out), make_model().predict(ROWS[:50]))


def test_a_second_job_on_one_output_dir_fails_at_once(tmp_path: Path, inputs: Path) -> None:
    with outputs.hold_output(tmp_path / "out"):
        with pytest.raises(outputs.OutputInUse, match=r"is in use: another openknn job"):
            transform.run(make_model(), str(inputs), tmp_path / "out",
                          transform.TransformSpec())
        assert list((tmp_path / "out").iterdir()) == []


def test_stale_temporaries_of_its_outputs_are_swept(tmp_path: Path, inputs: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    stale, other = out / ".a.jsonl.out.0a1b2c3d.tmp", out / ".b.jsonl.out.0a1b2c3d.tmp"
    for path in (stale, other):
        path.write_bytes(b"half an answer")
        os.utime(path, (time.time() - 60, time.time() - 60))
    transform.run(make_model(), str(inputs), out, transform.TransformSpec())
    assert sorted(p.name for p in out.iterdir()) == [other.name, "a.jsonl.out"]
