"""A trained k-NN model in memory: its metadata (``model_algo-1.json``), index, labels and
projection, and the query path shared by test scoring, the server and the SDK."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from . import index as faiss_index
from .errors import DataError
from .model_check import meta_fields
from .predict import predict
from .reduction import Projection
from .search import search

VERSION = "1.0"


@dataclass
class ModelMeta:
    """The model JSON (decision 8). ``k`` and ``predictor_type`` may be edited by users."""

    k: int
    predictor_type: str
    feature_dim: int
    index_dim: int
    index_type: str = "faiss.Flat"
    index_metric: str = "L2"
    nprobe: int = 5
    dimension_reduction: dict[str, Any] | None = None
    normalize: bool = False
    sampling_seed: int = 0
    num_points: int = 0
    faiss_index_ivf_nlists: int | None = None
    faiss_index_pq_m: int | None = None
    tuning: dict[str, Any] | None = None  # _target_recall's choice (openknn.tuning.Tuned)
    # L2 only: a shift about the sample mean (exact in float32 for every stored value),
    # subtracted from every vector before indexing and from every query (distances are
    # translation-invariant), so float32 search does not cancel on large magnitudes or
    # offsets (openknn.index.center_of). None: vectors indexed as given (older models).
    center: list[float] | None = None
    version: str = VERSION

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, obj: Mapping[str, Any], source: str = "model_algo-1.json") -> ModelMeta:
        """Read leniently (unknown keys are ignored, absent optional keys take their defaults)
        but check every known field's type and range against the hyperparameter table
        (``openknn.model_check``); a bad one raises ``ModelError`` naming ``source`` and it."""
        fields = meta_fields(obj, source)
        return cls(**{k: v for k, v in fields.items() if k in cls.__dataclass_fields__})


@dataclass
class KnnModel:
    """Everything inference needs, loaded once."""

    meta: ModelMeta
    index: Any
    labels: np.ndarray  # float32, one per index id
    projection: Projection | None = None
    # What searches for ``index``, where not the index itself: its GPU copy (openknn.gpu).
    # ``index`` stays the CPU index that is written and checked.
    searcher: Any = None

    def prepare_queries(self, features: np.ndarray) -> np.ndarray:
        """Check the width, apply the stored projection, normalise and pad like training."""
        if features.ndim != 2 or features.shape[1] != self.meta.feature_dim:
            got = features.shape[1] if features.ndim == 2 else features.shape
            raise DataError(
                f"Expected {self.meta.feature_dim} features per record (the model's "
                f"feature_dim), got {got}; send rows of {self.meta.feature_dim} numbers"
            )
        x = self.projection.apply(features) if self.projection is not None else features
        return faiss_index.prepare(x, self.meta.index_metric, self.meta.index_dim,
                                   self.center, exact=True)

    @functools.cached_property
    def center(self) -> np.ndarray | None:
        """The L2 shift as an array (``meta.center``, read once), or None."""
        return None if self.meta.center is None else np.asarray(self.meta.center, np.float64)

    def neighbors(self, features: np.ndarray, k: int | None = None,
                  nprobe: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Distances (decision 1) and labels of the ``k`` nearest sampled points, nearest first."""
        queries = self.prepare_queries(features)
        dist, ids = search(self.index, queries, k or self.meta.k, self.meta.index_metric,
                           self.meta.nprobe if nprobe is None else nprobe, self.searcher)
        return dist, self.labels[ids]

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickle as the model files (faiss indexes do not pickle themselves), so a model can
        travel to Ray workers."""
        from . import artifact

        return (artifact.from_files, (artifact.model_bytes(self),))

    def predict(self, features: np.ndarray) -> np.ndarray:
        """One float32 prediction per row: vote or mean of the neighbour labels."""
        _, neighbor_labels = self.neighbors(features)
        return predict(neighbor_labels, self.meta.predictor_type)
