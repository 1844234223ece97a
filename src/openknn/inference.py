"""Inference on a loaded model, independent of HTTP: decode a request body, check its rows,
search, vote or average, encode the response — for the server, batch transform and invoke."""

from __future__ import annotations

import numpy as np

from .errors import DataError
from .formats.codec import Predictions, ResponseType, decode, encode, negotiate, request_media
from .formats.media import parse_media_type
from .index import HNSW, IVF_TYPES
from .model import KnnModel
from .predict import predict


def check_rows(features: np.ndarray, source: str = "<body>") -> None:
    """Refuse NaN / ±inf in a request (decision 7), naming the first bad row (1-based)."""
    finite = np.isfinite(features).all(axis=1)
    if not finite.all():
        row = int(np.argmax(~finite)) + 1
        raise DataError(f"{source}, row {row}: features contain NaN or infinity (or a value "
                        "beyond float32 range); send finite numbers")


def parse_request(model: KnnModel, body: bytes, content_type: str | None,
                  source: str = "<body>") -> np.ndarray:
    """A checked float32 feature matrix from a request body."""
    media, params = request_media(content_type)
    features = decode(body, media, params, model.meta.feature_dim, source)
    if features.shape[0] == 0:
        raise DataError(f"{source}: the request holds no records; send at least one row")
    check_rows(features, source)
    return features


KNOB_PARAMS = ("nprobe", "ef_search", "efsearch")
# By index type, not by the index object: a model may search through a stand-in (Ray
# shards, a GPU copy) that is no faiss IVF or HNSW index itself.
KNOBS = {**{t: "nprobe" for t in IVF_TYPES}, HNSW: "efSearch"}
MAX_EF_SEARCH = 4096


def knob_override(model: KnnModel, content_type: str | None) -> int | None:
    """A per-request ``nprobe=`` (IVF) or ``ef_search=`` (HNSW) Content-Type parameter."""
    _, params = parse_media_type(content_type or "")
    given = [(name, params[name]) for name in KNOB_PARAMS if name in params]
    if not given:
        return None
    name, raw = given[0]
    if not raw.isdigit() or int(raw) < 1:
        raise DataError(f"Content-Type parameter {name}={raw!r} must be a positive integer")
    value = int(raw)
    knob = KNOBS.get(model.meta.index_type)
    if knob is None:
        raise DataError(f"Content-Type parameter {name}={value}: the model's "
                        f"{model.meta.index_type} index is exact and has no search-time knob; "
                        "drop the parameter")
    if knob == "nprobe":
        nlist = int(model.meta.faiss_index_ivf_nlists or model.index.nlist)
        if name != "nprobe":
            raise DataError(f"Content-Type parameter {name}: an IVF index takes nprobe=")
        if value > nlist:
            raise DataError(f"nprobe={value} is larger than the index's nlist={nlist}; give "
                            f"1 to {nlist}")
    elif name == "nprobe":
        raise DataError("Content-Type parameter nprobe: an HNSW index takes ef_search=")
    elif value > MAX_EF_SEARCH:
        raise DataError(f"ef_search={value} is larger than {MAX_EF_SEARCH}; give 1 to "
                        f"{MAX_EF_SEARCH}")
    return value


def infer(model: KnnModel, features: np.ndarray, nprobe: int | None = None) -> Predictions:
    """Search once and answer every row, with the neighbours kept for verbose responses."""
    distances, labels = model.neighbors(features, nprobe=nprobe)
    return Predictions(predict(labels, model.meta.predictor_type), distances, labels)


def invoke(model: KnnModel, body: bytes, content_type: str | None,
           accept: str | None) -> tuple[bytes, ResponseType]:
    """One whole request in process: the response body and its negotiated type."""
    response = negotiate(accept)
    features = parse_request(model, body, content_type)
    knob = knob_override(model, content_type)
    return encode(infer(model, features, knob), response), response
