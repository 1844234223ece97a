"""Where data lives: list the files of a channel location (a local path, ``file://`` or
``s3://``; a prefix, or a SageMaker manifest that lists them) and open them as binary
streams; and the locations openknn writes to or loads a model from (a path, ``file://`` or,
staged and uploaded on success, ``s3://``)."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any
from urllib.parse import unquote, urlparse

from ..errors import ChannelError, ClientError, MissingExtraError
from .progress import Progress

URI = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)://")
PROGRESS_EVERY_S = 10.0  # an upload's log line, off a terminal
S3_PREFIX, MANIFEST_FILE = "S3Prefix", "ManifestFile"  # SageMaker's S3DataType values
DATA_TYPES = (S3_PREFIX, MANIFEST_FILE)


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


def is_remote(location: str | os.PathLike[str]) -> bool:
    """Whether ``location`` is an ``s3://`` URI (read through fsspec, the ``[s3]`` extra)."""
    uri = URI.match(os.fspath(location))
    return uri is not None and uri["scheme"].lower() == "s3"


def open_remote(location: str, what: str) -> tuple[IO[bytes], int]:
    """An ``s3://`` object opened for random-access reading, and its size; a missing bucket
    or key, access denied or an endpoint that does not answer is one ChannelError."""
    try:
        fs, path = _fsspec().core.url_to_fs(location)
        size = int(fs.size(path))
        stream: IO[bytes] = fs.open(path, "rb")
    except Exception as exc:
        error = remote_error(exc, location, what)
        if error is None:
            raise
        raise error from None
    return stream, size


def join(location: str | os.PathLike[str], name: str) -> str:
    """``name`` inside the directory or ``s3://`` prefix ``location``."""
    text = os.fspath(location)
    return f"{text.rstrip('/')}/{name}" if is_remote(text) else str(Path(text) / name)


def _remote_call(location: str, what: str, call: Any, *args: Any) -> Any:
    try:
        return call(*args)
    except Exception as exc:
        error = remote_error(exc, location, what)
        if error is None:
            raise
        raise error from None


def _remote_lookup(location: str, what: str, call: Any) -> Any:
    """``_remote_call`` for a read of one key: None where the key is missing (a missing
    bucket is still the user's error, named)."""
    def lookup() -> Any:
        try:
            return call()
        except FileNotFoundError as exc:
            if _no_such_bucket(exc, location):
                raise
            return None

    return _remote_call(location, what, lookup)


@contextlib.contextmanager
def staged_output(location: str | os.PathLike[str], what: str,
                  last: Sequence[str] = ()) -> Iterator[Path]:
    """The local directory a job writes ``location``'s files into. A local path or
    ``file://`` URI is that directory. For an ``s3://`` prefix, the bucket is checked first
    (a missing one fails before any work), the job writes into a private temporary
    directory, and only when it ends without an error is each file uploaded (s3fs: multipart
    for large files, aborted on failure), the names in ``last`` after the rest, so that
    ``model.tar.gz`` appears only beside its metrics. A job that fails uploads nothing."""
    text = os.fspath(location)
    if not is_remote(text):
        yield local_location(text, what)
        return
    fs, root = _fsspec().core.url_to_fs(text)
    bucket = root.split("/", 1)[0]
    if not _remote_call(text, what, fs.exists, bucket):
        raise ChannelError(f"{what} {text!r}: bucket {bucket!r} does not exist; create it "
                           f"(aws s3 mb s3://{bucket}) or correct the location")
    with tempfile.TemporaryDirectory(prefix="openknn-output-") as staging:
        yield Path(staging)
        files = sorted((p for p in Path(staging).rglob("*") if p.is_file()),
                       key=lambda p: (p.name in last, str(p)))
        for file in files:
            target = f"{root.rstrip('/')}/{file.relative_to(staging).as_posix()}"
            with Progress(f"uploading {file.name}", PROGRESS_EVERY_S,
                          total_bytes=file.stat().st_size) as shown:
                put = functools.partial(fs.put_file, callback=_shown_by(shown))
                _remote_call(text, what, put, str(file), target)


def _shown_by(progress: Progress) -> Any:
    """An fsspec callback (s3fs calls it once per part or block it sends) that moves
    ``progress`` on by the bytes sent."""
    from fsspec.callbacks import Callback

    class Shown(Callback):  # type: ignore[misc]
        def call(self, *args: Any, **kwargs: Any) -> None:
            progress.update(int(self.value) - progress.records)

    return Shown()


