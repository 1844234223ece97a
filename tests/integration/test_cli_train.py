"""`openknn train` end to end as a user runs it: outputs, log lines, container mode, and every
bad input giving one clear line and a non-zero exit, never a traceback or a model.

The command runs in this process (``cli_helpers.openknn``, click's CliRunner) except where the
point is the process: SIGTERM, kill -9, a lock held by another process, the umask, and the
``python -m openknn`` entry itself (``openknn_process``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest

from openknn.core import gpu
from openknn.formats import recordio
from openknn.jobs import outputs

from ..conftest import write_csv
from .cli_helpers import Ran, openknn

HP = ["--hp", "feature_dim=4", "--hp", "k=3", "--hp", "sample_size=100",
      "--hp", "predictor_type=classifier"]
RNG = np.random.default_rng(0)
X = RNG.standard_normal((60, 4)).astype(np.float32).astype(np.float64)  # exact in CSV
Y = (X[:, 0] > 0).astype(np.float64)


def openknn_process(*args: str) -> subprocess.CompletedProcess[str]:
    """``python -m openknn ARGS`` in a process of its own."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, "-m", "openknn", *args], capture_output=True,
                          text=True, env=env, timeout=120)


def pbr(path: Path, x: np.ndarray, y: np.ndarray | None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        recordio.write_dense(f, x, y)
    return path


def assert_clean_failure(result: Ran | subprocess.CompletedProcess[str], out: Path,
                         pattern: str) -> None:
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("ClientError: "), result.stderr
    import re
    assert re.search(pattern, last), last
    assert not (out / "model.tar.gz").exists()
    assert not any(out.glob("*.tmp")) if out.exists() else True


def test_train_csv_and_recordio_give_the_same_model(tmp_path: Path) -> None:
    write_csv(tmp_path / "csv" / "train" / "a.csv", X, Y)
    write_csv(tmp_path / "csv" / "test" / "a.csv", X[:20], Y[:20])
    pbr(tmp_path / "pbr" / "train" / "a.pbr", X, Y)
    pbr(tmp_path / "pbr" / "test" / "a.pbr", X[:20], Y[:20])
    outs = []
    # CSV as its own process (the ``python -m openknn`` entry), RecordIO in this one: the
    # same log lines and the same bytes either way
    for kind, run in (("csv", openknn_process), ("pbr", openknn)):
        out = tmp_path / f"out-{kind}"
        r = run("train", "--train", str(tmp_path / kind / "train"),
                "--test", str(tmp_path / kind / "test"), *HP, "--output-dir", str(out))
        assert r.returncode == 0, r.stderr
        assert "#test_score (algo-1) : ('accuracy', 1.0)" in r.stderr
        assert "#quality_metric: host=algo-1, test accuracy <score>=1.0" in r.stderr
        metrics = json.loads((out / "metrics.json").read_text())
        assert metrics["test:accuracy"] == 1.0 and metrics["records_read"] == 60
        with tarfile.open(out / "model.tar.gz") as tar:
            outs.append({m.name: tar.extractfile(m).read() for m in tar.getmembers()})  # type: ignore[union-attr]
    assert outs[0] == outs[1]  # the same rows give byte-identical model files


def test_gzip_csv_and_file_uri(tmp_path: Path) -> None:
    import gzip
    plain = write_csv(tmp_path / "plain.csv", X, Y)
    gz = tmp_path / "train" / "a.csv.gz"
    gz.parent.mkdir()
    gz.write_bytes(gzip.compress(plain.read_bytes()))
    r = openknn("train", "--train", f"file://{tmp_path / 'train'}", *HP,
                "--output-dir", str(tmp_path / "out"))
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path / "out" / "metrics.json").read_text())["records_read"] == 60


