"""The on-disk object store: buckets, objects and multipart uploads as files under one root,
pure Python and no HTTP, raising ``S3Error`` with the codes S3 answers.

Layout under ``root``::

    <bucket>/bucket.json            creation time and region
    <bucket>/lock                   flock'ed around every change to the index or uploads
    <bucket>/blobs/<uuid>           object and part bytes, written once, never renamed
    <bucket>/index/<seg>.d/.../<seg>.o  one sidecar (JSON) per object: key, size, ETag,
                                    Last-Modified, Content-Type, x-amz-meta-*, blob name
    <bucket>/uploads/<id>/upload.json, <n>.json  a multipart upload and its parts

Why this layout. S3 keys are not paths: ``a`` and ``a/b`` coexist. Each ``/``-separated
segment of a key is percent-encoded (only ``[A-Za-z0-9._~-]`` kept) and given a suffix, ``.o``
for the object that ends there and ``.d`` for the folder of longer keys, so the object ``a``
(``a.o``) and the folder holding ``a/b`` (``a.d/b.o``) never collide, no segment can name
``.``, ``..`` or a temporary file (``*.tmp``), and the encoding is reversible, so listing needs
no separate index: a folder's entries sorted as ``segment`` (objects) and ``segment/``
(folders) come out in S3's UTF-8 byte order, and a listing descends only into folders its
prefix and marker can reach. A key segment must encode to at most 240 bytes (the file system's
name limit; real S3 limits only the whole key, to 1024 bytes) — a departure, KeyTooLongError.

Why sidecars point at blobs. The bytes are written to a fresh blob (fsync'ed) outside any lock,
however large; the object appears when its sidecar, written to a temporary file in the same
folder and fsync'ed, is renamed over the old one under the bucket lock. A reader therefore
sees the old object or the new one whole, concurrent writers of one key leave exactly one (the
last rename), and the replaced blob is deleted under the lock (a reader that already opened it
keeps reading it; one that lost the race re-reads the sidecar). A crash between the blob and the
rename leaves an unreferenced blob, never a half object.

Memory is bounded by ``BLOCK``: bytes move between files and sockets a block at a time."""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import re
import shutil
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any
from urllib.parse import unquote

from openknn.service.s3.codes import S3Error, no_such_bucket, no_such_key, no_such_upload

BLOCK = 1 << 20
MIN_PART_SIZE = 5 << 20  # S3's smallest part (all but the last)
MAX_PART_NUMBER = 10000
MAX_KEY_BYTES = 1024
MAX_SEGMENT_BYTES = 240
_SAFE = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.~")
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_IP = re.compile(r"^\d+\.\d+\.\d+\.\d+$")
_UPLOAD_ID = re.compile(r"^[0-9a-f]{32}$")
_READ_RETRIES = 5


def bucket_name_error(name: str) -> str | None:
    """Why S3 would refuse ``name`` as a new bucket's name (general purpose buckets), or None."""
    if not _BUCKET.match(name):
        return ("Bucket names are 3 to 63 characters of lowercase letters, digits, '.' and "
                "'-', beginning and ending with a letter or digit.")
    if ".." in name or ".-" in name or "-." in name:
        return "Bucket names must not contain two adjacent periods or a period next to '-'."
    if _IP.match(name):
        return "Bucket names must not be formatted as an IP address."
    if name.startswith(("xn--", "sthree-", "amzn-s3-demo-")) or name.endswith(
            ("-s3alias", "--ol-s3", ".mrap", "--x-s3", "--table-s3")):
        return "Bucket names must not use a prefix or suffix S3 reserves."
    return None


def _encode(segment: str) -> str:
    return "".join(chr(b) if b in _SAFE else f"%{b:02X}" for b in segment.encode("utf-8"))


def _decode(name: str) -> str:
    return unquote(name, encoding="utf-8", errors="strict")


def key_segments(key: str) -> list[str]:
    """``key`` split at ``/`` and encoded, or the S3 error that refuses it: empty, too long,
    NUL, absolute (a leading ``/``) or a ``..`` segment — keys that could name a path outside
    the store in any tool that maps keys to files."""
    if not key:
        raise S3Error("InvalidArgument", "An object key must not be empty.")
    try:
        raw = key.encode("utf-8")
    except UnicodeEncodeError:
        raise S3Error("InvalidArgument", "An object key must be valid UTF-8.") from None
    if len(raw) > MAX_KEY_BYTES:
        raise S3Error("KeyTooLongError", "Your key is too long.")
    if "\x00" in key or key.startswith("/") or ".." in key.split("/"):
        raise S3Error("InvalidArgument", "This store refuses object keys with a NUL, a "
                      "leading '/' or a '..' segment.", Key=key)
    encoded = [_encode(s) for s in key.split("/")]
    if any(len(e) > MAX_SEGMENT_BYTES for e in encoded):
        raise S3Error("KeyTooLongError", f"Each '/'-separated part of a key must encode to at "
                      f"most {MAX_SEGMENT_BYTES} bytes in this store.", Key=key)
    return encoded


