"""Test-channel scores: accuracy (classifier) or mean squared error (regressor), summed over
batches so the metric covers every test record exactly, and SageMaker's log lines for it."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .predict import CLASSIFIER


@dataclass
class Score:
    """A running test metric: ``total`` is correct answers or summed squared error."""

    predictor_type: str
    total: float = 0.0
    rows: int = 0

    @property
    def name(self) -> str:
        return "accuracy" if self.predictor_type == CLASSIFIER else "mse"

    def add(self, predicted: np.ndarray, truth: np.ndarray) -> None:
        if self.predictor_type == CLASSIFIER:
            self.total += float(np.count_nonzero(predicted == truth))
        else:
            err = predicted.astype(np.float64) - truth.astype(np.float64)
            self.total += float(np.dot(err, err))
        self.rows += int(truth.shape[0])

    def merge(self, other: Score) -> None:
        self.total += other.total
        self.rows += other.rows

    @property
    def value(self) -> float:
        return self.total / self.rows if self.rows else float("nan")

    def log_lines(self, host: str = "algo-1") -> list[str]:
        """The two forms SageMaker prints (both, since AWS's HPO regexes are not public)."""
        return [
            f"#test_score ({host}) : ({self.name!r}, {self.value!r})",
            f"#quality_metric: host={host}, test {self.name} <score>={self.value!r}",
        ]