def local_location(location: str | os.PathLike[str], what: str) -> Path:
    """The local path of ``location``, a path or ``file://`` URI, where openknn writes ``what``
    (an output directory) or reads it (a model). Any other URI fails at once, before
    anything is written: ``Path("s3://bucket/out")`` is the local directory ``s3:/bucket/out``,
    and writing there would leave the user believing the model is in S3 (decision 35)."""
    text = os.fspath(location)
    uri = URI.match(text)
    if uri is None:
        return Path(text)
    parsed = urlparse(text)
    if uri["scheme"].lower() == "file" and parsed.netloc in ("", "localhost"):
        return Path(unquote(parsed.path))
    if uri["scheme"].lower() == "file":
        raise ClientError(f"{what} {text!r}: a file:// URI names a path on this machine, not on "
                          f"host {parsed.netloc!r}; write file:///absolute/path")
    if uri["scheme"].lower() == "s3":
        raise ClientError(f"{what} {text!r}: openknn takes this as a local path or file:// URI "
                          "only (s3:// is not supported here yet); give a local path. Nothing "
                          "was written")
    raise ClientError(f"{what} {text!r}: {uri['scheme']}:// is not a scheme openknn reads or "
                      "writes; give a local path or file:// URI. Nothing was written")


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


def remote_error(exc: Exception, location: str,
                 what: str = "Channel location") -> ChannelError | None:
    """The user's error a remote read failed with, as one line naming ``location`` and the
    fix (a missing bucket or key, access denied, no credentials, an endpoint that does not
    answer); None for anything else, which stays openknn's own fault."""
    bucket = urlparse(location).netloc
    kind = type(exc).__name__
    if _no_such_bucket(exc, location):
        return ChannelError(f"{what} {location!r}: bucket {bucket!r} does not exist; "
                            f"create it (aws s3 mb s3://{bucket}) or correct the location")
    if isinstance(exc, FileNotFoundError):
        return ChannelError(f"{what} {location!r} does not exist; give the prefix or object "
                            "that holds it")
    if isinstance(exc, PermissionError):
        return ChannelError(f"{what} {location!r}: access denied ({exc}); use "
                            f"credentials (AWS_PROFILE, AWS_ACCESS_KEY_ID) that may read bucket "
                            f"{bucket!r}, or renew them if they expired")
    if kind in ("NoCredentialsError", "PartialCredentialsError"):
        return ChannelError(f"{what} {location!r}: no AWS credentials were found "
                            f"({exc}); set AWS_PROFILE or AWS_ACCESS_KEY_ID and "
                            "AWS_SECRET_ACCESS_KEY")
    if kind in ("EndpointConnectionError", "ConnectTimeoutError", "ClientConnectorError") or (
            isinstance(exc, ConnectionError)):
        return ChannelError(f"{what} {location!r}: the S3 endpoint did not answer "
                            f"({exc}); check AWS_ENDPOINT_URL / AWS_ENDPOINT_URL_S3 and that "
                            "the server is running")
    return None


def _no_such_bucket(exc: Exception, location: str) -> bool:
    """Whether a FileNotFoundError says the bucket is missing (s3fs: "The specified bucket
    does not exist"), not a key: the location's own text, which may hold the word (bucket
    ``my-bucket``), is left out of the test."""
    if not isinstance(exc, FileNotFoundError):
        return False
    text = str(exc).lower()
    if "specified bucket" in text or "nosuchbucket" in text:
        return True
    for name in (location, urlparse(location).netloc, location.split("://", 1)[-1]):
        text = text.replace(name.lower(), "")
    return "bucket" in text


def _list_remote(location: str) -> list[DataFile]:
    try:
        return _find_remote(location)
    except Exception as exc:
        error = remote_error(exc, location)
        if error is None:
            raise
        raise error from None


def _find_remote(location: str) -> list[DataFile]:
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


def list_channel(location: str, data_type: str = S3_PREFIX) -> list[DataFile]:
    """The data files of a channel location: for ``S3Prefix`` (SageMaker's S3DataType) every
    file under it in sorted key order (hidden files skipped); for ``ManifestFile`` the
    files the manifest at ``location`` lists, in its order (``list_manifest``)."""
    if data_type == MANIFEST_FILE:
        return list_manifest(location)
    if data_type != S3_PREFIX:
        raise ChannelError(f"S3DataType {data_type!r} of channel location {location!r} is not "
                           f"one k-NN reads; give {S3_PREFIX} or {MANIFEST_FILE}")
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
    try:
        result: IO[bytes] = _fsspec().open(file.uri, "rb").open()
    except Exception as exc:
        error = remote_error(exc, file.uri)
        if error is None:
            raise
        raise error from None
    return result


# ---------------------------------------------------------------- ManifestFile channels

MANIFEST_LIMIT = 64 << 20  # bytes: a manifest is a list of keys, never data
MANIFEST_SHAPE = ('expected a JSON list like [{"prefix": "s3://bucket/prefix/"}, "key-1", '
                  '"key-2"], as the SageMaker SDK\'s record_set writes it')


def read_bytes(location: str, what: str, limit: int | None = None) -> bytes | None:
    """The bytes of a local file or ``s3://`` object (at most ``limit`` + 1 of them, so the
    caller can tell one over its limit), or None where nothing is there. A missing bucket,
    access denied or an endpoint that does not answer is one ChannelError naming ``what``."""
    local = _local_path(location)
    if local is not None:
        if not local.exists():
            return None
        try:
            with open(local, "rb") as f:
                return f.read(-1 if limit is None else limit + 1)
        except OSError as exc:
            raise ChannelError(f"Cannot read {what} {location!r}: {exc.strerror}; give a "
                               "readable file") from None
    def read() -> bytes:
        fs, path = _fsspec().core.url_to_fs(location)
        return bytes(fs.cat_file(path, start=0, end=None if limit is None else limit + 1))

    data: bytes | None = _remote_lookup(location, what, read)
    return data


