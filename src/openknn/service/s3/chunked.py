"""Request bodies as S3 reads them: ``aws-chunked`` framing removed, and every digest the
request declares checked as the bytes stream past, so a body is never held in memory.

Observed with botocore 1.43 on plain ``http://``: PutObject and UploadPart send the body as is,
with ``x-amz-checksum-crc32`` and the payload's hex SHA-256 in ``X-Amz-Content-SHA256``.
Over https (and from other SDKs) the body is ``Content-Encoding: aws-chunked``: hex-sized
chunks (``;chunk-signature=`` when signed), a zero chunk, then trailer lines such as
``x-amz-checksum-crc32:...`` named by ``x-amz-trailer``; ``x-amz-decoded-content-length`` is
the object's length. Both forms are read here. Signatures are not checked (a local store);
digests are, since a mismatch means a corrupt upload.

CRC32C and CRC64NVME need a native library (botocore itself needs awscrt for them); where
none is installed their values are stored unverified."""

from __future__ import annotations

import base64
import binascii
import hashlib
import zlib
from collections.abc import Mapping
from typing import Protocol

from openknn.service.s3.codes import S3Error

MAX_LINE = 8192  # a chunk-size or trailer line longer than this is not aws-chunked framing
ALGORITHMS = ("crc32", "crc32c", "sha1", "sha256", "crc64nvme")


class _Hash(Protocol):
    def update(self, data: bytes, /) -> None: ...
    def digest(self) -> bytes: ...


class _Crc32:
    """zlib's CRC32 behind hashlib's interface; S3 sends its 4 big-endian bytes in base64."""

    def __init__(self) -> None:
        self.value = 0

    def update(self, data: bytes, /) -> None:
        self.value = zlib.crc32(data, self.value)

    def digest(self) -> bytes:
        return self.value.to_bytes(4, "big")


def _crc32c() -> _Hash | None:
    try:
        from awscrt import checksums
    except ImportError:
        return None

    class _Crc32c:
        def __init__(self) -> None:
            self.value = 0

        def update(self, data: bytes, /) -> None:
            self.value = checksums.crc32c(data, self.value)

        def digest(self) -> bytes:
            return int(self.value).to_bytes(4, "big")

    return _Crc32c()


def new_hash(algorithm: str) -> _Hash | None:
    """A running hash for one of ``ALGORITHMS``, or None where it cannot be computed here."""
    if algorithm == "crc32":
        return _Crc32()
    if algorithm in ("sha1", "sha256"):
        return hashlib.new(algorithm)
    if algorithm == "crc32c":
        return _crc32c()
    return None


