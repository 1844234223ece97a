"""Batch transform (SageMaker's transform job): every input file streamed through the model
in requests of one record (SingleRecord) or up to MaxPayloadInMB (MultiRecord), one
``<name>.out`` per file, memory bounded by a request, not by the file."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from ..core.model import KnnModel
from ..errors import ClientError, DataError, OpenKnnError
from ..formats.media import JSONLINES, RECORDIO
from ..formats.recordio import HEADER, MAGIC, MAX_LENGTH
from ..jobs import outputs
from ..jobs.progress import Progress
from ..jobs.storage import list_channel, open_binary
from .inference import invoke

log = logging.getLogger(__name__)

SPLIT_TYPES = ("Line", "RecordIO", "None")
BATCH_STRATEGIES = ("MultiRecord", "SingleRecord")
ASSEMBLE_WITH = ("Line", "None")


@dataclass(frozen=True)
class TransformSpec:
    """What SageMaker's CreateTransformJob says: split, batch, assemble, payload limit."""

    content_type: str = JSONLINES
    accept: str = JSONLINES
    split_type: str = "Line"
    batch_strategy: str = "MultiRecord"
    assemble_with: str = "Line"
    max_payload_mb: float = 6.0

    def check(self) -> None:
        for name, value, allowed in (("SplitType", self.split_type, SPLIT_TYPES),
                                     ("BatchStrategy", self.batch_strategy, BATCH_STRATEGIES),
                                     ("AssembleWith", self.assemble_with, ASSEMBLE_WITH)):
            if value not in allowed:
                raise ClientError(f"{name} {value!r} is not one of {', '.join(allowed)}")
        if self.split_type == "Line" and self.content_type.startswith(RECORDIO):
            raise ClientError("SplitType Line cannot split RecordIO-protobuf records; use "
                              "SplitType RecordIO (or None)")


def split_lines(stream: IO[bytes]) -> Iterator[bytes]:
    """Records of a Line split: non-blank lines, each without its line end."""
    for line in stream:
        line = line.rstrip(b"\r\n")
        if line.strip():
            yield line + b"\n"


def split_recordio(stream: IO[bytes], source: str) -> Iterator[bytes]:
    """Records of a RecordIO split: whole framed records (multi-part ones kept together)."""
    number, parts = 0, b""
    while header := stream.read(HEADER.size):
        number += 1
        if len(header) < HEADER.size:
            raise DataError(f"{source}, record {number}: the record header is cut short")
        magic, lrec = HEADER.unpack(header)
        if magic != MAGIC:
            raise DataError(f"{source}, record {number}: bad RecordIO magic {magic:#x}; "
                            "is SplitType right for this file?")
        length, cflag = lrec & MAX_LENGTH, lrec >> 29
        body = stream.read(length + (-length % 4))
        if len(body) < length:
            raise DataError(f"{source}, record {number}: the payload is cut short")
        parts += header + body
        if cflag in (0, 3):
            yield parts
            parts = b""


def split_records(stream: IO[bytes], spec: TransformSpec, source: str) -> Iterator[bytes]:
    if spec.split_type == "Line":
        return split_lines(stream)
    if spec.split_type == "RecordIO":
        return split_recordio(stream, source)
    return iter([stream.read()])


def batches(records: Iterator[bytes], spec: TransformSpec) -> Iterator[tuple[bytes, int]]:
    """Request bodies and their record counts, per the batch strategy and payload limit."""
    limit = int(spec.max_payload_mb * 1024 * 1024)
    body: list[bytes] = []
    size = 0
    for record in records:
        if spec.batch_strategy == "SingleRecord" or (body and size + len(record) > limit):
            if body:
                yield b"".join(body), len(body)
            body, size = [], 0
        body.append(record)
        size += len(record)
    if body:
        yield b"".join(body), len(body)


def transform_file(model: KnnModel, stream: IO[bytes], out: IO[bytes], spec: TransformSpec,
                   source: str, progress: Progress) -> None:
    """Answer one input file into one output stream."""
    done = 0
    for body, count in batches(split_records(stream, spec, source), spec):
        try:
            answer, _ = invoke(model, body, spec.content_type, spec.accept)
        except OpenKnnError as exc:
            raise type(exc)(f"{source}, records {done + 1}-{done + count}: {exc}") from None
        if spec.assemble_with == "Line" and not answer.endswith(b"\n"):
            answer += b"\n"
        out.write(answer)
        done += count
        progress.update(count)


def run(model: KnnModel, input_location: str, output_dir: Path, spec: TransformSpec,
        ) -> list[Path]:
    """Transform every file of ``input_location`` into ``output_dir/<name>.out``, holding
    ``output_dir`` throughout (a second job writing there fails at once)."""
    spec.check()
    files = list_channel(input_location)
    if not files:
        raise ClientError(f"Transform input {input_location!r} has no files")
    targets = [output_dir / f"{file.name}.out" for file in files]
    written = []
    started = time.time()
    with outputs.hold_output(output_dir), Progress("transform") as progress:
        outputs.sweep_temporaries(output_dir, {t.name for t in targets}, started)
        for file, target in zip(files, targets):
            # a failed file leaves no half-written .out (umask honoured, as open() does)
            with open_binary(file) as stream, outputs.atomic_file(target) as out:
                transform_file(model, stream, out, spec, file.uri, progress)
            written.append(target)
    log.info("Transformed %d records from %d files in %.1f s", progress.records, len(files),
             progress.elapsed)
    return written

