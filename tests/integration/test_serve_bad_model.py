"""`openknn serve` on a model that cannot answer (issue 10, part 6): the process exits 1
with one ClientError line naming the file and the field, and `/ping` never answers 200
(before, such models loaded, answered /ping 200 and failed every request with 500). Only a
process shows this: the exit code, its stderr and the port that never answers 200. The cases'
processes start together (a module fixture) and each is polled from its start."""

from __future__ import annotations

import io
import json
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest

from openknn.core import index as fi
from openknn.core.model import KnnModel, ModelMeta
from openknn.jobs import artifact
from openknn.serving import process

RNG = np.random.default_rng(6)
X = RNG.standard_normal((200, 6)).astype(np.float32)


def model_dir(path: Path) -> Path:
    meta = ModelMeta(k=3, predictor_type="classifier", feature_dim=6, index_dim=6,
                     num_points=200)
    model = KnnModel(meta, fi.build(X, 3, fi.IndexConfig()), np.zeros(200, np.float32))
    artifact.write_model_dir(model, path)
    return path


def json_field(path: Path) -> None:
    meta_path = path / artifact.META_FILE
    meta_path.write_text(json.dumps({**json.loads(meta_path.read_text()), "feature_dim": "6"}))


def string_labels(path: Path) -> None:
    buf = io.BytesIO()
    np.save(buf, np.array(["a"] * 200))
    (path / artifact.LABELS_FILE).write_bytes(buf.getvalue())


def serve_and_poll(path: Path) -> tuple[int | None, set[int], str]:
    """``openknn serve PATH`` with its /ping polled every 20 ms until it exits (60 s at
    most): its exit code, the /ping statuses seen and its output."""
    port = process.free_port()
    log = Path(tempfile.mkdtemp(prefix="openknn-bad-model-")) / "serve.log"
    proc = process.start([str(path), "--threads", "1"], port, log)
    statuses: set[int] = set()
    deadline = time.monotonic() + 60
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            try:
                statuses.add(httpx.get(f"http://127.0.0.1:{port}/ping", timeout=1,
                                       trust_env=False).status_code)
            except httpx.HTTPError:
                pass
            time.sleep(0.02)
    finally:
        if proc.poll() is None:
            process.stop(proc)
    return proc.returncode, statuses, log.read_text()


SPOILS: list[Callable[[Path], None]] = [json_field, string_labels]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory,
           ) -> Iterator[dict[str, Future[tuple[int | None, set[int], str]]]]:
    """Every spoiled model served at once, each by its own process and poller thread."""
    with ThreadPoolExecutor(len(SPOILS)) as pool:
        runs = {}
        for spoil in SPOILS:
            path = model_dir(tmp_path_factory.mktemp(spoil.__name__) / "model")
            spoil(path)
            runs[spoil.__name__] = pool.submit(serve_and_poll, path)
        yield runs


@pytest.mark.parametrize(("spoil", "expected"), [
    (json_field, r"model_algo-1.json: 'feature_dim' must be an integer in (0, inf), "
                 r"got '6' (a str)"),
    (string_labels, r"model_algo-1.labels: labels must be numbers"),
])
def test_serve_exits_with_the_load_error_and_never_pings_healthy(
        served: dict[str, Future[tuple[int | None, set[int], str]]],
        spoil: Callable[[Path], None], expected: str) -> None:
    returncode, statuses, output = served[spoil.__name__].result(timeout=120)
    assert returncode == 1, output
    assert 200 not in statuses and statuses <= {503}, statuses
    assert "Traceback" not in output
    last = output.strip().splitlines()[-1]
    assert last.startswith("ClientError: ") and expected in last, last
