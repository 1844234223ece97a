"""Writing into an output location: atomic files, the sweep of a killed job's temporaries,
and one job per location (an flock that adds nothing to the directory)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from openknn.core.model_files import MODEL_FILES
from openknn.jobs import outputs


def test_a_failed_atomic_file_leaves_nothing(tmp_path: Path) -> None:
    with pytest.raises(KeyboardInterrupt), outputs.atomic_file(tmp_path / "x.out") as f:
        f.write(b"half")
        raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []


def test_sweep_removes_only_stale_temporaries_of_the_targets(tmp_path: Path) -> None:
    stale = [".model.tar.gz.k3j9x0_a.tmp", ".model_algo-1.0a1b2c3d.tmp",
             ".metrics.json.zzzzzzzz.tmp"]
    kept = [".model.tar.gz.abc.tmp",  # not 8 random characters
            ".notes.txt.0a1b2c3d.tmp",  # not a file this job writes
            "model.tar.gz.0a1b2c3d.tmp",  # not hidden
            ".model.tar.gz.0a1b2c3d.tmp.bak", "model.tar.gz", "keep.tmp"]
    for name in stale + kept:
        (tmp_path / name).write_bytes(b"x" * 1000)
    (tmp_path / "target").write_bytes(b"mine")
    (tmp_path / ".model_algo-1.labels.linklink.tmp").symlink_to(tmp_path / "target")
    (tmp_path / ".model_algo-1.json.dirdirdi.tmp").mkdir()
    for path in tmp_path.iterdir():  # all written a minute ago, links and directories too
        os.utime(path, (time.time() - 60, time.time() - 60), follow_symlinks=False)
    (tmp_path / ".model.tar.gz.newnewne.tmp").write_bytes(b"a job that started after")
    before = time.time() - 30
    targets = {*MODEL_FILES, "model.tar.gz", "metrics.json"}
    removed = outputs.sweep_temporaries(tmp_path, targets, before)
    assert sorted(p.name for p in removed) == sorted(stale)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [*kept, "target", ".model_algo-1.labels.linklink.tmp", ".model_algo-1.json.dirdirdi.tmp",
         ".model.tar.gz.newnewne.tmp"])
    assert outputs.sweep_temporaries(tmp_path / "absent", targets, before) == []


def test_one_holder_per_output_location(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with outputs.hold_output(out):
        assert out.is_dir() and list(out.iterdir()) == []  # nothing added to the directory
        with pytest.raises(outputs.OutputInUse, match=rf"Output location {out} is in use: "
                                                       r"another openknn job"):
            with outputs.hold_output(out):
                pass
        code = ("import sys; from pathlib import Path; from openknn.jobs import outputs\n"
                "try:\n    outputs.hold_output(Path(sys.argv[1])).__enter__()\n"
                "except outputs.OutputInUse as e:\n    print(e); sys.exit(3)\n")
        r = subprocess.run([sys.executable, "-c", code, str(out)], capture_output=True,
                           text=True, timeout=60)
        assert r.returncode == 3 and "is in use" in r.stdout
    with outputs.hold_output(out):  # released on exit
        pass
