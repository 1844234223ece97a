"""The embedded S3 store without a client: aws-chunked decoding and checksums (the framing
botocore uses over https, which the conformance suite over http never sends), the on-disk
layout (``a`` beside ``a/b``, listing order, keys that would escape), concurrent writers, and
the app's answers to raw requests."""

from __future__ import annotations

import base64
import hashlib
import threading
import zlib
from pathlib import Path

import pytest

from openknn.service.s3.chunked import BodyReader
from openknn.service.s3.codes import S3Error
from openknn.service.s3.store import Marker, Store, key_segments


def crc32(data: bytes) -> str:
    return base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()


def chunked(data: bytes, size: int, trailer: str | None, signed: bool = False) -> bytes:
    out = b""
    sig = b";chunk-signature=" + b"0" * 64 if signed else b""
    for i in range(0, len(data), size):
        piece = data[i:i + size]
        out += b"%x%s\r\n%s\r\n" % (len(piece), sig, piece)
    out += b"0" + sig + b"\r\n"
    if trailer:
        out += trailer.encode() + b"\r\n"
    return out + b"\r\n"


DATA = bytes(range(256)) * 40


@pytest.mark.parametrize("step", [1, 5, 4096, 1 << 20])
def test_unsigned_trailer_form_is_decoded_and_checked(step: int) -> None:
    body = chunked(DATA, 1000, f"x-amz-checksum-crc32:{crc32(DATA)}")
    headers = {"content-encoding": "aws-chunked", "x-amz-trailer": "x-amz-checksum-crc32",
               "x-amz-decoded-content-length": str(len(DATA)),
               "x-amz-content-sha256": "STREAMING-UNSIGNED-PAYLOAD-TRAILER"}
    reader = BodyReader(headers)
    got = b"".join(reader.feed(body[i:i + step]) for i in range(0, len(body), step))
    reader.finish()
    assert got == DATA
    assert reader.md5 == hashlib.md5(DATA).hexdigest()
    assert reader.checksums == {"x-amz-checksum-crc32": crc32(DATA)}


def test_signed_chunks_are_decoded() -> None:
    body = chunked(DATA, 4096, None, signed=True)
    reader = BodyReader({"x-amz-content-sha256": "STREAMING-AWS4-HMAC-SHA256-PAYLOAD",
                         "x-amz-decoded-content-length": str(len(DATA))})
    assert reader.feed(body) == DATA
    reader.finish()


def test_trailer_mismatch_is_bad_digest() -> None:
    body = chunked(DATA, 1000, f"x-amz-checksum-crc32:{crc32(b'other')}")
    reader = BodyReader({"content-encoding": "aws-chunked",
                         "x-amz-trailer": "x-amz-checksum-crc32",
                         "x-amz-decoded-content-length": str(len(DATA))})
    reader.feed(body)
    with pytest.raises(S3Error) as e:
        reader.finish()
    assert e.value.code == "BadDigest" and e.value.status == 400


@pytest.mark.parametrize("cut", [10, 1005, -3])
def test_truncated_chunked_body_is_incomplete(cut: int) -> None:
    body = chunked(DATA, 1000, None)[:cut]
    reader = BodyReader({"content-encoding": "aws-chunked",
                         "x-amz-decoded-content-length": str(len(DATA))})
    reader.feed(body)
    with pytest.raises(S3Error) as e:
        reader.finish()
    assert e.value.code == "IncompleteBody"


def test_malformed_chunk_size() -> None:
    reader = BodyReader({"content-encoding": "aws-chunked", "x-amz-decoded-content-length": "1"})
    with pytest.raises(S3Error) as e:
        reader.feed(b"zz\r\nx\r\n")
    assert e.value.code == "InvalidRequest"


def test_plain_body_sha256_header_is_checked() -> None:
    reader = BodyReader({"x-amz-content-sha256": hashlib.sha256(b"other").hexdigest()})
    reader.feed(b"data")
    with pytest.raises(S3Error) as e:
        reader.finish()
    assert e.value.code == "XAmzContentSHA256Mismatch"


def put(store: Store, bucket: str, key: str, data: bytes) -> None:
    blob = store.new_blob(bucket)
    blob.write(data)
    blob.finish()
    store.commit_object(bucket, key, blob, size=len(data), etag=hashlib.md5(data).hexdigest())