def test_container_mode(tmp_path: Path) -> None:
    root = tmp_path / "opt" / "ml"
    config = root / "input" / "config"
    config.mkdir(parents=True)
    (config / "hyperparameters.json").write_text(json.dumps(
        {"feature_dim": "4", "k": "3", "sample_size": "100", "predictor_type": "classifier",
         "_kvstore": "dist_async"}))
    (config / "inputdataconfig.json").write_text(json.dumps(
        {"train": {"ContentType": "text/csv", "TrainingInputMode": "File"},
         "test": {"TrainingInputMode": "File"}}))
    (config / "resourceconfig.json").write_text(json.dumps(
        {"current_host": "algo-1", "hosts": ["algo-1"]}))
    write_csv(root / "input" / "data" / "train" / "train.csv", X, Y)
    pbr(root / "input" / "data" / "test" / "test.pbr", X[:10], Y[:10])
    r = openknn("train", "--sm-root", str(root))
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in (root / "model").iterdir()) == [
        "model_algo-1", "model_algo-1.json", "model_algo-1.labels"]
    assert json.loads((root / "output" / "data" / "metrics.json").read_text())["test:accuracy"]
    assert not (root / "output" / "failure").exists()


def test_container_failure_file(tmp_path: Path) -> None:
    root = tmp_path / "ml"
    (root / "input" / "config").mkdir(parents=True)
    (root / "input" / "config" / "hyperparameters.json").write_text(json.dumps({"k": "3"}))
    write_csv(root / "input" / "data" / "train" / "train.csv", X, Y)
    r = openknn("train", "--sm-root", str(root))
    assert r.returncode == 1 and "Traceback" not in r.stderr
    failure = (root / "output" / "failure").read_text()
    assert failure.startswith("ClientError: No value(s) were specified for 'feature_dim', "
                              "'predictor_type', 'sample_size'")
    assert not (root / "model").exists() or not any((root / "model").iterdir())


@pytest.mark.parametrize(("hp", "pattern"), [
    (["--hp", "k=3"], r"No value\(s\) were specified for 'feature_dim'"),
    ([*HP, "--hp", "colour=blue"], r"Extraneous hyperparameter found: colour"),
    ([*HP, "--hp", "k=2000"], r"Hyperparameter k: 2000 is not in \(0, 1024\]"),
    ([*HP, "--hp", "faiss_index_pq_m=8"],
     r"'faiss_index_pq_m' should only be set when 'index_type' = 'faiss.IVFPQ'"),
    ([*HP, "--hp", "index_type=faiss.IVFFlat", "--hp", "faiss_index_ivf_nlists=500"],
     r"needs at least 500 points to train, but only 60 were sampled"),
    ([*HP, "--hp", "_num_gpus=-1"],
     r"Hyperparameter _num_gpus: -1 is not in 'auto' or an integer in \[0, inf\)"),
    ([*HP, "--hp", "index_type=faiss.HNSW", "--hp", "_num_gpus=1"],
     r"_num_gpus=1: faiss has no GPU implementation of faiss.HNSW; set _num_gpus=0 or 'auto'"),
])
def test_bad_hyperparameters(tmp_path: Path, hp: list[str], pattern: str) -> None:
    write_csv(tmp_path / "train" / "a.csv", X, Y)
    out = tmp_path / "out"
    assert_clean_failure(openknn("train", "--train", str(tmp_path / "train"), *hp,
                                 "--output-dir", str(out)), out, pattern)


@pytest.mark.skipif(gpu.visible() > 0, reason="a GPU is visible to faiss here")
def test_num_gpus_without_a_gpu(tmp_path: Path) -> None:
    """Asked for a GPU where there is none: one line saying why, before any data is read."""
    out = tmp_path / "out"
    result = openknn("train", "--train", str(tmp_path / "no-such-channel"), *HP,
                     "--hp", "_num_gpus=1", "--output-dir", str(out))
    assert_clean_failure(result, out, r"_num_gpus=1: (the installed faiss is the CPU build; "
                         r"install faiss's GPU build: pip uninstall -y faiss-cpu|faiss sees "
                         r"no GPU)")


def bad_csv_columns(d: Path) -> None:
    path = write_csv(d / "a.csv", X, Y)
    lines = path.read_text().splitlines()
    lines[6] = lines[6].rsplit(",", 1)[0]
    path.write_text("\n".join(lines) + "\n")


