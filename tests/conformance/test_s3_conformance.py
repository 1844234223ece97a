"""One suite, two servers: the same boto3 and s3fs calls against moto's S3 server and the
embedded store, each asserting what S3 answers — so passing on both means they agree.
Objects are small (multipart uses S3's 5 MiB minimum part), so the whole file takes seconds."""

from __future__ import annotations

import base64
import hashlib
import io
import uuid
import zlib
from typing import Any

import pytest

boto3 = pytest.importorskip("boto3")
pytest.importorskip("s3fs")
from boto3.s3.transfer import TransferConfig
from botocore.exceptions import ClientError

from tests.conformance.conftest import Server
from tests.s3_servers import UvicornThread

MiB = 1 << 20
MULTIPART = TransferConfig(multipart_threshold=5 * MiB, multipart_chunksize=5 * MiB,
                           max_concurrency=2)


def error_of(call: Any, *args: Any, **kwargs: Any) -> tuple[str, int]:
    with pytest.raises(ClientError) as info:
        call(*args, **kwargs)
    response = info.value.response
    return response["Error"]["Code"], response["ResponseMetadata"]["HTTPStatusCode"]


def md5(data: bytes) -> str:
    return f'"{hashlib.md5(data).hexdigest()}"'


# -- buckets ---------------------------------------------------------------------------------

def test_bucket_lifecycle(s3: Any) -> None:
    name = f"conf-{uuid.uuid4().hex[:12]}"
    assert error_of(s3.head_bucket, Bucket=name) == ("404", 404)
    s3.create_bucket(Bucket=name)
    assert name in [b["Name"] for b in s3.list_buckets()["Buckets"]]
    assert s3.head_bucket(Bucket=name)["ResponseMetadata"]["HTTPStatusCode"] == 200
    s3.create_bucket(Bucket=name)  # us-east-1: re-creating one's own bucket succeeds
    s3.put_object(Bucket=name, Key="k", Body=b"x")
    assert error_of(s3.delete_bucket, Bucket=name) == ("BucketNotEmpty", 409)
    s3.delete_object(Bucket=name, Key="k")
    s3.delete_bucket(Bucket=name)
    assert name not in [b["Name"] for b in s3.list_buckets()["Buckets"]]
    assert error_of(s3.delete_bucket, Bucket=name) == ("NoSuchBucket", 404)


def test_bucket_owned_elsewhere_region(s3: Any) -> None:
    name = f"conf-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    again = s3.create_bucket
    assert error_of(again, Bucket=name, CreateBucketConfiguration={
        "LocationConstraint": "eu-west-1"}) == ("BucketAlreadyOwnedByYou", 409)
    s3.delete_bucket(Bucket=name)


@pytest.mark.parametrize("name", ["ab", "x" * 64])
def test_invalid_bucket_name_lengths(s3: Any, name: str) -> None:
    assert error_of(s3.create_bucket, Bucket=name) == ("InvalidBucketName", 400)


# -- objects ---------------------------------------------------------------------------------

def test_put_get_head(s3: Any, bucket: str) -> None:
    data = b"hello, s3\n" * 100
    put = s3.put_object(Bucket=bucket, Key="dir/hello.txt", Body=data, ContentType="text/plain",
                        Metadata={"Color": "blue"})
    assert put["ETag"] == md5(data)
    head = s3.head_object(Bucket=bucket, Key="dir/hello.txt")
    assert head["ContentLength"] == len(data)
    assert head["ContentType"] == "text/plain"
    assert head["ETag"] == md5(data)
    assert head["Metadata"] == {"color": "blue"}
    assert head["LastModified"].tzinfo is not None
    got = s3.get_object(Bucket=bucket, Key="dir/hello.txt")
    assert got["Body"].read() == data
    assert got["ContentType"] == "text/plain"
    assert got["Metadata"] == {"color": "blue"}


def test_empty_object_and_default_type(s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="empty", Body=b"")
    head = s3.head_object(Bucket=bucket, Key="empty")
    assert head["ContentLength"] == 0
    assert head["ETag"] == md5(b"")
    assert s3.get_object(Bucket=bucket, Key="empty")["Body"].read() == b""


def test_key_and_key_slash_coexist(s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="a", Body=b"file a")
    s3.put_object(Bucket=bucket, Key="a/b", Body=b"file a/b")
    s3.put_object(Bucket=bucket, Key="a/", Body=b"")
    assert s3.get_object(Bucket=bucket, Key="a")["Body"].read() == b"file a"
    assert s3.get_object(Bucket=bucket, Key="a/b")["Body"].read() == b"file a/b"
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]]
    assert keys == ["a", "a/", "a/b"]