def _b64(value: str, what: str, code: str = "InvalidDigest") -> bytes:
    try:
        return base64.b64decode(value.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise S3Error(code, f"The {what} you specified was invalid.") from None


class BodyReader:
    """Decodes and checks one request body. ``feed`` takes the bytes as they arrive and returns
    the object's bytes; ``finish`` checks the length and every digest, and raises the S3 error
    a mismatch gets. ``md5`` (hex) is the simple PUT's ETag; ``checksums`` the verified or
    declared ``x-amz-checksum-*`` values (base64), to store and echo."""

    def __init__(self, headers: Mapping[str, str]) -> None:
        self.headers = headers
        encoding = [e.strip().lower() for e in headers.get("content-encoding", "").split(",")]
        sha = headers.get("x-amz-content-sha256", "")
        self.chunked = "aws-chunked" in encoding or sha.upper().startswith("STREAMING-")
        self.decoded_length: int | None = None
        if self.chunked:
            raw = headers.get("x-amz-decoded-content-length")
            if raw is None:
                raise S3Error("MissingContentLength",
                              "You must provide the Content-Length HTTP header.")
            try:
                self.decoded_length = int(raw)
            except ValueError:
                raise S3Error("InvalidArgument", "x-amz-decoded-content-length is not a "
                              "number.") from None
        self._md5 = hashlib.md5()
        self._sha256 = None
        self._expected_sha256: str | None = None
        if len(sha) == 64 and not self.chunked:
            self._expected_sha256 = sha.lower()
            self._sha256 = hashlib.sha256()
        self._hashes: dict[str, _Hash | None] = {}
        self.trailer_names = {n.strip().lower() for n in
                              headers.get("x-amz-trailer", "").split(",") if n.strip()}
        declared = {n.rpartition("-")[2] for n in self.trailer_names
                    if n.startswith("x-amz-checksum-")}
        for algorithm in ALGORITHMS:
            if f"x-amz-checksum-{algorithm}" in headers or algorithm in declared:
                self._hashes[algorithm] = new_hash(algorithm)
        self.trailers: dict[str, str] = {}
        self.size = 0
        # aws-chunked state: "size" (reading a size line), "data", "crlf", "trailer", "done"
        self._state = "size"
        self._line = b""
        self._left = 0

    def feed(self, raw: bytes) -> bytes:
        data = self._decode(raw) if self.chunked else raw
        if data:
            self.size += len(data)
            self._md5.update(data)
            if self._sha256 is not None:
                self._sha256.update(data)
            for h in self._hashes.values():
                if h is not None:
                    h.update(data)
        return data

    def _decode(self, raw: bytes) -> bytes:
        out = bytearray()
        view = memoryview(raw)
        i = 0
        while i < len(view):
            if self._state == "data":
                take = min(self._left, len(view) - i)
                out += view[i:i + take]
                i += take
                self._left -= take
                if self._left == 0:
                    self._state = "crlf"
                continue
            if self._state == "done":
                if bytes(view[i:]).strip():
                    raise S3Error("InvalidRequest", "Data after the final aws-chunked chunk.")
                break
            # line-oriented states: size, crlf, trailer
            end = raw.find(b"\n", i)
            if end < 0:
                self._line += raw[i:]
                if len(self._line) > MAX_LINE:
                    raise S3Error("InvalidRequest", "Malformed aws-chunked body.")
                break
            line = (self._line + raw[i:end]).rstrip(b"\r")
            self._line = b""
            i = end + 1
            self._line_done(line)
        return bytes(out)

    def _line_done(self, line: bytes) -> None:
        if self._state == "crlf":
            if line:
                raise S3Error("InvalidRequest", "Malformed aws-chunked body: a chunk is longer "
                              "than its declared size.")
            self._state = "size"
        elif self._state == "size":
            size = line.split(b";", 1)[0].strip()
            try:
                self._left = int(size, 16)
            except ValueError:
                raise S3Error("InvalidRequest", "Malformed aws-chunked chunk size.") from None
            if self._left < 0:
                raise S3Error("InvalidRequest", "Malformed aws-chunked chunk size.")
            self._state = "data" if self._left else "trailer"
        elif self._state == "trailer":
            if not line:
                self._state = "done"
                return
            name, sep, value = line.decode("latin-1").partition(":")
            if not sep:
                raise S3Error("InvalidRequest", "Malformed aws-chunked trailer.")
            self.trailers[name.strip().lower()] = value.strip()

    def finish(self) -> None:
        """Every check of a whole body; raises S3Error on the first that fails."""
        if self.chunked:
            if self._state == "trailer" and self._line.strip():  # a last line without "\n"
                self._line_done(self._line.rstrip(b"\r"))
                self._line = b""
            if self._state not in ("trailer", "done"):
                raise S3Error("IncompleteBody", "You did not provide the number of bytes "
                              "specified by the Content-Length HTTP header.")
            if self.decoded_length is not None and self.size != self.decoded_length:
                raise S3Error("IncompleteBody", "You did not provide the number of bytes "
                              "specified by the x-amz-decoded-content-length HTTP header.")
        md5 = self.headers.get("content-md5")
        if md5 is not None:
            want = _b64(md5, "Content-MD5")
            if len(want) != 16:
                raise S3Error("InvalidDigest", "The Content-MD5 you specified was invalid.")
            if want != self._md5.digest():
                raise S3Error("BadDigest", "The Content-MD5 you specified did not match what "
                              "we received.")
        if self._sha256 is not None and self._sha256.hexdigest() != self._expected_sha256:
            raise S3Error("XAmzContentSHA256Mismatch", "The provided 'x-amz-content-sha256' "
                          "header does not match what was computed.")
        for algorithm, h in self._hashes.items():
            name = f"x-amz-checksum-{algorithm}"
            value = self.headers.get(name) or self.trailers.get(name)
            if value is None:
                raise S3Error("InvalidRequest", f"The {name} trailer was declared but not sent.")
            want = _b64(value, algorithm.upper(), "InvalidRequest")
            if h is not None and want != h.digest():
                raise S3Error("BadDigest", f"The {algorithm.upper()} you specified did not "
                              "match the calculated checksum.")

    @property
    def md5(self) -> str:
        return self._md5.hexdigest()

    @property
    def checksums(self) -> dict[str, str]:
        """``x-amz-checksum-<algorithm>`` -> base64 value, as sent (and, where computable,
        verified by ``finish``)."""
        found: dict[str, str] = {}
        for algorithm in self._hashes:
            name = f"x-amz-checksum-{algorithm}"
            value = self.headers.get(name) or self.trailers.get(name)
            if value is not None:
                found[name] = value.strip()
        return found

