"""A trained k-NN model in memory: its metadata (``model_algo-1.json``), index, labels and
projection; the query path shared by test scoring, the server and the SDK; and the model's
bytes, the three files' contents to and from a model (writing, loading and pickling use
them; ``model_files`` checks each file)."""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import DataError
from . import index as faiss_index
from .model_files import (
    INDEX_FILE,
    LABELS_FILE,
    META_FILE,
    ModelMeta,
    check_index,
    check_present,
    check_size,
    deserialize_index,
    read_labels,
    read_meta,
)
from .predict import predict
from .reduction import Projection
from .search import search


@dataclass
class KnnModel:
    """Everything inference needs, loaded once."""

    meta: ModelMeta
    index: Any
    labels: np.ndarray  # float32, one per index id
    projection: Projection | None = None
    # What searches for ``index``, where not the index itself: its GPU copy (openknn.core.gpu).
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
        return (from_files, (model_bytes(self),))

    def predict(self, features: np.ndarray) -> np.ndarray:
        """One float32 prediction per row: vote or mean of the neighbour labels."""
        _, neighbor_labels = self.neighbors(features)
        return predict(neighbor_labels, self.meta.predictor_type)


def model_bytes(model: KnnModel) -> dict[str, bytes]:
    """The three files' contents."""
    meta = json.dumps(model.meta.to_json(), indent=2, sort_keys=True).encode()
    return {
        INDEX_FILE: faiss_index.serialize(model.index),
        LABELS_FILE: model.labels.astype("<f4").tobytes(),
        META_FILE: meta + b"\n",
    }


def from_files(files: Mapping[str, bytes], source: str = "<model>") -> KnnModel:
    """A model from the three files' contents (the inverse of ``model_bytes``), every field
    and size checked: a model that loads can answer."""
    check_present(files, source)
    meta = read_meta(files[META_FILE], f"{source}/{META_FILE}")
    for name in (INDEX_FILE, LABELS_FILE):
        check_size(name, len(files[name]), meta, source)
    index = deserialize_index(files[INDEX_FILE], f"{source}/{INDEX_FILE}")
    check_index(meta, index, f"{source}/{INDEX_FILE}")
    labels = read_labels(files[LABELS_FILE], f"{source}/{LABELS_FILE}", int(index.ntotal))
    projection = (Projection.from_json(meta.dimension_reduction)
                  if meta.dimension_reduction else None)
    return KnnModel(meta=meta, index=index, labels=labels, projection=projection)