def test_odd_keys(s3: Any, bucket: str) -> None:
    keys = ["sp ace", "plus+sign", "pct%20", "ünï/cødé", "a=b&c", "x//y", "tilde~", "q?s#h",
            "./dot", "trailing/"]
    for key in keys:
        s3.put_object(Bucket=bucket, Key=key, Body=key.encode())
    for key in keys:
        assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == key.encode()
    listed = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]]
    assert listed == sorted(keys, key=lambda k: k.encode("utf-8"))


def test_overwrite(s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="k", Body=b"one")
    s3.put_object(Bucket=bucket, Key="k", Body=b"two!", ContentType="text/x-two")
    got = s3.get_object(Bucket=bucket, Key="k")
    assert got["Body"].read() == b"two!"
    assert got["ContentType"] == "text/x-two"


def test_missing_objects(s3: Any, bucket: str) -> None:
    assert error_of(s3.get_object, Bucket=bucket, Key="nope") == ("NoSuchKey", 404)
    assert error_of(s3.head_object, Bucket=bucket, Key="nope") == ("404", 404)
    assert error_of(s3.get_object, Bucket="conf-no-such-bucket-x", Key="k") == (
        "NoSuchBucket", 404)
    assert error_of(s3.put_object, Bucket="conf-no-such-bucket-x", Key="k", Body=b"x") == (
        "NoSuchBucket", 404)
    assert error_of(s3.list_objects_v2, Bucket="conf-no-such-bucket-x") == ("NoSuchBucket", 404)
    # deleting a missing key is no error
    assert s3.delete_object(Bucket=bucket, Key="nope")["ResponseMetadata"][
        "HTTPStatusCode"] == 204


def test_ranges(s3: Any, bucket: str) -> None:
    data = bytes(range(256)) * 4
    s3.put_object(Bucket=bucket, Key="r", Body=data)
    cases = {"bytes=0-9": data[0:10], "bytes=1000-": data[1000:], "bytes=-24": data[-24:],
             "bytes=1020-5000": data[1020:], "bytes=-5000": data}
    for spec, want in cases.items():
        got = s3.get_object(Bucket=bucket, Key="r", Range=spec)
        assert got["Body"].read() == want, spec
        assert got["ResponseMetadata"]["HTTPStatusCode"] == 206
        assert got["ContentLength"] == len(want)
        first = len(data) - len(want) if spec.startswith("bytes=-") else int(spec[6:].split("-")[0])
        assert got["ContentRange"] == f"bytes {first}-{first + len(want) - 1}/{len(data)}"
    assert error_of(s3.get_object, Bucket=bucket, Key="r", Range="bytes=1024-") == (
        "InvalidRange", 416)
    whole = s3.get_object(Bucket=bucket, Key="r", Range="bytes=5-2")  # reversed: ignored
    assert whole["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert whole["Body"].read() == data


def test_conditional_get(s3: Any, bucket: str) -> None:
    put = s3.put_object(Bucket=bucket, Key="c", Body=b"cond")
    assert s3.get_object(Bucket=bucket, Key="c", IfMatch=put["ETag"])["Body"].read() == b"cond"
    assert error_of(s3.get_object, Bucket=bucket, Key="c", IfMatch='"0000"') == (
        "PreconditionFailed", 412)
    assert error_of(s3.get_object, Bucket=bucket, Key="c", IfNoneMatch=put["ETag"]) == (
        "304", 304)


def test_delete_objects(s3: Any, bucket: str) -> None:
    for key in ("d/1", "d/2", "d/3"):
        s3.put_object(Bucket=bucket, Key=key, Body=b"x")
    out = s3.delete_objects(Bucket=bucket, Delete={"Objects": [
        {"Key": "d/1"}, {"Key": "d/2"}, {"Key": "missing"}]})
    assert sorted(d["Key"] for d in out["Deleted"]) == ["d/1", "d/2", "missing"]
    assert [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]] == ["d/3"]
    s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": "d/3"}], "Quiet": True})
    assert s3.list_objects_v2(Bucket=bucket)["KeyCount"] == 0


