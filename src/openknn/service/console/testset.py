"""A labelled test set for the console's plots, read from the embedded S3 store: the objects of
an ``s3://`` prefix (or one object), CSV with the label first (``.csv``, ``.csv.gz``) or
RecordIO-protobuf, decoded by the same codecs training reads channels with, up to a number of
rows. The page sends the features to an endpoint and compares its answers with the labels.

Why the server decodes: the tutorial's test channel is RecordIO-protobuf, which a browser has
no decoder for, and the job's own test metric came from exactly these records, so the plot's
accuracy at the model's k can be checked against it. The features go back as CSV (the
shortest text that reads back to the same float32, so the endpoint sees the same numbers)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, BinaryIO, cast

import numpy as np

from openknn.errors import DataError
from openknn.formats import csv as csv_format
from openknn.formats import recordio
from openknn.formats.media import CSV, RECORDIO, parse_media_type
from openknn.service.console.views import s3_parts
from openknn.service.s3.store import Store

DEFAULT_ROWS = 1000
MAX_ROWS = 20000
MAX_OBJECTS = 1000
CSV_SUFFIXES = (".csv", ".csv.gz")


@dataclass(frozen=True)
class TestSet:
    features: np.ndarray  # float32 (n, d)
    labels: np.ndarray  # float32 (n,)
    sources: list[str]  # the s3:// URIs read

    def to_json(self) -> dict[str, object]:
        return {"csv": csv_format.encode_csv(self.features).decode("ascii"),
                "labels": self.labels.astype(np.float64).tolist(),
                "rows": int(self.features.shape[0]),
                "feature_dim": int(self.features.shape[1]) if self.features.ndim == 2 else 0,
                "sources": self.sources}


def media_of(content_type: str | None, key: str) -> str:
    """How an object is encoded: the channel's content type when given, else CSV for
    ``.csv`` / ``.csv.gz`` names and RecordIO-protobuf otherwise (training's rule)."""
    if content_type:
        media, _ = parse_media_type(content_type)
        if media not in (CSV, RECORDIO):
            raise DataError(f"Content type {content_type!r}: a test set is {CSV!r} (label "
                            f"first) or {RECORDIO!r}")
        return media
    return CSV if key.lower().endswith(CSV_SUFFIXES) else RECORDIO


def objects(store: Store, uri: str) -> list[tuple[str, str]]:
    """(bucket, key) of what ``uri`` names: the object itself, or those under the prefix."""
    parts = s3_parts(uri)
    if parts is None:
        raise DataError(f"Test set {uri!r}: give an s3:// URI of this service's store (an "
                        "object, or a prefix of objects)")
    bucket, key = parts
    listing = store.list_objects(bucket, prefix=key, max_keys=MAX_OBJECTS)
    exact = [o for o in listing.objects if o.key == key]
    found = exact or [o for o in listing.objects if not o.key.endswith("/") and o.size > 0]
    if not found:
        raise DataError(f"Test set {uri!r}: no objects there; give the prefix or object of "
                        "a labelled test set (CSV with the label first, or RecordIO-protobuf)")
    return [(bucket, o.key) for o in found]


def _blocks(stream: IO[bytes], media: str, source: str
            ) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
    """The object's (features, labels) blocks, streamed: a large object is read only as far
    as the rows asked for."""
    if media == CSV:
        gz = "gzip" if source.endswith(".gz") else None
        for f, labels, _ in csv_format.iter_csv_blocks(stream, source=source, label_size=1,
                                                       feature_dim=None, compression=gz):
            yield f, None if labels is None else labels[:, 0]
        return
    for f, labels, _ in recordio.iter_feature_blocks(cast(BinaryIO, stream), None, source=source,
                                                     chunk_bytes=1 << 20):
        yield f, labels


def read(store: Store, uri: str, content_type: str | None = None,
         rows: int = DEFAULT_ROWS) -> TestSet:
    """The first ``rows`` labelled records under ``uri``, in key order."""
    rows = max(1, min(int(rows), MAX_ROWS))
    features: list[np.ndarray] = []
    labels: list[np.ndarray] = []
    sources: list[str] = []
    have = 0
    for bucket, key in objects(store, uri):
        source = f"s3://{bucket}/{key}"
        _, stream = store.open_object(bucket, key)
        sources.append(source)
        with stream:
            have = _take(_blocks(stream, media_of(content_type, key), source), source, rows,
                         have, features, labels)
        if have >= rows:
            break
    return TestSet(np.concatenate(features).astype(np.float32),
                   np.concatenate(labels).astype(np.float32), sources)


def _take(blocks: Iterator[tuple[np.ndarray, np.ndarray | None]], source: str, rows: int,
          have: int, features: list[np.ndarray], labels: list[np.ndarray]) -> int:
    """Add ``blocks`` to ``features`` and ``labels`` until there are ``rows``; how many now."""
    for block, block_labels in blocks:
        if block_labels is None:
            raise DataError(f"{source}: the records have no labels; a test set needs them "
                            "(the first CSV column, or label['values'] in RecordIO)")
        if features and block.shape[1] != features[0].shape[1]:
            raise DataError(f"{source}: {block.shape[1]} features, but the first object "
                            f"has {features[0].shape[1]}")
        take = min(rows - have, block.shape[0])
        features.append(block[:take])
        labels.append(block_labels[:take])
        have += take
        if have >= rows:
            break
    return have