def truncated_recordio(d: Path) -> None:
    path = pbr(d / "a.pbr", X, Y)
    path.write_bytes(path.read_bytes()[:-30])


def bad_magic(d: Path) -> None:
    path = pbr(d / "a.pbr", X, Y)
    data = bytearray(path.read_bytes())
    stride = len(data) // len(X)
    data[stride * 4: stride * 4 + 4] = b"\x00\x01\x02\x03"
    path.write_bytes(bytes(data))


def nan_in_data(d: Path) -> None:
    x = X.copy()
    x[12, 2] = np.nan
    pbr(d / "a.pbr", x, Y)


def empty_channel(d: Path) -> None:
    d.mkdir(parents=True, exist_ok=True)


def empty_file(d: Path) -> None:
    d.mkdir(parents=True, exist_ok=True)
    (d / "a.csv").write_text("")


@pytest.mark.parametrize(("make", "pattern"), [
    (bad_csv_columns, r"a\.csv.*record 7.*expected 5 columns.*4"),
    (truncated_recordio, r"a\.pbr.*record 60.*truncated|a\.pbr.*record 60"),
    (bad_magic, r"a\.pbr.*record 5.*magic"),
    (nan_in_data, r"a\.pbr, record 13: features contain NaN"),
    (empty_channel, r"Channel 'train' at .* has no data files"),
    (empty_file, r"Channel 'train' at .* has no records"),
])
def test_bad_data(tmp_path: Path, make, pattern: str) -> None:  # type: ignore[no-untyped-def]
    make(tmp_path / "train")
    out = tmp_path / "out"
    assert_clean_failure(openknn("train", "--train", str(tmp_path / "train"), *HP,
                                 "--output-dir", str(out)), out, pattern)


def test_missing_train_channel(tmp_path: Path) -> None:
    r = openknn("train", *HP, "--output-dir", str(tmp_path / "out"))
    assert_clean_failure(r, tmp_path / "out", r"Must provide train channel")
    r = openknn("train", "--train", str(tmp_path / "nowhere"), *HP,
                "--output-dir", str(tmp_path / "out"))
    assert_clean_failure(r, tmp_path / "out", r"'.*nowhere' does not exist")


def test_sigterm_leaves_no_model(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    pbr(tmp_path / "train" / "a.pbr", rng.standard_normal((100_000, 32)), np.zeros(100_000))
    pbr(tmp_path / "test" / "a.pbr", rng.standard_normal((60_000, 32)), np.zeros(60_000))
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [sys.executable, "-m", "openknn", "train", "--train", str(tmp_path / "train"),
         "--test", str(tmp_path / "test"), "--hp", "feature_dim=32", "--hp", "k=10",
         "--hp", "sample_size=100000", "--hp", "predictor_type=classifier",
         "--output-dir", str(out), "--threads", "1"],
        stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    for line in proc.stderr:  # wait until the job is building or scoring
        if "Building faiss.Flat" in line:
            break
    import signal
    import time
    time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    rest = proc.stderr.read()
    assert proc.wait(60) == 143, rest
    assert "Stopped; no model was written." in rest and "Traceback" not in rest
    assert not (out / "model.tar.gz").exists()
    assert not out.exists() or not list(out.iterdir())


# --- outputs: temporaries of killed jobs swept, one job per output location, the umask ---

def test_kill_9_during_the_write_leaves_a_temporary_the_next_job_sweeps(tmp_path: Path) -> None:
    write_csv(tmp_path / "train" / "a.csv", X, Y)
    out = tmp_path / "out"
    out.mkdir()
    (out / ".mine.tmp").write_text("a user's file")
    writer = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom pathlib import Path\n"
         "from openknn.jobs import outputs\n"
         "with outputs.atomic_file(Path(sys.argv[1])) as f:\n"
         "    f.write(b'x' * 4_000_000); f.flush(); print('writing', flush=True); "
         "time.sleep(120)\n", str(out / "model.tar.gz")],
        stdout=subprocess.PIPE, text=True)
    assert writer.stdout is not None and writer.stdout.readline() == "writing\n"
    writer.kill()  # kill -9 half-way through the model write
    writer.wait()
    [left] = [p for p in out.iterdir() if p.name.startswith(".model.tar.gz.")]
    assert left.stat().st_size == 4_000_000 and not (out / "model.tar.gz").exists()
    r = openknn("train", "--train", str(tmp_path / "train"), *HP, "--output-dir", str(out))
    assert r.returncode == 0, r.stderr
    assert f"Removed {left} (4000000 bytes), left by a job stopped while writing" in r.stderr
    assert sorted(p.name for p in out.iterdir()) == [".mine.tmp", "metrics.json",
                                                     "model.tar.gz"]