def test_copy_object(s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="src", Body=b"copy me", ContentType="text/a",
                  Metadata={"m": "1"})
    out = s3.copy_object(Bucket=bucket, Key="dst", CopySource={"Bucket": bucket, "Key": "src"})
    assert out["CopyObjectResult"]["ETag"] == md5(b"copy me")
    head = s3.head_object(Bucket=bucket, Key="dst")
    assert (head["ContentType"], head["Metadata"]) == ("text/a", {"m": "1"})
    s3.copy_object(Bucket=bucket, Key="dst2", CopySource=f"{bucket}/src",
                   MetadataDirective="REPLACE", ContentType="text/b", Metadata={"n": "2"})
    head = s3.head_object(Bucket=bucket, Key="dst2")
    assert (head["ContentType"], head["Metadata"]) == ("text/b", {"n": "2"})
    assert s3.get_object(Bucket=bucket, Key="dst2")["Body"].read() == b"copy me"
    assert error_of(s3.copy_object, Bucket=bucket, Key="src",
                    CopySource={"Bucket": bucket, "Key": "src"}) == ("InvalidRequest", 400)
    assert error_of(s3.copy_object, Bucket=bucket, Key="x",
                    CopySource={"Bucket": bucket, "Key": "nope"}) == ("NoSuchKey", 404)


def test_checksums(s3: Any, bucket: str) -> None:
    data = b"checked bytes"
    crc = base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()
    sha = base64.b64encode(hashlib.sha256(data).digest()).decode()
    s3.put_object(Bucket=bucket, Key="ok-crc", Body=data, ChecksumCRC32=crc)
    s3.put_object(Bucket=bucket, Key="ok-sha", Body=data, ChecksumSHA256=sha)
    s3.put_object(Bucket=bucket, Key="ok-md5", Body=data,
                  ContentMD5=base64.b64encode(hashlib.md5(data).digest()).decode())
    assert s3.get_object(Bucket=bucket, Key="ok-sha")["Body"].read() == data


# -- listing ---------------------------------------------------------------------------------

@pytest.fixture
def tree(s3: Any, bucket: str) -> list[str]:
    keys = ["a", "a-b", "a/b", "a/c/d", "a/c/e", "b/1", "b/2", "b/3/x", "c", "top/z.txt"]
    for key in keys:
        s3.put_object(Bucket=bucket, Key=key, Body=key.encode())
    return keys


def pages(s3: Any, **kwargs: Any) -> list[dict[str, Any]]:
    out, token = [], None
    for _ in range(100):
        args = dict(kwargs, **({"ContinuationToken": token} if token else {}))
        page = s3.list_objects_v2(**args)
        out.append(page)
        if not page["IsTruncated"]:
            return out
        token = page["NextContinuationToken"]
    raise AssertionError("listing did not end")


def flat(result: list[dict[str, Any]]) -> tuple[list[str], list[str]]:
    keys = [o["Key"] for p in result for o in p.get("Contents", [])]
    prefixes = [c["Prefix"] for p in result for c in p.get("CommonPrefixes", [])]
    return keys, prefixes


def test_list_all_and_pages(s3: Any, bucket: str, tree: list[str]) -> None:
    result = pages(s3, Bucket=bucket, MaxKeys=3)
    assert [p["KeyCount"] for p in result] == [3, 3, 3, 1]
    assert flat(result) == (tree, [])
    first = result[0]["Contents"][0]
    assert first["Size"] == 1 and first["ETag"] == md5(b"a")
    assert first["StorageClass"] == "STANDARD"


def test_list_delimiter(s3: Any, bucket: str, tree: list[str]) -> None:
    assert flat(pages(s3, Bucket=bucket, Delimiter="/")) == (
        ["a", "a-b", "c"], ["a/", "b/", "top/"])
    assert flat(pages(s3, Bucket=bucket, Delimiter="/", MaxKeys=2)) == (
        ["a", "a-b", "c"], ["a/", "b/", "top/"])
    assert flat(pages(s3, Bucket=bucket, Delimiter="/", Prefix="a/")) == (["a/b"], ["a/c/"])
    assert flat(pages(s3, Bucket=bucket, Delimiter="/", Prefix="b/", MaxKeys=1)) == (
        ["b/1", "b/2"], ["b/3/"])
    assert flat(pages(s3, Bucket=bucket, Prefix="a/c")) == (["a/c/d", "a/c/e"], [])
    assert flat(pages(s3, Bucket=bucket, Delimiter="-")) == (
        [k for k in tree if k != "a-b"], ["a-"])
    assert flat(pages(s3, Bucket=bucket, Prefix="zzz")) == ([], [])


