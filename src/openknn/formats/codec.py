"""One place that maps media types to codecs: request bodies to feature matrices and
predictions to response bodies, for the server, batch transform and the SDK alike."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import DataError, NotAcceptable, UnsupportedMediaType
from . import csv as csv_format
from . import json as json_format
from . import recordio
from .media import CSV, JSON, JSONLINES, RECORDIO, parse_media_type

REQUEST_TYPES = (CSV, JSON, JSONLINES, RECORDIO)
RESPONSE_TYPES = (JSON, JSONLINES, RECORDIO, CSV)
DEFAULT_ACCEPT = JSON  # decision 11: missing or */* -> application/json
TRUE_WORDS = ("true", "1", "yes")


@dataclass(frozen=True)
class ResponseType:
    """A negotiated Accept: the media type, verbose or not, and the parameters given."""

    media: str
    verbose: bool = False

    @property
    def content_type(self) -> str:
        return f"{self.media}; verbose=true" if self.verbose else self.media


@dataclass
class Predictions:
    """What a model answers for a batch: labels, and the neighbours when verbose."""

    predicted: np.ndarray  # float32 (n,)
    distances: np.ndarray | None = None  # float32 (n, k)
    labels: np.ndarray | None = None  # float32 (n, k)


def request_media(content_type: str | None) -> tuple[str, dict[str, str]]:
    """The request's media type and parameters, or 415."""
    media, params = parse_media_type(content_type or "")
    if media not in REQUEST_TYPES:
        shown = content_type if content_type else "(none)"
        raise UnsupportedMediaType(
            f"Content-Type {shown!r} is not supported; send one of {', '.join(REQUEST_TYPES)}"
        )
    return media, params


def negotiate(accept: str | None) -> ResponseType:
    """Pick the response type from an Accept header (first supported entry wins), or 406."""
    if not accept or not accept.strip():
        return ResponseType(DEFAULT_ACCEPT)
    for entry in accept.split(","):
        media, params = parse_media_type(entry)
        verbose = params.get("verbose", "false").lower() in TRUE_WORDS
        if media in ("*/*", "application/*", ""):
            return ResponseType(DEFAULT_ACCEPT, verbose)
        if media in RESPONSE_TYPES:
            return ResponseType(media, verbose)
    raise NotAcceptable(
        f"Accept {accept!r} names no supported type; accept one of {', '.join(RESPONSE_TYPES)} "
        "(add '; verbose=true' to JSON, JSON Lines or RecordIO for the neighbours)"
    )


def _int_param(params: dict[str, str], name: str, default: int) -> int:
    raw = params.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise DataError(f"Content-Type parameter {name}={raw!r} is not an integer") from None
    if value < 0:
        raise DataError(f"Content-Type parameter {name}={value} must be 0 or more")
    return value


def decode(body: bytes, media: str, params: dict[str, str], feature_dim: int,
           source: str = "<body>") -> np.ndarray:
    """A request body as a float32 (n, feature_dim) matrix; labels in the body are dropped."""
    if media == CSV:
        label_size = _int_param(params, "label_size", 0)
        features, _ = csv_format.parse_csv(
            body, label_size=label_size, feature_dim=feature_dim, source=source,
            encoding=params.get("charset", "utf-8"))
        return features
    if media == JSON:
        return json_format.parse_json(body, feature_dim, source=source)
    if media == JSONLINES:
        return json_format.parse_jsonlines(body, feature_dim, source=source)
    features, _ = recordio.decode_features(body, feature_dim, source=source)
    return features


def encode(predictions: Predictions, response: ResponseType) -> bytes:
    """Predictions as a response body of the negotiated type."""
    p = predictions
    distances = p.distances if response.verbose else None
    labels = p.labels if response.verbose else None
    if response.media == JSON:
        return json_format.encode_json(p.predicted, distances, labels)
    if response.media == JSONLINES:
        return json_format.encode_jsonlines(p.predicted, distances, labels)
    if response.media == CSV:
        return csv_format.encode_csv(p.predicted)
    columns = {"predicted_label": p.predicted}
    if distances is not None and labels is not None:
        columns.update(distances=distances, labels=labels)
    return recordio.encode_label_records(columns)