def parse_manifest(data: bytes, location: str) -> tuple[str, list[str]]:
    """A SageMaker manifest's prefix and keys (``[{"prefix": P}, key, ...]``); anything else
    is one ChannelError saying what is wrong with it."""
    def malformed(reason: str) -> ChannelError:
        return ChannelError(f"Manifest {location!r} is not a SageMaker manifest: {reason}; "
                            f"{MANIFEST_SHAPE}")

    try:
        doc = json.loads(data)
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError alike
        raise malformed(f"it is not JSON ({exc})") from None
    if not isinstance(doc, list) or not doc:
        raise malformed(f"it is a JSON {type(doc).__name__}, not a list" if not
                        isinstance(doc, list) else "it is an empty list")
    head = doc[0]
    if not isinstance(head, dict) or not isinstance(head.get("prefix"), str) or (
            not head["prefix"]):
        raise malformed(f'its first element is {json.dumps(head)[:80]}, not {{"prefix": "..."}}')
    if len(doc) == 1:
        raise malformed("it lists no keys after the prefix")
    for number, key in enumerate(doc[1:], 2):
        if not isinstance(key, str) or not key:
            raise malformed(f"element {number} is {json.dumps(key)[:80]}, not a key string")
    return head["prefix"], doc[1:]


def list_manifest(location: str) -> list[DataFile]:
    """The files of a ``ManifestFile`` channel: the manifest at ``location`` (a local file,
    ``file://`` or ``s3://`` object) lists keys relative to its prefix, and each file is
    prefix + key (joined as SageMaker joins them, by concatenation), in the manifest's
    order. Every one must exist; the first missing one is named, with the manifest. A file
    listed twice is refused (decision 36): its records would be read twice, under one id."""
    local = _local_path(location)
    if local is not None and local.is_dir():
        raise ChannelError(f"Manifest {location!r} is a directory; a ManifestFile channel names "
                           "the manifest file itself, and a directory of data files is an "
                           "S3Prefix channel")
    data = read_bytes(location, "Manifest", MANIFEST_LIMIT)
    if data is None:
        raise ChannelError(f"Manifest {location!r} does not exist; a ManifestFile channel "
                           "names the manifest itself (e.g. s3://bucket/prefix/.amazon.manifest)"
                           ", not the prefix that holds it")
    if len(data) > MANIFEST_LIMIT:
        raise ChannelError(f"Manifest {location!r} is over {MANIFEST_LIMIT >> 20} MiB, too "
                           f"large for a list of keys; {MANIFEST_SHAPE}. For a prefix of data "
                           "files, give the channel as S3Prefix")
    prefix, keys = parse_manifest(data, location)
    files: dict[str, DataFile] = {}
    for key in keys:
        file = _listed_file(location, key, prefix + key)
        if file.uri in files:
            raise ChannelError(f"Manifest {location!r} lists {file.uri!r} twice (as {key!r}); "
                               "list each file once")
        files[file.uri] = file
    return list(files.values())


def _listed_file(manifest: str, key: str, uri: str) -> DataFile:
    missing = ChannelError(f"Manifest {manifest!r} lists {key!r}, but {uri!r} does not exist; "
                           "put the file there or remove the key from the manifest")
    local = _local_path(uri)
    if local is None:
        size = object_size(uri, "Manifest key")
    else:
        size = local.stat().st_size if local.is_file() else None
    if size is None:
        raise missing
    return DataFile(uri if local is None else str(local), size)


def require_bucket(location: str, what: str) -> None:
    """Fail now, before any work, when the bucket of the ``s3://`` ``location`` does not
    exist (as ``staged_output`` does on entry); nothing for a local location."""
    if not is_remote(location):
        return
    fs, root = _fsspec().core.url_to_fs(location)
    bucket = root.split("/", 1)[0]
    if not _remote_call(location, what, fs.exists, bucket):
        raise ChannelError(f"{what} {location!r}: bucket {bucket!r} does not exist; create it "
                           f"(aws s3 mb s3://{bucket}) or correct the location")


def object_size(location: str, what: str) -> int | None:
    """The size of the ``s3://`` object ``location``, or None where there is none (a key
    that is missing or only a prefix); a missing bucket, access denied or an endpoint that
    does not answer is one ChannelError naming ``what``."""
    def info() -> dict[str, Any]:
        fs, path = _fsspec().core.url_to_fs(location)
        return dict(fs.info(path))

    found: dict[str, Any] | None = _remote_lookup(location, what, info)
    if found is None or found.get("type") != "file":
        return None
    return int(found.get("size", 0))
