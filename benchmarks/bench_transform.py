"""Batch transform over a 58,102-row JSON Lines file: the same predictions as the HTTP
endpoint, and peak memory that does not grow with the file (a 10x smaller file beside it).

    .venv/bin/python benchmarks/bench_transform.py [--rows 200000] [--test-rows 58102]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import orjson

from openknn.core import index as fi  # noqa: E402
from openknn.core.model import KnnModel, ModelMeta  # noqa: E402
from openknn.formats import json as json_format  # noqa: E402
from openknn.jobs import artifact  # noqa: E402
from openknn.serving import process  # noqa: E402

K = 10


def write_model(path: Path, rows: int, rng: np.random.Generator) -> None:
    x = rng.integers(0, 7000, (rows, 54)).astype(np.float32)
    labels = rng.integers(1, 8, rows).astype(np.float32)
    index = fi.build(x, K, fi.IndexConfig())
    meta = ModelMeta(k=K, predictor_type="classifier", feature_dim=54, index_dim=54,
                     num_points=rows)
    artifact.write_model_tar(KnnModel(meta, index, labels), path)


def write_jsonl(path: Path, x: np.ndarray) -> None:
    with open(path, "wb") as f:
        for lo in range(0, len(x), 10_000):
            f.write(b"".join(orjson.dumps({"features": r}) + b"\n"
                             for r in x[lo:lo + 10_000].tolist()))


PEAK_RSS = ("import resource, sys\n"
            "from openknn.cli import main\n"
            "try:\n    main(sys.argv[1:], standalone_mode=False)\n"
            "finally:\n"
            "    print('peak_rss_kib', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,"
            " file=sys.stderr)\n")


def run_transform(model: Path, src: Path, out: Path) -> tuple[float, float]:
    """Seconds and this process's own peak RSS (MiB) of an `openknn transform` run."""
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-c", PEAK_RSS, "transform", str(model), "--input",
                        str(src), "--output", str(out)], check=True, capture_output=True,
                       text=True)
    seconds = time.perf_counter() - t0
    peak = int(r.stderr.rsplit("peak_rss_kib", 1)[1].split()[0])
    return seconds, peak / 1024


def endpoint_predictions(model: Path, src: Path) -> np.ndarray:
    port = process.free_port()
    log = model.parent / "serve.log"
    proc = process.start([str(model)], port, log)
    url = f"http://127.0.0.1:{port}"
    try:
        process.wait_ready(url, proc, log, timeout=120)
        lines = src.read_bytes().splitlines(keepends=True)
        out = []
        with httpx.Client(base_url=url, timeout=300) as client:
            for lo in range(0, len(lines), 5000):
                r = client.post("/invocations", content=b"".join(lines[lo:lo + 5000]),
                                headers={"Content-Type": "application/jsonlines",
                                         "Accept": "application/jsonlines"})
                r.raise_for_status()
                out.append(json_format.parse_predictions_jsonlines(r.content)
                           ["predicted_label"])
        return np.concatenate(out)
    finally:
        process.stop(proc)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--test-rows", type=int, default=58_102)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model = root / "model.tar.gz"
        write_model(model, args.rows, rng)
        q = rng.integers(0, 7000, (args.test_rows, 54)).astype(np.float32)
        for name, rows in (("small", q[: args.test_rows // 10]), ("full", q)):
            (root / name).mkdir()
            write_jsonl(root / name / "test.jsonl", rows)
        small_s, small_rss = run_transform(model, root / "small", root / "out-small")
        full_s, full_rss = run_transform(model, root / "full", root / "out-full")
        transformed = json_format.parse_predictions_jsonlines(
            (root / "out-full" / "test.jsonl.out").read_bytes())["predicted_label"]
        served = endpoint_predictions(model, root / "full" / "test.jsonl")
        size_mb = (root / "full" / "test.jsonl").stat().st_size / 2**20
        model_mb = model.stat().st_size / 2**20
    print(f"Flat model {args.rows} x 54 ({model_mb:.0f} MiB), k={K}")
    print(f"{'input':26}{'rows':>8}{'MiB':>8}{'seconds':>10}{'rows/s':>10}{'peak RSS MiB':>14}")
    print(f"{'transform, 1/10 file':26}{args.test_rows // 10:>8}{size_mb / 10:>8.1f}"
          f"{small_s:>10.1f}{args.test_rows // 10 / small_s:>10,.0f}{small_rss:>14.0f}")
    print(f"{'transform, whole file':26}{args.test_rows:>8}{size_mb:>8.1f}{full_s:>10.1f}"
          f"{args.test_rows / full_s:>10,.0f}{full_rss:>14.0f}")
    same = int(np.count_nonzero(transformed == served))
    print(f"predictions equal to the HTTP endpoint's: {same} of {len(served)}")


if __name__ == "__main__":
    main()
