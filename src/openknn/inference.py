"""Inference on a loaded model, independent of HTTP: decode a request body, check its rows,
search, vote or average, encode the response — for the server, batch transform and invoke."""

from __future__ import annotations

import numpy as np

from .errors import DataError
from .formats.codec import Predictions, ResponseType, decode, encode, negotiate, request_media
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


def infer(model: KnnModel, features: np.ndarray, nprobe: int | None = None) -> Predictions:
    """Search once and answer every row, with the neighbours kept for verbose responses."""
    distances, labels = model.neighbors(features, nprobe=nprobe)
    return Predictions(predict(labels, model.meta.predictor_type), distances, labels)


def invoke(model: KnnModel, body: bytes, content_type: str | None,
           accept: str | None) -> tuple[bytes, ResponseType]:
    """One whole request in process: the response body and its negotiated type."""
    response = negotiate(accept)
    features = parse_request(model, body, content_type)
    return encode(infer(model, features), response), response
