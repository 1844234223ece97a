"""The tutorial's Part 1 on the real Kaggle covtype rows: openknn's training job (k=10, Flat,
RecordIO channels written as ``openknn datasets covtype`` writes them) beside scikit-learn's
brute-force k-NN on the same split. Prints both accuracies and whether every prediction agrees.

    .venv/bin/python benchmarks/covtype_accuracy.py [--path FILE] [--k 10] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from openknn.jobs import artifact, datasets, training
from openknn.jobs.data import Channel

DEFAULT = (Path(__file__).resolve().parents[2] / "shared" / "data" / "covtype"
           / "kaggle-forest-cover-type-prediction_train.csv.gz")


def run(path: Path, k: int, workdir: Path) -> dict[str, float]:
    x, y, xt, yt = split = datasets.tutorial_split(datasets.load_covtype(path))
    channels = datasets.write_channels(workdir / "data", split, ["recordio"])
    t0 = time.perf_counter()
    result = training.run(training.TrainingJobSpec(
        hyperparameters={"feature_dim": "54", "k": str(k), "sample_size": "200000",
                         "predictor_type": "classifier"},
        channels={"train": Channel("train", str(channels["train_recordio"])),
                  "test": Channel("test", str(channels["test_recordio"]))},
        output_dir=workdir / "out"))
    train_s = time.perf_counter() - t0
    model = artifact.load(workdir / "out" / "model.tar.gz")
    ours = model.predict(xt.astype(np.float32))

    from sklearn.neighbors import KNeighborsClassifier

    t1 = time.perf_counter()
    ref = KNeighborsClassifier(n_neighbors=k, algorithm="brute").fit(x, y).predict(xt)
    sk_s = time.perf_counter() - t1
    return {"rows_train": len(x), "rows_test": len(xt),
            "openknn_accuracy": result.metrics["test:accuracy"],
            "sklearn_accuracy": float(np.mean(ref == yt)),
            "rows_differing": int(np.count_nonzero(ours != ref)),
            "openknn_job_seconds": train_s, "sklearn_seconds": sk_s}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--path", type=Path, default=DEFAULT)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = run(args.path, args.k, args.workdir or Path(tmp))
    print(f"Kaggle covtype rows: {out['rows_train']} train / {out['rows_test']} test, "
          f"k={args.k}, faiss.Flat")
    print(f"{'':24}{'accuracy':>12}{'seconds':>10}")
    print(f"{'openknn training job':24}{out['openknn_accuracy']:>12.6f}"
          f"{out['openknn_job_seconds']:>10.2f}")
    print(f"{'scikit-learn brute':24}{out['sklearn_accuracy']:>12.6f}"
          f"{out['sklearn_seconds']:>10.2f}")
    print(f"predictions that differ: {out['rows_differing']} of {out['rows_test']}")
    print(f"#test_score (algo-1) : ('accuracy', {out['openknn_accuracy']!r})")


if __name__ == "__main__":
    main()
