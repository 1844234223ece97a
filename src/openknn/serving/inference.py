"""Inference on a loaded model, independent of HTTP: decode a request body, check its rows,
search, vote or average, encode the response — for the server, batch transform and invoke."""

from __future__ import annotations

import numpy as np

from ..core.finite import check_features
from ..core.index import HNSW, IVF_TYPES
from ..core.model import KnnModel
from ..core.predict import predict
from ..errors import DataError
from ..formats.codec import (
    Predictions,
    RequestType,
    ResponseType,
    count_param,
    decode,
    encode,
    negotiate,
    request_type,
)
from ..formats.media import shown


def check_rows(features: np.ndarray, source: str = "<body>") -> None:
    """Refuse NaN / ±inf in a request (decision 7), naming the first bad row (1-based)."""
    check_features(features, source, "row", "send finite numbers")


def check_request(model: KnnModel, content_type: str | None) -> tuple[RequestType, int | None]:
    """The request's checked Content-Type and its search knob (cheap: no body is read)."""
    request = request_type(content_type, model.meta.feature_dim)
    return request, _knob(model, request)


def parse_request(model: KnnModel, body: bytes, content_type: str | RequestType | None,
                  source: str = "<body>", quick: bool = False) -> np.ndarray:
    """A checked float32 feature matrix from a request body. ``quick``: the formats' fast
    paths only, raising ``formats.NotQuick`` where the body needs more (the server's event
    loop decodes small bodies so, and the rest in a worker thread)."""
    request = (content_type if isinstance(content_type, RequestType)
               else request_type(content_type, model.meta.feature_dim))
    features = decode(body, request, model.meta.feature_dim, source, quick)
    if features.shape[0] == 0:
        raise DataError(f"{source}: the request holds no records; send at least one row")
    check_rows(features, source)
    return features


# By index type, not by the index object: a model may search through a stand-in (Ray
# shards, a GPU copy) that is no faiss IVF or HNSW index itself.
KNOBS = {**{t: "nprobe" for t in IVF_TYPES}, HNSW: "efSearch"}
MAX_EF_SEARCH = 4096


def knob_override(model: KnnModel, content_type: str | None) -> int | None:
    """A per-request ``nprobe=`` (IVF) or ``ef_search=`` (HNSW) Content-Type parameter."""
    return _knob(model, request_type(content_type, model.meta.feature_dim))


def _knob(model: KnnModel, request: RequestType) -> int | None:
    if request.knob is None:
        return None
    name, raw = request.knob
    knob = KNOBS.get(model.meta.index_type)
    if knob is None:
        raise DataError(f"Content-Type parameter {name}={shown(raw)}: the model's "
                        f"{model.meta.index_type} index is exact and has no search-time knob; "
                        "drop the parameter")
    if knob == "nprobe":
        if name != "nprobe":
            raise DataError(f"Content-Type parameter {name}: an IVF index takes nprobe=")
        high = int(model.meta.faiss_index_ivf_nlists or model.index.nlist)
        limit = f"the index's nlist={high}"
    else:
        if name == "nprobe":
            raise DataError("Content-Type parameter nprobe: an HNSW index takes ef_search=")
        high, limit = MAX_EF_SEARCH, str(MAX_EF_SEARCH)
    value = count_param(name, raw, 1, 2**31 - 1, f"give 1 to {high}")
    if value > high:
        raise DataError(f"{name}={value} is larger than {limit}; give 1 to {high}")
    return value


def infer(model: KnnModel, features: np.ndarray, nprobe: int | None = None) -> Predictions:
    """Search once and answer every row, with the neighbours kept for verbose responses."""
    distances, labels = model.neighbors(features, nprobe=nprobe)
    return Predictions(predict(labels, model.meta.predictor_type), distances, labels)


def invoke(model: KnnModel, body: bytes, content_type: str | None,
           accept: str | None) -> tuple[bytes, ResponseType]:
    """One whole request in process: the response body and its negotiated type."""
    response = negotiate(accept)
    request, knob = check_request(model, content_type)
    features = parse_request(model, body, request)
    return encode(infer(model, features, knob), response), response