@dataclass(frozen=True)
class BucketInfo:
    name: str
    created: float
    region: str


@dataclass(frozen=True)
class ObjectInfo:
    """One object's sidecar. ``etag`` is unquoted (the app adds S3's quotes); ``headers`` the
    stored Content-Encoding / Content-Disposition / Cache-Control / Content-Language / Expires;
    ``checksums`` the ``x-amz-checksum-*`` values sent with it."""

    key: str
    size: int
    etag: str
    last_modified: float
    blob: str
    content_type: str = "binary/octet-stream"
    metadata: dict[str, str] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    checksums: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"key": self.key, "size": self.size, "etag": self.etag,
                "last_modified": self.last_modified, "blob": self.blob,
                "content_type": self.content_type, "metadata": self.metadata,
                "headers": self.headers, "checksums": self.checksums}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ObjectInfo:
        return cls(key=str(data["key"]), size=int(data["size"]), etag=str(data["etag"]),
                   last_modified=float(data["last_modified"]), blob=str(data["blob"]),
                   content_type=str(data.get("content_type", "binary/octet-stream")),
                   metadata=dict(data.get("metadata", {})), headers=dict(data.get("headers", {})),
                   checksums=dict(data.get("checksums", {})))


@dataclass(frozen=True)
class PartInfo:
    number: int
    etag: str
    size: int
    last_modified: float
    blob: str


@dataclass(frozen=True)
class UploadInfo:
    upload_id: str
    key: str
    initiated: float
    content_type: str
    metadata: dict[str, str]
    headers: dict[str, str]


@dataclass(frozen=True)
class Marker:
    """Where a listing resumes: after ``value``, and when ``is_prefix``, after every key that
    starts with it (a common prefix already returned)."""

    value: str
    is_prefix: bool = False

    def excludes(self, key: str) -> bool:
        return key <= self.value or (self.is_prefix and key.startswith(self.value))


@dataclass
class Listing:
    objects: list[ObjectInfo]
    prefixes: list[str]
    truncated: bool
    next_marker: Marker | None


class BlobWriter:
    """A new blob being written: ``write`` blocks, ``finish`` fsyncs and closes it,
    ``discard`` removes it. Its name is referenced only once a sidecar commits it."""

    def __init__(self, blobs: Path) -> None:
        self.name = uuid.uuid4().hex
        self.path = blobs / self.name
        try:
            self._file: IO[bytes] = open(self.path, "xb")  # noqa: SIM115 - closed by finish
        except FileNotFoundError:
            raise S3Error("NoSuchBucket", "The specified bucket does not exist") from None

    def write(self, data: bytes) -> None:
        self._file.write(data)

    def finish(self) -> None:
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()

    def discard(self) -> None:
        self._file.close()
        with _quiet():
            self.path.unlink()


@contextmanager
def _quiet() -> Iterator[None]:
    try:
        yield
    except FileNotFoundError:
        pass


@contextmanager
def _quiet_s3(code: str) -> Iterator[None]:
    try:
        yield
    except S3Error as e:
        if e.code != code:
            raise


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_json(path: Path, data: dict[str, Any]) -> None:
    """``data`` as ``path``, atomically: a temporary file in the same folder, fsync, rename."""
    tmp = path.parent / f"{uuid.uuid4().hex}.tmp"
    try:
        with open(tmp, "xb") as f:
            f.write(json.dumps(data, ensure_ascii=False).encode("utf-8"))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with _quiet():
            tmp.unlink()
        raise
    _fsync_dir(path.parent)


def _read_json(path: Path) -> dict[str, Any]:
    with open(path, "rb") as f:
        data = json.loads(f.read())
    if not isinstance(data, dict):
        raise ValueError(f"not a JSON object: {path}")
    return data


