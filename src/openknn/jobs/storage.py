"""Where channel data lives: list the files of a location (a local path, ``file://`` or
``s3://``) and open them as binary streams."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any
from urllib.parse import unquote, urlparse

from ..errors import ChannelError, MissingExtraError


@dataclass(frozen=True)
class DataFile:
    """One file of a channel: where it is and how big it is."""

    uri: str
    size: int

    @property
    def name(self) -> str:
        return self.uri.rstrip("/").rsplit("/", 1)[-1]


def _local_path(location: str) -> Path | None:
    parsed = urlparse(location)
    if parsed.scheme == "file":
        return Path(unquote(parsed.path))
    if parsed.scheme in ("", ) or (len(parsed.scheme) == 1 and os.name == "nt"):
        return Path(location)
    return None


def _hidden(path: Path, root: Path) -> bool:
    # SageMaker SDK writes `.amazon.manifest` beside the shards; dot files are never data.
    return any(part.startswith(".") for part in path.relative_to(root).parts)


def _list_local(root: Path, location: str) -> list[DataFile]:
    if not root.exists():
        raise ChannelError(
            f"Channel location {location!r} does not exist; give a directory or file that "
            "holds the channel's data"
        )
    if not root.is_dir():  # a file, or a Pipe-mode FIFO
        return [DataFile(str(root), root.stat().st_size)]
    files = sorted(p for p in root.rglob("*") if p.is_file() and not _hidden(p, root))
    return [DataFile(str(p), p.stat().st_size) for p in files]


def _fsspec() -> Any:
    try:
        import fsspec
    except ImportError:
        raise MissingExtraError("Reading s3:// channels", "s3", "fsspec") from None
    return fsspec


def _list_remote(location: str) -> list[DataFile]:
    fs, root = _fsspec().core.url_to_fs(location)
    protocol = location.split("://", 1)[0]
    if fs.isfile(root):
        return [DataFile(location, int(fs.size(root)))]
    found = fs.find(root, detail=True)
    out = []
    for path, info in sorted(found.items()):
        rel = path[len(root.rstrip("/")) + 1:]
        if any(part.startswith(".") for part in rel.split("/")) or info.get("type") != "file":
            continue
        out.append(DataFile(f"{protocol}://{path}", int(info.get("size", 0))))
    return out


def list_channel(location: str) -> list[DataFile]:
    """The data files of a channel location, in sorted key order (hidden files skipped)."""
    local = _local_path(location)
    files = _list_local(local, location) if local is not None else _list_remote(location)
    return files


def open_binary(file: DataFile) -> IO[bytes]:
    """Open one channel file for reading raw bytes (decompression is the codec's job)."""
    local = _local_path(file.uri)
    if local is not None:
        try:
            return open(local, "rb")
        except OSError as exc:
            raise ChannelError(f"Cannot open channel file {file.uri!r}: {exc.strerror}") from None
    result: IO[bytes] = _fsspec().open(file.uri, "rb").open()
    return result