def test_layout_keeps_a_beside_a_slash_b_and_lists_in_byte_order(tmp_path: Path) -> None:
    store = Store(tmp_path)
    store.create_bucket("bkt")
    keys = ["a", "a/b", "a-b", "a/", "ü", "b/c/d", "a.o", "a.d/x", "%41"]
    for key in keys:
        put(store, "bkt", key, key.encode())
    listing = store.list_objects("bkt")
    assert [o.key for o in listing.objects] == sorted(keys, key=lambda k: k.encode())
    for key in keys:
        info, f = store.open_object("bkt", key)
        with f:
            assert f.read() == key.encode()
    assert (tmp_path / "bkt" / "index" / "a.o").is_file()
    assert (tmp_path / "bkt" / "index" / "a.d" / "b.o").is_file()
    page = store.list_objects("bkt", delimiter="/", max_keys=2)
    assert page.truncated and page.next_marker is not None
    rest = store.list_objects("bkt", delimiter="/", marker=page.next_marker)
    everything = [o.key for o in page.objects + rest.objects]
    assert sorted(everything + page.prefixes + rest.prefixes) == sorted(
        ["%41", "a", "a-b", "a.o", "ü", "a.d/", "a/", "b/"])


def test_marker_skips_a_returned_prefix(tmp_path: Path) -> None:
    store = Store(tmp_path)
    store.create_bucket("bkt")
    for key in ("p/1", "p/2", "q"):
        put(store, "bkt", key, b"x")
    listing = store.list_objects("bkt", delimiter="/", marker=Marker("p/", is_prefix=True))
    assert ([o.key for o in listing.objects], listing.prefixes) == (["q"], [])


def test_delete_prunes_empty_folders(tmp_path: Path) -> None:
    store = Store(tmp_path)
    store.create_bucket("bkt")
    put(store, "bkt", "x/y/z", b"1")
    store.delete_object("bkt", "x/y/z")
    assert list((tmp_path / "bkt" / "index").iterdir()) == []
    assert list((tmp_path / "bkt" / "blobs").iterdir()) == []
    store.delete_bucket("bkt")
    assert store.list_buckets() == []


@pytest.mark.parametrize("key", ["..", "a/../b", "/abs", "nul\x00", "", "k" * 1025,
                                 "é" * 100])
def test_keys_that_could_escape_are_refused(key: str) -> None:
    with pytest.raises(S3Error) as e:
        key_segments(key)
    assert e.value.code in ("InvalidArgument", "KeyTooLongError")


def test_concurrent_writers_leave_one_whole_object(tmp_path: Path) -> None:
    store = Store(tmp_path)
    store.create_bucket("bkt")
    bodies = [bytes([i]) * 200_000 for i in range(8)]
    threads = [threading.Thread(target=put, args=(store, "bkt", "same", b)) for b in bodies]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    info, f = store.open_object("bkt", "same")
    with f:
        data = f.read()
    assert data in bodies and info.etag == hashlib.md5(data).hexdigest()
    assert len(list((tmp_path / "bkt" / "blobs").iterdir())) == 1  # replaced blobs deleted
    assert not list((tmp_path / "bkt").rglob("*.tmp"))


def test_app_raw_requests(tmp_path: Path) -> None:
    from starlette.testclient import TestClient

    from openknn.service.s3 import create_app

    client = TestClient(create_app(tmp_path))
    assert client.put("/raw-bkt").status_code == 200
    body = chunked(DATA, 999, f"x-amz-checksum-crc32:{crc32(DATA)}")
    r = client.put("/raw-bkt/chunky", content=body, headers={
        "content-encoding": "aws-chunked", "x-amz-trailer": "x-amz-checksum-crc32",
        "x-amz-decoded-content-length": str(len(DATA)), "content-type": "text/x"})
    assert r.status_code == 200 and r.headers["etag"] == f'"{hashlib.md5(DATA).hexdigest()}"'
    got = client.get("/raw-bkt/chunky")
    assert got.content == DATA and got.headers["content-type"] == "text/x"
    assert "content-encoding" not in got.headers
    bad = client.put("/raw-bkt/bad", content=b"abc", headers={"x-amz-checksum-crc32": crc32(b"x")})
    assert bad.status_code == 400 and b"<Code>BadDigest</Code>" in bad.content
    assert client.get("/raw-bkt?versioning").status_code == 501
    odd = client.put("/raw-bkt/k", content=b"x", headers={"x-amz-weird": b"\xff\x01",
                                                        "x-amz-meta-odd": b"\xe9t\xe9"})
    assert odd.status_code == 200
    # stored as received (the test client cannot read a non-ASCII header back)
    assert set(Store(tmp_path).head_object("raw-bkt", "k").metadata) == {"odd"}
