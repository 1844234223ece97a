"""One place that maps media types to codecs: request bodies to feature matrices and
predictions to response bodies, for the server, batch transform and the SDK alike."""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from ..errors import DataError, NotAcceptable, UnsupportedMediaType
from . import csv as csv_format
from . import json as json_format
from . import recordio
from .media import (
    CSV,
    JSON,
    JSONLINES,
    MAX_ACCEPT_CHARS,
    MAX_CONTENT_TYPE_CHARS,
    RECORDIO,
    shown,
    split_media_type,
)

REQUEST_TYPES = (CSV, JSON, JSONLINES, RECORDIO)
RESPONSE_TYPES = (JSON, JSONLINES, RECORDIO, CSV)
DEFAULT_ACCEPT = JSON  # decision 11: missing or */* -> application/json


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


JSON_CHARSETS = ("utf-8", "utf-8-sig", "ascii")  # RFC 8259: JSON travels as UTF-8
VERBOSE_WORDS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}
MAX_DIGITS = 9  # a count parameter is below a billion: no 4,300-digit int() on the loop
# Parameters whose values openknn reads, by request type; a repeat of one is an error,
# others (header=present, ...) are ignored.
KNOB_PARAMS = ("nprobe", "ef_search", "efsearch")
_READ = {CSV: ("label_size", "charset"), JSON: ("charset",), JSONLINES: ("charset",),
         RECORDIO: ()}


@dataclass(frozen=True)
class RequestType:
    """A checked Content-Type: the media type, CSV's label columns, the charset and the
    per-request search knob (``nprobe`` / ``ef_search``) as given, if any."""

    media: str
    label_size: int = 0
    charset: str = "utf-8"
    knob: tuple[str, str] | None = None


def count_param(name: str, raw: str, low: int, high: int, hint: str) -> int:
    """A whole-number parameter in ASCII digits within ``[low, high]``, or 400 naming it."""
    if not (raw.isascii() and raw.isdigit()) or len(raw) > MAX_DIGITS or int(raw) < low:
        raise DataError(f"Content-Type parameter {name}={shown(raw)} must be a "
                        f"{'positive' if low > 0 else 'non-negative'} integer (ASCII digits); "
                        f"{hint}")
    value = int(raw)
    if value > high:
        raise DataError(f"Content-Type parameter {name}={value} is more than {high}; {hint}")
    return value


def _too_long(what: str, value: str, limit: int) -> str:
    return (f"The {what} header is {len(value)} characters long, over the {limit} read; "
            f"send one media type with its parameters")


# Requests repeat their headers: the checked values are remembered (pure functions of the
# header's text; an error is raised again each time, not remembered).
@functools.lru_cache(maxsize=256)
def request_type(content_type: str | None, feature_dim: int | None = None) -> RequestType:
    """The request's checked Content-Type (415 for the type or charset, 400 for a
    parameter's value); ``feature_dim`` bounds ``label_size``."""
    value = content_type or ""
    if len(value) > MAX_CONTENT_TYPE_CHARS:
        raise UnsupportedMediaType(_too_long("Content-Type", value, MAX_CONTENT_TYPE_CHARS))
    media, pairs = split_media_type(value)
    if media not in REQUEST_TYPES:
        raise UnsupportedMediaType(
            f"Content-Type {shown(value) if value else '(none)'} is not supported; send one "
            f"of {', '.join(REQUEST_TYPES)}")
    params: dict[str, str] = {}
    for key, raw in pairs:
        if key in _READ[media] or key in KNOB_PARAMS:
            if key in params:
                raise DataError(f"Content-Type parameter {key} is given twice "
                                f"({shown(params[key])} and {shown(raw)}); give it once")
            params[key] = raw
    knobs = [(k, params[k]) for k in KNOB_PARAMS if k in params]
    if len(knobs) > 1:
        raise DataError(f"Content-Type parameters {' and '.join(k for k, _ in knobs)} are "
                        "both given; give nprobe= for an IVF index or ef_search= for HNSW")
    limit = csv_format.max_label_size(feature_dim)
    label_size = count_param("label_size", params["label_size"], 0, limit,
                             "give the number of label columns before the features (usually "
                             "0 or 1)") if "label_size" in params else 0
    charset = params.get("charset", "utf-8")
    if "charset" in params:
        codec = csv_format.text_codec(charset)
        if media != CSV and codec not in JSON_CHARSETS:
            raise UnsupportedMediaType(f"Content-Type charset={shown(charset)}: {media} is "
                                       "read as UTF-8 only; send UTF-8 and say charset=utf-8 "
                                       "(or nothing)")
    return RequestType(media, label_size, charset, knobs[0] if knobs else None)


@functools.lru_cache(maxsize=256)
def negotiate(accept: str | None) -> ResponseType:
    """Pick the response type from an Accept header (first supported entry wins), or 406."""
    if not accept or not accept.strip():
        return ResponseType(DEFAULT_ACCEPT)
    if len(accept) > MAX_ACCEPT_CHARS:
        raise NotAcceptable(_too_long("Accept", accept, MAX_ACCEPT_CHARS))
    for entry in accept.split(","):
        media, pairs = split_media_type(entry)
        if media in ("*/*", "application/*", ""):
            return ResponseType(DEFAULT_ACCEPT, _verbose(pairs))
        if media in RESPONSE_TYPES:
            return ResponseType(media, _verbose(pairs))
    raise NotAcceptable(
        f"Accept {shown(accept)} names no supported type; accept one of "
        f"{', '.join(RESPONSE_TYPES)} (add '; verbose=true' to JSON, JSON Lines or RecordIO "
        "for the neighbours)"
    )


def _verbose(pairs: list[tuple[str, str]]) -> bool:
    given = [raw for key, raw in pairs if key == "verbose"]
    if not given:
        return False
    if len(given) > 1:
        raise NotAcceptable("Accept parameter verbose is given twice; give it once")
    value = VERBOSE_WORDS.get(given[0].lower())
    if value is None:
        raise NotAcceptable(f"Accept parameter verbose={shown(given[0])} is not true or false; "
                            "give verbose=true for the neighbours, or leave it out")
    return value


def decode(body: bytes, request: RequestType, feature_dim: int, source: str = "<body>",
           quick: bool = False) -> np.ndarray:
    """A request body as a float32 (n, feature_dim) matrix; labels in the body are dropped.
    ``quick``: only the fast path of the format (else NotQuick), for the event loop."""
    kind = request.media
    if kind == CSV:
        features, _ = csv_format.parse_csv(
            body, label_size=request.label_size, feature_dim=feature_dim, source=source,
            encoding=request.charset, quick=quick)
        return features
    if kind == JSON:
        return json_format.parse_json(body, feature_dim, source=source, quick=quick)
    if kind == JSONLINES:
        return json_format.parse_jsonlines(body, feature_dim, source=source, quick=quick)
    features, _ = recordio.decode_features(body, feature_dim, source=source, quick=quick,
                                           general_limit=recordio.REQUEST_GENERAL_RECORDS)
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
