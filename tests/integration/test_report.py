"""`openknn bench --quick` end to end on the real data sets (conftest's SHARED_DATA, passed
explicitly as --covtype-path and --fashion-path: the bench names no default data folder): it
exits 0, writes report.md with every table cell filled and three real PNG plots, prints the
summary table, and leaves no server process behind."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from ..conftest import shared_file

PNGS = ("accuracy_vs_k.png", "latency.png", "recall_vs_qps.png")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess[str],
                                                               Path, Path]:
    covtype = shared_file("covtype", "kaggle-forest-cover-type-prediction_train.csv.gz")
    fashion = shared_file("fashion-mnist", "train-images-idx3-ubyte.gz").parent
    pytest.importorskip("sklearn")
    pytest.importorskip("matplotlib")
    root = tmp_path_factory.mktemp("bench")
    (root / "tmp").mkdir()
    env = {**os.environ, "PYTHONUNBUFFERED": "1",
           "TMPDIR": str(root / "tmp"),  # the servers' model files live here: found below
           "OPENKNN_CACHE": str(root / "cache"),  # no cached UCI file to pick up
           "OPENKNN_COVTYPE_URLS": "http://127.0.0.1:9/covtype.data.gz"}  # never the network
    # both data sets given explicitly (no default path names the shared folder); cwd: the
    # temporary root, so nothing relative to the repository is read or written
    result = subprocess.run([sys.executable, "-m", "openknn", "bench", "--quick",
                             "--output", str(root / "out"), "--covtype-path", str(covtype),
                             "--fashion-path", str(fashion)], capture_output=True, text=True,
                            env=env, cwd=root, timeout=900)
    return result, root / "out", root


def test_exits_zero_and_prints_the_summary(bench: tuple[subprocess.CompletedProcess[str],
                                                        Path, Path]) -> None:
    result, _, _ = bench
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    assert "openknn bench summary (quick run" in out
    for name in ("flat_l2", "ivfpq_l2", "flat_l2_large", "ivfpq_l2_large", "ivfflat_l2_large",
                 "hnsw_l2_large", "ivfflat_l2", "hnsw_l2", "scikit-learn brute"):
        assert re.search(rf"^{re.escape(name)}\s+\|", out, re.M), (name, out)
    assert "skipped" not in out
    assert re.search(r"^-+(\+-+)+$", out, re.M)  # the tables' rules


def test_exact_rows_agree_with_scikit_learn(bench: tuple[subprocess.CompletedProcess[str],
                                                         Path, Path]) -> None:
    """Flat and scikit-learn's brute force search the same sample: the same accuracy at every
    k, and recall@10 of 1 (a baseline searched in other coordinates once gave 16 %)."""
    rows = {line.split("|")[0].strip(): [c.strip() for c in line.split("|")[1:]]
            for line in bench[0].stdout.split("Fashion-MNIST (")[0].splitlines()
            if "|" in line}
    flat, sklearn = rows["flat_l2"], rows["scikit-learn brute (flat_l2 sample)"]
    assert flat[1:4] == sklearn[1:4]  # acc% at k = 1, 5, 10
    assert flat[4] == sklearn[4] == "1.0000"  # recall@10


def test_plots_are_real_pngs(bench: tuple[subprocess.CompletedProcess[str], Path, Path],
                             ) -> None:
    import matplotlib.image

    _, out, _ = bench
    for name in PNGS:
        path = out / name
        assert path.is_file(), name
        data = path.read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 20_000, (name, len(data))
        image = matplotlib.image.imread(path)
        assert image.ndim == 3 and image.shape[0] > 300 and image.shape[1] > 600, image.shape
        assert image.std() > 0.05  # something is drawn


def table_rows(text: str) -> list[list[str]]:
    return [line.strip().strip("|").split("|") for line in text.splitlines()
            if line.startswith("|")]


def test_report_has_every_table_cell_filled(bench: tuple[subprocess.CompletedProcess[str],
                                                         Path, Path]) -> None:
    _, out, _ = bench
    text = (out / "report.md").read_text(encoding="utf-8")
    lines = [line for line in text.splitlines() if line.startswith("|")]
    assert len(lines) > 40
    for line in lines:
        assert "||" not in line and "| |" not in line, line
        assert not re.search(r"\bnan\b", line, re.I), line
    widths: list[int] = []
    for line in text.splitlines() + [""]:
        if line.startswith("|"):
            cells = line.strip().strip("|").split("|")
            assert all(cell.strip() for cell in cells), line
            widths.append(len(cells))
        elif widths:
            assert len(set(widths)) == 1, widths  # every row as wide as its header
            widths = []
    for name in PNGS:
        assert f"]({name})" in text and "openknn bench --quick" in text
    assert "faiss GPU build not installed / no device" in text or "GPU 0" in text
    assert "Skipped" not in text


def test_no_server_left_behind(bench: tuple[subprocess.CompletedProcess[str], Path, Path],
                               ) -> None:
    _, _, root = bench
    proc = Path("/proc")
    if not proc.is_dir():
        pytest.skip("no /proc to look for processes in")
    left = []
    for entry in proc.iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if str(root) in cmdline and "serve" in cmdline:
                left.append(cmdline)
    assert not left



def test_report_names_the_data_it_was_given(bench: tuple[subprocess.CompletedProcess[str],
                                                         Path, Path]) -> None:
    _, out, _ = bench
    text = (out / "report.md").read_text(encoding="utf-8")
    covtype = shared_file("covtype", "kaggle-forest-cover-type-prediction_train.csv.gz")
    fashion = shared_file("fashion-mnist", "train-images-idx3-ubyte.gz").parent
    assert f"covtype: {covtype} (--covtype-path)" in text
    assert f"Fashion-MNIST {fashion}:" in text
    assert f"--covtype-path {covtype}" in text and f"--fashion-path {fashion}" in text