def test_a_second_job_on_one_output_dir_fails_at_once(tmp_path: Path) -> None:
    import threading
    import time

    from openknn.jobs import training
    from openknn.jobs.data import Channel
    from openknn.jobs.runner import LocalRunner

    write_csv(tmp_path / "train" / "a.csv", X, Y)
    out = tmp_path / "out"
    running, finish = threading.Event(), threading.Event()

    class Held(LocalRunner):  # the first job, stopped in its sampling step
        def map(self, fn, args):  # type: ignore[no-untyped-def]
            running.set()
            finish.wait(60)
            return super().map(fn, args)

    hp = {"feature_dim": "4", "k": "3", "sample_size": "100", "predictor_type": "classifier"}
    spec = training.TrainingJobSpec(hp, {"train": Channel("train", str(tmp_path / "train"))},
                                    output_dir=out)
    first = threading.Thread(target=training.run, args=(spec, Held()))
    first.start()
    try:
        assert running.wait(60)
        t0 = time.monotonic()  # the second job is another process: flock across processes
        r = openknn_process("train", "--train", str(tmp_path / "train"), *HP,
                            "--output-dir", str(out))
        assert_clean_failure(r, out, rf"Output location {out} is in use: another openknn job "
                                     "is writing there now; wait for it to finish")
        assert "Adding" not in r.stderr and time.monotonic() - t0 < 30  # before any reading
    finally:
        finish.set()
        first.join(60)
    assert (out / "model.tar.gz").exists()  # the first job finished normally
    r = openknn("train", "--train", str(tmp_path / "train"), *HP, "--output-dir", str(out))
    assert r.returncode == 0, r.stderr  # the location is free again


def test_a_second_container_job_on_one_root_writes_nothing(tmp_path: Path) -> None:

    root = tmp_path / "ml"
    (root / "input" / "config").mkdir(parents=True)
    (root / "input" / "config" / "hyperparameters.json").write_text(json.dumps(
        {"feature_dim": "4", "k": "3", "sample_size": "100", "predictor_type": "classifier"}))
    write_csv(root / "input" / "data" / "train" / "train.csv", X, Y)
    with outputs.hold_output(root):  # a first job on this root, running (this process)
        r = openknn_process("train", "--sm-root", str(root))
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines()[-1].startswith(
        f"ClientError: Output location {root} is in use")
    # neither a model nor a failure file: the first job's outcome is not this one's
    assert not (root / "output" / "failure").exists()
    assert not (root / "model").exists() or not any((root / "model").iterdir())
    r = openknn("train", "--sm-root", str(root))
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in (root / "model").iterdir()) == [
        "model_algo-1", "model_algo-1.json", "model_algo-1.labels"]


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o077, 0o600)],
                         ids=["umask-022", "umask-077"])
def test_outputs_honour_the_umask(tmp_path: Path, umask: int, mode: int) -> None:
    write_csv(tmp_path / "train" / "a.csv", X, Y)
    out = tmp_path / "out"
    # the child inherits the umask: no preexec_fn (Python code in a forked child of a
    # process where faiss's OpenMP threads have run)
    old = os.umask(umask)
    try:
        r = openknn_process("train", "--train", str(tmp_path / "train"), *HP,
                            "--output-dir", str(out))
    finally:
        os.umask(old)
    assert r.returncode == 0, r.stderr
    assert {p.name: p.stat().st_mode & 0o777 for p in out.iterdir()} == {
        "model.tar.gz": mode, "metrics.json": mode}
