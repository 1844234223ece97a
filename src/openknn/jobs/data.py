"""Channels as streams of ``(features, labels)`` blocks: content-type resolution, codec
dispatch, mini-batching, and the checks every training record must pass."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from ..core.finite import check_features, first_non_finite
from ..errors import ChannelError, DataError, UnsupportedMediaType
from ..formats import csv as csv_format
from ..formats import recordio
from ..formats.media import CSV, RECORDIO, parse_media_type
from .progress import Progress
from .storage import S3_PREFIX, DataFile, list_channel, open_binary

log = logging.getLogger(__name__)

CSV_SUFFIXES = (".csv", ".csv.gz")


@dataclass(frozen=True)
class Channel:
    """A named input channel: where its files are and how they are encoded."""

    name: str
    location: str
    content_type: str | None = None
    distribution: str = "FullyReplicated"  # or ShardedByS3Key (SageMaker's S3DataDistributionType)
    data_type: str = S3_PREFIX  # or ManifestFile: location names a manifest (S3DataType)


@dataclass
class Block:
    """Up to ``mini_batch_size`` records of one file. ``first_record`` is 0-based in the file."""

    features: np.ndarray  # float32 (n, d)
    labels: np.ndarray | None  # float32 (n,)
    source: str
    first_record: int

    def __len__(self) -> int:
        return int(self.features.shape[0])


def resolve_content_type(content_type: str | None, files: Sequence[DataFile]) -> tuple[str, int]:
    """The channel's media type and CSV ``label_size`` (decision 15 for an absent type)."""
    if content_type is None:
        if files and all(f.name.lower().endswith(CSV_SUFFIXES) for f in files):
            return CSV, 1
        return RECORDIO, 1
    media, params = parse_media_type(content_type)
    if media not in (CSV, RECORDIO):
        raise UnsupportedMediaType(
            f"Content type {content_type!r} is not supported for training; use "
            f"'{CSV}' or '{RECORDIO}'"
        )
    label_size = params.get("label_size", "1")
    if media == CSV and label_size != "1":
        raise DataError(
            f"Content type {content_type!r}: training needs label_size=1 (the label in the "
            f"first column), got label_size={label_size}"
        )
    return media, 1


def _file_blocks(file: DataFile, media: str, feature_dim: int,
                 ) -> Iterator[tuple[np.ndarray, np.ndarray | None, int]]:
    with open_binary(file) as stream:
        if media == CSV:
            for feats, labels, first in csv_format.iter_csv_blocks(
                stream, source=file.uri, label_size=1, feature_dim=feature_dim,
                compression="gzip" if file.name.endswith(".gz") else None,
            ):
                yield feats, None if labels is None else labels[:, 0], first
        else:
            yield from recordio.iter_feature_blocks(stream, feature_dim,  # type: ignore[arg-type]
                                                    source=file.uri)


def check_block(block: Block, require_labels: bool) -> None:
    """Refuse NaN/inf (decision 7) and missing labels, naming the file and record number."""
    check_features(block.features, block.source, "record", "clean or drop the record",
                   block.first_record)
    if block.labels is None:
        if require_labels:
            raise DataError(
                f"{block.source}, record {block.first_record + 1}: the record has no label; "
                "training and test channels need a label (the first CSV column, or "
                "label['values'] in RecordIO-protobuf)"
            )
        return
    row = first_non_finite(block.labels)
    if row is not None:
        raise DataError(
            f"{block.source}, record {block.first_record + row + 1}: the label is NaN or "
            "infinity; every record needs a finite label"
        )


def iter_blocks(channel: Channel, feature_dim: int, batch_size: int,
                require_labels: bool = True, progress: Progress | None = None,
                files: Sequence[DataFile] | None = None) -> Iterator[Block]:
    """Stream a channel as checked blocks of at most ``batch_size`` records.

    ``files`` restricts the read to a subset (one host's shard); by default all files.
    """
    files = list_channel(channel.location, channel.data_type) if files is None else files
    media, _ = resolve_content_type(channel.content_type, files)
    for file in files:
        for feats, labels, first in _file_blocks(file, media, feature_dim):
            for lo in range(0, feats.shape[0], batch_size):
                hi = lo + batch_size
                block = Block(feats[lo:hi], None if labels is None else labels[lo:hi],
                              file.uri, first + lo)
                check_block(block, require_labels)
                if progress is not None:
                    progress.update(len(block))
                yield block


def require_files(channel: Channel) -> list[DataFile]:
    """The channel's files, or a ChannelError saying the channel is empty."""
    files = list_channel(channel.location, channel.data_type)
    if not files:
        raise ChannelError(
            f"Channel {channel.name!r} at {channel.location!r} has no data files; put the "
            "CSV or RecordIO-protobuf files there"
        )
    return files