class Store:
    """The store under ``root`` (created if missing). Thread-safe and safe across processes
    sharing ``root`` (changes hold an in-process lock and the bucket's ``flock``)."""

    def __init__(self, root: str | os.PathLike[str], *, min_part_size: int = MIN_PART_SIZE):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.min_part_size = min_part_size
        self._lock = threading.Lock()

    # -- buckets -------------------------------------------------------------------------

    def _bucket_dir(self, bucket: str) -> Path:
        """The folder of an existing bucket; NoSuchBucket for any name that is not one
        (invalid names included, so no name reaches the file system unchecked)."""
        if bucket_name_error(bucket) is None:
            path = self.root / bucket
            if (path / "bucket.json").is_file():
                return path
        raise no_such_bucket(bucket)

    @contextmanager
    def _locked(self, bucket: str) -> Iterator[Path]:
        path = self._bucket_dir(bucket)
        with self._lock:
            try:
                fd = os.open(path / "lock", os.O_RDWR | os.O_CREAT, 0o644)
            except FileNotFoundError:
                raise no_such_bucket(bucket) from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                if not (path / "bucket.json").is_file():  # deleted while we waited
                    raise no_such_bucket(bucket)
                yield path
            finally:
                os.close(fd)

    def list_buckets(self) -> list[BucketInfo]:
        found = []
        for entry in sorted(os.listdir(self.root)):
            if bucket_name_error(entry) is None:
                with _quiet():
                    data = _read_json(self.root / entry / "bucket.json")
                    found.append(BucketInfo(entry, float(data["created"]),
                                            str(data.get("region", "us-east-1"))))
        return found

    def head_bucket(self, bucket: str) -> BucketInfo:
        path = self._bucket_dir(bucket)
        try:
            data = _read_json(path / "bucket.json")
        except FileNotFoundError:
            raise no_such_bucket(bucket) from None
        return BucketInfo(bucket, float(data["created"]), str(data.get("region", "us-east-1")))

    def create_bucket(self, bucket: str, region: str = "us-east-1") -> bool:
        """Create ``bucket``; False where it exists and S3 answers success (us-east-1's legacy
        rule for a bucket its owner re-creates there); BucketAlreadyOwnedByYou elsewhere. One
        owner per store, so BucketAlreadyExists (someone else's) never happens here."""
        reason = bucket_name_error(bucket)
        if reason is not None:
            raise S3Error("InvalidBucketName", f"The specified bucket is not valid. {reason}",
                          BucketName=bucket)
        tmp = self.root / f".tmp-{uuid.uuid4().hex}"
        for sub in ("index", "blobs", "uploads"):
            (tmp / sub).mkdir(parents=True)
        _write_json(tmp / "bucket.json", {"created": time.time(), "region": region})
        try:
            os.rename(tmp, self.root / bucket)
        except OSError as e:
            shutil.rmtree(tmp, ignore_errors=True)
            if e.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                raise
            existing = self.head_bucket(bucket)
            if existing.region == "us-east-1" and region == "us-east-1":
                return False
            raise S3Error("BucketAlreadyOwnedByYou", "Your previous request to create the "
                          "named bucket succeeded and you already own it.",
                          BucketName=bucket) from None
        _fsync_dir(self.root)
        return True

    def delete_bucket(self, bucket: str) -> None:
        """Delete an empty bucket (its unfinished multipart uploads go with it)."""
        with self._locked(bucket) as path:
            if next(self._walk(path / "index", "", "", None, None), None) is not None:
                raise S3Error("BucketNotEmpty", "The bucket you tried to delete is not empty",
                              BucketName=bucket)
            trash = self.root / f".trash-{uuid.uuid4().hex}"
            os.rename(path, trash)
        shutil.rmtree(trash, ignore_errors=True)

    # -- objects -------------------------------------------------------------------------

    def new_blob(self, bucket: str) -> BlobWriter:
        return BlobWriter(self._bucket_dir(bucket) / "blobs")

    def _sidecar(self, path: Path, segments: list[str]) -> Path:
        return path.joinpath("index", *(s + ".d" for s in segments[:-1]), segments[-1] + ".o")

    def commit_object(self, bucket: str, key: str, blob: BlobWriter, *, size: int, etag: str,
                      content_type: str | None = None, metadata: dict[str, str] | None = None,
                      headers: dict[str, str] | None = None,
                      checksums: dict[str, str] | None = None,
                      upload_id: str | None = None) -> ObjectInfo:
        """Make the finished ``blob`` the object ``key``, replacing any object there (only
        while the multipart upload ``upload_id``, where given, still exists)."""
        segments = key_segments(key)
        info = ObjectInfo(key=key, size=size, etag=etag, last_modified=time.time(),
                          blob=blob.name, content_type=content_type or "binary/octet-stream",
                          metadata=metadata or {}, headers=headers or {},
                          checksums=checksums or {})
        with self._locked(bucket) as path:
            if not blob.path.exists() or blob.path.parent != path / "blobs":
                raise no_such_bucket(bucket)  # deleted (and perhaps re-created) meanwhile
            if upload_id is not None:
                self._upload_dir(path, upload_id)
            sidecar = self._sidecar(path, segments)
            sidecar.parent.mkdir(parents=True, exist_ok=True)
            old = self._read_info(sidecar)
            _write_json(sidecar, info.to_json())
            if old is not None and old.blob != info.blob:
                with _quiet():
                    (path / "blobs" / old.blob).unlink()
        return info

    @staticmethod
    def _read_info(sidecar: Path) -> ObjectInfo | None:
        try:
            return ObjectInfo.from_json(_read_json(sidecar))
        except (FileNotFoundError, NotADirectoryError):
            return None

    def head_object(self, bucket: str, key: str) -> ObjectInfo:
        path = self._bucket_dir(bucket)
        info = self._read_info(self._sidecar(path, key_segments(key)))
        if info is None:
            raise no_such_key(key)
        return info

    def open_object(self, bucket: str, key: str) -> tuple[ObjectInfo, IO[bytes]]:
        """The object's sidecar and its bytes, opened: the pair stays consistent even if the
        object is replaced or deleted while the caller reads."""
        path = self._bucket_dir(bucket)
        sidecar = self._sidecar(path, key_segments(key))
        for _ in range(_READ_RETRIES):
            info = self._read_info(sidecar)
            if info is None:
                raise no_such_key(key)
            try:
                return info, open(path / "blobs" / info.blob, "rb")  # noqa: SIM115
            except FileNotFoundError:
                continue  # replaced between the two reads: read the new sidecar
        raise S3Error("InternalError", "The object kept changing while it was read.")

    def delete_object(self, bucket: str, key: str) -> None:
        """Delete ``key``; a missing key is no error (S3 answers 204 either way)."""
        segments = key_segments(key)
        with self._locked(bucket) as path:
            sidecar = self._sidecar(path, segments)
            info = self._read_info(sidecar)
            if info is None:
                return
            sidecar.unlink()
            with _quiet():
                (path / "blobs" / info.blob).unlink()
            folder, index = sidecar.parent, path / "index"
            while folder != index:  # prune folders left empty (under the lock: no writer races)
                try:
                    folder.rmdir()
                except OSError:
                    break
                folder = folder.parent

    def copy_object(self, src_bucket: str, src_key: str, bucket: str, key: str, *,
                    replace: ObjectInfo | None = None) -> ObjectInfo:
        """Copy an object; its metadata too, or ``replace``'s (metadata, content type and
        headers) where the request says REPLACE. The copy's ETag is its bytes' MD5."""
        key_segments(key)
        info, src = self.open_object(src_bucket, src_key)
        blob = self.new_blob(bucket)
        md5 = hashlib.md5()
        try:
            with src:
                while chunk := src.read(BLOCK):
                    md5.update(chunk)
                    blob.write(chunk)
            blob.finish()
        except BaseException:
            blob.discard()
            raise
        meta = replace if replace is not None else info
        try:
            return self.commit_object(bucket, key, blob, size=info.size, etag=md5.hexdigest(),
                                      content_type=meta.content_type, metadata=meta.metadata,
                                      headers=meta.headers, checksums=info.checksums)
        except BaseException:
            blob.discard()
            raise

    # -- listing -------------------------------------------------------------------------

    def _walk(self, folder: Path, base: str, prefix: str, marker: Marker | None,
              delimiter: str | None) -> Iterator[tuple[str, str, Path]]:
        """("K", key, sidecar) and ("P", common prefix, folder) in S3's order, from ``folder``
        (holding the keys that start with ``base``). Common prefixes may repeat; the caller
        drops repeats. Subtrees no key of which can be listed are not read."""
        try:
            names = os.listdir(folder)
        except (FileNotFoundError, NotADirectoryError):
            return
        entries: list[tuple[str, bool, str]] = []
        for name in names:
            if name.endswith(".o"):
                entries.append((base + _decode(name[:-2]), False, name))
            elif name.endswith(".d"):
                entries.append((base + _decode(name[:-2]) + "/", True, name))
        entries.sort()
        for full, is_folder, name in entries:
            if not is_folder:
                if not full.startswith(prefix) or (marker and marker.excludes(full)):
                    continue
                common = self._common(full, prefix, delimiter)
                if common is not None:
                    yield "P", common, folder
                else:
                    yield "K", full, folder / name
                continue
            if not (full.startswith(prefix) or prefix.startswith(full)):
                continue
            if marker and ((marker.is_prefix and full.startswith(marker.value))
                           or (full < marker.value and not marker.value.startswith(full))):
                continue  # every key in it is at or before the marker
            common = self._common(full, prefix, delimiter) if full.startswith(prefix) else None
            if common is not None and (marker is None or full > marker.value):
                yield "P", common, folder
            else:
                yield from self._walk(folder / name, full, prefix, marker, delimiter)

    @staticmethod
    def _common(name: str, prefix: str, delimiter: str | None) -> str | None:
        if not delimiter:
            return None
        at = name.find(delimiter, len(prefix))
        return None if at < 0 else name[:at + len(delimiter)]

    def list_objects(self, bucket: str, *, prefix: str = "", delimiter: str | None = None,
                     marker: Marker | None = None, max_keys: int = 1000) -> Listing:
        """One page of ListObjects: keys and common prefixes (``max_keys`` of both together)
        after ``marker``, in UTF-8 byte order (Python's ``str`` order is code-point order,
        which is the same)."""
        path = self._bucket_dir(bucket)
        objects: list[ObjectInfo] = []
        prefixes: list[str] = []
        last: Marker | None = None
        truncated = False
        for kind, value, where in self._walk(path / "index", "", prefix, marker, delimiter):
            if kind == "P" and prefixes and prefixes[-1] == value:
                continue
            if len(objects) + len(prefixes) >= max_keys:
                truncated = True
                break
            if kind == "P":
                prefixes.append(value)
                last = Marker(value, is_prefix=True)
            else:
                info = self._read_info(where)
                if info is not None:  # deleted since the folder was read
                    objects.append(info)
                    last = Marker(value)
        return Listing(objects, prefixes, truncated, last if truncated else None)

    # -- multipart uploads ---------------------------------------------------------------

    def _upload_dir(self, path: Path, upload_id: str) -> Path:
        folder = path / "uploads" / upload_id
        if not _UPLOAD_ID.match(upload_id) or not (folder / "upload.json").is_file():
            raise no_such_upload(upload_id)
        return folder

    def create_upload(self, bucket: str, key: str, *, content_type: str | None = None,
                      metadata: dict[str, str] | None = None,
                      headers: dict[str, str] | None = None) -> str:
        key_segments(key)
        upload_id = uuid.uuid4().hex
        with self._locked(bucket) as path:
            folder = path / "uploads" / upload_id
            folder.mkdir()
            _write_json(folder / "upload.json", {
                "key": key, "initiated": time.time(),
                "content_type": content_type or "binary/octet-stream",
                "metadata": metadata or {}, "headers": headers or {}})
        return upload_id

    def get_upload(self, bucket: str, key: str, upload_id: str) -> UploadInfo:
        folder = self._upload_dir(self._bucket_dir(bucket), upload_id)
        try:
            data = _read_json(folder / "upload.json")
        except FileNotFoundError:
            raise no_such_upload(upload_id) from None
        if data["key"] != key:
            raise no_such_upload(upload_id)
        return UploadInfo(upload_id, key, float(data["initiated"]), str(data["content_type"]),
                          dict(data["metadata"]), dict(data["headers"]))

    @staticmethod
    def check_part_number(number: int) -> None:
        if not 1 <= number <= MAX_PART_NUMBER:
            raise S3Error("InvalidArgument", "Part number must be an integer between 1 and "
                          f"{MAX_PART_NUMBER}, inclusive", ArgumentName="partNumber",
                          ArgumentValue=str(number))

    def commit_part(self, bucket: str, key: str, upload_id: str, number: int,
                    blob: BlobWriter, *, size: int, etag: str) -> PartInfo:
        self.check_part_number(number)
        self.get_upload(bucket, key, upload_id)
        part = PartInfo(number, etag, size, time.time(), blob.name)
        with self._locked(bucket) as path:
            folder = self._upload_dir(path, upload_id)
            if not blob.path.exists():
                raise no_such_bucket(bucket)
            old = self._read_part(folder / f"{number}.json")
            _write_json(folder / f"{number}.json", part.__dict__)
            if old is not None:
                with _quiet():
                    (path / "blobs" / old.blob).unlink()
        return part

    @staticmethod
    def _read_part(path: Path) -> PartInfo | None:
        try:
            data = _read_json(path)
        except FileNotFoundError:
            return None
        return PartInfo(int(data["number"]), str(data["etag"]), int(data["size"]),
                        float(data["last_modified"]), str(data["blob"]))

    def list_parts(self, bucket: str, key: str, upload_id: str) -> list[PartInfo]:
        """Every uploaded part, by part number (the app pages them)."""
        self.get_upload(bucket, key, upload_id)
        folder = self._upload_dir(self._bucket_dir(bucket), upload_id)
        parts = []
        for name in os.listdir(folder):
            if name.endswith(".json") and name != "upload.json":
                part = self._read_part(folder / name)
                if part is not None:
                    parts.append(part)
        return sorted(parts, key=lambda p: p.number)

    def complete_upload(self, bucket: str, key: str, upload_id: str,
                        requested: list[tuple[int, str]]) -> ObjectInfo:
        """Join the ``requested`` (number, ETag) parts into the object ``key``: S3's checks
        (MalformedXML, InvalidPartOrder, InvalidPart, EntityTooSmall), then one new blob
        copied a block at a time, ETag the MD5 of the parts' MD5s and ``-N``."""
        upload = self.get_upload(bucket, key, upload_id)
        if not requested:
            raise S3Error("MalformedXML", "The XML you provided was not well-formed or did not "
                          "validate against our published schema")
        numbers = [n for n, _ in requested]
        if numbers != sorted(set(numbers)):
            raise S3Error("InvalidPartOrder", "The list of parts was not in ascending order. "
                          "Parts must be ordered by part number.", UploadId=upload_id)
        have = {p.number: p for p in self.list_parts(bucket, key, upload_id)}
        chosen = []
        for n, etag in requested:
            part = have.get(n)
            if part is None or etag.strip().strip('"') != part.etag:
                raise S3Error("InvalidPart", "One or more of the specified parts could not be "
                              "found.  The part may not have been uploaded, or the specified "
                              "entity tag may not have matched the part's entity tag.",
                              UploadId=upload_id, PartNumber=str(n), ETag=etag)
            chosen.append(part)
        for part in chosen[:-1]:
            if part.size < self.min_part_size:
                raise S3Error("EntityTooSmall", "Your proposed upload is smaller than the "
                              "minimum allowed object size.", UploadId=upload_id,
                              PartNumber=str(part.number))
        path = self._bucket_dir(bucket)
        blob = self.new_blob(bucket)
        md5s = hashlib.md5()
        size = 0
        try:
            for part in chosen:
                md5s.update(bytes.fromhex(part.etag))
                try:
                    src = open(path / "blobs" / part.blob, "rb")  # noqa: SIM115
                except FileNotFoundError:
                    raise S3Error("InvalidPart", "A part changed during completion.",
                                  UploadId=upload_id, PartNumber=str(part.number)) from None
                with src:
                    while chunk := src.read(BLOCK):
                        blob.write(chunk)
                        size += len(chunk)
            blob.finish()
            info = self.commit_object(
                bucket, key, blob, size=size, etag=f"{md5s.hexdigest()}-{len(chosen)}",
                content_type=upload.content_type, metadata=upload.metadata,
                headers=upload.headers, upload_id=upload_id)
        except BaseException:
            blob.discard()
            raise
        with _quiet_s3("NoSuchUpload"):  # aborted just after completing: the object stands
            self._drop_upload(bucket, upload_id)
        return info

    def abort_upload(self, bucket: str, key: str, upload_id: str) -> None:
        self.get_upload(bucket, key, upload_id)
        self._drop_upload(bucket, upload_id)

    def _drop_upload(self, bucket: str, upload_id: str) -> None:
        with self._locked(bucket) as path:
            folder = path / "uploads" / upload_id
            trash = path / "uploads" / f".trash-{uuid.uuid4().hex}"
            try:
                os.rename(folder, trash)
            except FileNotFoundError:
                raise no_such_upload(upload_id) from None
        for name in os.listdir(trash):
            if name.endswith(".json") and name != "upload.json":
                part = self._read_part(trash / name)
                if part is not None:
                    with _quiet():
                        (path / "blobs" / part.blob).unlink()
        shutil.rmtree(trash, ignore_errors=True)