def test_list_start_after_and_v1(s3: Any, bucket: str, tree: list[str]) -> None:
    assert flat(pages(s3, Bucket=bucket, StartAfter="a/c/d")) == (
        tree[tree.index("a/c/e"):], [])
    assert flat(pages(s3, Bucket=bucket, StartAfter="b", Delimiter="/")) == (["c"],
                                                                             ["b/", "top/"])
    v1 = s3.list_objects(Bucket=bucket, Delimiter="/")
    assert [o["Key"] for o in v1["Contents"]] == ["a", "a-b", "c"]
    assert [c["Prefix"] for c in v1["CommonPrefixes"]] == ["a/", "b/", "top/"]
    seen, marker = [], ""
    for _ in range(20):
        page = s3.list_objects(Bucket=bucket, MaxKeys=4, Marker=marker)
        seen += [o["Key"] for o in page["Contents"]]
        if not page["IsTruncated"]:
            break
        marker = seen[-1]
    assert seen == tree


def test_list_paginator(s3: Any, bucket: str, tree: list[str]) -> None:
    paginator = s3.get_paginator("list_objects_v2")
    keys = [o["Key"] for page in paginator.paginate(Bucket=bucket, PaginationConfig={
        "PageSize": 4}) for o in page.get("Contents", [])]
    assert keys == tree


# -- multipart -------------------------------------------------------------------------------

def test_multipart_by_hand(s3: Any, bucket: str) -> None:
    part1, part2 = b"1" * (5 * MiB), b"2" * 1000
    up = s3.create_multipart_upload(Bucket=bucket, Key="mp", ContentType="application/x-mp",
                                    Metadata={"k": "v"})
    uid = up["UploadId"]
    e1 = s3.upload_part(Bucket=bucket, Key="mp", UploadId=uid, PartNumber=1, Body=part1)["ETag"]
    e2 = s3.upload_part(Bucket=bucket, Key="mp", UploadId=uid, PartNumber=2, Body=part2)["ETag"]
    assert (e1, e2) == (md5(part1), md5(part2))
    listed = s3.list_parts(Bucket=bucket, Key="mp", UploadId=uid)
    assert [(p["PartNumber"], p["ETag"], p["Size"]) for p in listed["Parts"]] == [
        (1, e1, len(part1)), (2, e2, len(part2))]
    paged = s3.list_parts(Bucket=bucket, Key="mp", UploadId=uid, MaxParts=1)
    assert paged["IsTruncated"] and paged["NextPartNumberMarker"] == 1
    assert error_of(s3.complete_multipart_upload, Bucket=bucket, Key="mp", UploadId=uid,
                    MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": e1},
                                               {"PartNumber": 2, "ETag": md5(b"x")}]}) == (
        "InvalidPart", 400)
    done = s3.complete_multipart_upload(Bucket=bucket, Key="mp", UploadId=uid, MultipartUpload={
        "Parts": [{"PartNumber": 1, "ETag": e1}, {"PartNumber": 2, "ETag": e2}]})
    want = hashlib.md5(hashlib.md5(part1).digest() + hashlib.md5(part2).digest()).hexdigest()
    assert done["ETag"] == f'"{want}-2"'
    head = s3.head_object(Bucket=bucket, Key="mp")
    assert (head["ContentLength"], head["ETag"]) == (len(part1) + len(part2), f'"{want}-2"')
    assert (head["ContentType"], head["Metadata"]) == ("application/x-mp", {"k": "v"})
    got = s3.get_object(Bucket=bucket, Key="mp", Range=f"bytes={5 * MiB - 2}-{5 * MiB + 1}")
    assert got["Body"].read() == b"1122"
    assert error_of(s3.list_parts, Bucket=bucket, Key="mp", UploadId=uid) == (
        "NoSuchUpload", 404)


def test_multipart_errors_and_abort(s3: Any, bucket: str) -> None:
    uid = s3.create_multipart_upload(Bucket=bucket, Key="small")["UploadId"]
    e1 = s3.upload_part(Bucket=bucket, Key="small", UploadId=uid, PartNumber=1,
                        Body=b"tiny")["ETag"]
    e2 = s3.upload_part(Bucket=bucket, Key="small", UploadId=uid, PartNumber=2,
                        Body=b"tiny")["ETag"]
    assert error_of(s3.complete_multipart_upload, Bucket=bucket, Key="small", UploadId=uid,
                    MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": e1},
                                               {"PartNumber": 2, "ETag": e2}]}) == (
        "EntityTooSmall", 400)
    s3.abort_multipart_upload(Bucket=bucket, Key="small", UploadId=uid)
    assert error_of(s3.head_object, Bucket=bucket, Key="small") == ("404", 404)
    # a single small part is a whole object
    uid = s3.create_multipart_upload(Bucket=bucket, Key="one")["UploadId"]
    e1 = s3.upload_part(Bucket=bucket, Key="one", UploadId=uid, PartNumber=1,
                        Body=b"solo")["ETag"]
    s3.complete_multipart_upload(Bucket=bucket, Key="one", UploadId=uid, MultipartUpload={
        "Parts": [{"PartNumber": 1, "ETag": e1}]})
    assert s3.get_object(Bucket=bucket, Key="one")["Body"].read() == b"solo"


def test_transfer_manager(s3: Any, bucket: str, tmp_path: Any) -> None:
    data = bytes(range(256)) * (11 * MiB // 256 + 3)  # three parts
    path = tmp_path / "big.bin"
    path.write_bytes(data)
    s3.upload_file(str(path), bucket, "big/file.bin", Config=MULTIPART)
    head = s3.head_object(Bucket=bucket, Key="big/file.bin")
    assert head["ContentLength"] == len(data) and head["ETag"].endswith('-3"')
    s3.upload_fileobj(io.BytesIO(data), bucket, "big/obj.bin", Config=MULTIPART)
    out = io.BytesIO()
    s3.download_fileobj(bucket, "big/obj.bin", out, Config=MULTIPART)
    assert hashlib.sha256(out.getvalue()).digest() == hashlib.sha256(data).digest()
    small = io.BytesIO()
    s3.upload_fileobj(io.BytesIO(b"small"), bucket, "small.bin", Config=MULTIPART)
    s3.download_fileobj(bucket, "small.bin", small)
    assert small.getvalue() == b"small"


# -- s3fs ------------------------------------------------------------------------------------

def test_s3fs(server: Server, bucket: str) -> None:
    fs = server.fs()
    fs.pipe(f"{bucket}/x/one.csv", b"1,2,3\n")
    fs.pipe(f"{bucket}/x/two.csv", b"4,5,6\n")
    fs.pipe(f"{bucket}/x/sub/three.csv", b"7\n")
    assert fs.cat(f"{bucket}/x/one.csv") == b"1,2,3\n"
    assert sorted(fs.ls(f"{bucket}/x", detail=False)) == [
        f"{bucket}/x/one.csv", f"{bucket}/x/sub", f"{bucket}/x/two.csv"]
    assert sorted(fs.find(f"{bucket}/x")) == [
        f"{bucket}/x/one.csv", f"{bucket}/x/sub/three.csv", f"{bucket}/x/two.csv"]
    assert fs.info(f"{bucket}/x/two.csv")["size"] == 6
    assert fs.isdir(f"{bucket}/x/sub") and not fs.exists(f"{bucket}/x/none")
    with fs.open(f"{bucket}/x/one.csv", "rb") as f:
        f.seek(2)
        assert f.read(3) == b"2,3"
    with fs.open(f"{bucket}/big.bin", "wb", block_size=5 * MiB) as f:
        for _ in range(3):
            f.write(b"z" * (2 * MiB))
    assert fs.info(f"{bucket}/big.bin")["size"] == 6 * MiB
    assert fs.cat_file(f"{bucket}/big.bin", start=6 * MiB - 3) == b"zzz"
    fs.copy(f"{bucket}/x/one.csv", f"{bucket}/y/one.csv")
    assert fs.cat(f"{bucket}/y/one.csv") == b"1,2,3\n"
    fs.rm(f"{bucket}/x", recursive=True)
    assert not fs.exists(f"{bucket}/x/one.csv")
    assert fs.glob(f"{bucket}/**/*.csv") == [f"{bucket}/y/one.csv"]


# -- the store alone -------------------------------------------------------------------------
# Where moto 5.2 departs from S3 (so these run against the store only): it accepts any bucket
# name, ignores DeleteObjects' Quiet, does not check Content-MD5 or x-amz-checksum-* values,
# checks part sizes before part order, and answers an unknown upload ID with a 500.

@pytest.fixture
def store_s3(store_server: Server) -> Any:
    return store_server.client(retries=False)


@pytest.fixture
def store_bucket(store_s3: Any) -> str:
    name = f"conf-{uuid.uuid4().hex[:12]}"
    store_s3.create_bucket(Bucket=name)
    return name


@pytest.mark.parametrize("name", ["Upper-case", "bad_name", "-start", "a..b", "1.2.3.4",
                                  "xn--bucket", "end-"])
def test_store_invalid_bucket_names(store_s3: Any, name: str) -> None:
    assert error_of(store_s3.create_bucket, Bucket=name) == ("InvalidBucketName", 400)


def test_store_quiet_delete(store_s3: Any, store_bucket: str) -> None:
    store_s3.put_object(Bucket=store_bucket, Key="q", Body=b"x")
    out = store_s3.delete_objects(Bucket=store_bucket, Delete={"Objects": [{"Key": "q"}],
                                                               "Quiet": True})
    assert "Deleted" not in out and "Errors" not in out


def test_store_bad_digests(store_s3: Any, store_bucket: str) -> None:
    data = b"checked bytes"
    assert error_of(store_s3.put_object, Bucket=store_bucket, Key="bad", Body=data,
                    ContentMD5=base64.b64encode(b"0" * 16).decode()) == ("BadDigest", 400)
    assert error_of(store_s3.put_object, Bucket=store_bucket, Key="bad", Body=data,
                    ChecksumCRC32="AAAAAA==") == ("BadDigest", 400)
    assert error_of(store_s3.put_object, Bucket=store_bucket, Key="bad", Body=data,
                    ChecksumSHA256=base64.b64encode(b"0" * 32).decode()) == ("BadDigest", 400)
    assert error_of(store_s3.head_object, Bucket=store_bucket, Key="bad") == ("404", 404)


def test_store_part_order_and_unknown_upload(store_s3: Any, store_bucket: str) -> None:
    s3, bucket = store_s3, store_bucket
    uid = s3.create_multipart_upload(Bucket=bucket, Key="o")["UploadId"]
    e1 = s3.upload_part(Bucket=bucket, Key="o", UploadId=uid, PartNumber=1, Body=b"a")["ETag"]
    e2 = s3.upload_part(Bucket=bucket, Key="o", UploadId=uid, PartNumber=2, Body=b"b")["ETag"]
    assert error_of(s3.complete_multipart_upload, Bucket=bucket, Key="o", UploadId=uid,
                    MultipartUpload={"Parts": [{"PartNumber": 2, "ETag": e2},
                                               {"PartNumber": 1, "ETag": e1}]}) == (
        "InvalidPartOrder", 400)
    assert error_of(s3.upload_part, Bucket=bucket, Key="o", UploadId=uid, PartNumber=0,
                    Body=b"x") == ("InvalidArgument", 400)
    s3.abort_multipart_upload(Bucket=bucket, Key="o", UploadId=uid)
    assert error_of(s3.upload_part, Bucket=bucket, Key="o", UploadId=uid, PartNumber=3,
                    Body=b"x") == ("NoSuchUpload", 404)
    for bad in ("0" * 32, "../../etc", "x"):
        assert error_of(s3.abort_multipart_upload, Bucket=bucket, Key="o", UploadId=bad) == (
            "NoSuchUpload", 404)


def test_store_survives_restart(store_server: Server) -> None:
    from openknn.service.s3 import create_app

    assert store_server.root is not None
    root = store_server.root.parent / f"restart-{uuid.uuid4().hex[:8]}"
    with UvicornThread(create_app(root)) as first:
        s3 = Server("store", f"http://127.0.0.1:{first.port}").client()
        s3.create_bucket(Bucket="persist")
        s3.put_object(Bucket="persist", Key="a/b", Body=b"kept", Metadata={"x": "y"})
        s3.upload_fileobj(io.BytesIO(b"m" * (6 * MiB)), "persist", "big", Config=MULTIPART)
    with UvicornThread(create_app(root)) as second:
        s3 = Server("store", f"http://127.0.0.1:{second.port}").client()
        assert [b["Name"] for b in s3.list_buckets()["Buckets"]] == ["persist"]
        got = s3.get_object(Bucket="persist", Key="a/b")
        assert (got["Body"].read(), got["Metadata"]) == (b"kept", {"x": "y"})
        assert s3.head_object(Bucket="persist", Key="big")["ContentLength"] == 6 * MiB


@pytest.mark.parametrize("key", ["../escape", "a/../../b", "/abs", "nul\x00byte"])
def test_store_refuses_escaping_keys(store_server: Server, key: str) -> None:
    s3 = store_server.client(retries=False)
    name = f"conf-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name)
    code, status = error_of(s3.put_object, Bucket=name, Key=key, Body=b"x")
    assert (code, status) == ("InvalidArgument", 400)
    assert not any(p.name == "escape" for p in store_server.root.parent.rglob("*")) \
        if store_server.root else True
